"""Shared helpers of the benchmark scripts: encoder choice, synthetic data, timing, output.

Each ``bench_*.py`` script runs as ``python benchmarks/NAME.py [--quick] [--out FILE]``
from the repository root (``src/`` is put on ``sys.path`` when finexl is not installed)
and prints one markdown table on stdout. Nothing here is part of the ``finexl`` package.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    try:
        import finexl  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

TINY_SPEC = "tiny"
RANDOM_B32_SPEC = "random-b32"
# Words for synthetic prompts and vocabulary phrases when the encoder has an open vocabulary.
_OPEN_WORDS = (
    "red green blue yellow orange purple pink brown black white grey golden silver pale dark"
    " bright dim warm cool soft hard sharp blurry grainy smooth glossy matte faded vivid muted"
    " sepia neon pastel noisy clean old new tiny huge round square striped dotted wooden metal"
    " glass stone paper cloth cat dog house tree river mountain city street car boat bird"
    " flower cup chair table window door lamp clock book apple bread sky cloud moon sun"
    " forest beach field road bridge tower garden room kitchen portrait landscape sketch"
    " painting photo drawing poster film vintage modern rustic minimal ornate cinematic"
).split()
_FUNCTION_WORDS = frozenset({"a", "an", "the", "of", "in", "on", "with", "and", "or", "very"})


# Arguments and encoders ------------------------------------------------------------------------

def base_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--encoder", default=TINY_SPEC,
                        help="'tiny' (a random tiny CLIP built in a temp folder), 'random-b32' (a"
                             " random CLIP with ViT-B/32's shapes), 'mini', a local CLIP"
                             " directory or a Hugging Face id in the local cache")
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    parser.add_argument("--out", default=default_out, help="where the JSON results go ('' for none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def resolve_encoder(spec: str, workdir: Path) -> str:
    """The encoder spec to hand to ``load_encoder``.

    ``tiny`` builds the test suite's tiny CLIP; ``random-b32`` builds a randomly initialised
    CLIP with ViT-B/32's shapes (224 px, 12+12 layers, 512-d), to time an encoder of real
    CLIP's cost without downloading one (its embeddings mean nothing).
    """
    if spec not in (TINY_SPEC, RANDOM_B32_SPEC):
        return spec
    target = workdir / spec
    if not (target / "config.json").is_file():
        tests = str(ROOT / "tests")
        if tests not in sys.path:
            sys.path.insert(0, tests)
        from conftest import save_tiny_clip  # the fixture the test suite uses

        if spec == TINY_SPEC:
            save_tiny_clip(target)
        else:
            save_random_b32(target)
    return str(target)


def save_random_b32(directory: Path, *, seed: int = 0) -> Path:
    """A random CLIP ViT-B/32 (the test suite's byte-level tokenizer, 77 positions)."""
    import torch
    from conftest import tiny_tokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = 77
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=2048,
                         num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=32),
        projection_dim=512,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(directory)
    return directory


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def known_words(spec: str) -> list[str]:
    """Content words the encoder knows (its declared vocabulary), else an open word list."""
    from finexl.encoders.loader import load_encoder

    encoder = load_encoder(spec, cache=False)
    known = getattr(encoder.encoder, "known_words", None)  # a KnownVocabulary, or None
    words = getattr(known, "words", known)
    if not words:
        return list(_OPEN_WORDS)
    return sorted(w for w in words if w.isalpha() and w not in _FUNCTION_WORDS)


# Synthetic data -------------------------------------------------------------------------------

def make_phrases(words: Sequence[str], count: int, seed: int, *, min_words: int = 1,
                 max_words: int = 3) -> list[str]:
    """``count`` distinct phrases of ``min_words``..``max_words`` words drawn from ``words``."""
    rng = np.random.default_rng(seed)
    phrases: dict[str, None] = {}
    words = list(words)
    capacity = sum(len(words) ** k for k in range(min_words, max_words + 1))
    if count > capacity:
        raise ValueError(f"{count} phrases asked of {len(words)} words, at most {capacity}")
    while len(phrases) < count:
        length = int(rng.integers(min_words, max_words + 1))
        phrase = " ".join(words[i] for i in rng.integers(0, len(words), length))
        phrases.setdefault(phrase, None)
    return list(phrases)


