"""Class activation maps (Zhou et al. 2016): where in the photo the network found a class.

With global average pooling before the classifier, a class's logit is the spatial mean of one map, the
final feature map weighted by the classifier's row for that class:

    M_c(x, y) = sum_k W[c, k] * F_k(x, y)        logit_c = mean_xy M_c(x, y) + b_c

So a map needs two things: the final feature map (what pooling reads) and the classifier's weights.

Sources of the feature map:
- a model spec with weights: PyTorch, `model.features`.
- a bundle: the compiled artifact itself, with the pooled tensor added as a second output at load time
  (the backends' RunSettings.outputs: OpenVINO adds it to the shipped IR; ONNX Runtime to the precision
  graph where the artifact is a TensorRT engine). Why an extra output rather than a sibling graph cut at
  the feature map: the map then comes from exactly the weights, quantization and compiler the bundle
  ships, nothing is rebuilt, and the logits it reports beside the map are the artifact's own. The FP32
  map comes the same way from `model.sim.onnx` in ONNX Runtime. Both use the FP32 classifier weights
  (from `model.sim.onnx`), so the two maps differ only by what the reduced precision did to the
  features: does quantization move the attention? Their similarity is the Pearson correlation of the
  two maps over the feature-map cells.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeffnet.core.errors import UserError
from edgeffnet.core.layout import IR
from edgeffnet.core.preprocess import ImageTooLarge, Preprocess, normalise, read_image, resize_and_crop
from edgeffnet.core.user_text import visible

DISPLAY = 224  # pixels per panel: maps of models at different resolutions line up on one grid


def class_activation_maps(features: np.ndarray, weights: np.ndarray, classes: list[int]) -> np.ndarray:
    """(C, h, w) features and (K, C) classifier weights -> (len(classes), h, w) maps."""
    return np.einsum("kc,chw->khw", weights[classes].astype(np.float64), features.astype(np.float64))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps over their cells (1: the same attention up to scale and offset)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def upsample(cam: np.ndarray, size: int) -> np.ndarray:
    """A map onto the photo: bilinear, cell centres on pixel centres (PIL's convention)."""
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))


def softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max())
    return p / p.sum()


# -- sources ---------------------------------------------------------------------------------------


@dataclass
class Output:
    """What one source computed for one image."""

    features: np.ndarray  # (C, h, w)
    logits: np.ndarray  # (num_classes,)


@dataclass
class Source:
    """Something that turns a preprocessed image into (features, logits): a model or a compiled artifact."""

    label: str
    preprocess: Preprocess
    weights: np.ndarray  # classifier (num_classes, C), FP32
    run: Callable[[np.ndarray], Output]  # (1, 3, H, W) float32 -> Output
    info: dict = field(default_factory=dict)


def model_source(spec: str, weights: str | None, label: str | None = None) -> Source:
    """A spec with trained weights (a checkpoint or 'pretrained'), in PyTorch."""
    import torch

    from edgeffnet.network.reference import create_model

    if weights is None:
        raise UserError(
            f"a class activation map of '{spec}' needs trained weights: pass --weights PATH "
            f"(or --weights pretrained for lite0..lite2); random weights have learned nothing"
        )
    model = create_model(spec, weights=weights)

    def run(x: np.ndarray) -> Output:
        with torch.inference_mode():
            feats = model.features(torch.from_numpy(x))
            logits = model.classifier(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(feats, 1), 1))
        return Output(feats[0].numpy(), logits[0].numpy())

    return Source(
        label or model.spec.name,
        model.preprocess,
        model.classifier.weight.detach().numpy().copy(),
        run,
        {"spec": model.spec.name, "weights": model.weights_info.source, "runtime": f"PyTorch {torch.__version__}"},
    )


def _classifier(graph) -> tuple[np.ndarray, np.ndarray]:
    """The final Gemm's weights as (num_classes, C) and its bias, from the FP32 graph."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(graph.output[0].name)
    if node is None or node.op_type != "Gemm":
        raise UserError(
            "the bundle's FP32 graph does not end in a fully connected classifier (Gemm); "
            "a class activation map needs one"
        )
    w = inits[node.input[1]]
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    w = w if trans_b else w.T
    bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
    return w.astype(np.float32), bias.astype(np.float32)


def _features_and_logits(runner) -> Callable[[np.ndarray], Output]:
    """A backend runner loaded with the FEATURES output, as a source's run."""
    from edgeffnet.backends import FEATURES

    def run(x: np.ndarray) -> Output:
        logits, named = runner.run_outputs(x)
        return Output(named[FEATURES][0], logits[0])

    return run


