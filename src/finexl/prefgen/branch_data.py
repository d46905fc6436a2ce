"""Training data for the user branch: what a user's generator should draw, for many prompts.

A branch trained only on a user's liked images learns their content as much as their style,
and then moves the prompt's content (the prototype's object mask overlap with the base image
was 0.52, PREFGEN.md §6). So a training image here is a pool image *for any prompt*,
re-rendered in the user's liked styles: the prompt fixes what is drawn, the user fixes how.
Liked content (an object colour, a background, a size) can only show where the prompt leaves
it open, so with ``free_content_rate`` a row draws a pool image that shows the user's liked
content and none of their disliked content, with a prompt that leaves the slots of both out
("a star on grass" for a user who likes red objects; "a big star" for one who dislikes
night backgrounds): the branch learns to fill open slots with the user's taste, and to keep
what they dislike out of them.

``branch_batches`` returns a callable ``data(start)`` as ``train_branch`` takes it: micro-
batch k depends only on (seed, k), so a resumed run reads what an uninterrupted one would.

``fixed_user_embedding`` is the prototype's extractor-free ``e_u`` (mean image embedding of
the liked images minus the disliked ones, then the liked mean): a stand-in until the VQA
extractor's profiles exist, and the "no extractor" baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finexl.generate.tiny_data import SETTINGS, SHAPES, article

Batch = tuple[Any, Any, list[str]]


def free_prompt(record: Mapping[str, Any], open_slots: Sequence[str]) -> str:
    """The pool prompt of ``record`` with the ``open_slots`` (colour, background, size) left
    out, in the tiny model's caption grammar ("a big red star on a blue background")."""
    words = str(record["prompt"]).split()
    shape = next((w for w in words if w in SHAPES), None)
    if shape is None:  # not a pool caption; leave it as it is
        return str(record["prompt"])
    size = record.get("prompt_size")
    colour = record.get("prompt_colour")
    noun = " ".join(w for w, slot in ((size, "size"), (colour, "colour"), (shape, None))
                    if w and slot not in open_slots)
    text = article(noun)
    background = record.get("prompt_background")
    if background and "background" not in open_slots:
        text += " " + (SETTINGS[background] if background in SETTINGS
                       else f"on {article(background)} background")
    return text


@dataclass(frozen=True)
class TargetPick:
    """Best-of-``n`` choice of a row's pool image by the user's own examples.

    ``features`` ``(n_pool, d)``: the image tower's features of every pool image (unstyled);
    ``directions``: ``user_id -> (d,)``, the mean feature of the user's liked reference
    images minus that of their disliked ones (users without disliked images are left out and
    draw one image as before). Of ``n`` pool images drawn for a row, the one furthest along
    the user's direction is drawn in their liked styles, so the base model's own looks that
    the user's disliked images share (a naturally vivid scene for a user who dislikes vivid)
    are rarer in what the branch learns to draw. No judge is read: only the user's images.
    """

    features: np.ndarray
    directions: Mapping[str, np.ndarray]
    n: int = 4


def draw_index(options, rng: np.random.Generator, pick: TargetPick | None = None,
               user_id: str | None = None) -> int:
    """A pool index from ``options``: one drawn at random, or with ``pick`` (and a direction
    for ``user_id``) the best of ``pick.n`` drawn, by their features along that direction.
    Without a pick the draw is the one earlier versions made, so their data is unchanged."""
    direction = None if pick is None else pick.directions.get(user_id)
    if direction is None or pick.n <= 1:
        return int(options[int(rng.integers(len(options)))])
    drawn = np.asarray(options)[rng.integers(len(options), size=pick.n)]
    return int(drawn[int(np.argmax(pick.features[drawn] @ direction))])


