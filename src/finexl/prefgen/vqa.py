"""Preference VQA: questions about a user, their answers, batches, training and accuracy.

Six question forms (``extractor.FORMS``), each with a text template so a real VLM can be
asked the same thing (:data:`TEMPLATES`):

- ``likes`` / ``dislikes``: "Does this user like sepia?" -> yes / no. Half the questions
  name an attribute the user has (yes), a quarter one from the other list (a hard no), a
  quarter any other attribute.
- ``which``: two new images A and B -> which would the user prefer. Pairs are liked-type
  vs disliked-type (half), liked-type vs neutral or neutral vs disliked-type (a quarter
  each). A *liked-type* image shows the user's liked attributes (a new image, never one of
  the references); *neutral* has a random style set with nothing the user likes or dislikes.
- ``score``: one new image -> + (liked-type) or - (disliked-type), the ViPer-style form.
- ``list_liked`` / ``list_disliked``: name the attributes -> one yes/no per vocabulary word.

An *episode* is one user's references (features of liked and disliked images) plus
candidate images of the three types; :class:`BankEpisodes` draws them from the image bank
(training), :func:`rendered_episodes` renders and embeds fresh ones (evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.agents import Agent, AgentSampler, agent_at, image_for, render_image
from finexl.prefgen.extractor import (
    BINARY_FORMS,
    DISLIKED_IMAGE,
    DISLIKES,
    FORMS,
    LIKED_IMAGE,
    LIKES,
    LIST_DISLIKED,
    LIST_FORMS,
    LIST_LIKED,
    SCORE,
    WHICH,
    TinyPreferenceExtractor,
)
from finexl.prefgen.features import ImageBank, ImageTower

TEMPLATES = {
    "likes": "Does this user like {attribute}? Answer yes or no.",
    "dislikes": "Does this user dislike {attribute}? Answer yes or no.",
    "which": "Which of the two new images would this user prefer? Answer A or B.",
    "score": "Would this user like the new image? Answer + or -.",
    "list_liked": "What does this user like? List the attributes.",
    "list_disliked": "What does this user dislike? List the attributes.",
}
PROFILE_FORM = LIST_LIKED  # the question whose read-out states give e_core and e_sem


@dataclass
class Episode:
    """One user's reference features and new candidate images, by type."""

    agent: Agent
    liked: np.ndarray  # (n_liked, F)
    disliked: np.ndarray  # (n_disliked, F)
    liked_type: np.ndarray  # (k, F) new images the user would like
    disliked_type: np.ndarray
    neutral: np.ndarray


@dataclass
class Batch:
    """Model inputs and targets for a batch of questions (every episode the same size)."""

    features: torch.Tensor
    kinds: torch.Tensor
    form: torch.Tensor
    attribute: torch.Tensor
    candidates: torch.Tensor
    binary_target: torch.Tensor  # (b,), NaN for list forms
    list_target: torch.Tensor  # (b, A), NaN rows for binary forms
    agents: list[Agent] = field(default_factory=list)


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def question_for(episode: Episode, form: int, attributes: Sequence[str],
                 rng: np.random.Generator, feature_dim: int):
    """``(attribute index, candidates (2, F), binary target, list target)`` of one question."""
    agent = episode.agent
    nan_candidates = np.full((2, feature_dim), np.nan, np.float32)
    nan_list = np.full(len(attributes), np.nan, np.float32)
    index = {name: i for i, name in enumerate(attributes)}
    if form in (LIKES, DISLIKES):
        own, other = ((agent.liked, agent.disliked) if form == LIKES
                      else (agent.disliked, agent.liked))
        draw = rng.random()
        if draw < 0.5:
            name, answer = _choice(rng, own), 1.0
        elif draw < 0.75:
            name, answer = _choice(rng, other), 0.0
        else:
            rest = [a for a in attributes if a not in own]
            name, answer = _choice(rng, rest), 0.0
        return index[name], nan_candidates, answer, nan_list
    if form == SCORE:
        liked = rng.random() < 0.5
        pool = episode.liked_type if liked else episode.disliked_type
        candidates = nan_candidates.copy()
        candidates[0] = pool[int(rng.integers(len(pool)))]
        return -1, candidates, float(liked), nan_list
    if form == WHICH:
        draw = rng.random()
        if draw < 0.5:
            better, worse = episode.liked_type, episode.disliked_type
        elif draw < 0.75:
            better, worse = episode.liked_type, episode.neutral
        else:
            better, worse = episode.neutral, episode.disliked_type
        a_better = rng.random() < 0.5
        first, second = (better, worse) if a_better else (worse, better)
        candidates = np.stack([first[int(rng.integers(len(first)))],
                               second[int(rng.integers(len(second)))]])
        return -1, candidates, float(a_better), nan_list
    names = agent.liked if form == LIST_LIKED else agent.disliked
    target = np.zeros(len(attributes), np.float32)
    target[[index[n] for n in names]] = 1.0
    return -1, nan_candidates, np.nan, target


