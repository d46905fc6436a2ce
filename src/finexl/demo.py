"""``finexl demo``: the whole method offline, on a case whose answer is known.

A base set is made from crops of the bundled photos (held out from the mini encoder's
training); the personalized set is the same crops with a hidden mix of two visual
qualities planted at known strengths. finexl explains the difference with its defaults,
and the demo then says what was planted and where it was found.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finexl.errors import FinexlError
from finexl.store.files import write_atomic, write_text_atomic

if TYPE_CHECKING:
    from finexl.encoders.base import Encoder
    from finexl.pipeline import ExplainConfig
    from finexl.results import Explanation

logger = logging.getLogger(__name__)

# Qualities the demo may plant with --seed: ones the mini encoder names first and grades
# monotonically on held-out photos (docs/MINI_ENCODER.md lists its confusions: blurry vs
# pixelated, grainy vs sharp, vignette vs dark, sepia vs yellow/black and white). The
# default mix is fixed so every first run shows the same thing; docs/DEMO.md says how
# other mixes fare.
DEMO_QUALITIES = ("cool", "halftone", "pink_tint", "high_contrast", "vivid", "glow",
                  "purple_tint", "pencil_sketch", "dark")
DEFAULT_PLANTED = (("cool", 0.7), ("halftone", 0.6))


@dataclass(frozen=True)
class DemoResult:
    explanation: Explanation
    planted: tuple[tuple[str, float], ...]
    found_ranks: dict[str, int | None]  # planted quality -> 1-based rank among concepts, or None
    base_dir: Path
    personal_dir: Path

    @property
    def success(self) -> bool:
        """Every planted quality is among the top ``len(planted)`` concepts."""
        return all(rank is not None and rank <= len(self.planted)
                   for rank in self.found_ranks.values())


def choose_planted(seed: int | None) -> tuple[tuple[str, float], ...]:
    """The default mix, or (with a seed) two distinct qualities at strengths 0.5-0.9."""
    if seed is None:
        return DEFAULT_PLANTED
    rng = np.random.default_rng(seed)
    names = rng.choice(len(DEMO_QUALITIES), size=2, replace=False)
    return tuple((DEMO_QUALITIES[i], round(float(rng.uniform(0.5, 0.9)), 2)) for i in names)


def make_demo_sets(out_dir: str | Path, planted: Sequence[tuple[str, float]], *,
                   n_pairs: int = 24, size: int = 224, seed: int = 0) -> tuple[Path, Path]:
    """Write ``base/`` and ``personal/`` (PNGs + metadata.jsonl) under ``out_dir``.

    Images already written by an earlier run with the same settings are kept (the file
    names carry no settings, so a settings file guards against mixing two runs).
    """
    from finexl.imaging.photos import bundled_photos, square_crops
    from finexl.imaging.transforms import apply_many

    out_dir = Path(out_dir)
    base_dir, personal_dir = out_dir / "base", out_dir / "personal"
    settings = {"planted": [list(p) for p in planted], "n_pairs": n_pairs, "size": size,
                "seed": seed}
    settings_path = out_dir / "demo-settings.json"
    if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        raise FinexlError(f"{out_dir} holds a demo made with other settings; choose another --out"
                          " or delete that folder")
    photos = bundled_photos()
    per_photo = -(-n_pairs // len(photos))
    records = []
    for p, photo in enumerate(photos):
        crops = square_crops(photo.load(), per_photo, size=size, rng=seed + p)
        for c, crop in enumerate(crops):
            index = len(records)
            if index >= n_pairs:
                break
            file_name = f"{index:04d}.png"
            _save_png(crop, base_dir / file_name)
            _save_png(apply_many(crop, planted, seed=seed + index), personal_dir / file_name)
            records.append({"file_name": file_name, "prompt": photo.caption, "seed": seed + index})
    metadata = "".join(json.dumps(r) + "\n" for r in records)
    for folder in (base_dir, personal_dir):
        write_text_atomic(folder / "metadata.jsonl", metadata)
    write_text_atomic(settings_path, json.dumps(settings))
    return base_dir, personal_dir


def _save_png(image, path: Path) -> None:
    import io

    if path.exists():
        return
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def found_ranks(explanation: Explanation, planted: Sequence[tuple[str, float]]) -> dict[str, int | None]:
    """Where each planted quality appears among the named concepts (by its synonyms)."""
    from finexl.imaging.transforms import resolve_quality

    ordered = explanation.ranked()  # by share of V_div, the order every output uses
    ranks: dict[str, int | None] = {name: None for name, _ in planted}
    for rank, concept in enumerate(ordered, start=1):
        try:
            quality = resolve_quality(concept.concept)
        except KeyError:
            continue
        if quality in ranks and ranks[quality] is None:
            ranks[quality] = rank
    return ranks


def run_demo(out_dir: str | Path, *, config: ExplainConfig | None = None,
             encoder: Encoder | None = None, n_pairs: int = 24, seed: int | None = None,
             progress: bool = False) -> DemoResult:
    """Make the two sets, explain them, write ``explanation.json`` and ``report.html``."""
    from finexl.pipeline import ExplainConfig, explain
    from finexl.report.html import write_html
    from finexl.report.json import write_json

    planted = choose_planted(seed)
    base_dir, personal_dir = make_demo_sets(out_dir, planted, n_pairs=n_pairs,
                                            seed=0 if seed is None else seed)
    config = config or ExplainConfig()
    explanation = explain(base_dir, personal_dir, config, encoder=encoder, progress=progress)
    write_json(explanation, Path(out_dir) / "explanation.json")
    write_html(explanation, Path(out_dir) / "report.html")
    return DemoResult(explanation, tuple(planted), found_ranks(explanation, planted),
                      base_dir, personal_dir)


def describe(result: DemoResult) -> list[str]:
    """Plain lines that reveal what was planted and whether finexl found it."""
    from finexl.imaging.transforms import QUALITIES

    lines = ["planted: " + ", ".join(
        f"{QUALITIES[name].synonyms[0]} at strength {strength:.2f}" for name, strength in result.planted)]
    for name, rank in result.found_ranks.items():
        shown = QUALITIES[name].synonyms[0]
        lines.append(f"  {shown}: " + (f"found as concept #{rank}" if rank else "not found"))
    lines.append("the demo worked: the planted qualities are the top concepts" if result.success
                 else "the planted qualities are not both on top: see the report")
    return lines


def to_summary(result: DemoResult) -> dict[str, Any]:
    return {"planted": [list(p) for p in result.planted], "found_ranks": result.found_ranks,
            "success": result.success}
