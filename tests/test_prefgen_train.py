"""PrefGen end to end on a tiny random configuration: agents -> train -> profile -> CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from finexl.cli import main
from finexl.errors import FinexlError
from finexl.prefgen.agents import write_agents
from finexl.prefgen.model import PrefGenModel
from finexl.prefgen.pool import build_pool, draw_scenes
from finexl.prefgen.profile import UserProfile
from finexl.prefgen.train import TrainConfig, train

TINY = dict(hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, vqa_steps=12,
            batch_size=8, checkpoint_every=5, heldout_users=6, eval_liked=3, eval_disliked=2,
            probe_users=8, probe_sessions=3, align_steps=10, align_users=30, align_points=2,
            bank_per_set={0: 4, 1: 3, 2: 1})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefgen")
    pool = build_pool(root / "pool", 128, generate=draw_scenes)
    write_agents(root / "agents", pool, str(root / "pool"), 4, n_liked=3, n_disliked=2)
    config = TrainConfig(data=str(root / "agents"), out=str(root / "model"), **TINY)
    results = train(config, stages=("vqa", "probe", "align"), progress=False)
    return root, pool, config, results


def test_stages_write_a_usable_model_and_reports(trained):
    root, pool, config, results = trained
    model_dir = root / "model"
    for name in ("config.json", "probes.json", "probes.png", "text_table.safetensors",
                 "reports/vqa.json", "reports/probe.json", "reports/align.json"):
        assert (model_dir / name).is_file(), name
    accuracy = results["vqa"]["heldout"]["binary_accuracy"]
    assert set(accuracy) == {"likes", "dislikes", "which", "score"}
    probes = results["probe"]
    assert len(probes["inter_user"]) == 4  # embeddings + 3 layers
    assert 0 not in probes["core_layers"] + probes["sem_layers"]
    # A rerun with the same settings redoes nothing (stages are skipped).
    before = (model_dir / "extractor" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = train(config, stages=("vqa", "probe", "align"), progress=False)
    assert again["vqa"] == results["vqa"]
    assert (model_dir / "extractor" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns \
        == before


def test_profile_layout_save_load_and_foreign_models(trained, tmp_path):
    root, pool, config, _ = trained
    model = PrefGenModel.load(root / "model")
    profile = model.profile(list(pool.images[:3]), list(pool.images[3:5]))
    parts = model.embedding_parts
    assert parts == {"g_sem": 2 * 128, "e_core": 32, "e_img": 2 * 128}
    e_u = profile.user_embedding()
    # e_img (contrast mode): mean liked minus mean disliked mini embedding, then mean liked.
    liked = model.tower.features(model.reference_pixels(list(pool.images[:3])))[:, :128]
    disliked = model.tower.features(model.reference_pixels(list(pool.images[3:5])))[:, :128]
    raw = np.concatenate([liked.mean(0) - disliked.mean(0), liked.mean(0)])
    norm = model.e_u_norm  # written by the align stage: e_u parts are centred and scaled
    assert norm is not None and (root / "model" / "e_u_norm.safetensors").is_file()
    np.testing.assert_allclose(profile.e_img, (raw - norm["e_img.mean"]) / norm["e_img.scale"],
                               atol=1e-4)
    assert e_u.shape == (sum(parts.values()),) and e_u.dtype == np.float32
    dropped = profile.user_embedding(drop=("e_core",))
    assert not dropped[256:288].any() and np.array_equal(dropped[:256], e_u[:256])
    assert all(0.5 <= p <= 1 for _, p in profile.likes)
    path = profile.save(tmp_path / "me.user.safetensors")
    back = UserProfile.load(path)
    assert np.array_equal(back.user_embedding(), e_u) and back.likes == profile.likes
    back.check(model_fingerprint=model.fingerprint, base_model="builtin:tiny")
    with pytest.raises(FinexlError, match="made with PrefGen model"):
        back.check(model_fingerprint="0" * 16)
    with pytest.raises(FinexlError, match="base model"):
        back.check(base_model="some/other-model")
    (tmp_path / "junk.user.safetensors").write_bytes(b"not a profile")
    with pytest.raises(FinexlError, match="not a readable user profile"):
        UserProfile.load(tmp_path / "junk.user.safetensors")
    with pytest.raises(FinexlError, match="no config.json"):
        PrefGenModel.load(tmp_path)


def _folder(path, images):
    path.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(path / f"{i}.png")
    return path


def test_cli_profile_prints_words_and_writes_json(trained, tmp_path):
    root, pool, _, _ = trained
    liked = _folder(tmp_path / "liked", pool.images[:4])
    disliked = _folder(tmp_path / "disliked", pool.images[4:6])
    runner = CliRunner()
    out = tmp_path / "me.user.safetensors"
    result = runner.invoke(main, ["prefgen", "profile", "--liked", str(liked), "--disliked",
                                  str(disliked), "--out", str(out), "--model",
                                  str(root / "model"), "--json", str(tmp_path / "me.json")])
    assert result.exit_code == 0, result.output
    assert "likes:" in result.output and "dislikes:" in result.output
    assert "guided away from the disliked images' taste" in result.output
    summary = json.loads((tmp_path / "me.json").read_text())
    assert {"likes", "dislikes", "model"} <= set(summary) and summary["anti_user"] is True
    assert summary["model"] == PrefGenModel.load(root / "model").fingerprint
    # --disliked may be omitted.
    result = runner.invoke(main, ["prefgen", "profile", "--liked", str(liked), "--out",
                                  str(tmp_path / "b.user.safetensors"), "--model",
                                  str(root / "model")])
    assert result.exit_code == 0, result.output
    assert "no disliked images: generation is guided from no user" in result.output
    # Bad input: one line, non-zero exit, nothing written.
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in (([str(empty)], "holds no images"),
                          ([str(tmp_path / "missing")], "does not exist")):
        target = tmp_path / "bad.user.safetensors"
        result = runner.invoke(main, ["prefgen", "profile", "--liked", *args, "--out",
                                      str(target), "--model", str(root / "model")])
        assert result.exit_code != 0 and message in result.output
        assert "Traceback" not in result.output and not target.exists()
    (liked / "broken.png").write_bytes(b"\x89PNG broken")
    result = runner.invoke(main, ["prefgen", "profile", "--liked", str(liked), "--out",
                                  str(tmp_path / "c.user.safetensors"), "--model",
                                  str(root / "model")])
    assert result.exit_code != 0 and "broken.png" in result.output


def test_cli_agents_resumable(tmp_path, monkeypatch):
    import finexl.prefgen.pool as pool_module

    monkeypatch.setattr(pool_module, "_pipeline_generator", lambda *a: draw_scenes)
    runner = CliRunner()
    args = ["prefgen", "agents", "--n", "3", "--out", str(tmp_path / "a"), "--pool-size", "64",
            "--liked", "2", "--disliked", "1", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "a" / "users.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert runner.invoke(main, args).exit_code == 0  # a rerun is a no-op
    assert (tmp_path / "a" / "users.jsonl").read_text().splitlines() == lines


def test_part_statistics_give_every_part_unit_spread():
    from finexl.prefgen.model import normalize_parts, part_statistics

    rng = np.random.default_rng(0)
    parts = {"big": 30 + 20 * rng.normal(size=(500, 8)), "small": 0.01 * rng.normal(size=(500, 4))}
    stats = part_statistics(parts)
    out = normalize_parts(parts, stats)
    for name in parts:
        np.testing.assert_allclose(out[name].mean(axis=0), 0, atol=1e-4)
        assert abs(out[name].var(axis=0).mean() - 1) < 1e-3
    assert stats["big.scale"][0] == pytest.approx(20, rel=0.1)
    untouched = normalize_parts({"other": np.ones((2, 3))}, stats)["other"]
    assert np.array_equal(untouched, np.ones((2, 3)))


def test_content_stage_writes_the_reader_profiles_use(trained):
    """Last in this module: the content stage adds content_reader.safetensors to the folder,
    which the model then loads and names content with (fingerprint unchanged)."""
    import dataclasses

    from finexl.prefgen.content import CONTENT_FILE
    from finexl.prefgen.vocabulary import CONTENT, get

    root, pool, config, _ = trained
    before = PrefGenModel.load(root / "model").fingerprint
    results = train(dataclasses.replace(config, content_agents=6), stages=("content",),
                    progress=False)
    report = results["content"]
    assert (root / "model" / CONTENT_FILE).is_file()
    assert (root / "model" / "reports" / "content.json").is_file()
    assert 0.15 <= report["threshold"] <= 0.5 and report["training_agents"] == 6
    assert set(report["heldout_dislikes"]) >= {"precision", "recall"}
    model = PrefGenModel.load(root / "model")
    assert model.content_reader is not None and model.fingerprint == before
    profile = model.profile(list(pool.images[:3]), list(pool.images[3:5]))
    for word, _ in profile.likes + profile.dislikes:
        assert word in model.attributes
    contents = [w for w, _ in profile.dislikes if get(w).kind == CONTENT]
    assert len({get(w).slot for w in contents}) == len(contents)  # one word a slot at most
