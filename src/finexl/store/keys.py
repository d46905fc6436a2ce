"""Content keys: the sha256 of a JSON list (kind, encoder id, template, content hash...).

A key never holds a path or a comma-joined string: a JSON list is unambiguous whatever the
parts contain, and a renamed file with the same content still finds its entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


def make_key(*parts: Any) -> str:
    """sha256 hex digest of the JSON list of ``parts`` (unambiguous, unlike a joined string)."""
    payload = json.dumps(list(parts), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def make_keys(kind: str, namespace: str, values: Sequence[Any]) -> list[str]:
    """``[make_key(kind, namespace, value) for value in values]``, the same keys built several
    times faster for strings (a warm run makes thousands: one C string encoder call each
    instead of a ``json.dumps``)."""
    from json.encoder import encode_basestring  # what json.dumps uses with ensure_ascii=False

    if not (isinstance(kind, str) and isinstance(namespace, str)):
        return [make_key(kind, namespace, value) for value in values]
    prefix = f"[{encode_basestring(kind)},{encode_basestring(namespace)},"
    sha256 = hashlib.sha256
    return [sha256(f"{prefix}{encode_basestring(value)}]".encode()).hexdigest()
            if isinstance(value, str) else make_key(kind, namespace, value) for value in values]


def hash_bytes(data: bytes) -> str:
    """sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_image(image: Any) -> str:
    """Content hash of a PIL image: mode, size and pixels, so a renamed file still hits."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
