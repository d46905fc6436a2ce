"""Hostile inputs (issue 18): each gives one clear line or a documented graceful result.

Large cases are made small by lowering the documented limits (``FINEXL_MAX_*``
environment variables, ``finexl.limits.WORKING_SIDE``), never by making huge files.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_cli import assert_one_line_error, run_cli, run_cli_subprocess
from test_pipeline import CONCEPTS, _darken, _folders
from toy_encoder import ToyEncoder

from finexl import limits, pairs
from finexl.catalog import Catalog
from finexl.decompose import DecompositionSettings
from finexl.errors import FinexlError
from finexl.imaging import decode
from finexl.pairs import check_images, list_images, load_images, load_pairs
from finexl.pipeline import ExplainConfig, embed_pair_differences, explain

FEW_RESAMPLES = DecompositionSettings(n_bootstrap=20)


@pytest.fixture(autouse=True)
def finexl_warnings_reach_caplog(caplog):
    """Warnings are part of what these tests check; another module may have quietened the
    finexl logger (the benchmarks do), so set it for each test here."""
    caplog.set_level(logging.WARNING, logger="finexl")


def _one_line(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def _nothing_expensive(monkeypatch) -> None:
    """Fail the test if explain gets as far as decoding images or loading an encoder."""
    from finexl import pipeline

    def forbidden(*args, **kwargs):
        raise AssertionError("reached expensive work before the input was checked")

    monkeypatch.setattr(pipeline, "load_configured_encoder", forbidden)
    monkeypatch.setattr(pairs, "check_images", forbidden)


# 1. Text bounds, checked before any work ---------------------------------------------------

def test_a_too_long_prompt_in_metadata_is_one_line_before_any_work(tmp_path, monkeypatch):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    monkeypatch.setenv("FINEXL_MAX_PROMPT_CHARS", "40")
    lines = (base / "metadata.jsonl").read_text().splitlines()
    record = json.loads(lines[3])
    record["prompt"] = "a cat " * 10  # 60 characters, the stand-in for a 50 MB line
    lines[3] = json.dumps(record)
    (base / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    _nothing_expensive(monkeypatch)
    with pytest.raises(FinexlError) as error:
        explain(base, personal, ExplainConfig(concepts=CONCEPTS, cache=False))
    _one_line(error, "metadata.jsonl line 4", "59 characters", "limit of 40",
              "FINEXL_MAX_PROMPT_CHARS")


def test_the_cli_reports_a_too_long_prompt_in_one_line(tmp_path):
    base, personal = _folders(tmp_path, lambda im: im)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["short"] * 11 + ["x" * 30]) + "\n")
    result = run_cli("explain", "--base", str(base), "--personal", str(personal), "--prompts",
                     str(prompts), "--no-cache", "-q", "--concepts", str(prompts),
                     env={"FINEXL_MAX_PROMPT_CHARS": "25"})
    assert_one_line_error(result, "line 12", "FINEXL_MAX_PROMPT_CHARS")


def test_a_text_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    base, personal = _folders(tmp_path, lambda im: im)
    size = (base / "metadata.jsonl").stat().st_size
    monkeypatch.setenv("FINEXL_MAX_TEXT_FILE_BYTES", str(size - 1))
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(FinexlError) as error:
        load_pairs(base, personal)
    _one_line(error, "metadata.jsonl", f"{size:,} bytes", "FINEXL_MAX_TEXT_FILE_BYTES")


def test_a_too_long_concept_is_one_line(tmp_path, monkeypatch):
    from finexl.concepts.user import read_concepts

    monkeypatch.setenv("FINEXL_MAX_CONCEPT_CHARS", "12")
    path = tmp_path / "concepts.txt"
    path.write_text("dark\nwarm and very golden\n")
    with pytest.raises(FinexlError) as error:
        read_concepts(path)
    _one_line(error, "concept 2", "20 characters", "FINEXL_MAX_CONCEPT_CHARS")
    base, personal = _folders(tmp_path, lambda im: im)
    _nothing_expensive(monkeypatch)
    with pytest.raises(FinexlError, match="FINEXL_MAX_CONCEPT_CHARS"):
        explain(base, personal, ExplainConfig(concepts=["dark", "x" * 13], cache=False))


def test_a_bad_limit_setting_is_one_line(monkeypatch):
    monkeypatch.setenv("FINEXL_MAX_PROMPT_CHARS", "lots")
    with pytest.raises(FinexlError) as error:
        limits.check_text_length("a cat", limits.MAX_PROMPT_CHARS, "here")
    _one_line(error, "FINEXL_MAX_PROMPT_CHARS", "positive whole number")


def test_a_too_long_vlm_answer_fails_that_pair_only(tmp_path, monkeypatch):
    from fake_vlm_server import FakeVlmServer, Reply

    from finexl.concepts.vlm import VlmConfig
    from finexl.concepts.vlm_client import ChatSession, PairFailure

    monkeypatch.setenv("FINEXL_MAX_VLM_ANSWER_CHARS", "50")
    long_answer = json.dumps(["sepia"] * 20)  # 180 characters
    with FakeVlmServer([Reply.answer(long_answer), Reply.answer('["sepia"]')]) as server:
        config = VlmConfig(url=server.url, model="fake", retries=0)
        with ChatSession(config, api_key=None) as session:
            with pytest.raises(PairFailure, match="over the limit of 50"):
                session.complete({"messages": []})
            assert session.complete({"messages": []}) == '["sepia"]'


def test_an_endless_vlm_response_is_read_only_up_to_the_byte_limit(monkeypatch):
    from fake_vlm_server import FakeVlmServer, Reply

    from finexl.concepts.vlm import VlmConfig
    from finexl.concepts.vlm_client import ChatSession, PairFailure

    monkeypatch.setenv("FINEXL_MAX_VLM_RESPONSE_BYTES", "1000")
    with FakeVlmServer([Reply.answer("x" * 5000)]) as server:
        config = VlmConfig(url=server.url, model="fake", retries=0)
        with ChatSession(config, api_key=None) as session, \
                pytest.raises(PairFailure, match="over 1,000 bytes"):
            session.complete({"messages": []})


# 2. Decoded size: a pixel limit, and one full-size image at a time -------------------------

def test_an_image_over_the_pixel_limit_is_an_error_before_any_model(tmp_path, monkeypatch):
    base, personal = _folders(tmp_path, lambda im: im)
    Image.new("RGB", (200, 100), "white").save(personal / "0005.png")
    monkeypatch.setenv("FINEXL_MAX_IMAGE_PIXELS", str(150 * 100))
    pair_set = load_pairs(base, personal)
    with pytest.raises(FinexlError) as error:
        check_images(pair_set)
    _one_line(error, "0005.png", "200x100 = 20,000", "limit of 15,000", "FINEXL_MAX_IMAGE_PIXELS")
    with pytest.raises(FinexlError, match="0005.png.*FINEXL_MAX_IMAGE_PIXELS"):
        load_images([personal / "0005.png"])
    result = run_cli("explain", "--base", str(base), "--personal", str(personal), "--no-cache",
                     "-q", "--encoder", "/nonexistent-encoder", "--proposer", "vocab",
                     env={"FINEXL_MAX_IMAGE_PIXELS": "15000"})
    # The image check comes before the encoder is looked up, so the pixel limit is reported.
    assert_one_line_error(result, "0005.png", "FINEXL_MAX_IMAGE_PIXELS")


def test_pillows_own_bomb_limit_is_reported_as_the_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above 2x this
    with pytest.raises(FinexlError) as error:
        load_images([path])
    _one_line(error, "bomb.png", "FINEXL_MAX_IMAGE_PIXELS")


def test_images_are_decoded_one_at_a_time_and_shrunk_at_once(tmp_path, monkeypatch):
    """However large the batch, at most one full-size decoded image is alive at any time,
    and the encoder receives images shrunk to the working side."""
    monkeypatch.setattr(limits, "WORKING_SIDE", 16)
    base, personal = tmp_path / "base", tmp_path / "personal"
    for folder in (base, personal):
        folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / f"{i}.png")
        Image.fromarray(pixels // 2).save(personal / f"{i}.png")
    alive: list[weakref.ref] = []
    most_alive = []
    real_to_rgb = decode._to_rgb

    def counting_to_rgb(image, path):
        gc.collect()
        # Full-size images of earlier files that are still alive.
        most_alive.append(sum(ref() is not None for ref in alive))
        converted = real_to_rgb(image, path)
        alive.append(weakref.ref(converted))
        return converted

    monkeypatch.setattr(decode, "_to_rgb", counting_to_rgb)
    seen_sizes = set()

    class SizeRecorder(ToyEncoder):
        def embed_images(self, images, *, progress=False):
            seen_sizes.update(image.size for image in images)
            return super().embed_images(images, progress=progress)

    pair_set = load_pairs(base, personal)
    diffs = embed_pair_differences(SizeRecorder(), pair_set, batch_size=32, progress=False)
    assert diffs.shape == (12, ToyEncoder.dim)
    assert len(most_alive) == 24 and max(most_alive) == 0
    assert seen_sizes == {(21, 16)}  # 64x48 shrunk so the shorter side is 16


def test_small_images_are_kept_exactly_as_decoded(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    (image,) = load_images([tmp_path / "a.png"])
    assert np.array_equal(np.asarray(image), pixels)


# 5. File names that are not UTF-8 ------------------------------------------------------------

def _non_utf8(folder: Path, name: bytes) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))
    Image.new("RGB", (8, 8)).save(path, format="PNG")
    return path


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_a_file_name_that_is_not_utf8_is_refused_naming_it(tmp_path):
    base, personal = _folders(tmp_path, lambda im: im)
    for folder in (base, personal):
        _non_utf8(folder, b"caf\xe9.png")
    with pytest.raises(FinexlError) as error:
        load_pairs(base, personal)
    _one_line(error, "caf\\xe9.png", "not valid UTF-8", "rename")
    result = run_cli("explain", "--base", str(base), "--personal", str(personal), "--no-cache",
                     "-q", "--proposer", "vocab")
    assert_one_line_error(result, "caf\\xe9.png", "not valid UTF-8")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_a_folder_name_that_is_not_utf8_is_refused(tmp_path):
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/b\xff"))
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    with pytest.raises(FinexlError) as error:
        list_images(folder, "base")
    _one_line(error, "b\\xff", "not valid UTF-8")


# 6. Two generate runs into one --out ---------------------------------------------------------

class _BlockingPipe:
    """A stand-in pipeline: solid-colour images; optionally holds the first call until released."""

    def __init__(self, colour: str, hold: threading.Event | None = None,
                 started: threading.Event | None = None) -> None:
        self.colour, self.hold, self.started = colour, hold, started

    def __call__(self, prompt, generator, output_type="pil", num_inference_steps=2,
                 guidance_scale=1.0):
        if self.started is not None:
            self.started.set()
        if self.hold is not None:
            assert self.hold.wait(60)
        return SimpleNamespace(images=[Image.new("RGB", (8, 8), self.colour) for _ in prompt])


def _generate_config(out_dir: Path, prompts: list[str]):
    from finexl.generate.run import GenerateConfig

    return GenerateConfig(model="builtin:tiny", out_dir=out_dir, prompts=prompts)


def test_a_concurrent_generate_into_the_same_folder_is_refused_and_loses_nothing(tmp_path):
    from finexl.generate.run import generate

    out = tmp_path / "out"
    hold, started, outcome = threading.Event(), threading.Event(), {}

    def first_run():
        outcome["records"] = generate(_generate_config(out, ["a red cat", "a blue dog"]),
                                      pipeline=_BlockingPipe("red", hold, started))

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        assert started.wait(60)
        with pytest.raises(FinexlError) as error:
            generate(_generate_config(out, ["a green tree", "a grey cloud"]),
                     pipeline=_BlockingPipe("green"))
        _one_line(error, "another finexl generate is writing into", str(out))
    finally:
        hold.set()
        thread.join(60)
    assert [r["prompt"] for r in outcome["records"]] == ["a red cat", "a blue dog"]
    for name in ("p0000_s0000.png", "p0001_s0001.png"):
        with Image.open(out / name) as image:
            assert image.getpixel((0, 0)) == (255, 0, 0)  # the first run's, not overwritten
    # One after the other, the second is refused by the metadata check, as before.
    with pytest.raises(FinexlError, match="prompt"):
        generate(_generate_config(out, ["a green tree", "a grey cloud"]),
                 pipeline=_BlockingPipe("green"))


def test_a_waiting_generate_reuses_what_the_first_one_made(tmp_path):
    from finexl.generate.run import generate

    out = tmp_path / "out"
    hold, started = threading.Event(), threading.Event()
    thread = threading.Thread(target=generate, args=(_generate_config(out, ["a red cat"]),),
                              kwargs={"pipeline": _BlockingPipe("red", hold, started)})
    thread.start()
    assert started.wait(60)
    calls = []

    class Counting(_BlockingPipe):
        def __call__(self, *args, **kwargs):
            calls.append(1)
            return super().__call__(*args, **kwargs)

    threading.Timer(0.5, hold.set).start()
    records = generate(_generate_config(out, ["a red cat"]), pipeline=Counting("green"),
                       wait=True)
    thread.join(60)
    assert calls == [] and [r["prompt"] for r in records] == ["a red cat"]


# 7. A busy catalog ---------------------------------------------------------------------------

def test_a_busy_catalog_is_called_busy(tmp_path, monkeypatch):
    import finexl.catalog as catalog_module

    path = tmp_path / "catalog.sqlite"
    Catalog(path).models()  # create it
    monkeypatch.setattr(catalog_module, "BUSY_TIMEOUT_S", 0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(FinexlError) as error:
            Catalog(path).models()
        _one_line(error, "is busy", str(path))
        assert "not a finexl catalog" not in str(error.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Catalog(path).models() == []


def test_a_damaged_catalog_is_still_not_a_finexl_catalog(tmp_path):
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(FinexlError, match="not a finexl catalog"):
        Catalog(path).models()


# 8. Symbolic links, devices and FIFOs --------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_links_out_of_the_folder_devices_and_fifos_are_reported(tmp_path):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (base / "0002.png").rename(elsewhere / "0002.png")
    (base / "0002.png").symlink_to(elsewhere / "0002.png")  # out of the folder
    (base / "0003.png").rename(base / ".real-0003.png")
    (base / "0003.png").symlink_to(".real-0003.png")  # inside the folder: not reported
    for folder in (base, personal):
        (folder / "0004.png").unlink()
        os.mkfifo(folder / "0004.png")  # reading it would block forever
        (folder / "0005.png").unlink()
        (folder / "0005.png").symlink_to(os.devnull)  # a character device
    lines = [line for line in (base / "metadata.jsonl").read_text().splitlines()
             if '"0004.png"' not in line and '"0005.png"' not in line]
    for folder in (base, personal):
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")

    listing = list_images(base, "base")
    assert listing.outside == ("0002.png",) and listing.skipped == ("0004.png", "0005.png")
    assert "0002.png" in listing.images and "0003.png" in listing.images
    strict = list_images(base, "liked", follow_outside=False)
    assert "0002.png" not in strict.images and "left out" in strict.notes()[0]

    pair_set = load_pairs(base, personal)
    assert len(pair_set) == 10
    notes = " ".join(pair_set.notes)
    assert "outside it (0002.png); followed" in notes
    assert "0004.png, 0005.png" in notes and "skipped" in notes
    result = explain(base, personal, ExplainConfig(concepts=CONCEPTS, cache=False,
                                                   decomposition=FEW_RESAMPLES),
                     encoder=ToyEncoder())
    assert any("outside it (0002.png)" in note for note in result.notes)
    assert any("0004.png, 0005.png" in note for note in result.notes)
    cli = run_cli_subprocess("explain", "--base", str(base), "--personal", str(personal), "--no-cache",
                  "-q", "--encoder", "/nonexistent-encoder", "--proposer", "vocab")
    assert "0002.png" in cli.stderr and "0004.png, 0005.png" in cli.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_an_image_replaced_by_a_fifo_after_the_scan_does_not_block(tmp_path):
    path = tmp_path / "late.png"
    os.mkfifo(path)
    with pytest.raises(FinexlError) as error:
        load_images([path])
    _one_line(error, "late.png", "not a regular file")


# 3-4. A cache folder the machine will not let us use; a full disk for the outputs -----------

@pytest.fixture()
def fresh_warnings(monkeypatch):
    """Each test sees the store's once-per-process warnings afresh."""
    from finexl.store import cache

    monkeypatch.setattr(cache, "_WARNED", set())
    monkeypatch.setattr(cache, "_UNUSABLE", {})


