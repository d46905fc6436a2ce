"""The store: arrays and rows come back exactly as stored, bad entries are logged misses that
are rewritten, and writes are atomic with ordinary permissions."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from finexl.store.cache import Store
from finexl.store.keys import make_key
from finexl.store.rows import ROWS_FILE

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
@pytest.mark.parametrize("on_disk", [True, False])
def test_rows_come_back_as_stored(tmp_path, name, on_disk):
    store = Store(tmp_path if on_disk else None)
    key = make_key("array", name)
    assert store.get_rows([key]) == [None]
    store.put_rows([key], [ARRAYS[name]])
    got = (Store(tmp_path) if on_disk else store).get_rows([key])[0]
    assert got.dtype == ARRAYS[name].dtype and got.shape == ARRAYS[name].shape
    np.testing.assert_array_equal(got, ARRAYS[name])
    assert got.flags.writeable


def test_json_answers_round_trip_and_a_bad_one_is_a_miss(tmp_path, caplog):
    store = Store(tmp_path)
    key = make_key("answer", "x")
    assert store.get_json(key) is None
    store.put_json(key, {"content": "dark, warm", "n": [1, 2]})
    assert Store(tmp_path).get_json(key) == {"content": "dark, warm", "n": [1, 2]}
    store._path(key, ".json").write_text("{truncated")
    with caplog.at_level(logging.WARNING, logger="finexl.store"):
        assert store.get_json(key) is None
    assert "unreadable" in caplog.text


def test_store_round_trip_counts_hits_and_misses(tmp_path):
    store = Store(tmp_path)
    keys = [make_key("text", "enc", str(i)) for i in range(3)]
    rows = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    store.put_rows(keys[:2], rows[:2])
    got = store.get_rows(keys)
    np.testing.assert_array_equal(np.stack(got[:2]), rows[:2])
    assert got[2] is None
    assert (store.hits, store.misses) == (2, 1)


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
    (tmp_path / ROWS_FILE).write_bytes(b"this is not a database" * 10)
    store = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="finexl.store"):
        assert store.get_rows(_keys(3)) == [None, None, None]
    assert "unreadable" in caplog.text and store.misses == 3
    store.put_rows(_keys(3), np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(np.stack(Store(tmp_path).get_rows(_keys(3))), np.eye(3))


def test_damaged_row_is_a_logged_miss_and_is_rewritten(tmp_path, caplog):
    import sqlite3

    store = Store(tmp_path)
    key = _keys(1)[0]
    store.put_rows([key], np.ones((1, 4), np.float32))
    with sqlite3.connect(tmp_path / ROWS_FILE) as connection:
        connection.execute("UPDATE rows SET data = ? WHERE key = ?", (b"xx", key))
    connection.close()
    with caplog.at_level(logging.WARNING, logger="finexl.store"):
        assert store.get_rows([key]) == [None]
    assert "unreadable" in caplog.text
    store.put_rows([key], np.full((1, 4), 2, np.float32))
    np.testing.assert_array_equal(store.get_rows([key])[0], np.full(4, 2, np.float32))


def test_atomic_writes_get_ordinary_permissions(tmp_path, monkeypatch):
    import os
    import stat

    from finexl.store import files
    from finexl.store.files import write_atomic

    monkeypatch.setattr(files, "_UMASK", None)  # read the umask set below, not a cached one
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "report.html", b"<html></html>")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "report.html").stat().st_mode)
    assert mode == 0o644  # not mkstemp's private 0600: reports are meant to be shared


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from finexl.store.files import atomic_file, write_text_atomic

    target = tmp_path / "result.json"
    write_text_atomic(target, "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target) as handle:
            handle.write(b"half of the new")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
