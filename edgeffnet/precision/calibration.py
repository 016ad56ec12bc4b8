"""Calibration data: a folder of images, an .npy/.npz of preprocessed tensors, or the default real photos.

Images go through the bundle's weights recipe, deterministically; when a folder or the default set holds
fewer images than asked, seeded crops, flips and scales of them make up the count.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import MAX_PIXELS, ImageTooLarge, Preprocess, read_image, resized_size
from edgeffnet.network.photos import calibration_photos, to_input, views

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


TUNING_VIEWS = 64
HELD_OUT_VIEWS = 64  # views that judge the self-distillation (precision/distill.py)
HELD_OUT_EVERY = 4  # of the default calibration photos, every fourth is held out of the distillation


@dataclass
class CalibrationSet:
    data: np.ndarray  # N x 3 x H x W float32, preprocessed
    source: str
    sha256: str
    images: int  # distinct images behind the views
    requested: int
    skipped: dict = field(default_factory=dict)  # reason -> count
    converted: dict = field(default_factory=dict)  # source mode -> count
    warnings: list = field(default_factory=list)

    def tuning(self, preprocess: Preprocess, count: int = TUNING_VIEWS) -> np.ndarray:
        """Views that steer method choice and the sensitivity pass: for the default set, views of its
        natural photos (calibration/photos.toml [tuning]); for the user's data, an even subset of it."""
        if self.source.startswith("default"):
            from edgeffnet.network.photos import tuning_views

            return to_input(tuning_views(count, preprocess), preprocess)
        step = max(1, len(self.data) // count)
        return self.data[::step][:count]

    def distillation_split(
        self, preprocess: Preprocess, count: int = HELD_OUT_VIEWS
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(views to distil on, held-out views to judge the distillation on, what the held-out views are).

        The held-out views must be ones the distillation never saw. For the default set, every fourth
        calibration photo is left out of the distillation and judged on fresh crops of it (another seed):
        measured on Lite1, fresh crops of the photos it trained on said "better" (cosine 0.9954 -> 0.9978)
        where the verification photos said worse. The verification photos stay the fidelity report's
        alone. For the user's data, the last quarter is held out of the distillation (the range
        statistics did see it: there is no other data to hold out)."""
        if self.source.startswith("default"):
            from edgeffnet.network.photos import calibration_photos, recipe

            photos = calibration_photos()
            held = [i for i in range(len(photos)) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
            train = np.array([i % len(photos) not in held for i in range(len(self.data))])
            kept = [photos[i] for i in held]
            fresh = views(kept, len(kept) + count, preprocess, seed=recipe()["views"]["seed"] + 1)[len(kept) :]
            return (
                self.data[train],
                to_input(fresh, preprocess),
                f"fresh crops of {len(kept)} of the {len(photos)} calibration photos, left out of the distillation",
            )
        cut = len(self.data) - max(1, len(self.data) // 4)
        return (
            self.data[:cut],
            self.data[cut:],
            "the last quarter of the calibration views, left out of the distillation (not of the statistics)",
        )

    def record(self) -> dict:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "views": int(len(self.data)),
            "images": self.images,
            "requested": self.requested,
            "skipped": self.skipped,
            "converted": self.converted,
            "warnings": self.warnings,
        }


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _mode_name(mode: str) -> str | None:
    if mode == "RGB":
        return None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return "16-bit"
    return {
        "L": "grayscale",
        "LA": "grayscale",
        "1": "grayscale",
        "P": "palette",
        "PA": "palette",
        "RGBA": "RGBA",
        "CMYK": "CMYK",
    }.get(mode, mode)


def _read_folder(folder: Path, recipe: Preprocess) -> tuple[list[Image.Image], Counter, Counter]:
    images, skipped, converted = [], Counter(), Counter()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped["not an image"] += 1
            continue
        try:
            # Shrunk to twice the recipe's resize at most: three hundred phone photos stay a few hundred MB.
            rgb, stored = read_image(path, short_side=recipe.resize)
            resized_size(*rgb.size, recipe)  # its resize fits too (checked now: the views resize it later)
        except ImageTooLarge:
            skipped[f"over {MAX_PIXELS / 1e6:.0f} megapixels"] += 1
            continue
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped["corrupt"] += 1
            continue
        mode = _mode_name(stored)
        if mode:
            converted[mode] += 1
        images.append(rgb)
    return images, skipped, converted


def _from_array(path: Path, count: int, recipe: Preprocess) -> CalibrationSet:
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r")  # only the first `count` samples are read
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read calibration tensors '{path}': {e}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        names = loaded.files
        if not names:
            raise UserError(f"calibration file '{path}' holds no arrays")
        key = next((k for k in ("input", "x", "data", "images") if k in names), names[0])
        loaded = loaded[key]
    x = np.asarray(loaded)
    want = (3, recipe.crop, recipe.crop)
    if x.ndim != 4 or tuple(x.shape[1:]) != want or not np.issubdtype(x.dtype, np.floating):
        raise UserError(
            f"calibration tensors in '{path}' have shape {x.shape} ({x.dtype}); expected "
            f"N x {want[0]} x {want[1]} x {want[2]} floats, preprocessed with the bundle's recipe"
        )
    if len(x) == 0:
        raise UserError(f"calibration file '{path}' holds no samples")
    x = np.ascontiguousarray(x[:count], dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(x).all(axis=(1, 2, 3))))
    if bad:  # one NaN poisons every range it reaches, and the INT8 model with it
        raise UserError(
            f"calibration tensors in '{path}': {bad} of {len(x)} samples hold NaN or Inf; "
            f"pass finite, preprocessed tensors"
        )
    warnings = (
        [] if len(x) >= count else [f"calibration: {len(x)} tensors in {path.name}, {count} asked; using {len(x)}"]
    )
    return CalibrationSet(x, f"tensors:{path}", _digest(x), len(x), count, warnings=warnings)


def load(source: str | Path | None, count: int, recipe: Preprocess) -> CalibrationSet:
    """The calibration set for `source` (None: the default photos), `count` views, preprocessed."""
    if count < 1:
        raise UserError(f"--calib-size must be at least 1, got {count}")
    if source is None or str(source) == "default":
        photos = calibration_photos()
        x = to_input(views(photos, count, recipe), recipe)
        return CalibrationSet(x, "default: calibration/photos.toml", _digest(x), len(photos), count)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"calibration source '{path}' does not exist; pass a folder of images or an .npy/.npz file")
    if path.is_file():
        if path.suffix.lower() not in (".npy", ".npz"):
            raise UserError(f"calibration source '{path}' is a file but not .npy/.npz; pass a folder of images")
        return _from_array(path, count, recipe)
    images, skipped, converted = _read_folder(path, recipe)
    if not images:
        what = f" ({sum(skipped.values())} files skipped: {dict(skipped)})" if skipped else ""
        raise UserError(
            f"no readable image in calibration folder '{path}'{what}; "
            f"add jpg/png/bmp/webp images or use the default set"
        )
    warnings = []
    if len(images) < count:
        warnings.append(
            f"calibration: {len(images)} readable images in {path}, {count} asked; "
            f"making up the count with crops and flips of them"
        )
    x = to_input(views(images, count, recipe), recipe)
    return CalibrationSet(x, f"folder:{path}", _digest(x), len(images), count, dict(skipped), dict(converted), warnings)
