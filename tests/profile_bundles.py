"""Small bundles the profile tests share (imported by their fixtures): Lite0 at 64 px, fp32 and int8,
random weights, few views: a build takes seconds, and the stage cache of one session serves both."""

from __future__ import annotations

import os

import edgeffnet

SPEC = "lite0,res=64"
QUICK_INT8 = dict(calib_size=16, fidelity_views=8)


def build(root, precision: str):
    old = os.environ.get("EDGEFFNET_CACHE")
    os.environ["EDGEFFNET_CACHE"] = str(root / "cache")
    try:
        return edgeffnet.build(
            SPEC,
            precision=precision,
            output=root / f"lite0-{precision}",
            views=2,
            **(QUICK_INT8 if precision == "int8" else {}),
        ).path
    finally:
        if old is None:
            del os.environ["EDGEFFNET_CACHE"]
        else:
            os.environ["EDGEFFNET_CACHE"] = old
