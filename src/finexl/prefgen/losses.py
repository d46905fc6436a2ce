"""Alignment losses: multi-bandwidth Gaussian MMD, and the point-wise ablations.

``mmd_loss`` is the (biased, V-statistic) squared maximum mean discrepancy between two
samples under a sum of Gaussian kernels ``k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2))``:

    MMD^2(X, Y) = mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y)

It is zero when the two samples are the same set of points, positive otherwise (the
Gaussian kernel is characteristic), and matches *distributions*, not points: a user whose
mapped vectors spread over all of their liked attribute words scores better than one
collapsed onto their mean. Several bandwidths make it sensitive at several scales
(unit-norm embeddings are 0-2 apart). Sets can be batched with masks for ragged sizes.

Pure functions on tensors; nothing here knows about users or models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_BANDWIDTHS: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0)


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor,
                    bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS) -> torch.Tensor:
    """Sum over bandwidths of Gaussian kernels, ``(..., n, d), (..., m, d) -> (..., n, m)``."""
    squared = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
    return sum(torch.exp(-squared / (2.0 * s * s)) for s in bandwidths)


def _masked_mean(values: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    weights = row.unsqueeze(-1) * col.unsqueeze(-2)
    return (values * weights).sum((-2, -1)) / weights.sum((-2, -1)).clamp_min(1e-12)


def mmd_loss(x: torch.Tensor, y: torch.Tensor, *,
             bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS,
             x_mask: torch.Tensor | None = None, y_mask: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Squared MMD between sample sets ``x`` ``(..., n, d)`` and ``y`` ``(..., m, d)``.

    Parameters
    ----------
    x, y
        Samples; leading dimensions are batches of independent set pairs.
    bandwidths
        Gaussian kernel widths (summed).
    x_mask, y_mask
        ``(..., n)`` / ``(..., m)``, 1 for real points, 0 for padding.
    reduction
        ``"mean"`` over the batch dimensions, or ``"none"`` for one value per set pair.
    """
    x_mask = torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device) if x_mask is None \
        else x_mask.to(x.dtype)
    y_mask = torch.ones(y.shape[:-1], dtype=y.dtype, device=y.device) if y_mask is None \
        else y_mask.to(y.dtype)
    xx = _masked_mean(gaussian_kernel(x, x, bandwidths), x_mask, x_mask)
    yy = _masked_mean(gaussian_kernel(y, y, bandwidths), y_mask, y_mask)
    xy = _masked_mean(gaussian_kernel(x, y, bandwidths), x_mask, y_mask)
    value = (xx + yy - 2.0 * xy).clamp_min(0.0)
    if reduction == "none":
        return value
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return value.mean()


def _set_means(x, y, x_mask, y_mask):
    xm = torch.ones(x.shape[:-1], dtype=x.dtype) if x_mask is None else x_mask.to(x.dtype)
    ym = torch.ones(y.shape[:-1], dtype=y.dtype) if y_mask is None else y_mask.to(y.dtype)
    x_mean = (x * xm.unsqueeze(-1)).sum(-2) / xm.sum(-1, keepdim=True).clamp_min(1e-12)
    y_mean = (y * ym.unsqueeze(-1)).sum(-2) / ym.sum(-1, keepdim=True).clamp_min(1e-12)
    return x_mean, y_mean


def mse_loss(x: torch.Tensor, y: torch.Tensor, *, x_mask=None, y_mask=None) -> torch.Tensor:
    """Point-wise ablation: squared error between the set means (one target per user)."""
    x_mean, y_mean = _set_means(x, y, x_mask, y_mask)
    return (x_mean - y_mean).pow(2).sum(-1).mean()


def cosine_loss(x: torch.Tensor, y: torch.Tensor, *, x_mask=None, y_mask=None) -> torch.Tensor:
    """Point-wise ablation: one minus the cosine between the set means."""
    x_mean, y_mean = _set_means(x, y, x_mask, y_mask)
    return (1.0 - torch.nn.functional.cosine_similarity(x_mean, y_mean, dim=-1)).mean()


ALIGN_LOSSES = {"mmd": mmd_loss, "mse": mse_loss, "cosine": cosine_loss}
