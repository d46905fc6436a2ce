"""A PrefGen model folder around a real VLM: extract -> build-vlm-model -> profile."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_user_images

from finexl.errors import FinexlError
from finexl.prefgen.population import (
    ExtractSettings,
    extract_population,
    read_features,
    release_workers,
    user_file_name,
)
from finexl.prefgen.vlm_features import VLMFeatureExtractor, make_vlm_lora_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASTES = (["sepia"], ["vignette"], ["sepia", "vignette"])


@pytest.fixture
def users_dir(tmp_path):
    root = tmp_path / "users"
    lines = []
    for u, user_id in enumerate(["ann", "bo", "cy"]):
        paths = write_user_images(root, u, {"liked": 2, "disliked": 1}, (12, 12))
        lines.append(json.dumps({"user_id": user_id, "liked": paths["liked"],
                                 "disliked": paths["disliked"],
                                 "liked_attributes": TASTES[u]}))
    (root / "users.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def lora_dir(tiny_llava_dir, tmp_path):
    # A LoRA that changes the states (peft starts B at zero, which would change nothing).
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    extractor.add_lora(make_vlm_lora_config(rank=2))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, value in extractor.model.named_parameters():
            if "lora_B" in name:
                value.copy_(torch.randn(value.shape, generator=generator) * 0.5)
    return extractor.save_lora(tmp_path / "lora")


def test_build_vlm_model_then_profile_reads_the_vlm_with_its_lora(
        tiny_llava_dir, users_dir, lora_dir, tmp_path):
    from click.testing import CliRunner

    from finexl.cli import main
    from finexl.imaging.decode import load_images
    from finexl.prefgen.model import PrefGenModel
    from finexl.prefgen.profile import UserProfile

    release_workers()
    probes = tmp_path / "probes.json"
    probes.write_text(json.dumps({"core_layers": [1], "sem_layers": [1, 2]}))
    extract_population(users_dir, tmp_path / "feat", ExtractSettings(
        str(tiny_llava_dir), layers=(1, 2), lora=str(lora_dir), core_layers=(1,),
        sem_layers=(1, 2)))
    runner = CliRunner()
    args = ["prefgen", "build-vlm-model", "--vlm", str(tiny_llava_dir), "--lora", str(lora_dir),
            "--probes", str(probes), "--features", str(tmp_path / "feat"), "--users",
            str(users_dir), "--out", str(tmp_path / "model"), "--align-steps", "20", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "g (mmd) from 3 of 3 users" in result.output

    model = PrefGenModel.load(tmp_path / "model")
    assert model.embedding_parts == {"g_sem": 4 * model.config["text_dim"], "e_core": 32,
                                     "e_img": 2 * model.tower.dim}
    # The known answer: a profile of a user's images holds the e_core / e_sem that
    # prefgen extract wrote for that user (same VLM, LoRA, question and bands), centred and
    # scaled by the statistics build-vlm-model took over the users.
    stats = model.e_u_norm
    assert stats is not None and model.config["e_img_mode"] == "contrast"
    profiles, cores = [], []
    for folder, user in zip(sorted((users_dir / "img").iterdir()), ("ann", "bo", "cy")):
        liked = load_images(sorted(folder.glob("liked_*.png")))
        disliked = load_images(sorted(folder.glob("disliked_*.png")))
        profiles.append(model.profile(liked, disliked))
        tensors, _ = read_features(tmp_path / "feat" / user_file_name(user, ".features.safetensors"))
        cores.append(tensors["e_core"])
    profile = profiles[0]
    liked = load_images(sorted((users_dir / "img/0").glob("liked_*.png")))
    disliked = load_images(sorted((users_dir / "img/0").glob("disliked_*.png")))
    np.testing.assert_allclose(profile.e_core * stats["e_core.scale"] + stats["e_core.mean"],
                               cores[0], atol=1e-5)
    # Over the users the statistics came from, every part is centred with unit mean variance.
    for part in ("g_sem", "e_core", "e_img"):
        values = np.stack([getattr(p, part) for p in profiles])
        np.testing.assert_allclose(values.mean(axis=0), 0, atol=1e-4)
        assert values.var(axis=0).mean() == pytest.approx(1, rel=1e-3)
    assert profile.user_embedding().size == model.user_embedding_dim
    assert len(profile.aligned_words) == 3 and profile.likes == []
    # The LoRA copied into the model is what reads: without it the states differ.
    plain = VLMFeatureExtractor.load(tiny_llava_dir)
    from finexl.prefgen.vlm_features import PreferenceQuery

    query = PreferenceQuery(tuple(liked), tuple(disliked),
                            "What does this user like and dislike in images?")
    assert not np.allclose(plain.layer_states([query], [1])[0, 0], profile.e_core, atol=1e-3)

    # prefgen profile through the CLI gives the same profile file.
    (tmp_path / "liked").mkdir()
    for k, image in enumerate(liked):
        image.save(tmp_path / "liked" / f"{k}.png")
    out = tmp_path / "ann.user.safetensors"
    result = runner.invoke(main, ["prefgen", "profile", "--model", str(tmp_path / "model"),
                                  "--liked", str(tmp_path / "liked"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = UserProfile.load(out)
    saved.check(model_fingerprint=model.fingerprint)
    assert saved.e_core.shape == (32,)

    # The VLM it was built with changed: one line, not a wrong profile.
    config = json.loads((tiny_llava_dir / "config.json").read_text())
    moved = tmp_path / "vlm-copy"
    import shutil

    shutil.copytree(tiny_llava_dir, moved)
    record_path = tmp_path / "model" / "extractor" / "vlm.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "vlm": str(moved)}))
    (moved / "config.json").write_text(json.dumps({**config, "note": "changed"}))
    with pytest.raises(FinexlError, match="not the one it was built with"):
        PrefGenModel.load(tmp_path / "model")


def test_build_vlm_model_errors(tiny_llava_dir, users_dir, tmp_path):
    from finexl.prefgen.vlm_model import build_vlm_model

    probes = tmp_path / "probes.json"
    probes.write_text(json.dumps({"core_layers": [1], "sem_layers": [2]}))
    with pytest.raises(FinexlError, match="has no features for 3 of 3 users"):
        build_vlm_model(str(tiny_llava_dir), probes, tmp_path / "none", users_dir,
                        tmp_path / "m")
    release_workers()
    extract_population(users_dir, tmp_path / "feat", ExtractSettings(str(tiny_llava_dir),
                                                                     layers=(0, 1)))
    with pytest.raises(FinexlError, match="not extracted"):
        build_vlm_model(str(tiny_llava_dir), probes, tmp_path / "feat", users_dir,
                        tmp_path / "m")
    assert not (tmp_path / "m" / "config.json").exists()
