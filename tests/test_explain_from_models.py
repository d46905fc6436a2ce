"""`finexl explain --base-model ... --personal-model/--personal-lora ...` end to end on a real
diffusers Stable Diffusion folder (tiny, random weights, saved and loaded by path) with a
peft LoRA: the same command a user runs on SD 1.5, the base side made once and reused, and
a model retrained in place never answered from its old images."""

from __future__ import annotations

import json
import os
import time

import pytest

from finexl.from_models import ModelPair, files_identity, generate_sides, side_config
from finexl.generate.pipelines import LoraSpec
from test_cli import assert_one_line_error, run_cli


@pytest.fixture()
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red ball\na blue house\na green tree\na yellow car\n")
    return path


def _explain(sd_dir, lora_file, tiny_clip_dir, prompts_file, work, out, scale="1.0"):
    return run_cli(
        "explain", "--base-model", str(sd_dir), "--personal-lora", f"{lora_file}:{scale}",
        "--prompts", str(prompts_file), "--steps", "2", "--gen-batch-size", "2",
        "--encoder", str(tiny_clip_dir), "--concepts", str(prompts_file.with_name("c.txt")),
        "--n-bootstrap", "10", "--work", str(work), "--json", str(out), "--quiet",
        env={"FINEXL_CACHE_DIR": str(work / "cache"), "OMP_NUM_THREADS": "1"})


def test_explain_from_an_sd_folder_and_a_lora(sd_dir, lora_file, tiny_clip_dir, prompts_file,
                                               tmp_path):
    prompts_file.with_name("c.txt").write_text("red\nblue\ngreen\nbright\n")
    work = tmp_path / "work"
    first = _explain(sd_dir, lora_file, tiny_clip_dir, prompts_file, work, tmp_path / "a.json")
    assert first.returncode == 0, first.stderr
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["schema"] == "finexl.explanation/v1"
    assert result["n_pairs"] == 4
    models = result["settings"]["models"]
    assert models["base_model"] == str(sd_dir)
    assert models["personal_loras"] == [[str(lora_file), 1.0]]
    base_sets = sorted(work.glob("base-*"))
    assert len(base_sets) == 1 and len(list(base_sets[0].glob("*.png"))) == 4
    made = {p.name: p.stat().st_mtime_ns for p in base_sets[0].glob("*.png")}

    # Another personalized model of the same base: the base side is reused, not redrawn.
    second = _explain(sd_dir, lora_file, tiny_clip_dir, prompts_file, work, tmp_path / "b.json",
                      scale="0.5")
    assert second.returncode == 0, second.stderr
    assert sorted(work.glob("base-*")) == base_sets
    assert {p.name: p.stat().st_mtime_ns for p in base_sets[0].glob("*.png")} == made
    assert len(list(work.glob("personal-*"))) == 2


def test_a_model_retrained_in_place_gets_new_images(tmp_path, lora_file):
    model = tmp_path / "my-finetune"
    model.mkdir()
    weights = model / "model.safetensors"
    weights.write_bytes(b"first weights")
    pair = ModelPair(base_model="builtin:tiny", personal_model=str(model), work_dir=tmp_path)
    before = side_config(pair, "personal").out_dir
    time.sleep(0.01)
    weights.write_bytes(b"second weights, longer")
    os.utime(weights)
    assert side_config(pair, "personal").out_dir != before
    # The base side (the shipped model, unchanged) keeps its folder.
    assert side_config(pair, "base").out_dir == side_config(
        ModelPair(base_model="builtin:tiny", work_dir=tmp_path), "base").out_dir
    assert files_identity(lora_file)[0][0] == lora_file.name
    assert files_identity("some-org/some-hub-model") == []


def test_generate_sides_with_a_lora_object(sd_dir, lora_file, tmp_path):
    pair = ModelPair(base_model=str(sd_dir), personal_loras=(LoraSpec(lora_file, 1.0),),
                     prompts=None, prompt_count=2, steps=2, batch_size=2, work_dir=tmp_path)
    base_dir, personal_dir = generate_sides(pair)
    assert len(list(base_dir.glob("*.png"))) == len(list(personal_dir.glob("*.png"))) == 2


def test_missing_personal_model_is_one_line(tmp_path, tiny_clip_dir):
    result = run_cli("explain", "--base-model", "builtin:tiny", "--personal-model",
                     str(tmp_path / "nope"), "--encoder", str(tiny_clip_dir),
                     "--work", str(tmp_path), "--quiet")
    assert_one_line_error(result, "nope")
