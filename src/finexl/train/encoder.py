"""A minimal Encoder over an in-memory or saved transformers CLIP, for training and checks.

The product loads encoders through ``finexl.encoders``; this adapter exists so that the
training loop can run the encoder checks on the model it is training, and so the training
scripts can check a saved directory without depending on the product's loader. Images go
through the directory's own ``CLIPImageProcessor`` when one is given (exactly what a user
gets), else through :func:`finexl.train.data.normalise` (the same steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class ClipEncoder:
    """``embed_images`` / ``embed_texts`` (L2-normalised, float32) for a ``CLIPModel``."""

    def __init__(self, model, tokenizer, *, image_size: int, processor=None,
                 encoder_id: str = "clip-in-memory", batch_size: int = 64) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor
        self.image_size = image_size
        self.id = encoder_id
        self.dim = int(model.config.projection_dim)
        self.batch_size = batch_size

    def _pixels(self, images):
        import torch

        if self.processor is not None:
            return self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        from finexl.imaging.transforms import to_array
        from finexl.train.data import normalise

        return torch.from_numpy(normalise([to_array(im) for im in images], self.image_size))

    def embed_images(self, images: Sequence, *, progress: bool = False) -> np.ndarray:
        import torch

        from finexl.train.model import _pooled

        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                pixels = self._pixels(images[start:start + self.batch_size])
                features = _pooled(self.model.get_image_features(pixel_values=pixels))
                out.append(torch.nn.functional.normalize(features, dim=-1).numpy())
        self.model.train(was_training)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        import torch

        from finexl.train.model import _pooled

        was_training = self.model.training
        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[start:start + self.batch_size]),
                                        padding=True, truncation=True, return_tensors="pt")
                features = _pooled(self.model.get_text_features(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
                out.append(torch.nn.functional.normalize(features, dim=-1).numpy())
        self.model.train(was_training)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def load_clip_directory(path: str | Path) -> ClipEncoder:
    """Load a saved CLIP directory exactly as transformers does (model, tokenizer, processor)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    path = Path(path)
    model = CLIPModel.from_pretrained(path)
    model.eval()
    tokenizer = CLIPTokenizer.from_pretrained(path)
    processor = CLIPImageProcessor.from_pretrained(path)
    return ClipEncoder(model, tokenizer, image_size=int(model.config.vision_config.image_size),
                       processor=processor, encoder_id=f"clip-dir:{path.name}")
