"""`edgeres build-engine` on a JetPack board without TensorRT's Python bindings: it prints and runs the
recipe's trtexec line, keeps the timing cache outside the atomic artifact directory (reused on the next
build), records the build, and self-tests the engine through trtexec. trtexec is a stand-in that speaks
trtexec's command line and output formats (tests/device/fake_trtexec.py); the board is a fake device tree."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from test_device_jetson import fake_root

HERE = Path(__file__).parent


def _install_trtexec(tmp_path: Path, monkeypatch, version_code: str) -> Path:
    bindir = tmp_path / "trtbin"
    bindir.mkdir()
    exe = bindir / "trtexec"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_trtexec.py'} {version_code} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return exe


@pytest.fixture()
def on_orin(tmp_path, monkeypatch):
    """This process sees an AGX Orin on JetPack 6.2 with TensorRT 10.3's trtexec but no Python bindings."""
    from edgeres.backends.tensorrt import cuda, recipe, trtexec

    root = fake_root(tmp_path, "agx-orin-jp62")
    real = cuda.gpu_info
    monkeypatch.setattr(cuda, "gpu_info", lambda *a, **k: real(root, probe_cuda=False))
    monkeypatch.setattr(recipe.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(trtexec, "import_tensorrt", lambda: (None, "the tensorrt Python package cannot be imported"))
    monkeypatch.setattr("edgeres.backends.tensorrt.backend.import_tensorrt", lambda: (None, "no bindings"))
    monkeypatch.setenv("EDGERES_CACHE_DIR", str(tmp_path / "cache"))
    return _install_trtexec(tmp_path, monkeypatch, "100300")


def test_build_engine_with_trtexec_self_tests_and_reuses_the_timing_cache(trt_bundle, tmp_path, on_orin):
    from edgeres.backends.tensorrt.device_build import build_bundle_engine
    from edgeres.runtime import load

    b = tmp_path / "orin"
    shutil.copytree(trt_bundle, b)
    logged: list[str] = []
    res = build_bundle_engine(b, log=logged.append)
    assert res.method == "trtexec" and res.command[0] == str(on_orin)
    argv = res.command
    assert f"--onnx={b / 'model.int8.onnx'}" in argv and "--int8" in argv and "--fp16" in argv
    assert "--memPoolSize=workspace:2048M" in argv and "--minShapes=input:1x3x32x32" in argv
    assert any(line.startswith("running: ") and str(on_orin) in line for line in logged)  # printed before it runs
    assert res.selftest.passed and res.selftest.runner == "tensorrt artifact artifact/model.engine"
    m = res.bundle.manifest
    assert m["selftest"]["passed"] is True and m["artifact"]["info"]["tensorrt_version"] == "10.3.0"
    repro = m["artifact"]["info"]["reproducibility"]
    cache = Path(repro["timing_cache"]["path"])
    assert repro["method"] == "trtexec" and repro["l4t"] == "36.4.3" and repro["jetpack"] == "6.2"
    assert cache.is_file() and b not in cache.parents and repro["timing_cache"]["reused"] is False
    assert f"--timingCacheFile={cache}" in argv
    first = repro["timing_cache"]["sha256"]
    res2 = build_bundle_engine(b)  # the next build starts from the same cache
    cache2 = res2.bundle.manifest["artifact"]["info"]["reproducibility"]["timing_cache"]
    assert cache2["reused"] is True and cache2["sha256_before"] == first and cache2["sha256"] != first
    pred = load(b)  # `edgeres run` on the board: the engine through trtexec
    golden = json.loads((b / "golden" / "golden.json").read_text())
    x = np.fromfile(b / "golden" / "inputs.f32", "<f4").reshape(golden["input_shape"])
    assert pred.backend == "tensorrt" and pred.predict(x).shape == (8, 10)


def test_trtexec_of_the_wrong_tensorrt_is_refused(trt_bundle, tmp_path, monkeypatch, on_orin):
    from edgeres.backends.tensorrt.device_build import build_bundle_engine
    from edgeres.errors import BackendUnavailable

    old = tmp_path / "old"
    old.mkdir()
    _install_trtexec(old, monkeypatch, "8201")  # first on PATH now: JetPack 4.6.1's TensorRT
    with pytest.raises(BackendUnavailable, match="TensorRT 8.2.1 is installed but jetson-agx-orin needs 8.6-11.99"):
        build_bundle_engine(trt_bundle)
    assert not (trt_bundle / "artifact").exists()


def test_banner_versions():
    from edgeres.backends.tensorrt.trtexec import parse_banner

    assert parse_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec") == "10.3.0"
    assert parse_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec") == "8.2.1"
    assert parse_banner("[TensorRT v110401]") == "11.4.1" and parse_banner("no banner") is None