def _onnx_runner(path: Path, label: str):
    """ONNX Runtime on a graph with the pooled feature map as a second output."""
    from edgeffnet.backends import FEATURES
    from edgeffnet.backends import onnxruntime as ort_backend

    runner = ort_backend.Runner(path, outputs=(FEATURES,))
    info = {
        "runtime": f"onnxruntime {runner.describe()['version']}",
        "graph": path.name,
        "feature_tensor": runner.output_tensors[FEATURES],
        "label": label,
    }
    return _features_and_logits(runner), info


def _openvino_runner(bundle_dir: Path, manifest: dict):
    """The bundle's IR, loaded as `build` verifies it (the profile's device and inference precision, the
    CPU where this host lacks the device), with the pooled feature map added as a second output."""
    from edgeffnet.backends import FEATURES, RunSettings, get
    from edgeffnet.specs import targets

    runner = get("openvino").load(
        bundle_dir,
        targets.of_bundle(manifest),
        manifest["precision"],
        RunSettings(cpu_fallback=True, outputs=(FEATURES,)),
    )
    info = {
        "runtime": f"openvino {runner.describe()['version']}",
        "device": runner.device,
        "inference_precision": runner.config.get("INFERENCE_PRECISION_HINT"),
        "artifact": IR,
        "feature_tensor": runner.output_tensors[FEATURES],
    }
    return _features_and_logits(runner), info


def bundle_sources(bundle_dir: str | Path) -> tuple[Source, Source]:
    """(FP32 reference, compiled artifact) of a bundle; both read the FP32 classifier weights."""
    import onnx

    from edgeffnet import bundle

    path = Path(bundle_dir)
    manifest = bundle.read_manifest(path)
    if manifest["input"].get("batch") not in (1, None):
        raise UserError(
            f"bundle '{path}' was built for batch {manifest['input']['batch']}; build it with "
            f"--batch 1 (or --dynamic-batch) for class activation maps"
        )
    recipe = Preprocess.from_dict(manifest["preprocess"])
    graph = bundle.fp32_graph(path, "a class activation map of a bundle")
    weights, _ = _classifier(onnx.load(str(graph)).graph)
    fp32_run, fp32_info = _onnx_runner(graph, "FP32")
    name = manifest["spec"]["spec"]
    fp32 = Source(f"{name} FP32", recipe, weights, fp32_run, fp32_info)
    backend = manifest["target"]["backend"]
    precision = manifest["precision"]
    if backend == "openvino":
        run, info = _openvino_runner(path, manifest)
        label = f"{name} {precision} (OpenVINO {info['device']})"
    else:  # a TensorRT engine cannot grow an output after it is built: its precision graph instead
        run, info = _onnx_runner(path / manifest["graph"], precision)
        info["note"] = f"the {backend} engine has no feature output; its {precision} graph in ONNX Runtime instead"
        label = f"{name} {precision} graph (ONNX Runtime)"
    return fp32, Source(label, recipe, weights, run, info | {"precision": precision})


# -- images and pictures ---------------------------------------------------------------------------


def load_photo(path: str | Path) -> Image.Image:
    try:
        return read_image(path)[0]
    except FileNotFoundError:
        raise UserError(f"image '{path}' does not exist") from None
    except ImageTooLarge as e:
        raise UserError(f"image '{path}' is too large ({e}); pass a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot read image '{path}' ({type(e).__name__}); pass a jpg/png/bmp/webp file") from None


def network_input(photo: Image.Image, recipe: Preprocess) -> tuple[Image.Image, np.ndarray]:
    """The crop the network sees and its normalised (1, 3, H, W) tensor."""
    crop = resize_and_crop(photo, recipe)
    return crop, normalise(crop, recipe)[None]


@dataclass
class Panel:
    """One map on one photo."""

    crop: Image.Image
    cam: np.ndarray  # (h, w) in logit units
    title: str


