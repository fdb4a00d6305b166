"""Shared models for the backend tests: small real networks exported to ONNX once per session.

``r20_untrained_onnx``  CIFAR ResNet-20 (edgeres.models, random weights and BatchNorm
                        statistics) at 32x32 with a dynamic batch ``N``.
``r20_untrained_qdq``   the same model quantized by ONNX Runtime (Q/DQ, uint8 activations,
                        int8 weights, QuantizeBias False).
``tiny_onnx``           a two-block residual CNN at 16x16 (fast TVM compiles); ``tiny_qdq``
                        its Q/DQ model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyResNet(nn.Module):
    """Conv-BN-ReLU stem, one residual block (Add), a strided block, pool, linear."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.c1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.c2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):  # noqa: D102
        x = self.stem(x)
        x = torch.relu(x + self.c1(x))
        x = self.c2(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics, so folded scales/biases are exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def export_onnx(model: nn.Module, path: Path, hw: int) -> Path:
    """Legacy exporter, opset 17, dynamic batch "N", input "input"."""
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, hw, hw),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path


def images(n: int, hw: int, seed: int = 0) -> np.ndarray:
    """Normalized-image-like NCHW float32 inputs."""
    return np.random.default_rng(seed).standard_normal((n, 3, hw, hw)).astype(np.float32)


def _resnet20() -> nn.Module:
    """The zoo's ResNet-20; a broken model zoo fails the tests that use it (no stand-in model)."""
    from edgeres.models import create_model

    torch.manual_seed(0)
    return create_model("resnet20")


@pytest.fixture(scope="session")
def r20_untrained_onnx(tmp_path_factory) -> Path:
    return export_onnx(_randomize_bn(_resnet20(), 1), tmp_path_factory.mktemp("r20") / "r20.onnx", 32)


@pytest.fixture(scope="session")
def tiny_torch() -> nn.Module:
    """The PyTorch model behind ``tiny_onnx`` (eval mode)."""
    torch.manual_seed(0)
    return _randomize_bn(TinyResNet(), 2)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_torch, tmp_path_factory) -> Path:
    return export_onnx(tiny_torch, tmp_path_factory.mktemp("tiny") / "tiny.onnx", 16)


def quantize_qdq(src: Path, dest: Path, hw: int, n_calib: int = 8) -> Path:
    """ONNX Runtime static quantization to Q/DQ (uint8 activations, int8 weights, float biases)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"input": images(1, hw, seed=100 + i)} for i in range(n_calib)])

        def get_next(self):  # noqa: D102
            return next(self._it, None)

    quantize_static(str(src), str(dest), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"QuantizeBias": False})
    return dest


@pytest.fixture(scope="session")
def r20_untrained_qdq(r20_untrained_onnx, tmp_path_factory) -> Path:
    return quantize_qdq(r20_untrained_onnx, tmp_path_factory.mktemp("r20q") / "r20.int8.onnx", 32)


@pytest.fixture(scope="session")
def tiny_qdq(tiny_onnx, tmp_path_factory) -> Path:
    return quantize_qdq(tiny_onnx, tmp_path_factory.mktemp("tinyq") / "tiny.int8.onnx", 16)


@pytest.fixture()
def corrupt_onnx(tmp_path) -> Path:
    p = tmp_path / "broken.onnx"
    p.write_bytes(b"\x08\x07this is not a protobuf\xff\xff\xff")
    return p


@pytest.fixture(scope="session")
def make_images():
    """``make_images(n, hw, seed=0)`` -> NCHW float32 batch."""
    return images