def _cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the cache folder" in r.getMessage()]


def _explain_cached(base, personal, root: Path):
    from finexl.encoders.base import CachedEncoder
    from finexl.store.cache import Store

    return explain(base, personal, ExplainConfig(concepts=CONCEPTS, cache=root,
                                                 decomposition=FEW_RESAMPLES),
                   encoder=CachedEncoder(ToyEncoder(), Store(root / "embeddings")))


def _same_result(a, b) -> None:
    assert [(c.concept, round(c.weight, 9)) for c in a.concepts] == \
        [(c.concept, round(c.weight, 9)) for c in b.concepts]


def test_a_read_only_cache_falls_back_to_memory_with_one_warning(tmp_path, monkeypatch, caplog,
                                                                  fresh_warnings):
    """SQLite refuses every write (as on a read-only folder); JSON writes fail with EROFS."""
    import errno

    from finexl.store import cache, rows

    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    reference = explain(base, personal, ExplainConfig(concepts=CONCEPTS, cache=False,
                                                      decomposition=FEW_RESAMPLES),
                     encoder=ToyEncoder())
    real_connect = rows.SqliteFile._connect

    def read_only_connect(self):
        connection = real_connect(self)
        connection.execute("PRAGMA query_only = ON")  # writes raise SQLITE_READONLY
        return connection

    def read_only_write(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(rows.SqliteFile, "_connect", read_only_connect)
    monkeypatch.setattr(cache, "write_text_atomic", read_only_write)
    for _ in range(2):  # a cold run, then a "warm" one: neither raises
        result = _explain_cached(base, personal, tmp_path / "cache")
        _same_result(result, reference)
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "is read-only" in warnings[0] and "--no-cache" in warnings[0]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_cache_folder_without_write_permission_falls_back(tmp_path, caplog, fresh_warnings):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    root = tmp_path / "cache"
    _explain_cached(base, personal, root)  # fill it
    for folder in [root, *root.rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o555)
    try:
        _explain_cached(base, personal, root)
    finally:
        for folder in [root, *root.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
    assert len(_cache_warnings(caplog)) == 1


def test_a_full_disk_under_the_cache_falls_back_and_keeps_what_was_there(
        tmp_path, monkeypatch, caplog, fresh_warnings):
    """SQLite's own limit on the file's pages raises SQLITE_FULL, as a full disk does."""
    from finexl.store import rows
    from finexl.store.cache import Store

    store = Store(tmp_path / "cache")
    store.put_rows(["kept"], np.ones((1, 4), np.float32))
    store.close()
    real_connect = rows.SqliteFile._connect

    def full_connect(self):
        connection = real_connect(self)
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")  # not one page more
        return connection

    monkeypatch.setattr(rows.SqliteFile, "_connect", full_connect)
    store = Store(tmp_path / "cache")
    big = np.random.default_rng(0).normal(size=(64, 512)).astype(np.float32)
    store.put_rows([f"k{i}" for i in range(64)], big)  # does not raise
    assert np.array_equal(np.stack(store.get_rows(["k5"])), big[5:6])  # kept in memory
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and "is on a full disk" in warnings[0]
    monkeypatch.undo()
    again = Store(tmp_path / "cache")  # the rows written before are intact, none half-added
    assert again.get_rows(["kept"])[0] is not None and again.get_rows(["k0"]) == [None]


def test_a_cache_locked_by_another_process_falls_back_after_the_timeout(
        tmp_path, monkeypatch, caplog, fresh_warnings):
    from finexl.store import rows
    from finexl.store.cache import Store

    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    root = tmp_path / "cache"
    Store(root / "embeddings").put_rows(["x"], np.zeros((1, 2), np.float32))  # the file exists
    monkeypatch.setattr(rows, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(root / "embeddings" / rows.ROWS_FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        result = _explain_cached(base, personal, root)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.concepts
    warnings = _cache_warnings(caplog)
    assert len(warnings) == 1 and "locked by another process for over 0.2 s" in warnings[0]


def test_a_second_store_on_a_locked_folder_does_not_wait_again(tmp_path, monkeypatch, caplog,
                                                               fresh_warnings):
    from finexl.store import rows
    from finexl.store.cache import Store

    # Before the first write: a store keeps its connection, whose busy timeout is fixed when
    # it opens, so a later patch would leave the test waiting out the real 60 s.
    monkeypatch.setattr(rows, "BUSY_TIMEOUT_S", 0.2)
    root = tmp_path / "cache"
    first, second = Store(root), Store(root)
    first.put_rows(["x"], np.zeros((1, 2), np.float32))
    holder = sqlite3.connect(root / rows.ROWS_FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    writes = []
    real_write = rows.SqliteFile.write
    monkeypatch.setattr(rows.SqliteFile, "write",
                        lambda self, *a: (writes.append(1), real_write(self, *a)))
    try:
        first.put_rows(["y"], np.ones((1, 2), np.float32))
        second.put_rows(["z"], np.ones((1, 2), np.float32))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(writes) == 1  # only the first store tried the file
    assert second.get_rows(["z"])[0] is not None and len(_cache_warnings(caplog)) == 1


def test_a_bug_in_the_store_is_not_swallowed(tmp_path, fresh_warnings):
    from finexl.store.cache import Store

    with pytest.raises(ValueError, match="object arrays"):
        Store(tmp_path / "cache").put_rows(["k"], [np.array([object()])])


def test_a_full_disk_for_json_and_html_is_one_line_and_leaves_the_old_files(tmp_path,
                                                                            monkeypatch):
    import errno

    from finexl.store import files

    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.6))
    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    out_json.write_text("old json")
    real_replace = os.replace

    def full_disk(source, target):
        if str(target).endswith((".json", ".html")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", full_disk)
    for option, target in (("--json", out_json), ("--html", out_html)):
        result = run_cli("explain", "--base", str(base), "--personal", str(personal),
                         "--no-cache", "-q", "--encoder", "mini", "--proposer", "vocab",
                         "--n-bootstrap", "10", option, str(target))
        assert_one_line_error(result, f"cannot write {target}", "the disk is full")
    assert out_json.read_text() == "old json" and not out_html.exists()
    assert not list(tmp_path.glob(".out.*"))  # no temporary left behind


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
def test_the_memo_and_the_json_writer_take_names_that_are_not_utf8(tmp_path):
    """Refused at the folder scan, such a name can still reach the store or the JSON writer
    through the library; neither raises, and the JSON keeps the name exactly."""
    from finexl.image_hashes import image_file_hashes
    from finexl.report.json import write_json
    from finexl.store.cache import Store

    path = _non_utf8(tmp_path, b"caf\xe9.png")
    store = Store(tmp_path / "cache")
    store.racy_window_ns = 0
    first, _ = image_file_hashes([path], store)
    again, decoded = image_file_hashes([path], store)
    assert first == again and decoded == {}  # remembered: not decoded the second time
    out = write_json({"pairs": [{"base": str(path)}]}, tmp_path / "out.json")
    assert json.loads(out.read_text(encoding="utf-8"))["pairs"][0]["base"] == str(path)


def test_pillows_warning_gives_way_to_the_one_line(tmp_path, monkeypatch):
    import warnings

    path = tmp_path / "big.png"
    Image.new("RGB", (80, 80)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # Pillow warns above, errs above 2x
    monkeypatch.setenv("FINEXL_MAX_IMAGE_PIXELS", "6000")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(FinexlError) as error:
        warnings.simplefilter("always")
        load_images([path])
    _one_line(error, "80x80 = 6,400", "limit of 6,000")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# PrefGen's entry points: the same bounds ------------------------------------------------------

def _preference_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for k in range(n):
        Image.new("RGB", (16, 16), (20 * k, 100, 150)).save(folder / f"{k}.png")
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_liked_folder_reads_nothing_outside_it_and_says_what_it_skipped(tmp_path, caplog):
    from finexl.pairs import load_preference_folder

    liked = _preference_folder(tmp_path / "liked", 3)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (16, 16), "red").save(secret)
    (liked / "link.png").symlink_to(secret)
    os.mkfifo(liked / "pipe.png")
    images = load_preference_folder(liked, "liked")
    assert len(images) == 3  # not the secret, not the FIFO
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "outside it (link.png); left out" in said and "pipe.png" in said


def test_a_liked_folder_is_bounded_in_count_and_pixels(tmp_path, monkeypatch):
    from finexl.pairs import load_preference_folder

    liked = _preference_folder(tmp_path / "liked", 3)
    monkeypatch.setenv("FINEXL_MAX_PREFERENCE_IMAGES", "2")
    with pytest.raises(FinexlError) as error:
        load_preference_folder(liked, "liked")
    _one_line(error, "the liked folder", "3 is over the limit of 2",
              "FINEXL_MAX_PREFERENCE_IMAGES")
    monkeypatch.delenv("FINEXL_MAX_PREFERENCE_IMAGES")
    monkeypatch.setenv("FINEXL_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(FinexlError, match="0.png is 16x16 = 256 pixels"):
        load_preference_folder(liked, "liked")


def test_prefgen_profile_refuses_a_too_large_liked_folder_before_loading_a_model(tmp_path,
                                                                                 monkeypatch):
    import finexl.prefgen.model as model_module

    liked = _preference_folder(tmp_path / "liked", 3)
    monkeypatch.setattr(model_module.PrefGenModel, "load",
                        classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    result = run_cli("prefgen", "profile", "--liked", str(liked), "--out",
                     str(tmp_path / "me.user.safetensors"),
                     env={"FINEXL_MAX_PREFERENCE_IMAGES": "2"})
    assert_one_line_error(result, "FINEXL_MAX_PREFERENCE_IMAGES")


def _users_folder(tmp_path: Path, record: dict) -> Path:
    folder = tmp_path / "users"
    _preference_folder(folder / "img", 3)
    (folder / "users.jsonl").write_text(json.dumps(record) + "\n")
    return folder


def test_users_jsonl_is_bounded(tmp_path, monkeypatch):
    from finexl.prefgen.users import load_users

    record = {"user_id": "u1", "liked": ["img/0.png", "img/1.png"], "disliked": ["img/2.png"],
              "prompts": {"img/0.png": "a red circle on grass"}}
    folder = _users_folder(tmp_path, record)
    assert len(load_users(folder)) == 1
    monkeypatch.setenv("FINEXL_MAX_PREFERENCE_IMAGES", "1")
    with pytest.raises(FinexlError) as error:
        load_users(folder)
    _one_line(error, "users.jsonl line 1 (user u1) 'liked'", "2 is over the limit of 1")
    monkeypatch.delenv("FINEXL_MAX_PREFERENCE_IMAGES")
    monkeypatch.setenv("FINEXL_MAX_PROMPT_CHARS", "10")
    with pytest.raises(FinexlError, match="line 1 .user u1.: the prompt is 21 characters"):
        load_users(folder)
    monkeypatch.delenv("FINEXL_MAX_PROMPT_CHARS")
    size = (folder / "users.jsonl").stat().st_size
    monkeypatch.setenv("FINEXL_MAX_TEXT_FILE_BYTES", str(size - 1))
    monkeypatch.setattr(Path, "open", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(FinexlError, match="users file .*FINEXL_MAX_TEXT_FILE_BYTES"):
        load_users(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_users_jsonl_naming_a_fifo_is_one_line_not_a_hang(tmp_path):
    from finexl.prefgen.users import load_users

    folder = _users_folder(tmp_path, {"user_id": "u1", "liked": ["img/pipe.png"]})
    os.mkfifo(folder / "img" / "pipe.png")
    with pytest.raises(FinexlError) as error:
        load_users(folder)
    _one_line(error, "'img/pipe.png' is not a regular file")


def test_imported_histories_are_bounded(tmp_path, monkeypatch):
    import io

    from finexl.prefgen.histories import import_histories

    root = tmp_path / "hist"
    root.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "blue").save(buffer, format="PNG")
    monkeypatch.setenv("FINEXL_MAX_IMAGE_PIXELS", "1000")
    from finexl.prefgen import histories

    # Image bytes embedded in a table row (Pick-a-Pic's jpg_0/jpg_1), checked from the header.
    with pytest.raises(FinexlError) as error:
        histories._check_image(buffer.getvalue(), "t.parquet row 1 jpg_1")
    _one_line(error, "row 1 jpg_1", "40x30 pixels", "limit of 1,000")
    (root / "images").mkdir()
    Image.new("RGB", (40, 30), "blue").save(root / "images" / "a.png")
    (root / "h.jsonl").write_text(json.dumps(
        {"user_id": "u", "liked": ["images/a.png"], "disliked": []}) + "\n")
    with pytest.raises(FinexlError) as error:
        import_histories(root, tmp_path / "out", min_liked=1)
    _one_line(error, "h.jsonl row 1", "a.png is 40x30 = 1,200 pixels")
    monkeypatch.delenv("FINEXL_MAX_IMAGE_PIXELS")
    monkeypatch.setenv("FINEXL_MAX_PROMPT_CHARS", "5")
    (root / "h.jsonl").write_text(json.dumps(
        {"user_id": "u", "liked": ["images/a.png"], "disliked": [],
         "prompts": ["a long caption"]}) + "\n")
    with pytest.raises(FinexlError, match="h.jsonl row 1: the prompt is 14 characters"):
        import_histories(root, tmp_path / "out2", min_liked=1)


def test_a_concurrent_prefgen_import_into_the_same_folder_is_refused(tmp_path):
    from filelock import FileLock

    from finexl.output_lock import LOCK_NAME

    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / LOCK_NAME):  # another import in progress
        result = run_cli("prefgen", "import", str(tmp_path), "--out", str(out))
    assert_one_line_error(result, "another finexl prefgen import is writing into")
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]


def test_catalog_add_refuses_a_huge_json_before_reading_it(tmp_path):
    path = tmp_path / "e.json"
    with open(path, "wb") as handle:
        handle.truncate(5_000)
    result = run_cli("catalog", "add", "m", "--json", str(path), "--catalog",
                     str(tmp_path / "c.sqlite"), env={"FINEXL_MAX_TEXT_FILE_BYTES": "1000"})
    assert_one_line_error(result, "--json", "5,000 bytes", "FINEXL_MAX_TEXT_FILE_BYTES")


def test_a_broken_profiles_index_is_one_line(tmp_path, monkeypatch):
    from finexl.prefgen.population import profile_jobs

    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "index.jsonl").write_text('{"user_id": "a", "file": "a.user.safetensors"}\n'
                                        '{"user": "b"}\n')
    with pytest.raises(FinexlError) as error:
        profile_jobs(folder, tmp_path / "out")
    _one_line(error, "index.jsonl line 2", "user_id and file")
    monkeypatch.setenv("FINEXL_MAX_TEXT_FILE_BYTES", "10")
    with pytest.raises(FinexlError, match="profiles index .*FINEXL_MAX_TEXT_FILE_BYTES"):
        profile_jobs(folder, tmp_path / "out")
