"""Pairing and validating image folders, prompt files and image loading (finexl.pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finexl.errors import FinexlError
from finexl.imaging.decode import load_images
from finexl.pairs import (
    PairSet,
    check_images,
    load_pairs,
    natural_sort_key,
    read_metadata,
    read_prompts,
    write_metadata,
)


def _image(path: Path, color=(200, 30, 30), size=(8, 8), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _folders(tmp_path: Path, names=("1.png", "2.png", "10.png")) -> tuple[Path, Path]:
    base, personal = tmp_path / "base", tmp_path / "personal"
    for name in names:
        _image(base / name)
        _image(personal / name, color=(30, 30, 200))
    return base, personal


def _metadata(folder: Path, lines) -> None:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (folder / "metadata.jsonl").write_text(text, encoding="utf-8")


def _expect_error(call, *words: str) -> str:
    with pytest.raises(FinexlError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


# Good cases ------------------------------------------------------------------------------------

def test_pairs_by_name_in_natural_order_and_ignores_other_files(tmp_path):
    base, personal = _folders(tmp_path, ("10.png", "2.png", "1.png", "a.JPG"))
    for folder in (base, personal):
        (folder / ".hidden.png").write_bytes(b"not an image")
        (folder / "notes.txt").write_text("ignored")
        _image(folder / "sub" / "99.png")  # subfolders are not scanned
    pairs = load_pairs(base, personal)
    assert pairs.file_names == ("1.png", "2.png", "10.png", "a.JPG")
    assert len(pairs) == 4
    assert pairs.base_paths[0] == base / "1.png" and pairs.personal_paths[2] == personal / "10.png"
    assert pairs.image_pairs[1] == (base / "2.png", personal / "2.png")
    assert pairs.prompts == (None,) * 4 and pairs.seeds == (None,) * 4


def test_natural_sort_key():
    names = ["img10.png", "img2.png", "Img1.png", "img2b.png", "b.png", "a.png"]
    assert sorted(names, key=natural_sort_key) == [
        "a.png", "b.png", "Img1.png", "img2.png", "img2b.png", "img10.png"]


def test_metadata_gives_prompts_and_seeds_and_sides_may_agree_or_fill_in(tmp_path):
    base, personal = _folders(tmp_path)
    _metadata(base, [{"file_name": "1.png", "prompt": "a cat", "seed": 1, "extra": [1]},
                     {"file_name": "10.png", "prompt": "a dog", "seed": 10}, ""])
    _metadata(personal, [{"file_name": "1.png", "prompt": " a cat ", "seed": 1},
                         {"file_name": "2.png", "text": "a cow", "seed": 2}])
    pairs = load_pairs(base, personal)
    assert pairs.prompts == ("a cat", "a cow", "a dog")
    assert pairs.seeds == (1, 2, 10)
    records = pairs.to_records()
    assert records[0] == {"file_name": "1.png", "prompt": "a cat", "seed": 1,
                          "base": str(base / "1.png"), "personal": str(personal / "1.png")}
    json.dumps(records)  # plain JSON values only


def test_metadata_in_one_folder_serves_both(tmp_path):
    base, personal = _folders(tmp_path, ("a.png", "b.png"))
    _metadata(personal, [{"file_name": "a.png", "prompt": "x", "seed": 3},
                         {"file_name": "b.png", "prompt": "y", "seed": 4}])
    assert load_pairs(base, personal).prompts == ("x", "y")


@pytest.mark.parametrize("suffix, content", [
    (".txt", "# prompts in file-name order\none\n\n two \nten\n"),
    (".jsonl", '{"prompt": "one", "seed": 5}\n{"prompt": "two"}\n{"prompt": "ten"}\n'),
    (".jsonl", ('{"file_name": "10.png", "prompt": "ten"}\n{"file_name": "1.png", "prompt": "one",'
                ' "seed": 5}\n{"file_name": "2.png", "prompt": "two"}\n')),
    (".json", '["one", {"prompt": "two"}, {"prompt": "ten"}]'),
])
def test_prompts_file_in_each_format(tmp_path, suffix, content):
    base, personal = _folders(tmp_path)
    _metadata(base, [{"file_name": "2.png", "prompt": "old", "seed": 22}])
    prompts_file = tmp_path / f"prompts{suffix}"
    prompts_file.write_text(content)
    pairs = load_pairs(base, personal, prompts_file=prompts_file)
    assert pairs.prompts == ("one", "two", "ten")
    # A seed the prompts file leaves out is taken from metadata.jsonl.
    assert pairs.seeds[1] == 22
    assert pairs.seeds[0] == (5 if "seed" in content else None)


def test_read_prompts_text_and_jsonl(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("\ufeffa red car\n# comment\n\n  a blue boat  \n", encoding="utf-8")
    assert read_prompts(text) == [
        {"file_name": None, "prompt": "a red car", "seed": None},
        {"file_name": None, "prompt": "a blue boat", "seed": None}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "x", "seed": 3, "negative_prompt": "blur"}\n\n{"prompt": "y"}\n')
    records = read_prompts(jsonl)
    assert records[0] == {"file_name": None, "prompt": "x", "seed": 3, "negative_prompt": "blur"}
    assert records[1]["seed"] is None


def test_write_then_read_metadata_round_trip(tmp_path):
    records = [{"file_name": "0002.png", "prompt": "ünïcode cat", "seed": 2**40},
               {"file_name": "0001.png", "prompt": "dog", "seed": None, "steps": 20}]
    path = write_metadata(tmp_path / "out", records)
    assert path == tmp_path / "out" / "metadata.jsonl"
    assert [p.name for p in path.parent.iterdir()] == ["metadata.jsonl"]  # no temp file left
    read = read_metadata(tmp_path / "out")
    assert list(read) == ["0002.png", "0001.png"]
    assert read["0002.png"] == records[0]
    assert read["0001.png"] == {"file_name": "0001.png", "prompt": "dog", "seed": None, "steps": 20}
    assert read_metadata(tmp_path) == {}
    with pytest.raises(ValueError):
        write_metadata(tmp_path, [{"prompt": "no file name"}])


def test_pairset_normalises_fields_and_checks_lengths(tmp_path):
    pairs = PairSet(["a"], ["b/a.png"], ["p/a.png"], [None], [None])
    assert pairs.base_paths == (Path("b/a.png"),) and isinstance(pairs.file_names, tuple)
    with pytest.raises(ValueError):
        PairSet(("a", "b"), ("x",), ("y",), (None,), (None,))


# Bad inputs ------------------------------------------------------------------------------------

def _bad_metadata(lines, names=("1.png", "2.png")):
    def setup(tmp_path):
        base, personal = _folders(tmp_path, names)
        _metadata(base, lines)
        return base, personal, None
    return setup


def _prompts(content, suffix=".txt"):
    def setup(tmp_path):
        base, personal = _folders(tmp_path, ("1.png", "2.png", "3.png"))
        path = tmp_path / f"prompts{suffix}"
        path.write_text(content)
        return base, personal, path
    return setup


def _missing_base(tmp_path):
    _, personal = _folders(tmp_path)
    return tmp_path / "nope", personal, None


def _file_as_base(tmp_path):
    _, personal = _folders(tmp_path)
    return _image(tmp_path / "base.png"), personal, None


def _empty_personal(tmp_path):
    base, _ = _folders(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.jsonl").write_text("")
    _image(empty / "deeper" / "1.png")
    return base, empty, None


def _one_sided(tmp_path):
    base, personal = _folders(tmp_path, [f"{i}.png" for i in range(8)])
    for i in range(7):
        (personal / f"{i}.png").unlink()
    _image(personal / "extra.png")
    return base, personal, None


def _extension_mismatch(tmp_path):
    base, personal = _folders(tmp_path, ("1.png",))
    (personal / "1.png").rename(personal / "1.jpg")
    return base, personal, None


def _disagreeing(tmp_path):
    base, personal = _folders(tmp_path)
    _metadata(base, [{"file_name": "2.png", "prompt": "a photo of a cat on a mat " * 5}])
    _metadata(personal, [{"file_name": "2.png", "prompt": "a dog\nin the rain"}])
    return base, personal, None


BAD_INPUTS = {
    "base folder missing": (_missing_base, ["base folder", "nope", "does not exist"]),
    "base is a file": (_file_as_base, ["base folder", "base.png", "not a folder"]),
    "empty folder": (_empty_personal, ["personal folder", "empty", "no images", "subfolders"]),
    "one side only": (_one_sided, ["7 are only in the base folder",
                                   "0.png, 1.png, 2.png, 3.png, 4.png and 2 more",
                                   "1 is only in the personal folder", "extra.png"]),
    "extension differs": (_extension_mismatch, ["1.png vs 1.jpg", "extension"]),
    "bad json line": (_bad_metadata(['{"file_name": "1.png"}', "", "{not json"]),
                      ["metadata.jsonl line 3", "not valid json"]),
    "not an object": (_bad_metadata(['["1.png"]']), ["line 1", "not an object"]),
    "no file_name": (_bad_metadata(['{"prompt": "x"}']), ["line 1", "file_name"]),
    "names absent files": (_bad_metadata([{"file_name": n} for n in
                                          ("1.png", "a.png", "b.png", "c.png", "d.png", "e.png",
                                           "f.png", "sub/g.png")]),
                           ["names 7 image(s)", "not in the folder", "and 2 more", "subfolders"]),
    "listed twice": (_bad_metadata([{"file_name": "1.png"}, {"file_name": "1.png"}]),
                     ["1.png", "more than once"]),
    "prompts disagree": (_disagreeing, ["prompts for 2.png disagree", "a photo of a cat", "…",
                                        "'a dog in the rain'"]),
    "seed is text": (_bad_metadata([{"file_name": "1.png", "seed": "7"}]),
                     ["line 1", "seed '7'", "whole number"]),
    "seed is float": (_bad_metadata([{"file_name": "1.png", "seed": 7.5}]), ["seed 7.5"]),
    "seed is bool": (_bad_metadata([{"file_name": "1.png", "seed": True}]), ["seed True"]),
    "seed negative": (_bad_metadata([{"file_name": "1.png", "seed": -1}]), ["seed -1"]),
    "prompt not text": (_bad_metadata([{"file_name": "1.png", "prompt": 3}]), ['"prompt" is 3']),
    "prompts count": (_prompts("one\ntwo\n"), ["has 2 prompts", "3 image pairs", "file-name order"]),
    "prompts empty": (_prompts("# only a comment\n\n"), ["holds no prompts"]),
    "prompts missing": (lambda tmp_path: _prompts("")(tmp_path)[:2] + (tmp_path / "none.txt",),
                        ["none.txt", "does not exist"]),
    "prompts bad json": (_prompts('{"prompt": "a"}\n{"prompt": }\n', ".jsonl"),
                         ["prompts.jsonl line 2", "not valid json"]),
    "prompts no prompt": (_prompts('{"seed": 1}\n', ".jsonl"), ["line 1", '"prompt"']),
    "prompts unknown file": (_prompts('{"file_name": "9.png", "prompt": "a"}\n', ".jsonl"),
                             ["9.png", "not image pairs"]),
    "prompts partial names": (_prompts('{"file_name": "1.png", "prompt": "a"}\n{"prompt": "b"}\n'
                                       '{"prompt": "c"}\n', ".jsonl"), ["file_name", "1 of 3"]),
    "prompts uncovered": (_prompts('{"file_name": "1.png", "prompt": "a"}\n', ".jsonl"),
                          ["no prompt for 2", "2.png, 3.png"]),
    "prompts bad seed": (_prompts('{"prompt": "a", "seed": "x"}\n' * 3, ".jsonl"),
                         ["line 1", "seed 'x'"]),
    "prompts not utf8": (lambda tmp_path: _prompts("")(tmp_path)[:2]
                         + (_write_bytes(tmp_path / "latin.txt", b"caf\xe9\n"),), ["utf-8"]),
}


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_one_line_errors(tmp_path, case):
    setup, words = BAD_INPUTS[case]
    base, personal, prompts_file = setup(tmp_path)
    _expect_error(lambda: load_pairs(base, personal, prompts_file=prompts_file), *words)


def test_error_message_truncates_long_prompts(tmp_path):
    base, personal, _ = _disagreeing(tmp_path)
    message = _expect_error(lambda: load_pairs(base, personal))
    assert "a photo of a cat on a mat " * 3 not in message


# Images ----------------------------------------------------------------------------------------

def _save_array(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


def test_mixed_modes_and_sizes_load_as_rgb(tmp_path):
    gray = np.full((6, 9), 100, np.uint8)
    rgba = np.zeros((5, 5, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 3:, 3] = 255
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png")
    Image.new("CMYK", (7, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    Image.new("CMYK", (7, 3), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    Image.new("1", (8, 8), 1).save(tmp_path / "bits.bmp")
    Image.new("LA", (4, 4), (50, 0)).save(tmp_path / "la.png")
    paths = [
        _save_array(tmp_path / "gray.png", gray),
        _save_array(tmp_path / "rgba.png", rgba),
        tmp_path / "p.png", tmp_path / "cmyk.jpg", tmp_path / "cmyk.tif", tmp_path / "bits.bmp",
        tmp_path / "la.png",
        _save_array(tmp_path / "g16.png", np.full((4, 4), 65535 // 2, np.uint16)),
        _save_array(tmp_path / "g16.tif", np.full((4, 4), 65535, np.uint16)),
        _save_array(tmp_path / "f.tif", np.full((4, 4), 0.5, np.float32)),
        _save_array(tmp_path / "rgb.webp", np.full((3, 5, 3), 90, np.uint8)),
    ]
    images = load_images(paths)
    assert all(image.mode == "RGB" for image in images)
    pixel = {path.name: image.getpixel((0, 0)) for path, image in zip(paths, images)}
    assert images[0].size == (9, 6) and pixel["gray.png"] == (100, 100, 100)
    assert pixel["rgba.png"] == (255, 255, 255)  # transparent -> white
    assert images[1].getpixel((4, 0)) == (255, 0, 0)
    assert pixel["p.png"] == (255, 255, 255)
    assert pixel["cmyk.tif"] == (255, 0, 0)
    assert pixel["cmyk.jpg"][0] > 200 and max(pixel["cmyk.jpg"][1:]) < 50
    assert pixel["bits.bmp"] == (255, 255, 255)
    assert pixel["la.png"] == (255, 255, 255)
    assert pixel["g16.png"] == (127, 127, 127)  # scaled, not clipped to 255
    assert pixel["g16.tif"] == (255, 255, 255)
    assert pixel["f.tif"] == (128, 128, 128)
    assert all(image.size == (16, 16) for image in load_images(paths, size=16))
    assert load_images(paths[:1], size=(3, 2))[0].size == (3, 2)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (6, 2), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "o.jpg", exif=exif)
    assert load_images([tmp_path / "o.jpg"])[0].size == (2, 6)


def _truncated(path: Path, fmt: str) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


CORRUPT = {
    "empty.png": lambda p: _write_bytes(p, b""),
    "garbage.jpg": lambda p: _write_bytes(p, b"this is not an image at all"),
    "half.png": lambda p: _truncated(p, "PNG"),
    "half.jpg": lambda p: _truncated(p, "JPEG"),
    "half.webp": lambda p: _truncated(p, "WEBP"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_images_fail_in_check_and_load_naming_the_file(tmp_path, name):
    base, personal = _folders(tmp_path, ("a.png", name))
    CORRUPT[name](personal / name)
    pairs = load_pairs(base, personal)
    check_images(PairSet(pairs.file_names[:1], pairs.base_paths[:1], pairs.personal_paths[:1],
                         (None,), (None,)))  # the intact pair passes
    _expect_error(lambda: check_images(pairs, progress=False), name, "cannot be read")
    _expect_error(lambda: load_images(pairs.personal_paths), name, "cannot be read")


def test_check_images_passes_good_folders_and_notices_deleted_files(tmp_path):
    base, personal = _folders(tmp_path, ("1.png", "2.jpg", "3.webp", "4.bmp", "5.tiff"))
    pairs = load_pairs(base, personal)
    check_images(pairs)
    (base / "4.bmp").unlink()
    _expect_error(lambda: check_images(pairs), "4.bmp", "does not exist")
    _expect_error(lambda: load_images(pairs.base_paths), "4.bmp", "does not exist")


def test_flipped_png_byte_is_caught_by_check(tmp_path):
    base, personal = _folders(tmp_path, ("1.png",))
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(personal / "1.png")
    data = bytearray((personal / "1.png").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (personal / "1.png").write_bytes(bytes(data))
    _expect_error(lambda: check_images(load_pairs(base, personal)), "1.png", "cannot be read")
