"""Named, versioned instructions for the vision-language model that proposes concepts.

The paper's Figure 5 asks the VLM how a personalized model's image differs from the base
model's image and constrains the answer to single-word adjectives or short phrases, so that
each concept names one aspect. Appendix G (Table 12) compares the original instruction with a
condensed and an elaborated one and finds the explanations barely change; all three are here.

A template's ``name`` and ``version`` enter the cache key of every VLM answer, so editing the
text of a template means bumping its version (a test checks the text hash per version).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from finexl.errors import FinexlError


@dataclass(frozen=True)
class PromptTemplate:
    """One instruction sent with every image pair."""

    name: str
    version: int
    text: str
    first_label: str = "First image:"
    second_label: str = "Second image:"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(
            f"{self.text}\n{self.first_label}\n{self.second_label}".encode()).hexdigest()

    def cache_parts(self) -> list[str | int]:
        """What identifies this instruction inside a cache key."""
        return [self.name, self.version, self.sha256]


FIGURE5 = PromptTemplate(
    name="figure5",
    version=1,
    text=(
        "You are shown two images generated from the same text prompt and the same random "
        "seed. The first image comes from a base text-to-image model; the second comes from a "
        "personalized (fine-tuned) version of that model.\n"
        "List how the SECOND image differs from the FIRST in style or content: colour, tone, "
        "lighting, texture, level of detail, rendering technique, artistic medium, mood, "
        "composition or subject matter.\n"
        "Each item must be a single-word adjective or a short phrase of at most three words "
        "that names ONE aspect of the difference, such as \"watercolor\", \"pastel colors\" "
        "or \"thick outlines\". Describe what the second image has, not what it lacks, and do "
        "not list what both images share.\n"
        "Answer with a JSON list of strings only, for example [\"sepia\", \"grainy\", "
        "\"soft focus\"], with no other text."
    ),
)

CONDENSED = PromptTemplate(
    name="condensed",
    version=1,
    text=(
        "How does the second image differ from the first in style or content? Answer only "
        "with a JSON list of single-word adjectives or short phrases, e.g. "
        "[\"sepia\", \"soft focus\"]."
    ),
)

ELABORATED = PromptTemplate(
    name="elaborated",
    version=1,
    text=(
        "You will compare two images made from the same text prompt and random seed. The "
        "first image was produced by a base text-to-image model. The second was produced by "
        "a personalized version of that model, fine-tuned (for example with LoRA or "
        "DreamBooth) on a user's own data, which changed its output in ways we want to name.\n"
        "Look at both images carefully and consider, one at a time: colour palette and "
        "saturation; brightness, contrast and tone; lighting; texture, grain and sharpness; "
        "line work and outlines; the artistic medium or rendering technique (photograph, "
        "painting, sketch, cartoon, 3D render); mood and atmosphere; composition and framing; "
        "and the objects, people or setting shown.\n"
        "For every aspect in which the SECOND image differs from the FIRST, write a single "
        "adjective or a short phrase of at most three words describing the second image "
        "(\"warmer\" becomes \"warm\", \"it has grain\" becomes \"grainy\"). Each item should "
        "name exactly one aspect, so that items can be scored separately. Leave out aspects "
        "the two images share.\n"
        "Reply with a JSON list of strings and nothing else, for example "
        "[\"watercolor\", \"pastel colors\", \"thick outlines\"]."
    ),
)

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (FIGURE5, CONDENSED, ELABORATED)}
DEFAULT_TEMPLATE = FIGURE5.name


def get_template(name: str) -> PromptTemplate:
    """The template called ``name``; ``FinexlError`` listing the valid names otherwise."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise FinexlError(
            f"VLM prompt template {name!r} is unknown; choose one of {', '.join(TEMPLATES)}"
        ) from None
