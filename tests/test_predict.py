"""`edgeffnet predict`: the compiled artifact of the pretrained Lite0 bundle on real images, with the bundle's
own preprocessing and ImageNet class names; bad input is one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from conftest import run_cli_process
from PIL import Image

from edgeffnet.core.preprocess import load_image
from edgeffnet.network.reference import create_model

CATS = {282, 285}  # tiger cat, Egyptian cat


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    return {**os.environ, "EDGEFFNET_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def lite0(env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "lite0"
    r = run_cli_process("build", "lite0", "--weights", "pretrained", "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("photos")
    paths = {"chelsea": d / "chelsea.jpg", "coffee": d / "coffee.png", "camera": d / "camera.bmp"}
    for name, path in paths.items():
        Image.fromarray(getattr(skimage.data, name)()).save(path)
    return paths


def _predict(env, bundle, *images, top: int = 5) -> list[dict]:
    r = run_cli_process("predict", str(bundle), *map(str, images), "--top", str(top), "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_pretrained_lite0_names_a_cat(env, lite0, photos):
    [result] = _predict(env, lite0, photos["chelsea"])
    assert result["image"] == str(photos["chelsea"]) and result["runtime"] == "openvino CPU"
    top = result["top"]
    assert len(top) == 5 and top[0]["class"] in CATS
    assert top[0]["name"] in ("tiger cat", "Egyptian cat")
    probs = [c["probability"] for c in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert not result["random_weights"] and "warning" not in result  # real weights: nothing to warn of


def test_artifact_agrees_with_pytorch_on_the_same_input(env, lite0, photos):
    """The bundle's preprocessing and IR give PyTorch's answer: same top-5, probabilities within 1e-4."""
    [result] = _predict(env, lite0, photos["chelsea"])
    model = create_model("lite0", weights="pretrained")
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(load_image(photos["chelsea"], model.preprocess)[None])), 1)[0]
    assert [c["class"] for c in result["top"]] == p.topk(5).indices.tolist()
    assert np.allclose([c["probability"] for c in result["top"]], p.topk(5).values.numpy(), atol=1e-4)


def test_several_images_keep_their_order_and_any_pixel_format(env, lite0, photos):
    results = _predict(env, lite0, photos["coffee"], photos["camera"], photos["chelsea"], top=3)
    assert [r["image"] for r in results] == [str(photos[n]) for n in ("coffee", "camera", "chelsea")]
    assert all(len(r["top"]) == 3 for r in results)
    assert results[0]["top"][0]["class"] in {967, 968, 504}  # espresso, cup, coffee mug
    assert results[2]["top"][0]["class"] in CATS


def test_text_output_lists_classes_by_name(env, lite0, photos):
    r = run_cli_process("predict", str(lite0), str(photos["chelsea"]), env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{photos['chelsea']}  (openvino CPU)" and len(lines) == 6
    assert any(" cat" in line for line in lines[1:2])


@pytest.mark.parametrize("case", ["missing image", "not an image", "not a bundle", "top 0"])
def test_bad_input_is_one_line(env, lite0, photos, tmp_path, case):
    bundle, image, extra = lite0, photos["chelsea"], []
    if case == "missing image":
        image = tmp_path / "nope.jpg"
    elif case == "not an image":
        image = tmp_path / "notes.jpg"
        image.write_text("not a picture")
    elif case == "not a bundle":
        bundle = tmp_path
    else:
        extra = ["--top", "0"]
    r = run_cli_process("predict", str(bundle), str(image), *extra, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeffnet: error: "), r.stderr


def test_random_weight_bundle_says_the_outputs_mean_nothing(env, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "b0-random"
    r = run_cli_process("build", "b0,res=96", "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert "latency study: the outputs mean nothing" in r.stderr  # the build's summary says it
    assert "latency study: the outputs mean nothing" in (out / "build.log").read_text()
    r = run_cli_process("predict", str(out), str(photos["chelsea"]), env=env)
    assert r.returncode == 0 and r.stderr.startswith(
        "warning: this bundle has seeded random weights (latency study: the outputs mean nothing)"
    )
    (result,) = _predict(env, out, photos["chelsea"])
    assert result["random_weights"] and "the outputs mean nothing" in result["warning"]
