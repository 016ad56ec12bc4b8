"""The report's warnings, at the top of report.md and report.html: what the weights, the fidelity, the
machine's load and the spread across rounds say about how far a row can be trusted."""

from __future__ import annotations

import itertools

from edgeffnet.measure import device_state
from edgeffnet.measure.console import ms
from edgeffnet.measure.report.fidelity import SANE_COSINE
from edgeffnet.measure.report.row import ReportRow


def warnings(table: list[ReportRow]) -> list[str]:
    """What a reader must know before trusting a row: random weights, and INT8 graphs that do not follow FP32."""
    out = []
    random = sorted({r["model"] for r in table if r["weights"] == "random"}, key=str)
    if random:
        out.append(
            f"Random weights ({', '.join(random)}): latency study: the outputs mean nothing. Their "
            f"fidelity column says how closely the reduced-precision graph follows its FP32 graph, not accuracy."
        )
    insane = {(r["model"], r["precision"]): r["cosine"] for r in table if not r["sane"]}
    if insane:
        out.append(
            f"Not numerically sane (mean cosine with FP32 below {SANE_COSINE}): "
            + ", ".join(f"{m} {p} (cosine {c:.2f})" for (m, p), c in sorted(insane.items()))
            + ". These random-weight graphs do not compute what their FP32 computes; their speed may not "
            "carry over to trained weights."
        )
    return out


def state_warnings(table: list[ReportRow]) -> list[str]:
    out = []
    busy = [r for r in table if r["busy"]]
    if busy:
        out.append(
            f"Measured on a busy machine ({', '.join(sorted({r['model'] + ' ' + r['precision'] for r in busy}))}): "
            f"other processes used at least {device_state.BUSY_SHARE:.0%} of its CPUs while they were measured "
            f"(each record's device_state says by which rule); their latencies are slower and noisier than "
            f"the device's own."
        )
    pairs = overlapping(table)
    if pairs:
        out.append(
            "Spread wider than the gap (p50 intervals across interleaved rounds overlap, so which is faster is "
            "not established): "
            + "; ".join(
                f"{a['model']} [{ms(a['p50_low'])}, {ms(a['p50_high'])}] and {b['model']} "
                f"[{ms(b['p50_low'])}, {ms(b['p50_high'])}] ms ({a['series']})"
                for a, b in pairs
            )
            + "."
        )
    return out


def overlapping(table: list[ReportRow]) -> list[tuple[ReportRow, ReportRow]]:
    """Neighbouring models of a series (by FLOPs) whose intervals for the median overlap: the spread across
    rounds is wider than the gap between them, so the order of their latencies is not established. Latency
    rows only: a throughput row's figure is images/s, not its requests' p50."""
    out = []
    for name in dict.fromkeys(r["series"] for r in table):
        pts = sorted(
            (
                r
                for r in table
                if r["series"] == name
                and r["mode"] == "latency"
                and r["p50_low"] is not None
                and r["p50_high"] is not None
            ),
            key=lambda r: (r["flops"], r["model"]),
        )
        # (every point has both ends, as filtered above: said again for the type checker)
        out += [
            (a, b)
            for a, b in itertools.pairwise(pts)
            if a["p50_low"] is not None
            and b["p50_low"] is not None
            and a["p50_high"] is not None
            and b["p50_high"] is not None
            and a["p50_low"] <= b["p50_high"]
            and b["p50_low"] <= a["p50_high"]
        ]
    return out
