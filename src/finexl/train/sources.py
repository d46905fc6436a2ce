"""Where the mini encoder's training images come from, and which photos are held out.

Photos bundled by scikit-image and scikit-learn are read from the installed packages
(nothing is downloaded). The photos in :data:`HELD_OUT` are never used for training: they
are shipped in ``finexl/data/photos`` for the demo and the encoder checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finexl.errors import FinexlError


@dataclass(frozen=True)
class SourcePhoto:
    name: str
    pixels: np.ndarray  # (h, w, 3) float32 in [0, 1]
    captions: tuple[str, ...]


# skimage function name -> (shipped name, caption, licence). Only CC0 / public domain photos,
# so they can ship inside the package.
HELD_OUT: dict[str, tuple[str, str, str]] = {
    "chelsea": ("cat", "a photo of a cat", "CC0, Stefan van der Walt (scikit-image data)"),
    "coffee": ("coffee", "a cup of coffee on a table",
               "CC0, Rachel Michetti (scikit-image data)"),
    "rocket": ("rocket", "a rocket at night",
               "public domain, SpaceX (scikit-image data)"),
    "astronaut": ("astronaut", "a photo of a person",
                  "public domain, NASA (scikit-image data)"),
}

# Colour photos used for training, with captions in the words the scenes also use.
TRAINING_COLOUR: dict[str, tuple[str, ...]] = {
    "motorcycle_left": ("a red motorcycle", "a red motorcycle in a garage"),
    "motorcycle_right": ("a red motorcycle", "a motorcycle in a garage"),
    "hubble_deep_field": ("stars and galaxies in space", "galaxies at night"),
    "immunohistochemistry": ("stained cells under a microscope", "cells under a microscope"),
    "retina": ("an eye retina", "a retina on a black background"),
    "colorwheel": ("a color wheel", "a color wheel on a black background"),
    "logo": ("a logo with a snake", "a green and orange logo"),
    "china": ("a temple", "a temple and trees under a blue sky"),
    "flower": ("an orange flower", "a flower"),
}

# Grey photos: tinted and used as scene backgrounds, and on their own.
TRAINING_GREY: dict[str, str] = {
    "brick": "a brick wall", "grass": "grass", "gravel": "gravel",
    "camera": "a man with a camera", "coins": "coins", "moon": "the surface of the moon",
    "cell": "a cell under a microscope", "clock": "a clock", "page": "a page of text",
    "text": "text on paper",
}


def _require_training_extras():
    try:
        import skimage.data  # noqa: F401
        import sklearn.datasets  # noqa: F401
    except ImportError as exc:
        raise FinexlError(
            "training the mini encoder needs scikit-image and scikit-learn; "
            "install them with `pip install finexl[train]`"
        ) from exc


def _skimage_rgb(name: str) -> np.ndarray:
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        pixels = left if name == "motorcycle_left" else right
    else:
        pixels = getattr(skimage.data, name)()
    if pixels.ndim == 3 and pixels.shape[2] == 4:  # logo: composite on white
        alpha = pixels[..., 3:4] / 255.0
        pixels = pixels[..., :3] * alpha + 255 * (1 - alpha)
    return np.asarray(pixels, np.float32) / 255.0


def training_colour_photos() -> list[SourcePhoto]:
    """The colour training photos (none of :data:`HELD_OUT`), as float arrays."""
    _require_training_extras()
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    sklearn_images = {Path(f).stem: im for f, im in zip(sample.filenames, sample.images)}
    photos = []
    for name, captions in TRAINING_COLOUR.items():
        if name in sklearn_images:
            pixels = np.asarray(sklearn_images[name], np.float32) / 255.0
        else:
            pixels = _skimage_rgb(name)
        photos.append(SourcePhoto(name, pixels, captions))
    return photos


def training_grey_photos() -> list[SourcePhoto]:
    """The grey training photos as ``(h, w)`` float arrays in [0, 1]."""
    _require_training_extras()
    import skimage.data

    photos = []
    for name, caption in TRAINING_GREY.items():
        pixels = np.asarray(getattr(skimage.data, name)(), np.float32)
        if pixels.ndim == 3:
            pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
        photos.append(SourcePhoto(name, pixels / 255.0, (caption,)))
    return photos


def export_held_out_photos(out_dir: Path, *, short_side: int = 320) -> Path:
    """Write the held-out photos (JPEG, ``short_side`` px) and ``photos.json`` to ``out_dir``."""
    import io

    from PIL import Image

    from finexl.store.files import write_atomic, write_text_atomic

    _require_training_extras()

    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for function, (name, caption, licence) in HELD_OUT.items():
        image = Image.fromarray((_skimage_rgb(function) * 255).round().astype(np.uint8), "RGB")
        scale = short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=92)
        write_atomic(out_dir / f"{name}.jpg", buffer.getvalue())
        entries.append({"name": name, "file_name": f"{name}.jpg", "caption": caption,
                        "source": f"skimage.data.{function}", "license": licence})
    index = out_dir / "photos.json"
    write_text_atomic(index, json.dumps({"photos": entries}, indent=2) + "\n")
    return index


# ---------------------------------------------------------------------------------------
# Openly licensed images from Debian packages (installed with apt; nothing downloaded at run
# time). Captions are deliberately plain (what is in the picture, never a visual quality);
# a file with no caption in :data:`CAPTIONS` is not used.

@dataclass(frozen=True)
class DebianSource:
    package: str
    pattern: str  # glob under /
    licence: str  # as the package's debian/copyright states it
    # Only these file stems (for a folder other packages also write to), or all.
    stems: tuple[str, ...] = ()


DEBIAN_SOURCES = (
    DebianSource("plasma-workspace-wallpapers", "usr/share/wallpapers/*/contents/images/*",
                 "GPL-2+ (KDE Visual Design Group; debian/copyright)"),
    DebianSource("mate-backgrounds", "usr/share/backgrounds/mate/*/*",
                 "GPL-2+, two files CC-BY-SA-4.0 (debian/copyright)"),
    DebianSource("lomiri-wallpapers, lomiri-wallpapers-16.04, lomiri-wallpapers-20.04",
                 "usr/share/backgrounds/*.*",
                 "CC-BY-4.0, CC-BY-SA-3.0/4.0, CC0-1.0 or Expat per file (debian/copyright)",
                 stems=(
                     "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Fossa_by_Jasper_Roks",
                     "Infinite-Sea_by_Aury88", "Kleiber_by_Lukas_Baubkus",
                     "Painting-Colors_by__herobrine7gamer", "Picture_0B_by_freespace",
                     "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede",
                     "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich",
                     "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi",
                     "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
                     "lomiri-default-background", "picosdeeuropa_by_Aitzol_Berasategi",
                     "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi",
                     "umang_by_Abhishek_Mudgal", "warty-final-ubuntu")),
    DebianSource("mypaint-data-extras", "usr/share/mypaint/backgrounds/*/*.png",
                 "CC0-1.0, public domain or GPL-2+ per file (debian/copyright)"),
)

# What each picture shows, written by looking at it (no captioning model here): subjects and
# colours in words the scene captions also use, never a visual quality ("dark", "blurry",
# "colorful", "dots", "stripes", "pastel", "light", ...) and never a style word ("abstract",
# "painting", "pattern"): a caption word that is also a vocabulary entry becomes a
# candidate the proposer ranks, and the last run learnt "abstract" as a colour direction
# from "an abstract wallpaper" on 51 pictures. A tuple gives alternatives.
CAPTIONS: dict[str, tuple[str, ...]] = {
    # plasma-workspace-wallpapers
    "Altai": ("blue mountains and a lake", "mountains over a blue lake"),
    "Autumn": ("an orange tree and a person on green grass", "a tree with orange leaves"),
    "BytheWater": ("a wooden pier by a lake", "a pier and a lake"),
    "Canopee": ("a brown road over green hexagons", "green and yellow hexagons"),
    "Cascade": ("blue and green hexagons", "white and green hexagons"),
    "Cluster": ("pink hexagons and stars in space", "stars and pink hexagons"),
    "ColdRipple": ("a wooden pier on a gray lake", "a pier on a lake"),
    "ColorfulCups": ("blue and red cups", "many cups"),
    "DarkestHour": ("a blue lake and trees", "trees by a blue lake"),
    "Elarun": ("blue and purple curves", "blue curves"),
    "EveningGlow": ("boats on a lake at sunset", "brown boats by a lake"),
    "FallenLeaf": ("orange leaves on the ground", "an orange leaf"),
    "Flow": ("orange and green hexagons on a gray background", "a path of hexagons"),
    "FlyingKonqui": ("a green dragon and blue bubbles", "a green dragon in a blue sky"),
    "Grey": ("a white building", "gray and white curves"),
    "Honeywave": ("blue and orange shapes", "orange hexagons on blue"),
    "IceCold": ("blue and white hexagons", "white hexagons in a blue sky"),
    "Kay": ("blue, yellow and white shapes", "blue and yellow shapes"),
    "Kite": ("a kite in a blue sky with clouds", "a kite and white clouds"),
    "Kokkini": ("red and blue curves", "a red and blue background"),
    "MilkyWay": ("orange squares on a purple background", "pink and orange squares"),
    "OneStandsOut": ("green plants and one orange plant", "green plants"),
    "Opal": ("blue and orange triangles", "purple and orange triangles"),
    "PastelHills": ("orange and green triangles", "pink and green triangles"),
    "Patak": ("an orange triangle on blue water", "orange triangles and water"),
    "Path": ("a path in a green forest", "trees in a forest"),
    "SafeLanding": ("a red rocket on a yellow hill with trees", "a rocket and mountains"),
    "Shell": ("blue and purple shapes", "purple triangles"),
    "summer_1am": ("a purple sky over a lake", "a lake under a pink sky"),
    "Volna": ("a blue sea and sand", "a wave on a beach"),
    # mate-backgrounds
    "Blinds": ("a green leaf", "green leaves"), "Elephants": ("blue elephants",),
    "Float-into-MATE": ("circles on a blue background", "a blue background"),
    "FreshFlower": ("an orange flower",), "Garden": ("a red and yellow flower", "a flower"),
    "GreenMeadow": ("green grass",),
    "GreenTraditional": ("a green circle on a white background", "a green logo"),
    "RainDrops": ("drops on green leaves", "green leaves"),
    "Stripes": ("gray and black lines", "gray lines"),
    "TwoWings": ("white seeds and orange flowers", "seeds in front of orange flowers"),
    "Ubuntu-Mate-Cold-no-logo": ("green and blue shapes on a black background",),
    "Ubuntu-Mate-Radioactive-no-logo": ("green and yellow shapes on a black background",),
    "Ubuntu-Mate-Warm-no-logo": ("yellow and red shapes on a black background",),
    # lomiri-wallpapers*
    "Fossa_by_Jasper_Roks": ("purple and red curves", "a red and purple background"),
    "Infinite-Sea_by_Aury88": ("stars over a purple sea", "the sea under stars"),
    "Kleiber_by_Lukas_Baubkus": ("a bird on a tree", "a bird"),
    "Painting-Colors_by__herobrine7gamer": ("pink, red and blue shapes",),
    "Picture_0B_by_freespace": ("a red bowl with a fig", "a red bowl"),
    "Picture_1A_by_freespace": ("blue, pink and green brushes", "brushes"),
    "aitzgorri_by_Aitzol_Berasategi": ("a mountain above trees and green grass", "a mountain"),
    "analogpattern_by_Peter_Nerlich": ("a green and purple wall",),
    "free_by_Peter_Nerlich": ("a yellow bird under white lamps", "a bird and lamps"),
    "friends_by_Aitzol_Berasategi": ("a brown dog at a window", "a dog at a window"),
    "greentock_by_Peter_Nerlich": ("a white clock", "a clock"),
    "life_by_Aitzol_Berasategi": ("a river in a forest", "a river and rocks"),
    "lomiri-default-background": ("a purple and orange background",),
    "picosdeeuropa_by_Aitzol_Berasategi": ("mountains and a path under a blue sky",
                                           "mountains"),
    "seeding_by_Clements_Engelhardt": ("white flowers in grass at sunset", "flowers in grass"),
    "umang_by_Abhishek_Mudgal": ("purple, orange and green shapes",),
    "warty-final-ubuntu": ("a purple and orange background",),
    # mypaint-data-extras (paper and canvas)
    "HR_Canvas 01": ("white canvas", "canvas"), "HR_Canvas 02": ("white canvas", "canvas"),
    "HR_Cork": ("brown cork", "cork"), "HR_DecoPaper": ("pink paper with red lines",),
    "HR_PastelPaper 01": ("white and green paper",), "HR_PastelPaper 02": ("gray paper",),
    "HR_RoughPaper": ("yellow paper", "paper"), "HR_SketchPaper": ("gray paper",),
    "HR_SketchPaper 02": ("black paper",), "HR_WaterColor": ("white paper", "paper"),
    "mamurk_a_1": ("gray paper",), "mamurk_a_2": ("green paper",),
    "mamurk_b_1": ("purple paper",), "mamurk_c_3": ("yellow paper",),
    "mamurk_e_1": ("white paper",), "mamurk_e_2": ("white paper",),
    "mamurk_f_1": ("pink paper",),
    # held out (never trained on; the evaluation's captions)
    "Aqua": ("water",), "Dune": ("a sand dune",), "LadyBird": ("a ladybird on a leaf",),
    "Storm": ("a storm over the sea",), "Wood": ("wood",), "YellowFlower": ("a yellow flower",),
    "Bridge_by_Sander_Klootwijk": ("a bridge",), "Dragonfly_by_Bolly": ("a dragonfly",),
    "sunset_by_Aitzol_Berasategi": ("a sunset over mountains",),
    "Wine_by_Jakkub_Mede": ("a glass of wine",),
}

# Never used for training: the evaluation's second image set (with the shipped photos).
HELD_OUT_DEBIAN = ("Aqua", "Dune", "LadyBird", "Storm", "Wood", "YellowFlower",
                   "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly",
                   "sunset_by_Aitzol_Berasategi", "Wine_by_Jakkub_Mede")
# The same picture at another size; transparent overlays whose colour channels alone are one
# flat colour or a blank shape (Silk, Spring, Waves, the MATE stripes, Arc-Colors, Gulp); and
# a nearly black one (mean 3 %), which would teach a "dark" look under a plain caption.
_SKIP = ("Elephants_3840x2160", "Elephants_5640x3172", "Silk", "Spring", "Waves",
         "MATE-Stripes-Dark", "MATE-Stripes-Light", "Arc-Colors-Transparent-Wallpaper", "Gulp",
         "Ubuntu-Mate-Dark-no-logo")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class DebianImage:
    stem: str
    path: Path
    package: str
    licence: str
    captions: tuple[str, ...]

    @property
    def caption(self) -> str:
        return self.captions[0]


def debian_images(root: Path = Path("/"), *, held_out: bool = False) -> list[DebianImage]:
    """The installed Debian images, one file per picture (the largest of a wallpaper's sizes).

    ``held_out=False`` gives the training images, ``True`` the held-out ones. Packages that
    are not installed contribute nothing (see :func:`missing_debian_packages`).
    """
    out: dict[str, DebianImage] = {}
    for source in DEBIAN_SOURCES:
        for path in sorted(root.glob(source.pattern)):
            if path.suffix.lower() not in _IMAGE_SUFFIXES or not path.is_file():
                continue
            # A KDE wallpaper is a folder of sizes: the folder names the picture.
            stem = path.parents[2].name if "contents" in path.parts else path.stem
            # The reserved evaluation packages (gnome-backgrounds, ukui-wallpapers) are never
            # read: only listed stems are taken from folders other packages share.
            if stem in _SKIP or stem not in CAPTIONS or (source.stems
                                                         and stem not in source.stems):
                continue
            if (stem in HELD_OUT_DEBIAN) != held_out:
                continue
            known = out.get(stem)
            if known is not None and known.path.stat().st_size >= path.stat().st_size:
                continue
            out[stem] = DebianImage(stem, path, source.package, source.licence, CAPTIONS[stem])
    return [out[k] for k in sorted(out)]


def missing_debian_packages(root: Path = Path("/")) -> list[str]:
    """Packages of :data:`DEBIAN_SOURCES` with no image installed."""
    return [s.package for s in DEBIAN_SOURCES
            if not any(p.suffix.lower() in _IMAGE_SUFFIXES for p in root.glob(s.pattern))]


def load_shrunk(path: Path, short_side: int = 448) -> np.ndarray:
    """An image file as float RGB with its short side at most ``short_side`` (JPEGs are
    decoded at reduced size directly)."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (short_side * 2, short_side * 2))
        image = image.convert("RGB")
        scale = short_side / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)),
                                 Image.LANCZOS)
        return np.asarray(image, np.float32) / 255.0


def training_debian_photos() -> list[SourcePhoto]:
    """The training images from Debian packages, as colour photos (none held out)."""
    return [SourcePhoto(f"debian:{image.stem}", load_shrunk(image.path), image.captions)
            for image in debian_images()]
