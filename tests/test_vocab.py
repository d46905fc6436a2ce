"""The vocabulary proposer: shipped data, cheap ranking, one table per encoder."""

from __future__ import annotations

import numpy as np
from toy_encoder import DIRECTIONS, ToyEncoder

from finexl.concepts.base import ProposalContext
from finexl.concepts.vocab import (
    VocabProposer,
    embed_vocabulary,
    load_vocabulary,
    rank_by_alignment,
)
from finexl.encoders.base import CachedEncoder
from finexl.store.cache import Store


def test_shipped_vocabulary_has_several_hundred_distinct_entries():
    entries = load_vocabulary()
    assert len(entries) >= 300
    assert len({e.concept.lower() for e in entries}) == len(entries)
    assert {"sepia", "pixelated", "vignette", "halftone", "watercolor"} <= {e.concept for e in entries}


def test_rank_by_alignment_orders_by_cosine_and_handles_zero_rows():
    table = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.0, 0.0], [-1.0, 0.0]])
    top, scores = rank_by_alignment(table, np.array([1.0, 0.1]), 3)
    assert top.tolist() == [0, 2, 1]
    assert np.all(np.diff(scores) <= 0)


def test_darkening_puts_dark_words_in_the_short_list(tmp_path):
    vocabulary = tmp_path / "vocab.txt"
    words = ["dark", "dim", "bright", "vivid", "muted", "warm", "blurry", "green"]
    vocabulary.write_text("\n".join(f"x: {w}" for w in words) + "\nx: unknown thing\n")
    v_div = -DIRECTIONS["brightness"] * 0.2
    context = ProposalContext(image_pairs=(), prompts=["a cat"], v_div=v_div, encoder=ToyEncoder())
    proposal = VocabProposer(top_k=2, vocabulary=vocabulary).propose(context)
    assert {c.concept for c in proposal.candidates} == {"dark", "dim"}
    assert all(c.source == "vocab" for c in proposal.candidates)
    assert "not ranked" in proposal.notes[0] and "'unknown thing'" in proposal.notes[0]


def test_vocabulary_table_is_embedded_once_per_encoder(tmp_path):
    toy = ToyEncoder()
    concepts = [e.concept for e in load_vocabulary()]
    first = embed_vocabulary(CachedEncoder(toy, Store(tmp_path)), concepts, "{prompt}, {concept}")
    calls = toy.text_calls
    second = embed_vocabulary(CachedEncoder(toy, Store(tmp_path)), concepts, "{prompt}, {concept}")
    assert toy.text_calls == calls
    np.testing.assert_array_equal(first, second)
    assert first.shape == (len(concepts), toy.dim)
