"""Preference-VQA LoRA training of a real VLM: checkpoints, resume, and `accelerate launch`."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import write_user_images

from finexl.errors import FinexlError
from finexl.prefgen.users import load_users
from finexl.prefgen.vlm_training import VLMTrainingArgs, draw_batch, train_vlm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def agents_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("agents")
    lines = []
    for u, (likes, dislikes) in enumerate([(["sepia"], ["blurry"]), (["dark", "red object"], []),
                                           ([], [])]):
        paths = write_user_images(root, u, {"liked": 2, "disliked": 2}, (8, 8))
        lines.append(json.dumps({"user_id": f"u{u}", "liked": paths["liked"],
                                 "disliked": paths["disliked"],
                                 "liked_attributes": likes, "disliked_attributes": dislikes}))
    (root / "users.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _args(agents_dir, vlm, out, **extra):
    return VLMTrainingArgs(users_dir=str(agents_dir), pretrained_model_name_or_path=str(vlm),
                           output_dir=str(out), train_batch_size=2, learning_rate=1e-2,
                           checkpointing_steps=1, logging_steps=1, lora_rank=2, **extra)


def _lora(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_questions_follow_the_users_attributes(agents_dir):
    users = load_users(agents_dir)
    args = _args(agents_dir, "unused", "unused", max_images=1)
    seen = {}
    for step in range(40):
        for query, answer in draw_batch(users, args, step, 0, 0):
            seen[query.question] = answer
            assert len(query.liked) <= 1 and len(query.disliked) <= 1
            if "new image" in query.question:
                assert answer in "+-" and len(query.candidates) == 1
    assert seen.get("Does this user like sepia? Answer yes or no.") == "yes"
    assert seen.get("Does this user like blurry? Answer yes or no.") == "no"
    assert seen.get("What does this user like? List the attributes.") in ("sepia",
                                                                        "dark, red object")
    # the same (seed, step, micro, process) draws the same questions
    first = [(q.question, a) for q, a in draw_batch(users, args, 7, 0, 0)]
    assert first == [(q.question, a) for q, a in draw_batch(users, args, 7, 0, 0)]


def test_checkpoints_hold_only_the_lora_and_resume_equals_one_run(agents_dir, tiny_llava_dir,
                                                                  tmp_path):
    whole = train_vlm(_args(agents_dir, tiny_llava_dir, tmp_path / "whole", max_train_steps=3))
    assert whole.global_step == 3 and [r["step"] for r in whole.losses] == [1, 2, 3]
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert not any(p.name.startswith("model") for p in checkpoint.iterdir())  # no full VLM
    # an interrupted run (2 steps, checkpoint-2 kept) resumed to 3 steps
    part = tmp_path / "part"
    train_vlm(_args(agents_dir, tiny_llava_dir, part, max_train_steps=2))
    resumed = train_vlm(_args(agents_dir, tiny_llava_dir, part, max_train_steps=3,
                              resume_from_checkpoint="latest"))
    assert resumed.resumed_from == 2 and resumed.global_step == 3
    expected, got = _lora(tmp_path / "whole" / "lora"), _lora(part / "lora")
    assert set(expected) == set(got)
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-6)
    assert [r["step"] for r in resumed.losses] == [1, 2, 3]
    # the trained LoRA changes the model: it is not still at its zero-B start
    assert any(float(v.abs().max()) > 0 for k, v in got.items() if "lora_B" in k)
    with pytest.raises(FinexlError, match="does not exist"):
        train_vlm(_args(agents_dir, tiny_llava_dir, part, resume_from_checkpoint="checkpoint-9"))


def _accelerate_launch(agents_dir, vlm, out, steps):
    from conftest import accelerate_finexl

    return accelerate_finexl(
        "prefgen", "train-vlm", "--users", str(agents_dir), "--vlm", str(vlm), "--output-dir",
        str(out), "--max-train-steps", str(steps), "--checkpointing-steps", "1", "--lora-rank",
        "2", "--train-batch-size", "1", "--resume-from-checkpoint", "latest", "-q", timeout=600)


@pytest.mark.slow  # two `accelerate launch` processes, each importing torch and transformers
def test_accelerate_launch_runs_the_cli_and_resumes(agents_dir, tiny_llava_dir, tmp_path):
    first = _accelerate_launch(agents_dir, tiny_llava_dir, tmp_path / "run", 1)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "LoRA after 1 steps (from 0" in first.stdout
    second = _accelerate_launch(agents_dir, tiny_llava_dir, tmp_path / "run", 2)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "LoRA after 2 steps (from 1" in second.stdout
    assert (tmp_path / "run" / "lora" / "adapter_config.json").is_file()


def test_the_cli_entry_is_what_accelerate_launch_runs(agents_dir, tiny_llava_dir, tmp_path):
    """In process, the same command line `accelerate launch -m finexl.cli` hands over."""
    from click.testing import CliRunner

    from finexl.cli import main

    args = ["prefgen", "train-vlm", "--users", str(agents_dir), "--vlm", str(tiny_llava_dir),
            "--output-dir", str(tmp_path / "run"), "--max-train-steps", "1",
            "--checkpointing-steps", "1", "--lora-rank", "2", "--train-batch-size", "1",
            "--resume-from-checkpoint", "latest", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "LoRA after 1 steps (from 0" in result.output
    result = CliRunner().invoke(main, [*args[:-6], "--mixed-precision", "fp8"])
    assert result.exit_code == 2  # click refuses the choice before anything loads
    assert sys.modules.get("finexl.cli") is not None


def test_probe_vlm_reads_every_layer_and_chooses_bands(agents_dir, tiny_llava_dir, tmp_path):
    from finexl.prefgen.population import PROFILE_QUESTION
    from finexl.prefgen.vlm_features import PreferenceQuery, VLMFeatureExtractor
    from finexl.prefgen.vlm_probing import probe_queries, probe_vlm, read_states

    users = load_users(agents_dir) * 2  # 6 users (ids repeat, which the probes do not read)
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    report = probe_vlm(extractor, users, sessions=2, refs=1)
    assert len(report.inter_user) == len(report.intra_user) == 3  # layers 0, 1, 2
    assert all(0 <= a <= 1 for a in report.inter_user + report.intra_user)
    assert set(report.core_layers) | set(report.sem_layers) <= {1, 2}  # never layer 0
    assert report.chance_inter == pytest.approx(1 / 6)
    # a plan's states are the extractor's own reading of that plan's images
    inter, _ = probe_queries(users[:1], sessions=2, refs=1, question=PROFILE_QUESTION)
    from finexl.imaging.decode import load_images

    states = read_states(extractor, inter[:1], PROFILE_QUESTION)
    query = PreferenceQuery(tuple(load_images(inter[0][2])), tuple(load_images(inter[0][3])),
                            PROFILE_QUESTION)
    np.testing.assert_allclose(states[0], extractor.layer_states([query], [0, 1, 2])[0],
                               atol=1e-5)
    with pytest.raises(FinexlError, match="at least 4 users"):
        probe_vlm(extractor, users[:3])


def test_cli_probe_then_extract_bands(agents_dir, tiny_llava_dir, tmp_path):
    from click.testing import CliRunner

    from finexl.cli import main
    from finexl.prefgen.population import read_features

    bigger = tmp_path / "users"
    shutil.copytree(agents_dir, bigger)
    lines = (bigger / "users.jsonl").read_text().splitlines()
    extra = [json.dumps({**json.loads(line), "user_id": "v" + json.loads(line)["user_id"]})
             for line in lines]
    (bigger / "users.jsonl").write_text("\n".join(lines + extra) + "\n")
    runner = CliRunner()
    result = runner.invoke(main, ["prefgen", "probe-vlm", "--users", str(bigger), "--vlm",
                                  str(tiny_llava_dir), "--out", str(tmp_path / "probe"),
                                  "--sessions", "2", "--refs", "1", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "probe" / "probes.json").read_text())
    assert (tmp_path / "probe" / "probes.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(main, ["prefgen", "extract", "--users", str(bigger), "--vlm",
                                  str(tiny_llava_dir), "--bands",
                                  str(tmp_path / "probe" / "probes.json"), "--out",
                                  str(tmp_path / "feat"), "-q"])
    assert result.exit_code == 0, result.output
    tensors, metadata = read_features(tmp_path / "feat" / "u0.features.safetensors")
    layers = metadata["layers"]
    assert layers == sorted(set(report["core_layers"]) | set(report["sem_layers"]))
    core = [layers.index(k) for k in report["core_layers"]]
    np.testing.assert_allclose(tensors["e_core"], tensors["states"][core].mean(axis=0),
                               atol=1e-6)
