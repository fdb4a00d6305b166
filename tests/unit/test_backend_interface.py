"""Every backend implements the declared interface completely, and the pipeline only asks it questions."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeres.backends import NAMES, Backend, Capabilities, get_backend
from edgeres.errors import BackendUnavailable, UsageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", NAMES)
def test_each_backend_is_a_complete_backend(name):
    b = get_backend(name, require=False)
    assert isinstance(b, Backend) and b.name == name  # instantiable: no abstract method left out
    assert isinstance(b.capabilities, Capabilities) and b.capabilities.precisions
    assert b.extra.startswith("edgeres")
    assert isinstance(b.unavailable_reason(), str)
    assert b.available() == (b.unavailable_reason() == "")
    assert (b.version() is None) == (not b.available()) or name == "tensorrt"


def test_unknown_backend():
    with pytest.raises(UsageError, match="unknown backend 'tflite'"):
        get_backend("tflite")


def test_device_build_is_declared_not_probed():
    # Only a backend that declares device_build may answer "not buildable here" and write a recipe.
    for name in NAMES:
        b = get_backend(name, require=False)
        if not b.capabilities.device_build:
            assert type(b).build_recipe is Backend.build_recipe


def test_pipeline_never_names_a_backend():
    src = (ROOT / "edgeres" / "pipeline.py").read_text()
    strings = {n.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not strings & set(NAMES), strings & set(NAMES)
    assert "getattr(backend" not in src


def test_tensorrt_preflight_allows_a_device_build_without_tensorrt():
    from edgeres.targets import get_target

    b = get_backend("tensorrt", require=False)
    if b.available():
        pytest.skip("TensorRT is installed here")
    b.preflight(get_target("jetson"), "int8", None)  # no TensorRT needed on the host: a recipe is written
    ok, why = b.buildable_here(get_target("jetson"))
    assert not ok and why


def _without_tvm(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import tvm` fails, as on a machine without the [tvm] extra."""
    fake = tmp_path / "no_tvm" / "tvm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named tvm (simulated)')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]),
            "PYTHONWARNINGS": "ignore"}


def test_missing_backend_fails_before_any_work(tmp_path):
    """compile for a TVM target without TVM: the install hint, before export (no bundle, no temp files)."""
    out = tmp_path / "work" / "bundle"
    out.parent.mkdir()
    r = subprocess.run([sys.executable, "-m", "edgeres", "compile", "resnet50", "--weights", "random",
                        "--target", "x86-64", "--precision", "fp32", "--out", str(out)],
                       capture_output=True, text=True, env=_without_tvm(tmp_path), timeout=120)
    assert r.returncode == 2, r.stderr[-1500:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'edgeres[tvm]'" in lines[0], r.stderr
    assert not any(out.parent.iterdir())  # nothing was exported or staged


def test_backend_unavailable_is_raised_by_require(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from edgeres.backends import get_backend; get_backend('tvm')"],
                       capture_output=True, text=True, env=_without_tvm(tmp_path), timeout=120)
    assert r.returncode != 0 and BackendUnavailable.__name__ in r.stderr and "edgeres[tvm]" in r.stderr
