"""The HTML report: one self-contained page (thumbnails embedded), autoescaped throughout.

Concept text may come from a VLM or a user: it is data, never markup, so every value goes
through jinja2's autoescape and nothing is marked safe except the thumbnails we encode.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finexl.store.files import write_text_atomic

if TYPE_CHECKING:
    from finexl.results import Explanation

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 160
SAMPLE_PAIRS = 8


def thumbnail_data_url(path: str | Path, side: int = THUMBNAIL_SIDE) -> str | None:
    """A small JPEG of the image as a data URL, or None when the file cannot be read."""
    from finexl.errors import FinexlError
    from finexl.imaging.decode import load_image_bounded

    try:
        image = load_image_bounded(path)  # within the pixel limit, shrunk as it is decoded
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    except (FinexlError, OSError, ValueError) as exc:
        logger.warning("report: cannot read %s (%s); shown as missing", path, exc)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _environment():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("finexl.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["num"] = lambda value, digits=3: "–" if value is None else f"{value:.{digits}f}"
    env.filters["pct"] = lambda value: f"{100 * value:.0f}%"
    return env


def _pair_view(record: dict[str, Any], thumbnails: dict[str, str | None]) -> dict[str, Any]:
    def thumb(path):
        if path not in thumbnails:
            thumbnails[path] = thumbnail_data_url(path)
        return thumbnails[path]

    return {"file_name": record["file_name"], "prompt": record.get("prompt"),
            "base": thumb(record["base"]), "personal": thumb(record["personal"])}


def explanation_context(explanation: Explanation) -> dict[str, Any]:
    """Everything the template shows, as plain values."""
    data = explanation.to_dict()
    records = {r["file_name"]: r for r in data["pairs"]}
    thumbnails: dict[str, str | None] = {}
    # Bars show the share of V_div (the scale-free score concepts are ranked by).
    top = max((abs(c["share"]) for c in data["concepts"]), default=0.0) or 1.0
    for concept in data["concepts"]:
        concept["bar"] = 100 * max(concept["share"], 0) / top
        concept["pairs"] = [dict(_pair_view(records[e["file_name"]], thumbnails),
                                 projection=e["projection"])
                            for e in concept["evidence"] if e["file_name"] in records]
    sample = [_pair_view(r, thumbnails) for r in data["pairs"][:SAMPLE_PAIRS]]
    explained = 1 - data["residual"] ** 2 if data["concepts"] else 0.0
    return {"data": data, "sample": sample, "explained": explained}


def render_html(explanation: Explanation) -> str:
    return _environment().get_template("explanation.html.j2").render(**explanation_context(explanation))


def write_html(explanation: Explanation, path: str | Path) -> Path:
    """Write the report atomically and return its path."""
    path = Path(path)
    write_text_atomic(path, render_html(explanation))
    return path


def comparison_context(comparison) -> dict[str, Any]:
    """Rows of the shared basis with one cell per model, for the sortable page."""
    names = list(comparison.models)
    data = {name: explanation.to_dict() for name, explanation in comparison.models.items()}
    top = max((abs(c["weight"]) for d in data.values() for c in d["concepts"]), default=0.0) or 1.0
    rows = []
    for concept in comparison.concepts:
        cells = []
        for name in names:
            score = next((c for c in data[name]["concepts"] if c["concept"] == concept), None)
            cells.append(None if score is None else dict(score, bar=100 * max(score["weight"], 0) / top))
        rows.append({"concept": concept, "cells": cells})
    return {"names": names, "rows": rows, "models": data,
            "rejected": [r.to_dict() for r in comparison.rejected]}


def write_comparison_html(comparison, path: str | Path) -> Path:
    """The ``finexl compare`` page: one sortable table, a column per model."""
    path = Path(path)
    page = _environment().get_template("comparison.html.j2").render(**comparison_context(comparison))
    write_text_atomic(path, page)
    return path
