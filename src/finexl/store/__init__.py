"""The on-disk store, split by job; import the module you need, not the package.

- ``files``: atomic file writes (temporary file + rename) and the cache/data folders.
- ``keys``: content keys, the sha256 of a JSON list (never a path or a joined string).
- ``rows``: arrays by key in one SQLite file (embedding rows, thousands per run).
- ``memo``: the file-identity memo, a file's content hash remembered by its ``os.stat``.
- ``cache``: ``Store``, the keyed cache under one root (arrays, JSON answers, rows, memo).

This ``__init__`` imports nothing, so writing one file atomically loads only ``files``.
"""
