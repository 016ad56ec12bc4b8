"""Scoring `edgeffnet eval`: paired statistics of an artifact against FP32, the labelled build gate, tables.

The accuracy drop (FP32 minus artifact, on the same images) gets Newcombe's paired interval (1998, method 10:
Wilson score intervals of the two accuracies combined with the correlation of the pairs), which, unlike an
interval built from the discordant pairs alone, stays honest when there are none (a perfect score on 20
images is not proof of zero drop). The exact McNemar p-value (the conditional binomial test on the
discordant pairs) comes with it.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals
INTERVAL_METHOD = "Newcombe paired score interval (1998, method 10), 95%"


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
