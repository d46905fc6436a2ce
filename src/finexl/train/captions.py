"""Captions for training the mini encoder: a subject, then graded visual qualities.

A caption follows finexl's default composition template, ``"{prompt}, {concept}"``: the
subject comes first ("a cat under a blue sky"), then zero to three qualities, each a
synonym chosen at random with an adverb keyed to the strength the transform was applied
at ("slightly sepia", "sepia", "very sepia"). Two qualities are sometimes joined with
"and", the form the linearity check composes. Strength bands: below 0.3 "slightly" and
its kin, 0.3-0.65 no adverb (so the bare word FineXL asks about means a middle strength),
above 0.65 "very" and its kin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from finexl.imaging import scenes
from finexl.imaging.transforms import QUALITIES

WEAK_ADVERBS = ("slightly", "a little", "a bit", "mildly", "faintly")
STRONG_ADVERBS = ("very", "strongly", "heavily", "extremely")
WEAK_BELOW = 0.3
STRONG_FROM = 0.65
PROMPT_PREFIXES = ("", "", "a photo of ", "a picture of ", "an image of ")
# Added to a caption with no change to the image: adding words must not move it by itself.
NEUTRAL_SUFFIXES = ("a photo", "an image", "a picture", "photograph", "image")

# Every word the scene generator can put in a caption (checked by tests against samples).
SCENE_WORDS = (
    tuple(scenes.COLOURS)
    + ("a", "an", "the", "and", "on", "in", "of", "at", "under", "with", "background", "table",
       "sky", "sunset", "night", "ball", "circle", "square", "triangle", "star", "ring",
       "house", "tree", "sun", "moon", "cat", "cup", "coffee", "rocket", "motorcycle", "car",
       "flower", "boat", "fish", "mountain", "person", "shirt", "brick", "wall", "grass",
       "gravel")
)


def adverb_for(strength: float, rng: np.random.Generator) -> str:
    """An adverb for ``strength``: weak, none, or strong (see the module docstring)."""
    if strength < WEAK_BELOW:
        return WEAK_ADVERBS[int(rng.integers(len(WEAK_ADVERBS)))]
    if strength >= STRONG_FROM:
        return STRONG_ADVERBS[int(rng.integers(len(STRONG_ADVERBS)))]
    return ""


def quality_phrase(name: str, strength: float, rng: np.random.Generator) -> str:
    """A synonym of quality ``name`` with the adverb its strength calls for."""
    synonyms = QUALITIES[name].synonyms
    phrase = synonyms[int(rng.integers(len(synonyms)))]
    adverb = adverb_for(strength, rng)
    return f"{adverb} {phrase}" if adverb else phrase


def compose_caption(
    subject: str, qualities: Sequence[tuple[str, float]], rng: np.random.Generator
) -> str:
    """``subject`` followed by the qualities, e.g. "a cat, slightly sepia and very blurry"."""
    phrases = [quality_phrase(name, strength, rng) for name, strength in qualities]
    if not phrases:
        return subject
    if len(phrases) >= 2 and rng.random() < 0.4:
        joined = ", ".join(phrases[:-2] + [f"{phrases[-2]} and {phrases[-1]}"])
    else:
        joined = ", ".join(phrases)
    return f"{subject}, {joined}"


def neutral_caption(subject: str, rng: np.random.Generator) -> str:
    """``subject`` with a suffix that names no visual quality."""
    return f"{subject}, {NEUTRAL_SUFFIXES[int(rng.integers(len(NEUTRAL_SUFFIXES)))]}"


def with_prefix(subject: str, rng: np.random.Generator) -> str:
    """``subject`` as a prompt: bare, or after "a photo of" and its kin."""
    return PROMPT_PREFIXES[int(rng.integers(len(PROMPT_PREFIXES)))] + subject


def words_of(texts: Iterable[str]) -> set[str]:
    """Lower-case words of ``texts`` (letters only, as the tokenizer splits them)."""
    import re

    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"[a-z]+", text.lower()))
    return words


def caption_vocabulary(extra_captions: Iterable[str] = ()) -> list[str]:
    """Every word a training caption can contain, sorted (the encoder's known words)."""
    texts = list(extra_captions) + list(SCENE_WORDS) + list(WEAK_ADVERBS) + list(STRONG_ADVERBS)
    texts += list(PROMPT_PREFIXES) + list(NEUTRAL_SUFFIXES)
    for quality in QUALITIES.values():
        texts += list(quality.synonyms)
    return sorted(words_of(texts))
