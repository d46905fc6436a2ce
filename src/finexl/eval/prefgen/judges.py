"""Pixel-level judges of the tiny world's attributes, written without any trained model.

A *style* judge reads one named pixel statistic (mean luminance, luminance spread, mean
saturation, distance from the sepia tone axis, a colour-cast projection, Laplacian energy,
a robust noise level, the share of identical neighbouring pixels, the border/centre
luminance ratio) and compares it with a threshold. It comes in two forms:

- *single*: the statistic of the image alone ("is this image sepia?");
- *paired*: the statistic of the image minus that of the base image made from the same
  prompt and seed ("did this image become more sepia than the base?"). The prototype in
  PREFGEN.md section 6 found single-image judges at 70-72% for vivid, blur and warm on the
  tiny model's images and paired ones at 84-99.7%, so both are fitted and both reported.

Each attribute has a short hand-written list of candidate statistics with the direction
that means "present"; calibration picks the statistic and threshold with the best balanced
accuracy on calibration images, and the accuracy is then measured on *other* images (other
base images, other style mixes). Calibration and test images are base images (``builtin:tiny``
outputs, drawn scenes, crops of the bundled photos) with known styles applied by
``finexl.imaging.transforms``; positives carry the attribute plus up to two other styles,
negatives up to three other styles, so a judge is measured where styles mix as they do
for users.

*Content* judges name the object colour and the background (plain colour or setting) with
``finexl.generate.tiny_metrics.read_image`` and a setting matcher, and read object size
from the object mask's area.

Everything takes float RGB arrays ``(h, w, 3)`` in [0, 1] and returns numbers or arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from finexl.generate.tiny_data import COLOURS
from finexl.imaging.transforms import LUMA, resolve_quality
from finexl.prefgen.vocabulary import is_content

# --------------------------------------------------------------------------------------
# Pixel statistics: image (h, w, 3) float in [0, 1] -> float

_SEPIA_AXIS = np.array([0.393 + 0.769 + 0.189, 0.349 + 0.686 + 0.168, 0.272 + 0.534 + 0.131])
_SEPIA_AXIS = _SEPIA_AXIS / np.linalg.norm(_SEPIA_AXIS)


def _luma(image: np.ndarray) -> np.ndarray:
    return image @ LUMA


def _smooth(image: np.ndarray) -> np.ndarray:
    """A 3x3 per-channel median: colour statistics should read tone, not grain."""
    return ndimage.median_filter(image, size=(3, 3, 1), mode="reflect")


def _chroma_direction(rgb: Sequence[float]) -> np.ndarray:
    """Unit direction of a colour's cast: the colour minus its own grey, normalised."""
    colour = np.asarray(rgb, np.float64)
    cast = colour - float(colour @ LUMA)
    return cast / np.linalg.norm(cast)


# Colour casts of the tint transforms (finexl.imaging.transforms), one unit vector each.
_CASTS = {"warm": (1.0, 0.72, 0.32), "cool": (0.35, 0.65, 1.0), "pink_tint": (1.0, 0.45, 0.7),
          "green_tint": (0.4, 1.0, 0.35), "purple_tint": (0.62, 0.3, 1.0)}
_CAST_DIRECTIONS = {name: _chroma_direction(rgb) for name, rgb in _CASTS.items()}
_SEPIA_CAST = _chroma_direction(_SEPIA_AXIS)


