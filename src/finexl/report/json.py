"""The ``finexl.explanation/v1`` JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finexl.store.files import write_text_atomic


def write_json(payload: Any, path: str | Path) -> Path:
    """Write ``payload`` (a result with ``to_dict`` or a plain dict) atomically as JSON."""
    data = payload.to_dict() if hasattr(payload, "to_dict") else payload
    path = Path(path)
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path
