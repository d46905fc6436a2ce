"""How a prompt and a concept are joined into one text (t ∪ C in Eq. 6)."""

from __future__ import annotations

from collections.abc import Sequence

from finexl.errors import FinexlError

DEFAULT_TEMPLATE = "{prompt}, {concept}"
# Used for f(C) when the image folders carry no prompts (a GAN, a hosted API): neutral
# captions, so f(C) still measures what adding the concept does to a plain description.
GENERIC_PROMPTS = ("a photo", "an image", "a picture", "a painting", "a scene", "a drawing")


def check_template(template: str) -> None:
    """A template must name both ``{prompt}`` and ``{concept}`` and nothing else."""
    from finexl.limits import MAX_PROMPT_CHARS, check_text_length

    check_text_length(template, MAX_PROMPT_CHARS, "--template")
    try:
        template.format(prompt="p", concept="c")
    except (KeyError, IndexError, ValueError) as exc:
        raise FinexlError(
            f"--template {template!r} is not valid: use only the fields {{prompt}} and {{concept}},"
            f" e.g. {DEFAULT_TEMPLATE!r}"
        ) from exc
    if "{prompt}" not in template or "{concept}" not in template:
        raise FinexlError(
            f"--template {template!r} must contain both {{prompt}} and {{concept}},"
            f" e.g. {DEFAULT_TEMPLATE!r}"
        )


def compose(prompt: str, concept: str, template: str = DEFAULT_TEMPLATE) -> str:
    """``template`` filled in; an empty prompt gives the concept alone."""
    if not prompt.strip():
        return concept
    return template.format(prompt=prompt.strip(), concept=concept)


def compose_all(prompts: Sequence[str], concepts: Sequence[str], template: str) -> list[str]:
    """Every concept with every prompt, concept-major: index ``c * len(prompts) + p``."""
    return [compose(prompt, concept, template) for concept in concepts for prompt in prompts]
