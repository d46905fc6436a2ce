"""Try finexl as an attacker and an unlucky user would, and print what it did (docs/RELIABILITY.md).

Each case builds its inputs in a fresh temporary folder, runs the real ``finexl`` command
(``python -m finexl.cli``) with its own cache folder, and records the exit code, the first
line of stderr (or of the outcome), the peak resident memory of that process (``wait4``)
and the seconds it took. Cases that need a read-only or full file system mount one (tmpfs,
a read-only bind mount) and run only as root; the others run anywhere.

    python scripts/hostile_trials.py [--only NAME,...] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = "dark\nbright\nred\nblue\n"
ENV_BASE = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


@dataclass
class Outcome:
    exit_code: int | None
    line: str
    peak_mb: float
    seconds: float


_MARK = "peak-rss-kb="


def run(args: list[str], env: dict[str, str], *, timeout: float = 600) -> tuple[Outcome, str, str]:
    """Run ``args`` under ``/usr/bin/time``, whose own small child is what it measures (a
    child forked from this process would count this process's pages as its own)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(["/usr/bin/time", "-f", f"{_MARK}%M", *args], check=False,
                              capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return (Outcome(None, f"still running after {timeout:g} s (killed)", 0.0, timeout),
                exc.stdout or "", exc.stderr or "")
    seconds = time.perf_counter() - start
    lines, peak_kb = [], 0.0
    for line in done.stderr.splitlines():
        if line.startswith(_MARK):
            peak_kb = float(line[len(_MARK):])
        elif line.strip() and not line.startswith("Command exited with non-zero status"):
            lines.append(line)
    first = lines[0] if lines else (done.stdout.strip().splitlines() or [""])[-1]
    if len(lines) > 1:
        first += f" (+{len(lines) - 1} more stderr lines)"
    return Outcome(done.returncode, first, peak_kb / 1024, seconds), done.stdout, "\n".join(lines)


def finexl(*args: str) -> list[str]:
    return [sys.executable, "-m", "finexl.cli", *args]


def make_pairs(folder: Path, n: int = 6, size: int = 64) -> tuple[Path, Path]:
    from PIL import Image

    base, personal = folder / "base", folder / "personal"
    records = []
    for side in (base, personal):
        side.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (30 * i % 255, 120, 200)).save(base / f"{i:04d}.png")
        Image.new("RGB", (size, size), (30 * i % 255, 60, 100)).save(personal / f"{i:04d}.png")
        records.append(json.dumps({"file_name": f"{i:04d}.png", "prompt": f"a photo {i}"}))
    (base / "metadata.jsonl").write_text("\n".join(records) + "\n")
    return base, personal


