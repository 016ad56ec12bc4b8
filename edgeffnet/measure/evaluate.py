"""`edgeffnet eval`: accuracy of a bundle's artifacts on the user's labelled images, paired with FP32.

The FP32 reference is the bundle's simplified ONNX graph (model.sim.onnx, verified within 1e-4 of PyTorch
at build time) in ONNX Runtime, so this runs on a device-side install: no PyTorch. Every artifact sees the
same images with the bundle's own preprocessing, which makes the comparison paired: the accuracy drop
(FP32 minus artifact) gets Newcombe's paired interval (1998, method 10: Wilson score intervals of the two
accuracies combined with the correlation of the pairs), which, unlike an interval built from the
discordant pairs alone, stays honest when there are none (a perfect score on 20 images is not proof of
zero drop). The exact McNemar p-value (the conditional binomial test on the discordant pairs) comes with it.

Labels: an ImageFolder whose sub-folders are named by WordNet ID (n02123159), class index (0..999) or
class name (case, spaces, '_' and '-' do not matter), a CSV of `path,label` rows, or, with --classes, a
fine-tuned head's own class list. A folder of images with no sub-folders is unlabelled: agreement only.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgeffnet.core.errors import UserError
from edgeffnet.core.files import atomic_write_json, utc_now
from edgeffnet.core.layout import EVAL, SIMPLIFIED
from edgeffnet.core.preprocess import Preprocess, load_image
from edgeffnet.core.resources import package_file
from edgeffnet.core.untrusted import TEXT_CAP, UntrustedFileError, read_text
from edgeffnet.core.verify import row_cosine, run_batched
from edgeffnet.measure import eval_result
from edgeffnet.measure.eval_result import EvalResult

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals
INTERVAL_METHOD = "Newcombe paired score interval (1998, method 10), 95%"


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


# -- what runs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str  # what ran, where: the row's name in the result
    run: Callable[[np.ndarray], np.ndarray]  # float32 NCHW batch -> logits
    batch: int | None  # the fixed batch it takes; None: any


def _onnx_runner(graph: Path):
    try:
        from edgeffnet.backends import onnxruntime as ort_backend
    except ImportError:
        raise UserError(
            "eval runs the bundle's FP32 ONNX graph in ONNX Runtime, which this install lacks; "
            "pip install 'edgeffnet[onnxruntime]'"
        ) from None
    return ort_backend.open_graph(graph, exact=True)


def artifact_models(
    directory: Path,
    graph: str,
    target,
    precision: str,
    batch: int | None,
    pending: bool,
    settings=None,
    shape: list | None = None,
) -> tuple[Model, list[Model], list[str]]:
    """(the FP32 reference, the artifacts to compare with it, notes on what was left out), for a bundle
    or a build's staging directory: the precision graph in ONNX Runtime, the compiled artifact in the
    target's runtime."""
    from edgeffnet.bundle import check_input, fp32_graph

    directory = Path(directory)
    reference_graph = fp32_graph(directory, "eval")
    fp32 = _onnx_runner(reference_graph)
    if shape is not None:
        check_input(fp32, shape, str(reference_graph))
    reference = Model(f"FP32 ONNX ({SIMPLIFIED}, onnxruntime)", fp32.run, batch)
    artifacts, notes = [], []
    if graph != SIMPLIFIED:
        runner = _onnx_runner(directory / graph)
        if shape is not None:
            check_input(runner, shape, str(directory / graph))
        artifacts.append(Model(f"{precision.upper()} ONNX ({graph}, onnxruntime)", runner.run, batch))
    if target.backend == "onnxruntime":
        notes.append("the onnxruntime target's artifact is its ONNX graph, evaluated above")
    elif pending:
        notes.append(f"the {target.backend} engine is pending (finish it with edgeffnet compile): not evaluated")
    else:
        from edgeffnet.backends import get

        runner = get(target.backend).load(directory, target, precision, settings)
        if shape is not None:
            check_input(runner, shape, f"{directory}'s {target.backend} artifact")
        artifacts.append(Model(f"{precision.upper()} {target.backend} {runner.device} artifact", runner.run, batch))
    return reference, artifacts, notes


# -- the statistics (pure functions of counts, so they can be checked by hand) ---------------------------


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test: under no difference, b of the b + c discordant pairs is Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(ref_correct: np.ndarray, got_correct: np.ndarray, z: float = Z95) -> dict:
    """Accuracy of the reference minus the artifact's on the same images, with Newcombe's method-10 interval.

    a: both right, b: only the reference right, c: only the artifact right, d: both wrong."""
    r, g = np.asarray(ref_correct, bool), np.asarray(got_correct, bool)
    a, b, c, d = (int(np.sum(r & g)), int(np.sum(r & ~g)), int(np.sum(~r & g)), int(np.sum(~r & ~g)))
    n = a + b + c + d
    if n == 0:
        raise ValueError("no pairs")
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b, n, z), wilson(a + c, n, z)
    # The correlation of the pairs, with Newcombe's shrinkage of a positive one by n/2 (method 10 as published).
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = cross / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    diff = p1 - p2
    return {
        "difference": diff,
        "interval": [max(-1.0, diff - delta), min(1.0, diff + epsilon)],
        "both_right": a,
        "reference_only": b,
        "artifact_only": c,
        "both_wrong": d,
        "mcnemar_p": mcnemar_exact_p(b, c),
    }


