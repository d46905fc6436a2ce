"""Does the tiny model draw what it is asked? Colour, background and shape of an image.

Colour and background need only numpy and scipy: the background colour is the median of
the image border, the object is the largest connected region far (in CIELAB) from it, and
each is named by the nearest colour of ``tiny_data.COLOURS``. Shape is named by a small
classifier on region features (extent, solidity, holes, balance, compactness) fitted on
procedurally drawn shapes (scikit-image and scikit-learn, the ``train`` extra).
Also: a sepia statistic, used to check that fine-tuning on sepia images moves outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from finexl.generate.tiny_data import COLOURS, SHAPES, random_scene

# Two colours closer than this (CIELAB delta E) are not told apart by the segmentation.
OBJECT_DELTA_E = 22.0
SEPIA_MATRIX = np.array([[0.393, 0.769, 0.189],
                         [0.349, 0.686, 0.168],
                         [0.272, 0.534, 0.131]], np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 or floats in [0, 1]), shape ``(..., 3)``, to CIELAB (D65), same shape."""
    rgb = np.asarray(rgb, np.float64)
    if rgb.max(initial=0) > 1.0:
        rgb = rgb / 255
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                       [0.0193, 0.1192, 0.9505]])
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


_PALETTE_NAMES = tuple(COLOURS)
_PALETTE_LAB = rgb_to_lab(np.array([COLOURS[n] for n in _PALETTE_NAMES], np.float64) / 255)


def nearest_colour(rgb: Sequence[float]) -> str:
    """The name in ``tiny_data.COLOURS`` nearest to ``rgb`` (uint8 values or [0, 1] floats)."""
    lab = rgb_to_lab(np.asarray(rgb, np.float64).reshape(1, 3))[0]
    return _PALETTE_NAMES[int(np.argmin(((_PALETTE_LAB - lab) ** 2).sum(axis=1)))]


@dataclass(frozen=True)
class Reading:
    """What an image shows: background and object colour names, object mask (may be empty)."""

    background: str
    colour: str | None
    mask: np.ndarray


def read_image(image) -> Reading:
    """Segment the object of one tiny-model image (PIL or uint8 ``(h, w, 3)``) and name colours."""
    from scipy import ndimage

    array = np.asarray(image, np.uint8)[..., :3]
    lab = rgb_to_lab(array)
    border = np.concatenate([lab[:2].reshape(-1, 3), lab[-2:].reshape(-1, 3),
                             lab[:, :2].reshape(-1, 3), lab[:, -2:].reshape(-1, 3)])
    background_lab = np.median(border, axis=0)
    background_rgb = np.median(np.concatenate([
        array[:2].reshape(-1, 3), array[-2:].reshape(-1, 3), array[:, :2].reshape(-1, 3),
        array[:, -2:].reshape(-1, 3)]), axis=0)
    far = np.linalg.norm(lab - background_lab, axis=-1) > OBJECT_DELTA_E
    labels, count = ndimage.label(far)
    if count == 0:
        return Reading(nearest_colour(background_rgb), None, far)
    sizes = ndimage.sum(far, labels, index=np.arange(1, count + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    if mask.sum() < 6:
        return Reading(nearest_colour(background_rgb), None, mask)
    core = ndimage.binary_erosion(mask)
    pixels = array[core if core.sum() >= 4 else mask]
    return Reading(nearest_colour(background_rgb), nearest_colour(np.median(pixels, axis=0)),
                   mask)


def shape_features(mask: np.ndarray) -> np.ndarray:
    """Eight numbers describing a binary region (zeros for an empty mask), shape ``(8,)``."""
    from skimage.measure import regionprops

    if mask.sum() == 0:
        return np.zeros(8)
    region = regionprops(mask.astype(np.uint8))[0]
    y0, x0, y1, x1 = region.bbox
    height, width = y1 - y0, x1 - x0
    cy, cx = region.centroid
    ys, xs = np.nonzero(mask)
    radii = np.hypot(ys - cy, xs - cx)
    return np.array([
        region.extent, region.solidity, float(region.euler_number),
        region.area / max(region.area_filled, 1), (cy - (y0 + y1 - 1) / 2) / height,
        height / width, radii.std() / max(radii.mean(), 1e-6),
        region.perimeter ** 2 / max(region.area, 1) / (4 * np.pi),
    ])


def fit_shape_classifier(n_per_shape: int = 150, *, seed: int = 0, size: int = 32):
    """A random forest naming the shape of ``read_image(...).mask``, fitted on drawn scenes.

    Returns the fitted classifier (``predict`` on ``shape_features`` rows gives shape names).
    """
    from sklearn.ensemble import RandomForestClassifier

    features, labels = _drawn_shapes(n_per_shape, seed=seed, size=size)
    return RandomForestClassifier(n_estimators=200, random_state=seed).fit(features, labels)


def _drawn_shapes(n_per_shape: int, *, seed: int, size: int):
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(SHAPES, 0)
    features, labels = [], []
    while min(counts.values()) < n_per_shape:
        scene = random_scene(rng, size=size, allow_held_out=True)
        if counts[scene.shape] >= n_per_shape or scene.background not in COLOURS:
            continue
        reading = read_image(scene.image)
        counts[scene.shape] += 1
        features.append(shape_features(reading.mask))
        labels.append(scene.shape)
    return np.array(features), np.array(labels)


def shape_classifier_accuracy(classifier, n_per_shape: int = 100, *, seed: int = 1) -> float:
    """Accuracy of ``classifier`` on freshly drawn scenes (the ceiling of the shape check)."""
    features, labels = _drawn_shapes(n_per_shape, seed=seed, size=32)
    return float((classifier.predict(features) == labels).mean())


def sepia(images: np.ndarray) -> np.ndarray:
    """The classic sepia tone of float RGB images in [0, 1], shape ``(..., 3)``."""
    return np.clip(np.asarray(images, np.float32) @ SEPIA_MATRIX.T, 0, 1)


def sepia_distance(images: Sequence) -> float:
    """How far images are from a sepia tone: 0 when every pixel is a shade of it.

    The classic sepia matrix has nearly proportional rows, so a sepia image is one colour
    direction ``u`` (about ``[1, 0.89, 0.69]``) scaled per pixel. The distance is the mean
    length of each pixel's component orthogonal to ``u`` (RGB in [0, 1]; lower: more sepia).
    ``images`` are PIL images or uint8 arrays ``(h, w, 3)``.
    """
    arrays = np.stack([np.asarray(image, np.float32)[..., :3] / 255 for image in images])
    tone = SEPIA_MATRIX.sum(axis=1)
    tone = tone / np.linalg.norm(tone)
    along = arrays @ tone
    return float(np.linalg.norm(arrays - along[..., None] * tone, axis=-1).mean())
