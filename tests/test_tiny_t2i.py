"""The shipped tiny text-to-image model: its data, its measurements, that it follows colour
words, and that fine-tuning (full and LoRA) moves its outputs toward the training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finexl.errors import FinexlError
from finexl.generate import tiny_data, tiny_metrics
from finexl.generate.pipelines import LoraSpec, load_pipeline
from finexl.generate.run import GenerateConfig, generate

COLOUR_PROMPTS = [
    ("a red circle on a white background", "red", "white"),
    ("a blue square on a yellow background", "blue", "yellow"),
    ("a yellow star on a black background", "yellow", "black"),
    ("a green triangle on a white background", "green", "white"),
    ("a white heart on a blue background", "white", "blue"),
    ("a pink ring on a black background", "pink", "black"),
]
SEEDS = [0, 1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(pipe, prompts, seeds=SEEDS, steps=20):
    import torch

    jobs = [(p, s) for p in prompts for s in seeds]
    generators = [torch.Generator().manual_seed(s) for _, s in jobs]
    return pipe([p for p, _ in jobs], generator=generators, num_inference_steps=steps).images


# Data and measurements ---------------------------------------------------------------------

def test_training_scenes_never_show_held_out_pairs():
    rng = np.random.default_rng(0)
    scenes = [tiny_data.random_scene(rng) for _ in range(1500)]
    assert not {(s.colour, s.shape) for s in scenes} & tiny_data.HELD_OUT
    assert {s.shape for s in scenes} == set(tiny_data.SHAPES)
    known = set(tiny_data.vocabulary()) | set(tiny_data.FILLER_WORDS)
    words = {w for s in scenes for w in s.caption.replace(",", " ").split()}
    assert words <= known
    assert len(tiny_data.HELD_OUT) == 12 and {s for _, s in tiny_data.HELD_OUT} == set(
        tiny_data.SHAPES)


def test_readings_of_drawn_scenes_are_right():
    rng = np.random.default_rng(3)
    checked = 0
    for colour, shape, background in [("red", "star", "white"), ("blue", "ring", "yellow"),
                                      ("black", "heart", "gray"), ("pink", "square", "green")]:
        image, mask = tiny_data.render(colour, shape, background, rng=rng)
        reading = tiny_metrics.read_image(image)
        assert (reading.colour, reading.background) == (colour, background)
        assert (reading.mask == mask).mean() > 0.97
        checked += 1
    assert checked == 4


def test_sepia_distance_ranks_sepia_images_lower():
    rng = np.random.default_rng(0)
    images = [tiny_data.random_scene(rng).image for _ in range(20)]
    toned = [(tiny_metrics.sepia(im / 255) * 255).round().astype(np.uint8) for im in images]
    assert tiny_metrics.sepia_distance(toned) < 0.1 * tiny_metrics.sepia_distance(images)


# The shipped model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pipe():
    from finexl.generate.tiny import BUILTIN_DIR

    assert (BUILTIN_DIR / "model_index.json").exists(), "the builtin:tiny weights are missing"
    return load_pipeline("builtin:tiny")


def test_builtin_model_is_small_and_loads(tiny_pipe):
    from finexl.generate.tiny import BUILTIN_DIR, FinexlTinyPipeline

    size = sum(p.stat().st_size for p in BUILTIN_DIR.rglob("*") if p.is_file())
    assert size < 30e6
    assert isinstance(tiny_pipe, FinexlTinyPipeline) and tiny_pipe.default_size == 32
    assert json.loads((BUILTIN_DIR / "training.json").read_text())["steps"] > 0


def test_builtin_model_follows_colour_words(tiny_pipe):
    images = _images(tiny_pipe, [p for p, _, _ in COLOUR_PROMPTS])
    objects = backgrounds = 0
    for i, image in enumerate(images):
        _, colour, background = COLOUR_PROMPTS[i // len(SEEDS)]
        reading = tiny_metrics.read_image(image)
        objects += reading.colour == colour
        backgrounds += reading.background == background
    # Chance is 1/11 for each; see docs/TINY_MODEL.md for the measured rates.
    assert objects >= 8 and backgrounds >= 9, (objects, backgrounds)


def test_generate_runs_the_builtin_model(tiny_pipe, tmp_path):
    records = generate(GenerateConfig(out_dir=tmp_path, prompts="builtin:tiny", prompt_count=3,
                                      batch_size=3), pipeline=tiny_pipe)
    assert [r["size"] for r in records] == [[32, 32]] * 3
    assert records[0]["model"] == "builtin:tiny" and records[0]["steps"] == 20


def test_saved_tiny_pipeline_loads_by_path(tmp_path):
    import torch

    from finexl.generate import tiny

    pipe = tiny.build_tiny_pipeline(tiny_data.vocabulary(), channels=(16, 32), seed=0)
    tiny.save_tiny_pipeline(pipe, tmp_path / "model")
    loaded = load_pipeline(str(tmp_path / "model"))
    assert isinstance(loaded, tiny.FinexlTinyPipeline)
    before = pipe("a red star", generator=[torch.Generator().manual_seed(3)],
                  num_inference_steps=3, output_type="np")
    after = loaded("a red star", generator=[torch.Generator().manual_seed(3)],
                   num_inference_steps=3, output_type="np")
    assert np.array_equal(before.images, after.images)


# Fine-tuning -------------------------------------------------------------------------------

def _sepia_folder(folder: Path, count: int = 16, seed: int = 0) -> Path:
    """Procedural scenes turned sepia, with their captions, in the ImageFolder layout."""
    from PIL import Image

    from finexl.pairs import write_metadata

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    records = []
    for i in range(count):
        scene = tiny_data.random_scene(rng)
        toned = (tiny_metrics.sepia(scene.image / 255) * 255).round().astype(np.uint8)
        Image.fromarray(toned).save(folder / f"{i:03d}.png")
        records.append({"file_name": f"{i:03d}.png", "prompt": scene.caption})
    write_metadata(folder, records)
    return folder


PROBE = ["a red circle on a white background", "a blue star on a yellow background"]


@pytest.fixture(scope="module")
def sepia_data(tmp_path_factory) -> Path:
    """One sepia training folder for the fine-tuning tests (read-only)."""
    return _sepia_folder(tmp_path_factory.mktemp("sepia") / "data")


@pytest.fixture(scope="module")
def base_sepia_distance(tiny_pipe) -> float:
    """How far the untuned model's PROBE images are from sepia (made once)."""
    return tiny_metrics.sepia_distance(_images(tiny_pipe, PROBE))


