import math

import pytest

import edgeffnet
from edgeffnet.core.errors import UserError
from edgeffnet.network.info import describe
from edgeffnet.network.model import build
from edgeffnet.specs.scaling import ALPHA, BETA, GAMMA, parse_spec, round_channels, round_layers

# Parameter counts of the reference implementations (torchvision / timm / efficientnet_lite_pytorch).
REFERENCE_PARAMS = {
    "b0": 5_288_548,
    "b1": 7_794_184,
    "b2": 9_109_994,
    "b3": 12_233_232,
    "b4": 19_341_616,
    "b5": 30_389_784,
    "b6": 43_040_704,
    "b7": 66_347_960,
    "lite0": 4_652_008,
    "lite1": 5_416_680,
    "lite2": 6_092_072,
    "lite3": 8_197_096,
    "lite4": 13_006_568,
}
REFERENCE_MACS = {"b0": 0.386e9, "b4": 4.394e9, "lite0": 0.385e9}


def test_round_channels_multiple_of_8_and_90_percent_rule():
    assert round_channels(32 * 1.1) == 32  # 35.2 -> 32 (>= 90%)
    assert round_channels(16 * 1.4) == 24  # 22.4 -> 24
    assert round_channels(10) == 16  # 8 would be below 90% of 10
    assert round_channels(3) == 8  # never below the divisor
    for c in (7.3, 19.9, 100.1, 333.3, 1280 * 1.8):
        r = round_channels(c)
        assert r % 8 == 0 and r >= 0.9 * c


def test_round_layers_rounds_up():
    assert round_layers(3 * 1.1) == 4
    assert round_layers(2.0) == 2
    assert round_layers(0.3) == 1


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_params_match_reference_to_the_unit(name):
    model = build(parse_spec(name))  # the network create_model returns, before weights are filled in
    assert edgeffnet.count_params(model) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", sorted(REFERENCE_MACS))
def test_macs_within_2_percent_of_reference(name):
    macs = edgeffnet.count_macs(parse_spec(name))
    assert abs(macs / REFERENCE_MACS[name] - 1) < 0.02


def test_presets_follow_the_published_table():
    s = parse_spec("b4")
    assert (s.width, s.depth, s.resolution, s.dropout) == (1.4, 1.8, 380, 0.4)
    assert [st.layers for st in s.stages] == [2, 4, 4, 6, 6, 8, 2]
    assert s.stem_channels == 48 and s.head_channels == 1792


def test_lite_is_another_spec_for_the_same_builder():
    s = parse_spec("lite4")
    assert s.activation == "relu6" and s.se_ratio == 0
    assert s.stem_channels == 32 and s.head_channels == 1280  # not scaled
    assert s.stages[0].layers == 1 and s.stages[-1].layers == 1  # first/last stage depth not scaled
    model = edgeffnet.create_model("lite0")
    assert type(model) is type(edgeffnet.create_model("b0"))
    assert not any("se" in name.split(".") for name, _ in model.named_modules())


def test_compound_phi_follows_the_rule():
    s = parse_spec("phi=2")
    assert s.depth == pytest.approx(ALPHA**2)
    assert s.width == pytest.approx(BETA**2)
    assert s.resolution == round(224 * GAMMA**2 / 8) * 8
    assert s.flops_base == pytest.approx(ALPHA * BETA**2 * GAMMA**2)
    assert not s.warnings


def test_negative_phi_is_smaller_than_b0():
    s = parse_spec("b0,phi=-1.5")
    assert s.depth < 1 and s.width < 1 and s.resolution < 224
    assert edgeffnet.count_macs(s) < edgeffnet.count_macs(parse_spec("b0"))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_mac_ratio_tracks_alpha_beta2_gamma2_power_phi(k):
    d = describe(parse_spec(f"phi={k}"))
    check = d["scaling_check"]
    assert check["predicted"] == pytest.approx((ALPHA * BETA**2 * GAMMA**2) ** k)
    # Rounding layers up (ceil per stage) and channels to 8 make the real model ~10-30% bigger than the
    # continuous rule predicts; it never comes out smaller.
    assert 1.0 < check["ratio_over_predicted"] < 1.35


def test_custom_coefficients_warn_when_far_from_two():
    s = parse_spec("phi=1,alpha=1.5,beta=1.2,gamma=1.2")
    assert s.flops_base == pytest.approx(1.5 * 1.44 * 1.44)
    assert any("far from 2" in w for w in s.warnings)
    assert not parse_spec("phi=1,alpha=1.2,beta=1.1,gamma=1.15").warnings


@pytest.mark.parametrize("only", ["depth", "width", "resolution"])
def test_single_dimension_budget(only):
    s = parse_spec(f"phi=2,only={only}")
    budget = (ALPHA * BETA**2 * GAMMA**2) ** 2
    assert s.depth == pytest.approx(budget if only == "depth" else 1)
    assert s.width == pytest.approx(math.sqrt(budget) if only == "width" else 1)
    if only == "resolution":
        assert abs(s.resolution - 224 * math.sqrt(budget)) <= 4
    ratio = edgeffnet.count_macs(s) / edgeffnet.count_macs(parse_spec("b0"))
    assert 0.75 < ratio / budget < 1.35


def test_single_dimension_multipliers_and_overrides():
    assert parse_spec("b0,d=4").depth == 4 and parse_spec("b0,d=4").width == 1
    assert parse_spec("b0,w=2").stages[-1].out_channels == 640
    assert parse_spec("b0,r=2").resolution == 448
    assert parse_spec("b3,res=512").resolution == 512 and parse_spec("b3,res=512").width == 1.2
    assert parse_spec("efficientnet-b3").name == "b3"
    assert parse_spec(" B2 ").name == "b2"


def test_spec_function_returns_plain_dataclass():
    import dataclasses

    s = edgeffnet.spec("b1")
    assert dataclasses.is_dataclass(s) and s.depth == 1.1


@pytest.mark.parametrize(
    "bad",
    [
        "b9",
        "",
        "b0,phi=x",
        "b0,foo=1",
        "b3,phi=1",
        "b0,w=-1",
        "b0,only=depth",
        "phi=1,only=height",
        "b0,res=10",
        "b0,res=300.5",
        "b0,phi",
        "b0,w=1,w=2",
        "phi=40",
        "b0,d=nan",
    ],
)
def test_bad_specs_name_what_was_wrong_and_the_valid_forms(bad):
    with pytest.raises(UserError) as e:
        parse_spec(bad)
    msg = str(e.value)
    assert "valid forms" in msg and "\n" not in msg
