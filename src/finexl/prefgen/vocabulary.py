"""The attributes a simulated user can like or dislike: what the tiny world can show.

Three kinds of content come from the ``builtin:tiny`` image itself (it follows colour and
background words, see docs/TINY_MODEL.md): the **object colour** ("red object"), the
**background or setting** ("sunset background", "white background") and the object's
**size** ("big", "small", measured on the generated image). **Style** attributes are
applied afterwards as transforms from :mod:`finexl.imaging.transforms`, so a style means
the same pixels everywhere in finexl (the ``mini`` encoder was trained on them too).

Every attribute has a contradiction ``group``. Two different attributes of one group can
never show in one image (an object is red *or* blue; an image is dark *or* bright), and a
few pairs across groups cannot either (:data:`CONTRADICTIONS`, e.g. sepia and black and
white). A simulated user's liked attributes are pairwise compatible, so every liked image
shows all of them at once; likewise the disliked ones; and nothing is both liked and
disliked (:func:`compatible`).

``text`` is the phrase used for the attribute in a text-embedding space (the ``mini``
encoder's text tower, which knows every style word; see docs/PREFGEN.md "target text
space"). It is the canonical phrase of the quality for styles ("faded" is drawn by the
``muted`` transform, whose canonical phrase is "muted"), and ``None`` where mini has no
word (``big``), so no alignment target is made up for it.

Examples
--------
>>> [a.name for a in ATTRIBUTES.values() if a.group == "tone"]
['dark', 'bright']
>>> contradicts("sepia", "black and white"), contradicts("sepia", "vignette")
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from finexl.generate.tiny_data import COLOURS, SETTINGS
from finexl.imaging.transforms import TRANSFORMS, to_array

CONTENT = "content"
STYLE = "style"


@dataclass(frozen=True)
class Attribute:
    """One likeable attribute.

    ``slot`` says what a content attribute constrains in a pool image (``"colour"``,
    ``"background"`` or ``"size"``) and ``value`` the value there (a colour name, a
    colour or setting key of ``tiny_data``, ``"big"``/``"small"``); styles have
    ``slot == "style"`` and ``value`` = the transform name in ``imaging.transforms``.
    ``strength`` is the range a style is drawn at (uniform), strong enough to be seen on a
    32x32 image, weak enough that the content stays recognisable.
    """

    name: str
    kind: str
    group: str
    slot: str
    value: str
    text: str | None
    strength: tuple[float, float] = (1.0, 1.0)

    @property
    def transform(self) -> str | None:
        """The ``imaging.transforms`` name that draws a style attribute (``None`` for content)."""
        return self.value if self.kind == STYLE else None


def _content() -> list[Attribute]:
    attributes = [Attribute(f"{colour} object", CONTENT, "object colour", "colour", colour,
                            colour) for colour in COLOURS]
    attributes += [Attribute(f"{colour} background", CONTENT, "background", "background",
                             colour, f"{colour} background") for colour in COLOURS]
    # Settings are named by their key ("sunset background"); mini knows sky/grass/night/sunset.
    attributes += [Attribute(f"{key} background", CONTENT, "background", "background", key, key)
                   for key in SETTINGS]
    attributes += [Attribute("big", CONTENT, "size", "size", "big", None),
                   Attribute("small", CONTENT, "size", "size", "small", "little")]
    return attributes


# (user-facing name, transform, group, strength range, mini phrase). Groups hold qualities
# that pull the same pixel statistic in opposite directions.
_STYLES: tuple[tuple[str, str, str, tuple[float, float], str], ...] = (
    ("sepia", "sepia", "colour cast", (0.8, 1.0), "sepia"),
    ("warm", "warm", "colour cast", (0.7, 1.0), "warm"),
    ("cool", "cool", "colour cast", (0.7, 1.0), "cool"),
    ("black and white", "black_and_white", "saturation", (1.0, 1.0), "black and white"),
    ("vivid", "vivid", "saturation", (0.7, 1.0), "vivid"),
    ("faded", "muted", "saturation", (0.7, 1.0), "muted"),
    ("dark", "dark", "tone", (0.6, 0.9), "dark"),
    ("bright", "bright", "tone", (0.6, 0.9), "bright"),
    ("high contrast", "high_contrast", "contrast", (0.6, 0.9), "high contrast"),
    ("low contrast", "low_contrast", "contrast", (0.7, 1.0), "low contrast"),
    ("blurry", "blurry", "detail", (0.7, 1.0), "blurry"),
    ("pixelated", "pixelated", "detail", (0.8, 1.0), "pixelated"),
    ("grainy", "grainy", "grain", (0.7, 1.0), "grainy"),
    ("vignette", "vignette", "frame", (0.8, 1.0), "vignette"),
)

ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in _content() + [
    Attribute(name, STYLE, group, "style", transform, phrase, strength)
    for name, transform, group, strength, phrase in _STYLES]}
"""Every attribute by name, content first (colour, background, size), then styles."""

VOCABULARIES = ("tiny", "real")


def _real_content() -> list[Attribute]:
    # What a real model's pool (prefgen.real_pool) shows beyond the tiny world: the medium
    # its prompt asked for ("watercolor", one per image) and eight more settings ("forest
    # background"). mini's text tower has no phrase for them, so no alignment target is made
    # up (text None); a VLM reads them from the images and the words.
    from finexl.prefgen.real_pool import MEDIA, REAL_SETTINGS

    attributes = [Attribute(medium, CONTENT, "medium", "medium", medium, None)
                  for medium in MEDIA]
    attributes += [Attribute(f"{key} background", CONTENT, "background", "background", key,
                             None) for key in REAL_SETTINGS if key not in SETTINGS]
    return attributes


REAL_ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in _real_content()}
"""Content attributes only images of a real model show (``vocabulary="real"``): 8 media and
8 settings. Agents over a real pool (``prefgen agents --model``) like and dislike these too;
the tiny world, its extractor and the shipped model never see them."""

# Pairs from different groups that still cannot show together: a sepia or black-and-white
# image has no colour cast of its own; vivid colour fights a sepia or faded cast; a
# high-contrast image is not faded; blur hides grain and pixel blocks.
CONTRADICTIONS: frozenset[frozenset[str]] = frozenset(frozenset(pair) for pair in (
    ("sepia", "black and white"), ("warm", "black and white"), ("cool", "black and white"),
    ("sepia", "vivid"), ("high contrast", "faded"), ("blurry", "grainy"),
))

# (liked style, style it draws): applying the first alone to pool images makes the second's
# paired judge fire on at least 20 points more of them (sepia draws warm; grain reads as high
# contrast). A user who liked the first and disliked the second would dislike every image
# they like, so :func:`compatible` refuses such users. Measured, not chosen:
# ``python scripts/prefgen_style_draws.py --pool /tmp/prefgen-core/pool --json
# docs/eval/prefgen_style_draws.json`` (the judges of ``finexl eval prefgen``, fitted on the
# training pool; tests check this table against that file).
DRAWS: frozenset[tuple[str, str]] = frozenset((
    ("black and white", "faded"),
    ("black and white", "sepia"),
    ("bright", "low contrast"),
    ("dark", "blurry"),
    ("faded", "low contrast"),
    ("grainy", "high contrast"),
    ("high contrast", "pixelated"),
    ("high contrast", "vivid"),
    ("low contrast", "blurry"),
    ("low contrast", "bright"),
    ("low contrast", "faded"),
    ("sepia", "bright"),
    ("sepia", "faded"),
    ("sepia", "low contrast"),
    ("sepia", "warm"),
    ("vignette", "blurry"),
    ("vignette", "high contrast"),
    ("warm", "sepia"),
))

# (liked style, liked style, style they draw together): two styles a user can like together
# that make the third's paired judge fire on at least 20 points more pool images while
# neither does alone (faded with low contrast reads as black and white). A user who liked
# both and disliked the third would dislike every image they like, as with DRAWS; measured
# by the same command, from the same file.
DRAWN_TOGETHER: frozenset[tuple[str, str, str]] = frozenset((
    ("black and white", "blurry", "pixelated"),
    ("black and white", "bright", "blurry"),
    ("black and white", "bright", "pixelated"),
    ("black and white", "dark", "pixelated"),
    ("black and white", "grainy", "pixelated"),
    ("black and white", "low contrast", "pixelated"),
    ("cool", "bright", "black and white"),
    ("cool", "bright", "blurry"),
    ("cool", "bright", "faded"),
    ("cool", "bright", "pixelated"),
    ("cool", "dark", "faded"),
    ("cool", "faded", "black and white"),
    ("cool", "low contrast", "black and white"),
    ("dark", "high contrast", "vignette"),
    ("faded", "blurry", "black and white"),
    ("faded", "bright", "black and white"),
    ("faded", "bright", "blurry"),
    ("faded", "bright", "pixelated"),
    ("faded", "dark", "black and white"),
    ("faded", "dark", "sepia"),
    ("faded", "low contrast", "black and white"),
    ("faded", "low contrast", "sepia"),
    ("faded", "pixelated", "black and white"),
    ("faded", "vignette", "black and white"),
    ("faded", "vignette", "sepia"),
    ("low contrast", "blurry", "pixelated"),
    ("low contrast", "vignette", "black and white"),
    ("sepia", "bright", "blurry"),
    ("sepia", "bright", "pixelated"),
    ("vivid", "bright", "pixelated"),
    ("vivid", "dark", "pixelated"),
    ("vivid", "vignette", "dark"),
    ("warm", "bright", "faded"),
    ("warm", "dark", "faded")
))

# Styles are applied in this order (colour first, then tone, contrast, detail, grain, frame),
# whatever order a user lists them in, so an image's pixels depend on the set only.
STYLE_ORDER: tuple[str, ...] = tuple(name for name, *_ in _STYLES)
_ORDER_GROUPS = ("colour cast", "saturation", "tone", "contrast", "detail", "grain", "frame")
STYLE_ORDER = tuple(sorted(STYLE_ORDER, key=lambda n: _ORDER_GROUPS.index(ATTRIBUTES[n].group)))


def names(kind: str | None = None, vocabulary: str = "tiny") -> list[str]:
    """Attribute names in vocabulary order, optionally only ``"content"`` or ``"style"``.

    ``vocabulary="real"`` adds :data:`REAL_ATTRIBUTES` after the tiny world's content.
    """
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary {vocabulary!r} is not one of {', '.join(VOCABULARIES)}")
    extra = list(REAL_ATTRIBUTES.values()) if vocabulary == "real" else []
    return [a.name for a in list(ATTRIBUTES.values()) + extra if kind is None or a.kind == kind]


def get(name: str) -> Attribute:
    """The attribute called ``name`` (either vocabulary); ``KeyError`` listing the valid
    names otherwise."""
    found = ATTRIBUTES.get(name) or REAL_ATTRIBUTES.get(name)
    if found is None:
        raise KeyError(f"unknown attribute {name!r}; known:"
                       f" {', '.join([*ATTRIBUTES, *REAL_ATTRIBUTES])}")
    return found


def is_content(name: str) -> bool:
    """Whether ``name`` is a content attribute of the tiny vocabulary (object colour,
    background, size); False for styles and for words outside it."""
    return name in ATTRIBUTES and ATTRIBUTES[name].kind == CONTENT


# Styles that replace every colour: an object colour or a coloured background cannot be
# seen through them.
COLOUR_REPLACING: frozenset[str] = frozenset({"sepia", "black and white"})


@lru_cache(maxsize=None)
def contradicts(a: str, b: str) -> bool:
    """Whether attributes ``a`` and ``b`` cannot both show in one image (``a == b`` is not)."""
    if a == b:
        return False
    first, second = get(a), get(b)
    if first.group == second.group or frozenset((a, b)) in CONTRADICTIONS:
        return True
    for style, other in ((first, second), (second, first)):
        if style.name in COLOUR_REPLACING and other.slot in ("colour", "background"):
            return True
    if {first.slot, second.slot} == {"colour", "background"}:
        colour, background = (first, second) if first.slot == "colour" else (second, first)
        # The object would vanish into a background of its own colour or a clashing setting.
        return (background.value == colour.value
                or colour.value in _setting_clashes().get(background.value, ()))
    return False


@lru_cache(maxsize=1)
def _setting_clashes() -> dict[str, set[str]]:
    # The real settings' clashes extend the tiny world's (same entries for its settings).
    from finexl.prefgen.real_pool import REAL_SETTING_CLASHES

    return REAL_SETTING_CLASHES


def draws(style: str, other: str) -> bool:
    """Whether applying ``style`` makes an image show ``other`` too (:data:`DRAWS`)."""
    return (style, other) in DRAWS


def drawn_by(liked: Iterable[str]) -> set[str]:
    """The styles that liked attributes draw: each alone (:data:`DRAWS`) and any two of
    them together (:data:`DRAWN_TOGETHER`)."""
    liked = set(liked)
    alone = {b for a, b in DRAWS if a in liked}
    return alone | {b for a1, a2, b in DRAWN_TOGETHER if a1 in liked and a2 in liked}


def compatible(liked: Iterable[str], disliked: Iterable[str] = ()) -> bool:
    """Whether a user with these likes and dislikes is free of contradictions.

    Liked attributes are pairwise compatible, disliked ones too, no attribute is both, and
    no disliked style is drawn by the liked ones (:func:`drawn_by`: every liked image would
    show it).
    """
    liked, disliked = list(liked), list(disliked)
    if set(liked) & set(disliked) or len(set(liked)) < len(liked):
        return False
    if drawn_by(liked) & set(disliked):
        return False
    for group in (liked, disliked):
        if any(contradicts(a, b) for i, a in enumerate(group) for b in group[i + 1:]):
            return False
    return True


def apply_styles(image, styles: Sequence[str], rng: np.random.Generator,
                 strengths: Sequence[float] | None = None) -> np.ndarray:
    """``image`` (uint8 or float ``(h, w, 3)``, or PIL) with style attributes applied.

    Styles are applied in :data:`STYLE_ORDER`; each strength is drawn from the attribute's
    range with ``rng`` unless ``strengths`` (one per style, in the order given) fixes it.
    Content attributes in ``styles`` are an error: content comes from the pool image.

    Returns
    -------
    np.ndarray
        float32 ``(h, w, 3)`` in [0, 1].
    """
    if not isinstance(image, np.ndarray):
        array = to_array(image)
    elif image.dtype == np.uint8:
        array = image.astype(np.float32) / 255
    else:
        array = image.astype(np.float32, copy=False)
    fixed = dict(zip(styles, strengths)) if strengths is not None else {}
    for name in styles:
        if get(name).kind != STYLE:
            raise ValueError(f"{name!r} is a content attribute, not a style")
    for name in sorted(styles, key=STYLE_ORDER.index):
        attribute = ATTRIBUTES[name]
        low, high = attribute.strength
        strength = fixed.get(name, float(rng.uniform(low, high)))
        seed = int(rng.integers(2**31))  # grain pattern varies per image
        array = TRANSFORMS[attribute.value](array, strength, seed=seed)
    return array


def shows(attribute: str, record: dict) -> bool:
    """Whether a pool image described by ``record`` (colour, background, size) shows a
    content attribute (styles are never in a pool record)."""
    a = get(attribute)
    if a.kind != CONTENT:
        raise ValueError(f"{attribute!r} is a style; pool records show content only")
    return record.get(a.slot) == a.value
