"""Shared fixtures: a tiny random CLIP saved as a transformers directory (no downloads).

``tiny_clip_dir`` is built once per session; tests that change files copy it first.
``save_tiny_clip(path, seed=...)`` is exposed through the ``make_tiny_clip`` fixture for
tests that need other weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TINY_TEXT_LENGTH = 16


def tiny_vocabulary() -> dict[str, int]:
    """A byte-level vocabulary with no merges: every text tokenizes, one token per byte."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {BOS: 0, EOS: 1}
    for suffix in ("", "</w>"):
        for char in alphabet:
            vocab[char + suffix] = len(vocab)
    return vocab


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_vocabulary(), merges=[], model_max_length=TINY_TEXT_LENGTH)


def tiny_layers(**extra) -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, **extra)


def save_tiny_clip(directory: Path, *, seed: int = 0) -> Path:
    """A random CLIP (32 px images, 16-d embeddings) with its processor, saved to ``directory``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config=tiny_layers(vocab_size=len(tokenizer), max_position_embeddings=TINY_TEXT_LENGTH,
                                bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=tiny_layers(image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32})
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a busy shared CPU, two threads make tiny models 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_user_images(root: Path, user: int, counts: dict[str, int], size: tuple[int, int]
                      ) -> dict[str, list[str]]:
    """Random PNGs ``img/<user>/<side>_<k>.png`` under ``root`` (the users.jsonl layout), a
    reproducible picture per (user, k, side); returns each side's paths relative to ``root``."""
    import numpy as np
    from PIL import Image

    paths: dict[str, list[str]] = {}
    for side, n in counts.items():
        paths[side] = []
        for k in range(n):
            relative = f"img/{user}/{side}_{k}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.random.default_rng([user, k, len(side)]).integers(
                0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / relative)
            paths[side].append(relative)
    return paths


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A saved tiny random CLIP directory (read-only: copy it before changing files)."""
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def make_tiny_clip():
    """``make_tiny_clip(path, seed=0)`` saves another tiny CLIP and returns its path."""
    return save_tiny_clip


@pytest.fixture
def tiny_images():
    """Six small images of mixed modes and sizes, reproducible."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8))
           for i in range(3)]
    rgba = Image.fromarray(rng.integers(0, 256, (36, 36, 4), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8))
    deep = Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16))
    return rgb + [rgba, grey, deep]


@pytest.fixture
def tiny_texts() -> list[str]:
    return ["a photo of a cat", "sepia", "", "a very long caption " * 20, "Ünïcode café, 東京"]


# A tiny random Stable Diffusion pipeline and a LoRA for it (generation tests) ----------

def _sd_components():
    """diffusers' get_dummy_components pattern: tiny random parts from configs."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        norm_num_groups=4, attention_head_dim=2)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                        norm_num_groups=4, sample_size=16)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler, "safety_checker": None, "feature_extractor": None,
            "requires_safety_checker": False}


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory) -> Path:
    """A tiny random StableDiffusionPipeline saved as a diffusers folder (read-only)."""
    from diffusers import StableDiffusionPipeline

    directory = tmp_path_factory.mktemp("models") / "tiny-sd"
    StableDiffusionPipeline(**_sd_components()).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def lora_file(sd_dir, tmp_path_factory) -> Path:
    """A LoRA for ``sd_dir`` made with peft (non-zero weights), saved by diffusers."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, local_files_only=True)
    torch.manual_seed(1)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    directory = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers)
    return directory / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    """A tiny random LLaVA saved as a transformers folder (tests/tiny_vlm.py), read-only."""
    from tiny_vlm import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


def accelerate_finexl(*args: str, timeout: float = 900):
    """``accelerate launch --cpu --num_processes 1 -m finexl.cli ARGS`` — how a GPU user
    launches finexl's training commands, here in one CPU process (the test is skipped
    when the accelerate command is missing). Returns the ``CompletedProcess``."""
    import os
    import shutil
    import subprocess

    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not on PATH")
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_CONFIG_FILE=os.devnull)
    command = [accelerate, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "finexl.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
