"""`edgeffnet eval`: accuracy of a bundle's artifacts on the user's labelled images, paired with FP32.

The FP32 reference is the bundle's simplified ONNX graph (model.sim.onnx, verified within 1e-4 of PyTorch
at build time) in ONNX Runtime, so this runs on a device-side install: no PyTorch. Every artifact sees the
same images with the bundle's own preprocessing, which makes the comparison paired: the accuracy drop
(FP32 minus artifact) gets Newcombe's paired interval (1998, method 10: Wilson score intervals of the two
accuracies combined with the correlation of the pairs), which, unlike an interval built from the
discordant pairs alone, stays honest when there are none (a perfect score on 20 images is not proof of
zero drop). The exact McNemar p-value (the conditional binomial test on the discordant pairs) comes with it.

Reading the labelled data is eval_data.py; the statistics, the build's drop gate and the tables are
eval_scores.py. Their names stay importable from here, where the build and the eval command find them.
"""

from __future__ import annotations

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
from edgeffnet.core.verify import row_cosine, run_batched
from edgeffnet.measure import eval_result
from edgeffnet.measure.eval_data import (
    IMAGE_SUFFIXES,
    Dataset,
    Labels,
    class_list,
    classes_source,
    first_readable,
    open_dataset,
)
from edgeffnet.measure.eval_result import EvalResult
from edgeffnet.measure.eval_scores import (
    INTERVAL_METHOD,
    Z95,
    drop_gate,
    drop_line,
    lines,
    mcnemar_exact_p,
    paired_difference,
    summarise,
    table,
    wilson,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "INTERVAL_METHOD",
    "PARTIAL",
    "Z95",
    "Dataset",
    "Labels",
    "Model",
    "artifact_models",
    "class_list",
    "classes_source",
    "drop_gate",
    "drop_line",
    "evaluate",
    "first_readable",
    "lines",
    "mcnemar_exact_p",
    "measure",
    "open_dataset",
    "paired_difference",
    "result_name",
    "result_path",
    "save_result",
    "summarise",
    "table",
    "wilson",
]


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


# -- the measurement ------------------------------------------------------------------------------------


def _top(logits: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


class _Paired:
    """What every model gave on the images all of them saw: top-k indices, labels, cosines with FP32."""

    def __init__(self, artifacts: list[Model]):
        self.k: int | None = None  # top-k, k = min(5, classes): set by the first batch
        self.ref_top: list[np.ndarray] = []
        self.labels: list = []
        self.tops: dict[str, list[np.ndarray]] = {m.name: [] for m in artifacts}
        self.cosines: dict[str, list[np.ndarray]] = {m.name: [] for m in artifacts}

    def add(self, ref: np.ndarray, outs: dict[str, np.ndarray], labels: list) -> None:
        self.k = self.k or min(5, ref.shape[1])
        self.ref_top.append(_top(ref, self.k))
        self.labels += labels
        for name, got in outs.items():
            self.tops[name].append(_top(got, self.k))
            self.cosines[name].append(row_cosine(ref, got))

    def summary(self, reference: Model, artifacts: list[Model], labelled: bool) -> dict:
        return summarise(
            reference.name,
            np.concatenate(self.ref_top),
            {m.name: (np.concatenate(self.tops[m.name]), np.concatenate(self.cosines[m.name])) for m in artifacts},
            np.asarray(self.labels) if labelled else None,
        )


def _read_batch(items: list, recipe: Preprocess, skipped: list[str]) -> tuple[list[np.ndarray], list]:
    """(the readable images of `items`, preprocessed, and their labels); the others go to `skipped`."""
    images, labels = [], []
    for path, label in items:
        try:
            images.append(load_image(path, recipe))
            labels.append(label)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            # Unreadable, or too large to decode or resize (ImageTooLarge): every model skips it
            # alike, so the pairs stay paired.
            skipped.append(str(path))
    return images, labels


def _reference_logits(reference: Model, x: np.ndarray, num_classes: int | None) -> np.ndarray:
    ref = run_batched(reference.run, x, reference.batch)
    if num_classes is not None and ref.shape[1] != num_classes:
        raise UserError(
            f"the FP32 graph outputs {ref.shape[1]} classes but the manifest says "
            f"{num_classes} classes: the bundle's files do not belong together; rebuild it"
        )
    return ref


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
    paired, skipped = _Paired(artifacts), []
    interrupted = False
    try:
        for start in range(0, len(data.items), batch):
            chunk, chunk_labels = _read_batch(data.items[start : start + batch], recipe, skipped)
            if chunk:
                x = np.stack(chunk)
                ref = _reference_logits(reference, x, num_classes)
                outs = {m.name: run_batched(m.run, x, m.batch) for m in artifacts}
                # Kept only once every model has its outputs: an interrupted batch leaves no unpaired rows.
                paired.add(ref, outs, chunk_labels)
            if progress:
                progress(min(1.0, (start + batch) / len(data.items)))
    except KeyboardInterrupt:
        interrupted = True
    done = len(paired.labels)
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
    return result | paired.summary(reference, artifacts, data.labelled)


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
