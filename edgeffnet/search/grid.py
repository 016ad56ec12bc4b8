"""The candidates of step 1: coefficient triples on a grid under the FLOPS constraint.

Why this range: at phi > 0 no dimension should shrink, so each coefficient is >= 1; the constraint
alpha*beta^2*gamma^2 <= ratio+tol then bounds the grid by itself (alpha <= ratio+tol, beta and gamma
<= sqrt(ratio+tol)), so no further limit is imposed: every split of the budget is a candidate, from all
depth (alpha ~ 2) to all resolution (gamma ~ 1.41).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from ..errors import UserError
from ..scaling import ALPHA, BASELINES, BETA, GAMMA, ModelSpec, parse_spec

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
        return {"depth": math.log(self.alpha) / total, "width": 2 * math.log(self.beta) / total,
                "resolution": 2 * math.log(self.gamma) / total}


def baseline(base: str) -> str:
    """b0 / lite0 (also 'efficientnet-b0'); phi scales a family baseline only."""
    spec = parse_spec(base)
    if spec.name not in BASELINES.values():
        raise UserError(f"search and fit scale a family baseline ({', '.join(BASELINES.values())}), not '{base}'")
    return spec.name


def grid(step: float = 0.05, tol: float = 0.1, ratio: float = 2.0) -> list[Candidate]:
    """Every (alpha, beta, gamma) on multiples of `step`, each >= 1, with |alpha*beta^2*gamma^2 - ratio|
    <= tol, plus the paper's (1.2, 1.1, 1.15) whether or not it lies on the grid. Paper first."""
    if not 0.001 <= step <= 0.5:
        raise UserError(f"--step must be between 0.001 and 0.5, got {step:g}")
    if tol < 0 or ratio <= 1:
        raise UserError(f"--tol must be >= 0 and --flops-ratio > 1 (got tol {tol:g}, ratio {ratio:g})")
    top = ratio + tol
    first = math.ceil(1 / step - 1e-9)  # the smallest multiple of step that is >= 1

    def values(limit: float):
        k = first
        while k * step <= limit + 1e-9:
            yield round(k * step, DIGITS)
            k += 1

    found = [Candidate(a, b, g) for a in values(top) for b in values(math.sqrt(top / a))
             for g in values(math.sqrt(top / (a * b * b)))
             if abs(a * b * b * g * g - ratio) <= tol + 1e-9]
    if len(found) > 2000:
        raise UserError(f"--step {step:g} gives {len(found)} candidates; use a coarser step (0.05 gives ~110)")
    paper = Candidate(*PAPER)
    return [paper] + [c for c in found if c != paper]


def network_key(spec: ModelSpec) -> str:
    """What makes two specs the same network after rounding (channels, layers, pixels): equal keys are
    built and measured once."""
    parts = [spec.family, spec.resolution, spec.stem_channels, spec.head_channels, spec.activation, spec.se_ratio,
             [(s.expand_ratio, s.kernel, s.stride, s.in_channels, s.out_channels, s.layers) for s in spec.stages]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
