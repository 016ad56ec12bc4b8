"""The latency model: its form, the fit, held-out errors and the versioned file.

Form. A network's latency is the sum of its layers' times plus a per-network constant, and a layer's time
is a non-negative combination of what it computes, what it moves and that it exists at all:

    t(net) = c0 + sum over layers l of  a[g] * GMACs(l) + b[g] * MB(l) + k[g]        g = l's group

with one (a, b, k) per group: each role, depthwise split by kernel and stride (features.py). Why this
form: it is linear in its coefficients, so a whole-network latency, a per-role time and a per-layer time
from a profile are all rows of one least-squares problem, and the model improves with every profile
without a second kind of fit; a sum of compute and memory terms stays within a factor 2 of a roofline's
max() and, unlike it, is smooth where a group crosses the ridge point (which depthwise layers do as
resolution and width change); the per-layer constant is what a runtime spends per node whatever its
size (dispatch, threading, reorders), which dominates small networks; c0 is the per-inference cost
outside the layers (input copy, the call itself). Every coefficient is a cost, so each is >= 0:
non-negative least squares (scipy.optimize.nnls).

Fit. Rows are weighted by 1/p50 of their network, so the fit minimises relative error (what +-10%
asks) and a profile's layers count by their share of the network. A whole network's row weighs
NETWORK_WEIGHT times a profile row. Columns are scaled to unit size and a small ridge keeps groups that
always move together (the data cannot tell them apart) from taking extreme, opposite values.

Errors. Fit error on the networks it was fitted on, and held-out error by leaving each network out in
turn (its profile rows with it) and predicting it from the rest. The interval of a prediction is the
5th..95th percentile of the held-out relative residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np

from edgeffnet.core import files, formats
from edgeffnet.core.errors import UserError
from edgeffnet.core.untrusted import UntrustedFileError, field
from edgeffnet.core.version import __version__
from edgeffnet.latency import store
from edgeffnet.latency.features import TERMS, add_terms, network_layers, network_terms
from edgeffnet.specs.scaling import parse_spec

LATENCY_MODEL = formats.Format(
    "latency model", "format", (1,), "collect one with edgeffnet latency fit", tag="edgeffnet-latency-model"
)
FORMAT = LATENCY_MODEL.stamp()["format"]  # "edgeffnet-latency-model/1"
FORM = (
    "t(net) = c0 + sum over layers of ms_per_gmac[g]*GMACs + ms_per_mb[g]*MB + ms_per_layer[g], g = the layer's group"
)
NETWORK_WEIGHT = 3.0
RIDGE = 1e-6
MIN_NETWORKS = 4
# When new measurements on the device say the model has drifted: RMSE over at least REFIT_MIN_NEW networks
# measured after the fit, above REFIT_FACTOR x the held-out RMSE and above REFIT_FLOOR_PCT.
REFIT_FACTOR, REFIT_FLOOR_PCT, REFIT_MIN_NEW = 1.5, 10.0, 3


@dataclass
class Example:
    network: int  # index of the network it belongs to (held-out folds drop a network's rows together)
    kind: str  # network | role | layer | overhead
    terms: dict[str, list[float]]
    constant: float  # 1 where the per-network constant is part of this row
    target_ms: float
    weight: float


def _profile_examples(i: int, spec: str, precision: str, total_ms: float, profile: dict) -> list[Example]:
    """Rows from a profile (docs/measuring.md): per layer where it has layers, else per role; its times
    scaled so they sum to the network's p50 (the profiler's own overhead taken out)."""
    where = f"profile of {spec}"
    summed: float | None = field(profile, "profiled_sum_ms", (float, type(None)), where, default=None)
    layers = profile.get("layers")
    by_role = profile.get("by_role")
    if summed is None:
        if isinstance(layers, list):
            summed = sum(field(r, "time_ms", float, where) for r in layers if isinstance(r, dict))
        elif isinstance(by_role, dict):
            summed = sum(field(by_role, k, float, where) for k in by_role)
    if not summed or summed <= 0:
        return []
    scale, w = total_ms / summed, 1.0 / total_ms
    table = network_layers(spec)
    by_name = {layer.name: layer for layer in table}
    out: list[Example] = []
    overhead = 0.0
    if isinstance(layers, list):
        for r in layers:
            if not isinstance(r, dict):
                raise UntrustedFileError(f"{where}: a layer row is not an object")
            t = field(r, "time_ms", float, where) * scale
            role = field(r, "role", str, where)
            if role == "overhead":
                overhead += t
                continue
            names = [field(r, "name", str, where)] + [n for n in (r.get("fused") or []) if isinstance(n, str)]
            held = [by_name[n] for n in names if n in by_name]
            if held:
                out.append(Example(i, "layer", add_terms({}, held, precision), 0.0, t, w))
    elif isinstance(by_role, dict):
        for role in by_role:
            t = field(by_role, role, float, where) * scale
            if role == "overhead":
                overhead += t
                continue
            held = [layer for layer in table if layer.role == role]
            if held:
                out.append(Example(i, "role", add_terms({}, held, precision), 0.0, t, w))
    if out:
        out.append(Example(i, "overhead", {}, 1.0, overhead, w))
    return out


def examples(rows: list[dict], precision: str) -> tuple[list[Example], list[dict], int]:
    """(rows of the fit, the networks they came from, profiles that could not be read). One network per
    (network, source), its newest measurement, its p50 paired against its reference."""
    paired = store.paired_p50(rows)
    latest = {}
    for r, p50 in zip(rows, paired):
        latest[(r["network"], r.get("source", ""))] = (r, p50)
    out, networks, bad = [], [], 0
    for i, (r, p50) in enumerate(latest.values()):
        networks.append({"spec": r["spec"], "p50_ms": p50, "source": r.get("source"), "measured": r.get("measured")})
        out.append(Example(i, "network", network_terms(r["spec"], precision), 1.0, p50, NETWORK_WEIGHT / p50))
        if r.get("profile"):
            try:
                out += _profile_examples(i, r["spec"], precision, p50, r["profile"])
            except UntrustedFileError:
                bad += 1
    return out, networks, bad


def _matrix(rows: list[Example], groups: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.zeros((len(rows), 1 + 3 * len(groups)))
    for n, e in enumerate(rows):
        x[n, 0] = e.constant
        for g, t in e.terms.items():
            j = 1 + 3 * groups.index(g)
            x[n, j : j + 3] = t
    return x, np.array([e.target_ms for e in rows]), np.array([e.weight for e in rows])


def solve(rows: list[Example], groups: list[str]) -> np.ndarray:
    """Weighted, column-scaled NNLS with a small ridge: the coefficients [c0, a, b, k per group]."""
    from scipy.optimize import nnls  # the build side's: a device-side install predicts with numpy alone

    x, y, w = _matrix(rows, groups)
    xw, yw = x * w[:, None], y * w
    scale = np.abs(xw).max(axis=0)
    scale[scale == 0] = 1.0
    a = np.vstack([xw / scale, math.sqrt(RIDGE) * np.eye(x.shape[1])])
    b = np.concatenate([yw, np.zeros(x.shape[1])])
    coef, _ = nnls(a, b, maxiter=50 * x.shape[1])
    return np.asarray(coef / scale, dtype=float)


def _predict_terms(coef: np.ndarray, groups: list[str], terms: dict[str, list[float]], constant: float = 1.0) -> float:
    total = coef[0] * constant
    for g, t in terms.items():
        j = 1 + 3 * groups.index(g)
        total += float(np.dot(coef[j : j + 3], t))
    return float(total)


def _errors(relative: list[float]) -> dict:
    e = np.array(relative)
    return {
        "networks": len(e),
        "rmse_pct": round(float(np.sqrt(np.mean(e**2)) * 100), 3),
        "within_10pct": round(float(np.mean(np.abs(e) <= 0.10)), 4),
        "max_abs_pct": round(float(np.abs(e).max() * 100), 3),
        "residual_q05": round(float(np.quantile(e, 0.05)), 5),
        "residual_q95": round(float(np.quantile(e, 0.95)), 5),
    }


@dataclass
class LatencyModel:
    precision: str
    device: dict
    constant_ms: float
    groups: dict[str, dict[str, float]]  # group -> {ms_per_gmac, ms_per_mb, ms_per_layer}
    errors: dict = dc_field(default_factory=dict)  # {"fit": ..., "held_out": ...}
    data: dict = dc_field(default_factory=dict)  # what it was fitted on
    created: str = ""
    path: str | None = None

    # -- prediction ------------------------------------------------------------------------------------
    def predict_terms(self, terms: dict[str, list[float]]) -> float:
        missing = [g for g in terms if g not in self.groups]
        if missing:
            raise UserError(
                f"the latency model has no data on {missing[0]} layers (it was fitted on "
                f"{', '.join(sorted(self.groups))}); collect networks that have them"
            )
        return self.constant_ms + sum(sum(self.groups[g][k] * v for k, v in zip(TERMS, t)) for g, t in terms.items())

    def predict(self, spec: str, num_classes: int = 1000) -> float:
        return self.predict_terms(network_terms(parse_spec(spec).name, self.precision, num_classes))

    def interval(self, ms: float) -> tuple[float, float]:
        """The 5th..95th percentile band of the held-out relative residuals around a prediction."""
        h = self.errors.get("held_out") or {}
        return ms * (1 + min(0.0, h.get("residual_q05", 0.0))), ms * (1 + max(0.0, h.get("residual_q95", 0.0)))

    def by_group(self, spec: str) -> dict[str, float]:
        """The predicted ms of each group of `spec` (where the time goes, by the model)."""
        terms = network_terms(parse_spec(spec).name, self.precision)
        return {g: sum(self.groups[g][k] * v for k, v in zip(TERMS, t)) for g, t in terms.items() if g in self.groups}

    # -- the file --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "edgeffnet": __version__,
            "created": self.created,
            "form": FORM,
            "precision": self.precision,
            "device": self.device,
            "constant_ms": self.constant_ms,
            "groups": self.groups,
            "errors": self.errors,
            "data": self.data,
            "refit_when": {
                "new_networks_at_least": REFIT_MIN_NEW,
                "rmse_pct_above": f"max({REFIT_FACTOR} x held-out RMSE, {REFIT_FLOOR_PCT})",
            },
        }

    def save(self, path: Path) -> Path:
        files.atomic_write_json(Path(path), self.to_dict())
        self.path = str(path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, here: dict | None = None, precision: str | None = None) -> LatencyModel:
        """A model file from anywhere, checked field by field; refused in one line for another device
        (`here`: this device's identity) or another precision."""
        where = f"latency model '{path}'"
        d, _ = formats.load(LATENCY_MODEL, path, where)
        prec = field(d, "precision", str, where)
        device = field(d, "device", dict, where)
        for k, v in device.items():
            if not isinstance(v, (str, int, float, list, type(None))) or isinstance(v, float) and not math.isfinite(v):
                raise UntrustedFileError(f"{where}: device field '{k}' is not a plain value")
        constant = field(d, "constant_ms", float, where)
        groups = field(d, "groups", dict, where)
        if not groups:
            raise UntrustedFileError(f"{where} has no layer groups")
        checked = {}
        for g, coef in groups.items():
            if not isinstance(coef, dict):
                raise UntrustedFileError(f"{where}: group '{g}' is not an object")
            checked[g] = {t: field(coef, t, float, f"{where} group '{g}'") for t in TERMS}
        values = [constant] + [v for c in checked.values() for v in c.values()]
        if any(v < 0 for v in values):
            raise UntrustedFileError(f"{where} has a negative coefficient: every term is a cost (>= 0)")
        errors = field(d, "errors", dict, where, default={})
        held = errors.get("held_out") or {}
        if not isinstance(held, dict):
            raise UntrustedFileError(f"{where}: errors.held_out is not an object")
        for k in ("residual_q05", "residual_q95", "rmse_pct"):
            if k in held:
                field(held, k, float, f"{where} errors.held_out")
        if here is not None:
            why = _device_mismatch(device, here)
            if why:
                raise UserError(
                    f"{where} describes another device ({why}); collect one here with "
                    f"edgeffnet latency fit --target {here.get('target')}"
                )
        if precision is not None and prec != precision:
            raise UserError(
                f"{where} is for {prec}, not {precision}; collect one with edgeffnet latency fit "
                f"--precision {precision}"
            )
        return cls(
            prec,
            device,
            constant,
            checked,
            errors,
            field(d, "data", dict, where, default={}),
            field(d, "created", str, where, default=""),
            str(path),
        )


def _device_mismatch(recorded: dict, here: dict) -> str | None:
    from edgeffnet.latency.device import mismatch

    return mismatch(recorded, here)


def fit(rows: list[dict], precision: str, device: dict, held_out: bool = True) -> LatencyModel:
    """Fit on a device's measurements (store rows); held-out errors by leaving each network out."""
    rows = [r for r in rows if r.get("precision", precision) == precision]
    ex, networks, bad = examples(rows, precision)
    whole = [e for e in ex if e.kind == "network"]
    if len(whole) < MIN_NETWORKS:
        raise UserError(
            f"{len(whole)} measured networks are too few to fit a latency model (at least "
            f"{MIN_NETWORKS}); run edgeffnet latency fit to collect more"
        )
    groups = sorted({g for e in whole for g in e.terms})
    coef = solve(ex, groups)
    fitted = [_predict_terms(coef, groups, e.terms) / e.target_ms - 1 for e in whole]
    errors = {"fit": _errors(fitted)}
    if held_out:
        rel = []
        for e in whole:
            rest = [x for x in ex if x.network != e.network]
            c = solve(rest, groups)
            rel.append(e.target_ms / max(1e-9, _predict_terms(c, groups, e.terms)) - 1)
        errors["held_out"] = _errors(rel) | {"method": "leave one network out (with its profile rows)"}
    model = LatencyModel(
        precision=precision,
        device=device,
        constant_ms=float(coef[0]),
        groups={g: {t: float(coef[1 + 3 * i + j]) for j, t in enumerate(TERMS)} for i, g in enumerate(groups)},
        errors=errors,
        created=files.utc_now(),
        data={
            "networks": len(whole),
            "profiled_networks": len({e.network for e in ex if e.kind != "network"}),
            "profile_rows": sum(1 for e in ex if e.kind != "network"),
            "profiles_unreadable": bad,
            "rows_read": len(rows),
            "last_measured": max((r.get("measured") or "" for r in rows), default=""),
            "sources": sorted({n["source"] or "" for n in networks}),
        },
    )
    return model


def drift(model: LatencyModel, rows: list[dict]) -> tuple[float | None, int]:
    """(RMSE % of the model on networks measured after it was fitted, how many); (None, n) below
    REFIT_MIN_NEW networks."""
    last = model.data.get("last_measured") or ""
    paired = store.paired_p50(rows)
    new = {
        r["network"]: (r, p)
        for r, p in zip(rows, paired)
        if (r.get("measured") or "") > last and r.get("precision", model.precision) == model.precision
    }
    if len(new) < REFIT_MIN_NEW:
        return None, len(new)
    rel = []
    for r, p in new.values():
        try:
            rel.append(p / model.predict(r["spec"]) - 1)
        except UserError:
            continue
    if not rel:
        return None, 0
    return float(np.sqrt(np.mean(np.square(rel))) * 100), len(rel)


def needs_refit(model: LatencyModel, rows: list[dict]) -> tuple[bool, str]:
    rmse, n = drift(model, rows)
    if rmse is None:
        return False, f"{n} networks measured since the fit"
    held = (model.errors.get("held_out") or {}).get("rmse_pct", 0.0)
    limit = max(REFIT_FACTOR * held, REFIT_FLOOR_PCT)
    return rmse > limit, f"RMSE {rmse:.1f}% on {n} networks measured since the fit (refit above {limit:.1f}%)"
