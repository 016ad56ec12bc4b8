"""The candidates of step 1: coefficient triples on a grid under the FLOPS constraint.

Why this range: at phi > 0 no dimension should shrink, so each coefficient is >= 1; the constraint
alpha*beta^2*gamma^2 <= ratio+tol then bounds the grid by itself (alpha <= ratio+tol, beta and gamma
<= sqrt(ratio+tol)), so no further limit is imposed: every split of the budget is a candidate, from all
depth (alpha ~ 2) to all resolution (gamma ~ 1.41).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from edgeffnet.core.errors import UserError
from edgeffnet.specs.scaling import ALPHA, BASELINES, BETA, GAMMA, network_key, parse_spec  # noqa: F401  (grid.network_key)

PAPER = (ALPHA, BETA, GAMMA)
DIGITS = 6  # coefficients are multiples of the step; rounding to this many digits removes float dust


@dataclass(frozen=True)
class Candidate:
    alpha: float
    beta: float
    gamma: float

    @property
    def flops_ratio(self) -> float:
        return self.alpha * self.beta**2 * self.gamma**2

    @property
    def slug(self) -> str:
        return f"a{self.alpha:g}-b{self.beta:g}-g{self.gamma:g}"

    @property
    def is_paper(self) -> bool:
        return (self.alpha, self.beta, self.gamma) == PAPER

    def spec(self, base: str, phi: float) -> str:
        """The canonical spec string (what the stage cache keys on and what the user copies)."""
        return parse_spec(f"{base},phi={phi:g},alpha={self.alpha:g},beta={self.beta:g},gamma={self.gamma:g}").name

    def split(self) -> dict[str, float]:
        """The share of the FLOPS budget each dimension takes: FLOPS ~ d * w^2 * r^2."""
        total = math.log(self.flops_ratio)
        if total <= 0:
            return {"depth": 0.0, "width": 0.0, "resolution": 0.0}
        return {
            "depth": math.log(self.alpha) / total,
            "width": 2 * math.log(self.beta) / total,
            "resolution": 2 * math.log(self.gamma) / total,
        }


def baseline(base: str) -> str:
    """b0 / lite0 (also 'efficientnet-b0'); phi scales a family baseline only."""
    spec = parse_spec(base)
    if spec.name not in BASELINES.values():
        raise UserError(f"search and fit scale a family baseline ({', '.join(BASELINES.values())}), not '{base}'")
    return spec.name


MAX_CANDIDATES = 2000  # each is a build and a measurement: 2000 is already days on a slow device
MAX_PAIRS = 2_000_000  # (alpha, beta) pairs visited to list the gammas: ~1 s of work


def _volume(top: float) -> float:
    """The volume of {alpha, beta, gamma >= 1 : alpha*beta^2*gamma^2 <= top}: integrated in closed form,
    top - 1 - sqrt(top)*ln(top); candidates on a grid of step s number about (volume of the shell) / s^3."""
    return 0.0 if top <= 1 else top - 1 - math.sqrt(top) * math.log(top)


def expected_size(step: float, tol: float, ratio: float) -> tuple[float, float]:
    """(about how many candidates, how many (alpha, beta) pairs listing them visits), counted before any
    list is made: a fine step with a wide tolerance would otherwise fill memory before the size check."""
    shell = _volume(ratio + tol) - _volume(max(1.0, ratio - tol))
    pairs = (math.sqrt(ratio + tol) - 1) ** 2 / step**2  # the area of {alpha, beta >= 1 : alpha*beta^2 <= top}
    return shell / step**3, pairs


def _listed(step: float, tol: float, ratio: float):
    """The triples on the grid, one at a time: gamma runs only over its band sqrt((ratio-tol)/(alpha*beta^2))
    .. sqrt(top/(alpha*beta^2)), so the work is the (alpha, beta) pairs plus the candidates found."""
    top = ratio + tol
    first = math.ceil(1 / step - 1e-9)  # the smallest multiple of step that is >= 1

    def values(low: float, limit: float):
        k = max(first, math.ceil(math.sqrt(low) / step - 1e-9) if low > 0 else first)
        while k * step <= limit + 1e-9:
            yield round(k * step, DIGITS)
            k += 1

    for a in values(0, top):
        for b in values(0, math.sqrt(top / a)):
            for g in values((ratio - tol) / (a * b * b), math.sqrt(top / (a * b * b))):
                if abs(a * b * b * g * g - ratio) <= tol + 1e-9:
                    yield Candidate(a, b, g)


def _fits(step: float, tol: float, ratio: float, pairs_limit: float = MAX_PAIRS) -> bool:
    about, pairs = expected_size(step, tol, ratio)
    if about > 2 * MAX_CANDIDATES or pairs > pairs_limit:
        return False
    return sum(1 for _ in itertools.islice(_listed(step, tol, ratio), MAX_CANDIDATES + 1)) <= MAX_CANDIDATES


def _coarser_step(step: float, tol: float, ratio: float) -> float | None:
    """The finest step (to 0.001) found that gives at most the cap, checked by counting; None above 0.5."""
    shell = _volume(ratio + tol) - _volume(max(1.0, ratio - tol))
    s = max(step, (shell / MAX_CANDIDATES) ** (1 / 3) if shell > 0 else step)
    for _ in range(60):
        s = math.ceil(s * 1.05 * 1000) / 1000
        if s > 0.5:
            return None
        if _fits(s, tol, ratio, MAX_PAIRS / 10):  # a tenth of the pairs: the suggestion is quick to find
            return s
    return None


def _too_big(what: str, step: float, tol: float, ratio: float) -> UserError:
    coarser = _coarser_step(step, tol, ratio)
    change = (
        f"use --step {coarser:g} or coarser, or a smaller --tol" if coarser else "use a smaller --tol or --flops-ratio"
    )
    return UserError(f"--step {step:g} with --tol {tol:g} and --flops-ratio {ratio:g} {what}; {change}")


def grid(step: float = 0.05, tol: float = 0.1, ratio: float = 2.0) -> list[Candidate]:
    """Every (alpha, beta, gamma) on multiples of `step`, each >= 1, with |alpha*beta^2*gamma^2 - ratio|
    <= tol, plus the paper's (1.2, 1.1, 1.15) whether or not it lies on the grid. Paper first."""
    if not 0.001 <= step <= 0.5:
        raise UserError(f"--step must be between 0.001 and 0.5, got {step:g}")
    if tol < 0 or ratio <= 1:
        raise UserError(f"--tol must be >= 0 and --flops-ratio > 1 (got tol {tol:g}, ratio {ratio:g})")
    cap = f"(a search measures at most {MAX_CANDIDATES:,})"
    about, pairs = expected_size(step, tol, ratio)
    if about > 2 * MAX_CANDIDATES:  # the estimate is within a few percent at fine steps: clearly too many
        raise _too_big(f"gives about {about:,.0f} candidates {cap}", step, tol, ratio)
    if pairs > MAX_PAIRS:
        raise _too_big(
            f"spans about {pairs:,.0f} (alpha, beta) pairs to check (at most {MAX_PAIRS:,})", step, tol, ratio
        )
    found = list(itertools.islice(_listed(step, tol, ratio), MAX_CANDIDATES + 1))
    if len(found) > MAX_CANDIDATES:
        raise _too_big(f"gives more than {MAX_CANDIDATES:,} candidates {cap}", step, tol, ratio)
    paper = Candidate(*PAPER)
    return [paper] + [c for c in found if c != paper]
