"""A word-level tokenizer in CLIP's own format (byte-level BPE with ``</w>`` word ends).

The merges are learnt on the caption vocabulary until every known word is one token, so
``CLIPTokenizer`` reads ``vocab.json`` / ``merges.txt`` / ``tokenizer.json`` exactly as it
reads OpenAI's, and a word outside the vocabulary still tokenizes (into pieces) instead
of failing. Ids 0 and 1 are ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def build_tokenizer(words: Sequence[str]):
    """A ``transformers.CLIPTokenizer`` in which each of ``words`` is a single token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    trainer_model = Tokenizer(models.BPE(unk_token=EOS, end_of_word_suffix="</w>"))
    trainer_model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, min_frequency=0, special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>",
        show_progress=False,
    )
    # Every byte also as a one-character word, so "c</w>" exists for each byte: any text
    # then tokenizes without the unknown token, which in CLIP is the end token and would
    # end the pooled sequence early.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer_model.train_from_iterator(sorted(set(words)) + sorted(alphabet), trainer=trainer)
    state = json.loads(trainer_model.to_str())["model"]
    vocab = state["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=40)
    unsplit = [w for w in list(words) + [",", "."] if len(tokenizer.tokenize(w)) != 1]
    if unsplit:
        raise RuntimeError(f"BPE left {len(unsplit)} words in pieces, e.g. {unsplit[:5]}")
    return tokenizer


def save_tokenizer(tokenizer, out_dir: Path) -> None:
    """Save in transformers' format plus the classic ``vocab.json`` and ``merges.txt``."""
    tokenizer.save_pretrained(out_dir)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (out_dir / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False),
                                        encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                        encoding="utf-8")
