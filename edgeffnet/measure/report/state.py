"""A record's start-up, memory, artifact and device-state figures, and the spread of its median across
interleaved rounds (bench record format 2), as a row's columns."""

from __future__ import annotations

from typing import TypedDict


class StartAndState(TypedDict):
    """Start-up, memory, artifact and device state (bench record format 2); None where the record lacks them."""

    load_ms: float | None
    first_inference_ms: float | None
    peak_mib: float | None
    memory_increase_mib: float | None
    runners_loaded: float | None
    artifact_bytes: float | None
    load_before: float | None
    load_after: float | None
    others_cpu_share: float | None
    busy: bool | None
    rounds: float | None
    p50_low: float | None
    p50_high: float | None
    p50_coverage: float | None


def start_and_state(r: dict) -> StartAndState:
    """The row's start-up, memory, artifact and device-state columns; None where the record lacks them
    (format 1, or a probe this device does not answer)."""

    def entry(key: str) -> dict:
        v = r.get(key)
        return v if isinstance(v, dict) else {}

    def number(v):  # a record from elsewhere: a figure that is not a number is left out, not fatal
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    mem, art, state, rounds = (entry(k) for k in ("memory", "artifact", "device_state", "rounds"))
    loads = [(s if isinstance(s, dict) else {}).get("load_average") for s in (state.get("before"), state.get("after"))]
    before, after = (number(v[0]) if isinstance(v, list) and v else None for v in loads)
    interval = rounds.get("interval_ms")
    if not isinstance(interval, list):
        interval = [None, None]
    return {
        "load_ms": number(r.get("load_ms")),
        "first_inference_ms": number(r.get("first_inference_ms")),
        "peak_mib": number(mem.get("peak_mib")),
        "memory_increase_mib": number(mem.get("increase_mib")),
        "runners_loaded": number(mem.get("runners_loaded")),
        "artifact_bytes": number(art.get("bytes")),
        "load_before": before,
        "load_after": after,
        "others_cpu_share": number(state.get("others_cpu_share")),
        "busy": state.get("busy") if isinstance(state.get("busy"), bool) else None,
        "rounds": number(rounds.get("count")),
        "p50_low": number(interval[0]),
        "p50_high": number(interval[-1]),
        "p50_coverage": number(rounds.get("coverage")),
    }
