"""`finexl prefgen import`: per-user and pairwise (Pick-a-Pic) histories into users.jsonl."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finexl.errors import FinexlError
from finexl.prefgen.histories import import_histories


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(_png(seed))).save(buffer, format="JPEG")
    return buffer.getvalue()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lines(out: Path) -> dict[str, dict]:
    return {line["user_id"]: line for line in
            map(json.loads, (out / "users.jsonl").read_text().splitlines())}


@pytest.fixture
def history_dir(tmp_path):
    root = tmp_path / "hist"
    (root / "images").mkdir(parents=True)
    for k in range(5):
        (root / "images" / f"i{k}.png").write_bytes(_png(k))
    return root


def test_per_user_jsonl(history_dir, tmp_path):
    _jsonl(history_dir / "users.jsonl", [
        {"user_id": "alice", "liked": ["images/i0.png", "images/i1.png"],
         "disliked": ["images/i2.png"], "prompts": ["a cat", "a dog"]},
        {"user_id": "bob", "liked": ["images/i3.png"], "disliked": [],
         "prompts": {"images/i3.png": "a boat"}},
        {"user_id": "carol", "liked": [], "disliked": ["images/i4.png"]},
    ])
    summary = import_histories(history_dir, tmp_path / "out")
    assert (summary.layout, summary.users, summary.liked_images, summary.disliked_images) == (
        "per-user", 2, 3, 1)
    assert summary.skipped_users == ["carol"]  # no liked image
    lines = _lines(tmp_path / "out")
    alice = lines["alice"]
    assert len(alice["liked"]) == 2 and len(alice["disliked"]) == 1
    # copied into the output folder, same bytes, prompts follow the copied paths
    copied = tmp_path / "out" / alice["liked"][0]
    assert copied.read_bytes() == (history_dir / "images" / "i0.png").read_bytes()
    assert alice["prompts"][alice["liked"][1]] == "a dog"
    assert lines["bob"]["prompts"] == {lines["bob"]["liked"][0]: "a boat"}
    # a rerun is idempotent
    import_histories(history_dir, tmp_path / "out")
    assert _lines(tmp_path / "out") == lines


def test_per_user_parquet_with_mapped_columns(history_dir, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")

    table = pa.table({"uid": ["u1", "u2"],
                      "liked": [["images/i0.png"], ["images/i1.png", "images/i2.png"]],
                      "disliked": [["images/i3.png"], []]})
    pq.write_table(table, history_dir / "hist.parquet")
    summary = import_histories(history_dir, tmp_path / "out", columns={"user_id": "uid"})
    assert summary.users == 2 and summary.rows == 2
    assert len(_lines(tmp_path / "out")["u2"]["liked"]) == 2


def test_pairwise_pick_a_pic_with_embedded_images(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")

    root = tmp_path / "pickapic"
    root.mkdir()
    a, b, c = _jpeg(1), _jpeg(2), _jpeg(3)
    rows = {  # user 7 prefers a over b twice, c over b once, and ties a with c
        "user_id": [7, 7, 7, 7, 9],
        "caption": ["a fox", "a fox", "a hill", "a hill", "sea"],
        "jpg_0": [a, b, c, a, a],
        "jpg_1": [b, a, b, c, b],
        "label_0": [1.0, 0.0, 1.0, 0.5, 0.0],
        "label_1": [0.0, 1.0, 0.0, 0.5, 1.0],
    }
    pq.write_table(pa.table(rows), root / "train-0000.parquet")
    summary = import_histories(root, tmp_path / "out")
    assert summary.layout == "pairwise" and summary.rows == 5
    lines = _lines(tmp_path / "out")
    seven = lines["7"]
    liked = [(tmp_path / "out" / p).read_bytes() for p in seven["liked"]]
    disliked = [(tmp_path / "out" / p).read_bytes() for p in seven["disliked"]]
    assert sorted(liked) == sorted([a, c]) and disliked == [b]
    assert set(seven["prompts"].values()) <= {"a fox", "a hill"}
    assert [(tmp_path / "out" / p).read_bytes() for p in lines["9"]["liked"]] == [b]


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside.png", "images/../../outside.png",
                                 "link/out.png"])
def test_hostile_paths_never_leave_the_folder(history_dir, tmp_path, bad):
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png(9))
    os.symlink(tmp_path, history_dir / "link")  # a folder symlink leading out
    (tmp_path / "out.png").write_bytes(_png(8))
    _jsonl(history_dir / "users.jsonl", [{"user_id": "x", "liked": [bad], "disliked": []}])
    with pytest.raises(FinexlError, match="inside|outside"):
        import_histories(history_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "users.jsonl").exists()


def test_table_outside_the_folder_is_refused(history_dir, tmp_path):
    _jsonl(tmp_path / "elsewhere.jsonl", [{"user_id": "x", "liked": [], "disliked": []}])
    with pytest.raises(FinexlError, match="inside"):
        import_histories(history_dir, tmp_path / "out", table="../elsewhere.jsonl")


def test_missing_columns_name_both_layouts(history_dir, tmp_path):
    _jsonl(history_dir / "h.jsonl", [{"user": "x", "liked": ["images/i0.png"]}])
    with pytest.raises(FinexlError, match=r"missing user_id, disliked for the per-user.*--column"):
        import_histories(history_dir, tmp_path / "out")


def test_missing_and_unreadable_images(history_dir, tmp_path):
    _jsonl(history_dir / "h.jsonl", [{"user_id": "x", "liked": ["images/nope.png"],
                                      "disliked": []}])
    with pytest.raises(FinexlError, match=r"h.jsonl row 1: image 'images/nope.png' does not exist"):
        import_histories(history_dir, tmp_path / "out")
    (history_dir / "images" / "broken.png").write_bytes(b"not an image")
    _jsonl(history_dir / "h.jsonl", [{"user_id": "x", "liked": ["images/broken.png"],
                                      "disliked": []}])
    with pytest.raises(FinexlError, match="not a readable image"):
        import_histories(history_dir, tmp_path / "out")


def test_no_table_or_two_tables(history_dir, tmp_path):
    with pytest.raises(FinexlError, match="exactly one"):
        import_histories(history_dir, tmp_path / "out")
    _jsonl(history_dir / "a.jsonl", [])
    _jsonl(history_dir / "b.jsonl", [])
    with pytest.raises(FinexlError, match="a.jsonl, b.jsonl"):
        import_histories(history_dir, tmp_path / "out")


def test_user_ids_cannot_steer_where_images_go(history_dir, tmp_path):
    _jsonl(history_dir / "h.jsonl", [{"user_id": "../../evil", "liked": ["images/i0.png"],
                                      "disliked": []}])
    import_histories(history_dir, tmp_path / "out")
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in written)
    assert _lines(tmp_path / "out")["../../evil"]["liked"][0].startswith("img/evil-")


def test_cli_import_prints_a_summary_and_errors_in_one_line(history_dir, tmp_path):
    from click.testing import CliRunner

    from finexl.cli import main

    _jsonl(history_dir / "h.jsonl", [{"id": "a", "liked": ["images/i0.png", "images/i1.png"],
                                      "disliked": ["images/i2.png"]}])
    runner = CliRunner()
    result = runner.invoke(main, ["prefgen", "import", str(history_dir), "--out",
                                  str(tmp_path / "out"), "--column", "user_id=id", "-q"])
    assert result.exit_code == 0, result.output
    assert "1 users (per-user layout, 1 rows): 2 liked and 1 disliked images" in result.output
    result = runner.invoke(main, ["prefgen", "import", str(history_dir), "--out",
                                  str(tmp_path / "out2"), "-q"])
    assert result.exit_code == 1
    assert result.output.startswith("finexl: error: h.jsonl has columns id, liked")
    assert len(result.output.strip().splitlines()) == 1
