"""Shared fixtures.

``trained_r20`` / ``r20_onnx``   a real ResNet-20 trained for a few epochs on the built-in data, and its
                                 ONNX (~40 s of training: for tests whose numbers depend on real weights).
``random_r20`` / ``random_r20_onnx``  ResNet-20 with random weights as an edgeres checkpoint and its ONNX
                                 (seconds: for tests that fail, or measure, before weights matter).
``built_wheel``                  the edgeres wheel, built once per session.
``cli`` / ``cli_main``           the ``edgeres`` command in a subprocess / in this process.
"""

from __future__ import annotations

import os
import shutil
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
    from edgeres.training import train

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
def random_r20(tmp_path_factory) -> Path:
    """An edgeres checkpoint of ResNet-20 with random weights (the built-in data's classes)."""
    from edgeres.checkpoint import save_checkpoint
    from edgeres.export import resolve_source

    loaded = resolve_source("resnet20", "random")
    out = tmp_path_factory.mktemp("r20random") / "r20-random.pt"
    return save_checkpoint(out, loaded.model, loaded.name, loaded.preprocessing, model_kwargs=loaded.model_kwargs,
                           meta=loaded.meta)


@pytest.fixture(scope="session")
def random_r20_onnx(random_r20, tmp_path_factory) -> Path:
    from edgeres.checkpoint import load_checkpoint
    from edgeres.export import export_onnx

    out = tmp_path_factory.mktemp("r20randomonnx") / "r20-random.fp32.onnx"
    export_onnx(load_checkpoint(random_r20), out)
    return out


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The edgeres wheel (``pip wheel``, no build isolation), built once per test session from a copy of
    the checkout's sources, so nothing is written into the checkout."""
    pytest.importorskip("setuptools")
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for d in ("edgeres", "targets"):
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(work / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return next((work / "dist").glob("edgeres-*.whl"))


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


@pytest.fixture()
def cli_main(capsys, monkeypatch):
    """``cli_main(*args)`` runs ``edgeres.cli.main(ARGS)`` in this process -- the command's whole path,
    error formatting and exit code included, without the ~2.5 s interpreter and torch start-up of
    ``cli``. Returns a CompletedProcess (returncode, stdout, stderr). Python warnings go to pytest's
    warning capture, not to ``stderr``; tests of warning text use ``cli``."""
    import warnings

    from edgeres.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() replaces it

    def run(*args: object) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return run


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
