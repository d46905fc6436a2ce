"""The real-VLM preference extractor on a tiny random LLaVA saved and loaded by path."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from finexl.errors import FinexlError
from finexl.prefgen.vlm_features import (
    PreferenceExtractor,
    PreferenceQuery,
    VLMFeatureExtractor,
    finetune_vqa,
    last_token_positions,
    make_vlm_lora_config,
    pool_layer_bands,
    record_layers,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(seed: int, n: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return tuple(Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
                 for _ in range(n))


def _queries():
    return [PreferenceQuery(_images(1, 2), _images(2, 1), "does this user like sepia?"),
            PreferenceQuery(_images(3, 3), (), "name what this user likes")]


def test_loads_by_path_and_fits_the_protocol(tiny_llava_dir):
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    assert isinstance(extractor, PreferenceExtractor)
    assert (extractor.num_layers, extractor.hidden_size) == (3, 32)
    prompt = extractor.prompt(_queries()[0])
    # the processor's own chat template, with one image token per image and both headers
    assert prompt.count("<image>") == 3 and "disliked" in prompt and prompt.endswith("assistant:")


def test_hooks_equal_hidden_states(tiny_llava_dir):
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    queries = _queries()
    states = extractor.layer_states(queries, [0, 1, 2])
    assert states.shape == (2, 3, 32) and states.dtype == np.float32
    inputs = extractor.encode(queries)
    with torch.no_grad():
        hidden = extractor.model(**inputs, output_hidden_states=True).hidden_states
    last = last_token_positions(inputs["attention_mask"])
    for slot, layer in enumerate([0, 1, 2]):
        expected = hidden[layer][torch.arange(2), last].numpy()
        np.testing.assert_array_equal(states[:, slot], expected)
    # the rows differ (different images and questions) and padding did not pick a pad token
    assert not np.allclose(states[0], states[1])
    alone = extractor.layer_states(queries[1:], [1])
    np.testing.assert_allclose(alone[0, 0], states[1, 1], atol=1e-5)


def test_record_layers_takes_only_the_chosen_layers(tiny_llava_dir):
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    inputs = extractor.encode(_queries()[:1])
    with torch.no_grad(), record_layers(extractor.model, [1]) as states:
        extractor.model(**inputs)
    assert set(states) == {1}
    with pytest.raises(ValueError, match="out of range"):
        extractor.layer_states(_queries(), [3])


def test_pool_layer_bands_means_the_bands():
    states = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    e_core, e_sem = pool_layer_bands(states, [0, 1, 2], core_layers=[0, 1], sem_layers=[2])
    np.testing.assert_array_equal(e_core, states[:, :2].mean(axis=1))
    np.testing.assert_array_equal(e_sem, states[:, 2])
    with pytest.raises(ValueError, match="not extracted"):
        pool_layer_bands(states, [0, 1, 2], core_layers=[5], sem_layers=[2])


def test_answer_generates_text(tiny_llava_dir):
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    answers = extractor.answer(_queries(), max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_lora_targets_only_the_language_model(tiny_llava_dir):
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    extractor.add_lora(make_vlm_lora_config(rank=2))
    lora_modules = [name for name, module in extractor.model.named_modules()
                    if hasattr(module, "lora_A")]
    # 2 blocks x q/k/v/o in the language model; nothing in the vision tower or projector
    assert len(lora_modules) == 8
    assert all(re.search(r"language_model\.layers\.\d+\.self_attn\.[qkvo]_proj$", name)
               for name in lora_modules)
    assert not any("vision_tower" in n or "projector" in n for n in lora_modules)
    # hooks resolved after wrapping still equal hidden_states[i]
    queries = _queries()
    states = extractor.layer_states(queries, [1, 2])
    inputs = extractor.encode(queries)
    with torch.no_grad():
        hidden = extractor.model(**inputs, output_hidden_states=True).hidden_states
    last = last_token_positions(inputs["attention_mask"])
    np.testing.assert_array_equal(states[:, 0], hidden[1][torch.arange(2), last].numpy())


def test_vqa_finetuning_learns_and_round_trips(tiny_llava_dir, tmp_path):
    torch.manual_seed(0)
    extractor = VLMFeatureExtractor.load(tiny_llava_dir)
    extractor.add_lora(make_vlm_lora_config(rank=4, alpha=8))
    vision_before = {k: v.clone() for k, v in extractor.model.named_parameters()
                     if "vision_tower" in k}
    queries = _queries()
    batch = [(queries[0], "yes"), (queries[1], "sepia, red")]
    losses = finetune_vqa(extractor, [batch] * 30, learning_rate=3e-2)
    assert losses[-1] < 0.5 * losses[0]  # the known answer: a fixed batch is memorised
    for name, value in extractor.model.named_parameters():
        if name in vision_before:
            assert torch.equal(value, vision_before[name]), name
    before = extractor.layer_states(queries, [2])
    saved = extractor.save_lora(tmp_path / "lora")
    assert (saved / "adapter_model.safetensors").is_file()
    reloaded = VLMFeatureExtractor.load(tiny_llava_dir, lora=saved)
    np.testing.assert_allclose(reloaded.layer_states(queries, [2]), before, atol=1e-5)
    plain = VLMFeatureExtractor.load(tiny_llava_dir)
    assert not np.allclose(plain.layer_states(queries, [2]), before, atol=1e-3)


def test_bad_specs_are_one_line_errors(tmp_path, tiny_llava_dir):
    with pytest.raises(FinexlError, match="no such directory"):
        VLMFeatureExtractor.load(tmp_path / "missing")
    with pytest.raises(FinexlError, match="not in the local Hugging Face cache"):
        VLMFeatureExtractor.load("nobody-here/no-such-vlm")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(FinexlError, match="does not load"):
        VLMFeatureExtractor.load(tmp_path / "clip")
    with pytest.raises(FinexlError, match="adapter_config.json"):
        VLMFeatureExtractor.load(tiny_llava_dir, lora=tmp_path)
