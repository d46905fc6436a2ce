"""``--encoder auto``: the best listed CLIP-family model in the local HF cache, else mini.

Tiny random CLIPs are placed in a temporary Hugging Face cache under the names of real
models; the real lookup code (``huggingface_hub.try_to_load_from_cache``) finds them.
"""

from __future__ import annotations

from finexl.decompose import DecompositionSettings

import json
import shutil
from pathlib import Path

import pytest

from finexl.encoders.loader import (
    AUTO_PREFERENCE,
    MINI_SPEC,
    choose_encoder,
    load_encoder,
    resolve_spec,
)


def _put_in_cache(hub: Path, repo_id: str, source: Path, commit: str = "ab" * 20) -> Path:
    """Lay ``source`` out as the cache snapshot of ``repo_id`` (refs/main -> commit)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    import huggingface_hub.constants

    folder = tmp_path / "hub"
    folder.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    return folder


def test_empty_cache_chooses_mini_and_says_it_is_small_and_closed(hub):
    choice = choose_encoder("auto")
    assert choice.spec == MINI_SPEC
    assert "small offline encoder" in choice.description
    assert "closed vocabulary" in choice.description
    assert "none of the" in choice.description
    directory, encoder_id = resolve_spec("auto")
    assert encoder_id.startswith("clip:mini@") and directory.name == "mini"


def test_the_first_listed_model_in_the_cache_wins(hub, tiny_clip_dir, make_tiny_clip, tmp_path):
    large, base = AUTO_PREFERENCE[0], AUTO_PREFERENCE[-1]
    assert "large" in large and "base" in base
    _put_in_cache(hub, base, tiny_clip_dir)
    assert choose_encoder("auto").spec == base

    other = make_tiny_clip(tmp_path / "other", seed=1)
    _put_in_cache(hub, large, other, commit="cd" * 20)
    choice = choose_encoder("auto")
    assert choice.spec == large and large in choice.description
    encoder = load_encoder("auto", cache=False)
    assert encoder.id == f"clip:{large}@{'cd' * 6}"
    assert encoder.description == choice.description
    # The weights really are the large snapshot's, not the base one's.
    direct = load_encoder(str(other), cache=False)
    assert (abs(encoder.embed_texts(["a cat"]) - direct.embed_texts(["a cat"])) < 1e-6).all()


def test_unlisted_and_broken_models_are_passed_over(hub, tiny_clip_dir, tmp_path):
    # A test model under an unlisted name is never picked silently.
    _put_in_cache(hub, "hf-internal-testing/tiny-random-CLIPModel", tiny_clip_dir)
    # A listed name whose snapshot is not a CLIP (a text model) or has no weights.
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bert / "model.safetensors").write_bytes(b"")
    _put_in_cache(hub, AUTO_PREFERENCE[0], bert)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_clip_dir / "config.json", no_weights / "config.json")
    _put_in_cache(hub, AUTO_PREFERENCE[1], no_weights)
    assert choose_encoder("auto").spec == MINI_SPEC


def test_other_specs_stand_for_themselves(tiny_clip_dir):
    assert choose_encoder(str(tiny_clip_dir)).spec == str(tiny_clip_dir)
    assert "closed vocabulary" in choose_encoder("mini").description
    assert load_encoder("mini", cache=False).description == choose_encoder("mini").description


def test_explanation_names_the_encoder_auto_chose(hub, tiny_clip_dir, tmp_path):
    from finexl.decompose import DecompositionSettings
    from finexl.pipeline import ExplainConfig, explain
    from test_pipeline import _darken, _folders

    _put_in_cache(hub, AUTO_PREFERENCE[0], tiny_clip_dir)
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.8))
    from finexl.decompose import DecompositionSettings

    result = explain(base, personal, ExplainConfig(
        encoder="auto", cache=tmp_path / "cache", concepts=["dark", "vivid"],
        decomposition=DecompositionSettings(n_bootstrap=0)))
    assert result.notes[0].startswith(f"encoder {AUTO_PREFERENCE[0]} (auto:")
    assert result.settings["encoder"] == AUTO_PREFERENCE[0]
    assert result.to_dict()["notes"][0] == result.notes[0]


def test_cli_defaults_to_auto_and_says_which_encoder(hub, tiny_clip_dir, tmp_path):
    from test_cli import run_cli

    _put_in_cache(hub, AUTO_PREFERENCE[-1], tiny_clip_dir)
    result = run_cli("eval", "heldout", "--family", "heldout", "--photos", "shipped",
                     "--levels", "2", "--images", "4", "--out", str(tmp_path / "out"),
                     "--no-cache")
    assert result.returncode == 0, result.stderr
    assert f"encoder {AUTO_PREFERENCE[-1]} (auto:" in result.stderr
    data = json.loads((tmp_path / "out" / "heldout.json").read_text())
    assert data["encoder"].startswith(f"clip:{AUTO_PREFERENCE[-1]}@")
    assert data["family"] == "heldout" and data["levels"] == 2
    assert set(data["scenario1_per_aspect"]) == {"sepia", "dark", "blurry", "pixelated",
                                                 "vignette", "vivid"}
    assert 0 <= data["scenario2_accuracy"] <= 1


@pytest.mark.slow
def test_cli_table8_on_the_heldout_family(tiny_clip_dir, tmp_path):
    from test_cli import run_cli

    result = run_cli("eval", "encoder", "--encoder", str(tiny_clip_dir), "--family", "heldout",
                     "--images", "4", "--out", str(tmp_path / "out"), "--quiet", "--no-cache")
    assert result.returncode == 0, result.stderr
    assert {"linearity", "orthogonality", "alignment"} <= set(json.loads(result.stdout))


def test_cli_missing_heldout_photos_is_one_line(hub, tiny_clip_dir, tmp_path, monkeypatch):
    import finexl.train.sources as sources
    from test_cli import assert_one_line_error, run_cli

    monkeypatch.setattr(sources, "debian_images", lambda *a, **k: [])
    result = run_cli("eval", "heldout", "--encoder", str(tiny_clip_dir), "--photos", "debian",
                     "--images", "4", "--out", str(tmp_path / "out"), "--quiet", "--no-cache")
    assert_one_line_error(result, "apt-get install")