def statistics(image: np.ndarray) -> dict[str, float]:
    """Every named pixel statistic of one image (float RGB ``(h, w, 3)`` in [0, 1]).

    - ``luminance``: mean luminance (Rec. 601); ``contrast``: its standard deviation;
      ``black_level``: its 5th percentile (lifted blacks: faded, washed out).
    - ``saturation``: mean max-minus-min channel; ``relative_saturation``: saturation over
      contrast (lowering contrast shrinks both, greying only one).
    - ``sepia_distance``: mean RGB length orthogonal to the sepia tone axis;
      ``sepia_tone``: chroma along the sepia cast minus twice the chroma across it, per unit
      of luminance (grey pixels have neither, so black and white is not sepia).
    - ``cast_<tint>``: mean chroma projected on a tint's cast direction, per unit of
      luminance (a tint moves chroma in proportion to luminance).
    - ``high_frequency``: mean absolute Laplacian of luminance; ``detail``: that over
      contrast (blur lowers it, darkening does not).
    - ``noise_level``: median absolute difference from a 3x3 median filter (edges move a
      median filter little, grain moves it everywhere).
    - ``blockiness``: share of neighbouring pixel pairs equal to 1/512 (pixel blocks).
    - ``border_centre``: luminance of the corner band over that of the centre (vignette).

    - ``share_<cast>``: share of pixels whose chroma points along a cast (cosine above
      0.9, chroma above 0.02): a toned image is toned everywhere, grey pixels count for
      nothing.

    Colour statistics are read on the image blurred by one pixel, so they read tone, not
    grain.
    """
    image = np.asarray(image, np.float64)
    luma = image @ LUMA
    smooth = ndimage.gaussian_filter(image, (1.0, 1.0, 0), mode="reflect")
    smooth_luma = smooth @ LUMA
    chroma = smooth - smooth_luma[..., None]
    light = smooth_luma.mean() + 0.05
    contrast = luma.std()
    saturation = (smooth.max(axis=2) - smooth.min(axis=2)).mean()
    along = chroma @ _SEPIA_CAST
    across = np.linalg.norm(chroma - along[..., None] * _SEPIA_CAST, axis=-1)
    sepia_along = image @ _SEPIA_AXIS
    high_frequency = np.abs(ndimage.laplace(luma, mode="reflect")).mean()
    dy = np.abs(np.diff(image, axis=0)).max(axis=2)
    dx = np.abs(np.diff(image, axis=1)).max(axis=2)
    height, width = luma.shape
    radius = np.sqrt((np.linspace(-1, 1, width)[None, :] ** 2
                      + np.linspace(-1, 1, height)[:, None] ** 2) / 2.0)
    row = {
        "luminance": luma.mean(), "contrast": contrast, "black_level": np.percentile(luma, 5),
        "saturation": saturation, "relative_saturation": saturation / (contrast + 0.02),
        "sepia_distance": np.linalg.norm(image - sepia_along[..., None] * _SEPIA_AXIS,
                                         axis=-1).mean(),
        "sepia_tone": (along - 2.0 * across).mean() / light,
        "high_frequency": high_frequency, "detail": high_frequency / (contrast + 0.02),
        "noise_level": np.median(np.abs(luma - ndimage.median_filter(luma, size=3,
                                                                      mode="reflect"))),
        "blockiness": (np.concatenate([dy.ravel(), dx.ravel()]) < 1.0 / 512).mean(),
        "border_centre": (luma[radius > 0.75].mean() + 0.02) / (luma[radius < 0.4].mean() + 0.02),
    }
    row.update({f"cast_{name}": (chroma @ direction).mean() / light
                for name, direction in _CAST_DIRECTIONS.items()})
    length = np.linalg.norm(chroma, axis=-1)
    coloured = length > 0.02
    for name, direction in (("sepia", _SEPIA_CAST), ("warm", _CAST_DIRECTIONS["warm"]),
                            ("cool", _CAST_DIRECTIONS["cool"])):
        cosine = (chroma @ direction) / np.maximum(length, 1e-9)
        row[f"share_{name}"] = (coloured & (cosine > 0.9)).mean()
    return {name: float(value) for name, value in row.items()}


STATISTIC_NAMES: tuple[str, ...] = tuple(statistics(np.full((8, 8, 3), 0.5)))

# Transform -> the statistics its judge reads, chosen by what the transform does to pixels
# (and by what it must not be confused with), not by data.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "sepia": ("share_sepia", "sepia_tone", "sepia_distance", "saturation", "cast_warm"),
    "black_and_white": ("saturation", "relative_saturation", "share_sepia"),
    "vivid": ("saturation", "relative_saturation", "contrast"),
    "muted": ("saturation", "relative_saturation", "contrast", "black_level"),
    "warm": ("cast_warm", "share_warm", "share_sepia", "cast_cool"),
    "cool": ("cast_cool", "share_cool", "cast_warm"),
    "pink_tint": ("cast_pink_tint",),
    "green_tint": ("cast_green_tint",),
    "purple_tint": ("cast_purple_tint",),
    "dark": ("luminance", "black_level"),
    "bright": ("luminance", "black_level"),
    "high_contrast": ("contrast", "luminance", "black_level"),
    "low_contrast": ("contrast", "black_level", "luminance"),
    "blurry": ("high_frequency", "detail", "noise_level"),
    "sharp": ("high_frequency", "detail"),
    "grainy": ("noise_level", "high_frequency"),
    "pixelated": ("blockiness", "high_frequency", "detail"),
    "vignette": ("border_centre", "luminance"),
}


