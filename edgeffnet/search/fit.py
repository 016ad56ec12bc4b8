"""Step 2 on the device: the largest phi whose measured latency meets a budget.

phi lives on a grid of `step` (default 0.05); each grid phi rounds to a network (channels, layers,
pixels), and grid phis that round to the same network share one measurement. A latency model (log
latency against log MACs, fitted by least squares to every network measured so far) proposes a phi;
measurements decide: the proposal and its neighbour are timed, then the search gallops outwards until
the budget is bracketed and bisects the bracket down to adjacent grid steps. The answer is the largest
grid phi that was measured within the budget while the next step up was measured over it; it is then
timed again to confirm (a confirmation over the budget sends the search below it).
"""

from __future__ import annotations

import json
import math
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeffnet.core.errors import UserError
from edgeffnet.core.untrusted import field as typed_field
from edgeffnet.search import harness
from edgeffnet.search.executors import Job, LocalExecutor, placement_note
from edgeffnet.search.grid import baseline, network_key
from edgeffnet.search.state_files import check_fields, read_state
from edgeffnet.specs.scaling import _ALIASES as _SPEC_ALIASES
from edgeffnet.specs.scaling import ALPHA, BETA, GAMMA, parse_spec

MAX_MEASUREMENTS = 40  # per budget; a bisection over the default range needs about a dozen


@dataclass
class FitPlan:
    base: str = "b0"
    coefficients: tuple[float, float, float] = (ALPHA, BETA, GAMMA)
    target: str = "cpu"
    precision: str | None = None
    settings: harness.BenchSettings = field(default_factory=harness.BenchSettings)
    metric: str = "p50"
    step: float = 0.05
    phi_min: float = -4.0
    phi_max: float = 8.0
    out: Path = Path("fit")
    # The latency model that proposes where to start: a file, "auto" (this device's, under the cache, where
    # there is one: the command's default) or None (none: the Python API's default).
    latency_model: str | None = None

    def check(self) -> None:
        self.base = baseline(self.base)
        self.target, self.precision = harness.check_target(self.target, self.precision)
        harness.check_metric(self.metric)
        self.settings.check()
        if not 0.001 <= self.step <= 1:
            raise UserError(f"--phi-step must be between 0.001 and 1, got {self.step:g}")
        if not self.phi_min < self.phi_max:
            raise UserError(f"--phi-min ({self.phi_min:g}) must be below --phi-max ({self.phi_max:g})")
        if any(not c >= 1 for c in self.coefficients):
            raise UserError(f"coefficients must each be >= 1, got {self.coefficients}")
        for phi in (self.phi_min, self.phi_max):  # both ends must be specs the grammar accepts
            parse_spec(self.spec(phi))

    @property
    def imin(self) -> int:
        return math.ceil(self.phi_min / self.step - 1e-9)

    @property
    def imax(self) -> int:
        return math.floor(self.phi_max / self.step + 1e-9)

    def phi(self, i: int) -> float:
        return round(i * self.step, 6)

    def spec(self, phi: float) -> str:
        a, b, g = self.coefficients
        extra = "" if (a, b, g) == (ALPHA, BETA, GAMMA) else f",alpha={a:g},beta={b:g},gamma={g:g}"
        return parse_spec(f"{self.base},phi={phi:g}{extra}").name


FIT_KEYS = {"alpha", "beta", "gamma", "phi"}  # phi is what fit chooses; everything else would be dropped


def coefficients_from_spec(text: str) -> tuple[str, tuple[float, float, float]]:
    """A searched spec ('b0,alpha=1.25,beta=1.05,gamma=1.2,phi=1') -> (its baseline, its coefficients).
    Keys fit would not carry over (res, w, d, r, only, dropout) are refused, not dropped."""
    s = parse_spec(text)
    keys = [_SPEC_ALIASES.get(k, k) for k in (t.partition("=")[0].strip().lower() for t in text.split(",") if "=" in t)]
    dropped = [k for k in keys if k not in FIT_KEYS]
    if dropped:
        raise UserError(
            f"fit --spec takes a base and alpha, beta, gamma (what search chose); it would drop "
            f"{', '.join(dropped)}: fit chooses phi and with it the resolution and sizes, so leave "
            f"{'it' if len(dropped) == 1 else 'them'} out"
        )
    return baseline(text.split(",")[0] if "=" not in text.split(",")[0] else "b0"), (s.alpha, s.beta, s.gamma)