def _accuracy(correct: np.ndarray) -> dict:
    k, n = int(np.sum(correct)), int(len(correct))
    return {"accuracy": k / n, "correct": k, "interval": list(wilson(k, n))}


def summarise(reference: str, ref_top: np.ndarray, artifacts: dict, labels: np.ndarray | None) -> dict:
    """The result from each model's top-k class indices (rows: images) and each artifact's cosine with FP32.

    `artifacts` maps a name to (top-k indices, cosine per image); `labels` is None for unlabelled data."""
    k = ref_top.shape[1]
    ref_row: dict = {"name": reference}
    if labels is not None:
        ref1, ref5 = ref_top[:, 0] == labels, np.any(ref_top == labels[:, None], axis=1)
        ref_row |= {"top1": _accuracy(ref1), f"top{k}": _accuracy(ref5)}
    rows = []
    for name, (top, cosine) in artifacts.items():
        row = {
            "name": name,
            "agreement": {
                "top1_agreement": float(np.mean(top[:, 0] == ref_top[:, 0])),
                f"top{k}_overlap": float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top, ref_top)])),
                "cosine_mean": float(np.mean(cosine)),
                "cosine_min": float(np.min(cosine)),
            },
        }
        if labels is not None:
            got1, got5 = top[:, 0] == labels, np.any(top == labels[:, None], axis=1)
            row |= {
                "top1": _accuracy(got1),
                f"top{k}": _accuracy(got5),
                "top1_drop": paired_difference(ref1, got1),
                f"top{k}_drop": paired_difference(ref5, got5),
            }
        rows.append(row)
    return {
        "reference": ref_row,
        "artifacts": rows,
        "topk": k,
        "interval_method": INTERVAL_METHOD if labels is not None else None,
    }


# -- the measurement ------------------------------------------------------------------------------------


def _top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def measure(
    data: Dataset,
    recipe: Preprocess,
    reference: Model,
    artifacts: list[Model],
    batch: int = 32,
    progress: Callable[[float], None] | None = None,
    num_classes: int | None = None,
) -> dict:
    """Every model on every image, `batch` images at a time. Ctrl-C stops after the last whole batch and
    the result covers the images every model saw, marked partial."""
    ref_top, labels, tops, cosines, skipped = (
        [],
        [],
        {m.name: [] for m in artifacts},
        {m.name: [] for m in artifacts},
        [],
    )
    k, interrupted = None, False
    try:
        for start in range(0, len(data.items), batch):
            chunk, chunk_labels = [], []
            for path, label in data.items[start : start + batch]:
                try:
                    chunk.append(load_image(path, recipe))
                    chunk_labels.append(label)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                    # Unreadable, or too large to decode or resize (ImageTooLarge): every model skips it
                    # alike, so the pairs stay paired.
                    skipped.append(str(path))
            if chunk:
                x = np.stack(chunk)
                ref = run_batched(reference.run, x, reference.batch)
                if num_classes is not None and ref.shape[1] != num_classes:
                    raise UserError(
                        f"the FP32 graph outputs {ref.shape[1]} classes but the manifest says "
                        f"{num_classes} classes: the bundle's files do not belong together; rebuild it"
                    )
                k = k or min(5, ref.shape[1])
                outs = {m.name: run_batched(m.run, x, m.batch) for m in artifacts}
                # Kept only once every model has its outputs: an interrupted batch leaves no unpaired rows.
                ref_top.append(_top(ref, k))
                labels += chunk_labels
                for name, got in outs.items():
                    tops[name].append(_top(got, k))
                    cosines[name].append(row_cosine(ref, got))
            if progress:
                progress(min(1.0, (start + batch) / len(data.items)))
    except KeyboardInterrupt:
        interrupted = True
    done = len(labels)
    result = {
        "data": data.record(),
        "images": done,
        "images_total": len(data.items),
        "partial": interrupted,
        "skipped_unreadable": skipped[:20],
        "skipped_count": len(skipped),
    }
    if done == 0:
        return result | {"reference": None, "artifacts": []}
    summary = summarise(
        reference.name,
        np.concatenate(ref_top),
        {m.name: (np.concatenate(tops[m.name]), np.concatenate(cosines[m.name])) for m in artifacts},
        np.asarray(labels) if data.labelled else None,
    )
    return result | summary


