"""`edgeffnet predict`: the compiled artifact on real images, with the bundle's own preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import bundle, targets
from .backends import get as backend
from .errors import UserError
from .preprocess import Preprocess, preprocess_image
from .resources import package_file
from .verify import run_batched


def class_names(n: int) -> list[str]:
    names = package_file("imagenet_classes.txt").read_text().splitlines()
    return names if n == len(names) else [f"class {i}" for i in range(n)]


def load_runner(path: Path, manifest: dict):
    target = targets.of_bundle(manifest)
    return backend(target.backend).load(path, target, manifest["precision"], fallback=True)


def predict(bundle_dir: str | Path, images: list[str], top: int = 5) -> list[dict]:
    path = Path(bundle_dir)
    manifest = bundle.read_manifest(path)
    recipe = Preprocess.from_dict(manifest["preprocess"])
    batch = []
    for name in images:
        try:
            with Image.open(name) as img:
                img.load()
                batch.append(preprocess_image(img, recipe))
        except FileNotFoundError:
            raise UserError(f"image '{name}' does not exist") from None
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"cannot read image '{name}' ({type(e).__name__}); pass a jpg/png/bmp/webp file") from None
    runner = load_runner(path, manifest)
    logits = run_batched(runner.run, np.stack(batch), manifest["input"]["batch"])
    names = class_names(logits.shape[1])
    results = []
    for name, row in zip(images, logits):
        p = np.exp(row - row.max())
        p /= p.sum()
        order = np.argsort(-p)[:top]
        results.append({"image": str(name), "runtime": f"{runner.describe()['runtime']} {runner.device}",
                        "top": [{"class": int(i), "name": names[i], "probability": float(p[i])} for i in order]})
    return results
