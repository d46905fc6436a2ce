"""Executors for many models: the local map and Ray tasks give the same per-pair differences.

Workers load their encoder from a spec, so these tests use the saved tiny CLIP directory
(not the in-memory toy encoder) and folders of small PNG pairs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from finexl.errors import FinexlError
from finexl.scale import (
    EmbedSettings,
    LocalExecutor,
    RayExecutor,
    _worker_encoder,
    embed_models,
    embed_pair_sets,
    import_ray,
    make_executor,
    release_encoders,
)

N_PAIRS = 5
MODELS = ("bright", "dark", "inverted")


def _edit(name: str, pixels: np.ndarray) -> np.ndarray:
    if name == "bright":
        return np.clip(pixels.astype(int) + 80, 0, 255).astype(np.uint8)
    if name == "dark":
        return (pixels // 3).astype(np.uint8)
    return (255 - pixels).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A base folder and three models whose images are edits of the base images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("scale")
    rng = np.random.default_rng(3)
    base_pixels = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(N_PAIRS)]
    records = [{"file_name": f"{i:02d}.png", "prompt": f"a photo of thing {i}", "seed": i}
               for i in range(N_PAIRS)]
    sides = {"base": lambda p: p, **{m: (lambda p, m=m: _edit(m, p)) for m in MODELS}}
    for side, edit in sides.items():
        folder = root / side
        folder.mkdir()
        for record, pixels in zip(records, base_pixels):
            Image.fromarray(edit(pixels)).save(folder / record["file_name"])
        (folder / "metadata.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return root / "base", {m: root / m for m in MODELS}


@pytest.fixture(autouse=True)
def _fresh_encoders():
    release_encoders()
    yield
    release_encoders()


def _settings(cache: Path | None) -> EmbedSettings:
    return EmbedSettings(batch_size=2, cache=str(cache) if cache is not None else None)


def test_local_matches_the_pipeline(folders, tiny_clip_dir, tmp_path):
    from finexl.encoders.loader import load_encoder
    from finexl.pairs import load_pairs
    from finexl.pipeline import embed_pair_differences

    base, personal = folders
    diffs = embed_models(base, personal, str(tiny_clip_dir), _settings(tmp_path / "a"),
                         LocalExecutor())
    assert list(diffs) == list(MODELS)
    encoder = load_encoder(str(tiny_clip_dir), cache=False)
    for name, folder in personal.items():
        expected = embed_pair_differences(encoder, load_pairs(base, folder), 2, False)
        assert diffs[name].shape == (N_PAIRS, encoder.dim)
        assert diffs[name].dtype == np.float64
        np.testing.assert_allclose(diffs[name], expected, atol=1e-6)
    # The edits differ, so the models' differences do too.
    assert not np.allclose(diffs["bright"], diffs["inverted"], atol=1e-3)


def test_base_set_is_embedded_once_and_cached(folders, tiny_clip_dir, tmp_path):
    base, personal = folders
    settings = _settings(tmp_path / "cache")
    embed_models(base, personal, str(tiny_clip_dir), settings)
    store = _worker_encoder(str(tiny_clip_dir), settings).store
    # One base set plus one personal set per model, each image encoded once.
    assert (store.misses, store.hits) == (N_PAIRS * (1 + len(MODELS)), 0)
    release_encoders()
    embed_models(base, personal, str(tiny_clip_dir), settings)
    store = _worker_encoder(str(tiny_clip_dir), settings).store
    assert (store.misses, store.hits) == (0, N_PAIRS * (1 + len(MODELS)))


def test_models_with_other_base_images_are_refused(folders, tiny_clip_dir, tmp_path):
    import shutil

    from finexl.pairs import load_pairs

    base, personal = folders
    other_base = tmp_path / "other_base"
    shutil.copytree(base, other_base)
    pair_sets = {"bright": load_pairs(base, personal["bright"]),
                 "dark": load_pairs(other_base, personal["dark"])}
    with pytest.raises(FinexlError, match="model dark is paired with other base images"):
        embed_pair_sets(pair_sets, str(tiny_clip_dir), _settings(None))


def test_local_executor_passes_shared_value():
    assert LocalExecutor().map(divmod, [7, 9], shared=4) == [(1, 3), (2, 1)]
    assert LocalExecutor().map(abs, [-2, 3]) == [2, 3]


def test_unknown_executor_and_missing_ray(monkeypatch):
    with pytest.raises(FinexlError, match="executor 'dask' is unknown; choose one of local, ray"):
        make_executor("dask")
    assert isinstance(make_executor(), LocalExecutor)
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(FinexlError, match=r'pip install "finexl\[ray\]"'):
        import_ray()
    with pytest.raises(FinexlError, match="finexl\\[ray\\]"):
        RayExecutor().map(abs, [1])


@pytest.fixture(scope="module")
def ray_executor():
    """A 1-CPU local Ray cluster for this module, or a skip saying why there is none."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'finexl[ray]')")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)
        executor = RayExecutor(num_cpus=1)
        try:
            executor.start()
        except FinexlError as exc:
            pytest.skip(f"a local Ray cluster cannot start on this machine: {exc}")
        yield executor
        executor.shutdown()


@pytest.mark.slow  # starts a local Ray cluster (a minute here); local runs are tested above
def test_ray_matches_local_and_fills_the_shared_cache(folders, tiny_clip_dir, tmp_path,
                                                      ray_executor):
    base, personal = folders
    local = embed_models(base, personal, str(tiny_clip_dir), _settings(tmp_path / "local"),
                         LocalExecutor())
    # A cache of its own, so the workers really encode instead of reading the local run.
    ray_settings = _settings(tmp_path / "ray")
    remote = embed_models(base, personal, str(tiny_clip_dir), ray_settings, ray_executor)
    assert list(remote) == list(local)
    for name in MODELS:
        assert remote[name].shape == local[name].shape
        np.testing.assert_allclose(remote[name], local[name], atol=1e-6)
    # The workers wrote the shared cache: this process now encodes nothing.
    release_encoders()
    again = embed_models(base, personal, str(tiny_clip_dir), ray_settings, LocalExecutor())
    store = _worker_encoder(str(tiny_clip_dir), ray_settings).store
    assert (store.misses, store.hits) == (0, N_PAIRS * (1 + len(MODELS)))
    for name in MODELS:
        np.testing.assert_array_equal(again[name], remote[name])


@pytest.mark.slow  # starts a local Ray cluster (a minute here); local runs are tested above
def test_ray_worker_errors_arrive_as_one_line(folders, tmp_path, ray_executor):
    base, personal = folders
    missing = str(tmp_path / "no-such-encoder")
    with pytest.raises(FinexlError) as info:
        embed_models(base, {"bright": personal["bright"]}, missing, _settings(None), ray_executor)
    assert "no-such-encoder" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.slow  # starts a local Ray cluster (a minute here); local runs are tested above
def test_ray_executor_leaves_a_running_ray_alone(ray_executor):
    # Ray is already up (the fixture): a second executor joins it and does not stop it.
    from finexl.store.keys import make_key

    ray = import_ray()
    with RayExecutor() as other:
        assert other.map(make_key, ["a", "b"], shared=1) == [make_key("a", 1), make_key("b", 1)]
    assert ray.is_initialized()
