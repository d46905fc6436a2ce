"""Many users at once: VLM features for a whole users.jsonl, local and as Ray tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tiny_vlm import save_tiny_llava

from finexl.errors import FinexlError
from finexl.prefgen.population import (
    ExtractSettings,
    extract_population,
    read_features,
    release_workers,
)
from finexl.prefgen.vlm_features import PreferenceQuery, VLMFeatureExtractor
from finexl.scale import LocalExecutor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture
def users_dir(tmp_path):
    root = tmp_path / "users"
    lines = []
    for u, user_id in enumerate(["ann", "bo/../b", "cy"]):
        liked, disliked = [], []
        for side, paths, n in (("liked", liked, 2), ("disliked", disliked, u % 2)):
            for k in range(n):
                relative = f"img/{u}/{side}_{k}.png"
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                pixels = np.random.default_rng([u, k, len(side)]).integers(
                    0, 256, (10, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / relative)
                paths.append(relative)
        lines.append(json.dumps({"user_id": user_id, "liked": liked, "disliked": disliked}))
    (root / "users.jsonl").write_text("\n".join(lines) + "\n")
    return root


class CountingExecutor(LocalExecutor):
    def __init__(self):
        self.items = []

    def map(self, function, items, **kwargs):
        self.items.extend(items)
        return super().map(function, items, **kwargs)


def test_extract_writes_each_users_states_and_resumes(tiny_llava_dir, users_dir, tmp_path):
    release_workers()
    settings = ExtractSettings(str(tiny_llava_dir), layers=(1, 2), batch_size=2)
    executor = CountingExecutor()
    run = extract_population(users_dir, tmp_path / "feat", settings, executor=executor,
                             users_per_task=2)
    assert sorted(run.made) == ["ann", "bo/../b", "cy"] and run.kept == []
    assert len(executor.items) == 2  # 3 users in tasks of 2
    index = [json.loads(line) for line in (tmp_path / "feat" / "index.jsonl").read_text()
             .splitlines()]
    files = {row["user_id"]: tmp_path / "feat" / row["file"] for row in index}
    assert all(p.parent == tmp_path / "feat" for p in files.values())  # ids cannot steer paths
    states, metadata = read_features(files["ann"])
    assert states.shape == (2, 32) and metadata["layers"] == [1, 2]
    # the same numbers as reading that user directly
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    images = sorted((users_dir / "img" / "0").glob("liked_*.png"))
    query = PreferenceQuery(tuple(Image.open(p).convert("RGB") for p in images), (),
                            settings.question)
    np.testing.assert_allclose(states, extractor.layer_states([query], [1, 2])[0], atol=1e-5)
    # resume: a deleted user is redone, the others are kept
    files["cy"].unlink()
    again = extract_population(users_dir, tmp_path / "feat", settings, executor=executor)
    assert again.made == ["cy"] and sorted(again.kept) == ["ann", "bo/../b"]


def test_extract_checks_the_model_before_any_task(users_dir, tmp_path):
    with pytest.raises(FinexlError, match="no such directory"):
        extract_population(users_dir, tmp_path / "f", ExtractSettings(str(tmp_path / "no"), (1,)))


@pytest.mark.slow  # a Ray cluster start and worker imports: about a minute here
def test_extract_as_ray_tasks_matches_local(tiny_llava_dir, users_dir, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'finexl[ray]')")
    from finexl.scale import RayExecutor

    settings = ExtractSettings(str(tiny_llava_dir), layers=(0, 2))
    local = extract_population(users_dir, tmp_path / "local", settings)
    try:
        executor = RayExecutor(num_cpus=1)
        executor.start()
    except FinexlError as exc:
        pytest.skip(f"a local Ray cluster cannot start on this machine: {exc}")
    try:
        remote = extract_population(users_dir, tmp_path / "ray", settings, executor=executor,
                                    users_per_task=2)
    finally:
        executor.shutdown()
    assert sorted(remote.made) == sorted(local.made)
    for name in ("index.jsonl",):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    for path in (tmp_path / "local").glob("*.safetensors"):
        np.testing.assert_allclose(read_features(path)[0],
                                   read_features(tmp_path / "ray" / path.name)[0], atol=1e-5)