def explain_args(base: Path, personal: Path, work: Path, *extra: str) -> list[str]:
    concepts = work / "concepts.txt"
    if not concepts.exists():
        concepts.write_text(CONCEPTS)
    return finexl("explain", "--base", str(base), "--personal", str(personal), "--encoder",
                  "mini", "--concepts", str(concepts), "--n-bootstrap", "20", "-q", *extra)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` and whose data is one empty row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


class Mount:
    """A tmpfs (``size``) or a read-only bind mount at ``path``, undone on exit (root only)."""

    def __init__(self, path: Path, *, size: str | None = None, read_only_of: Path | None = None):
        self.path, self.size, self.read_only_of = path, size, read_only_of

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.read_only_of is not None:
            subprocess.run(["mount", "--bind", str(self.read_only_of), str(self.path)], check=True)
            subprocess.run(["mount", "-o", "remount,ro,bind", str(self.path)], check=True)
        else:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs",
                            str(self.path)], check=True)
        return self.path

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", str(self.path)], check=False)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError:
                pass


# The cases ----------------------------------------------------------------------------------

def case_prompt_50mb(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    lines = (base / "metadata.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"file_name": "0002.png", "prompt": "a cat " * (50 * 1024 * 1024 // 6)})
    (base / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    outcome, _, _ = run(explain_args(base, personal, work), env)
    return outcome, "a 50 MB prompt line in metadata.jsonl"


def case_metadata_300mb(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    with open(base / "metadata.jsonl", "r+b") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: costs no disk
    outcome, _, _ = run(explain_args(base, personal, work), env)
    return outcome, "a 300 MB metadata.jsonl"


def case_concept_1mb(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    (work / "concepts.txt").write_text("dark\n" + "x" * 1_000_000 + "\n")
    outcome, _, _ = run(explain_args(base, personal, work), env)
    return outcome, "a 1 MB line in the --concepts file"


def case_png_12000(work: Path, env: dict) -> tuple[Outcome, str]:
    from PIL import Image

    base, personal = make_pairs(work)
    Image.new("RGB", (12000, 12000), (10, 20, 30)).save(personal / "0003.png")
    size = (personal / "0003.png").stat().st_size
    outcome, _, _ = run(explain_args(base, personal, work), env)
    return outcome, f"a 12000x12000 PNG of {size / 1024:.0f} KB among the pairs"


def case_png_header_bomb(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    png_header_only(personal / "0001.png", 30000, 30000)
    outcome, _, _ = run(explain_args(base, personal, work), env)
    return outcome, "a PNG whose header says 30000x30000 (beyond Pillow's own bomb limit)"


def case_png_truncated(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    data = (personal / "0004.png").read_bytes()
    (personal / "0004.png").write_bytes(data[: len(data) // 2])
    outcome, _, _ = run(explain_args(base, personal, work), env)
    return outcome, "a PNG cut in half"


def case_non_utf8(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    for folder in (base, personal):
        shutil.copyfile(folder / "0000.png", os.fsencode(folder) + b"/caf\xe9.png")
    outcome, _, _ = run(explain_args(base, personal, work), env)
    return outcome, "an image named caf\\xe9.png (Latin-1, not UTF-8) in both folders"


def case_links(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work, n=8)
    outside = work / "outside.png"
    shutil.copyfile(base / "0001.png", outside)
    (base / "0001.png").unlink()
    (base / "0001.png").symlink_to(outside)
    for folder in (base, personal):
        (folder / "0002.png").unlink()
        os.mkfifo(folder / "0002.png")
        (folder / "0003.png").unlink()
        (folder / "0003.png").symlink_to("/dev/zero")
    lines = [line for line in (base / "metadata.jsonl").read_text().splitlines()
             if '"0002.png"' not in line and '"0003.png"' not in line]
    (base / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    outcome, _, _ = run(explain_args(base, personal, work, "--json",
                                          str(work / "out.json")), env)
    data = json.loads((work / "out.json").read_text()) if (work / "out.json").exists() else {}
    outcome.line = (f"{outcome.line} / n_pairs {data.get('n_pairs')}, notes in the JSON:"
                    f" {sum('outside' in n or 'skipped' in n for n in data.get('notes', []))}")
    return outcome, "base/0001.png a link out of the folder; a FIFO and a /dev/zero link as images"


def case_cache_read_only(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    cache = work / "cache"
    run(explain_args(base, personal, work), dict(env, FINEXL_CACHE_DIR=str(cache)))  # fill it
    with Mount(work / "ro-cache", read_only_of=cache) as read_only:
        outcome, _, _ = run(explain_args(base, personal, work),
                            dict(env, FINEXL_CACHE_DIR=str(read_only)))
    return outcome, "the cache folder on a read-only mount (a warm cache)"


def case_cache_disk_full(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    with Mount(work / "full", size="2m") as full:
        (full / "cache").mkdir()
        fill(full)
        outcome, _, _ = run(explain_args(base, personal, work),
                            dict(env, FINEXL_CACHE_DIR=str(full / "cache")))
    return outcome, "the cache folder on a full disk (tmpfs filled to the last byte)"


def case_json_disk_full(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    with Mount(work / "full", size="2m") as full:
        (full / "out.json").write_text("the previous report\n")
        fill(full)
        outcome, _, _ = run(explain_args(base, personal, work, "--json",
                                         str(full / "out.json")), env)
        kept = (full / "out.json").read_text() == "the previous report\n"
        leftovers = [p.name for p in full.iterdir() if p.name.startswith(".")]
    outcome.line += f" / previous out.json kept: {kept}, temporary files left: {len(leftovers)}"
    return outcome, "--json on a full disk, over an earlier report"


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    code = (f"import sqlite3, time; c = sqlite3.connect({str(path)!r}, isolation_level=None);"
            f" c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep({seconds})")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def case_cache_locked(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    cache = work / "cache"
    (cache / "embeddings").mkdir(parents=True)
    connection = sqlite3.connect(cache / "embeddings" / "rows.sqlite3")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.close()
    holder = _hold_lock(cache / "embeddings" / "rows.sqlite3", 150)
    try:
        outcome, _, _ = run(explain_args(base, personal, work),
                            dict(env, FINEXL_CACHE_DIR=str(cache)))
    finally:
        holder.kill()
    return outcome, "the embedding cache locked by another process for 150 s"


def case_catalog_busy(work: Path, env: dict) -> tuple[Outcome, str]:
    base, personal = make_pairs(work)
    run(explain_args(base, personal, work, "--json", str(work / "e.json")), env)
    catalog = work / "catalog.sqlite"
    run(finexl("catalog", "add", "first", "--json", str(work / "e.json"), "--catalog",
               str(catalog)), env)
    holder = _hold_lock(catalog, 60)
    try:
        outcome, _, _ = run(finexl("catalog", "add", "second", "--json", str(work / "e.json"),
                                   "--catalog", str(catalog)), env)
    finally:
        holder.kill()
    return outcome, "catalog add while another process holds the catalog for 60 s"


def case_generate_race(work: Path, env: dict) -> tuple[Outcome, str]:
    out = work / "out"
    common = ["--model", "builtin:tiny", "--out", str(out), "--prompt-count", "4", "-q"]
    first_prompts, second_prompts = work / "a.txt", work / "b.txt"
    first_prompts.write_text("a red circle\na blue square\na green circle\na red square\n")
    second_prompts.write_text("a yellow circle\na grey square\na pink circle\na red star\n")
    env = dict(env)
    runs = [subprocess.Popen(finexl("generate", "--prompts", str(p), *common), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for p in (first_prompts, second_prompts)]
    results = [(r.wait(600), r.communicate()) for r in runs]
    codes = [code for code, _ in results]
    loser = next((err.strip() for code, (_, err) in results if code), "")
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    winner = [first_prompts, second_prompts][codes.index(0)] if 0 in codes else None
    consistent = winner is not None and [r["prompt"] for r in records] == \
        winner.read_text().splitlines()
    after, _, _ = run(finexl("generate", "--prompts", str(second_prompts if winner ==
                                                          first_prompts else first_prompts),
                             *common), env)
    line = (f"exit codes {sorted(codes)}; loser: {loser.splitlines()[0] if loser else '-'};"
            f" metadata.jsonl lists the winner's prompts: {consistent}; a later run with the other"
            f" prompts: exit {after.exit_code}, {after.line}")
    return Outcome(max(codes), line, 0.0, after.seconds), \
        "two `finexl generate` runs, different prompts, one --out, started together"


def case_vlm_huge_answer(work: Path, env: dict) -> tuple[Outcome, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_vlm_server import FakeVlmServer, Reply

    base, personal = make_pairs(work)
    with FakeVlmServer([], default=Reply.answer("sepia, " * 1_500_000)) as server:
        outcome, _, _ = run(finexl("explain", "--base", str(base), "--personal", str(personal),
                                   "--encoder", "mini", "--proposer", "vlm", "--vlm-url",
                                   server.url, "--vlm-model", "fake", "--vlm-pairs", "2",
                                   "--n-bootstrap", "20", "-q"),
                            dict(env, FINEXL_VLM_API_KEY="unused"))
    return outcome, "a VLM server answering every pair with a 10 MB reply"


CASES: dict[str, tuple[Callable, bool]] = {  # name -> (case, needs root)
    "prompt_50mb": (case_prompt_50mb, False),
    "metadata_300mb": (case_metadata_300mb, False),
    "concept_1mb": (case_concept_1mb, False),
    "png_12000": (case_png_12000, False),
    "png_header_bomb": (case_png_header_bomb, False),
    "png_truncated": (case_png_truncated, False),
    "non_utf8": (case_non_utf8, False),
    "links": (case_links, False),
    "cache_read_only": (case_cache_read_only, True),
    "cache_disk_full": (case_cache_disk_full, True),
    "json_disk_full": (case_json_disk_full, True),
    "cache_locked": (case_cache_locked, False),
    "catalog_busy": (case_catalog_busy, False),
    "generate_race": (case_generate_race, False),
    "vlm_huge_answer": (case_vlm_huge_answer, False),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(CASES)
    rows = ["| case | input | exit | what finexl said / did | peak RSS MB | s |",
            "|---|---|---|---|---|---|"]
    for name in names:
        case, needs_root = CASES[name]
        if needs_root and os.geteuid() != 0:
            rows.append(f"| {name} | (needs root to mount a file system) | - | not run | - | - |")
            continue
        with tempfile.TemporaryDirectory(prefix=f"finexl-hostile-{name}-") as tmp:
            work = Path(tmp)
            env = dict(os.environ, **ENV_BASE, FINEXL_CACHE_DIR=str(work / "default-cache"),
                       FINEXL_DATA_DIR=str(work / "data"))
            outcome, what = case(work, env)
        line = outcome.line.replace("|", "\\|")
        rows.append(f"| {name} | {what} | {outcome.exit_code} | {line} |"
                    f" {outcome.peak_mb:.0f} | {outcome.seconds:.1f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    table = "\n".join(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