def test_finetune_writes_models_that_load_and_differ_from_the_base(sepia_data, tmp_path):
    """The fast sibling of the two tests below: two steps each, no image quality measured."""
    import torch

    from finexl.generate.finetune import finetune

    full = finetune(sepia_data, tmp_path / "model", steps=2, lr=5e-4, batch_size=4,
                    save_steps=(1,))
    assert full.checkpoints[1] == tmp_path / "model" / "step-00001"
    record = json.loads((full.out_dir / "finetune.json").read_text())
    assert record["steps"] == 2 and len(record["losses"]) == 2
    base = load_pipeline("builtin:tiny").unet.state_dict()
    tuned = load_pipeline(str(full.out_dir)).unet.state_dict()
    assert any(not torch.equal(base[name], tuned[name]) for name in base)
    lora = finetune(sepia_data, tmp_path / "lora", steps=2, lr=2e-3, batch_size=4, lora=True,
                    lora_rank=4)
    assert (lora.out_dir / "pytorch_lora_weights.safetensors").is_file()
    with_lora = load_pipeline("builtin:tiny", loras=[LoraSpec(str(lora.out_dir), 1.0)])
    assert any("lora" in name for name in with_lora.unet.state_dict())


@pytest.mark.slow  # three pipelines' images measured; the fast sibling is above
def test_full_finetune_moves_outputs_toward_the_data(sepia_data, base_sepia_distance, tmp_path):
    from finexl.generate.finetune import finetune

    result = finetune(sepia_data, tmp_path / "model", steps=12, lr=5e-4, batch_size=8,
                      save_steps=(6,))
    assert result.checkpoints[6] == tmp_path / "model" / "step-00006"
    before = base_sepia_distance
    middle = tiny_metrics.sepia_distance(_images(load_pipeline(str(result.checkpoints[6])), PROBE))
    after = tiny_metrics.sepia_distance(_images(load_pipeline(str(result.out_dir)), PROBE))
    assert after < middle < before, (before, middle, after)
    record = json.loads((result.out_dir / "finetune.json").read_text())
    assert record["steps"] == 12 and len(record["losses"]) == 12


@pytest.mark.slow  # the fast sibling is test_finetune_writes_models_that_load_and_differ...
def test_lora_finetune_loads_as_a_lora(sepia_data, base_sepia_distance, tmp_path):
    from finexl.generate.finetune import finetune

    result = finetune(sepia_data, tmp_path / "lora", steps=12, lr=2e-3, batch_size=8, lora=True,
                      lora_rank=4)
    assert (result.out_dir / "pytorch_lora_weights.safetensors").is_file()
    tuned = load_pipeline("builtin:tiny", loras=[LoraSpec(str(result.out_dir), 1.0)])
    before = base_sepia_distance
    after = tiny_metrics.sepia_distance(_images(tuned, PROBE))
    assert after < before, (before, after)


def test_finetune_errors(tmp_path, tiny_pipe):
    from finexl.generate.finetune import finetune

    with pytest.raises(FinexlError, match="does not exist"):
        finetune(tmp_path / "nowhere", tmp_path / "out", steps=1)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(FinexlError, match="holds no images"):
        finetune(bare, tmp_path / "out", steps=1)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(bare / "a.png")
    with pytest.raises(FinexlError, match="no caption"):
        finetune(bare, tmp_path / "out", steps=1)
    with pytest.raises(FinexlError, match="steps"):
        finetune(bare, tmp_path / "out", steps=0, caption="x")
    with pytest.raises(FinexlError, match="save_steps"):
        finetune(bare, tmp_path / "out", steps=5, caption="x", save_steps=(9,))


@pytest.mark.slow
def test_finetune_levels_grow_with_steps(tiny_pipe, tmp_path):
    """Appendix C: the personalization level grows with fine-tuning steps (20..200, lr 1e-4)."""
    from scipy.stats import spearmanr

    from finexl.generate.finetune import finetune

    data = _sepia_folder(tmp_path / "data", count=64)
    levels = tuple(range(20, 201, 20))
    result = finetune(data, tmp_path / "model", steps=200, lr=1e-4, batch_size=8,
                      save_steps=levels)
    prompts = [p for p, _, _ in COLOUR_PROMPTS]
    distances = [tiny_metrics.sepia_distance(_images(load_pipeline(str(result.checkpoints[s])),
                                                     prompts)) for s in levels]
    base = tiny_metrics.sepia_distance(_images(tiny_pipe, prompts))
    assert distances[0] < base
    assert spearmanr(levels, distances).statistic < -0.9, distances