def parse_coefficients(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UserError(f"--coefficients takes alpha,beta,gamma (e.g. 1.2,1.1,1.15), not '{text}'")
    return values


def plan_from_options(base: str | None, searched: str | None, coefficients: str | None, **options) -> FitPlan:
    """BASE, --spec (a searched spec: its base and coefficients) or --coefficients, one way at a time."""
    if searched and (base or coefficients):
        raise UserError("--spec carries its own base and coefficients; drop BASE/--coefficients, or drop --spec")
    if searched:
        base, coeffs = coefficients_from_spec(searched)
    else:
        coeffs = parse_coefficients(coefficients) if coefficients else (ALPHA, BETA, GAMMA)
    plan = FitPlan(base=base or "b0", coefficients=coeffs, **options)
    plan.check()
    return plan


def parse_budgets(latency_ms: float | None, budgets: str | None) -> list[float]:
    if (latency_ms is None) == (budgets is None):
        raise UserError("give the budget: --latency-ms X, or --budgets X,Y,... for a family (one of them)")
    if latency_ms is not None:
        return [latency_ms]
    try:
        values = sorted({float(b) for b in budgets.split(",") if b.strip()})
    except ValueError:
        values = []
    if not values or any(not v > 0 for v in values):
        raise UserError(f"--budgets takes positive milliseconds, comma-separated (e.g. 2,5,10,20), not '{budgets}'")
    return values


class Measurements:
    """Timed networks on disk (fit/measured/NETWORK.json), shared by every budget of a family fit."""

    def __init__(self, plan: FitPlan, echo=None):
        self.plan, self.echo = plan, echo or (lambda m: None)
        self.dir = Path(plan.out) / "measured"
        self.fingerprint = {"target": plan.target, "precision": plan.precision, "bench": plan.settings.to_dict()}
        self._macs: dict[int, tuple[str, str, int]] = {}
        self.fresh = 0
        self.executor = LocalExecutor()  # where networks are built and timed (the farm sets its own)

    def network(self, i: int) -> tuple[str, str, int]:
        """(spec, network key, MACs) of grid index i, counted without building."""
        if i not in self._macs:
            from edgeffnet.network.model import count_macs

            spec = parse_spec(self.plan.spec(self.plan.phi(i)))
            self._macs[i] = (spec.name, network_key(spec), count_macs(spec))
        return self._macs[i]

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def known(self, i: int) -> dict | None:
        """The stored measurement of grid index i's network with these settings; a damaged one is refused."""
        path = self._path(self.network(i)[1])
        row = read_state(path, "fit measurement file")
        if row is None or row.get("fingerprint") != self.fingerprint:
            return None
        check_fields(
            row,
            path,
            positive=("p50_ms", "p90_ms", "p99_ms", "macs", "params"),
            whole=("macs", "params", "resolution"),
            text=("spec", "bundle", "network"),
        )
        history = typed_field(row, "history", list, str(path), default=[])
        for past in history:
            if not isinstance(past, dict):
                raise UserError(
                    f"{path}: 'history' holds a {type(past).__name__}, not a measurement; delete it and "
                    "run again to measure that one anew"
                )
            check_fields(past, path, positive=("p50_ms", "p90_ms", "p99_ms"))
        return row

    def measure(self, i: int, again: bool = False) -> dict:
        """The latest measurement of grid index i's network (timed now if there is none, or `again`)."""
        row = None if again else self.known(i)
        if row is not None:
            return row
        spec, key, _ = self.network(i)
        first = self.known(i)
        if first is not None:  # timed again: keep its bundle, add a measurement
            (m,) = self.executor.time(
                [Path(first["bundle"])],
                self.plan.settings,
                [self.dir / "records" / f"{key}-{len(first.get('history', [])) + 2}.json"],
            )
            row = first | {k: m[k] for k in ("p50_ms", "p90_ms", "p99_ms", "record", "measured")}
            row["history"] = first.get("history", []) + [{k: first[k] for k in ("p50_ms", "p90_ms", "p99_ms")}]
        else:
            slug = spec.replace(",", "-").replace("=", "").replace(".", "p")
            dest = Path(self.plan.out) / "bundles" / f"{slug}-{self.plan.target}-{self.plan.precision}"
            job = Job(spec, dest, keep=self.dir / "records" / f"{key}-1.json")
            with closing(
                self.executor.measure([job], self.plan.target, self.plan.precision, self.plan.settings)
            ) as measured:
                ((_, m),) = list(measured)
            if isinstance(m, UserError):
                raise m
            row = {
                k: m[k]
                for k in (
                    "spec",
                    "macs",
                    "params",
                    "resolution",
                    "bundle",
                    "p50_ms",
                    "p90_ms",
                    "p99_ms",
                    "record",
                    "measured",
                )
            } | {"phi": self.plan.phi(i), "network": key, "fingerprint": self.fingerprint}
        if m.get("placement"):
            row["placement"] = row.get("placement", {}) | m["placement"]  # a confirmation: where it was timed
        self.fresh += 1
        harness.atomic_write_text(self._path(key), json.dumps(row, indent=1, allow_nan=False) + "\n")
        self._record(row)
        self.echo(
            f"  phi={self.plan.phi(i):g} {spec}: {self.plan.metric} {row[f'{self.plan.metric}_ms']:.3f} ms"
            + (" (again)" if again else "")
            + placement_note(m)
        )
        return row

    def _record(self, row: dict) -> None:
        """Every measurement goes into the device's latency data (unpaired: fit times one network at a time);
        not a farm device's (--cluster), which this machine's data does not describe."""
        if not isinstance(self.executor, LocalExecutor):
            return
        from edgeffnet.latency import use
        from edgeffnet.latency.store import row as data_row

        use.record(
            self.plan.target,
            self.plan.precision,
            [
                data_row(
                    row["spec"],
                    row["network"],
                    self.plan.precision,
                    row["p50_ms"],
                    "fit",
                    settings=self.fingerprint["bench"],
                    measured=row.get("measured"),
                    bench_record=row.get("record"),
                )
            ],
        )


def model_anchors(plan: FitPlan, budget_ms: float, meas: Measurements, model) -> list[int]:
    """Where measuring starts when the device has a latency model: the largest grid phi it predicts within
    the budget, and the next step up (the pair that brackets the answer when the model is right)."""
    lo, hi, best = plan.imin, plan.imax, plan.imin
    while lo <= hi:  # predicted latency grows with phi
        mid = (lo + hi) // 2
        if model.predict(meas.network(mid)[0]) <= budget_ms:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return list(dict.fromkeys((best, min(best + 1, plan.imax))))


class LatencyModel:
    """log latency = a + b log MACs, least squares over distinct networks (b = 1 with a single point)."""

    def __init__(self, points: list[tuple[int, float]]):
        x = np.log([m for m, _ in points])
        y = np.log([t for _, t in points])
        if len(set(x.tolist())) >= 2:
            self.slope, self.intercept = (float(v) for v in np.polyfit(x, y, 1))
        else:
            self.slope, self.intercept = 1.0, float(y[0] - x[0])

    def predict(self, macs: int) -> float:
        return math.exp(self.intercept + self.slope * math.log(macs))


def anchors(plan: FitPlan) -> list[int]:
    """Where the latency model starts: phi=0 and phi=1 (B0 and B1's budget), or the range's nearest ends."""
    first = min(max(0, plan.imin), plan.imax)
    unit = round(1 / plan.step)
    second = first + unit if first + unit <= plan.imax else max(plan.imin, first - unit)
    return list(dict.fromkeys((first, second)))


class _BudgetSearch:
    """One budget's search: the latest latency of every grid index measured (twins share it), the order they
    were tried in, and the gallop/bisection state that picks the next one."""

    def __init__(self, plan: FitPlan, budget_ms: float, meas: Measurements):
        self.plan, self.budget_ms, self.meas = plan, budget_ms, meas
        self.key = f"{plan.metric}_ms"
        self.lat: dict[int, float] = {}  # grid index -> latest latency of its network
        self.tried: list[int] = []
        self.jump = 1  # how far the next gallop step reaches, doubled each time
        self.used_model = False  # whether the model has proposed inside the bracket yet
        self.neighbour = False  # whether its proposal's neighbour is still to be checked
        self.last: int | None = None  # the index measured last

    def measure(self, i: int, again: bool = False) -> None:
        row = self.meas.measure(i, again)
        for j in [j for j in self.lat if self.meas.network(j)[1] == row["network"]] + [i]:
            self.lat[j] = row[self.key]
        if i not in self.tried:
            self.tried.append(i)

    def bracket(self) -> tuple[int | None, int | None]:
        fits = [i for i, t in self.lat.items() if t <= self.budget_ms]
        lo = max(fits) if fits else None
        over = [i for i, t in self.lat.items() if t > self.budget_ms and (lo is None or i > lo)]
        return lo, (min(over) if over else None)

    def propose(self, lo: int | None, hi: int | None) -> int:
        """The model's largest phi predicted within budget, inside the open bracket."""
        meas = self.meas
        model = LatencyModel(list({meas.network(i)[1]: (meas.network(i)[2], t) for i, t in self.lat.items()}.values()))
        a = self.plan.imin if lo is None else lo + 1
        b = self.plan.imax if hi is None else hi - 1
        best = a
        left, right = a, b
        while left <= right:  # predicted latency grows with phi: binary search for the last fitting index
            mid = (left + right) // 2
            if model.predict(meas.network(mid)[2]) <= self.budget_ms:
                best, left = mid, mid + 1
            else:
                right = mid - 1
        return best

    def converge(self) -> None:
        """Measure until the budget lies between adjacent grid steps and the lower one is confirmed (or the
        measurements run out)."""
        plan, confirms = self.plan, 0
        while len(self.tried) < MAX_MEASUREMENTS:
            lo, hi = self.bracket()
            if lo is None and hi == plan.imin:
                raise UserError(
                    f"budget {self.budget_ms:g} ms is below the smallest model in range: "
                    f"phi={plan.phi(plan.imin):g} measured {self.lat[plan.imin]:.3f} ms {plan.metric}; "
                    "raise the budget or lower --phi-min"
                )
            if lo is not None and (hi == lo + 1 or (hi is None and lo == plan.imax)):
                self.measure(lo, again=True)  # confirm the answer with a fresh measurement
                confirms += 1
                if self.lat[lo] <= self.budget_ms or confirms >= 3:
                    break
                continue
            i = self.next_index(lo, hi)
            self.measure(i)
            self.last = i

    def next_index(self, lo: int | None, hi: int | None) -> int:
        """The grid index to measure next, given the bracket (lo fits, hi does not; None: not found yet)."""
        plan = self.plan
        if lo is not None and hi is not None:
            if not self.used_model:  # the model proposes once inside the bracket ...
                self.used_model, self.neighbour = True, True
                return self.propose(lo, hi)
            if self.neighbour and self.last in (lo, hi):  # ... its neighbour is checked (often that settles it) ...
                self.neighbour = False
                return lo + 1 if self.last == lo else hi - 1
            return (lo + hi) // 2  # ... and bisection decides the rest
        if hi is None:  # everything measured fits: gallop up
            i = min(plan.imax, max(self.propose(lo, None), lo + self.jump))
        else:  # nothing fits yet: gallop down
            i = max(plan.imin, min(self.propose(None, hi), hi - self.jump))
        self.jump *= 2
        return i

    def answer(self, start: list[int], predictor) -> dict:
        """The largest grid phi measured within the budget, what was measured above it and everything tried."""
        plan, meas, lat, key = self.plan, self.meas, self.lat, self.key
        lo, hi = self.bracket()
        if lo is None:
            raise UserError(
                f"no phi in range met {self.budget_ms:g} ms after {len(self.tried)} measurements; raise the budget"
            )
        row = meas.known(lo)
        capped = hi is None and lo == plan.imax
        return {
            "budget_ms": self.budget_ms,
            "metric": plan.metric,
            "phi": plan.phi(lo),
            "proposed_by_model": None
            if predictor is None
            else {
                "phi": plan.phi(start[0]),
                "predicted_ms": predictor.predict(meas.network(start[0])[0]),
                "model": predictor.path,
            },
            **{k: row[k] for k in ("spec", "macs", "params", "resolution", "bundle", "p50_ms", "p90_ms", "p99_ms")},
            "confirmed": row.get("history") is not None,
            "capped_at_phi_max": capped,
            "placement": row.get("placement"),
            "next_phi": None if hi is None else plan.phi(hi),
            "next_spec": None if hi is None else meas.network(hi)[0],
            "next_ms": None if hi is None else lat[hi],
            "measurements": len(self.tried),
            "tried": [
                {
                    "phi": plan.phi(i),
                    "spec": meas.network(i)[0],
                    key: lat[i],
                    "macs": meas.network(i)[2],
                    "within_budget": lat[i] <= self.budget_ms,
                }
                for i in sorted(self.tried)
            ],
        }


def fit_budget(plan: FitPlan, budget_ms: float, meas: Measurements, echo=None, predictor=None) -> dict:
    """The largest grid phi whose measured latency is <= budget_ms, with the next step measured above it."""
    if not budget_ms > 0:
        raise UserError(f"a latency budget is in milliseconds and must be positive, got {budget_ms:g}")
    echo = echo or (lambda m: None)
    search = _BudgetSearch(plan, budget_ms, meas)
    start = model_anchors(plan, budget_ms, meas, predictor) if predictor else anchors(plan)
    if predictor:
        echo(
            f"{budget_ms:g} ms: the latency model proposes phi={plan.phi(start[0]):g} "
            f"({predictor.predict(meas.network(start[0])[0]):.3f} ms predicted); measuring it and the next step"
        )
    for i in start:
        search.measure(i)
    search.converge()
    result = search.answer(start, predictor)
    nxt = result["next_phi"]
    echo(
        f"{budget_ms:g} ms: phi={result['phi']:g} ({result['spec']}) {plan.metric} {result[search.key]:.3f} ms"
        + ("" if nxt is None else f"; phi={nxt:g} measured {result['next_ms']:.3f} ms")
    )
    return result


def fit_family(
    plan: FitPlan, budgets: list[float], echo=None, executor=None
) -> tuple[list[dict], list[tuple[float, str]]]:
    """(results, [(budget, why)] for budgets that could not be met): one unmeetable budget of a family
    does not stop the others, which share every measurement. `executor`: where networks are built and
    timed (this machine unless given)."""
    plan.check()
    from edgeffnet.latency.use import find_model

    farm = executor is not None and not isinstance(executor, LocalExecutor)
    if farm and plan.latency_model not in (None, "auto"):
        raise UserError(
            "--latency-model is this machine's latency model, which does not describe a --cluster "
            "device: leave it out there (phi is then proposed from MACs)"
        )
    predictor = (
        None
        if plan.latency_model is None or farm
        else find_model(plan.target, plan.precision, None if plan.latency_model == "auto" else plan.latency_model, echo)
    )
    meas = Measurements(plan, echo=echo)
    if executor is not None:
        meas.executor = executor
    results, failed = [], []
    for b in sorted(budgets):
        try:
            results.append(fit_budget(plan, b, meas, echo, predictor))
        except UserError as e:
            if len(budgets) == 1:
                raise
            failed.append((b, str(e)))
            (echo or (lambda m: None))(f"{b:g} ms: {e}")
    return results, failed


def write(plan: FitPlan, results: list[dict]) -> list[Path]:
    """fit.json, fit.csv and fit.png into the output directory."""
    from edgeffnet.search.plots import fit_plot

    out = Path(plan.out)
    key = f"{plan.metric}_ms"
    harness.atomic_write_text(
        out / "fit.json",
        json.dumps(
            {
                "base": plan.base,
                "coefficients": plan.coefficients,
                "target": plan.target,
                "precision": plan.precision,
                "bench": plan.settings.to_dict(),
                "step": plan.step,
                "results": results,
            },
            indent=1,
            allow_nan=False,
        )
        + "\n",
    )
    lines = [f"budget_ms,phi,spec,{key},macs,params,resolution,next_phi,next_{key},bundle"]
    for r in results:
        lines.append(
            ",".join(
                str(v) if v is not None else ""
                for v in (
                    r["budget_ms"],
                    r["phi"],
                    f'"{r["spec"]}"',
                    r[key],
                    r["macs"],
                    r["params"],
                    r["resolution"],
                    r["next_phi"],
                    r["next_ms"],
                    r["bundle"],
                )
            )
        )
    harness.atomic_write_text(out / "fit.csv", "\n".join(lines) + "\n")
    tried = list({t["spec"]: t for r in results for t in r["tried"]}.values())
    a, b, g = plan.coefficients
    png = fit_plot(
        results,
        tried,
        plan.metric,
        f"{plan.base} (alpha {a:g}, beta {b:g}, gamma {g:g}) on {plan.target} "
        f"({plan.precision}): largest phi per budget",
        out / "fit.png",
    )
    return [out / "fit.json", out / "fit.csv", png]
