"""`finexl prefgen train` as `accelerate launch -m finexl.cli` runs it, on CPU."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from finexl.cli import main
from finexl.prefgen.agents import write_agents
from finexl.prefgen.pool import build_pool, draw_scenes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A small model and few steps (the settings of test_prefgen_train's tiny configuration).
SMALL = {"hidden_size": 32, "num_layers": 3, "num_heads": 2, "intermediate_size": 64,
         "batch_size": 8, "checkpoint_every": 5, "heldout_users": 6, "eval_liked": 3,
         "eval_disliked": 2, "probe_users": 8, "probe_sessions": 3, "align_users": 30,
         "align_points": 2, "adapter_users": 8, "bank_per_set": {"0": 4, "1": 3, "2": 1}}


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    pool = build_pool(root / "pool", 128, generate=draw_scenes)
    write_agents(root / "agents", pool, str(root / "pool"), 4, n_liked=3, n_disliked=2)
    (root / "small.json").write_text(json.dumps(SMALL))
    return root


def _train_args(root, out, *, stages, adapter_steps=2):
    return ["prefgen", "train", "--data", str(root / "agents"), "--out", str(out),
            "--config", str(root / "small.json"), "--stages", stages, "--vqa-steps", "4",
            "--align-steps", "4", "--adapter-steps", str(adapter_steps),
            "--adapter-batch-size", "2", "-q"]


def test_cli_train_with_a_config_file_through_the_adapter_stage(agents, tmp_path):
    """The in-process sibling: the same command line, the same accelerate code path."""
    out = tmp_path / "model"
    result = CliRunner().invoke(main, _train_args(agents, out, stages="vqa,probe,align,adapter"))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "work" / "vqa.done.json").read_text())["settings"]
    assert config["hidden_size"] == 32 and config["vqa_steps"] == 4  # file + command line
    assert (out / "work" / "branch" / "checkpoint-2").is_dir()
    assert (out / "prefgen_user_branch.safetensors").is_file()
    adapter = json.loads((out / "work" / "adapter.done.json").read_text())["settings"]
    assert "adapter_pick" not in adapter  # runs from before the setting stay complete
    assert not (out / "stage_settings.json").exists()  # the work folder's, not the model's
    # picking targets by the users' own examples reruns the adapter stage, not the others
    vqa_done = (out / "work" / "vqa.done.json").read_bytes()
    branch = (out / "prefgen_user_branch.safetensors").read_bytes()
    result = CliRunner().invoke(main, _train_args(agents, out, stages="vqa,probe,align,adapter")
                                + ["--adapter-pick", "3"])
    assert result.exit_code == 0, result.output
    adapter = json.loads((out / "work" / "adapter.done.json").read_text())["settings"]
    assert adapter["adapter_pick"] == 3
    assert (out / "work" / "vqa.done.json").read_bytes() == vqa_done
    assert (out / "prefgen_user_branch.safetensors").read_bytes() != branch
    # more processes than one: the single-process stages are refused in one line
    result = CliRunner().invoke(main, _train_args(agents, out, stages="vqa,adapter"),
                                env={"WORLD_SIZE": "2"})
    assert result.exit_code == 1 and "only the adapter stage runs on several" in result.output
    (tmp_path / "bad.json").write_text("[1, 2]")
    result = CliRunner().invoke(main, ["prefgen", "train", "--data", str(agents / "agents"),
                                       "--out", str(out), "--config", str(tmp_path / "bad.json")])
    assert result.exit_code == 1 and "expected a JSON object" in result.output


@pytest.mark.slow  # `accelerate launch` starts a process importing torch, transformers, diffusers
def test_accelerate_launch_trains_the_adapter_and_resumes(agents, tmp_path):
    from conftest import accelerate_finexl

    out = tmp_path / "model"
    assert CliRunner().invoke(main, _train_args(agents, out, stages="vqa,probe,align",
                                                adapter_steps=0)).exit_code == 0
    for steps in (1, 2):  # the second launch resumes the branch from checkpoint-1
        done = accelerate_finexl(*_train_args(agents, out, stages="adapter",
                                              adapter_steps=steps))
        assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "reports" / "adapter.json").read_text())
    assert report["steps"] == 2 and report["resumed_from"] == 1