# -- `edgeffnet eval` -----------------------------------------------------------------------------------


def result_name(data: str | Path) -> str:
    """eval/<name>.json: the data folder's (or CSV's) name, made safe for a file name."""
    p = Path(data).resolve()
    return re.sub(r"[^A-Za-z0-9._-]+", "-", p.stem if p.is_file() else p.name).strip("-.")[:80] or "data"


PARTIAL = ".partial.json"


def _saved_result(path: Path) -> EvalResult | None:
    try:
        return eval_result.read(path)
    except UserError:
        return None


def result_path(eval_dir: Path, data: str | Path) -> Path:
    """Where the result for `data` goes: eval/NAME.json, unless that holds another folder's result of the
    same name (val/ of two projects): then eval/NAME-<hash of the resolved path>.json."""
    import hashlib

    resolved = str(Path(data).resolve())
    plain = eval_dir / f"{result_name(data)}.json"
    held = (_saved_result(plain) or {}).get("data")
    # A result older than the field, or none at all: this folder's to (re)write, as before.
    if not isinstance(held, dict) or held.get("resolved", resolved) == resolved:
        return plain
    return eval_dir / f"{result_name(data)}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}.json"


def save_result(dest: Path, result: dict) -> tuple[Path, str | None]:
    """Write `result` to `dest` (tagged with the eval result's format), except that a partial result never replaces a more complete one: it then
    goes beside it as NAME.partial.json. Returns where it went and, then, a note saying so. A complete
    result removes the partial one it supersedes. Raises OSError where nothing could be written."""
    note = None
    if result["partial"]:
        held = _saved_result(dest)
        images = held.get("images") if isinstance(held, dict) else None
        if (
            held is not None
            and isinstance(images, int)
            and not isinstance(images, bool)
            and (held.get("partial") is not True or images > result["images"])
        ):
            what = "complete result" if held.get("partial") is not True else f"partial result of {images} images"
            dest, note = dest.with_name(dest.stem + PARTIAL), f"kept the {what} in {dest}"
    dest.parent.mkdir(exist_ok=True)
    atomic_write_json(dest, eval_result.EVAL_RESULT.stamp() | result)
    if not result["partial"]:
        dest.with_name(dest.stem + PARTIAL).unlink(missing_ok=True)
    return dest, note


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


def evaluate(
    bundle_dir: str | Path, data: str | Path, classes: str | Path | None = None, batch: int = 32, progress=None
) -> tuple[EvalResult, Path | None]:
    """Evaluate a bundle on `data`; write the result into BUNDLE/eval/<name>.json. Returns (result, saved)."""
    from contextlib import nullcontext

    from edgeffnet.bundle import Bundle

    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise UserError(f"--batch must be a whole number of at least 1, got {batch!r}")
    b = Bundle.open(bundle_dir)
    m = b.manifest
    names, imagenet = class_list(m.num_classes, classes)
    dataset = open_dataset(data, Labels(names, imagenet))
    reference, artifacts, notes = artifact_models(
        b.path,
        m.graph,
        b.target,
        m.precision,
        m.input.get("batch"),
        bool((m.stages.get("compile") or {}).get("pending")),
        shape=m.input["shape"],
    )
    bar = progress(f"eval {len(dataset.items)} images") if progress else nullcontext()
    with bar as tick:
        result = measure(dataset, Preprocess.from_dict(m.preprocess), reference, artifacts, batch, tick, m.num_classes)
    result = eval_result.tagged(
        "edgeffnet eval",
        {
            "created": utc_now(),
            "bundle": str(b.path),
            "model": {
                "spec": m.spec.get("spec"),
                "precision": m.precision,
                "target": m.target.get("name"),
                "random_weights": b.random_weights,
            },
            **result,
            "data": dataset.record()
            | {"classes": classes_source(classes, imagenet), "resolved": str(Path(data).resolve())},
            "notes": notes,
        },
    )
    if result["images"] == 0:
        if not result["partial"]:
            raise UserError(
                f"none of the {len(dataset.items)} images in {data} could be read (e.g. "
                f"{result['skipped_unreadable'][0]}); give jpg, png, bmp or webp files"
            )
        return result, None
    try:
        dest, note = save_result(result_path(b.path / EVAL, data), result)
    except OSError:
        return result, None
    if note:
        result["notes"] = [*notes, note]
    return result, dest


# -- the labelled build gate ----------------------------------------------------------------------------


