"""`edgeffnet predict`: the compiled artifact on real images, with the bundle's own preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from edgeffnet.bundle import RANDOM_WEIGHTS, Bundle
from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import ImageTooLarge, Preprocess, preprocess_image, read_image
from edgeffnet.core.resources import package_file
from edgeffnet.core.verify import run_batched


def class_names(n: int) -> list[str]:
    names = package_file("imagenet_classes.txt").read_text().splitlines()
    return names if n == len(names) else [f"class {i}" for i in range(n)]


def predict(bundle_or_path: Bundle | str | Path, images: list[str], top: int = 5) -> list[dict]:
    b = bundle_or_path if isinstance(bundle_or_path, Bundle) else Bundle.open(bundle_or_path)
    recipe = Preprocess.from_dict(b.manifest.preprocess)
    batch = []
    for name in images:
        try:
            batch.append(preprocess_image(read_image(name)[0], recipe))
        except FileNotFoundError:
            raise UserError(f"image '{name}' does not exist") from None
        except IsADirectoryError:
            raise UserError(f"'{name}' is a directory; pass image files") from None
        except ImageTooLarge as e:
            raise UserError(f"image '{name}' is too large ({e}); pass a smaller image") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise UserError(f"cannot read image '{name}' ({type(e).__name__}); pass a jpg/png/bmp/webp file") from None
    runner = b.runner()
    logits = run_batched(runner.run, np.stack(batch), b.manifest.input["batch"])
    if not np.all(np.isfinite(logits)):  # softmax of NaN is NaN: a percentage would be printed as 'nan%'
        raise UserError(
            f"the model in {b.path} gives NaN or Inf for these images; its weights are damaged: "
            f"rebuild the bundle from a good checkpoint"
        )
    if logits.ndim != 2 or logits.shape[1] != b.manifest.num_classes:
        raise UserError(
            f"the model in {b.path} gives outputs of shape {tuple(logits.shape)} but its manifest says "
            f"{b.manifest.num_classes} classes: the bundle's files do not belong together; rebuild it"
        )
    names = class_names(logits.shape[1])
    results = []
    for name, row in zip(images, logits):
        p = np.exp(row - row.max())
        p /= p.sum()
        order = np.argsort(-p)[:top]
        results.append(
            {
                "image": str(name),
                "runtime": f"{runner.describe()['runtime']} {runner.device}",
                "random_weights": b.random_weights,
                **({"warning": RANDOM_WEIGHTS} if b.random_weights else {}),
                "top": [{"class": int(i), "name": names[i], "probability": float(p[i])} for i in order],
            }
        )
    return results
