"""The designed set of networks a latency model is collected from.

A Latin hypercube (scipy's, seeded: the same N gives the same networks on every device) over the space
search and fit move in: phi, how the FLOPS budget alpha*beta^2*gamma^2 = 2 is split between depth, width
and resolution (a point of the simplex, as the search grid's candidates are), and a resolution factor
off the compound rule (0.8..1.25x, so resolution also varies apart from the other two); families
alternate (EfficientNet B0 and Lite0 bases). The phi range is where builds stay cheap on a small CPU
and covers the search's default phi=1 and fit's usual budgets.
"""

from __future__ import annotations

import math

from edgeffnet.specs.scaling import parse_spec

DEFAULT_NETWORKS = 48
PHI_RANGE = (-4.0, 1.0)
RES_FACTOR = (0.8, 1.25)
FAMILIES = ("b0", "lite0")
SEED = 25


def point(u: list[float], family: str) -> str:
    """One spec from a point of the unit hypercube (phi, depth share, width share, resolution factor)."""
    phi = PHI_RANGE[0] + u[0] * (PHI_RANGE[1] - PHI_RANGE[0])
    depth, width = u[1], u[2]
    if depth + width > 1:  # fold the square onto the simplex: uniform over the splits
        depth, width = 1 - depth, 1 - width
    alpha, beta, gamma = 2**depth, 2 ** (width / 2), 2 ** ((1 - depth - width) / 2)
    factor = math.exp(math.log(RES_FACTOR[0]) + u[3] * math.log(RES_FACTOR[1] / RES_FACTOR[0]))
    res = max(32, int(round(224 * gamma**phi * factor / 8)) * 8)
    return parse_spec(f"{family},phi={phi:.2f},alpha={alpha:.3f},beta={beta:.3f},gamma={gamma:.3f},res={res}").name


def design(n: int = DEFAULT_NETWORKS, seed: int = SEED) -> list[str]:
    """n specs, families alternating. The hypercube's rows come in random order, so the networks measured
    before a collection is cut short are a random part of the design, not one corner of it."""
    from scipy.stats import qmc  # the build side's (collection builds networks)

    u = qmc.LatinHypercube(d=4, seed=seed).random(n)
    return [point(list(row), FAMILIES[i % len(FAMILIES)]) for i, row in enumerate(u)]
