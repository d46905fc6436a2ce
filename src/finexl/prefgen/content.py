"""What a user's images show (object colour, background), and the away text that keeps it out.

The extractor reads styles well and content poorly: its list answers name the right object
colour or background for few users (docs/PREFGEN.md §8, session 8), and the user branch
removes none of a user's disliked content. Content is what the tiny generator's *text*
follows best (colour words 98.9%), so finexl reads content with a small head of its own and
moves generation away from the disliked content through text.

:class:`ContentReader` is one softmax head per slot (object colour, background) on the
PrefGen tower's features, fitted on the image bank (styled pool images whose content the
pool records; a style that hides a slot, sepia or black and white, leaves the row out of
that slot). A profile reads a slot from the *contrast* of its two sides: the mean class
probability over the disliked images minus that over the liked ones (and the reverse for
likes). A user whose disliked images all show a red object has a high red share there and
a low one among the liked images; a user with no colour dislike has disliked images of
random colours, so no colour stands out. A word is kept when its contrast reaches
``threshold`` (chosen on training agents by the best F1 of the dislike read; the held-out
figures are in the content stage's report).

:func:`away_prompt` turns a profile's disliked content into the text of the away half of
drift-free user guidance: ``"a star"`` with a disliked red object becomes ``"red a star"``,
so each step moves by ``λ · (ε(prompt, e_u) − ε("red a star", anti))``; λ = 0 stays the base
model exactly. A slot the prompt names is left alone: the prompt wins over a dislike.

Arrays in, arrays out; saving and loading use safetensors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finexl.prefgen import vocabulary as vocab

CONTENT_FILE = "content_reader.safetensors"
SLOTS = ("colour", "background")


def slot_names(slot: str) -> list[str]:
    """The tiny vocabulary's content attributes of one slot, in vocabulary order."""
    return [n for n in vocab.names(vocab.CONTENT) if vocab.get(n).slot == slot]


@dataclass
class ContentReader:
    """One softmax head per slot: features ``(n, f)`` -> class probabilities ``(n, k)``."""

    names: dict[str, list[str]]  # slot -> the attribute of each class
    weights: dict[str, np.ndarray]  # slot -> (k, f)
    bias: dict[str, np.ndarray]  # slot -> (k,)
    threshold: float

    def probabilities(self, features: np.ndarray, slot: str) -> np.ndarray:
        logits = np.asarray(features, np.float64) @ self.weights[slot].T.astype(np.float64)
        logits = logits + self.bias[slot]
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)

    def contrast(self, features: np.ndarray, others: np.ndarray, slot: str) -> np.ndarray:
        """Mean class probability over ``features`` minus that over ``others`` (zeros when
        ``others`` is empty), ``(k,)``."""
        mean = self.probabilities(features, slot).mean(axis=0)
        if len(others):
            mean = mean - self.probabilities(others, slot).mean(axis=0)
        return mean

    def read(self, liked: np.ndarray, disliked: np.ndarray, threshold: float | None = None
             ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """``(likes, dislikes)``: per slot, the class whose contrast is largest, with it, when
        it reaches ``threshold`` (the reader's own by default). Without disliked images no
        dislike is read and a like is read against nothing, so it must stand out alone."""
        threshold = self.threshold if threshold is None else threshold
        likes, dislikes = [], []
        for slot in self.names:
            sides = [(likes, liked, disliked)] + ([(dislikes, disliked, liked)]
                                                  if len(disliked) else [])
            for out, these, others in sides:
                if not len(these):
                    continue
                contrast = self.contrast(these, others, slot)
                best = int(np.argmax(contrast))
                if contrast[best] >= threshold:
                    out.append((self.names[slot][best], float(contrast[best])))
        return likes, dislikes

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        tensors = {}
        for slot in self.names:
            tensors[f"{slot}.weight"] = np.ascontiguousarray(self.weights[slot], np.float32)
            tensors[f"{slot}.bias"] = np.ascontiguousarray(self.bias[slot], np.float32)
        save_file(tensors, str(path), metadata={"names": json.dumps(self.names),
                                                "threshold": repr(float(self.threshold))})

    @classmethod
    def load(cls, path: str | Path) -> ContentReader:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata()
            names = json.loads(meta["names"])
            weights = {s: handle.get_tensor(f"{s}.weight") for s in names}
            bias = {s: handle.get_tensor(f"{s}.bias") for s in names}
        return cls(names, weights, bias, float(meta["threshold"]))


def bank_labels(records: Sequence[dict], style_sets: Sequence[Sequence[str]]
                ) -> dict[str, list[str | None]]:
    """Per slot, the content attribute each bank row shows, or None where one of its styles
    hides that attribute (sepia and black and white hide every colour)."""
    labels: dict[str, list[str | None]] = {}
    for slot in SLOTS:
        names = slot_names(slot)
        column = []
        for record, styles in zip(records, style_sets):
            shown = [n for n in names if vocab.shows(n, record)]
            name = shown[0] if len(shown) == 1 else None
            if name is not None and any(vocab.contradicts(s, name) for s in styles):
                name = None
            column.append(name)
        labels[slot] = column
    return labels


def fit_content_reader(features: np.ndarray, labels: dict[str, Sequence[str | None]], *,
                       threshold: float = 0.3, c: float = 10.0, seed: int = 0) -> ContentReader:
    """Multinomial logistic regression per slot on the rows with a label (scikit-learn,
    the ``train`` extra)."""
    from sklearn.linear_model import LogisticRegression

    names, weights, bias = {}, {}, {}
    for slot, column in labels.items():
        keep = np.array([n is not None for n in column])
        y = np.array([n for n in column if n is not None])
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed)
        model.fit(np.asarray(features, np.float64)[keep], y)
        names[slot] = [str(n) for n in model.classes_]
        weights[slot] = model.coef_.astype(np.float32)
        bias[slot] = model.intercept_.astype(np.float32)
    return ContentReader(names, weights, bias, threshold)