def statistics_matrix(images: Iterable[np.ndarray]) -> np.ndarray:
    """Statistics of many images, shape ``(n, len(STATISTIC_NAMES))``."""
    rows = [list(statistics(image).values()) for image in images]
    return np.asarray(rows, np.float64).reshape(-1, len(STATISTIC_NAMES))


def style_key(name: str) -> str | None:
    """The transform a style attribute is drawn by ("faded" -> "muted"), or None for content."""
    from finexl.prefgen import vocabulary

    if name in vocabulary.ATTRIBUTES:
        transform = vocabulary.get(name).transform
        return transform if transform in CANDIDATES else None
    try:
        key = resolve_quality(name)
    except KeyError:
        return None
    return key if key in CANDIDATES else None


# --------------------------------------------------------------------------------------
# Style judges


@dataclass(frozen=True)
class StyleJudge:
    """A linear read of a few named statistics: present when the score is above zero.

    Single judges read the statistics of the image; paired judges read them and their
    change from the base image of the same prompt and seed. ``weights`` apply to the
    standardised features (``(value - mean) / scale``).
    """

    attribute: str
    statistics: tuple[str, ...]
    paired: bool
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def features(self, stats: np.ndarray, base_stats: np.ndarray | None = None) -> np.ndarray:
        columns = [STATISTIC_NAMES.index(name) for name in self.statistics]
        features = stats[:, columns]
        if self.paired:
            if base_stats is None:
                raise ValueError(f"the paired {self.attribute!r} judge needs the base images")
            features = np.concatenate([features, features - base_stats[:, columns]], axis=1)
        return features

    def scores(self, stats: np.ndarray, base_stats: np.ndarray | None = None) -> np.ndarray:
        """Signed scores (positive: present) for statistic rows ``(n, n_statistics)``."""
        z = (self.features(stats, base_stats) - np.array(self.mean)) / np.array(self.scale)
        return z @ np.array(self.weights) + self.bias

    def present(self, stats: np.ndarray, base_stats: np.ndarray | None = None) -> np.ndarray:
        """Boolean per row."""
        return self.scores(stats, base_stats) > 0


@dataclass
class JudgeSet:
    """Single and paired judges for every style attribute, with measured accuracy.

    ``accuracy[form][attribute]`` is the balanced accuracy on test images (not the ones
    the thresholds were fitted on); ``n_test`` how many test images per class.
    """

    single: dict[str, StyleJudge]
    paired: dict[str, StyleJudge]
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    n_test: int = 0

    def present(self, attribute: str, stats: np.ndarray, base_stats: np.ndarray | None = None,
                *, form: str = "paired") -> np.ndarray:
        judges = self.paired if form == "paired" else self.single
        return judges[attribute].present(stats, base_stats)

    def to_dict(self) -> dict[str, Any]:
        def describe(judge: StyleJudge) -> dict[str, Any]:
            return {"statistics": list(judge.statistics), "paired": judge.paired,
                    "mean": judge.mean, "scale": judge.scale, "weights": judge.weights,
                    "bias": judge.bias}

        return {"accuracy": {form: {k: round(v, 4) for k, v in table.items()}
                             for form, table in self.accuracy.items()},
                "n_test_per_class": self.n_test,
                "single": {k: describe(j) for k, j in self.single.items()},
                "paired": {k: describe(j) for k, j in self.paired.items()}}


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates."""
    predicted, labels = np.asarray(predicted, bool), np.asarray(labels, bool)
    return float(0.5 * ((predicted & labels).sum() / max(labels.sum(), 1)
                        + (~predicted & ~labels).sum() / max((~labels).sum(), 1)))


def fit_judge(attribute: str, stats: np.ndarray, base_stats: np.ndarray, labels: np.ndarray,
              *, paired: bool) -> StyleJudge:
    """A class-balanced logistic regression on the attribute's statistics."""
    from sklearn.linear_model import LogisticRegression

    template = StyleJudge(attribute, CANDIDATES[style_key(attribute) or attribute], paired,
                          (), (), (), 0.0)
    features = template.features(stats, base_stats)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    model.fit((features - mean) / scale, labels)
    return StyleJudge(attribute, template.statistics, paired, tuple(mean.tolist()),
                      tuple(scale.tolist()), tuple(model.coef_[0].tolist()),
                      float(model.intercept_[0]))


