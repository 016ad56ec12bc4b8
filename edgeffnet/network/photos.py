"""Real photos that install with the dependencies, and deterministic views of them.

Verification views and the default calibration set come from disjoint photo lists
(calibration/photos.toml). Views are uint8 crops at the model's resolution; normalisation is applied by
the caller from the weights' recipe, so a bundle can store compact uint8 views and still reproduce the
exact float input.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import Preprocess, normalise, resize_and_crop, to_rgb
from edgeffnet.core.resources import data_dir, read_toml


@lru_cache(maxsize=1)
def recipe() -> dict:
    return read_toml(data_dir("calibration") / "photos.toml")


def _package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the verification photos need the {name} package; install it: pip install {name}")
    return Path(next(iter(spec.submodule_search_locations)))


def load_photo(ref: str) -> Image.Image:
    """'skimage:chelsea', 'sklearn:china.jpg' or 'matplotlib:grace_hopper.jpg' -> RGB PIL image."""
    package, _, name = ref.partition(":")
    if package == "skimage":
        import skimage.data

        return to_rgb(Image.fromarray(getattr(skimage.data, name)()))
    # The sample files are located, not imported: importing matplotlib creates ~/.config/matplotlib, and a
    # build writes nothing outside -o, the cache and the temp directory.
    if package == "sklearn":
        path = _package_dir("sklearn") / "datasets" / "images" / name
    elif package == "matplotlib":
        path = _package_dir("matplotlib") / "mpl-data" / "sample_data" / name
    else:
        raise UserError(f"unknown photo source '{ref}'; use skimage:, sklearn: or matplotlib:")
    with Image.open(path) as img:
        return to_rgb(img)


def _random_crop(img: Image.Image, rng: np.random.Generator, scale, aspect) -> Image.Image:
    """A RandomResizedCrop-style box: area fraction in `scale`, log-uniform aspect ratio in `aspect`."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.crop((left, top, left + cw, top + ch))
    side = min(w, h)
    return img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))


def views(images: list[Image.Image], count: int, preprocess: Preprocess, seed: int | None = None) -> np.ndarray:
    """`count` uint8 HxWx3 views, round-robin over `images`.

    View i of photo p (i < len(images)) is the plain recipe; later ones are seeded random-resized crops,
    every other one mirrored, resized straight to the crop size.
    """
    cfg = recipe()["views"]
    seed = cfg["seed"] if seed is None else seed
    size = preprocess.crop
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        img = images[i % len(images)]
        variant = i // len(images)
        if variant == 0:
            view = resize_and_crop(img, preprocess)
        else:
            rng = np.random.default_rng([seed, i])
            view = _random_crop(img, rng, cfg["scale"], cfg["aspect"]).resize((size, size), Image.Resampling.BICUBIC)
            if cfg["flip"] and variant % 2 == 1:
                view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(view, np.uint8)
    return out


def to_input(views_u8: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """uint8 NHWC views -> normalised float32 NCHW, exactly as the weights' recipe does it."""
    return np.stack([normalise(Image.fromarray(v), preprocess) for v in views_u8])


def verification_views(count: int, preprocess: Preprocess) -> np.ndarray:
    return views([load_photo(r) for r in recipe()["verification"]["photos"]], count, preprocess)


def calibration_photos() -> list[Image.Image]:
    return [load_photo(r) for r in recipe()["calibration"]["photos"]]


def tuning_views(count: int, preprocess: Preprocess) -> np.ndarray:
    return views([load_photo(r) for r in recipe()["tuning"]["photos"]], count, preprocess)
