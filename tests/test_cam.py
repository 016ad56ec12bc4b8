"""Class activation maps: the numerics against a direct computation from the model, the maps of a bundle's
compiled artifact (an extra output of the IR) against PyTorch, and the `edgeffnet cam` command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli_process
from PIL import Image

import edgeffnet
from edgeffnet.workflows import cam

SPEC = "mobilenetv2,res=96"  # ReLU6 inverted residuals with a 1x1 head: the pooled map is the head's


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("chelsea", "coffee"):
        paths.append(folder / f"{name}.png")
        Image.fromarray(getattr(skimage.data, name)()).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    return {**os.environ, "EDGEFFNET_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The seeded random model as a checkpoint (cam refuses a model without weights)."""
    path = tmp_path_factory.mktemp("w") / "mbv2.pt"
    edgeffnet.save_weights(edgeffnet.create_model(SPEC), path)
    return path


def _direct(model, x: np.ndarray, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """CAMs as a 1x1 convolution of the final feature map with the classifier's rows, and the logits."""
    with torch.no_grad():
        t = torch.from_numpy(x)
        maps = F.conv2d(model.features(t), model.classifier.weight[classes, :, None, None])
        return maps[0].double().numpy(), model(t)[0].double().numpy()


def test_maps_equal_the_direct_computation_and_average_to_the_logits(checkpoint, photos):
    source = cam.model_source(SPEC, str(checkpoint))
    model = edgeffnet.create_model(SPEC, weights=checkpoint)
    _, x = cam.network_input(cam.load_photo(photos[0]), source.preprocess)
    out = source.run(x)
    classes = [int(i) for i in np.argsort(-out.logits)[:3]] + [0]
    maps = cam.class_activation_maps(out.features, source.weights, classes)
    direct, logits = _direct(model, x, classes)
    assert maps.shape == (4, 3, 3)  # 96 px / output stride 32
    assert np.abs(maps - direct).max() <= 1e-4 * max(1.0, np.abs(direct).max())
    # Global average pooling then the classifier: each logit is its map's mean plus the bias.
    bias = model.classifier.bias.detach().double().numpy()[classes]
    assert np.abs(maps.mean(axis=(1, 2)) + bias - logits[classes]).max() <= 1e-4


def test_correlation_ignores_scale_and_offset_and_sees_a_moved_peak():
    a = np.arange(16, dtype=np.float64).reshape(4, 4)
    assert cam.correlation(a, 3 * a + 2) == pytest.approx(1.0)
    assert cam.correlation(a, -a) == pytest.approx(-1.0)
    assert cam.correlation(a, a[::-1, ::-1]) < 0


def test_upsampled_map_keeps_the_peak_where_it_was():
    m = np.zeros((7, 7), np.float32)
    m[1, 5] = 1.0
    up = cam.upsample(m, 224)
    y, x = np.unravel_index(np.argmax(up), up.shape)
    assert abs(y - (1 + 0.5) * 32) <= 16 and abs(x - (5 + 0.5) * 32) <= 16


@pytest.fixture(scope="module")
def fp32_bundle(env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "fp32"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEFFNET_CACHE", env["EDGEFFNET_CACHE"])
        edgeffnet.build(SPEC, output=out)
    return out


def test_bundle_maps_from_the_compiled_ir_match_pytorch(fp32_bundle, photos):
    fp32, artifact = cam.bundle_sources(fp32_bundle)
    assert artifact.info["runtime"].startswith("openvino") and artifact.info["artifact"] == "model.xml"
    model = edgeffnet.create_model(SPEC)  # the bundle's random weights come from seed 0
    _, x = cam.network_input(cam.load_photo(photos[1]), fp32.preprocess)
    classes = [1, 281, 967]
    direct, logits = _direct(model, x, classes)
    for source in (fp32, artifact):
        out = source.run(x)
        maps = cam.class_activation_maps(out.features, source.weights, classes)
        assert np.abs(maps - direct).max() <= 1e-3, source.label
        assert np.abs(out.logits[classes] - logits[classes]).max() <= 1e-4, source.label


@pytest.mark.slow
def test_cam_of_an_int8_bundle_beside_fp32(env, tmp_path, photos):
    bundle = tmp_path / "int8"
    r = run_cli_process(
        "build",
        SPEC,
        "-p",
        "int8",
        "--calib-size",
        "32",
        "--fidelity-views",
        "16",
        "-o",
        str(bundle),
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "maps"
    r = run_cli_process("cam", str(bundle), *map(str, photos), "--top", "2", "-o", str(out), env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "mean correlation" in r.stderr
    summary = json.loads((out / "cam.json").read_text())
    assert summary["artifact"]["precision"] == "int8" and summary["artifact"]["runtime"].startswith("openvino")
    assert len(summary["images"]) == 2
    for image in summary["images"]:
        assert len(image["classes"]) == 2 and image["feature_map"] == [1280, 3, 3]
        assert all(-1.0 <= c["correlation"] <= 1.0 for c in image["classes"])
        with Image.open(out / image["png"]) as png:
            assert png.size[0] > 300 and png.size[1] > 300
    with Image.open(out / "grid.png") as png:
        assert png.size[1] > png.size[0] * 0.6  # two photos, three panels each


@pytest.mark.slow
def test_compare_pretrained_lite_models_on_the_same_photos(env, tmp_path, photos):
    out = tmp_path / "fig7"
    r = run_cli_process("cam", "--compare", "lite0,lite1", str(photos[0]), "-o", str(out), env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "cam.json").read_text())
    models = summary["images"][0]["models"]
    assert [m["spec"] for m in models] == ["lite0", "lite1"]
    assert [m["resolution"] for m in models] == [224, 240]
    assert all(281 <= m["class"] <= 285 for m in models)  # real weights: the cat is a cat
    assert (out / "grid.png").is_file() and (out / "chelsea.cam.png").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["b0", "{photo}"], "needs trained weights"),
        (["b0", "--weights", "pretrained", "{photo}"], "pretrained weights exist for"),
        (["lite0", "--weights", "pretrained", "--class", "1000", "{photo}"], "--class 1000 is outside"),
        (["lite0", "--weights", "pretrained", "missing.jpg"], "does not exist"),
        (["--compare", "lite0", "{photo}"], "two or more"),
    ],
)
def test_bad_input_gets_one_line(env, tmp_path, photos, args, message):
    args = [a.replace("{photo}", str(photos[0])) for a in args]
    r = run_cli_process("cam", *args, "-o", str(tmp_path / "out"), env=env, timeout=900)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "cam.json").exists()