def training_example(sampler, agent, rng: np.random.Generator, *,
                     free_content_rate: float = 0.5,
                     pick: TargetPick | None = None) -> tuple[np.ndarray, str]:
    """One image the branch should draw for ``agent``, and its prompt.

    With probability ``free_content_rate`` (users with liked or disliked content only): a
    pool image showing the liked content and none of the disliked content, with a prompt
    that leaves those slots open. Otherwise: any usable pool image with its full prompt.
    Either way rendered in the agent's liked styles. ``pick``: choose that pool image as
    the best of several by the user's direction (:class:`TargetPick`).

    Returns
    -------
    pixels, prompt
        float32 ``(h, w, 3)`` in [0, 1], and the prompt.
    """
    from finexl.prefgen import vocabulary as vocab
    from finexl.prefgen.agents import render_image

    def draw(options) -> int:
        return draw_index(options, rng, pick, agent.user_id)

    liked_content, disliked_content = agent.content("liked"), agent.content("disliked")
    candidates = (sampler.matches(liked_content, disliked_content)
                  if liked_content or disliked_content else ())
    if len(candidates) and rng.random() < free_content_rate:
        index = draw(candidates)
        prompt = free_prompt(sampler.records[index], [
            vocab.get(name).slot for name in liked_content + disliked_content])
    else:
        index = draw(sampler.usable)
        prompt = str(sampler.records[index]["prompt"])
    image = render_image(sampler.pool, index, agent.styles("liked"), rng)
    return np.asarray(image.pixels, np.float32), prompt


def branch_batches(sampler, agents: Sequence, embeddings: Mapping[str, np.ndarray], *,
                   batch_size: int = 16, seed: int = 0, free_content_rate: float = 0.5,
                   pick: TargetPick | None = None) -> Callable[[int], Iterator[Batch]]:
    """Micro-batches ``(e_u, pixels, prompts)`` for ``train_branch`` from simulated users
    whose ``e_u`` are computed beforehand (see :func:`training_example` for the images).

    Parameters
    ----------
    sampler
        An ``agents.AgentSampler`` (the pool and which pool images show which content).
    agents
        The training users (``agents.Agent``), each with an entry in ``embeddings``.
    embeddings
        ``user_id -> e_u`` (1-D, all the same length).
    batch_size
        Rows per micro-batch; each row is a random user and a random image for them.
    free_content_rate
        For users with liked content, the share of rows whose prompt leaves that content
        open (and whose image shows it).
    pick
        Choose each row's pool image as the best of several by the user's own examples
        (:class:`TargetPick`); None draws one.
    """
    import torch

    if not agents:
        raise ValueError("no training users for the user branch")

    def batches(start: int) -> Iterator[Batch]:
        k = start
        while True:
            rng = np.random.default_rng([seed, k, 11])
            rows_e, rows_px, prompts = [], [], []
            for _ in range(batch_size):
                agent = agents[int(rng.integers(len(agents)))]
                pixels, prompt = training_example(sampler, agent, rng,
                                                  free_content_rate=free_content_rate,
                                                  pick=pick)
                rows_e.append(np.asarray(embeddings[agent.user_id], np.float32))
                rows_px.append(pixels.transpose(2, 0, 1))
                prompts.append(prompt)
            yield (torch.from_numpy(np.stack(rows_e)), torch.from_numpy(np.stack(rows_px)),
                   prompts)
            k += 1

    return batches


def fixed_user_embedding(liked: np.ndarray, disliked: np.ndarray | None) -> np.ndarray:
    """The extractor-free ``e_u``: ``[mean(liked) - mean(disliked); mean(liked)]``.

    ``liked``/``disliked`` are image embeddings ``(n, d)``; without disliked images the
    first half is the liked mean alone.
    """
    liked_mean = np.asarray(liked, np.float32).mean(axis=0)
    if disliked is None or len(disliked) == 0:
        contrast = liked_mean
    else:
        contrast = liked_mean - np.asarray(disliked, np.float32).mean(axis=0)
    return np.concatenate([contrast, liked_mean]).astype(np.float32)
