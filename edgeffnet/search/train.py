"""The built-in evaluator's torch side: train a candidate on a labelled image folder, score it on another.

An ImageFolder is one sub-folder per class holding that class's images (jpg, png, bmp, webp); class
order is sorted folder names, the same in the training and the validation folder. Training is plain
supervised learning (AdamW, cross-entropy, random horizontal flips) at the candidate's own resolution:
resolution is one of the three things the search varies, so each candidate sees the pixels it would get.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import ImageTooLarge, Preprocess, normalise, read_image, resize_and_crop
from edgeffnet.network.model import TORCH_NUMERICS, EfficientNet
from edgeffnet.network.reference import input_recipe
from edgeffnet.specs.scaling import BASELINES, parse_spec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
INITS = ("scratch", "pretrained")


def image_folder(root: str | Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image path, label)]). With `classes` given, the folder must hold exactly those."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder '{root}' does not exist; give a folder with one sub-folder per class")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is not None and found != classes:
        raise UserError(
            f"'{root}' has classes {found} but the training folder has {classes}; use the same class folders in both"
        )
    if len(found) < 2:
        raise UserError(
            f"'{root}' has {len(found)} class folder(s); an ImageFolder needs one sub-folder per "
            f"class and at least two classes"
        )
    items = [
        (p, label)
        for label, name in enumerate(found)
        for p in sorted((root / name).rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]
    if not items:
        raise UserError(f"'{root}' holds no images (jpg, png, bmp, webp) in its class folders")
    return found, items


class _Images(torch.utils.data.Dataset):
    def __init__(self, items, recipe: Preprocess, flip: bool, seed: int):
        self.items, self.recipe, self.flip, self.seed = items, recipe, flip, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            view = resize_and_crop(read_image(path)[0], self.recipe)
        except ImageTooLarge as e:
            raise UserError(f"image '{path}' is too large ({e}); remove it from the folder") from None
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise UserError(f"cannot read image '{path}' ({e}); remove it from the folder") from None
        if self.flip and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(normalise(view, self.recipe)), label


def _initial_model(spec_text: str, num_classes: int, init: str) -> tuple[EfficientNet, Preprocess, dict]:
    """From scratch (PyTorch's default init, as the paper trained its candidates), or with every tensor of
    the family baseline's pretrained weights whose name and shape fit copied in (the classifier never fits a
    new label set, so it always starts fresh)."""
    spec = parse_spec(spec_text)
    if init == "scratch":
        return EfficientNet(spec, num_classes, TORCH_NUMERICS), input_recipe(spec, None), {"init": "scratch"}
    from edgeffnet.network import weights as _weights

    base = parse_spec(BASELINES[spec.family])
    if base.name not in _weights.PRETRAINED:
        raise UserError(
            f"no pretrained weights exist for {base.name} (only {', '.join(sorted(_weights.PRETRAINED))}); "
            f"use --init scratch, or search from lite0"
        )
    w = _weights.load_pretrained(base)
    model = EfficientNet(spec, num_classes, w.numerics)
    own = model.state_dict()
    fits = {
        k: v
        for k, v in w.state_dict.items()
        if k in own and own[k].shape == v.shape and not k.startswith("classifier.")
    }
    model.load_state_dict(fits, strict=False)
    return (
        model,
        input_recipe(spec, w),
        {"init": f"pretrained {base.name}", "transferred_tensors": len(fits), "tensors": len(own)},
    )


def train_and_evaluate(
    spec: str,
    data: str | Path,
    val: str | Path,
    epochs: int,
    init: str = "scratch",
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    echo=None,
) -> dict:
    """Train `spec` for `epochs` on `data`, return {"accuracy": top-1 on `val`, ...what was done}."""
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise UserError(
            f"--epochs and --batch-size must be at least 1 and --lr positive (got {epochs}, {batch_size}, {lr:g})"
        )
    if init not in INITS:
        raise UserError(f"--init takes {', '.join(INITS)}, not '{init}'")
    classes, train_items = image_folder(data)
    _, val_items = image_folder(val, classes)
    torch.manual_seed(seed)
    model, recipe, how = _initial_model(spec, len(classes), init)
    train_set = _Images(train_items, recipe, flip=True, seed=seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    steps = epochs * math.ceil(len(train_set) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    losses = []
    for epoch in range(epochs):
        train_set.epoch = epoch
        model.train()
        for x, y in loader:
            if len(y) < 2:  # BatchNorm cannot train on a single image
                continue
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        if echo:
            echo(f"epoch {epoch + 1}/{epochs}: mean loss {np.mean(losses[-len(loader) :]):.4f}")
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(_Images(val_items, recipe, flip=False, seed=seed), batch_size=64):
            correct += int((model(x).argmax(1) == y).sum())
    return {
        "accuracy": correct / len(val_items),
        "classes": len(classes),
        "train_images": len(train_items),
        "val_images": len(val_items),
        "epochs": epochs,
        "final_loss": losses[-1] if losses else None,
        "train_seconds": round(time.perf_counter() - t0, 2),
        **how,
    }
