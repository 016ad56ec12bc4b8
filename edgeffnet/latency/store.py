"""A device's measurements: one JSONL file per device and precision under the cache, appended by every
measurement `latency fit`, search and fit take there, and bounded (the newest MAX_ROWS are kept).

One line per measured network: {"spec", "network", "precision", "p50_ms", "reference", "source",
"settings", "measured", "profile"}. `reference` is {"spec", "p50_ms"} of the network timed right after it
(paired timing, as search does): a fit takes each row's ratio to its reference, times the median of that
reference's timings, so the machine's drift between rows is not taken for a difference between networks.
`profile` is null or the record's profile (docs/measuring.md: by_role, layers, unprofiled_p50_ms,
profiled_sum_ms), trimmed to what the model reads.

The file is read line by line through the careful reader: a line cut short by a killed run, or edited
into something else, is skipped and counted, not fatal.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable
from pathlib import Path

from edgeffnet.core import files
from edgeffnet.core.untrusted import JSON_CAP, UntrustedFileError, field, parse_json, read_text

MAX_ROWS = 5000
SOURCES = ("design", "search", "fit", "sweep", "benchmark")


def trim_profile(profile: dict | None) -> dict | None:
    """What the model reads of a record's profile (docs/measuring.md), or None."""
    if not isinstance(profile, dict):
        return None
    keep = {
        k: profile[k]
        for k in ("format", "by_role", "unprofiled_p50_ms", "profiled_sum_ms", "mapped_fraction")
        if profile.get(k) is not None
    }
    layers = profile.get("layers")
    if isinstance(layers, list):
        keep["layers"] = [
            {k: row.get(k) for k in ("name", "role", "time_ms", "fused")} for row in layers if isinstance(row, dict)
        ]
    return keep


def row(
    spec: str,
    network: str,
    precision: str,
    p50_ms: float,
    source: str,
    *,
    reference: dict | None = None,
    settings: dict | None = None,
    measured: str | None = None,
    profile: dict | None = None,
    bench_record: str | None = None,
) -> dict:
    return {
        "spec": spec,
        "network": network,
        "precision": precision,
        "p50_ms": p50_ms,
        "reference": reference,
        "source": source,
        "settings": settings or {},
        "measured": measured or files.utc_now(),
        "profile": trim_profile(profile),
        "bench_record": bench_record,
    }


def _checked(d: object, where: str) -> dict:
    if not isinstance(d, dict):
        raise UntrustedFileError(f"{where} is not an object")
    field(d, "spec", str, where)
    field(d, "network", str, where)
    p50 = field(d, "p50_ms", float, where)
    if not p50 > 0:
        raise UntrustedFileError(f"{where}: p50_ms {p50} is not positive")
    ref = d.get("reference")
    if ref is not None:
        if not isinstance(ref, dict):
            raise UntrustedFileError(f"{where}: reference is not an object")
        field(ref, "spec", str, where)
        if not field(ref, "p50_ms", float, where) > 0:
            raise UntrustedFileError(f"{where}: the reference's p50_ms is not positive")
        if not field(ref, "ratio", float, where, default=1.0) > 0:
            raise UntrustedFileError(f"{where}: the ratio to the reference is not positive")
    return d


def read(path: Path) -> tuple[list[dict], int]:
    """(rows, lines skipped); no file: no rows."""
    if not Path(path).is_file():
        return [], 0
    text = read_text(path, cap=JSON_CAP * 8, what="latency measurements")
    rows, skipped = [], 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_checked(parse_json(line, f"{path} line {n}"), f"{path} line {n}"))
        except UntrustedFileError:
            skipped += 1
    return rows, skipped


def append(path: Path, new: list[dict]) -> None:
    """Append whole lines (one write per call); past MAX_ROWS the file is rewritten with the newest."""
    if not new:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in new)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    rows, _ = read(path)
    if len(rows) > MAX_ROWS:
        files.atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows[-MAX_ROWS:]))


def merge(path: Path, rows: Iterable[object], where: str) -> tuple[int, int]:
    """Add ROWS (from elsewhere: a farm device's data) that the file does not hold yet, the same row
    twice never; a row that is not one is skipped and counted. Returns (added, skipped)."""
    have = {json.dumps(r, sort_keys=True) for r in read(path)[0]}
    new, skipped = [], 0
    for n, r in enumerate(rows, 1):
        try:
            checked = _checked(r, f"{where} row {n}")
            text = json.dumps(checked, sort_keys=True)
        except (UntrustedFileError, TypeError, ValueError):  # TypeError, ValueError: not plain JSON values
            skipped += 1
            continue
        if text not in have:
            have.add(text)
            new.append(checked)
    append(path, new)
    return len(new), skipped


def ratio_to_reference(r: dict) -> float:
    """A row's time over its reference's: the median of per-round ratios where it was timed in turns
    with it (latency_collect), else the ratio of the two p50s (search's pairs, older rows)."""
    ref = r["reference"]
    return float(ref["ratio"] if ref.get("ratio") is not None else r["p50_ms"] / ref["p50_ms"])


def paired_p50(rows: list[dict]) -> list[float]:
    """Each row's p50 with the drift taken out: its ratio to its reference x the median of that
    reference's p50s over all rows (rows without a reference keep their own p50)."""
    medians = {}
    for spec in {r["reference"]["spec"] for r in rows if r.get("reference")}:
        medians[spec] = statistics.median(
            r["reference"]["p50_ms"] for r in rows if r.get("reference") and r["reference"]["spec"] == spec
        )
    return [
        ratio_to_reference(r) * medians[r["reference"]["spec"]] if r.get("reference") else r["p50_ms"] for r in rows
    ]


def latest_per_network(rows: list[dict]) -> list[dict]:
    """The newest row of each network and source: a network timed many times weighs once per source."""
    out: dict[tuple[str, str], dict] = {}
    for r in rows:
        out[(r["network"], r.get("source", ""))] = r
    return list(out.values())