# --------------------------------------------------------------------------------------
# Known-answer images for calibration and accuracy

StyleApplier = Callable[[np.ndarray, Sequence[str], np.random.Generator], np.ndarray]


def vocabulary_styles() -> list[str]:
    """PrefGen's style attribute names that some judge reads."""
    from finexl.prefgen import vocabulary

    return [name for name in vocabulary.names("style") if style_key(name) is not None]


def known_style_sets(attribute: str, n_images: int, rng: np.random.Generator,
                     attributes: Sequence[str], max_others: int = 2
                     ) -> tuple[list[list[str]], np.ndarray]:
    """``n_images`` style lists, half with ``attribute`` plus up to ``max_others`` others,
    half with 0 to ``max_others + 1`` others only; never two contradicting styles."""
    from finexl.prefgen.vocabulary import contradicts

    style_lists, labels = [], []
    for k in range(n_images):
        positive = k % 2 == 0
        chosen = [attribute] if positive else []
        others = [a for a in attributes if a != attribute]
        # Negatives include untouched images (a flat drawing must not read as blurred).
        wanted = int(rng.integers(0, max_others + 2 if not positive else max_others + 1))
        for other in rng.permutation(others):
            if len(chosen) - positive >= wanted:
                break
            other = str(other)
            if not any(contradicts(other, c) for c in chosen):
                chosen.append(other)
        style_lists.append(chosen)
        labels.append(positive)
    return style_lists, np.array(labels)