def drop_gate(result: dict, max_drop_points: float, allow_drop: bool, trained: bool, precision: str) -> dict:
    """The labelled gate of `build --val`: each artifact's top-1 accuracy drop against FP32, in points,
    at most `max_drop_points` (the point estimate; the interval is reported beside it)."""
    from edgeffnet.precision.fidelity import FidelityTooLow

    rows = [r for r in result["artifacts"] if "top1_drop" in r]
    if not rows:
        return {"gated": False, "reason": "no artifact could be evaluated on --val"}
    worst = max(rows, key=lambda r: r["top1_drop"]["difference"])
    d = worst["top1_drop"]
    verdict = {
        "gate": "top-1 accuracy drop on labelled --val data",
        "val": result["data"],
        "images": result["images"],
        "max_drop_points": max_drop_points,
        "worst": worst["name"],
        "fp32_top1": result["reference"]["top1"]["accuracy"],
        "top1": worst["top1"]["accuracy"],
        "drop_points": 100 * d["difference"],
        "interval_points": [100 * v for v in d["interval"]],
        "interval_method": INTERVAL_METHOD,
        "mcnemar_p": d["mcnemar_p"],
    }
    if not trained:
        return {"gated": False, "reason": "random-init weights: numbers reported, no accuracy claim", **verdict}
    verdict |= {"gated": True, "passed": verdict["drop_points"] <= max_drop_points}
    if not verdict["passed"] and not allow_drop:
        # A set too small to resolve the bar is said: one image then moves the drop by more than the bar.
        coarse = (
            f" (one image of {verdict['images']} is {100 / verdict['images']:.2f} points: more labelled "
            f"images resolve the bar)"
            if 100 / verdict["images"] > max_drop_points
            else ""
        )
        raise FidelityTooLow(
            f"{precision.upper()} {drop_line(verdict)}, above --max-drop {max_drop_points:g}{coarse}; "
            f"pass --allow-drop to keep it or --max-drop to change the bar"
        )
    return verdict


def drop_line(v: dict) -> str:
    lo, hi = v["interval_points"]
    return (
        f"top-1 accuracy drop {v['drop_points']:+.2f} points (95% interval {lo:+.2f} to {hi:+.2f}, Newcombe "
        f"paired) for the {v['worst']}: FP32 {v['fp32_top1']:.1%} -> {v['top1']:.1%} on {v['images']} "
        f"labelled images"
    )


def table(result: dict):
    """One row per model: accuracy (labelled data), the paired drop with its interval, agreement with FP32."""
    from rich.table import Table

    k, labelled = result["topk"], result["reference"].get("top1") is not None
    d = result["data"]
    t = Table(
        title=f"{result['model']['spec']} {result['model']['precision']} on {d['source']} ({d['layout']}, "
        f"{result['images']} images{', PARTIAL' if result['partial'] else ''})"
    )
    cols = (
        ["model"]
        + (["top-1", f"top-{k}", "top-1 drop (pts)", "95% interval", "McNemar p"] if labelled else [])
        + ["top-1 agree", f"top-{k} overlap", "cos mean"]
    )
    for c in cols:
        t.add_column(c, justify="left" if c == "model" else "right")
    ref = result["reference"]
    t.add_row(
        ref["name"],
        *([f"{ref['top1']['accuracy']:.2%}", f"{ref[f'top{k}']['accuracy']:.2%}", "", "", ""] if labelled else []),
        "",
        "",
        "",
    )
    for r in result["artifacts"]:
        a = r["agreement"]
        cells = []
        if labelled:
            drop = r["top1_drop"]
            lo, hi = (100 * v for v in drop["interval"])
            cells = [
                f"{r['top1']['accuracy']:.2%}",
                f"{r[f'top{k}']['accuracy']:.2%}",
                f"{100 * drop['difference']:+.2f}",
                f"{lo:+.2f} .. {hi:+.2f}",
                f"{drop['mcnemar_p']:.3g}",
            ]
        t.add_row(
            r["name"], *cells, f"{a['top1_agreement']:.2%}", f"{a[f'top{k}_overlap']:.2%}", f"{a['cosine_mean']:.5f}"
        )
    if labelled:
        t.caption = f"drop = FP32 minus artifact; interval: {result['interval_method']}"
    return t


def lines(result: dict) -> list[str]:
    """The result as plain lines, for a build log."""
    k, out = result["topk"], []
    ref = result["reference"]
    out.append(f"{ref['name']}: top-1 {ref['top1']['accuracy']:.2%}, top-{k} {ref[f'top{k}']['accuracy']:.2%}")
    for r in result["artifacts"]:
        drop = r["top1_drop"]
        lo, hi = (100 * v for v in drop["interval"])
        out.append(
            f"{r['name']}: top-1 {r['top1']['accuracy']:.2%}, top-{k} {r[f'top{k}']['accuracy']:.2%}, "
            f"drop {100 * drop['difference']:+.2f} points (95% {lo:+.2f} to {hi:+.2f}), "
            f"agreement {r['agreement']['top1_agreement']:.2%}"
        )
    return out
