"""Shared fixtures: a real ResNet-20 trained for a few epochs on the built-in data, and its ONNX."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _private_edgeres_cache(tmp_path_factory):
    """TensorRT timing caches (EDGERES_CACHE_DIR) go to a temporary folder, not the user's ~/.cache."""
    old = os.environ.get("EDGERES_CACHE_DIR")
    os.environ["EDGERES_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgeres-cache"))
    yield
    if old is None:
        os.environ.pop("EDGERES_CACHE_DIR", None)
    else:
        os.environ["EDGERES_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def trained_r20(tmp_path_factory) -> Path:
    """ResNet-20 trained briefly on 'builtin:300' (300 images per class): clearly above chance."""
    from edgeres.train import train

    out = tmp_path_factory.mktemp("r20") / "r20.pt"
    train("resnet20", "builtin:300", out, recipe="quick", epochs=5, progress=False, plot=False)
    return out


@pytest.fixture(scope="session")
def r20_onnx(trained_r20, tmp_path_factory) -> Path:
    from edgeres.checkpoint import load_checkpoint
    from edgeres.export import export_onnx

    out = tmp_path_factory.mktemp("r20onnx") / "r20.fp32.onnx"
    export_onnx(load_checkpoint(trained_r20), out)
    return out


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """The built-in data written as an ImageFolder tree with train/ and val/."""
    from edgeres.data.builtin import write_image_folder

    root = tmp_path_factory.mktemp("shapes") / "shapes"
    write_image_folder(root, 20, 20, seed=1)
    return root


def _run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgeres", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def cli():
    """``cli(*args)`` runs ``python -m edgeres ARGS`` in a subprocess, as a user would."""
    return _run_cli


@pytest.fixture(scope="session")
def fragile_r20(trained_r20, tmp_path_factory) -> Path:
    """The trained ResNet-20 made INT8-hostile without changing its FP32 function.

    In ``layer1.0``, the most active channel of ``bn1`` is scaled by 1000 (ReLU is
    positively homogeneous) and the matching input channel of ``conv2`` by 1/1000.
    FP32 logits are unchanged, but ``conv2``'s input now has one channel ~1000x larger
    than the others, so a min/max per-tensor activation range crushes the other 15.
    """
    import torch

    from edgeres.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(trained_r20)
    m = loaded.model
    blk = m.layer1[0]
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        before = m(x)
        c = int(torch.argmax(blk.bn1.bias + blk.bn1.weight.abs()))
        blk.bn1.weight[c] *= 1000.0
        blk.bn1.bias[c] *= 1000.0
        blk.conv2.weight[:, c] /= 1000.0
        after = m(x)
    assert torch.allclose(before, after, rtol=1e-3, atol=1e-3 * before.abs().max().item())
    out = tmp_path_factory.mktemp("fragile") / "fragile.pt"
    save_checkpoint(out, m, loaded.name, loaded.preprocessing, model_kwargs=loaded.model_kwargs)
    return out
