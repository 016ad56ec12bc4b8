"""What a row says of its weights and of how closely it computes what FP32 computes: the accuracy drop
where the bundle was evaluated on labelled data (`edgeffnet eval`), else the build's agreement on
verification photos."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from edgeffnet.core.errors import UserError
from edgeffnet.core.layout import EVAL
from edgeffnet.measure import eval_result, records

# A random-weight INT8 graph whose logits are further than this from its FP32 (mean cosine) does not compute
# what FP32 computes: its latency may not carry over to trained weights (a trained network's ranges differ).
SANE_COSINE = 0.9


class AccuracyDrop(TypedDict):
    """The worst top-1 accuracy drop any artifact of a bundle shows in its eval results."""

    drop: float  # FP32 minus the artifact, a fraction
    interval: list | None  # its 95% interval, where the result has one
    top1: float | None
    fp32_top1: float | None
    artifact: str | None
    images: int | None
    data: str  # the eval result's file name
    partial: bool
    images_total: int | None


def _manifest(bundle_dir: str) -> dict:
    from edgeffnet.bundle import read_manifest

    try:
        return read_manifest(bundle_dir)  # checked as a bundle's reader checks it: a damaged one is none
    except UserError:
        return {}


def weights_of(r: dict) -> dict:
    """The record's weights; a record older than the field gets them from its bundle, where it still is."""
    if r.get("weights"):
        return r["weights"]
    return records.weights_of(_manifest(r["bundle"]))


def weights_label(w: dict) -> str:
    if w.get("random_init"):
        return "random"
    source = str(w.get("source", "unknown"))
    return "pretrained" if source.startswith("pretrained") else "unknown" if source == "unknown" else "checkpoint"


def _fraction(v) -> float | None:
    """An accuracy or drop as a fraction, from a number or a dict holding one (eval's layout, or a plain key)."""
    if isinstance(v, dict):
        v = v.get("difference", v.get("accuracy"))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def accuracy_drop(bundle_dir: str) -> AccuracyDrop | None:
    """The worst top-1 accuracy drop any artifact shows in BUNDLE/eval/*.json (`edgeffnet eval`), read
    tolerantly: a file or row this report cannot read is left out, never fatal."""
    worst: AccuracyDrop | None = None
    for f in sorted((Path(bundle_dir) / EVAL).glob("*.json")):
        if f.name.endswith(".partial.json"):  # an interrupted re-run kept beside its complete result
            continue
        try:
            result = eval_result.read(f)
        except UserError:
            continue
        if not isinstance(result.get("artifacts"), list):
            continue
        fp32 = _fraction((result.get("reference") or {}).get("top1"))
        for a in result["artifacts"]:
            if not isinstance(a, dict):
                continue
            drop, top1 = _fraction(a.get("top1_drop", a.get("drop"))), _fraction(a.get("top1"))
            if drop is None and fp32 is not None and top1 is not None:
                drop = fp32 - top1
            if drop is not None and (worst is None or drop > worst["drop"]):
                interval = (a.get("top1_drop") or {}).get("interval") if isinstance(a.get("top1_drop"), dict) else None
                if not (
                    isinstance(interval, list)
                    and len(interval) == 2
                    and all(_fraction(v) is not None for v in interval)
                ):
                    interval = None
                worst = {
                    "drop": drop,
                    "interval": interval,
                    "top1": top1,
                    "fp32_top1": fp32,
                    "artifact": a.get("name") or a.get("artifact"),
                    "images": result.get("images"),
                    "data": f.name,
                    "partial": result.get("partial") is True,
                    "images_total": result.get("images_total"),
                }
    return worst


def fidelity_of(r: dict) -> tuple[str, dict]:
    """The row's fidelity cell and its numbers: FP32 runs are the reference; otherwise the accuracy drop
    where the bundle was evaluated on labelled data, else the build's agreement with FP32."""
    if r["precision"] == "fp32":
        return "FP32 (reference)", {}
    drop = accuracy_drop(r["bundle"])
    if drop:
        interval = drop["interval"]
        text = (
            f"top-1 drop {drop['drop'] * 100:.2f} pt"
            + (
                f" [{interval[0] * 100:.2f}, {interval[1] * 100:.2f}]"
                if isinstance(interval, list) and len(interval) == 2
                else ""
            )
            + (f", top-1 {drop['top1']:.1%}" if drop["top1"] is not None else "")
        )
        if drop["partial"]:  # an interrupted eval: its figure covers only the images it reached
            text += f" (partial: {drop['images']} of {drop['images_total']} images)"
        return text, {"accuracy_drop": drop["drop"]}
    own, worst = _fidelity_rows(r)
    f = own or worst
    if not f:
        return "not measured", {}
    whose = f.get("artifact", "artifact") + ("" if own else " (the bundle's worst row)")
    text = f"{whose}: {_agreement(f)}"
    if own and worst and worst.get("artifact") != own.get("artifact") and _worse(worst, own):
        text += f"; bundle's worst: {worst.get('artifact', 'a graph')} {_agreement(worst, short=True)}"
    sure = f.get("confident_top1_agreement")
    return text, {"top1_agreement": f["top1_agreement"], "confident_top1_agreement": sure, "cosine": f["cosine_mean"]}


def _fidelity_rows(r: dict) -> tuple[dict | None, dict | None]:
    """(the benched artifact's own fidelity row, the bundle's worst row). The artifact's row is its build's
    compile-stage row; a record whose bundle is gone keeps only the worst row it was saved with."""
    manifest = _manifest(r["bundle"])
    compiled = ((manifest.get("stages") or {}).get("compile") or {}).get("fidelity")
    own = compiled if isinstance(compiled, dict) and "top1_agreement" in compiled else None
    worst = (records.worst_fidelity(manifest) if manifest.get("fidelity") else None) or r.get("fidelity")
    return own, worst


def _worse(a: dict, b: dict) -> bool:
    return (a["top1_agreement"], a["cosine_mean"]) < (b["top1_agreement"], b["cosine_mean"])


def _agreement(f: dict, short: bool = False) -> str:
    sure = f.get("confident_top1_agreement")  # what the gate judges: agreement where FP32 is confident
    confident = f" ({sure:.1%} of {f['confident_views']} confident)" if sure is not None else ""
    if short:
        return f"{f['top1_agreement']:.1%}{confident}"
    return f"agreement {f['top1_agreement']:.1%}{confident}, cosine {f['cosine_mean']:.3f} ({f['views']} views)"
