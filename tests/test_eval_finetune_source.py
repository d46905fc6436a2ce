"""Scenario 1's ``finetune`` source at toy size: the tiny model is fine-tuned on its own
styled images, one checkpoint per level, and a longer finished run serves a shorter L."""

from __future__ import annotations

import numpy as np
import pytest

from finexl.eval import finetune_source
from tests.toy_encoder import ToyEncoder


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
