"""The preprocessing recipe that travels with weights: image file -> normalised NCHW float32 tensor.

Mean and std are in 0..255 pixel units so both recipes in use are exact: ImageNet mean/std for
torchvision/timm weights, (x - 127) / 128 for the TF-ported Lite weights.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# What one image may decode to: PIL's own decompression-bomb bound (about 89 megapixels, 268 MB as RGB).
# A JPEG over it is decoded at 1/2, 1/4 or 1/8 scale instead (so up to 64 times that); anything else over
# it is refused. The aspect-keeping resize gets the same budget: a 1 x 1,000,000 PNG is 1 megapixel, but
# resizing its short side to 73 pixels would ask for 73 x 73,000,000 (16 GB).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
MAX_JPEG_PIXELS = 64 * MAX_PIXELS
# No photo is this elongated; refused when read, before any recipe is known (a resize of 73 keeps it
# within a few megapixels).
MAX_ASPECT = 1000

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CROP_FRACTION = 0.875  # short side = crop / 0.875: the standard ImageNet evaluation crop

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    resize: int  # the short side is resized to this many pixels
    crop: int  # then a centred crop x crop square is taken
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["resize"]), int(d["crop"]), d["interpolation"], tuple(d["mean"]), tuple(d["std"]))

    def with_resolution(self, resolution: int) -> Preprocess:
        return Preprocess(round(resolution / CROP_FRACTION), resolution, self.interpolation, self.mean, self.std)


def imagenet_recipe(resolution: int) -> Preprocess:
    return Preprocess(round(resolution / CROP_FRACTION), resolution, "bicubic", IMAGENET_MEAN, IMAGENET_STD)


def tf_lite_recipe(resolution: int) -> Preprocess:
    return Preprocess(round(resolution / CROP_FRACTION), resolution, "bicubic", (127.0,) * 3, (128.0,) * 3)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (grey, 16-bit, palette, CMYK, alpha) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1e-12)
        img = Image.fromarray(((arr - arr.min()) / span * 255.0 + 0.5).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels have no colour of their own; composite on white like a viewer would show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def resized_size(w: int, h: int, recipe: Preprocess) -> tuple[int, int]:
    """The size the aspect-keeping resize makes of a w x h image; ImageTooLarge where that is over
    MAX_PIXELS (checked from the numbers, before any memory is taken)."""
    # The long side rounds to nearest (as the Lite reference does); truncating shifts the crop by a pixel.
    if w <= h:
        size = (recipe.resize, round(recipe.resize * h / w))
    else:
        size = (round(recipe.resize * w / h), recipe.resize)
    if size[0] * size[1] > MAX_PIXELS:
        raise ImageTooLarge(
            f"{w}x{h} pixels resized to a short side of {recipe.resize} would be "
            f"{size[0]}x{size[1]}, more than {MAX_PIXELS / 1e6:.0f} megapixels"
        )
    return size


def resize_and_crop(img: Image.Image, recipe: Preprocess) -> Image.Image:
    size = resized_size(*img.size, recipe)
    img = img.resize(size, _FILTERS[recipe.interpolation])
    left = int(round((size[0] - recipe.crop) / 2.0))
    top = int(round((size[1] - recipe.crop) / 2.0))
    return img.crop((left, top, left + recipe.crop, top + recipe.crop))


def normalise(img: Image.Image, recipe: Preprocess) -> np.ndarray:
    """RGB image of the crop size -> float32 CHW array."""
    rgb = np.asarray(img, dtype=np.float32)
    x = (rgb - np.asarray(recipe.mean, np.float32)) / np.asarray(recipe.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_image(img: Image.Image, recipe: Preprocess) -> np.ndarray:
    return normalise(resize_and_crop(to_rgb(img), recipe), recipe)


class ImageTooLarge(ValueError):
    """An image that would decode, or resize, to more than MAX_PIXELS (a decompression bomb, or simply huge)."""


def _open(path: str | Path) -> Image.Image:
    """Image.open, except that a JPEG over PIL's bomb bound is opened too (its header only): it can be
    decoded at reduced scale. Anything else over the bound is ImageTooLarge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked by the caller
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            pass
    from PIL import JpegImagePlugin

    try:
        # The plugin's own constructor parses the header without PIL's bomb check (Image.open adds it).
        return JpegImagePlugin.JpegImageFile(str(path))
    except (SyntaxError, OSError, ValueError):
        raise ImageTooLarge(
            f"more than {2 * MAX_PIXELS / 1e6:.0f} megapixels and not a JPEG (only a JPEG "
            f"can be decoded at reduced scale)"
        ) from None


def read_image(path: str | Path, short_side: int | None = None) -> tuple[Image.Image, str]:
    """The image at `path` as 8-bit RGB, and the mode it was stored in, decoded within bounded memory.

    With `short_side`, a larger image is shrunk (a JPEG while decoding, others by whole-pixel box
    averaging) to no less than twice that: what a set of many images keeps in memory stays small.
    Raises ImageTooLarge, PIL's UnidentifiedImageError, or OSError (missing, unreadable, truncated)."""
    img = _open(path)
    with img:
        w, h = img.size
        if min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):
            raise ImageTooLarge(
                f"{w}x{h} pixels, more elongated than 1:{MAX_ASPECT} (no photo is): its resize would not fit in memory"
            )
        if img.format == "JPEG" and w * h > MAX_JPEG_PIXELS:
            raise ImageTooLarge(f"{w}x{h} pixels, more than {MAX_JPEG_PIXELS / 1e6:.0f} megapixels even at 1/8 scale")
        if img.format == "JPEG":
            if short_side and min(w, h) >= 4 * short_side:
                img.draft(None, (2 * short_side, 2 * short_side))
            elif w * h > MAX_PIXELS:
                scale = next((s for s in (2, 4, 8) if (w / s) * (h / s) <= MAX_PIXELS), 8)
                img.draft(None, (max(1, w // scale), max(1, h // scale)))
        if img.width * img.height > MAX_PIXELS:
            raise ImageTooLarge(f"{w}x{h} pixels, more than {MAX_PIXELS / 1e6:.0f} megapixels")
        img.load()
        mode = img.mode
        rgb = to_rgb(img)
    if short_side and min(rgb.size) >= 4 * short_side:
        rgb = rgb.reduce(min(rgb.size) // (2 * short_side))
    return rgb, mode


def load_image(path: str | Path, recipe: Preprocess) -> np.ndarray:
    return preprocess_image(read_image(path)[0], recipe)
