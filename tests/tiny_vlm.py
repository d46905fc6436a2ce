"""A tiny random LLaVA saved as a transformers directory (no downloads), for the real-VLM tests.

The shape follows transformers' own ``tests/models/llava/test_modeling_llava.py``: a 2-layer,
32-wide Llama language model and an 8-pixel CLIP vision tower, with a byte-level tokenizer (no
merges, so every text tokenizes) and a plain chat template. It is loaded back by path through
``AutoModelForImageTextToText`` / ``AutoProcessor``, the code path a real LLaVA takes.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_TOKEN = "<image>"
SPECIALS = ("<unk>", "<pad>", "<s>", "</s>", IMAGE_TOKEN)
# A minimal chat template in the form processors expect: {"type": "image"} items become the
# image token, text items their text; the generation prompt opens the assistant's turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}:"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %} <image>{% else %} {{ item['text'] }}{% endif %}"
    "{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def save_tiny_llava(directory: Path, *, seed: int = 0) -> Path:
    """A random LLaVA (2-layer 32-wide Llama, 8-px CLIP tower) with its processor, in ``directory``."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tiny_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, initializer_range=0.2,
                       pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    # initializer_range 0.2 (Llama's default is 0.02): with a 32-wide model the default leaves
    # logits so flat (|logit| < 1) that no LoRA can make an answer likely, and the
    # fine-tuning test would have nothing to learn.
    vision = CLIPVisionConfig(image_size=8, patch_size=4, hidden_size=32, intermediate_size=37,
                              num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_id=image_token_id,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 8},
                                         crop_size={"height": 8, "width": 8})
    # 8 px / 4 px patches = 4 image tokens per image once CLS is dropped ("default" strategy).
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               chat_template=CHAT_TEMPLATE, patch_size=4,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
