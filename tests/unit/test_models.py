"""The model zoo: registry behaviour, architecture facts (param counts, torchvision keys), ONNX export."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from edgeres.errors import ModelNotFound, UsageError
from edgeres.models import ModelInfo, create_model, get_model_info, list_models, register_model
from edgeres.models import registry


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BN non-trivial statistics and affine parameters, as a trained net has."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model


# -- architecture facts -------------------------------------------------------------

# torchvision's published parameter counts (1000 classes)
IMAGENET_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("name,expected", sorted(IMAGENET_PARAMS.items()))
def test_imagenet_param_counts_match_torchvision(name: str, expected: int) -> None:
    assert n_params(create_model(name)) == expected


# He et al. 2015, Table 6 (option A, 10 classes)
CIFAR_APPROX = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6, 1202: 19.4e6}


@pytest.mark.parametrize("depth,approx", sorted(CIFAR_APPROX.items()))
def test_cifar_param_counts_match_paper(depth: int, approx: float) -> None:
    model = create_model(f"resnet{depth}")  # resnet1202: count only, no forward
    assert abs(n_params(model) - approx) / approx < 0.02


def test_cifar_resnet20_exact_counts_per_shortcut_option() -> None:
    # A: no shortcut params; B adds two 1x1 projections + BN (16->32: 576, 32->64: 2176).
    assert n_params(create_model("resnet20")) == 269_722
    assert n_params(create_model("resnet20", shortcut="B")) == 272_474
    assert n_params(create_model("plain20")) == 269_722


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20"])
def test_shortcut_options_order_param_counts(name: str) -> None:
    counts = {opt: n_params(create_model(name, shortcut=opt)) for opt in "ABC"}
    assert counts["A"] < counts["B"] < counts["C"]
    plain = n_params(create_model(name.replace("resnet", "plain")))
    assert plain == counts["A"]  # option A is parameter-free


def test_resnet18_state_dict_keys_are_torchvision_keys() -> None:
    sd = create_model("resnet18").state_dict()
    assert len(sd) == 122  # torchvision resnet18().state_dict() has 122 entries
    for key in ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.running_var", "layer4.1.bn2.running_var", "layer4.1.bn2.num_batches_tracked",
                "fc.weight", "fc.bias"]:
        assert key in sd, key
    assert "layer1.0.downsample.0.weight" not in sd  # option B: no projection where the shape is unchanged
    assert tuple(sd["layer4.1.conv2.weight"].shape) == (512, 512, 3, 3)


def test_resnet50_state_dict_keys_and_v15_stride() -> None:
    model = create_model("resnet50")
    sd = model.state_dict()
    assert len(sd) == 320  # torchvision resnet50().state_dict() has 320 entries
    for key in ["layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight", "layer3.5.conv3.weight",
                "layer4.2.bn3.running_mean", "fc.bias"]:
        assert key in sd, key
    assert tuple(sd["fc.weight"].shape) == (1000, 2048)
    assert tuple(sd["layer2.0.downsample.0.weight"].shape) == (512, 256, 1, 1)
    # torchvision "v1.5": the stride sits on the 3x3 conv, not the first 1x1
    assert model.layer2[0].conv1.stride == (1, 1)
    assert model.layer2[0].conv2.stride == (2, 2)


def test_cifar_keys_follow_torchvision_naming() -> None:
    sd = create_model("resnet20", shortcut="B").state_dict()
    for key in ["conv1.weight", "bn1.weight", "layer3.2.bn2.running_var", "layer2.0.downsample.0.weight", "fc.weight"]:
        assert key in sd, key
    assert not any(k.startswith("layer4") for k in sd)
    assert tuple(sd["conv1.weight"].shape) == (16, 3, 3, 3)
    assert tuple(sd["fc.weight"].shape) == (10, 64)


def test_option_c_projects_every_block() -> None:
    sd = create_model("resnet18", shortcut="C").state_dict()
    for layer in range(1, 5):
        for block in range(2):
            assert f"layer{layer}.{block}.downsample.0.weight" in sd


def test_plain_models_have_no_shortcuts() -> None:
    for name in ["plain18", "plain50", "plain20"]:
        model = create_model(name)
        assert not any("downsample" in k for k in model.state_dict()), name
        assert get_model_info(name).residual is False


# -- forward ------------------------------------------------------------------------


@torch.no_grad()
def test_forward_shapes_flexible_input_size() -> None:
    torch.manual_seed(0)
    assert create_model("resnet18").eval()(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    assert create_model("resnet18", num_classes=7).eval()(torch.randn(1, 3, 96, 80)).shape == (1, 7)
    assert create_model("resnet20").eval()(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    # bottleneck option A pads 64 -> 256 channels in layer1.0 (3 zero copies), later ones double
    out = create_model("resnet50", num_classes=5, shortcut="A").eval()(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 5) and torch.isfinite(out).all()


@torch.no_grad()
def test_option_a_shortcut_is_subsample_plus_zero_channels() -> None:
    model = create_model("resnet20").eval()
    shortcut = model.layer2[0].downsample
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    assert list(shortcut.parameters()) == []


@torch.no_grad()
def test_plain_differs_from_residual_with_same_weights() -> None:
    torch.manual_seed(0)
    for plain_name, res_name in [("plain20", "resnet20"), ("plain18", "resnet18")]:
        plain = randomize_bn(create_model(plain_name)).eval()
        residual = create_model(res_name, shortcut="A").eval()
        residual.load_state_dict(plain.state_dict(), strict=True)  # identical keys: option A has no params
        x = torch.randn(2, 3, 32, 32)
        assert not torch.allclose(plain(x), residual(x), atol=1e-3)


def test_zero_init_residual_zeroes_last_bn_of_each_block() -> None:
    model = create_model("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for stage in (model.layer1, model.layer4) for b in stage)
    assert torch.count_nonzero(model.layer1[0].bn2.weight) > 0
    default = create_model("resnet20")
    assert torch.all(default.layer1[0].bn2.weight == 1)
    zeroed = create_model("resnet20", zero_init_residual=True)
    assert torch.count_nonzero(zeroed.layer1[0].bn2.weight) == 0


def test_init_is_kaiming_fan_out() -> None:
    torch.manual_seed(0)
    w = create_model("resnet18").layer4[0].conv2.weight  # 512x512x3x3, fan_out = 4608
    assert abs(w.std().item() - (2 / 4608) ** 0.5) / (2 / 4608) ** 0.5 < 0.03
    bn = create_model("resnet18").layer1[0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


# -- registry -----------------------------------------------------------------------


def test_list_and_info() -> None:
    names = [i.name for i in list_models()]
    assert len(names) == len(set(names)) == 22
    assert {"resnet18", "resnet50", "resnet152", "resnet20", "resnet1202", "plain34", "plain110"} <= set(names)
    plains = list_models("plain*")
    assert len(plains) == 11 and all(not i.residual and i.shortcut_default is None for i in plains)
    names_1 = [i.name for i in list_models("resnet1*")]  # sorted by family, then depth
    assert names_1 == ["resnet110", "resnet1202", "resnet18", "resnet101", "resnet152"]
    assert list_models("nothing*") == []

    info = get_model_info("resnet50")
    assert isinstance(info, ModelInfo)
    assert (info.family, info.depth, info.block) == ("imagenet", 50, "bottleneck")
    assert (info.residual, info.shortcut_default) == (True, "B")
    assert (info.default_num_classes, info.default_input_size) == (1000, 224)
    cifar = get_model_info("resnet56")
    assert (cifar.family, cifar.block, cifar.shortcut_default, cifar.default_num_classes) == ("cifar", "basic", "A", 10)
    with pytest.raises(AttributeError):
        info.depth = 3  # type: ignore[misc]  (frozen)


def test_default_preprocessing_per_family() -> None:
    pre = get_model_info("resnet18").default_preprocessing(["cat", "dog"])
    assert pre.input_size == (224, 224) and pre.resize == 256 and pre.class_names == ("cat", "dog")
    pre = get_model_info("resnet20").default_preprocessing()
    assert pre.input_size == (32, 32) and pre.resize is None and pre.mean[0] == pytest.approx(0.4914)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelNotFound) as e:
        create_model("resnt50")
    msg = str(e.value)
    assert "resnet50" in msg and "edgeres models" in msg and "\n" not in msg
    with pytest.raises(ModelNotFound, match="edgeres models"):
        get_model_info("vgg16")


def test_bad_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="shortcut"):
        create_model("resnet18", shortcut="D")
    with pytest.raises(UsageError, match="width.*accepts: shortcut, zero_init_residual"):
        create_model("resnet18", width=2)
    with pytest.raises(UsageError, match="no options"):
        create_model("plain18", shortcut="B")
    with pytest.raises(UsageError, match="num_classes"):
        create_model("resnet20", num_classes=0)
    with pytest.raises(UsageError, match="zero_init_residual"):
        create_model("resnet20", zero_init_residual="yes")
    assert n_params(create_model("resnet20", shortcut="b")) == 272_474  # case-insensitive


def test_duplicate_registration_raises() -> None:
    name = "test-dummy-net"
    kw = dict(family="cifar", depth=2, block="basic", residual=False, shortcut_default=None,
              default_num_classes=10, default_input_size=32, description="test")
    try:
        register_model(name, **kw)(lambda num_classes: torch.nn.Linear(3, num_classes))
        assert create_model(name, num_classes=4).out_features == 4
        with pytest.raises(ValueError, match="already registered"):
            register_model(name, **kw)(lambda num_classes: torch.nn.Linear(3, num_classes))
        with pytest.raises(ValueError, match="already registered"):
            register_model("resnet18", **kw)
    finally:
        registry._REGISTRY.pop(name, None)
    assert name not in [i.name for i in list_models()]


def test_zoo_name_is_recorded() -> None:
    assert create_model("resnet20").zoo_name == "resnet20"


# -- ONNX export --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_resnet20_option_a_exports_to_onnx_with_dynamic_batch() -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet20")).eval()
    buf = io.BytesIO()
    torch.onnx.export(
        model, (torch.randn(1, 3, 32, 32),), buf, opset_version=17, dynamo=False,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    # F.pad exports Pad with computed pads, which TVM's Relax importer rejects
    assert "Pad" not in {n.op_type for n in proto.graph.node}
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"input": x.numpy()})
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        assert np.abs(expected).max() > 1e-2  # non-degenerate logits