def vocabulary_phrases(spec: str, count: int, seed: int) -> list[str]:
    """``count`` distinct vocabulary phrases the encoder ``spec`` knows, so every one is used.

    An open-vocabulary encoder, or a closed one without trained phrases (mini v1), gets 1-3
    word phrases of :func:`known_words`. One with trained phrases (mini v3 on) knows a plain
    caption word with adjectives before it ("red car") but not a new combination of trained
    words, so its phrases are up to two adjectives and a plain word; more adjectives only when
    ``count`` needs them (about 16,000 such phrases exist for mini v3).
    """
    from finexl.encoders.loader import load_encoder

    known = getattr(load_encoder(spec, cache=False).encoder, "known_words", None)
    if known is None or not getattr(known, "phrases", None):
        return make_phrases(known_words(spec), count, seed)
    def content(words):  # words the encoder's own filter keeps (so the phrase is known)
        return sorted(w for w in words if w.isalpha() and w not in _FUNCTION_WORDS
                      and known.content(w) == [w])

    plain, adjectives = content(known.plain_words), content(known.adjectives)
    most = 2
    while len(plain) * sum(len(adjectives) ** k for k in range(most + 1)) < 1.25 * count:
        most += 1
    rng = np.random.default_rng(seed)
    phrases: dict[str, None] = {}
    while len(phrases) < count:
        before = rng.integers(0, len(adjectives), int(rng.integers(0, most + 1)))
        phrase = " ".join([adjectives[i] for i in before] + [plain[int(rng.integers(len(plain)))]])
        phrases.setdefault(phrase, None)
    return list(phrases)


