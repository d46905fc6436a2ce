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
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not valid UTF-8 (its bytes held as surrogates): JSON's \u
        # escapes keep it exact, and the file stays valid UTF-8.
        text = json.dumps(data, indent=2, ensure_ascii=True) + "\n"
    write_text_atomic(path, text)
    return path
