"""Procedurally drawn scenes with a caption naming what they show.

Used to train the ``mini`` encoder on far more subjects, colours and layouts than the
handful of bundled photos offer. A scene is a background (sky, grass, table, plain colour,
soft colour noise, or a tinted photo texture) with one to three simple subjects (a cat, a
cup of coffee, a rocket, a house...). The caption names the subjects and the setting in
plain words ("a red car and a tree under a blue sky") and never a visual quality, so the
qualities come only from :mod:`finexl.imaging.transforms`.

Examples
--------
>>> import numpy as np
>>> image, caption = random_scene(np.random.default_rng(0), size=64)
>>> image.shape, isinstance(caption, str)
((64, 64, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40), "orange": (240, 140, 30), "yellow": (240, 215, 50),
    "green": (60, 160, 60), "blue": (50, 90, 210), "purple": (130, 60, 170),
    "pink": (240, 130, 180), "brown": (130, 80, 40), "white": (240, 240, 235),
    "black": (25, 25, 30), "gray": (128, 128, 128),
}


def _jitter(rng: np.random.Generator, rgb: Sequence[int], amount: int = 25) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def article(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front, by its first letter."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _pick_colour(rng: np.random.Generator, exclude: Sequence[str] = ()) -> tuple[str, tuple]:
    names = [n for n in COLOURS if n not in exclude]
    name = names[int(rng.integers(len(names)))]
    return name, _jitter(rng, COLOURS[name])


# --------------------------------------------------------------------------------------
# Backgrounds: each returns (uint8 array (size, size, 3), setting phrase, horizon in [0, 1])


def pink_noise(rng: np.random.Generator, size: int, channels: int = 3, power: float = 2.0):
    """Soft 1/f^power noise in [0, 1], shape ``(size, size, channels)`` (natural-image-like)."""
    freq_y = np.fft.fftfreq(size)[:, None]
    freq_x = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(freq_y ** 2 + freq_x ** 2)
    radius[0, 0] = 1.0
    amplitude = radius ** (-power / 2.0)
    amplitude[0, 0] = 0.0
    out = np.empty((size, size, channels), np.float32)
    for c in range(channels):
        phase = rng.uniform(0, 2 * np.pi, amplitude.shape)
        field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(size, size))
        field = (field - field.mean()) / (field.std() + 1e-8)
        out[..., c] = field
    return np.clip(0.5 + 0.18 * out, 0, 1)


def _gradient(size: int, top: Sequence[float], bottom: Sequence[float]) -> np.ndarray:
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    top = np.asarray(top, np.float32) / 255
    bottom = np.asarray(bottom, np.float32) / 255
    return np.broadcast_to(top + (bottom - top) * t, (size, size, 3)).copy()


def _sky(rng, size, textures):
    kind = rng.choice(["day", "sunset", "night"], p=[0.6, 0.25, 0.15])
    tops = {"day": (70, 130, 220), "sunset": (90, 60, 140), "night": (10, 15, 40)}
    bottoms = {"day": (180, 210, 240), "sunset": (250, 150, 80), "night": (40, 50, 90)}
    sky = _gradient(size, _jitter(rng, tops[kind]), _jitter(rng, bottoms[kind]))
    sky += (pink_noise(rng, size, 1, 2.5) - 0.5) * 0.15
    horizon = float(rng.uniform(0.55, 0.8))
    ground_colour = np.asarray(_jitter(rng, (70, 130, 60) if kind != "night" else (20, 40, 25)),
                               np.float32) / 255
    hills = pink_noise(rng, size, 1, 3.0)[..., 0]
    line = (horizon + (hills[0] - 0.5) * 0.25) * size
    rows = np.arange(size)[:, None]
    ground = rows > line[None, :]
    texture = 0.75 + 0.5 * pink_noise(rng, size, 1, 1.5)
    sky[ground] = (ground_colour * texture)[ground]
    phrase = {"day": "under a blue sky", "sunset": "at sunset", "night": "at night"}[kind]
    return sky, phrase, horizon


def _table(rng, size, textures):
    wall = _gradient(size, _jitter(rng, (225, 220, 205), 30), _jitter(rng, (190, 185, 170), 30))
    horizon = float(rng.uniform(0.45, 0.7))
    wood = np.asarray(_jitter(rng, (150, 100, 60), 30), np.float32) / 255
    grain = pink_noise(rng, size, 1, 2.0)[..., 0]
    stripes = 0.85 + 0.15 * np.sin(np.linspace(0, 40, size)[None, :] + grain * 8)
    top = wood * stripes[..., None]
    rows = np.arange(size)[:, None] >= horizon * size
    wall[np.broadcast_to(rows, (size, size))] = top[np.broadcast_to(rows, (size, size))]
    return wall, "on a table", horizon


def _plain(rng, size, textures):
    name, rgb = _pick_colour(rng)
    base = np.broadcast_to(np.asarray(rgb, np.float32) / 255, (size, size, 3)).copy()
    base += (pink_noise(rng, size, 1, 2.5) - 0.5) * 0.1
    return base, f"on {article(name)} background", 1.0


def _noise(rng, size, textures):
    power = float(rng.uniform(1.8, 3.0))
    shared = pink_noise(rng, size, 1, power)
    field = 0.7 * shared + 0.3 * pink_noise(rng, size, 3, power)
    centre = np.asarray(_pick_colour(rng)[1], np.float32) / 255 * 0.6 + 0.2
    return np.clip((field - 0.5) * 1.6 + centre, 0, 1), "", 1.0


def _texture(rng, size, textures):
    if not textures:
        return _noise(rng, size, textures)
    name, grey = textures[int(rng.integers(len(textures)))]
    crop = _random_square(rng, grey, size)
    # Map grey levels onto a random two-colour ramp so the texture is not black and white.
    _, dark = _pick_colour(rng, exclude=("white",))
    _, light = _pick_colour(rng, exclude=("black",))
    dark = np.asarray(dark, np.float32) / 255 * 0.6
    light = np.asarray(light, np.float32) / 255 * 0.5 + 0.5
    return dark + (light - dark) * crop[..., None], f"on {name}", 1.0


BACKGROUNDS: dict[str, Callable] = {
    "sky": _sky, "table": _table, "plain": _plain, "noise": _noise, "texture": _texture,
}


def _random_square(rng: np.random.Generator, grey: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    side = min(grey.shape[:2])
    crop = int(rng.integers(max(16, side // 3), side + 1))
    y = int(rng.integers(0, grey.shape[0] - crop + 1))
    x = int(rng.integers(0, grey.shape[1] - crop + 1))
    patch = Image.fromarray((grey[y:y + crop, x:x + crop] * 255).astype(np.uint8), "L")
    return np.asarray(patch.resize((size, size), Image.BICUBIC), np.float32) / 255


# --------------------------------------------------------------------------------------
# Subjects: each draws on a PIL ImageDraw inside the box (x0, y0, x1, y1) and returns a noun
# phrase. Colours come from the named palette so the caption can name them.


def _ellipse(draw, box, fill, outline=None, width=1):
    draw.ellipse([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]),
                  max(box[1], box[3])], fill=fill, outline=outline, width=width)


def _ball(draw, box, rng):
    name, rgb = _pick_colour(rng)
    x0, y0, x1, y1 = box
    steps = 6
    for i in range(steps):  # crude shading: lighter discs towards the top left
        t = i / steps
        shade = tuple(int(min(255, c * (0.7 + 0.5 * t))) for c in rgb)
        inset = (x1 - x0) * t * 0.35
        _ellipse(draw, (x0 + inset * 0.6, y0 + inset * 0.6, x1 - inset * 1.4, y1 - inset * 1.4),
                 shade)
    return article(f"{name} ball")


def _shape(draw, box, rng):
    name, rgb = _pick_colour(rng)
    x0, y0, x1, y1 = box
    kind = rng.choice(["circle", "square", "triangle", "star", "ring"])
    if kind == "circle":
        _ellipse(draw, box, rgb)
    elif kind == "square":
        draw.rectangle(box, fill=rgb)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=rgb)
    elif kind == "ring":
        _ellipse(draw, box, None, outline=rgb, width=max(2, int((x1 - x0) / 6)))
    else:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -np.pi / 2 + k * np.pi / 5
            points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
        draw.polygon(points, fill=rgb)
    return article(f"{name} {kind}")


def _house(draw, box, rng):
    name, rgb = _pick_colour(rng, exclude=("black",))
    _, roof = _pick_colour(rng, exclude=(name,))
    x0, y0, x1, y1 = box
    mid = y0 + (y1 - y0) * 0.4
    draw.rectangle((x0, mid, x1, y1), fill=rgb)
    draw.polygon([(x0 - (x1 - x0) * 0.1, mid), ((x0 + x1) / 2, y0), (x1 + (x1 - x0) * 0.1, mid)],
                 fill=roof)
    w = x1 - x0
    draw.rectangle((x0 + w * 0.4, y1 - (y1 - mid) * 0.6, x0 + w * 0.6, y1), fill=(80, 50, 30))
    draw.rectangle((x0 + w * 0.1, mid + w * 0.1, x0 + w * 0.3, mid + w * 0.3), fill=(170, 210, 240))
    return article(f"{name} house")


def _tree(draw, box, rng):
    x0, y0, x1, y1 = box
    w = x1 - x0
    draw.rectangle((x0 + w * 0.42, y0 + (y1 - y0) * 0.55, x0 + w * 0.58, y1), fill=(100, 65, 35))
    green = _jitter(rng, (50, 140, 50), 30)
    if rng.random() < 0.5:
        _ellipse(draw, (x0, y0, x1, y0 + (y1 - y0) * 0.7), green)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y0 + (y1 - y0) * 0.75),
                      (x0, y0 + (y1 - y0) * 0.75)], fill=green)
    return "a tree"


def _sun(draw, box, rng):
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    yellow = _jitter(rng, (250, 210, 60), 15)
    for k in range(12):
        a = k * np.pi / 6
        draw.line((cx + r * 0.7 * np.cos(a), cy + r * 0.7 * np.sin(a),
                   cx + r * np.cos(a), cy + r * np.sin(a)), fill=yellow, width=max(1, int(r / 8)))
    _ellipse(draw, (cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6), yellow)
    return "the sun"


def _moon(draw, box, rng):
    x0, y0, x1, _ = box
    w = x1 - x0
    _ellipse(draw, box, _jitter(rng, (235, 235, 215), 10))
    for _ in range(3):  # craters
        cx, cy = x0 + w * rng.uniform(0.25, 0.75), y0 + w * rng.uniform(0.25, 0.75)
        r = w * rng.uniform(0.05, 0.12)
        _ellipse(draw, (cx - r, cy - r, cx + r, cy + r), (200, 200, 185))
    return "the moon"


def _cat(draw, box, rng):
    name, rgb = _pick_colour(rng, exclude=("green", "blue", "purple", "pink"))
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    _ellipse(draw, (x0 + w * 0.1, y0 + h * 0.45, x1 - w * 0.1, y1), rgb)  # body
    head = (x0 + w * 0.2, y0 + h * 0.12, x1 - w * 0.2, y0 + h * 0.6)
    draw.polygon([(head[0], head[1] + h * 0.1), (head[0] + w * 0.08, y0), (head[0] + w * 0.22,
                  head[1] + h * 0.05)], fill=rgb)
    draw.polygon([(head[2], head[1] + h * 0.1), (head[2] - w * 0.08, y0), (head[2] - w * 0.22,
                  head[1] + h * 0.05)], fill=rgb)
    _ellipse(draw, head, rgb)
    eye = (200, 190, 60)
    for ex in (0.38, 0.62):
        _ellipse(draw, (x0 + w * (ex - 0.05), y0 + h * 0.28, x0 + w * (ex + 0.05), y0 + h * 0.36), eye)
    _ellipse(draw, (x0 + w * 0.47, y0 + h * 0.42, x0 + w * 0.53, y0 + h * 0.46), (200, 90, 90))
    return article(f"{name} cat") if rng.random() < 0.5 else "a cat"


def _coffee(draw, box, rng):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    _, cup = _pick_colour(rng, exclude=("brown", "black"))
    _ellipse(draw, (x0, y0 + h * 0.7, x1, y1), _jitter(rng, cup, 10))  # saucer
    draw.polygon([(x0 + w * 0.15, y0 + h * 0.3), (x1 - w * 0.15, y0 + h * 0.3),
                  (x1 - w * 0.25, y0 + h * 0.85), (x0 + w * 0.25, y0 + h * 0.85)], fill=cup)
    _ellipse(draw, (x1 - w * 0.25, y0 + h * 0.4, x1 - w * 0.02, y0 + h * 0.65), None,
             outline=cup, width=max(2, int(w / 20)))
    _ellipse(draw, (x0 + w * 0.15, y0 + h * 0.24, x1 - w * 0.15, y0 + h * 0.38), cup)
    _ellipse(draw, (x0 + w * 0.2, y0 + h * 0.26, x1 - w * 0.2, y0 + h * 0.36), (90, 50, 25))
    return "a cup of coffee"


def _rocket(draw, box, rng):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    _, body = _pick_colour(rng, exclude=("black",))
    cx = (x0 + x1) / 2
    draw.polygon([(cx - w * 0.12, y0 + h * 0.25), (cx + w * 0.12, y0 + h * 0.25),
                  (cx + w * 0.12, y0 + h * 0.75), (cx - w * 0.12, y0 + h * 0.75)], fill=body)
    draw.polygon([(cx - w * 0.12, y0 + h * 0.25), (cx, y0), (cx + w * 0.12, y0 + h * 0.25)],
                 fill=(200, 40, 40))
    draw.polygon([(cx - w * 0.12, y0 + h * 0.55), (cx - w * 0.3, y0 + h * 0.8),
                  (cx - w * 0.12, y0 + h * 0.75)], fill=(200, 40, 40))
    draw.polygon([(cx + w * 0.12, y0 + h * 0.55), (cx + w * 0.3, y0 + h * 0.8),
                  (cx + w * 0.12, y0 + h * 0.75)], fill=(200, 40, 40))
    draw.polygon([(cx - w * 0.09, y0 + h * 0.75), (cx, y1), (cx + w * 0.09, y0 + h * 0.75)],
                 fill=(250, 170, 40))
    return "a rocket"


def _vehicle(draw, box, rng):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    name, body = _pick_colour(rng)
    motorcycle = rng.random() < 0.5
    wheel = (30, 30, 30)
    r = w * (0.17 if motorcycle else 0.12)
    for cx in ((x0 + w * 0.2, x1 - w * 0.2) if motorcycle else (x0 + w * 0.22, x1 - w * 0.22)):
        _ellipse(draw, (cx - r, y1 - 2 * r, cx + r, y1), None, outline=wheel,
                 width=max(2, int(r / 3)))
    if motorcycle:
        draw.polygon([(x0 + w * 0.25, y1 - r * 1.6), (x0 + w * 0.45, y1 - r * 2.6),
                      (x1 - w * 0.3, y1 - r * 2.5), (x1 - w * 0.2, y1 - r)], fill=body)
        draw.rectangle((x0 + w * 0.35, y1 - r * 2.9, x0 + w * 0.6, y1 - r * 2.5), fill=wheel)
        return article(f"{name} motorcycle")
    draw.rectangle((x0, y1 - h * 0.55, x1, y1 - r), fill=body)
    draw.polygon([(x0 + w * 0.2, y1 - h * 0.55), (x0 + w * 0.32, y0 + h * 0.15),
                  (x1 - w * 0.3, y0 + h * 0.15), (x1 - w * 0.15, y1 - h * 0.55)], fill=body)
    draw.rectangle((x0 + w * 0.35, y0 + h * 0.22, x1 - w * 0.33, y1 - h * 0.58),
                   fill=(170, 210, 240))
    return article(f"{name} car")


def _flower(draw, box, rng):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    name, petal = _pick_colour(rng, exclude=("green", "brown", "black", "gray"))
    cx, cy, r = (x0 + x1) / 2, y0 + h * 0.35, w * 0.3
    draw.line((cx, cy, cx, y1), fill=(50, 130, 50), width=max(2, int(w / 15)))
    for k in range(6):
        a = k * np.pi / 3
        px, py = cx + r * 0.6 * np.cos(a), cy + r * 0.6 * np.sin(a)
        _ellipse(draw, (px - r * 0.45, py - r * 0.45, px + r * 0.45, py + r * 0.45), petal)
    _ellipse(draw, (cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3), (240, 200, 40))
    return article(f"{name} flower")


def _boat(draw, box, rng):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    name, hull = _pick_colour(rng, exclude=("white",))
    draw.polygon([(x0, y0 + h * 0.7), (x1, y0 + h * 0.7), (x1 - w * 0.15, y1),
                  (x0 + w * 0.15, y1)], fill=hull)
    draw.line(((x0 + x1) / 2, y0, (x0 + x1) / 2, y0 + h * 0.7), fill=(90, 60, 30),
              width=max(1, int(w / 30)))
    draw.polygon([((x0 + x1) / 2, y0), ((x0 + x1) / 2, y0 + h * 0.65),
                  (x0 + w * 0.1, y0 + h * 0.65)], fill=(245, 245, 240))
    return article(f"{name} boat")


def _fish(draw, box, rng):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    name, body = _pick_colour(rng, exclude=("black",))
    _ellipse(draw, (x0 + w * 0.2, y0 + h * 0.3, x1, y1 - h * 0.3), body)
    draw.polygon([(x0 + w * 0.25, y0 + h * 0.5), (x0, y0 + h * 0.3), (x0, y1 - h * 0.3)],
                 fill=body)
    _ellipse(draw, (x1 - w * 0.2, y0 + h * 0.42, x1 - w * 0.13, y0 + h * 0.5), (20, 20, 20))
    return article(f"{name} fish")


def _mountain(draw, box, rng):
    x0, y0, x1, y1 = box
    w = x1 - x0
    grey = _jitter(rng, (110, 105, 120), 20)
    draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=grey)
    draw.polygon([((x0 + x1) / 2 - w * 0.12, y0 + (y1 - y0) * 0.24), ((x0 + x1) / 2, y0),
                  ((x0 + x1) / 2 + w * 0.12, y0 + (y1 - y0) * 0.24)], fill=(245, 245, 250))
    return "a mountain"


def _person(draw, box, rng):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    name, shirt = _pick_colour(rng)
    skin = _jitter(rng, (220, 180, 150), 35)
    draw.rounded_rectangle((x0 + w * 0.25, y0 + h * 0.35, x1 - w * 0.25, y1),
                           radius=max(1, int(w * 0.15)), fill=shirt)
    _ellipse(draw, (x0 + w * 0.33, y0, x1 - w * 0.33, y0 + h * 0.33), skin)
    return f"a person in {article(name)} shirt" if rng.random() < 0.5 else "a person"


SUBJECTS: dict[str, Callable] = {
    "ball": _ball, "shape": _shape, "house": _house, "tree": _tree, "sun": _sun,
    "moon": _moon, "cat": _cat, "coffee": _coffee, "rocket": _rocket, "vehicle": _vehicle,
    "flower": _flower, "boat": _boat, "fish": _fish, "mountain": _mountain, "person": _person,
}
_SKY_ONLY = {"sun", "moon"}


def random_scene(
    rng: np.random.Generator,
    *,
    size: int = 256,
    textures: Sequence[tuple[str, np.ndarray]] = (),
) -> tuple[np.ndarray, str]:
    """Draw one scene and its caption.

    Parameters
    ----------
    rng : numpy Generator
    size : int
        Side of the square image in pixels.
    textures : sequence of (name, ndarray of shape (h, w)) pairs
        Grey photos in [0, 1] (e.g. "a brick wall") used as backgrounds after tinting.

    Returns
    -------
    image : ndarray of shape (size, size, 3), float32 in [0, 1]
    caption : str
        Subjects and setting, e.g. "a cat and a tree under a blue sky".
    """
    from PIL import Image, ImageDraw

    kinds = list(BACKGROUNDS)
    kind = kinds[int(rng.choice(len(kinds), p=[0.3, 0.15, 0.2, 0.1, 0.25]))]
    background, setting, horizon = BACKGROUNDS[kind](rng, size, textures)
    canvas = Image.fromarray((np.clip(background, 0, 1) * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    names = [n for n in SUBJECTS if kind == "sky" or n not in _SKY_ONLY]
    n_subjects = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    phrases: list[str] = []
    for index in range(n_subjects):
        name = names[int(rng.integers(len(names)))]
        extent = size * float(rng.uniform(0.3, 0.7) if index == 0 else rng.uniform(0.15, 0.4))
        if name in _SKY_ONLY:
            extent *= 0.5
            y0 = rng.uniform(0.02, max(0.05, horizon - 0.3)) * size
        else:
            bottom = min(size, (horizon + rng.uniform(-0.05, 0.25)) * size)
            y0 = max(0.0, bottom - extent)
        x0 = rng.uniform(0, size - extent)
        phrase = SUBJECTS[name](draw, (x0, y0, x0 + extent, y0 + extent), rng)
        if phrase not in phrases:
            phrases.append(phrase)
    subject = " and ".join(phrases[:2])
    caption = f"{subject} {setting}".strip() if setting and rng.random() < 0.7 else subject
    return np.asarray(canvas, np.float32) / 255.0, caption
