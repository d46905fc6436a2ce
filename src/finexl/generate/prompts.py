"""The probing prompt sets shipped with finexl: ``default`` and ``tiny``.

``finexl/data/prompts/default.txt`` holds 200 everyday-scene captions (people, animals,
vehicles, food, rooms, streets, landscapes), written for finexl in the style of MS-COCO
captions, which the paper samples; they are original text, released with finexl under its
licence. The file is ordered so that any prefix still covers many kinds of subject, which
lets ``count`` take the first prompts. The paper's Appendix E suggests 25-50 prompts for
simple differences and 100-200 for complex ones. ``tiny.txt`` holds scenes in the words the
``builtin:tiny`` model knows (a colour, a shape, a background).

Examples
--------
>>> prompts = load_default_prompts(3)
>>> len(prompts), all(isinstance(p, str) for p in prompts)
(3, True)
"""

from __future__ import annotations

from importlib import resources

from finexl.errors import FinexlError

PROMPT_SETS = ("default", "tiny")


def load_default_prompts(count: int | None = None, *, name: str = "default") -> list[str]:
    """A shipped probing prompt set, in file order.

    Parameters
    ----------
    count : int, optional
        How many to return (the first ``count``); ``None`` returns the whole set.
    name : str
        Which set: ``"default"`` (everyday scenes) or ``"tiny"`` (``builtin:tiny``'s words).

    Returns
    -------
    list of str
        One prompt per entry, without blank lines or comments.

    Raises
    ------
    FinexlError
        An unknown ``name``, or ``count`` below 1 or above the number of prompts in the set.
    """
    if name not in PROMPT_SETS:
        raise FinexlError(f"prompt set {name!r} is not shipped; choose one of"
                          f" {', '.join(PROMPT_SETS)} (as builtin:<name>) or give a prompts file")
    resource = resources.files("finexl").joinpath(f"data/prompts/{name}.txt")
    text = resource.read_text(encoding="utf-8")
    prompts = [line.strip() for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    if count is None:
        return prompts
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(prompts):
        raise FinexlError(f"prompt count {count!r} is out of range; the {name} prompt set holds"
                          f" {len(prompts)} prompts, so choose 1 to {len(prompts)}")
    return prompts[:count]
