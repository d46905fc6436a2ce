"""The mini encoder's architecture (a plain transformers CLIP) and its training losses.

Three losses, all on L2-normalised embeddings:

- ``clip``: CLIP's symmetric contrastive loss over every image/caption pair of the batch
  (bases with their subject captions, variants with their full captions). Identical
  captions are not counted as negatives of each other.
- ``diff``: the same contrastive loss on *differences*: ``E_img(variant) - E_img(base)``
  against ``E_txt(caption with qualities) - E_txt(subject caption)``. Variants carrying
  the same set of qualities are all positives (supervised contrastive). This is FineXL's
  alignment (V_div against f(C)) made a training target, and it pushes the directions of
  different qualities apart.
- ``magnitude``: ``||d_img - d_txt||^2``, so the text difference has the image
  difference's length: "slightly sepia" moves less than "very sepia", and a neutral suffix
  (", a photo") moves the caption by nothing.

The two difference losses are ramped in over the first steps (``ramp_steps``) and the
difference directions are normalised with a floor on their length: scale-free losses on
tiny differences have huge gradients, and early in training they otherwise win by
collapsing every embedding onto one point (the CLIP loss then sits at log(n) for good).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ModelConfig:
    """Sizes of the mini CLIP (recorded with the trained encoder)."""

    image_size: int = 128
    patch_size: int = 16
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    projection_dim: int = 128
    max_text_tokens: int = 40


@dataclass
class LossWeights:
    clip: float = 1.0
    diff: float = 1.0
    magnitude: float = 1.0
    diff_temperature: float = 0.1
    ramp_steps: int = 300  # the difference losses grow from 0 to full weight over these steps
    direction_floor: float = 0.05  # normalise differences by max(||d||, floor)


def build_clip(config: ModelConfig, *, vocab_size: int, bos_token_id: int, eos_token_id: int,
               seed: int = 0):
    """A freshly initialised ``transformers.CLIPModel`` of the given sizes."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    clip_config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size, "hidden_size": config.text_width,
            "intermediate_size": 4 * config.text_width,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.text_heads,
            "max_position_embeddings": config.max_text_tokens, "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id, "pad_token_id": eos_token_id,
        },
        vision_config={
            "image_size": config.image_size, "patch_size": config.patch_size,
            "hidden_size": config.vision_width, "intermediate_size": 4 * config.vision_width,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.vision_heads,
        },
        projection_dim=config.projection_dim,
    )
    # The fork's RNG, so building a model never disturbs anyone's global torch state.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPModel(clip_config)
    return model


def _pooled(output):
    return output if hasattr(output, "shape") else output.pooler_output


def embed(model, pixels, input_ids, attention_mask):
    """L2-normalised image ``(n_images, d)`` and text ``(n_texts, d)`` embeddings."""
    import torch.nn.functional as F

    images = _pooled(model.get_image_features(pixel_values=pixels))
    texts = _pooled(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
    return F.normalize(images, dim=-1), F.normalize(texts, dim=-1)


def _soft_contrastive(a, b, positives, scale):
    """Symmetric cross-entropy of ``scale * a @ b.T`` against rows of ``positives`` (0/1)."""
    import torch

    logits = scale * a @ b.T
    target = positives / positives.sum(dim=1, keepdim=True)
    loss_ab = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    target_t = positives.T / positives.T.sum(dim=1, keepdim=True)
    loss_ba = -(target_t * torch.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_ab + loss_ba)


def mini_losses(model, batch_tensors: dict, weights: LossWeights, step: int | None = None) -> dict:
    """The three losses and their weighted total for one batch.

    ``batch_tensors`` holds ``pixels`` (n, 3, s, s), ``input_ids`` and ``attention_mask``
    (n, tokens) for the same n items (bases first), ``base_index`` (n_variants,),
    ``neutral`` (n_variants,) bool, and ``quality_keys`` (n_variants,) int: equal keys mean
    the same set of qualities.
    """
    import torch

    images, texts = embed(model, batch_tensors["pixels"], batch_tensors["input_ids"],
                          batch_tensors["attention_mask"])
    n_bases = images.shape[0] - batch_tensors["base_index"].shape[0]
    ids = batch_tensors["input_ids"]
    same_caption = (ids[:, None, :] == ids[None, :, :]).all(dim=-1).float()
    scale = model.logit_scale.exp().clamp(max=100.0)
    clip_loss = _soft_contrastive(images, texts, same_caption, scale)

    base_index = batch_tensors["base_index"]
    image_diffs = images[n_bases:] - images[base_index]
    text_diffs = texts[n_bases:] - texts[base_index]
    moved = ~batch_tensors["neutral"]
    keys = batch_tensors["quality_keys"][moved]
    same_qualities = (keys[:, None] == keys[None, :]).float()
    floor = weights.direction_floor
    diff_loss = _soft_contrastive(
        torch.nn.functional.normalize(image_diffs[moved], dim=-1, eps=floor),
        torch.nn.functional.normalize(text_diffs[moved], dim=-1, eps=floor),
        same_qualities, 1.0 / weights.diff_temperature)
    magnitude_loss = ((image_diffs - text_diffs) ** 2).sum(dim=-1).mean()
    ramp = 1.0 if step is None else min(1.0, step / max(1, weights.ramp_steps))
    total = weights.clip * clip_loss + ramp * (weights.diff * diff_loss
                                               + weights.magnitude * magnitude_loss)
    with torch.no_grad():
        # Logged only: how far the caption's move is from the image's, relative to the latter.
        relative = torch.sqrt(((image_diffs[moved] - text_diffs[moved]) ** 2).sum(dim=-1).mean()
                              / ((image_diffs[moved] ** 2).sum(dim=-1).mean() + 1e-12))
    return {"total": total, "clip": clip_loss, "diff": diff_loss, "magnitude": magnitude_loss,
            "relative_residual": relative}


def config_dict(config) -> dict:
    return asdict(config)