def make_batch(episodes: Sequence[Episode], forms: Sequence[int], attributes: Sequence[str],
               rng: np.random.Generator) -> Batch:
    """Stack one question per episode (``forms[i]`` for episode i) into a :class:`Batch`.

    Reference images are shuffled so their order carries nothing; the liked/disliked
    marker does.
    """
    feature_dim = episodes[0].liked.shape[1]
    features, kinds, attrs, cands, binary, lists = [], [], [], [], [], []
    for episode, form in zip(episodes, forms):
        refs = np.concatenate([episode.liked, episode.disliked])
        marks = np.array([LIKED_IMAGE] * len(episode.liked)
                         + [DISLIKED_IMAGE] * len(episode.disliked))
        order = rng.permutation(len(refs))
        features.append(refs[order])
        kinds.append(marks[order])
        attribute, candidates, answer, target = question_for(episode, form, attributes, rng,
                                                             feature_dim)
        attrs.append(attribute)
        cands.append(candidates)
        binary.append(answer)
        lists.append(target)
    return Batch(
        features=torch.from_numpy(np.stack(features)).float(),
        kinds=torch.from_numpy(np.stack(kinds)).long(),
        form=torch.tensor(list(forms), dtype=torch.long),
        attribute=torch.tensor(attrs, dtype=torch.long),
        candidates=torch.from_numpy(np.stack(cands)).float(),
        binary_target=torch.tensor(binary, dtype=torch.float32),
        list_target=torch.from_numpy(np.stack(lists)).float(),
        agents=[e.agent for e in episodes],
    )


def vqa_loss(model: TinyPreferenceExtractor, batch: Batch) -> tuple[torch.Tensor, dict]:
    """Binary cross-entropy on the binary forms plus on the list forms (mean of the two)."""
    out = model(batch.features, batch.kinds, batch.form, batch.attribute, batch.candidates)
    binary = ~torch.isnan(batch.binary_target)
    losses = []
    if binary.any():
        losses.append(torch.nn.functional.binary_cross_entropy_with_logits(
            out.binary[binary], batch.binary_target[binary]))
    listed = ~binary
    if listed.any():
        losses.append(torch.nn.functional.binary_cross_entropy_with_logits(
            out.lists[listed], batch.list_target[listed]) * 4.0)
    loss = torch.stack(losses).mean()
    return loss, {"loss": float(loss.detach())}