def calibrate(base_images: Sequence[np.ndarray], *, test_images: Sequence[np.ndarray],
              attributes: Sequence[str] | None = None, n_per_attribute: int = 120,
              seed: int = 0, progress: bool = False) -> JudgeSet:
    """Fit single and paired judges on ``base_images``, measure them on ``test_images``.

    Parameters
    ----------
    base_images, test_images
        Float RGB arrays ``(h, w, 3)``; the two lists should hold different images (accuracy
        is measured only on ``test_images``, with fresh style mixes and strengths).
    attributes
        PrefGen style attribute names (default: every style of the vocabulary). Styles are
        drawn by ``vocabulary.apply_styles`` at the vocabulary's strengths, so the judges
        see the styles users see.
    """
    from finexl.prefgen.vocabulary import apply_styles
    from finexl.progress import track

    attributes = list(attributes or vocabulary_styles())
    rng = np.random.default_rng(seed)
    single: dict[str, StyleJudge] = {}
    paired: dict[str, StyleJudge] = {}
    accuracy: dict[str, dict[str, float]] = {"single": {}, "paired": {}}
    for attribute in track(attributes, total=len(attributes), description="calibrating judges",
                           enabled=progress):
        for role, pool in (("fit", base_images), ("test", test_images)):
            styles, labels = known_style_sets(attribute, n_per_attribute, rng, attributes)
            bases = [pool[int(rng.integers(len(pool)))] for _ in styles]
            styled = [apply_styles(image, names, rng) for image, names in zip(bases, styles)]
            stats, base_stats = statistics_matrix(styled), statistics_matrix(bases)
            if role == "fit":
                single[attribute] = fit_judge(attribute, stats, base_stats, labels, paired=False)
                paired[attribute] = fit_judge(attribute, stats, base_stats, labels, paired=True)
                continue
            for form, judge in (("single", single[attribute]), ("paired", paired[attribute])):
                accuracy[form][attribute] = balanced_accuracy(
                    judge.present(stats, base_stats), labels)
    return JudgeSet(single, paired, accuracy, n_test=n_per_attribute // 2)


def calibrate_on_pool(pool_images: Sequence[np.ndarray], *, n_per_attribute: int = 200,
                      seed: int = 0, progress: bool = False
                      ) -> tuple[JudgeSet, list[np.ndarray], list[np.ndarray]]:
    """The evaluation's judges: fitted on half of ``pool_images`` plus half of the bundled
    photos' crops, tested on the other halves.

    Returns the judges and the fit and test images (the evaluation records how many of each).
    """
    from finexl.imaging.photos import bundled_photos, square_crops

    images = list(pool_images)
    photos = [np.asarray(crop, np.float32) / 255 for i, photo in enumerate(bundled_photos())
              for crop in square_crops(photo.load(), 8, size=32, rng=seed + i)]
    half = len(images) // 2
    fit = images[:half] + photos[: len(photos) // 2]
    test = images[half:] + photos[len(photos) // 2:]
    judges = calibrate(fit, test_images=test, n_per_attribute=n_per_attribute, seed=seed,
                       progress=progress)
    return judges, fit, test


def style_draws(judges: JudgeSet, images: Sequence[np.ndarray], *, seed: int = 0,
                attributes: Sequence[str] | None = None,
                sets: Sequence[tuple[str, ...]] | None = None) -> dict[str, dict[str, float]]:
    """How often each paired judge fires once styles are applied, and on the untouched
    images: ``{set key: {judged style: share}}`` plus ``{"none": {judged style: share}}``.

    ``sets``: the style sets to apply, each keyed by :func:`set_key` (default: every style
    alone). A liked style that makes another style's judge fire on most images *draws* that
    style (sepia draws warm): a user who likes the first and dislikes the second could never
    be satisfied, so :data:`finexl.prefgen.vocabulary.DRAWS` lists such pairs and simulated
    users avoid them; two liked styles can draw a third together (faded and low contrast
    read as black and white), :data:`finexl.prefgen.vocabulary.DRAWN_TOGETHER`. Styles are
    drawn at the vocabulary's strengths.
    """
    from finexl.prefgen.vocabulary import apply_styles

    attributes = list(attributes or vocabulary_styles())
    sets = [(a,) for a in attributes] if sets is None else [tuple(s) for s in sets]
    rng = np.random.default_rng(seed)
    base_stats = statistics_matrix(images)
    rates = {"none": {b: float(judges.present(b, base_stats, base_stats).mean())
                      for b in attributes}}
    for styles in sets:
        stats = statistics_matrix([apply_styles(image, list(styles), rng) for image in images])
        rates[set_key(styles)] = {b: float(judges.present(b, stats, base_stats).mean())
                                  for b in attributes}
    return rates


_SET_JOIN = " + "


def set_key(styles: Sequence[str]) -> str:
    """The key of a style set in :func:`style_draws`' rates: ``"faded + low contrast"``."""
    return _SET_JOIN.join(styles)


def drawn_pairs(rates: dict[str, dict[str, float]], threshold: float) -> list[tuple[str, str]]:
    """``(a, b)`` where applying ``a`` alone makes ``b``'s judge fire at least ``threshold``
    more often than on the untouched images (``rates`` from :func:`style_draws`)."""
    untouched = rates["none"]
    return sorted((a, b) for a, row in rates.items() if a != "none" and _SET_JOIN not in a
                  for b, share in row.items() if b != a and share - untouched[b] >= threshold)


def drawn_together(rates: dict[str, dict[str, float]], threshold: float
                   ) -> list[tuple[str, str, str]]:
    """``(a1, a2, b)`` where applying ``a1`` and ``a2`` together makes ``b``'s judge fire at
    least ``threshold`` more often than on the untouched images while neither does alone
    (those are :func:`drawn_pairs` already). ``rates`` holds the pairs and every style
    alone."""
    untouched = rates["none"]
    singles = set(drawn_pairs(rates, threshold))
    found = []
    for key, row in rates.items():
        if key.count(_SET_JOIN) != 1:
            continue
        a1, a2 = key.split(_SET_JOIN)
        found += [(a1, a2, b) for b, share in row.items()
                  if b not in (a1, a2) and share - untouched[b] >= threshold
                  and (a1, b) not in singles and (a2, b) not in singles]
    return sorted(found)


# --------------------------------------------------------------------------------------
# Content judges: object colour, background, size

# Top and bottom colours of the tiny world's settings (tiny_data._background), 0-255.
_SETTING_ENDS = {"sky": ((60, 120, 220), (170, 205, 240)), "sunset": ((110, 60, 150), (250, 160, 70)),
                 "grass": ((70, 150, 55), (70, 150, 55)), "night": ((15, 20, 50), (15, 20, 50))}


@dataclass(frozen=True)
class ContentReading:
    """What one image shows: object colour (None if no object), background, size word."""

    colour: str | None
    background: str
    size: str | None  # "small", "big" or None (medium or no object), as the pool measures it
    mask: np.ndarray


def _background_options() -> tuple[list[str], np.ndarray]:
    from finexl.generate.tiny_metrics import rgb_to_lab

    ends = {name: (rgb, rgb) for name, rgb in COLOURS.items()} | _SETTING_ENDS
    names = list(ends)
    labs = np.stack([rgb_to_lab(np.array(ends[n], np.float64) / 255) for n in names])
    return names, labs  # (n, 2, 3): top and bottom in CIELAB


def read_background(image: np.ndarray) -> str:
    """A plain colour name or a setting (sky, sunset, grass, night), from the top and bottom
    rows: the pair of reference colours nearest in CIELAB."""
    from finexl.generate.tiny_metrics import rgb_to_lab

    top = np.median(image[:3].reshape(-1, 3), axis=0)
    bottom = np.median(image[-3:].reshape(-1, 3), axis=0)
    seen = rgb_to_lab(np.stack([top, bottom]).astype(np.float64))
    names, labs = _background_options()
    distances = np.linalg.norm(labs - seen[None], axis=-1).sum(axis=1)
    return names[int(np.argmin(distances))]


def read_content(image: np.ndarray) -> ContentReading:
    """Object colour (``tiny_metrics.read_image``), background and size of one image."""
    from finexl.generate.tiny_metrics import read_image
    from finexl.prefgen.pool import size_word

    array = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    reading = read_image(array)
    area = float(reading.mask.mean()) if reading.colour is not None else 0.0
    return ContentReading(reading.colour, read_background(image), size_word(area), reading.mask)


def content_present(name: str, reading: ContentReading) -> bool:
    """Whether a content attribute of the vocabulary ("red object", "sunset background",
    "big") shows in a reading."""
    from finexl.prefgen.vocabulary import get

    attribute = get(name)
    seen = {"colour": reading.colour, "background": reading.background, "size": reading.size}
    return seen[attribute.slot] == attribute.value


def content_accuracy(n_scenes: int = 200, *, seed: int = 0, size: int = 32) -> dict[str, float]:
    """Accuracy of the content judges on drawn scenes of known colour and background.

    (Size is not scored here: drawn scenes have no size word of their own; the pool reads
    size with the same area thresholds.)
    """
    from finexl.generate.tiny_data import random_scene

    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {"object_colour": [], "background": []}
    for _ in range(n_scenes):
        scene = random_scene(rng, size=size, allow_held_out=True)
        reading = read_content(scene.image.astype(np.float32) / 255)
        hits["object_colour"].append(reading.colour == scene.colour)
        hits["background"].append(reading.background == scene.background)
    return {name: float(np.mean(values)) for name, values in hits.items()}


# --------------------------------------------------------------------------------------
# One entry point: is each of a user's attributes present in each image?


def attributes_present(judges: JudgeSet, attributes: Sequence[str], images: Sequence[np.ndarray],
                       base_images: Sequence[np.ndarray] | None, *, form: str = "paired",
                       stats: np.ndarray | None = None, base_stats: np.ndarray | None = None,
                       readings: Sequence[ContentReading] | None = None) -> np.ndarray:
    """Boolean ``(n_images, n_attributes)``; NaN-free, unknown attributes are False.

    Style attributes use the ``form`` judges (paired needs ``base_images``, same order);
    content attributes are read from the image alone. ``stats`` / ``base_stats``
    (:func:`statistics_matrix`) and ``readings`` (:func:`read_content` of each image) may be
    passed when the caller already has them: scoring asks several questions of one image.
    """
    images = list(images)
    out = np.zeros((len(images), len(attributes)), bool)
    stats = statistics_matrix(images) if stats is None else stats
    if base_stats is None and base_images is not None:
        base_stats = statistics_matrix(base_images)
    for j, name in enumerate(attributes):
        key = judge_key(judges, name)
        if key is not None:
            out[:, j] = judges.present(key, stats, base_stats, form=form)
            continue
        if is_content(name):
            if readings is None:
                readings = [read_content(image) for image in images]
            out[:, j] = [content_present(name, r) for r in readings]
    return out


def judge_key(judges: JudgeSet, name: str) -> str | None:
    """The key of ``name``'s judge in ``judges`` (None: no judge). Judges are keyed by the
    vocabulary's names ("faded"); a name outside it is matched through its transform."""
    if name in judges.single:
        return name
    transform = style_key(name)
    if transform is None:
        return None
    return next((a for a in judges.single if style_key(a) == transform), None)


def judged(name: str) -> bool:
    """Whether some judge reads the attribute ``name``."""
    return style_key(name) is not None or is_content(name)
