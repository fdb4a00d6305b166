"""What a board with only JetPack's Python (3.10), ONNX Runtime and no torch must be able to do:
import edgeres, list targets, load bundles, check Q/DQ conformance, run the golden self-test, and be
told in one line what is missing for build-engine. CI runs this file under Python 3.10 without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; "  # any `import torch` now raises ImportError


def _edgeres_without_torch(*args, env=None):
    code = BLOCK_TORCH + f"sys.argv = ['edgeres', *{[str(a) for a in args]!r}]; from edgeres.cli import main; main()"
    import os

    full = {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=full)


def _one_line_error(r) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_device_side_modules_never_import_torch():
    """Defect 1/2: the runtime side must import on a board without torch (and on Python 3.10)."""
    mods = ["edgeres.cli", "edgeres.targets", "edgeres.runtime", "edgeres.selftest", "edgeres.doctor",
            "edgeres.pipeline", "edgeres.backends.tensorrt", "edgeres.backends.tensorrt.device_build",
            "edgeres.backends.tensorrt.trtexec", "edgeres.backends.tensorrt.conformance", "edgeres.backends.onnxruntime"]
    code = BLOCK_TORCH + "".join(f"import {m}; " for m in mods) + "print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_no_module_imports_tomllib_directly():
    """Defect 1: tomllib exists only on Python >= 3.11; everything goes through edgeres.compat (tomli on 3.10)."""
    import ast
    from pathlib import Path

    import edgeres

    offenders = []
    for f in Path(edgeres.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            if "tomllib" in names and f.name != "compat.py":
                offenders.append(f.name)
    assert not offenders


@pytest.mark.parametrize("args", [["--help"], ["targets"], ["doctor", "--help"], ["selftest", "--help"]])
def test_cli_runs_without_torch(args):
    r = _edgeres_without_torch(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    if args == ["targets"]:
        assert "jetson-agx-orin" in r.stdout and "jetson-thor" in r.stdout


@pytest.mark.parametrize("args", [["train", "resnet20", "--data", "builtin", "--out", "x.pt"],
                                  ["compile", "resnet50", "--weights", "random", "--target", "jetson"],
                                  ["models"]])
def test_torch_commands_name_the_extra_in_one_line(args, tmp_path):
    line = _one_line_error(_edgeres_without_torch(*args))
    assert "PyTorch" in line and "edgeres[train]" in line


def test_every_target_loads_and_tensorrt_options_resolve():
    from edgeres.backends.tensorrt.options import resolve_options
    from edgeres.backends.tensorrt.recipe import build_recipe
    from edgeres.targets import list_targets

    targets = list_targets()
    for t in targets:
        if t.backend == "tensorrt":
            opts = resolve_options(t)
            build_recipe(t, t.default_precision)
            assert opts.trt_min and opts.compute_capability
    names = {t.name for t in targets}
    assert {"jetson-thor", "datacenter-grace-hopper", "jetson-agx-orin"} <= names


def test_jetson_bundle_loads_with_conformance_recipe_and_golden(trt_bundle):
    from edgeres.bundle import load_bundle

    b = load_bundle(trt_bundle)  # every sha256 verified
    m = b.manifest
    assert m["artifact"] is None and m["conformance"]["ok"] is True
    assert m["golden"]["count"] == 8 and m["golden"]["source"] == "validation data"
    assert m["golden"]["tolerance"]["precision"] == "int8" and "model.int8.onnx" in m["golden"]["expected_from"]
    recipe = json.loads((trt_bundle / "recipe.json").read_text())
    assert recipe["recommended"].startswith("edgeres build-engine")
    assert all(v["trtexec_argv"][0] == "/usr/src/tensorrt/bin/trtexec" for v in recipe["variants"])
    for rel in ("golden/inputs.f32", "golden/expected.f32", "golden/selftest.txt", "cpp/main.cpp"):
        assert rel in m["files"]


def test_check_qdq_without_torch(trt_bundle):
    r = _edgeres_without_torch("check-qdq", trt_bundle / "model.int8.onnx", "--no-parser")
    assert r.returncode == 0, r.stdout + r.stderr


def test_build_engine_without_tensorrt_refuses_in_one_line(trt_bundle):
    """No TensorRT bindings, no trtexec: exit 2 and one line naming both and how to get them."""
    r = _edgeres_without_torch("build-engine", trt_bundle)
    assert r.returncode == 2
    line = _one_line_error(r)
    assert "cannot build the engine here" in line and "tensorrt" in line
    assert "trtexec" in line and "/usr/src/tensorrt/bin/trtexec" in line and "jetson-agx-orin" in line
    assert not (trt_bundle / "artifact").exists()


def test_selftest_of_a_bundle_without_engine_runs_the_deployed_onnx(trt_bundle):
    r = _edgeres_without_torch("selftest", trt_bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS selftest" in r.stdout and "no engine yet" in r.stdout and "build-engine" in r.stdout
    assert "8 golden inputs" in r.stdout and "max abs err" in r.stdout


def _reseal(bundle_dir):
    """Re-write the manifest's hashes after a deliberate change (what a careless redeploy would do)."""
    from edgeres.bundle import write_manifest

    m = json.loads((bundle_dir / "manifest.json").read_text())
    write_manifest(bundle_dir, {k: v for k, v in m.items() if k not in ("format", "created", "versions", "host",
                                                                          "files")})


