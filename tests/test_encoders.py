"""The encoder layer on tiny random CLIP/SigLIP models saved to disk and loaded back by path."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from encoder_contract import check_encoder_contract

from finexl.concepts.base import unknown_concepts
from finexl.encoders import load_encoder, loader
from finexl.encoders.clip import ClipEncoder, _features, resolve_device
from finexl.errors import FinexlError


def test_contract_on_tiny_clip(tiny_clip_dir):
    check_encoder_contract(load_encoder(str(tiny_clip_dir), cache=False))


def test_raw_clip_encoder_keeps_the_contract(tiny_clip_dir):
    check_encoder_contract(ClipEncoder(tiny_clip_dir, encoder_id="clip:tiny@test", batch_size=2))


def test_shapes_dtype_and_unit_norms(tiny_clip_dir, tiny_images, tiny_texts):
    encoder = load_encoder(str(tiny_clip_dir), cache=False)
    assert encoder.dim == 16
    for rows, n in ((encoder.embed_images(tiny_images), 6), (encoder.embed_texts(tiny_texts), 5)):
        assert rows.shape == (n, 16) and rows.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)


def test_batch_size_does_not_change_results(tiny_clip_dir, tiny_images, tiny_texts):
    results = []
    for batch_size in (1, 2, 32):
        encoder = load_encoder(str(tiny_clip_dir), batch_size=batch_size, cache=False)
        results.append((encoder.embed_images(tiny_images), encoder.embed_texts(tiny_texts)))
    for images, texts in results[1:]:
        np.testing.assert_allclose(images, results[0][0], atol=1e-5)
        np.testing.assert_allclose(texts, results[0][1], atol=1e-5)


def test_second_run_makes_no_forward_pass(tiny_clip_dir, tiny_images, tiny_texts, tmp_path):
    first = load_encoder(str(tiny_clip_dir), cache=tmp_path)
    images, texts = first.embed_images(tiny_images), first.embed_texts(tiny_texts)
    assert first.forward_calls == 2
    assert (first.store.hits, first.store.misses) == (0, 11)
    assert (tmp_path / "embeddings" / "rows.sqlite3").is_file()

    second = load_encoder(str(tiny_clip_dir), cache=tmp_path)
    np.testing.assert_array_equal(second.embed_images(tiny_images), images)
    np.testing.assert_array_equal(second.embed_texts(tiny_texts), texts)
    assert second.forward_calls == 0
    assert (second.store.hits, second.store.misses) == (11, 0)
    assert second.encoder._model is None  # a fully cached run never loads the weights


def test_partly_cached_batch_encodes_only_the_misses(tiny_clip_dir, tiny_images, tmp_path):
    load_encoder(str(tiny_clip_dir), cache=tmp_path).embed_images(tiny_images[:4])
    again = load_encoder(str(tiny_clip_dir), cache=tmp_path)
    rows = again.embed_images(tiny_images)
    assert again.forward_calls == 1 and (again.store.hits, again.store.misses) == (4, 2)
    fresh = load_encoder(str(tiny_clip_dir), cache=False).embed_images(tiny_images)
    np.testing.assert_allclose(rows, fresh, atol=1e-6)


def test_id_names_weights_and_preprocessing(tiny_clip_dir, make_tiny_clip, tmp_path):
    original = loader.resolve_spec(str(tiny_clip_dir))[1]
    assert re.fullmatch(r"clip:tiny-clip@[0-9a-f]{12}", original)
    copy = tmp_path / "a" / "tiny-clip"
    shutil.copytree(tiny_clip_dir, copy)
    assert loader.resolve_spec(str(copy))[1] == original  # content, not location

    make_tiny_clip(copy, seed=1)
    new_weights = loader.resolve_spec(str(copy))[1]
    assert new_weights != original

    processor = copy / "processor_config.json"
    config = json.loads(processor.read_text())
    config["image_processor"]["image_mean"] = [0.5, 0.5, 0.5]
    processor.write_text(json.dumps(config))
    assert loader.resolve_spec(str(copy))[1] not in (original, new_weights)


def test_half_precision_is_cached_apart_and_close(tiny_clip_dir, tiny_images):
    full = load_encoder(str(tiny_clip_dir), cache=False)
    half = load_encoder(str(tiny_clip_dir), dtype="bfloat16", cache=False)
    assert half.id == full.id + "+bfloat16"
    rows, reference = half.embed_images(tiny_images), full.embed_images(tiny_images)
    assert rows.dtype == np.float32
    assert (np.sum(rows * reference, axis=1) > 0.98).all()


def test_hub_id_is_read_from_the_local_cache_only(tiny_clip_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--finexl-test--tiny-clip"
    shutil.copytree(tiny_clip_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    encoder = load_encoder("finexl-test/tiny-clip", cache=False)
    assert encoder.id == "clip:finexl-test/tiny-clip@0123456789ab"
    assert load_encoder(f"finexl-test/tiny-clip@{commit}", cache=False).id == encoder.id
    by_path = load_encoder(str(tiny_clip_dir), cache=False)
    np.testing.assert_allclose(encoder.embed_texts(["a cat"]), by_path.embed_texts(["a cat"]),
                               atol=1e-6)

    with pytest.raises(FinexlError, match="not in the local Hugging Face cache"):
        load_encoder("finexl-test/other-model", cache=False)


def _no_config(root: Path) -> str:
    (root / "empty").mkdir()
    return str(root / "empty")


def _bert(root: Path) -> str:
    (root / "bert").mkdir()
    (root / "bert" / "config.json").write_text('{"model_type": "bert"}')
    return str(root / "bert")


def _no_weights(root: Path) -> str:
    (root / "noweights").mkdir()
    (root / "noweights" / "config.json").write_text('{"model_type": "clip"}')
    return str(root / "noweights")


def _a_file(root: Path) -> str:
    (root / "model.bin").write_bytes(b"\0")
    return str(root / "model.bin")


BAD_SPECS = {
    "missing absolute path": (lambda root: str(root / "nowhere" / "clip"), "no such file"),
    "missing relative path": (lambda root: "./no/such/dir", "no such file"),
    "a file": (_a_file, "is a file"),
    "no config.json": (_no_config, "has no config.json"),
    "unsupported model type": (_bert, "model_type 'bert'.*clip, siglip, siglip2"),
    "no weights": (_no_weights, "no weights file"),
    "hub id not cached": (lambda root: "nobody/not-cached-clip", "runs offline"),
    "not a name": (lambda root: "what is this?", "neither an existing path"),
    "empty": (lambda root: "", "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_gives_one_line_error(case, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    make_spec, expected = BAD_SPECS[case]
    spec = make_spec(tmp_path)
    with pytest.raises(FinexlError, match=expected) as caught:
        load_encoder(spec, cache=False)
    message = str(caught.value)
    assert "\n" not in message and repr(spec) in message


def test_missing_mini_says_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "mini_directory", lambda: tmp_path / "mini")
    with pytest.raises(FinexlError, match=r"shipped mini encoder is missing.*train_mini\.py"):
        load_encoder("mini", cache=False)
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(FinexlError, match="shipped mini encoder is missing"):
        load_encoder("mini", cache=False)


def test_mini_resolves_to_the_package_directory(tiny_clip_dir, monkeypatch):
    monkeypatch.setattr(loader, "mini_directory", lambda: tiny_clip_dir)
    assert re.fullmatch(r"clip:mini@[0-9a-f]{12}", load_encoder("mini", cache=False).id)


@pytest.mark.parametrize("option", [{"device": "tpu-9000"}, {"dtype": "float64"}])
def test_bad_device_or_dtype_is_a_finexl_error(tiny_clip_dir, option):
    with pytest.raises(FinexlError, match="auto|float32"):
        load_encoder(str(tiny_clip_dir), cache=False, **option)


def test_auto_device_resolves_to_an_available_device():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_vocabulary_file_declares_unknown_concepts(tiny_clip_dir, tmp_path):
    assert unknown_concepts(load_encoder(str(tiny_clip_dir), cache=False), ["zorblax"]) == []
    directory = tmp_path / "with-vocabulary"
    shutil.copytree(tiny_clip_dir, directory)
    (directory / "finexl_vocabulary.json").write_text(json.dumps({"known_words": ["Red", "cat"]}))
    encoder = load_encoder(str(directory), cache=False)
    concepts = ["red cat", "watercolor", "a watercolor", "cat with fur", "a", "neon-red"]
    # One unknown content word makes the concept unknown: "fur" and "neon" are not known.
    assert unknown_concepts(encoder, concepts) == ["watercolor", "a watercolor", "cat with fur",
                                                   "a", "neon-red"]


def test_features_accepts_tensor_and_model_output():
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    tensor = torch.ones(2, 3)
    assert _features(tensor) is tensor
    assert _features(BaseModelOutputWithPooling(pooler_output=tensor)) is tensor


def save_tiny_siglip(directory: Path, version: int) -> Path:
    """A tiny random SigLIP (1) or SigLIP 2 (2) with its own image processor and the tiny
    byte tokenizer (SigLIP's SentencePiece tokenizer cannot be built offline)."""
    import torch
    import transformers
    from conftest import TINY_TEXT_LENGTH, tiny_layers, tiny_tokenizer

    prefix = "Siglip" if version == 1 else "Siglip2"
    tokenizer = tiny_tokenizer()
    vision = (tiny_layers(image_size=32, patch_size=8) if version == 1
              else tiny_layers(num_patches=16, patch_size=8))
    config = getattr(transformers, f"{prefix}Config")(
        text_config=tiny_layers(vocab_size=len(tokenizer), max_position_embeddings=TINY_TEXT_LENGTH,
                                bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=vision,
    )
    processor_options = ({"size": {"height": 32, "width": 32}} if version == 1
                         else {"patch_size": 8, "max_num_patches": 16})
    torch.manual_seed(0)
    getattr(transformers, f"{prefix}Model")(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    getattr(transformers, f"{prefix}ImageProcessor")(**processor_options).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("version", [1, 2])
def test_contract_on_tiny_siglip(version, tmp_path):
    directory = save_tiny_siglip(tmp_path / f"tiny-siglip{version}", version)
    encoder = load_encoder(str(directory), cache=False)
    assert encoder.dim == 32 and encoder.id.startswith(f"clip:tiny-siglip{version}@")
    check_encoder_contract(encoder)
    # SigLIP pools the last position, so texts are padded to the full length it was trained on.
    raw = encoder.encoder
    tokens = raw._tokenizer(["a"], padding=raw.family.text_padding, truncation=True,
                            max_length=raw.max_text_length)
    assert len(tokens["input_ids"][0]) == 16


def test_fingerprint_sees_a_change_in_the_middle_of_the_weights(tmp_path, monkeypatch):
    # Issue 13, item 7: a partial fine-tune that rewrites only the middle of a weights file
    # (same size, first and last MiB untouched) must not reuse stale embeddings.
    from finexl.encoders import loader
    from finexl.store.memo import FileMemo

    weights = tmp_path / "model.safetensors"
    data = bytearray(3 * (1 << 20))
    weights.write_bytes(bytes(data))
    (tmp_path / "config.json").write_text("{}")
    before = loader.fingerprint(tmp_path)
    data[len(data) // 2] = 1
    weights.write_bytes(bytes(data))
    assert loader.fingerprint(tmp_path) != before
    # Kept fast by the file-identity memo: an unchanged file is not read again.
    memo = FileMemo(None)
    memo.racy_window_ns = 0
    first = loader.fingerprint(tmp_path, memo)
    real_open = loader.Path.open

    def no_weights(path, *args, **kwargs):
        if path.suffix == ".safetensors":
            pytest.fail("weights read again")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(loader.Path, "open", no_weights)
    assert loader.fingerprint(tmp_path, memo) == first
