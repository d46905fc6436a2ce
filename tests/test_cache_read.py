"""The store's fast ``.npy`` reader gives exactly what ``np.load`` gives, and bad files are misses."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from finexl.cache import Store, make_key, read_npy

ARRAYS = {
    "float32 row": np.arange(16, dtype=np.float32) / 7,
    "float64 table": np.random.default_rng(0).normal(size=(5, 3)),
    "fortran order": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "big-endian": np.arange(6, dtype=">f8").reshape(2, 3),
    "scalar": np.array(3.5),
    "empty rows": np.zeros((0, 16), np.float32),
    "bool": np.array([True, False, True]),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_read_npy_matches_np_load(tmp_path, name):
    path = tmp_path / "a.npy"
    np.save(path, ARRAYS[name], allow_pickle=False)
    expected = np.load(path, allow_pickle=False)
    for _ in range(2):  # the second read takes the parsed-header path
        got = read_npy(path)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        assert got.flags.writeable


def test_store_round_trip_counts_hits_and_misses(tmp_path):
    store = Store(tmp_path)
    keys = [make_key("text", "enc", str(i)) for i in range(3)]
    rows = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    store.put_rows(keys[:2], rows[:2])
    got = store.get_rows(keys)
    np.testing.assert_array_equal(np.stack(got[:2]), rows[:2])
    assert got[2] is None
    assert (store.hits, store.misses) == (2, 1)


def _npy_bytes(value, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, **kwargs)
    return buffer.getvalue()


BAD_FILES = {
    "empty": b"",
    "garbage": b"not a numpy file at all",
    "truncated data": _npy_bytes(np.arange(64, dtype=np.float32))[:-10],
    "truncated header": _npy_bytes(np.arange(4, dtype=np.float32))[:30],
    "object array": _npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_entry_is_a_logged_miss_and_is_rewritten(tmp_path, caplog, name):
    store = Store(tmp_path)
    key = make_key("text", "enc", name)
    path = store._path(key, ".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BAD_FILES[name])
    with caplog.at_level(logging.WARNING, logger="finexl.cache"):
        assert store.get_array(key) is None
    assert "unreadable" in caplog.text and store.misses == 1
    store.put_array(key, np.ones(4, np.float32))
    np.testing.assert_array_equal(store.get_array(key), np.ones(4, np.float32))


@pytest.mark.parametrize("version", [(2, 0), (3, 0)])
def test_read_npy_reads_later_format_versions(tmp_path, version):
    from numpy.lib import format as npy_format

    value = np.arange(10, dtype=np.float32).reshape(2, 5)
    path = tmp_path / "v.npy"
    with path.open("wb") as handle:
        npy_format.write_array(handle, value, version=version)
    np.testing.assert_array_equal(read_npy(path), value)


@pytest.mark.parametrize("name", list(ARRAYS))
def test_npy_bytes_match_np_save(name):
    from finexl.cache import npy_bytes

    value = np.ascontiguousarray(ARRAYS[name])
    for _ in range(2):  # the second call reuses the header
        assert npy_bytes(value) == _npy_bytes(value, allow_pickle=False)


# Embedding rows ------------------------------------------------------------

def _keys(n: int, tag: str = "t") -> list[str]:
    return [make_key("text", "enc", f"{tag}{i}") for i in range(n)]


def test_rows_persist_across_stores_with_their_dtype(tmp_path):
    keys = _keys(1200)  # more than one SELECT chunk
    rows32 = np.random.default_rng(2).normal(size=(1200, 8)).astype(np.float32)
    Store(tmp_path).put_rows(keys, rows32)
    Store(tmp_path).put_rows(["f64"], np.ones((1, 3)))
    reader = Store(tmp_path)
    got = reader.get_rows(keys[::-1] + ["f64", "absent"])
    np.testing.assert_array_equal(np.stack(got[:1200]), rows32[::-1])
    assert got[0].dtype == np.float32 and got[0].flags.writeable
    assert got[1200].dtype == np.float64 and got[1201] is None
    assert (reader.hits, reader.misses) == (1201, 1)
    assert reader.get_rows([]) == []


def test_rows_reject_object_arrays_and_mismatched_lengths(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(ValueError, match="pickle"):
        store.put_rows(["k"], np.array([[{"a": 1}]], dtype=object))
    with pytest.raises(ValueError, match="2 keys for 1 rows"):
        store.put_rows(["a", "b"], np.ones((1, 2)))


def test_damaged_row_file_is_a_logged_miss_and_is_replaced(tmp_path, caplog):
    from finexl.cache import ROWS_FILE

    (tmp_path / ROWS_FILE).write_bytes(b"this is not a database" * 10)
    store = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="finexl.cache"):
        assert store.get_rows(_keys(3)) == [None, None, None]
    assert "unreadable" in caplog.text and store.misses == 3
    store.put_rows(_keys(3), np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(np.stack(Store(tmp_path).get_rows(_keys(3))), np.eye(3))


def test_damaged_row_is_a_logged_miss_and_is_rewritten(tmp_path, caplog):
    import sqlite3

    from finexl.cache import ROWS_FILE

    store = Store(tmp_path)
    key = _keys(1)[0]
    store.put_rows([key], np.ones((1, 4), np.float32))
    with sqlite3.connect(tmp_path / ROWS_FILE) as connection:
        connection.execute("UPDATE rows SET data = ? WHERE key = ?", (b"xx", key))
    connection.close()
    with caplog.at_level(logging.WARNING, logger="finexl.cache"):
        assert store.get_rows([key]) == [None]
    assert "unreadable" in caplog.text
    store.put_rows([key], np.full((1, 4), 2, np.float32))
    np.testing.assert_array_equal(store.get_rows([key])[0], np.full(4, 2, np.float32))


def test_atomic_writes_get_ordinary_permissions(tmp_path, monkeypatch):
    import os
    import stat

    from finexl import cache
    from finexl.cache import write_atomic

    monkeypatch.setattr(cache, "_UMASK", None)  # read the umask set below, not a cached one
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "report.html", b"<html></html>")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "report.html").stat().st_mode)
    assert mode == 0o644  # not mkstemp's private 0600: reports are meant to be shared
