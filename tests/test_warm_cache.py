"""A warm rerun neither decodes unchanged image files nor refits the decomposition, and still
gives exactly the cold run's answer; a changed file is always seen."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from test_pipeline import _config, _darken, _folders
from toy_encoder import ToyEncoder

import finexl.store.keys
import finexl.store.memo
from finexl.encoders.base import CachedEncoder
from finexl.errors import FinexlError
from finexl.image_hashes import (
    checked_before,
    image_file_hashes,
    pixel_hash_kind,
    remembered_files,
)
from finexl.imaging.decode import load_images
from finexl.pairs import check_images, load_pairs
from finexl.pipeline import explain
from finexl.store.cache import Store
from finexl.store.keys import hash_image
from finexl.store.memo import file_identity


@pytest.fixture
def no_racy_window(monkeypatch):
    """Remember hashes of files written a moment ago (the tests' files all are)."""
    monkeypatch.setattr(finexl.store.memo, "RACY_WINDOW_NS", 0)


@pytest.fixture
def no_decoding(monkeypatch):
    """Make any attempt to open an image fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"an image was opened: {args[:1]}")

    monkeypatch.setattr(Image, "open", refuse)


def _pixels(seed: int, size=(12, 10)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _write(folder, count=4, suffix=".bmp"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i}{suffix}"
        _pixels(i).save(path)
        paths.append(path)
    return paths


# The memo of file hashes -----------------------------------------------------------------

def test_file_hash_is_the_pixel_hash_and_is_remembered(tmp_path, no_racy_window, monkeypatch):
    paths = _write(tmp_path / "images")
    expected = [hash_image(image) for image in load_images(paths)]
    store = Store(tmp_path / "cache")
    hashes, decoded = image_file_hashes(paths, store)
    assert hashes == expected and sorted(decoded) == [0, 1, 2, 3]

    again = Store(tmp_path / "cache")  # a new process: read from rows.sqlite3
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened an image"))
    assert image_file_hashes(paths, again) == (expected, {})
    assert remembered_files(paths, again) == set(paths)


def test_changed_file_with_same_name_size_and_mtime_is_hashed_again(tmp_path, no_racy_window):
    path = _write(tmp_path / "images", count=1)[0]
    store = Store(tmp_path / "cache")
    old_hash = image_file_hashes([path], store)[0][0]
    before = os.stat(path)
    # Same dimensions as BMP: same byte size; the mtime is put back, as `cp -p` would.
    _pixels(99).save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    hashes, decoded = image_file_hashes([path], store)
    assert hashes == [hash_image(_pixels(99))] != [old_hash]
    assert list(decoded) == [0]
    assert remembered_files([path], store) == {path}  # the new content is remembered now


def test_fresh_files_are_hashed_but_not_remembered(tmp_path):
    paths = _write(tmp_path / "images", count=2)
    store = Store(tmp_path / "cache")
    assert store.racy_window_ns == finexl.store.memo.RACY_WINDOW_NS > 0
    image_file_hashes(paths, store)
    assert remembered_files(paths, store) == set()
    assert sorted(image_file_hashes(paths, store)[1]) == [0, 1]  # decoded again


def test_identity_follows_symlinks_and_in_memory_store_remembers(tmp_path, no_racy_window):
    path = _write(tmp_path / "images", count=1)[0]
    link = tmp_path / "link.bmp"
    link.symlink_to(path)
    assert file_identity(link) == file_identity(path)
    assert file_identity(link).path == os.path.realpath(path)
    store = Store(None)
    image_file_hashes([path], store)
    assert image_file_hashes([link], store)[1] == {}  # the same file, not decoded again
    identity = file_identity(path)
    assert store.get_file_hashes("another kind", [identity]) == [None]
    assert store.get_file_hashes(pixel_hash_kind(), [identity._replace(inode=identity.inode + 1)]) \
        == [None]


def test_file_identities_equal_file_identity(tmp_path, monkeypatch):
    paths = _write(tmp_path / "a" / "images", count=2)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "one.bmp").symlink_to(paths[1])
    monkeypatch.chdir(tmp_path)
    spelled = [paths[0], "a/images/1.bmp", "link/images/0.bmp", "link/../a/images/1.bmp",
               "one.bmp", tmp_path / "missing.bmp", "a/images"]
    expected = []
    for path in spelled:
        try:
            expected.append(file_identity(path))
        except OSError:
            expected.append(None)
    assert finexl.store.memo.file_identities(spelled) == expected
    assert expected[0] == expected[2] and expected[1] == expected[3] == expected[4]
    assert expected[5] is None


def test_make_keys_equal_make_key():
    values = ["a photo of a cat", "", 'quotes " and \\ back', "é ü 猫 \u2028 \n\t\x00", "x" * 500]
    for kind, namespace in (("text", "clip:mini@4ae7a61107a9"), ("image", "toy:stats@1")):
        assert finexl.store.keys.make_keys(kind, namespace, values) == [
            finexl.store.keys.make_key(kind, namespace, value) for value in values]
    assert finexl.store.keys.make_keys("text", "x", [3, None]) == [
        finexl.store.keys.make_key("text", "x", 3), finexl.store.keys.make_key("text", "x", None)]


# The cached encoder on files -------------------------------------------------------------

def test_warm_encoder_on_files_opens_no_image(tmp_path, no_racy_window, monkeypatch):
    paths = _write(tmp_path / "images")
    toy = ToyEncoder()
    cold = CachedEncoder(toy, Store(tmp_path / "cache")).embed_images(paths)
    reference = toy.embed_images(load_images(paths))
    np.testing.assert_array_equal(cold, reference)
    calls = toy.image_calls

    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened an image"))
    warm_encoder = CachedEncoder(toy, Store(tmp_path / "cache"))
    np.testing.assert_array_equal(warm_encoder.embed_images(paths), cold)
    assert toy.image_calls == calls and warm_encoder.forward_calls == 0


def test_images_and_files_with_the_same_pixels_share_a_row(tmp_path, no_racy_window):
    paths = _write(tmp_path / "images")
    toy = ToyEncoder()
    encoder = CachedEncoder(toy, Store(tmp_path / "cache"))
    from_memory = encoder.embed_images(load_images(paths))  # PIL images: keyed by pixels
    calls = toy.image_calls
    renamed = tmp_path / "elsewhere" / "renamed.bmp"
    renamed.parent.mkdir()
    shutil.copyfile(paths[2], renamed)
    from_files = encoder.embed_images([*paths, renamed])
    assert toy.image_calls == calls  # every row was there already
    np.testing.assert_array_equal(from_files, np.vstack([from_memory, from_memory[2:3]]))


def test_changed_file_misses_the_embedding_cache(tmp_path, no_racy_window):
    paths = _write(tmp_path / "images", count=2)
    toy = ToyEncoder()
    encoder = CachedEncoder(toy, Store(tmp_path / "cache"))
    encoder.embed_images(paths)
    _pixels(50).save(paths[1])  # same name and size, new pixels
    rows = CachedEncoder(toy, Store(tmp_path / "cache")).embed_images(paths)
    np.testing.assert_array_equal(rows[1], toy.embed_images([_pixels(50)])[0])
    mixed = CachedEncoder(toy, Store(tmp_path / "cache"))
    np.testing.assert_array_equal(mixed.embed_images([_pixels(50), paths[0]]), rows[::-1])
    assert mixed.forward_calls == 0


def test_missing_or_corrupt_file_is_named(tmp_path, no_racy_window):
    paths = _write(tmp_path / "images", count=2)
    encoder = CachedEncoder(ToyEncoder(), Store(tmp_path / "cache"))
    with pytest.raises(FinexlError, match="gone.png.*does not exist"):
        encoder.embed_images([paths[0], tmp_path / "gone.png"])
    encoder.embed_images(paths)
    paths[1].write_bytes(b"not an image at all")
    with pytest.raises(FinexlError, match="1.bmp.*cannot be read"):
        encoder.embed_images(paths)


# check_images ----------------------------------------------------------------------------

def test_check_images_skips_files_decoded_since_their_last_change(tmp_path, no_racy_window,
                                                                  monkeypatch):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.4))
    pairs = load_pairs(base, personal)
    store = Store(tmp_path / "cache")
    CachedEncoder(ToyEncoder(), store).embed_images(list(pairs.base_paths))
    checked = []
    monkeypatch.setattr("finexl.pairs.check_image", checked.append)
    check_images(pairs, skip=checked_before(pairs, store))
    assert checked == list(pairs.personal_paths)  # the base files were decoded already
    checked.clear()
    check_images(pairs)
    assert len(checked) == 2 * len(pairs)  # without a store, everything is checked
    monkeypatch.undo()

    # Damage a remembered file: its identity changes, so it is checked and named.
    damaged = pairs.base_paths[3]
    damaged.write_bytes(damaged.read_bytes()[:40])
    with pytest.raises(FinexlError, match=damaged.name):
        check_images(pairs, skip=checked_before(pairs, Store(tmp_path / "cache")))


# The whole pipeline ----------------------------------------------------------------------

def test_warm_explain_opens_no_image_and_refits_nothing(tmp_path, no_racy_window, monkeypatch):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.4))
    config = dataclasses.replace(_config(), cache=tmp_path / "cache")
    toy = ToyEncoder()
    cold = explain(base, personal, config,
                   encoder=CachedEncoder(toy, Store(tmp_path / "cache" / "embeddings")))
    assert (tmp_path / "cache" / "fits").is_dir()

    from finexl.decompose import Decomposer

    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened an image"))
    monkeypatch.setattr(Decomposer, "fit", lambda *a, **k: pytest.fail("refitted"))
    warm_encoder = CachedEncoder(toy, Store(tmp_path / "cache" / "embeddings"))
    warm = explain(base, personal, config, encoder=warm_encoder)
    assert warm_encoder.forward_calls == 0
    assert warm.to_dict() == cold.to_dict()
    assert cold.concepts[0].concept == "dark"  # the known answer of test_pipeline


def test_explain_sees_a_changed_image(tmp_path, no_racy_window):
    base, personal = _folders(tmp_path, lambda im: _darken(im, 0.4))
    config = dataclasses.replace(_config(), cache=tmp_path / "cache")
    first = explain(base, personal, config,
                    encoder=CachedEncoder(ToyEncoder(), Store(tmp_path / "cache" / "embeddings")))
    # Undo the personalization of one pair in place: V_div must change, and with it the fit.
    shutil.copyfile(base / "0000.png", personal / "0000.png")
    second = explain(base, personal, config,
                     encoder=CachedEncoder(ToyEncoder(), Store(tmp_path / "cache" / "embeddings")))
    fresh = explain(base, personal, _config(),
                    encoder=CachedEncoder(ToyEncoder(), Store(None)))
    assert second.divergence_norm != first.divergence_norm
    assert second.to_dict() == fresh.to_dict()


def test_embed_image_files_opens_no_unchanged_image_when_warm(tmp_path, no_racy_window,
                                                               monkeypatch):
    from tests.toy_encoder import ToyEncoder

    from finexl.encoders.base import CachedEncoder, embed_image_files

    paths = _write(tmp_path / "images")
    cold = embed_image_files(CachedEncoder(ToyEncoder(), Store(tmp_path / "cache")), paths, 3)

    def refuse(*args, **kwargs):
        raise AssertionError(f"an image was opened: {args[:1]}")

    monkeypatch.setattr(Image, "open", refuse)
    toy = ToyEncoder()
    warm = embed_image_files(CachedEncoder(toy, Store(tmp_path / "cache")), paths, 3)
    np.testing.assert_array_equal(warm, cold)
    assert toy.image_calls == 0
