"""Scenario 1's ``finetune`` source at toy size: the tiny model is fine-tuned on its own
styled images, one checkpoint per level, and a longer finished run serves a shorter L."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.eval import finetune_source
from tests.toy_encoder import ToyEncoder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_finetune_levels_builds_one_checkpoint_per_level_and_reuses_the_run(tmp_path, monkeypatch):
    encoder = ToyEncoder()
    base, level_sets, probe = finetune_source.finetune_levels(
        encoder, ["sepia"], 2, n_images=2, n_train=4, steps_per_level=3, work_dir=tmp_path)
    assert base.shape == (2, encoder.dim) and len(probe) == 2
    assert [s.shape for s in level_sets["sepia"]] == [(2, encoder.dim)] * 2
    model_dir = tmp_path / "model-sepia"
    assert (model_dir / "step-00003" / "model_index.json").is_file()
    # The training images are the base model's own, toned sepia: less saturated, warmer.
    assert len(list((tmp_path / "data-sepia").glob("*.png"))) == 4
    # Level 1 and level 2 are different models, so their images differ.
    assert not np.allclose(level_sets["sepia"][0], level_sets["sepia"][1])

    def no_training(*args, **kwargs):
        raise AssertionError("a finished longer run must be reused, not retrained")

    import sys

    monkeypatch.setattr(sys.modules["finexl.generate.finetune"], "finetune", no_training)
    _, shorter, _ = finetune_source.finetune_levels(
        encoder, ["sepia"], 1, n_images=2, n_train=4, steps_per_level=3, work_dir=tmp_path)
    np.testing.assert_allclose(shorter["sepia"][0], level_sets["sepia"][0])


def test_finetune_mixtures_put_each_aspect_in_proportion_to_its_level(tmp_path):
    from PIL import Image

    from finexl.imaging.transforms import apply_many

    encoder = ToyEncoder()
    base, models, probe = finetune_source.finetune_mixtures(
        encoder, ("sepia", "dark"), 2, n_images=2, n_train=4, steps=2, work_dir=tmp_path)
    assert [levels for levels, _ in models] == [
        {"sepia": 1, "dark": 1}, {"sepia": 1, "dark": 2}, {"sepia": 2, "dark": 1},
        {"sepia": 2, "dark": 2}]
    assert all(embeddings.shape == (2, encoder.dim) for _, embeddings in models)

    raw = tmp_path / "mix-raw-4"

    def carried(folder):  # how many images carry each aspect: find the mix that made each
        counts = {"sepia": 0, "dark": 0}
        for path in sorted(raw.glob("*.png")):
            original = Image.open(path).convert("RGB")
            made = np.asarray(Image.open(folder / path.name).convert("RGB"), np.float32)
            mixes = [[], [("sepia", 1.0)], [("dark", 1.0)], [("sepia", 1.0), ("dark", 1.0)]]
            errors = [np.abs(np.asarray(apply_many(original, mix), np.float32) - made).mean()
                      for mix in mixes]
            for aspect, _ in mixes[int(np.argmin(errors))]:
                counts[aspect] += 1
        return counts

    assert carried(tmp_path / "data-mix-sepia1-dark2-of2-n4-s0-t2") == {"sepia": 2, "dark": 4}
    assert carried(tmp_path / "data-mix-sepia2-dark1-of2-n4-s0-t2") == {"sepia": 4, "dark": 2}