def overlay(panel: Panel, size: int = DISPLAY) -> np.ndarray:
    """The photo with its map in the jet colour map, min-max normalised per map (Zhou et al.'s display)."""
    from matplotlib import colormaps

    up = upsample(panel.cam, size)
    span = float(up.max() - up.min())
    heat = (up - up.min()) / span if span > 0 else np.zeros_like(up)
    colour = colormaps["jet"](heat)[..., :3]
    photo = np.asarray(panel.crop.resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0
    return np.clip(0.5 * photo + 0.5 * colour, 0.0, 1.0)


def render(rows: list[list[Panel | Image.Image]], path: Path, title: str = "") -> None:
    """A grid of panels (a plain image is shown as it is, e.g. the photo) as one PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(2.4 * ncols, 2.6 * len(rows) + (0.4 if title else 0)), squeeze=False
    )
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(row):
                continue
            item = row[j]
            if isinstance(item, Panel):
                ax.imshow(overlay(item))
                ax.set_title(visible(item.title), fontsize=7, parse_math=False)
            else:
                ax.imshow(np.asarray(item.resize((DISPLAY, DISPLAY), Image.Resampling.BICUBIC)))
                ax.set_title("photo", fontsize=7, parse_math=False)
    if title:
        fig.suptitle(visible(title), fontsize=9, parse_math=False)  # "$x$" in a file name is not maths
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- the command -----------------------------------------------------------------------------------


def _names(n: int) -> list[str]:
    from edgeffnet.workflows.predict import class_names

    return class_names(n)


def _short(name: str) -> str:
    return name.split(",")[0][:22]


def _classes(logits: np.ndarray, top: int, klass: int | None) -> list[int]:
    if klass is not None:
        return [klass]
    return [int(i) for i in np.argsort(-logits)[:top]]


def _slug(path: str) -> str:
    stem = "".join(c if c.isprintable() and c not in " $" else "_" for c in Path(path).stem)
    return stem or "image"


def png_names(images: list[str]) -> list[str]:
    """One PNG name per image, unique and the same on every run: IMAGE.cam.png, and where two images share
    a name (a/same.jpg, b/same.jpg) a short hash of each one's folder too; a photo given twice gets -2."""
    slugs = [_slug(i) for i in images]
    names, taken = [], set()
    for image, slug in zip(images, slugs):
        if slugs.count(slug) > 1:
            folder = str(Path(image).resolve().parent)
            slug = f"{slug}-{hashlib.sha256(folder.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
        name, n = f"{slug}.cam.png", 1
        while name in taken:
            n += 1
            name = f"{slug}-{n}.cam.png"
        taken.add(name)
        names.append(name)
    return names


def compare_specs(values: list[str] | tuple[str, ...]) -> list[str]:
    """--compare's specs. Each value holds one spec or several, separated by ';' or by commas: a comma
    part with '=' continues the spec before it (the spec grammar's KEY=VALUE), one without starts the
    next, so 'lite0,res=64,lite1' is two specs, lite0,res=64 and lite1. --compare may also be repeated."""
    specs: list[str] = []
    for value in values:
        for group in value.split(";"):
            current: list[str] = []
            for part in (p.strip() for p in group.split(",")):
                if not part:
                    continue
                if "=" in part and current:
                    current.append(part)
                else:
                    if current:
                        specs.append(",".join(current))
                    current = [part]
            if current:
                specs.append(",".join(current))
    return specs


def _check_output(out: Path) -> None:
    """-o must be a folder or a place one can be made: nothing on its way may be a file."""
    for place in [out, *out.parents]:
        if place.exists():
            if not place.is_dir():
                raise UserError(f"-o {visible(str(out))}: {visible(str(place))} is a file, not a folder; pass a folder")
            return


def _photos(images: list[str], top: int, out: Path) -> list[Image.Image]:
    """Every input checked before any model is loaded or anything is written."""
    if not images:
        raise UserError("no images given; pass one or more photos after the model")
    if top < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    _check_output(out)
    return [load_photo(p) for p in images]


def _make(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"-o {visible(str(out))} cannot be made ({e.strerror or e}); pass a folder you can write"
        ) from None


def _check_class(klass: int | None, num_classes: int) -> None:
    if klass is not None and not 0 <= klass < num_classes:
        raise UserError(f"--class {klass} is outside the classifier's 0..{num_classes - 1}")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def maps_of_model(
    spec: str, weights: str | None, images: list[str], out: Path, top: int = 3, klass: int | None = None
) -> dict:
    """Top-k (or one class's) maps of a spec with weights: a PNG per image and grid.png."""
    photos = _photos(images, top, out)
    source = model_source(spec, weights)
    _check_class(klass, source.weights.shape[0])
    _make(out)
    names = _names(source.weights.shape[0])
    grid, records = [], []
    for image, photo, png in zip(images, photos, png_names(images)):
        crop, x = network_input(photo, source.preprocess)
        o = source.run(x)
        classes = _classes(o.logits, top, klass)
        cams = class_activation_maps(o.features, source.weights, classes)
        p = softmax(o.logits)
        panels = [Panel(crop, cam, f"{c} {_short(names[c])} {p[c]:.0%}") for c, cam in zip(classes, cams)]
        row = [crop] + panels
        render([row], out / png, f"{source.label}: {Path(image).name}")
        grid.append(row)
        records.append(
            {
                "image": str(image),
                "png": png,
                "feature_map": list(o.features.shape),
                "classes": [{"class": c, "name": names[c], "probability": float(p[c])} for c in classes],
            }
        )
    render(grid, out / "grid.png", source.label)
    summary = {"source": source.info, "images": records, "grid": "grid.png"}
    _write_json(out / "cam.json", summary)
    return summary


def maps_of_bundle(
    bundle_dir: str | Path, images: list[str], out: Path, top: int = 3, klass: int | None = None
) -> dict:
    """The compiled artifact's maps beside the FP32 ones, for FP32's top-k classes, and their correlation."""
    photos = _photos(images, top, out)
    fp32, artifact = bundle_sources(bundle_dir)
    _check_class(klass, fp32.weights.shape[0])
    _make(out)
    names = _names(fp32.weights.shape[0])
    grid, records = [], []
    for image, photo, png in zip(images, photos, png_names(images)):
        crop, x = network_input(photo, fp32.preprocess)
        ref, got = fp32.run(x), artifact.run(x)
        classes = _classes(ref.logits, top, klass)
        ref_cams = class_activation_maps(ref.features, fp32.weights, classes)
        got_cams = class_activation_maps(got.features, artifact.weights, classes)
        p, q = softmax(ref.logits), softmax(got.logits)
        sims = [correlation(a, b) for a, b in zip(ref_cams, got_cams)]
        ref_row = [crop] + [
            Panel(crop, cam, f"FP32 {c} {_short(names[c])} {p[c]:.0%}") for c, cam in zip(classes, ref_cams)
        ]
        got_row = [crop] + [
            Panel(crop, cam, f"{artifact.info['precision']} {q[c]:.0%}, r={s:.3f}")
            for c, cam, s in zip(classes, got_cams, sims)
        ]
        render([ref_row, got_row], out / png, f"{artifact.label} vs FP32: {Path(image).name}")
        grid.append([crop, ref_row[1], got_row[1]])
        records.append(
            {
                "image": str(image),
                "png": png,
                "feature_map": list(ref.features.shape),
                "artifact_top1": int(np.argmax(got.logits)),
                "fp32_top1": int(np.argmax(ref.logits)),
                "classes": [
                    {
                        "class": c,
                        "name": names[c],
                        "fp32_probability": float(p[c]),
                        "artifact_probability": float(q[c]),
                        "correlation": s,
                        "peak_moved": bool(np.argmax(a) != np.argmax(b)),
                    }
                    for c, s, a, b in zip(classes, sims, ref_cams, got_cams)
                ],
            }
        )
    render(grid, out / "grid.png", f"{artifact.label} vs FP32 (top-1 of FP32)")
    summary = {
        "fp32": fp32.info,
        "artifact": artifact.info,
        "images": records,
        "grid": "grid.png",
        "mean_correlation": float(np.mean([c["correlation"] for r in records for c in r["classes"]])),
    }
    _write_json(out / "cam.json", summary)
    return summary


def compare_models(
    specs: list[str], weights: str | None, images: list[str], out: Path, klass: int | None = None
) -> dict:
    """The seed's Figure 7: each model's top-1 (or --class) map on the same photos, one column per model."""
    if len(specs) < 2:
        raise UserError(
            "--compare takes two or more specs, e.g. lite0,lite1,lite2 or 'lite0,res=96;lite1' (or --compare repeated)"
        )
    photos = _photos(images, 1, out)
    sources = [model_source(s, weights or "pretrained") for s in specs]
    for source in sources:
        _check_class(klass, source.weights.shape[0])
    _make(out)
    grid, records = [], []
    for image, photo, png in zip(images, photos, png_names(images)):
        row, entry = [], {"image": str(image), "png": png, "models": []}
        for source in sources:
            crop, x = network_input(photo, source.preprocess)
            o = source.run(x)
            names = _names(source.weights.shape[0])
            (c,) = _classes(o.logits, 1, klass)
            (cam,) = class_activation_maps(o.features, source.weights, [c])
            p = softmax(o.logits)
            if not row:
                row.append(crop)
            row.append(Panel(crop, cam, f"{source.label}: {_short(names[c])} {p[c]:.0%}"))
            entry["models"].append(
                {
                    "spec": source.info["spec"],
                    "resolution": source.preprocess.crop,
                    "feature_map": list(o.features.shape),
                    "class": c,
                    "name": names[c],
                    "probability": float(p[c]),
                }
            )
        render([row], out / entry["png"], Path(image).name)
        grid.append(row)
        records.append(entry)
    render(grid, out / "grid.png", "class activation maps: " + ", ".join(s.label for s in sources))
    summary = {"sources": [s.info for s in sources], "images": records, "grid": "grid.png"}
    _write_json(out / "cam.json", summary)
    return summary
