"""A method's images made in chunks of users: same images, resumable, shared by processes."""

from __future__ import annotations

import multiprocessing
import subprocess
import threading
import time

import numpy as np
import pytest

from finexl.eval.prefgen.chunks import _assemble, _save_chunk, made_in_chunks
from finexl.eval.prefgen.methods import MethodImages

USERS = [f"u{i:03d}" for i in range(11)]


def _images_of(users) -> MethodImages:
    """Each user's images depend on that user alone, as a user-branch method's do."""
    images = np.stack([np.random.default_rng(int(u[1:])).random((3, 4, 4, 3)) for u in users])
    return MethodImages(images.astype(np.float32), 2.0 + len(users),
                        {"guidance": "drift-free", "profile_seconds": float(len(users))})


def _quantised(images: np.ndarray) -> np.ndarray:
    return np.round(images * 255) / 255


def test_chunks_give_the_same_images_and_a_rerun_makes_none(tmp_path):
    made = []

    def make_for(users):
        made.append(list(users))
        return _images_of(users)

    result = made_in_chunks(tmp_path / "p", {"k": 1}, USERS, make_for, chunk_users=4)
    assert [len(m) for m in made] == [4, 4, 3]
    assert np.allclose(result.images, _quantised(_images_of(USERS).images), atol=1e-6)
    # Per-user figures are means over users, weighted by chunk size.
    assert result.seconds_per_user == pytest.approx((4 * 6 + 4 * 6 + 3 * 5) / 11)
    assert result.info["profile_seconds"] == pytest.approx((4 * 4 + 4 * 4 + 3 * 3) / 11)
    assert result.info["guidance"] == "drift-free" and result.info["chunks"] == 3

    made.clear()
    again = made_in_chunks(tmp_path / "p", {"k": 1}, USERS, make_for, chunk_users=4)
    assert made == [] and np.array_equal(again.images, result.images)


def test_a_stopped_run_resumes_and_other_settings_start_over(tmp_path):
    def failing_after_first(users):
        if users[0] != USERS[0]:
            raise KeyboardInterrupt  # the run is stopped during its second chunk
        return _images_of(users)

    with pytest.raises(KeyboardInterrupt):
        made_in_chunks(tmp_path / "p", {"k": 1}, USERS, failing_after_first, chunk_users=4)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["settings.json",
                                                                  "users_000000.npz"]
    made = []

    def make_for(users):
        made.append(users[0])
        return _images_of(users)

    made_in_chunks(tmp_path / "p", {"k": 1}, USERS, make_for, chunk_users=4)
    assert made == [USERS[4], USERS[8]]  # the finished chunk was kept
    made.clear()
    made_in_chunks(tmp_path / "p", {"k": 2}, USERS, make_for, chunk_users=4)
    assert made == [USERS[0], USERS[4], USERS[8]]  # chunks of other settings never mix


def test_a_dead_process_s_claim_is_taken_over_and_a_live_one_is_waited_for(tmp_path):
    folder = tmp_path / "p"
    made_in_chunks(folder, {"k": 1}, USERS, _images_of, chunk_users=4)
    made = []

    def make_for(users):
        made.append(users[0])
        return _images_of(users)

    (folder / "users_000004.npz").unlink()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / "users_000004.claim").write_text(str(dead.pid))  # killed while making it
    made_in_chunks(folder, {"k": 1}, USERS, make_for, chunk_users=4)
    assert made == [USERS[4]] and not (folder / "users_000004.claim").exists()

    for start in (4, 8):
        (folder / f"users_{start:06d}.npz").unlink()
    sleeper = subprocess.Popen(["sleep", "30"])  # a live process is making chunk 4
    try:
        (folder / "users_000004.claim").write_text(str(sleeper.pid))

        def finish_it():
            time.sleep(0.5)
            _save_chunk(folder / "users_000004.npz", _images_of(USERS[4:8]))

        thread = threading.Thread(target=finish_it)
        thread.start()
        made.clear()
        result = made_in_chunks(folder, {"k": 1}, USERS, make_for, chunk_users=4,
                                poll_seconds=0.1)
        thread.join()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert made == [USERS[8]]  # chunk 4 was waited for, not made twice
    assert np.allclose(result.images, _quantised(_images_of(USERS).images), atol=1e-6)
    made.clear()
    made_in_chunks(folder, {"k": 1}, USERS, make_for, chunk_users=3)
    assert made == USERS[::3]  # another cut of the users starts over


def _worker(folder, log, queue):
    def make_for(users):
        with open(log, "a") as handle:
            handle.write(users[0] + "\n")
        time.sleep(0.2)
        return _images_of(users)

    result = made_in_chunks(folder, {"k": 1}, USERS, make_for, chunk_users=2,
                            poll_seconds=0.05)
    queue.put(result.images)


def test_two_processes_share_the_chunks_and_assemble_the_same_images(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    log = tmp_path / "made.txt"
    workers = [context.Process(target=_worker, args=(tmp_path / "p", log, queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    made = log.read_text().split()
    assert sorted(made) == USERS[::2]  # every chunk made exactly once ...
    assert len(set(made)) == len(made)
    assert np.array_equal(results[0], results[1])  # ... and both see all of them
    assert np.allclose(results[0], _quantised(_images_of(USERS).images), atol=1e-6)


def test_assembled_info_averages_times_and_sums_user_counts(tmp_path):
    sizes, infos = (3, 1), ({"profile_seconds": 1.0, "users_with_content_dislikes": 2,
                             "guidance": "drift-free"},
                            {"profile_seconds": 5.0, "users_with_content_dislikes": 1,
                             "guidance": "drift-free"})
    paths = []
    for k, (n, info) in enumerate(zip(sizes, infos)):
        paths.append(tmp_path / f"chunk_{k}.npz")
        _save_chunk(paths[-1], MethodImages(np.zeros((n, 2, 4, 4, 3)), 1.0, info))
    info = _assemble(paths).info
    assert info["profile_seconds"] == 2.0  # (3 * 1 + 1 * 5) / 4
    assert info["users_with_content_dislikes"] == 3 and info["chunks"] == 2
    assert info["guidance"] == "drift-free"