@dataclass(frozen=True)
class ReadScore:
    """How well reads match the truth: true, false and missed words."""

    true: int
    false: int
    missed: int

    @property
    def precision(self) -> float:
        return self.true / max(self.true + self.false, 1)

    @property
    def recall(self) -> float:
        return self.true / max(self.true + self.missed, 1)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"true": self.true, "false": self.false, "missed": self.missed,
                "precision": round(self.precision, 4), "recall": round(self.recall, 4)}


def score_reads(reads: Iterable[Iterable[str]], truths: Iterable[Iterable[str]]) -> ReadScore:
    """Compare read words with each user's true content attributes (styles ignored)."""
    true = false = missed = 0
    for read, truth in zip(reads, truths):
        got = set(read)
        wanted = {t for t in truth if vocab.is_content(t)}
        true += len(got & wanted)
        false += len(got - wanted)
        missed += len(wanted - got)
    return ReadScore(true, false, missed)


def choose_threshold(reader: ContentReader, users: Sequence[tuple[np.ndarray, np.ndarray]],
                     disliked_truths: Sequence[Sequence[str]],
                     grid: Sequence[float] = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
                     ) -> tuple[float, dict[str, dict[str, float]]]:
    """The threshold of ``grid`` with the best F1 of the dislike read on ``users`` ((liked,
    disliked) features), and every threshold's score."""
    scores = {}
    for threshold in grid:
        reads = [[w for w, _ in reader.read(liked, disliked, threshold)[1]]
                 for liked, disliked in users]
        scores[threshold] = score_reads(reads, disliked_truths)
    best = max(grid, key=lambda t: (scores[t].f1, -t))
    return best, {repr(t): s.to_dict() for t, s in scores.items()}


# --------------------------------------------------------------------------------------
# Away text


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def names_slot(prompt: str, slot: str) -> bool:
    """Whether ``prompt`` fixes ``slot``: a background phrase or setting for the background,
    a colour word that does not name the background for the object colour."""
    from finexl.generate.tiny_data import COLOURS, SETTINGS

    text = prompt.lower()
    named_background = ("background" in _words(text)
                        or any(phrase in text for phrase in SETTINGS.values()))
    if slot == "background":
        return named_background
    # "a star on a red background": red names the background, not the object.
    object_part = re.split(r"\bon an? \w+ background\b", text)[0]
    return any(word in COLOURS or word == "grey" for word in _words(object_part))


def away_phrase(attribute: str) -> tuple[str, str]:
    """``(where, text)`` of one disliked content attribute in the away text: a colour word
    before the prompt, a background phrase after it."""
    from finexl.generate.tiny_data import SETTINGS, article

    a = vocab.get(attribute)
    if a.slot == "colour":
        return "before", str(a.value)
    if a.value in SETTINGS:
        return "after", SETTINGS[a.value]
    return "after", f"on {article(str(a.value))} background"


def away_prompt(prompt: str, dislikes: Iterable[str]) -> str:
    """The away half's text for ``prompt`` and a profile's disliked words (only content words
    of a slot the prompt leaves free count); ``prompt`` itself when none does."""
    before, after = [], []
    for name in dislikes:
        if not vocab.is_content(name):
            continue
        slot = vocab.get(name).slot
        if slot not in SLOTS or names_slot(prompt, slot):
            continue
        where, text = away_phrase(name)
        (before if where == "before" else after).append(text)
    return " ".join([*before, prompt, *after])
