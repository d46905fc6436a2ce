"""Simulated users ("agents"): a few liked and disliked attributes, images that show them.

An agent likes 1-3 attributes (at least one style) and dislikes 1-2 (at least one style),
with no contradiction (:func:`finexl.prefgen.vocabulary.compatible`: nor a liked style that
draws a disliked one, as sepia draws warm). Its **liked images**
are pool images that show every liked content attribute and no disliked one, with every
liked style applied; **disliked images** the other way round. One image in four also gets
a *distractor* style the agent neither likes nor dislikes, so what an agent likes is what
its liked images share, not everything they show.

**Splits.** A fixed set of style pairs (:func:`held_out_pairs`, about one in six of the
compatible pairs, each style in at most two) is *held out*: no training or probing agent
likes both styles of such a pair or dislikes both; every held-out agent likes (at least)
one held-out pair. Training and probing agents come from the same distribution (different
agents); held-out agents are the only ones with these combinations, so every reported
figure on them is on combinations training never showed.

Agents are cheap: :func:`sample_agent` is a few random choices and :func:`render_agent`
draws images from the pool in memory (a pool image plus transforms), so training can use
tens of thousands of agents. :func:`write_agents` writes some to disk as ``users.jsonl`` +
PNGs (:mod:`finexl.prefgen.users`), resumably.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finexl.errors import FinexlError
from finexl.prefgen import vocabulary as vocab
from finexl.prefgen.pool import Pool
from finexl.progress import track

AGENTS_FILE = "agents.json"
SPLIT_FRACTIONS = {"train": 0.8, "probe": 0.1, "heldout": 0.1}
DISTRACTOR_RATE = 0.25
MIN_POOL_MATCHES = 4  # a content combination needs this many pool images to be used


@dataclass(frozen=True)
class Agent:
    """A simulated user: what it likes and dislikes, and which split it belongs to."""

    user_id: str
    liked: tuple[str, ...]
    disliked: tuple[str, ...]
    split: str
    seed: int

    def content(self, which: str) -> list[str]:
        names = self.liked if which == "liked" else self.disliked
        return [n for n in names if vocab.get(n).kind == vocab.CONTENT]

    def styles(self, which: str) -> list[str]:
        names = self.liked if which == "liked" else self.disliked
        return [n for n in names if vocab.get(n).kind == vocab.STYLE]


@dataclass
class RenderedImage:
    """One agent image: float pixels ``(h, w, 3)`` in [0, 1] and how it was made."""

    pixels: np.ndarray
    pool_index: int
    styles: list[str]
    strengths: list[float] = field(default_factory=list)


def held_out_pairs(seed: int = 0, fraction: float = 1 / 6) -> list[tuple[str, str]]:
    """The style pairs only held-out agents have (sorted pairs, reproducible from ``seed``)."""
    styles = vocab.names(vocab.STYLE)
    pairs = [p for p in itertools.combinations(styles, 2) if not vocab.contradicts(*p)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    wanted = max(1, round(fraction * len(pairs)))
    chosen, uses = [], dict.fromkeys(styles, 0)
    for index in order:
        a, b = pairs[int(index)]
        if uses[a] < 2 and uses[b] < 2:
            chosen.append(tuple(sorted((a, b))))
            uses[a] += 1
            uses[b] += 1
        if len(chosen) == wanted:
            break
    return sorted(chosen)


def has_pair(names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> bool:
    present = set(names)
    return any(a in present and b in present for a, b in pairs)


class AgentSampler:
    """Draws agents of one split that the pool can illustrate.

    Parameters
    ----------
    pool
        The base images; content combinations with fewer than ``MIN_POOL_MATCHES`` usable
        images are never drawn.
    held_out
        The held-out style pairs (:func:`held_out_pairs`).
    vocabulary
        ``"tiny"`` (object colour, background, size, styles) or ``"real"``, which adds the
        media and settings of :data:`finexl.prefgen.vocabulary.REAL_ATTRIBUTES` (for pools a
        real model drew; on a tiny pool nothing shows them, so nothing changes).
    """

    def __init__(self, pool: Pool, held_out: Sequence[tuple[str, str]], *,
                 vocabulary: str = "tiny") -> None:
        self.pool = pool
        self.held_out = [tuple(p) for p in held_out]
        self.usable = pool.usable()
        self.records = pool.records
        self.styles = vocab.names(vocab.STYLE)
        self._match_cache: dict[tuple, np.ndarray] = {}
        self.content = [n for n in vocab.names(vocab.CONTENT, vocabulary)
                        if self.matches([n], []).size >= MIN_POOL_MATCHES]

    def matches(self, shown: Sequence[str], hidden: Sequence[str]) -> np.ndarray:
        """Usable pool indices showing every content attribute in ``shown`` and none in ``hidden``."""
        key = (tuple(sorted(shown)), tuple(sorted(hidden)))
        if key not in self._match_cache:
            keep = [i for i in self.usable
                    if all(vocab.shows(a, self.records[i]) for a in shown)
                    and not any(vocab.shows(a, self.records[i]) for a in hidden)]
            self._match_cache[key] = np.array(keep, np.int64)
        return self._match_cache[key]

    def _styles(self, rng: np.random.Generator, k: int, avoid: Sequence[str]) -> list[str] | None:
        chosen: list[str] = []
        options = [s for s in self.styles if s not in avoid]
        for _ in range(k):
            options = [s for s in options if s not in chosen
                       and not any(vocab.contradicts(s, c) for c in chosen)]
            if not options:
                return None
            chosen.append(options[int(rng.integers(len(options)))])
        return chosen

    def sample(self, rng: np.random.Generator, split: str, user_id: str) -> Agent:
        """One agent of ``split`` (``train``, ``probe`` or ``heldout``)."""
        for _ in range(1000):
            if split == "heldout":
                pair = self.held_out[int(rng.integers(len(self.held_out)))]
                liked = list(pair)
            else:
                liked = self._styles(rng, 1 + int(rng.random() < 0.5), ()) or []
            if rng.random() < 0.5:
                options = [c for c in self.content if vocab.compatible(liked + [c])]
                liked.append(options[int(rng.integers(len(options)))])
            if len(liked) > 3:
                continue
            disliked = self._styles(rng, 1, liked) or []
            extra = rng.random()
            if extra < 0.3:
                options = [c for c in self.content if vocab.compatible(liked, disliked + [c])]
                if options:
                    disliked.append(options[int(rng.integers(len(options)))])
            elif extra < 0.5:
                more = self._styles(rng, 1, liked + disliked)
                if more:
                    disliked += more
            if not vocab.compatible(liked, disliked):
                continue
            liked_styles = [n for n in liked if vocab.get(n).kind == vocab.STYLE]
            disliked_styles = [n for n in disliked if vocab.get(n).kind == vocab.STYLE]
            if split != "heldout" and (has_pair(liked_styles, self.held_out)
                                       or has_pair(disliked_styles, self.held_out)):
                continue
            agent = Agent(user_id, tuple(liked), tuple(disliked), split,
                          int(rng.integers(2**31)))
            if (self.matches(agent.content("liked"), agent.content("disliked")).size
                    < MIN_POOL_MATCHES or self.matches(agent.content("disliked"),
                                                       agent.content("liked")).size
                    < MIN_POOL_MATCHES):
                continue
            return agent
        raise FinexlError("the image pool is too small to illustrate the agents' attributes;"
                          " make a larger pool")


def render_image(pool: Pool, index: int, styles: Sequence[str],
                 rng: np.random.Generator) -> RenderedImage:
    """Pool image ``index`` with ``styles`` applied (strengths drawn from their ranges)."""
    strengths = [float(rng.uniform(*vocab.get(s).strength)) for s in styles]
    pixels = vocab.apply_styles(pool.images[index], list(styles), rng, strengths)
    return RenderedImage(pixels, int(index), list(styles), strengths)


def image_for(sampler: AgentSampler, agent: Agent, which: str,
              rng: np.random.Generator) -> RenderedImage:
    """One image an agent likes (``which="liked"``) or dislikes (``"disliked"``)."""
    other = "disliked" if which == "liked" else "liked"
    candidates = sampler.matches(agent.content(which), agent.content(other))
    index = int(candidates[int(rng.integers(len(candidates)))])
    styles = agent.styles(which)
    if rng.random() < DISTRACTOR_RATE:
        avoid = set(agent.liked) | set(agent.disliked)
        # A distractor never draws a style of the other side, alone or together with a
        # style of this side: a liked image showing a disliked style would teach the
        # opposite of the user's taste.
        drawn = vocab.drawn_by(styles)
        options = [s for s in sampler.styles if s not in avoid
                   and not any(vocab.contradicts(s, t) for t in styles)
                   and not any(vocab.contradicts(s, c) for c in agent.content(which))
                   and not (vocab.drawn_by(styles + [s]) - drawn) & set(agent.styles(other))]
        if options:
            styles = styles + [options[int(rng.integers(len(options)))]]
    return render_image(sampler.pool, index, styles, rng)


def render_agent(sampler: AgentSampler, agent: Agent, n_liked: int, n_disliked: int,
                 rng: np.random.Generator | None = None
                 ) -> tuple[list[RenderedImage], list[RenderedImage]]:
    """``n_liked`` liked and ``n_disliked`` disliked images of ``agent``, in memory.

    Without ``rng`` the images depend only on the agent's seed (what ``write_agents``
    writes); pass another generator for a fresh "session" of the same agent.
    """
    rng = rng if rng is not None else np.random.default_rng(agent.seed)
    liked = [image_for(sampler, agent, "liked", rng) for _ in range(n_liked)]
    disliked = [image_for(sampler, agent, "disliked", rng) for _ in range(n_disliked)]
    return liked, disliked


def split_of(index: int, seed: int) -> str:
    """The split of the ``index``-th agent (a fixed pseudo-random assignment)."""
    value = np.random.default_rng([seed, index, 7]).random()
    if value < SPLIT_FRACTIONS["train"]:
        return "train"
    return "probe" if value < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["probe"] else "heldout"


def agent_at(sampler: AgentSampler, index: int, seed: int, split: str | None = None) -> Agent:
    """The ``index``-th agent of a population (reproducible from ``seed`` and ``index``)."""
    split = split or split_of(index, seed)
    rng = np.random.default_rng([seed, index])
    return sampler.sample(rng, split, f"u{index:06d}")


def _png(pixels: np.ndarray) -> bytes:
    from finexl.imaging.transforms import to_image

    buffer = io.BytesIO()
    to_image(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def agents_config(n: int, seed: int, n_liked: int, n_disliked: int,
                  held_out: Sequence[tuple[str, str]], pool_dir: str,
                  vocabulary: str = "tiny") -> dict[str, Any]:
    config = {"n": n, "seed": seed, "n_liked": n_liked, "n_disliked": n_disliked,
              "held_out_pairs": [list(p) for p in held_out], "pool": pool_dir,
              "split_fractions": SPLIT_FRACTIONS, "distractor_rate": DISTRACTOR_RATE}
    if vocabulary != "tiny":  # tiny folders keep the settings they were written with
        config["vocabulary"] = vocabulary
    return config


def write_agents(out_dir: str | Path, pool: Pool, pool_dir: str, n: int, *, seed: int = 0,
                 n_liked: int = 8, n_disliked: int = 8, vocabulary: str = "tiny",
                 progress: bool = False) -> Path:
    """Write ``n`` agents as ``users.jsonl`` + PNGs in ``out_dir`` (resumable).

    ``vocabulary="real"`` lets agents like and dislike a real pool's media and settings too
    (:class:`AgentSampler`).

    Users are appended to ``users.partial.jsonl`` as they are finished (each image written
    atomically first); a rerun skips finished users and ``users.jsonl`` appears, by a
    rename, only when all ``n`` are done. ``agents.json`` records the settings; rerunning
    with other settings is an error.

    Returns
    -------
    Path
        ``out_dir/users.jsonl``.
    """
    from finexl.store.files import write_atomic
    from finexl.prefgen.users import USERS_FILE

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    held_out = held_out_pairs(seed)
    config = agents_config(n, seed, n_liked, n_disliked, held_out, pool_dir, vocabulary)
    config_path = out / AGENTS_FILE
    if config_path.is_file():
        existing = json.loads(config_path.read_text(encoding="utf-8"))
        if existing != config:
            raise FinexlError(f"{out} holds agents made with other settings ({config_path});"
                              f" use another folder or the same settings")
    else:
        write_atomic(config_path, json.dumps(config, indent=1).encode())
    final = out / USERS_FILE
    if final.is_file():
        return final
    partial = out / "users.partial.jsonl"
    done = _finished_lines(partial)
    sampler = AgentSampler(pool, held_out, vocabulary=vocabulary)
    with partial.open("a", encoding="utf-8") as handle:
        for index in track(range(len(done), n), total=n - len(done), description="writing agents",
                           enabled=progress):
            agent = agent_at(sampler, index, seed)
            liked, disliked = render_agent(sampler, agent, n_liked, n_disliked)
            line = {"user_id": agent.user_id, "liked": [], "disliked": [],
                    "liked_attributes": list(agent.liked),
                    "disliked_attributes": list(agent.disliked),
                    "prompts": {}, "split": agent.split, "sources": {}}
            for which, images in (("liked", liked), ("disliked", disliked)):
                for k, image in enumerate(images):
                    relative = f"img/{agent.user_id}/{which}_{k:02d}.png"
                    write_atomic(out / relative, _png(image.pixels))
                    line[which].append(relative)
                    record = pool.records[image.pool_index]
                    line["prompts"][relative] = record["prompt"]
                    line["sources"][relative] = {
                        "pool_index": image.pool_index, "seed": record["seed"],
                        "styles": image.styles,
                        "strengths": [round(s, 4) for s in image.strengths]}
            handle.write(json.dumps(line) + "\n")
            handle.flush()
    partial.replace(final)
    return final


def _finished_lines(partial: Path) -> list[str]:
    """Complete lines of an interrupted run; a torn last line is cut off the file."""
    if not partial.is_file():
        return []
    text = partial.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    good = []
    for line in lines:
        if not line.endswith("\n"):
            break
        try:
            json.loads(line)
        except ValueError:
            break
        good.append(line)
    if len(good) != len(lines):
        partial.write_text("".join(good), encoding="utf-8")
    return good