class BankEpisodes:
    """Episodes of sampled agents with images from the :class:`ImageBank` (training)."""

    def __init__(self, sampler: AgentSampler, bank: ImageBank) -> None:
        self.sampler = sampler
        self.bank = bank
        records = sampler.pool.records
        # Which pool images show each content attribute, so filtering bank rows is a lookup.
        self._shows = {name: np.array([vocab.shows(name, r) for r in records])
                       for name in vocab.names(vocab.CONTENT)}
        self._typed: dict[tuple, np.ndarray] = {}

    def _rows(self, styles: Sequence[str], shown: Sequence[str], hidden: Sequence[str]
              ) -> np.ndarray:
        rows = self.bank.entries(styles)
        if not len(rows) or (not shown and not hidden):
            return rows
        images = self.bank.pool_index[rows]
        keep = np.ones(len(rows), bool)
        for name in shown:
            keep &= self._shows[name][images]
        for name in hidden:
            keep &= ~self._shows[name][images]
        return rows[keep]

    def typed_rows(self, agent: Agent, which: str, rng: np.random.Generator) -> np.ndarray:
        """Bank rows an agent would put in its ``which`` list: its styles, maybe a distractor."""
        key = (agent.liked, agent.disliked, which)
        if key not in self._typed:
            self._typed[key] = self._typed_rows(agent, which)
        return self._typed[key]

    def _typed_rows(self, agent: Agent, which: str) -> np.ndarray:
        other = "disliked" if which == "liked" else "liked"
        shown, hidden = agent.content(which), agent.content(other)
        styles = agent.styles(which)
        rows = [self._rows(styles, shown, hidden)]
        avoid = set(agent.liked) | set(agent.disliked)
        for extra in self.sampler.styles:
            if extra not in avoid and vocab.compatible(styles + [extra]) and vocab.compatible(
                    shown + styles + [extra]):
                rows.append(self._rows(styles + [extra], shown, hidden))
        return np.concatenate(rows)

    def neutral_rows(self, agent: Agent, rng: np.random.Generator) -> np.ndarray:
        avoid = set(agent.liked) | set(agent.disliked)
        for _ in range(20):
            styles = self.bank.sets[int(rng.integers(len(self.bank.sets)))]
            if not avoid & set(styles):
                rows = self._rows(styles, [], agent.content("liked") + agent.content("disliked"))
                if len(rows):
                    return rows
        return self.bank.entries(())

    def episode(self, agent: Agent, n_liked: int, n_disliked: int,
                rng: np.random.Generator, n_candidates: int = 4) -> Episode | None:
        """An episode, or None when the bank has too few images for this agent."""
        liked_rows = self.typed_rows(agent, "liked", rng)
        disliked_rows = self.typed_rows(agent, "disliked", rng)
        if len(liked_rows) < 3 or len(disliked_rows) < 3:
            return None
        liked = rng.permutation(liked_rows)
        disliked = rng.permutation(disliked_rows)
        # References and candidates are different images when the bank has enough.
        take_l, take_d = np.resize(liked, n_liked + n_candidates), np.resize(disliked,
                                                                            n_disliked + n_candidates)
        neutral = rng.choice(self.neutral_rows(agent, rng), size=n_candidates)
        f = self.bank.features
        return Episode(agent, f[take_l[:n_liked]], f[take_d[:n_disliked]],
                       f[take_l[n_liked:]], f[take_d[n_disliked:]], f[neutral])

    def batch(self, rng: np.random.Generator, size: int, *, split: str = "train",
              n_liked: int | None = None, n_disliked: int | None = None,
              forms: Sequence[int] | None = None) -> Batch:
        """A training batch: ``size`` fresh agents of ``split``, one random question each.

        Reference counts are drawn per batch (liked 2-8, disliked 0-8) unless given, so the
        extractor learns to read any number of images.
        """
        n_liked = n_liked if n_liked is not None else int(rng.integers(2, 9))
        n_disliked = n_disliked if n_disliked is not None else int(rng.integers(0, 9))
        episodes = []
        while len(episodes) < size:
            agent = self.sampler.sample(rng, split, "train")
            episode = self.episode(agent, n_liked, n_disliked, rng)
            if episode is not None:
                episodes.append(episode)
        forms = list(forms) if forms is not None else [int(rng.integers(len(FORMS)))
                                                       for _ in range(size)]
        return make_batch(episodes, forms, vocab.names(), rng)