def test_selftest_passes_and_fails_with_numbers_on_a_tampered_artifact(ort_bundle, tmp_path):
    """The artifact swapped for one compiled from other weights (same shapes), the manifest re-hashed so the
    bundle still verifies: only the golden self-test can tell, and it fails with numbers (exit 1)."""
    from edgeres.pipeline import compile_bundle
    from edgeres.selftest import run_selftest
    from tiny_onnx import build_resnet_onnx

    res = run_selftest(ort_bundle)
    assert res.passed and res.check.max_abs_err <= res.check.atol and res.check.top1_agree == res.check.samples
    other = compile_bundle(str(build_resnet_onnx(tmp_path / "other.onnx", seed=1)), "onnxruntime-cpu",
                           tmp_path / "other", precision="int8", calib="builtin", quant={"num_calib": 64}).bundle
    bad = tmp_path / "tampered"
    shutil.copytree(ort_bundle, bad)
    shutil.copyfile(other / "artifact" / "model.onnx", bad / "artifact" / "model.onnx")
    _reseal(bad)
    res = run_selftest(bad)
    assert not res.passed and res.check.max_abs_err > res.check.atol
    r = _edgeres_without_torch("selftest", bad, "--json", tmp_path / "st.json")
    assert r.returncode == 1 and "FAIL selftest" in r.stdout and "max abs err" in r.stdout
    rec = json.loads((tmp_path / "st.json").read_text())
    assert rec["passed"] is False and rec["max_abs_err"] > rec["atol"]


def test_tampered_golden_files_are_refused(ort_bundle, tmp_path):
    bad = tmp_path / "golden-tampered"
    shutil.copytree(ort_bundle, bad)
    exp = bad / "golden" / "expected.f32"
    arr = np.fromfile(exp, "<f4")
    (arr + 1).astype("<f4").tofile(exp)
    _reseal(bad)  # even with the bundle re-hashed, the golden record in the manifest keeps the original hash
    r = _edgeres_without_torch("selftest", bad)
    assert r.returncode == 2 and "golden file" in _one_line_error(r) and "expected.f32" in r.stderr


def test_cpp_example_paths_and_cmake_fit_the_bundle_and_the_oldest_board(trt_bundle):
    """Defect 5: the example's README ran ../model.engine (the engine is artifact/model.engine) and looked for
    labels beside the engine (the bundle keeps labels.txt at its root); CMake 3.18 excluded JetPack 4.6/5."""
    import re

    from edgeres.backends.tensorrt.backend import ENGINE
    from edgeres.bundle import ARTIFACT_DIR, LABELS

    cpp = trt_bundle / "cpp"
    readme = (cpp / "README.md").read_text()
    engines = set(re.findall(r"edgeres_trt_classify (\S+\.engine)", readme))
    assert engines == {f"../{ARTIFACT_DIR}/{ENGINE}"}  # where build-engine writes it, seen from cpp/
    assert (cpp / "../golden/selftest.txt").resolve().is_file() and "--selftest ../golden" in readme
    src = (cpp / "main.cpp").read_text()
    assert '"/../labels.txt"' in src and (trt_bundle / LABELS).is_file()  # found from artifact/ at the root
    cmake = (cpp / "CMakeLists.txt").read_text()
    version = re.search(r"cmake_minimum_required\(VERSION (\d+)\.(\d+)", cmake)
    assert (int(version[1]), int(version[2])) <= (3, 10)  # Ubuntu 18.04 (JetPack 4.6) ships 3.10
    code = "\n".join(line for line in cmake.splitlines() if not line.lstrip().startswith("#"))
    assert "CUDAToolkit" not in code  # FindCUDAToolkit needs CMake 3.17
    for guard in ("NV_TENSORRT_MAJOR", "enqueueV2", "enqueueV3", "setEngineHostCodeAllowed"):
        assert guard in src


def test_the_device_install_pulls_no_torch_and_no_wheel_that_must_match_the_driver():
    """Defect 2: torch was a hard dependency, and the tensorrt extra pulled pip's TensorRT (not JetPack's) and an
    unpinned cuda-python (13.x needs a CUDA 13 driver; JetPack 6.2 has CUDA 12.6)."""
    from pathlib import Path

    from edgeres.compat import tomllib

    cfg = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    names = lambda reqs: {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                          for r in reqs}  # noqa: E731
    core = names(cfg["project"]["dependencies"])
    extras = cfg["project"]["optional-dependencies"]
    assert "torch" not in core and not any(n.startswith(("nvidia-", "cuda", "tensorrt")) for n in core)
    assert "torch" in names(extras["train"])
    assert not any(n.startswith(("tensorrt", "cuda-python", "cuda-bindings", "nvidia-")) for n in names(extras["tensorrt"]))
