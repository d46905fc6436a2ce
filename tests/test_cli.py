"""The command line: one-line errors with exit 1 and no traceback; real runs end to end.

Commands run in process through click's CliRunner (so coverage of ``finexl.cli`` is
measured and no interpreter starts per case); one test runs ``python -m finexl.cli`` in a
subprocess to check the real entry point, its exit code and its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_pipeline import _darken, _folders


def run_cli(*args: str, env: dict | None = None):
    """``finexl ARGS`` in process; the result has ``returncode``, ``stdout`` and ``stderr``."""
    from click.testing import CliRunner

    from finexl.cli import main

    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    result.returncode = result.exit_code
    return result


def run_cli_subprocess(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "finexl.cli", *args], capture_output=True, check=False,
                          text=True, env=full_env, timeout=300)


def assert_one_line_error(result, *words: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("finexl: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture()
def concepts_file(tmp_path):
    path = tmp_path / "concepts.txt"
    path.write_text("dark\nwarm\n# a comment\n\nvivid\n")
    return path


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("explain", "compare", "generate", "finetune", "demo", "catalog", "eval"):
        assert command in result.stdout


def test_the_module_entry_point_prints_one_line_errors(tmp_path):
    """``python -m finexl.cli`` is the console script: real exit code, real stderr."""
    result = run_cli_subprocess("explain", "--base", str(tmp_path / "missing"), "--personal",
                                str(tmp_path), "--concepts", str(tmp_path / "nope.txt"))
    assert_one_line_error(result, "nope.txt")


def test_debug_keeps_the_traceback_of_a_user_error(tmp_path):
    from click.testing import CliRunner

    from finexl.cli import main
    from finexl.errors import FinexlError

    args = ["explain", "--base", "b", "--personal", "p", "--concepts", str(tmp_path / "no.txt")]
    with pytest.raises(FinexlError, match="no.txt"):
        CliRunner().invoke(main, ["--debug", *args], catch_exceptions=False)
    # The flag lives in the click context: the next run without it is one line again.
    assert_one_line_error(run_cli(*args), "no.txt")


def test_ctrl_c_exits_130_with_one_line(tmp_path, monkeypatch):
    import finexl.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finexl.pipeline, "explain", interrupted)
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.5))
    result = run_cli("explain", "--base", str(base), "--personal", str(personal))
    assert result.returncode == 130
    assert result.stderr.strip().startswith("finexl: interrupted")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["explain"], ["--base", "--base-model"]),
        (["explain", "--base", "b"], ["--personal"]),
        (["explain", "--base-model", "builtin:tiny"], ["--personal-model"]),
    ],
)
def test_explain_needs_folders_or_models(args, words):
    assert_one_line_error(run_cli(*args), *words)


def test_compare_rejects_a_name_given_twice(tmp_path):
    result = run_cli("compare", "--base", str(tmp_path), "--personal", "a=x", "--personal", "a=y")
    assert_one_line_error(result, "'a'", "twice")


def test_catalog_add_rejects_unreadable_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = run_cli("catalog", "add", "m", "--json", str(bad), "--catalog",
                     str(tmp_path / "c.sqlite"))
    assert_one_line_error(result, "--json", "bad.json")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--e-decomp", "1.5"], ["--e-decomp"]),
        (["--e-ortho", "0", "--ortho-rule", "max_abs"], ["--e-ortho"]),
        (["--template", "{prompt} {style}"], ["--template"]),
        (["--template", "{prompt} only"], ["{concept}"]),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, concepts_file, extra, words):
    result = run_cli("explain", "--base", str(tmp_path / "b"), "--personal", str(tmp_path / "p"),
                     "--concepts", str(concepts_file), *extra)
    assert_one_line_error(result, *words)


def test_missing_concepts_file(tmp_path):
    result = run_cli("explain", "--base", "b", "--personal", "p", "--concepts",
                     str(tmp_path / "nope.txt"))
    assert_one_line_error(result, "--concepts", "nope.txt")


def test_missing_folder(tmp_path, concepts_file):
    result = run_cli("explain", "--base", str(tmp_path / "missing"), "--personal",
                     str(tmp_path), "--concepts", str(concepts_file))
    assert_one_line_error(result, "missing")


def test_one_side_has_extra_files(tmp_path, concepts_file):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.5))
    (personal / "0000.png").unlink()
    result = run_cli("explain", "--base", str(base), "--personal", str(personal),
                     "--concepts", str(concepts_file))
    assert_one_line_error(result, "0000.png")


def test_compare_needs_name_equals_dir(tmp_path, concepts_file):
    result = run_cli("compare", "--base", str(tmp_path), "--personal", "justadir",
                     "--concepts", str(concepts_file))
    assert_one_line_error(result, "NAME=DIR")


def test_catalog_add_rejects_non_explanations(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    result = run_cli("catalog", "add", "m", "--json", str(bad), "--catalog",
                     str(tmp_path / "c.sqlite"))
    assert_one_line_error(result, "finexl.explanation/v1")


def test_explain_with_a_local_clip_directory_writes_json_and_html(tmp_path, tiny_clip_dir,
                                                                  concepts_file):
    """The issue's "done when": two folders, a local CLIP directory, the JSON of DESIGN.md."""
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    out = tmp_path / "out"
    env = {"FINEXL_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    result = run_cli("explain", "--base", str(base), "--personal", str(personal),
                     "--encoder", str(tiny_clip_dir), "--concepts", str(concepts_file),
                     "--json", str(out / "e.json"), "--html", str(out / "e.html"), "--quiet",
                     env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "e.json").read_text())
    assert data["schema"] == "finexl.explanation/v1"
    assert data["encoder"]["id"].startswith("clip:")
    assert data["n_pairs"] == 12
    assert data["n_candidates"] == 3
    assert (out / "e.html").read_text().startswith("<!doctype html>")
    # stdout has the table or the no-difference sentence, nothing else.
    assert "residual" in result.stdout or "No difference" in result.stdout
    # A second run answers from the cache: same JSON.
    again = run_cli("explain", "--base", str(base), "--personal", str(personal),
                    "--encoder", str(tiny_clip_dir), "--concepts", str(concepts_file),
                    "--json", str(out / "e2.json"), "--quiet", env=env)
    assert again.returncode == 0
    assert json.loads((out / "e2.json").read_text()) == data


