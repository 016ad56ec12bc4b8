"""How search, fit, info and predict use a device's model: found (the cache's, or `--latency-model FILE`),
checked against this device, refitted when new measurements say it drifted; and how every measurement
they take is added to the device's data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgeffnet.core.errors import UserError
from edgeffnet.latency import device, store
from edgeffnet.latency.model import LatencyModel, fit, needs_refit


def find_model(
    target: str,
    precision: str,
    path: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
    required: bool = False,
) -> LatencyModel | None:
    """The model for this device, target and precision: `path` when given (it must exist and fit this
    device), else the cache's (None when there is none, unless `required`). A model whose error on
    networks measured since its fit is past the threshold (model.needs_refit) is refitted first."""
    echo = echo or (lambda m: None)
    here = device.identity(target)
    default = device.model_path(here, precision)
    where = Path(path) if path else default
    if not where.is_file():
        if path or required:
            raise UserError(
                f"no latency model at '{where}'"
                + ("" if path else f" for {here['target']} {precision} on this device")
                + f"; collect one with edgeffnet latency fit --target {target} "
                f"--precision {precision}"
            )
        return None
    model = LatencyModel.load(where, here=here, precision=precision)
    rows, _ = store.read(device.data_path(here, precision))
    refit, why = needs_refit(model, rows)
    if refit:
        model = fit(rows, precision, here)
        model.save(default)
        echo(
            f"latency model refitted ({why}): held-out RMSE {model.errors['held_out']['rmse_pct']:.1f}% on "
            f"{model.data['networks']} networks; {default}"
        )
    return model


def record(target: str, precision: str, rows: list[dict]) -> None:
    """Add measurements to the device's data: those that came with the bench record they were taken in
    (`bench_record`, a file), so a stand-in device (tests) never enters a real device's data. A cache that
    cannot be written costs the model data, never the run that measured them."""
    rows = [r for r in rows if r.get("bench_record") and Path(r["bench_record"]).is_file()]
    if not rows:
        return
    try:
        store.append(device.data_path(device.identity(target), precision), rows)
    except OSError:
        pass


def record_bench(records: Iterable[Any]) -> None:
    """Sweep's latency records (batch 1, the bundle's own runtime, complete) into the device's data."""
    from edgeffnet.specs.scaling import network_key, parse_spec

    for r in records:
        if r.mode != "latency" or r.baseline or r.interrupted or r.batch != 1 or not getattr(r, "saved_to", None):
            continue
        spec = r.model["spec"]
        record(
            r.target,
            r.precision,
            [
                store.row(
                    spec,
                    network_key(parse_spec(spec)),
                    r.precision,
                    r.stats["p50_ms"],
                    "sweep",
                    settings=r.settings,
                    measured=r.created,
                    profile=(getattr(r, "extra", None) or {}).get("profile"),
                    bench_record=str(r.saved_to),
                )
            ],
        )
