"""What `edgeffnet info` reports: the scaled stage table, d/w/r, params, MACs and the 2^phi check."""

from __future__ import annotations

import torch

from edgeffnet.network.model import EfficientNet, count_macs, count_params
from edgeffnet.specs.scaling import BASELINES, EFFICIENTNET_FAMILIES, PRESETS, TABLE3, ModelSpec, parse_spec


def _params(spec: ModelSpec, num_classes: int) -> int:
    with torch.device("meta"):  # counting needs shapes only
        return count_params(EfficientNet(spec, num_classes))


def stage_table(spec: ModelSpec) -> list[dict]:
    """The paper's Table 1 for this model: stage, operator, kernel, input resolution, channels, layers."""
    k = spec.stem_kernel
    rows = [
        dict(
            stage=1,
            operator=f"Conv{k}x{k}" + (" & MaxPool3x3" if spec.stem_pool else ""),
            kernel=k,
            resolution=spec.resolution,
            channels=spec.stem_channels,
            layers=1,
        )
    ]
    for i, st in enumerate(spec.stages, start=2):
        rows.append(
            dict(
                stage=i,
                operator=st.operator.split(",")[0],
                kernel=st.kernel,
                resolution=st.resolution,
                channels=st.out_channels,
                layers=st.layers,
            )
        )
    last = spec.stages[-1]
    final = -(-last.resolution // last.stride)
    rows.append(
        dict(
            stage=len(rows) + 1,
            operator="Conv1x1 & Pooling & FC" if spec.head_channels else "Pooling & FC",
            kernel=1,
            resolution=final,
            channels=spec.features_channels,
            layers=1,
        )
    )
    return rows


def scaling_check(spec: ModelSpec, macs: int) -> dict:
    """The seed's claim: MACs(phi) / MACs(baseline) against (alpha*beta^2*gamma^2)^phi and 2^phi.

    A spec without phi (`resnet50,w=2`, `b0,res=160`) is checked against its own multipliers' FLOPS
    rule, d x w^2 x r^2, and has no 2^phi.
    """
    phi = spec.nominal_phi
    base = parse_spec(BASELINES[spec.family])
    ratio = macs / count_macs(base)
    predicted = spec.flops_base**phi if phi is not None else spec.depth * spec.width**2 * spec.r**2
    return dict(
        phi=phi,
        baseline=base.name,
        mac_ratio=ratio,
        predicted=predicted,
        two_pow_phi=2.0**phi if phi is not None else None,
        ratio_over_predicted=ratio / predicted,
    )


def describe(spec: ModelSpec, num_classes: int = 1000) -> dict:
    macs = count_macs(spec, num_classes)
    return dict(
        spec=spec.name,
        family=spec.family,
        phi=spec.phi,
        only=spec.only,
        alpha=spec.alpha,
        beta=spec.beta,
        gamma=spec.gamma,
        alpha_beta2_gamma2=spec.flops_base,
        depth=spec.depth,
        width=spec.width,
        resolution_multiplier=spec.r,
        resolution=spec.resolution,
        dropout=spec.dropout,
        activation=spec.activation,
        squeeze_excitation=bool(spec.se_ratio),
        num_classes=num_classes,
        params=_params(spec, num_classes),
        macs=macs,
        flops=2 * macs,
        stages=stage_table(spec),
        scaling_check=scaling_check(spec, macs),
        warnings=list(spec.warnings),
    )


def presets() -> list[dict]:
    """The compound-scaled presets (B0-B7, Lite0-4); the other families are Table 3's (`table3`)."""
    rows = []
    for name in (n for n, fam in PRESETS.items() if fam.name in EFFICIENTNET_FAMILIES):
        d = describe(parse_spec(name))
        check = d["scaling_check"]
        rows.append(
            dict(
                spec=name,
                width=d["width"],
                depth=d["depth"],
                resolution=d["resolution"],
                dropout=d["dropout"],
                params=d["params"],
                macs=d["macs"],
                mac_ratio=check["mac_ratio"],
                predicted=check["predicted"],
            )
        )
    return rows


TABLE3_TOLERANCE = 0.05


def table3() -> list[dict]:
    """The paper's Table 3 beside the counted MACs of the spec that builds each row.

    A row agrees when the count is within 5% of the paper's figure or rounds to it (the paper prints one
    decimal: MobileNetV1's 0.569B is its "0.6B"). A row that does not names the paper's row, of the same
    family, whose figure the count does match.
    """
    rows = []
    for row in TABLE3:
        spec = parse_spec(row.spec)
        macs = count_macs(spec)
        billions = macs / 1e9
        deviation = billions / row.paper_flops - 1
        agrees = abs(deviation) <= TABLE3_TOLERANCE or round(billions, 1) == row.paper_flops
        matches = None
        if not agrees:
            matches = next(
                (
                    other.label
                    for other in TABLE3
                    if other is not row
                    and parse_spec(other.spec).family == spec.family
                    and abs(billions / other.paper_flops - 1) <= TABLE3_TOLERANCE
                ),
                None,
            )
        rows.append(
            dict(
                label=row.label,
                spec=spec.name,
                family=spec.family,
                depth=spec.depth,
                width=spec.width,
                resolution=spec.resolution,
                alpha_beta2_gamma2=spec.flops_base if spec.phi else None,
                params=_params(spec, 1000),
                macs=macs,
                paper_flops=row.paper_flops,
                deviation=deviation,
                agrees=agrees,
                matches=matches,
                note=row.note,
            )
        )
    return rows
