"""What `edgeffnet info` reports: the scaled stage table, d/w/r, params, MACs and the 2^phi check."""

from __future__ import annotations

import torch

from .model import EfficientNet, count_macs, count_params
from .scaling import BASELINES, PRESETS, ModelSpec, parse_spec


def _params(spec: ModelSpec, num_classes: int) -> int:
    with torch.device("meta"):  # counting needs shapes only
        return count_params(EfficientNet(spec, num_classes))


def stage_table(spec: ModelSpec) -> list[dict]:
    """The paper's Table 1 for this model: stage, operator, kernel, input resolution, channels, layers."""
    rows = [dict(stage=1, operator="Conv3x3", kernel=3, resolution=spec.resolution,
                 channels=spec.stem_channels, layers=1)]
    for i, st in enumerate(spec.stages, start=2):
        rows.append(dict(stage=i, operator=f"MBConv{st.expand_ratio}", kernel=st.kernel, resolution=st.resolution,
                         channels=st.out_channels, layers=st.layers))
    last = spec.stages[-1]
    final = -(-last.resolution // last.stride)
    rows.append(dict(stage=len(rows) + 1, operator="Conv1x1 & Pooling & FC", kernel=1, resolution=final,
                     channels=spec.head_channels, layers=1))
    return rows


def scaling_check(spec: ModelSpec, macs: int) -> dict | None:
    """The seed's claim: MACs(phi) / MACs(baseline) against (alpha*beta^2*gamma^2)^phi and 2^phi."""
    phi = spec.nominal_phi
    if phi is None:
        return None
    base = parse_spec(BASELINES[spec.family])
    ratio = macs / count_macs(base)
    predicted = spec.flops_base**phi
    return dict(phi=phi, baseline=base.name, mac_ratio=ratio, predicted=predicted, two_pow_phi=2.0**phi,
                ratio_over_predicted=ratio / predicted)


def describe(spec: ModelSpec, num_classes: int = 1000) -> dict:
    macs = count_macs(spec, num_classes)
    return dict(
        spec=spec.name, family=spec.family, phi=spec.phi, only=spec.only,
        alpha=spec.alpha, beta=spec.beta, gamma=spec.gamma, alpha_beta2_gamma2=spec.flops_base,
        depth=spec.depth, width=spec.width, resolution_multiplier=spec.r, resolution=spec.resolution,
        dropout=spec.dropout, activation=spec.activation, squeeze_excitation=bool(spec.se_ratio),
        num_classes=num_classes, params=_params(spec, num_classes), macs=macs, flops=2 * macs,
        stages=stage_table(spec), scaling_check=scaling_check(spec, macs), warnings=list(spec.warnings),
    )


def presets() -> list[dict]:
    rows = []
    for name in PRESETS:
        d = describe(parse_spec(name))
        check = d["scaling_check"]
        rows.append(dict(spec=name, width=d["width"], depth=d["depth"], resolution=d["resolution"],
                         dropout=d["dropout"], params=d["params"], macs=d["macs"],
                         mac_ratio=check["mac_ratio"], predicted=check["predicted"]))
    return rows
