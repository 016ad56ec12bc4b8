"""The labelled data `edgeffnet eval` and `build --val` read: labels as written, turned into the head's classes.

Labels: an ImageFolder whose sub-folders are named by WordNet ID (n02123159), class index (0..999) or
class name (case, spaces, '_' and '-' do not matter), a CSV of `path,label` rows, or, with --classes, a
fine-tuned head's own class list. A folder of images with no sub-folders is unlabelled: agreement only.
Every label is resolved before any work: a bad one is refused in one line, not found halfway through.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from edgeffnet.core.errors import UserError
from edgeffnet.core.resources import package_file
from edgeffnet.core.untrusted import TEXT_CAP, UntrustedFileError, read_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# -- labels ---------------------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    """'Egyptian_cat', 'egyptian-cat' and "jack-o'-lantern" / 'jack_o_lantern' each compare equal."""
    return re.sub(r"[^0-9a-z]+", " ", name.lower().replace("'", "")).strip()


class Labels:
    """Turns a label as written (index, WordNet ID, class name) into a class index of the bundle's head."""

    def __init__(self, classes: list[str], imagenet: bool):
        self.classes, self.imagenet = classes, imagenet
        self.wnids = (
            {w: i for i, w in enumerate(package_file("imagenet_wnids.txt").read_text().split())} if imagenet else {}
        )
        self.by_name: dict[str, list[int]] = {}
        for i, name in enumerate(classes):
            self.by_name.setdefault(_normalise(name), []).append(i)

    def index(self, text: str) -> int | None:
        """The class index, None where `text` names no class; a name two classes share is an error."""
        text = text.strip()
        # ASCII digits only, and few: str.isdigit() takes '²' and '①', which int() refuses, and int() of
        # 4300 digits is an error of its own.
        if re.fullmatch(r"[0-9]+", text):
            return int(text) if len(text) <= 9 and int(text) < len(self.classes) else None
        if re.fullmatch(r"n[0-9]{8}", text):
            return self.wnids.get(text)
        found = self.by_name.get(_normalise(text), [])
        if len(found) > 1:  # ImageNet's 'Cardigan' (the corgi) and 'cardigan' (the sweater)
            shown = ", ".join(map(str, found[:5])) + (", ..." if len(found) > 5 else "")
            raise UserError(
                f"label {_short(text)} names {len(found)} classes ({shown}); use the class index"
                + (" or the WordNet ID" if self.imagenet else "")
                + " instead"
            )
        return found[0] if found else None

    def describe(self) -> str:
        return (
            "WordNet ID, class index or ImageNet class name"
            if self.imagenet
            else f"class index (0..{len(self.classes) - 1}) or a name from the class list"
        )


def _short(text: str, limit: int = 60) -> str:
    """A label or name from a file, quoted and shortened for a one-line message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def class_list(num_classes: int, classes_file: str | Path | None = None) -> tuple[list[str], bool]:
    """(the head's class names, whether they are ImageNet's 1000). --classes gives a fine-tuned head's list."""
    if classes_file is None:
        names = package_file("imagenet_classes.txt").read_text().splitlines()
        if num_classes == len(names):
            return names, True
        return [str(i) for i in range(num_classes)], False
    try:
        text = read_text(classes_file, TEXT_CAP, "--classes")
    except UntrustedFileError as e:
        raise UntrustedFileError(f"cannot read {e}; give a text file with one class name per line") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise UserError(
            f"--classes {classes_file} lists {len(names)} names but the bundle's head has {num_classes} "
            f"classes; give one name per line, in the head's order"
        )
    return names, False


def classes_source(classes_file: str | Path | None, imagenet: bool) -> str:
    """Where the labels' class names came from, as a result records it."""
    return f"--classes {classes_file}" if classes_file else "ImageNet" if imagenet else "class indices"


# -- the data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    source: Path
    layout: str  # imagefolder | csv | unlabelled
    items: list  # [(image path, class index or None)]

    @property
    def labelled(self) -> bool:
        return self.layout != "unlabelled"

    def record(self) -> dict:
        return {
            "source": str(self.source),
            "layout": self.layout,
            "images": len(self.items),
            "classes_present": len({label for _, label in self.items}) if self.labelled else None,
        }


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def open_dataset(path: str | Path, labels: Labels, option: str = "--data") -> Dataset:
    """An ImageFolder, a CSV of path,label or an unlabelled folder; every label is resolved before any work."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{option} {path} does not exist; give an image folder or a CSV of path,label rows")
    if not path.is_dir():  # a CSV; read_text refuses a device, a FIFO or a socket (/dev/null, a pipe)
        return _csv_dataset(path, labels, option)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    items, unknown = [], []
    for folder in folders:
        images = _images_in(folder)
        if not images:
            continue
        label = labels.index(folder.name)
        if label is None:
            unknown.append(folder.name)
        items += [(p, label) for p in images]
    if unknown:
        raise UserError(
            f"{len(unknown)} folder name(s) in {path} are not classes of this bundle "
            f"({', '.join(_short(u) for u in unknown[:4])}{', ...' if len(unknown) > 4 else ''}); "
            f"name each folder by {labels.describe()}, or pass --classes FILE"
        )
    if items:
        return Dataset(path, "imagefolder", items)
    loose = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not loose:
        raise UserError(f"{option} {path} holds no images (jpg, png, bmp, webp), neither in class folders nor directly")
    return Dataset(path, "unlabelled", [(p, None) for p in loose])


def _csv_dataset(path: Path, labels: Labels, option: str) -> Dataset:
    text = read_text(path, TEXT_CAP, option)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as e:
        raise UserError(f"cannot read {option} {path} as a CSV of path,label ({type(e).__name__})") from None
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]  # a header row
    items, problems = [], []
    for line, row in enumerate(rows, 1):
        if len(row) < 2:
            problems.append(f"row {line} has no label")
            continue
        image = Path(row[0].strip())
        image = image if image.is_absolute() else path.parent / image  # relative to the CSV, not the shell
        label = labels.index(row[1])
        if label is None:
            problems.append(f"row {line}: label {_short(row[1].strip())} is not a class")
        elif not image.is_file():
            problems.append(f"row {line}: {image} does not exist")
        else:
            items.append((image, label))
    if problems:
        raise UserError(
            f"{option} {path}: {len(problems)} bad row(s) ({'; '.join(problems[:3])}); each row is "
            f"path,label with the label a {labels.describe()}"
        )
    if not items:
        raise UserError(f"{option} {path} has no rows; write one path,label row per image")
    return Dataset(path, "csv", items)


def first_readable(data: Dataset, option: str) -> None:
    """Refuse a set none of whose images can be read, before any work: found at the first readable one,
    so a good set costs one image."""
    from edgeffnet.core.preprocess import read_image

    for path, _ in data.items:
        try:
            read_image(path)
            return
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    raise UserError(
        f"none of the {len(data.items)} images in {option} {data.source} can be read (e.g. "
        f"{data.items[0][0].name}); give jpg, png, bmp or webp files"
    )
