"""The one timing loop: bench, the OpenVINO INT8 route choice and benchmarks/ all time through here.

`measure` times one synchronous call at a time (MLPerf single-stream), `measure_async` keeps a runtime's
asynchronous queue full, `interleaved_p50` times several callables in turns so that load from other
processes on a shared machine hits each alike. Garbage collection is off while timing: a collection
inside the loop would show up as a tail latency of Python's, not the model's.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Limits:
    """When a timed run may stop: at least `iterations` calls *and* at least `seconds`, after `warmup`
    untimed seconds (at least one call)."""

    iterations: int
    seconds: float
    warmup: float


@dataclass
class Measurement:
    samples_ms: list[float]
    seconds: float  # wall time of the timed phase
    count: int  # inferences completed in it
    interrupted: bool = False


@contextmanager
def _no_gc() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _done(count: int, elapsed_ns: int, lim: Limits) -> float:
    """Progress in [0, 1]: both the iteration and the duration minimum must be met."""
    return min(1.0, count / lim.iterations, elapsed_ns / (lim.seconds * 1e9) if lim.seconds else 1.0)


def measure(
    fn: Callable[[], object],
    lim: Limits,
    tick: Callable[[float], object] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> Measurement:
    """Time `fn()` one call at a time. Ctrl-C ends the run early and keeps what was measured."""
    samples: list[int] = []
    start = clock()
    try:
        with _no_gc():
            t = clock()
            while True:  # warm-up: at least one call, then until `warmup` seconds have passed
                fn()
                if clock() - t >= lim.warmup * 1e9:
                    break
            start = next_tick = clock()
            while True:
                t0 = clock()
                fn()
                t1 = clock()
                samples.append(t1 - t0)
                if len(samples) >= lim.iterations and t1 - start >= lim.seconds * 1e9:
                    break
                if tick and t1 >= next_tick:
                    tick(_done(len(samples), t1 - start, lim))
                    next_tick = t1 + 200_000_000
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    end = clock()
    return Measurement([x / 1e6 for x in samples], (end - start) / 1e9, len(samples), interrupted)


def measure_async(queue: Any, lim: Limits, tick: Callable[[float], object] | None = None) -> Measurement:
    """Keep an asynchronous queue (backends.AsyncQueue) full; throughput counts from the first submission
    to the last completion. Per-request latencies are the runtime's own (queueing included), as
    benchmark_app reports them."""
    clock = time.perf_counter_ns
    begin, count, interrupted = None, 0, False
    try:
        t = clock()
        while True:
            queue.start()
            if clock() - t >= lim.warmup * 1e9:
                break
        queue.wait_all()
        queue.latencies_ms.clear()
        begin = next_tick = clock()
        while True:
            queue.start()  # blocks while every request is busy
            count += 1
            now = clock()
            if count >= lim.iterations and now - begin >= lim.seconds * 1e9:
                break
            if tick and now >= next_tick:
                tick(_done(count, now - begin, lim))
                next_tick = now + 200_000_000
    except KeyboardInterrupt:
        interrupted = True
    queue.wait_all()  # what was started finishes either way, and its time belongs to the run
    if begin is None:
        return Measurement([], 0.0, 0, True)
    lat = [float(x) for x in queue.latencies_ms]
    return Measurement(lat, (clock() - begin) / 1e9, len(lat), interrupted)


def interleaved_times(
    calls: dict[str, Callable[[], object]],
    seconds: float = 1.5,
    min_runs: int = 20,
    warmup: int = 5,
    max_runs: int | None = None,
) -> dict[str, list[float]]:
    """Each callable's times in ms, round by round: timed in turns (one call of each per round) for about
    `seconds` each and at least `min_runs` rounds (exactly `max_runs` when given: a fixed count, as
    benchmarks want). Entry i of every list is from round i.

    Every other round runs them in reverse order: on a shared CPU the call right after another one's
    (cache, frequency, a neighbour's burst) is not the same as the first, and no callable should always
    hold the same place."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    items = list(calls.items())
    end = time.perf_counter() + seconds * len(calls)
    with _no_gc():
        rounds = 0
        while (rounds < max_runs) if max_runs else (time.perf_counter() < end or rounds < min_runs):
            for k, call in items if rounds % 2 == 0 else items[::-1]:
                t = time.perf_counter_ns()
                call()
                times[k].append((time.perf_counter_ns() - t) / 1e6)
            rounds += 1
    return times


def interleaved_p50(
    calls: dict[str, Callable[[], object]],
    seconds: float = 1.5,
    min_runs: int = 20,
    warmup: int = 5,
    max_runs: int | None = None,
) -> dict[str, float]:
    """Median ms per callable, timed in turns (`interleaved_times`)."""
    times = interleaved_times(calls, seconds, min_runs, warmup, max_runs)
    return {k: float(np.median(v)) for k, v in times.items()}


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of one callable's time over another's in the same round. A slowdown that
    lasts a few rounds (a neighbour's burst) slows both calls of those rounds alike and leaves their
    ratio; the ratio of the two medians keeps it whenever the burst covers different shares of each
    one's samples (it does: the longer call is exposed longer)."""
    a, b = np.asarray(times[numerator]), np.asarray(times[denominator])
    return float(np.median(a / b))


Slice = Callable[[Limits], Measurement]
OnRound = Callable[[int, list[Any], dict[Any, list[Measurement]]], None]


def interleaved_rounds(
    slices: dict[Any, Slice], rounds: int, per_round: Limits, warmup: float = 0.0, on_round: OnRound | None = None
) -> tuple[dict[Any, list[Measurement]], bool]:
    """Measure each of several things once per round, in turns: `slices[key](limits)` times one slice of
    `key` (`measure` or `measure_async` on its runner). Every other round runs them in reverse order, as
    `interleaved_p50` does, so no item always follows the same one, and drift over the run (a neighbour's
    burst, a clock falling as the chip warms) lands on every item alike. The first round also warms each
    up for `warmup` seconds; later slices warm up with the one untimed call `measure` always makes.

    `on_round(index, order, measured)` runs after each round. Returns the measurements per key (one per
    round, a slice without samples left out) and whether Ctrl-C stopped it early."""
    keys = list(slices)
    out: dict[Any, list[Measurement]] = {k: [] for k in keys}
    try:
        for r in range(rounds):
            order = keys if r % 2 == 0 else keys[::-1]
            lim = per_round if r else Limits(per_round.iterations, per_round.seconds, warmup)
            for k in order:
                m = slices[k](lim)
                if m.samples_ms:
                    out[k].append(m)
                if m.interrupted:
                    return out, True
            if on_round:
                on_round(r, order, out)
    except KeyboardInterrupt:
        return out, True
    return out, False
