"""`search` counts its grid before it lists it. A fine step with a wide tolerance is refused in one
line, at once and in little memory, naming the count and what to change; grids under the cap are the same
as a plain enumeration of the constraint."""

from __future__ import annotations

import math
import re
import time
import tracemalloc

import pytest
from conftest import assert_refused as refused

from edgeffnet.core.errors import UserError
from edgeffnet.search.grid import MAX_CANDIDATES, PAPER, Candidate, expected_size, grid


def brute_force(step: float, tol: float, ratio: float) -> set[tuple[float, float, float]]:
    """Every triple of multiples of `step`, each >= 1, within the tolerance: the definition, no cleverness."""
    top, k0 = ratio + tol, math.ceil(1 / step - 1e-9)
    vals = [round(k * step, 6) for k in range(k0, int(top / step) + 2) if k * step <= top + 1e-9]
    return {
        (a, b, g)
        for a in vals
        for b in vals
        if a * b * b <= top + 1e-9
        for g in vals
        if abs(a * b * b * g * g - ratio) <= tol + 1e-9
    }


@pytest.mark.parametrize(
    "step,tol,ratio",
    [(0.05, 0.1, 2.0), (0.1, 0.3, 3.0), (0.04, 0.05, 2.5), (0.25, 1.0, 4.0), (0.2, 0.0, 2.0), (0.03, 0.02, 1.5)],
)
def test_grid_under_the_cap_is_the_whole_constraint(step, tol, ratio):
    got = grid(step, tol, ratio)
    assert got[0] == Candidate(*PAPER) and len(set(got)) == len(got)
    assert {(c.alpha, c.beta, c.gamma) for c in got} - {PAPER} == brute_force(step, tol, ratio) - {PAPER}


@pytest.mark.parametrize(
    "step,tol,ratio",
    [
        (0.001, 50, 60),
        (0.001, 0.1, 2),
        (0.002, 5, 10),
        (0.01, 0.5, 3),
        (0.5, 1e6, 1e9),
        (0.003, 0.01, 400),
        (0.001, 0.0001, 1000),
    ],
)
def test_too_large_a_grid_is_refused_before_it_is_built(step, tol, ratio):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(UserError) as e:
            grid(step, tol, ratio)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 10 and peak < 20 << 20, (time.perf_counter() - started, peak)
    message = str(e.value)
    assert "\n" not in message and ("candidates" in message or "pairs" in message), message
    assert "--step" in message or "smaller --tol" in message  # what to change ...
    suggested = re.search(r"use --step ([0-9.]+) or coarser", message)
    if suggested:  # ... and the step it suggests is one that works
        assert 1 <= len(grid(float(suggested.group(1)), tol, ratio)) <= MAX_CANDIDATES + 1


def test_the_estimate_is_close_where_it_decides():
    """The closed-form count decides only when it is twice the cap; at fine steps it is within a few percent."""
    for step, tol, ratio in ((0.01, 0.05, 2.0), (0.02, 0.2, 2.0)):
        about, _ = expected_size(step, tol, ratio)
        exact = len(brute_force(step, tol, ratio))
        assert 0.7 * exact < about < 1.1 * exact, (about, exact)


def test_a_grid_just_over_the_cap_is_refused_with_the_cap(monkeypatch):
    import edgeffnet.search.grid as g

    monkeypatch.setattr(g, "MAX_CANDIDATES", 50)  # 0.05/0.1/2 has 111: the estimate (~77) lets it through
    with pytest.raises(UserError, match="more than 50 candidates"):
        g.grid(0.05, 0.1, 2.0)


@pytest.mark.parametrize(
    "args",
    [
        ("--step", "0.001", "--tol", "50", "--flops-ratio", "60"),
        ("--step", "0.001"),
        ("--step", "0.004", "--tol", "3", "--flops-ratio", "8"),
    ],
)
def test_cli_refuses_a_huge_grid_in_one_line_and_writes_nothing(cli, tmp_path, args):
    out = tmp_path / "search"
    started = time.perf_counter()
    line = refused(cli("search", *args, "-o", out), "candidates")
    assert time.perf_counter() - started < 20
    assert f"{MAX_CANDIDATES:,}" in line and "use --step" in line
    assert not out.exists()
