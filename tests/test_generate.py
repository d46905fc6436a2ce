"""Generation through real diffusers code: a tiny random Stable Diffusion pipeline saved to a
folder and loaded back by path, a LoRA made with peft and applied with a scale, shared seeds,
batch-size independence, resume, atomic writes, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finexl.errors import FinexlError
from finexl.generate.pipelines import (
    LoraSpec,
    checkpoint_class,
    load_pipeline,
    parse_lora_spec,
)
from finexl.generate.prompts import load_default_prompts
from finexl.generate.run import GenerateConfig, generate, plan_jobs
from finexl.output_lock import LOCK_NAME

PROMPTS = ["a red ball", "a blue house", "a green tree"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(sd_dir, out, **changes) -> GenerateConfig:
    settings = {"model": str(sd_dir), "out_dir": out, "prompts": PROMPTS, "steps": 2,
                "guidance": 2.0, "batch_size": 2}
    settings.update(changes)
    return GenerateConfig(**settings)


def _pixels(folder: Path, name: str) -> np.ndarray:
    with Image.open(folder / name) as image:
        return np.asarray(image.convert("RGB"), np.int16)


def _metadata(folder: Path) -> list[dict]:
    lines = (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


class Counting:
    """Wraps a pipeline, counting calls and images; can raise at a chosen call."""

    def __init__(self, pipe, fail_at: int | None = None) -> None:
        self.pipe, self.fail_at = pipe, fail_at
        self.calls, self.images = 0, 0

    def __call__(self, **kwargs):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("interrupted by the test")
        self.images += len(kwargs["prompt"])
        return self.pipe(**kwargs)


# Loading and seeds -------------------------------------------------------------------------

def test_pipeline_loads_by_path_and_same_seed_gives_same_image(sd_dir, tmp_path):
    records = generate(_config(sd_dir, tmp_path / "a"))
    generate(_config(sd_dir, tmp_path / "b"))
    assert [r["file_name"] for r in records] == ["p0000_s0000.png", "p0001_s0001.png",
                                                 "p0002_s0002.png"]
    for record in records:
        assert np.array_equal(_pixels(tmp_path / "a", record["file_name"]),
                              _pixels(tmp_path / "b", record["file_name"]))
    # Different seeds give different images (the test above is not vacuous).
    assert not np.array_equal(_pixels(tmp_path / "a", "p0000_s0000.png"),
                              _pixels(tmp_path / "a", "p0001_s0001.png"))
    written = _metadata(tmp_path / "a")
    assert [r["file_name"] for r in written] == [r["file_name"] for r in records]
    first = written[0]
    assert first["prompt"] == "a red ball" and first["seed"] == 0
    assert first["model"] == str(sd_dir.resolve()) and first["loras"] == []
    assert first["steps"] == 2 and first["guidance"] == 2.0 and first["size"] == [16, 16]


def test_image_does_not_depend_on_batch_size(sd_dir, tmp_path):
    generate(_config(sd_dir, tmp_path / "one", batch_size=1))
    generate(_config(sd_dir, tmp_path / "two", batch_size=2))
    for name in ("p0000_s0000.png", "p0001_s0001.png", "p0002_s0002.png"):
        one, two = _pixels(tmp_path / "one", name), _pixels(tmp_path / "two", name)
        # Batched float arithmetic may round one pixel level differently, never more.
        assert np.abs(one - two).max() <= 1
        assert (one == two).mean() > 0.98


def test_default_pipeline_steps_are_recorded(sd_dir, tmp_path):
    records = generate(_config(sd_dir, tmp_path, steps=None, guidance=None, prompts=PROMPTS[:1]))
    assert records[0]["steps"] == 50 and records[0]["guidance"] == 7.5


def test_lora_is_applied_with_its_scale(sd_dir, lora_file, tmp_path):
    base = tmp_path / "base"
    generate(_config(sd_dir, base, prompts=PROMPTS[:1]))
    distances = {}
    for scale in (0.0, 1.0, 2.0):
        out = tmp_path / f"lora{scale}"
        records = generate(_config(sd_dir, out, prompts=PROMPTS[:1],
                                   loras=(LoraSpec(str(lora_file), scale),)))
        assert records[0]["loras"] == [{"path": str(lora_file.resolve()), "scale": scale}]
        distances[scale] = np.abs(_pixels(out, "p0000_s0000.png")
                                  - _pixels(base, "p0000_s0000.png")).mean()
    assert distances[0.0] == 0
    assert 0 < distances[1.0] < distances[2.0]


def test_lora_folder_is_accepted(sd_dir, lora_file):
    pipe = load_pipeline(str(sd_dir), loras=[LoraSpec(str(lora_file.parent), 0.5)])
    assert "lora0" in pipe.get_active_adapters()


# Resume and interruption -------------------------------------------------------------------

def test_resume_makes_only_missing_images(sd_dir, tmp_path):
    pipe = load_pipeline(str(sd_dir))
    config = _config(sd_dir, tmp_path, n_seeds=2)
    first = Counting(pipe)
    generate(config, pipeline=first)
    assert (first.calls, first.images) == (3, 6)
    before = _pixels(tmp_path, "p0001_s0003.png")
    (tmp_path / "p0001_s0003.png").unlink()
    second = Counting(pipe)
    records = generate(config, pipeline=second)
    assert (second.calls, second.images) == (1, 1)
    # Remade alone, not in its first batch of two: equal up to float rounding.
    assert np.abs(_pixels(tmp_path, "p0001_s0003.png") - before).max() <= 1
    assert len(records) == 6 and len(_metadata(tmp_path)) == 6
    third = Counting(pipe)
    generate(config, pipeline=third)
    assert third.calls == 0


def test_resume_refuses_images_made_with_other_settings(sd_dir, tmp_path):
    generate(_config(sd_dir, tmp_path, prompts=PROMPTS[:1]))
    with pytest.raises(FinexlError, match=r"steps=2.*asks for 3") as error:
        generate(_config(sd_dir, tmp_path, prompts=PROMPTS[:1], steps=3))
    assert "\n" not in str(error.value)


def test_interrupted_run_leaves_no_partial_file_and_resumes(sd_dir, tmp_path):
    pipe = load_pipeline(str(sd_dir))
    config = _config(sd_dir, tmp_path, batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        generate(config, pipeline=Counting(pipe, fail_at=2))
    # Only the finished image and its metadata (and the output folder's lock file).
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "metadata.jsonl",
                                                          "p0000_s0000.png"]
    assert [r["file_name"] for r in _metadata(tmp_path)] == ["p0000_s0000.png"]
    rest = Counting(pipe)
    generate(config, pipeline=rest)
    assert rest.images == 2 and len(_metadata(tmp_path)) == 3


def test_failure_while_encoding_a_png_leaves_nothing(sd_dir, tmp_path, monkeypatch):
    from finexl.generate import run

    def broken(image):
        raise OSError("disk full while encoding")

    monkeypatch.setattr(run, "_png_bytes", broken)
    with pytest.raises(OSError):
        generate(_config(sd_dir, tmp_path, prompts=PROMPTS[:1]))
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]


# Plans and prompts -------------------------------------------------------------------------

def test_seed_plan():
    records = [{"prompt": "a", "seed": None}, {"prompt": "b", "seed": 40}]
    jobs = plan_jobs(GenerateConfig(out_dir="x", n_seeds=2), records)
    assert [(j.index, j.seed, j.file_name) for j in jobs] == [
        (0, 0, "p0000_s0000.png"), (0, 1, "p0000_s0001.png"),
        (1, 40, "p0001_s0040.png"), (1, 41, "p0001_s0041.png")]
    fixed = plan_jobs(GenerateConfig(out_dir="x", seeds=(7, 9)), records)
    assert [j.seed for j in fixed] == [7, 9, 7, 9]
    shifted = plan_jobs(GenerateConfig(out_dir="x", seed_offset=100), records[:1])
    assert shifted[0].seed == 100


def test_default_prompts():
    prompts = load_default_prompts()
    assert len(prompts) == 200 and len(set(prompts)) == 200
    assert load_default_prompts(25) == prompts[:25]
    tiny = load_default_prompts(name="tiny")
    assert len(tiny) == 200 and all(" on " in p or " at " in p or " under " in p for p in tiny)
    for bad in (0, 201, "10"):
        with pytest.raises(FinexlError):
            load_default_prompts(bad)
    with pytest.raises(FinexlError, match="default, tiny"):
        load_default_prompts(name="coco")


def test_prompts_from_jsonl_file_with_seeds(sd_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red ball", "seed": 5}\n{"prompt": "a cat"}\n',
                       encoding="utf-8")
    records = generate(_config(sd_dir, tmp_path / "out", prompts=prompts))
    assert [(r["prompt"], r["seed"]) for r in records] == [("a red ball", 5), ("a cat", 1)]


@pytest.mark.parametrize("text, expected", [
    ("style.safetensors", LoraSpec("style.safetensors", 1.0)),
    ("style.safetensors:0.8", LoraSpec("style.safetensors", 0.8)),
    ("/loras/a:b.safetensors", LoraSpec("/loras/a:b.safetensors", 1.0)),
    ("C:\\loras\\x.safetensors:-1", LoraSpec("C:\\loras\\x.safetensors", -1.0)),
])
def test_parse_lora_spec(text, expected):
    assert parse_lora_spec(text) == expected


# Errors ------------------------------------------------------------------------------------

def _one_line_error(call, *patterns):
    with pytest.raises(FinexlError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    for pattern in patterns:
        assert pattern in message, message


def test_errors_are_one_line(sd_dir, lora_file, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(lambda: load_pipeline(str(tmp_path / "nowhere")), "does not exist")
    _one_line_error(lambda: load_pipeline(str(empty)), "model_index.json")
    _one_line_error(lambda: load_pipeline("builtin:huge"), "builtin:tiny")
    _one_line_error(lambda: load_pipeline("someone/not-cached-model"), "local Hugging Face cache")
    _one_line_error(lambda: load_pipeline(str(lora_file)), "is a LoRA", "--lora")
    _one_line_error(lambda: load_pipeline(str(lora_file.parent)), "holds a LoRA")
    _one_line_error(lambda: load_pipeline(str(sd_dir), loras=[LoraSpec("missing.safetensors")]),
                    "missing.safetensors", "does not exist")
    _one_line_error(lambda: load_pipeline(str(sd_dir), dtype="float8"), "float32")
    _one_line_error(lambda: load_pipeline(str(sd_dir), device="tpu"), "cpu")
    empty_prompts = tmp_path / "prompts.txt"
    empty_prompts.write_text("# nothing\n\n", encoding="utf-8")
    _one_line_error(lambda: generate(_config(sd_dir, tmp_path / "o", prompts=empty_prompts)),
                    "holds no prompts")
    _one_line_error(lambda: generate(_config(sd_dir, tmp_path / "o",
                                             prompts=tmp_path / "missing.txt")), "does not exist")
    _one_line_error(lambda: generate(_config(sd_dir, None)), "--out")
    _one_line_error(lambda: generate(_config(sd_dir, tmp_path / "o", size=20)), "multiple of 8")
    _one_line_error(lambda: generate(_config(sd_dir, tmp_path / "o", batch_size=0)), "batch_size")


def test_incompatible_lora_is_a_finexl_error(sd_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 999),
               "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight": torch.zeros(999, 4)},
              str(bad))
    _one_line_error(lambda: load_pipeline(str(sd_dir), loras=[LoraSpec(str(bad))]),
                    "other.safetensors", "base model")


def test_checkpoint_kind_from_tensor_names(tmp_path):
    import torch
    from safetensors.torch import save_file

    sd = tmp_path / "merged.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(sd))
    assert checkpoint_class(sd) == "StableDiffusionPipeline"
    xl = tmp_path / "xl.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
               "conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, str(xl))
    assert checkpoint_class(xl) == "StableDiffusionXLPipeline"
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(1)}, str(other))
    _one_line_error(lambda: checkpoint_class(other), "not a Stable Diffusion")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    _one_line_error(lambda: checkpoint_class(broken), "cannot be read")
