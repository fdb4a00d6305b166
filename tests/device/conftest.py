"""The device-side tier: what runs on a board (Python 3.10, no torch, no compiler).

Every test here is marked ``device_side`` and imports nothing that needs torch; CI runs this folder
a second time in a Python 3.10 virtualenv made with ``pip install -e .`` (no torch, no TVM, no
TensorRT). The model is built with ``onnx.helper`` from numpy weights, so no exporter is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_onnx import build_resnet_onnx  # noqa: E402  (tests/device is on sys.path: no __init__.py)


def pytest_collection_modifyitems(config, items):  # noqa: D103
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.device_side)
            item.add_marker(pytest.mark.filterwarnings("ignore:only .* calibration images"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_resnet_onnx(tmp_path_factory.mktemp("device_model") / "tiny.onnx")


@pytest.fixture(scope="session")
def ort_bundle(tiny_model, tmp_path_factory) -> Path:
    """An ONNX Runtime INT8 bundle (the device side's own backend) with golden inputs from calibration data."""
    from edgeres.pipeline import compile_bundle

    out = tmp_path_factory.mktemp("device_ort") / "b"
    compile_bundle(str(tiny_model), "onnxruntime-cpu", out, precision="int8", calib="builtin", quant={"num_calib": 64})
    return out


@pytest.fixture(scope="session")
def trt_bundle(tiny_model, tmp_path_factory) -> Path:
    """`edgeres compile ... --target jetson` where no TensorRT is: the device-build bundle, no engine."""
    from edgeres.pipeline import compile_bundle

    out = tmp_path_factory.mktemp("device_trt") / "orin"
    compile_bundle(str(tiny_model), "jetson-agx-orin", out, precision="int8", calib="builtin", quant={"num_calib": 64},
                   val="builtin", val_limit=100, max_drop=100.0)
    return out


def run_cli(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgeres", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full)


@pytest.fixture(scope="session")
def device_cli():
    """``device_cli(*args, env=None)`` runs ``python -m edgeres ARGS`` in a subprocess."""
    return run_cli
