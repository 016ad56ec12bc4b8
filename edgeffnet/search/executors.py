"""Where a candidate is built and timed: the one seam between the search loops and the machines.

`search` and `fit` decide which networks to measure and what the measurements mean; an executor only
builds, verifies and times. `LocalExecutor` does it here, one candidate after another, through
`harness`. The device farm's executor (edgeffnet/farm/search.py) builds on the cluster's build workers
and times on a device of the target, several candidates at once; both return the same measurements, so
the files, the resumption and the choice are the same whichever ran.

A measurement is what `harness.build_and_measure` returns (spec, macs, params, resolution, bundle,
p50/p90/p99_ms, record, measured), plus "paper" (the paper's network timed right after it, for paired
timing) when the job asks for it, and "placement" (which node built, which timed, how long each took)
where that is worth saying.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeffnet.core.errors import UserError
from edgeffnet.search import harness


@dataclass
class Job:
    """One network to build (through the stage cache, into `dest`), verify and time (record kept in `keep`);
    with `pair_keep`, the paper's network is timed right after it on the same device (record kept there)."""

    spec: str
    dest: Path
    keep: Path | None = None
    pair_keep: Path | None = None


class LocalExecutor:
    """This machine: each job built, then timed under the device lock, in the order given."""

    def measure(
        self, jobs: list[Job], target: str, precision: str, settings: harness.BenchSettings, pair: Path | None = None
    ) -> Iterator[tuple[Job, dict | UserError]]:
        """(job, measurement) as each finishes, or (job, UserError) for one that could not be measured.
        `pair` is the paper's bundle; a job pairs with it after the job that builds it has finished."""
        for job in jobs:
            try:
                m = harness.build_and_measure(job.spec, target, precision, job.dest, settings, keep=job.keep)
                if pair is not None and Path(job.dest) == Path(pair):
                    pair = m["bundle"]  # the paper's bundle, as built
                elif job.pair_keep is not None:
                    m["paper"] = harness.time_bundle(Path(pair), settings, keep=job.pair_keep)
            except UserError as e:
                yield job, e
                continue
            yield job, m

    def time(
        self, bundles: list[Path], settings: harness.BenchSettings, keeps: list[Path | None] | None = None
    ) -> list[dict]:
        """Each bundle timed once, in this order (a bundle may come several times: alternating rounds)."""
        keeps = keeps or [None] * len(bundles)
        return [harness.time_bundle(Path(b), settings, keep=k) for b, k in zip(bundles, keeps)]


def placement_note(m: dict) -> str:
    """' [built on X in S s, timed on Y in S s]' for a measurement that says where it ran; '' otherwise."""
    p = m.get("placement")
    if not p:
        return ""
    where = [f"built on {p['built_on']['name']} in {p['build_seconds']:.1f} s"] if "built_on" in p else []
    where += [f"timed on {p['timed_on']['name']} in {p['time_seconds']:.1f} s"] if "timed_on" in p else []
    return f" [{', '.join(where)}]"
