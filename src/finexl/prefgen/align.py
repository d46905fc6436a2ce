"""Alignment: an MLP ``g`` from ``e_sem`` into a text-embedding space, and words from it.

``g`` maps one user's ``e_sem`` to ``points`` (4) unit vectors in the text space, and is
trained so that this small *set* matches the set of the user's liked-attribute text
embeddings under the multi-bandwidth MMD (:func:`finexl.prefgen.losses.mmd_loss`). A user
who likes sepia and vignette should map to points near both words, not to one point
between them; MSE and cosine on the set means are the ablations (``loss="mse"`` /
``"cosine"``), and ``"none"`` skips ``g`` altogether (the raw ``e_sem``, zero-padded to the
same length, takes its place in ``e_u``).

**Target text space: the ``mini`` encoder's text tower** (128-d, unit vectors). The
generator's own text encoder (``builtin:tiny``'s) knows 36 words and no style word at all
("sepia" is ``<unk>`` to it), so a user's taste, which is mostly style, could not be said
there. mini's text tower knows every style word of the vocabulary, lives in the same space
as the image features the extractor reads (``e_img`` is a mini image embedding), and is
the space FineXL's explanations are scored in, so the aligned words can be checked against
an explanation. The user branch does not need the generator's text space: its projector
learns to map ``e_u`` into cross-attention tokens. The text table is computed once at
training time and shipped with the model, so making a profile loads no text tower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.losses import ALIGN_LOSSES
from finexl.progress import track

ALIGN_CHOICES = ("mmd", "mse", "cosine", "none")


class AlignMLP(ModelMixin, ConfigMixin):
    """``g``: ``(b, in_dim)`` -> ``(b, points, text_dim)`` unit vectors."""

    config_name = "align_config.json"

    @register_to_config
    def __init__(self, in_dim: int, text_dim: int, points: int = 4, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, points * text_dim))

    def forward(self, e_sem: torch.Tensor) -> torch.Tensor:
        out = self.net(e_sem).view(e_sem.shape[0], self.config.points, self.config.text_dim)
        return nn.functional.normalize(out, dim=-1)


def text_table(encoder=None) -> tuple[list[str], np.ndarray]:
    """``(attribute names, (n, text_dim) unit embeddings)`` of every attribute with a phrase.

    ``encoder`` is any finexl ``Encoder`` (default: the shipped mini).
    """
    if encoder is None:
        from finexl.encoders.clip import ClipEncoder
        from finexl.prefgen.features import MINI_DIR

        encoder = ClipEncoder(MINI_DIR, encoder_id="mini")
    names = [a.name for a in vocab.ATTRIBUTES.values() if a.text is not None]
    return names, np.asarray(encoder.embed_texts([vocab.get(n).text for n in names]), np.float32)


def target_sets(liked: Sequence[Sequence[str]], names: Sequence[str], table: np.ndarray
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded liked-attribute text embeddings ``(b, 3, d)`` and their mask ``(b, 3)``."""
    index = {n: i for i, n in enumerate(names)}
    width = max(1, max((len(u) for u in liked), default=1))
    sets = np.zeros((len(liked), width, table.shape[1]), np.float32)
    mask = np.zeros((len(liked), width), np.float32)
    for row, attributes in enumerate(liked):
        rows = [index[a] for a in attributes if a in index]
        sets[row, :len(rows)] = table[rows]
        mask[row, :len(rows)] = 1
    return torch.from_numpy(sets), torch.from_numpy(mask)


@dataclass
class AlignResult:
    model: AlignMLP | None
    losses: list[float]


def train_align(e_sem: np.ndarray, liked: Sequence[Sequence[str]], names: Sequence[str],
                table: np.ndarray, *, loss: str = "mmd", points: int = 4, steps: int = 1500,
                batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                progress: bool = False) -> AlignResult:
    """Fit ``g`` on training users' ``e_sem`` and liked attributes (``loss="none"``: no g)."""
    if loss not in ALIGN_CHOICES:
        raise ValueError(f"align loss must be one of {ALIGN_CHOICES}, got {loss!r}")
    if loss == "none":
        return AlignResult(None, [])
    torch.manual_seed(seed)
    sets, mask = target_sets(liked, names, table)
    keep = mask.sum(1) > 0  # users whose liked attributes have no phrase teach g nothing
    x = torch.from_numpy(np.asarray(e_sem, np.float32))[keep]
    sets, mask = sets[keep], mask[keep]
    model = AlignMLP(x.shape[1], table.shape[1], points)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    objective = ALIGN_LOSSES[loss]
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in track(range(steps), total=steps, description=f"align ({loss})", enabled=progress):
        pick = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator)
        value = objective(model(x[pick]), sets[pick], y_mask=mask[pick])
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(value.detach()))
    return AlignResult(model.eval(), losses)


def g_sem(model: AlignMLP | None, e_sem: np.ndarray, points: int, text_dim: int) -> np.ndarray:
    """``(b, points * text_dim)``: g(e_sem) flattened, or the zero-padded e_sem without g."""
    e_sem = np.asarray(e_sem, np.float32)
    if model is None:
        out = np.zeros((len(e_sem), points * text_dim), np.float32)
        width = min(e_sem.shape[1], out.shape[1])
        out[:, :width] = e_sem[:, :width]
        return out
    with torch.no_grad():
        return model(torch.from_numpy(e_sem)).reshape(len(e_sem), -1).numpy()


def nearest_words(g_points: np.ndarray, names: Sequence[str], table: np.ndarray,
                  k: int = 3) -> list[list[tuple[str, float]]]:
    """Per user, the ``k`` attribute words nearest (cosine) to any of its g points."""
    out = []
    for points in np.asarray(g_points, np.float32):
        points = points.reshape(-1, table.shape[1])
        similarity = (points @ table.T).max(axis=0)
        order = np.argsort(-similarity)[:k]
        out.append([(names[i], float(similarity[i])) for i in order])
    return out


def word_recall(g_points: np.ndarray, liked: Sequence[Sequence[str]], names: Sequence[str],
                table: np.ndarray) -> float:
    """Share of users' phrase-bearing liked attributes found among their nearest words
    (k = the number of such attributes): how well g(e_sem) says the taste in words."""
    hits, total = 0, 0
    named = set(names)
    for points, attributes in zip(g_points, liked):
        wanted = [a for a in attributes if a in named]
        if not wanted:
            continue
        found = {w for w, _ in nearest_words(points[None], names, table, k=len(wanted))[0]}
        hits += len(found & set(wanted))
        total += len(wanted)
    return hits / max(total, 1)
