"""The row store's kept SQLite connection: one per owning thread, never shared with another
thread or a forked process, and reopened when its file is removed or replaced."""

from __future__ import annotations

import os
import shutil
import sys
import threading

import numpy as np
import pytest

from finexl.store.cache import Store
from finexl.store.rows import ROWS_FILE


def _row(value: float) -> np.ndarray:
    return np.full(4, value, np.float32)


def test_one_connection_is_kept_and_reused(tmp_path):
    store = Store(tmp_path)
    store.put_rows(["a"], np.stack([_row(1)]))
    kept = store._database._connection
    assert kept is not None
    assert store.get_rows(["a", "b"])[0].tolist() == [1, 1, 1, 1]
    assert store._database._connection is kept
    store.close()
    assert store._database._connection is None
    assert store.get_rows(["a"])[0][0] == 1  # reopened on demand
    assert Store(tmp_path).get_rows(["a"])[0][0] == 1  # committed for other connections


def test_removed_or_replaced_file_is_reopened(tmp_path):
    store = Store(tmp_path)
    store.put_rows(["a"], np.stack([_row(1)]))
    shutil.rmtree(tmp_path)
    assert store.get_rows(["a"]) == [None]
    store.put_rows(["b"], np.stack([_row(2)]))
    assert (tmp_path / ROWS_FILE).is_file()  # written to the new file, not the unlinked one
    assert Store(tmp_path).get_rows(["a", "b"])[1][0] == 2

    # Removed again and recreated by someone else (say, another process): their rows show.
    shutil.rmtree(tmp_path)
    elsewhere = Store(tmp_path)
    elsewhere.put_rows(["c"], np.stack([_row(3)]))
    rows = store.get_rows(["b", "c"])
    assert rows[0] is None and rows[1][0] == 3


def test_other_threads_use_their_own_connections(tmp_path):
    store = Store(tmp_path)
    store.put_rows(["main"], np.stack([_row(0)]))
    kept = store._database._connection
    seen, errors = [], []

    def worker(index: int) -> None:
        try:
            store.put_rows([f"t{index}"], np.stack([_row(index)]))
            seen.append(store.get_rows(["main", f"t{index}"]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store._database._connection is kept
    assert sorted(float(rows[1][0]) for rows in seen) == [1, 2, 3, 4]
    assert [float(r[0]) for r in store.get_rows(["t1", "t2", "t3", "t4"])] == [1, 2, 3, 4]


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork")
def test_forked_child_never_uses_the_parents_connection(tmp_path):
    store = Store(tmp_path)
    store.put_rows(["parent"], np.stack([_row(1)]))
    kept = store._database._connection
    pid = os.fork()
    if pid == 0:  # the child: its own connection, its writes visible to the parent
        code = 1
        try:
            ok = store.get_rows(["parent"])[0][0] == 1
            store.put_rows(["child"], np.stack([_row(2)]))
            code = 0 if ok and store._database._connection is not kept else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._database._connection is kept
    assert store.get_rows(["child"])[0][0] == 2
