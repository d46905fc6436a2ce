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