def make_prompts(words: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` distinct captions such as ``"a photo of red cat river"``."""
    return [f"a photo of {p}" for p in make_phrases(words, count, seed + 1, min_words=3,
                                                          max_words=4)]


def smooth_image(rng: np.random.Generator, size: int = 64):
    """A random smooth RGB image: 4x4 colour noise upsampled bicubically, plus a little grain."""
    from PIL import Image

    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def known_transform(image):
    """The 'personalization': a sepia colour matrix followed by a slight blur."""
    from PIL import ImageFilter

    sepia = (0.393, 0.769, 0.189, 0, 0.349, 0.686, 0.168, 0, 0.272, 0.534, 0.131, 0)
    return image.convert("RGB", sepia).filter(ImageFilter.GaussianBlur(1.0))


def make_pairs(folder: Path, prompts: Sequence[str], seed: int, size: int = 64) -> tuple[Path, Path]:
    """``base/`` and ``personal/`` folders of PNG pairs with one prompt each (metadata.jsonl)."""
    from finexl.pairs import write_metadata

    rng = np.random.default_rng(seed)
    base, personal = folder / "base", folder / "personal"
    base.mkdir(parents=True, exist_ok=True)
    personal.mkdir(parents=True, exist_ok=True)
    records = []
    for i, prompt in enumerate(prompts):
        name = f"{i:05d}.png"
        image = smooth_image(rng, size)
        image.save(base / name)
        known_transform(image).save(personal / name)
        records.append({"file_name": name, "prompt": prompt, "seed": i})
    write_metadata(base, records)
    write_metadata(personal, records)
    return base, personal


def write_vocabulary(path: Path, phrases: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"synthetic: {p}\n" for p in phrases), encoding="utf-8")
    return path


# Counting encoder -----------------------------------------------------------------------------

class CountingEncoder:
    """Wraps a raw encoder; counts calls, items and forward batches, and times the forward."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.id = encoder.id
        self.dim = encoder.dim
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.texts = 0
        self.images = 0
        self.batches = 0
        self.seconds = 0.0
        self.log: list[tuple[str, list]] = []
        self.record = False

    def __getattr__(self, name: str):
        return getattr(self.encoder, name)

    def _run(self, kind: str, items: list, embed: Callable, progress: bool) -> np.ndarray:
        self.calls += 1
        batch = getattr(self.encoder, "batch_size", 32)
        self.batches += -(-len(items) // batch)
        if self.record:
            self.log.append((kind, items))
        start = time.perf_counter()
        out = embed(items, progress=progress)
        self.seconds += time.perf_counter() - start
        return out

    def embed_images(self, images, *, progress: bool = False) -> np.ndarray:
        images = list(images)
        self.images += len(images)
        return self._run("images", images, self.encoder.embed_images, progress)

    def embed_texts(self, texts, *, progress: bool = False) -> np.ndarray:
        texts = list(texts)
        self.texts += len(texts)
        return self._run("texts", texts, self.encoder.embed_texts, progress)


def counted_encoder(spec: str, cache: Any, batch_size: int = 32):
    """``load_encoder(spec, cache=cache)`` with a :class:`CountingEncoder` between the cache and
    the model; returns ``(cached_encoder, counter)``. The model is loaded now, not timed later."""
    from finexl.encoders.loader import load_encoder

    cached = load_encoder(spec, cache=cache, batch_size=batch_size)
    cached.encoder.load()
    counter = CountingEncoder(cached.encoder)
    cached.encoder = counter
    return cached, counter


# Timing, statistics, output -------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeats))


# Where explain() spends its time: (label, file the function is in, function name). Labels
# shared by several functions add up.
PIPELINE_BUCKETS = (
    ("pair folders: scan, metadata, check_images", "pairs.py", "load_pairs"),
    ("pair folders: scan, metadata, check_images", "pairs.py", "check_images"),
    ("decode images (load_images)", "decode.py", "load_images"),
    ("content hash of images (hash_image)", "keys.py", "hash_image"),
    ("image file hashes (memo look-up, image_file_hashes)", "image_hashes.py",
     "image_file_hashes"),
    ("cache keys (make_key)", "keys.py", "make_key"),
    ("cache keys (make_key)", "keys.py", "make_keys"),
    ("cache look-ups, embedding rows (Store.get_rows)", "cache.py", "get_rows"),
    ("vocabulary table (embed_vocabulary)", "vocab.py", "embed_vocabulary"),
    ("vocabulary: load + unknown filter", "vocab.py", "load_vocabulary"),
    ("decomposition + bootstrap (Decomposer.fit)", "decompose.py", "fit"),
    ("decomposition, cached (fit_cached, incl. any fit)", "fit_cache.py", "fit_cached"),
    ("result assembly (build_explanation)", "pipeline.py", "build_explanation"),
)


def profile_buckets(fn: Callable[[], Any], buckets: Sequence[tuple[str, str, str]],
                    whole_label: str) -> list[tuple[str, float, float]]:
    """Run ``fn`` under cProfile; ``(label, seconds, share)`` per bucket, then the whole run.

    cProfile inflates times, so the shares are what matter.
    """
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt
    seconds_by_label: dict[str, float] = {}
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        for label, file_end, function in buckets:
            if filename.endswith(file_end) and name == function:
                seconds_by_label[label] = seconds_by_label.get(label, 0.0) + cumulative
    rows = [(label, seconds, seconds / total) for label, seconds in seconds_by_label.items()]
    rows.append((whole_label, total, 1.0))
    return rows


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line ``y = slope * x + intercept``, its R^2, and the log-log slope
    ``exponent`` (about 1 for linear growth, 2 for quadratic; NaN if some y <= 0)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - (slope * x + intercept)) ** 2).sum())
    exponent = float(np.polyfit(np.log(x), np.log(y), 1)[0]) if (y > 0).all() else float("nan")
    return {"slope": float(slope), "intercept": float(intercept),
            "r2": 1.0 - residual / total if total > 0 else 1.0, "exponent": exponent}


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gb": ram_gb,
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def encoder_identity(spec: str) -> str | None:
    """The identity of the encoder ``spec`` names (e.g. ``clip:mini@f8358950f62b``: which
    weights were measured), or None for the random ``tiny``/``random-b32`` ones built per run."""
    if spec in (TINY_SPEC, RANDOM_B32_SPEC):
        return None
    from finexl.encoders.loader import load_encoder

    return load_encoder(spec, cache=False).id


def write_results(out: str, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``out``. A named encoder's identity is added to ``data`` itself
    as ``encoder_id`` (which weights were measured), so the returned results match the file."""
    if not out:
        return
    if isinstance(data.get("encoder"), str) and "encoder_id" not in data:
        data["encoder_id"] = encoder_identity(data["encoder"])
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def workdir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"finexl-{prefix}-")


def quiet_logs() -> None:
    import logging

    logging.getLogger("finexl").setLevel(logging.ERROR)
    for name in ("transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
