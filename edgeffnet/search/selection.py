"""Which candidates a search measures: every split, or, with this device's latency model, the best K by
predicted latency plus the paper's network.

Kept apart from how a candidate is built and timed (harness, trials): the decision is a pure function of
the candidates and their predictions, so another way of running candidates (a cluster) takes it as is.

Why K = 8 by default: on the default grid (~110 splits, ~66 distinct networks) the splits within a
latency model's held-out error (a few %) of the predicted best number a handful; measuring eight of
them, and the paper's, keeps the measured choice robust to the model's error at about a seventh of the
builds (the issue's goal: at most a quarter).
"""

from __future__ import annotations

from edgeffnet.latency.use import find_model
from edgeffnet.search.grid import Candidate, network_key
from edgeffnet.search.objective import equal_flops
from edgeffnet.specs.layers import spec_layers
from edgeffnet.specs.scaling import parse_spec

DEFAULT_MEASURE = 8


def model_for(target: str, precision: str, measure: int | None, path: str | None, echo=None):
    """(the latency model, K): K = 0 measures every split. --measure K > 0 needs a model; by default one
    is used where this device has it."""
    if measure == 0:
        return None, 0
    model = find_model(target, precision, path, echo=echo, required=measure is not None)
    if model is None:
        return None, 0
    return model, measure or DEFAULT_MEASURE


def predict_candidates(candidates: list[Candidate], base: str, phi: float, model) -> list[dict]:
    """Per candidate: spec, network, MACs (counted) and predicted latency; nothing is built."""
    out, by_network = [], {}
    for c in candidates:
        spec = parse_spec(c.spec(base, phi))
        net = network_key(spec)
        if net not in by_network:
            by_network[net] = (sum(layer.macs for layer in spec_layers(spec)), model.predict(spec.name))
        macs, ms = by_network[net]
        out.append(
            {"slug": c.slug, "spec": spec.name, "network": net, "macs": macs, "predicted_ms": ms, "paper": c.is_paper}
        )
    return out


def choose_to_measure(predicted: list[dict], k: int, tolerance: float) -> set[str]:
    """The networks to build and time: the paper's, and the K distinct networks predicted fastest among
    the splits that spend at least the paper's MACs (-tolerance), the pool search ranks in."""
    paper = next(p for p in predicted if p["paper"])
    pool = sorted(equal_flops(predicted, paper, tolerance), key=lambda p: p["predicted_ms"])
    chosen: list[str] = []
    for p in pool:
        if p["network"] not in chosen:
            chosen.append(p["network"])
        if len(chosen) == k:
            break
    return set(chosen) | {paper["network"]}


def prediction_errors(rows: list[dict], key: str = "latency_ms") -> dict | None:
    """The predictor's relative error on the candidates that were also measured, each as a ratio to the
    paper's network (predicted ratio against measured ratio): what ranking needs, and free of how busy
    the machine is now compared with when the model was collected (`machine_now` says by how much)."""
    paper = next((r for r in rows if r.get("paper") and r.get("predicted_ms")), None)
    if paper is None:
        return None
    now = paper[key] / paper["predicted_ms"]
    pairs = [
        (r["predicted_ms"] * now, r[key])
        for r in rows
        if r.get("predicted_ms") and r.get(key) and not r.get("same_network_as") and r is not paper
    ]
    if not pairs:
        return None
    rel = [p / m - 1 for p, m in pairs]
    return {
        "networks": len(rel),
        "rmse_pct": (sum(e * e for e in rel) / len(rel)) ** 0.5 * 100,
        "max_abs_pct": max(abs(e) for e in rel) * 100,
        "within_10pct": sum(abs(e) <= 0.1 for e in rel) / len(rel),
        "machine_now": now,
    }