def test_compare_and_catalog_from_the_command_line(tmp_path, tiny_clip_dir, concepts_file):
    from test_pipeline import _warm

    base, dark = _folders(tmp_path, lambda im: _darken(im, 0.6), name="dark")
    _, warm = _folders(tmp_path, lambda im: _warm(im, 0.6), name="warm")
    env = {"FINEXL_CACHE_DIR": str(tmp_path / "cache"), "FINEXL_DATA_DIR": str(tmp_path / "data")}
    result = run_cli("compare", "--base", str(base), "--personal", f"dark={dark}",
                     "--personal", f"warm={warm}", "--encoder", str(tiny_clip_dir),
                     "--concepts", str(concepts_file), "--json", str(tmp_path / "c.json"),
                     "--html", str(tmp_path / "c.html"), "--quiet", "--add-to-catalog",
                     # A random encoder: the paper's residual stop names concepts where the
                     # significance stop may honestly name none.
                     "--stop", "residual", "--max-concepts", "3", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["schema"] == "finexl.comparison/v1"
    assert set(data["models"]) == {"dark", "warm"}
    assert "sortable" in (tmp_path / "c.html").read_text()
    explanation = tmp_path / "dark.json"
    explanation.write_text(json.dumps(data["models"]["dark"]))
    added = run_cli("catalog", "add", "dark", "--json", str(explanation), env=env)
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "data" / "catalog.sqlite").exists()
    assert data["concepts"], "the basis is empty: nothing to query"
    concept = data["concepts"][0]
    query = run_cli("catalog", "query", concept, "--json", env=env)
    assert query.returncode == 0
    hits = json.loads(query.stdout)
    # compare --add-to-catalog stored both models; "dark" was re-added from its JSON.
    models = {h["model"] for h in hits}
    assert "dark" in models and models <= {"dark", "warm"}  # never vacuous on no hits


# The other command groups, in process (each maps its options onto one library call) -------

def test_generate_then_finetune_from_the_command_line(tmp_path, sd_dir, one_torch_thread):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue house\n")
    out = tmp_path / "images"
    made = run_cli("generate", "--model", str(sd_dir), "--prompts", str(prompts), "--out",
                   str(out), "--steps", "2", "--seeds", "2", "--batch-size", "4", "--quiet")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("4 images in ")
    assert len(list(out.glob("*.png"))) == 4 and (out / "metadata.jsonl").is_file()
    # finetune only takes the tiny model: its errors are still one line, before any training.
    refused = run_cli("finetune", "--data", str(tmp_path / "nowhere"), "--out",
                      str(tmp_path / "model"), "--steps", "1", "--quiet")
    assert_one_line_error(refused, "nowhere")


def test_generate_refuses_a_bad_lora_spec_in_one_line(tmp_path):
    result = run_cli("generate", "--model", "builtin:tiny", "--lora", "x.safetensors:abc",
                     "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "abc")


def test_demo_from_the_command_line(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--pairs", "6", "--quiet",
                     env={"FINEXL_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert (out / "explanation.json").is_file() and (out / "report.html").is_file()
    assert "planted" in result.stdout
    again = run_cli("demo", "--out", str(out), "--pairs", "7", "--quiet",
                    env={"FINEXL_CACHE_DIR": str(tmp_path / "cache")})
    assert_one_line_error(again, "other settings")


def test_eval_refuses_an_unknown_aspect_in_one_line(tmp_path):
    result = run_cli("eval", "scenario1", "--aspect", "zorblax", "--out", str(tmp_path),
                     "--encoder", "mini", "--quiet")
    assert_one_line_error(result, "zorblax")


def test_library_messages_a_user_cannot_act_on_are_dropped_and_others_kept(caplog,
                                                                          monkeypatch):
    import logging

    from finexl.cli.app import QUIET_LIBRARY_MESSAGES

    run_cli("explain", "--help")  # the group's callback installs the filters
    caplog.set_level(logging.WARNING)
    # An earlier test may have set a library's verbosity (set_verbosity_error) and its root
    # logger stops propagating to the handler caplog listens on: undo both here.
    for top in {name.split(".")[0] for name, _ in QUIET_LIBRARY_MESSAGES}:
        caplog.set_level(logging.WARNING, logger=top)
        monkeypatch.setattr(logging.getLogger(top), "propagate", True)
    for name, text in QUIET_LIBRARY_MESSAGES:
        logging.getLogger(name).warning("`CLIPImageProcessor` %s (dropped)", text)
        logging.getLogger(name).warning("something else from %s", name)
    shown = [record.getMessage() for record in caplog.records]
    assert not any("(dropped)" in message for message in shown)
    assert len([m for m in shown if m.startswith("something else")]) == len(QUIET_LIBRARY_MESSAGES)
    run_cli("explain", "--help")  # a second run adds no second filter
    for name, text in QUIET_LIBRARY_MESSAGES:
        ours = [f for f in logging.getLogger(name).filters
                if type(f).__name__ == "_DropMessage" and getattr(f, "text", None) == text]
        assert len(ours) == 1