def rendered_episodes(sampler: AgentSampler, tower: ImageTower, agents: Sequence[Agent],
                      n_liked: int, n_disliked: int, *, seed: int = 0, n_candidates: int = 4,
                      progress: bool = False) -> list[Episode]:
    """Episodes with freshly rendered images (new strengths, grain, pool picks): evaluation."""
    rng = np.random.default_rng(seed)
    images, layout = [], []
    for agent in agents:
        parts = {
            "liked": [image_for(sampler, agent, "liked", rng) for _ in range(n_liked)],
            "disliked": [image_for(sampler, agent, "disliked", rng) for _ in range(n_disliked)],
            "liked_type": [image_for(sampler, agent, "liked", rng) for _ in range(n_candidates)],
            "disliked_type": [image_for(sampler, agent, "disliked", rng)
                              for _ in range(n_candidates)],
            "neutral": [_neutral_image(sampler, agent, rng) for _ in range(n_candidates)],
        }
        layout.append({k: (len(images) + sum(len(p) for p in list(parts.values())[:i]), len(v))
                       for i, (k, v) in enumerate(parts.items())})
        for part in parts.values():
            images.extend(im.pixels for im in part)
    features = tower.features(np.stack(images), progress=progress) if images else None
    episodes = []
    for agent, spans in zip(agents, layout):
        take = {k: features[start:start + n] for k, (start, n) in spans.items()}
        episodes.append(Episode(agent, take["liked"], take["disliked"], take["liked_type"],
                                take["disliked_type"], take["neutral"]))
    return episodes


def _neutral_image(sampler: AgentSampler, agent: Agent, rng: np.random.Generator):
    avoid = set(agent.liked) | set(agent.disliked)
    options = [s for s in sampler.styles if s not in avoid]
    styles = [_choice(rng, options)] if rng.random() < 0.7 else []
    candidates = sampler.matches([], agent.content("liked") + agent.content("disliked"))
    return render_image(sampler.pool, int(_choice(rng, candidates)), styles, rng)


@dataclass
class Accuracy:
    """Held-out answer accuracy per question form.

    Binary forms: share of right answers. List forms: ``exact`` share of users whose
    predicted set (logit > 0) is exactly right, and ``micro_f1`` over attributes.
    """

    per_form: dict[str, float]
    list_exact: dict[str, float]
    list_f1: dict[str, float]
    n_users: int

    def to_dict(self) -> dict:
        return {"binary_accuracy": self.per_form, "list_exact": self.list_exact,
                "list_micro_f1": self.list_f1, "n_users": self.n_users}


@torch.no_grad()
def evaluate(model: TinyPreferenceExtractor, episodes: Sequence[Episode],
             attributes: Sequence[str], *, seed: int = 0, questions_per_form: int = 2
             ) -> Accuracy:
    """Answer accuracy of ``model`` on ``episodes`` (every form asked of every user)."""
    rng = np.random.default_rng(seed)
    model.eval()
    per_form, exact, f1 = {}, {}, {}
    for form in range(len(FORMS)):
        right, total, tp, fp, fn, whole = 0, 0, 0, 0, 0, 0
        for _ in range(questions_per_form if form in BINARY_FORMS else 1):
            batch = make_batch(episodes, [form] * len(episodes), attributes, rng)
            out = model(batch.features, batch.kinds, batch.form, batch.attribute,
                        batch.candidates)
            if form in BINARY_FORMS:
                right += int(((out.binary > 0).float() == batch.binary_target).sum())
                total += len(episodes)
            else:
                predicted = out.lists > 0
                truth = batch.list_target > 0.5
                tp += int((predicted & truth).sum())
                fp += int((predicted & ~truth).sum())
                fn += int((~predicted & truth).sum())
                whole += int((predicted == truth).all(dim=1).sum())
        if form in BINARY_FORMS:
            per_form[FORMS[form]] = right / total
        else:
            exact[FORMS[form]] = whole / len(episodes)
            f1[FORMS[form]] = 2 * tp / max(2 * tp + fp + fn, 1)
    return Accuracy(per_form, exact, f1, len(episodes))


def held_out_agents(sampler: AgentSampler, n: int, seed: int, split: str = "heldout"
                    ) -> list[Agent]:
    """``n`` agents of ``split`` (indices far from any written population's, reproducible)."""
    return [agent_at(sampler, 10_000_000 + i, seed, split) for i in range(n)]


LIST_FORM_NAMES = [FORMS[f] for f in LIST_FORMS]
