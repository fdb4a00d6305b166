"""aarch64 (ARM) targets: cross-compile with TVM + aarch64-linux-gnu-g++, run under qemu, compare with the host.

Needs the toolchain, qemu and the aarch64 TVM runtime: run tools/setup-aarch64.sh (CI does).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from edgeres.backends.tvm import cross as tvm_cross
from edgeres.errors import BackendUnavailable, CompileError, UsageError
from edgeres.targets import get_target, parse_target

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")

SETUP = "run tools/setup-aarch64.sh"
ARM_TARGETS = ("rpi4", "rpi5", "jetson-orin-cpu", "aarch64")
SHAPE = (1, 3, 32, 32)
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")


def _require_cross() -> None:
    if tvm_cross.host_arch() != "x86_64":
        pytest.skip("these tests cross-compile from an x86-64 host")
    if tvm_cross.find_cross_cxx("aarch64") is None:
        pytest.skip(f"aarch64 toolchain absent: {SETUP}")


def _require_qemu_runtime() -> None:
    _require_cross()
    from edgeres.backends.tvm.cpp_runner import missing_requirements

    reason = missing_requirements("aarch64")
    if reason:
        pytest.skip(f"cannot build/run aarch64 programs here ({reason})")


def _export(model, path: Path, shape=SHAPE) -> Path:
    import torch

    with torch.no_grad():
        torch.onnx.export(model.eval(), (torch.zeros(shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    return path


def _relax(onnx_path: Path, shape=SHAPE):
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict={"input": list(shape)})
    return relax.get_pipeline("zero")(mod)


def _compile(mod, target, out: Path) -> Path:
    """tvm.compile for the target's [tvm] target dict, linked by tvm_cross.export_library."""
    tvm_target = tvm.target.Target(target.options_dict()["target"]) if target else tvm.target.Target({"kind": "llvm"})
    return tvm_cross.export_library(tvm.compile(mod, tvm_target), out, target)


def _host_logits(so: Path, x: np.ndarray) -> np.ndarray:
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(so)), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    return out.numpy()


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def r20(tmp_path_factory):
    """ResNet-20 (random weights), its Relax module, and a fixed input."""
    import torch

    from edgeres.models import create_model

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("r20arm")
    onnx_path = _export(create_model("resnet20", num_classes=10), root / "r20.onnx")
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    return {"root": root, "mod": _relax(onnx_path), "x": x, "onnx": onnx_path}


@pytest.fixture(scope="module")
def host_so(r20) -> Path:
    return _compile(r20["mod"], None, r20["root"] / "host.so")


@pytest.fixture(scope="module")
def rpi4_exec(r20):
    """ResNet-20 compiled by TVM for rpi4 (not yet linked)."""
    _require_cross()
    return tvm.compile(r20["mod"], tvm.target.Target(get_target("rpi4").options_dict()["target"]))


@pytest.fixture(scope="module")
def rpi4_so(r20, rpi4_exec) -> Path:
    return tvm_cross.export_library(rpi4_exec, r20["root"] / "rpi4.so", get_target("rpi4"))


@pytest.fixture(scope="module")
def runner_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cppcache")


@pytest.fixture(scope="module")
def arm_runner(runner_cache) -> Path:
    """The bundle's C++ runner, cross-built for aarch64 against the aarch64 TVM runtime."""
    _require_qemu_runtime()
    from edgeres.backends.tvm.cpp_runner import cached_runner

    t0 = time.perf_counter()
    exe = cached_runner("aarch64", cache_dir=runner_cache)
    print(f"aarch64 runner built in {time.perf_counter() - t0:.1f}s")
    assert tvm_cross.elf_arch(exe) == "aarch64"
    assert cached_runner("aarch64", cache_dir=runner_cache) == exe  # built once
    return exe


def test_arm_targets_declare_aarch64_and_valid_tvm_targets():
    for name in ARM_TARGETS:
        t = get_target(name)
        assert (t.backend, t.arch, t.qdq_form) == ("tvm", "aarch64", "cpu")
        assert set(t.precisions) == {"fp32", "int8"}
        tvm_cross.check_tvm_target(t)  # mtriple agrees with arch
        tt = tvm.target.Target(t.options_dict()["target"])
        assert tt.attrs["mtriple"] == "aarch64-linux-gnu"
    # LLVM knows every mcpu we name (an unknown one silently falls back to "generic").
    from tvm.target import codegen

    for name in ARM_TARGETS:
        tt = tvm.target.Target(get_target(name).options_dict()["target"])
        assert codegen.llvm_is_valid_cpu(tt.attrs["mcpu"], tt.attrs["mtriple"]), name
    assert tvm.target.Target(get_target("rpi5").options_dict()["target"]).attrs["feature.has_dotprod"]
    assert not tvm.target.Target(get_target("rpi4").options_dict()["target"]).attrs["feature.has_dotprod"]
    assert tvm_cross.needs_cross(get_target("rpi4")) is (tvm_cross.host_arch() != "aarch64")
    assert not tvm_cross.needs_cross(get_target("x86-64")) or tvm_cross.host_arch() != "x86_64"


def test_mtriple_that_contradicts_arch_is_rejected():
    bad = parse_target({"name": "b", "backend": "tvm", "arch": "aarch64", "precisions": ["fp32"],
                        "tvm": {"target": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}}})
    with pytest.raises(UsageError, match="mtriple"):
        tvm_cross.check_tvm_target(bad)


def test_missing_cross_compiler_says_how_to_install(monkeypatch):
    if tvm_cross.host_arch() != "x86_64":
        pytest.skip("cross-compilation is only needed from x86-64")
    monkeypatch.delenv(tvm_cross.CXX_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BackendUnavailable, match=re.escape("apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu")):
        tvm_cross.cross_compiler(get_target("rpi4"))
    assert tvm_cross.cross_compiler(get_target("x86-64")) is None


def test_missing_aarch64_runtime_says_run_setup(monkeypatch, tmp_path):
    from edgeres.backends.tvm.cpp_runner import build_cpp_runner, write_cpp_runner

    monkeypatch.setenv(tvm_cross.RUNTIME_ENV, str(tmp_path / "empty"))
    src = write_cpp_runner(tmp_path)
    with pytest.raises(BackendUnavailable, match="setup-aarch64.sh"):
        build_cpp_runner(src, arch="aarch64")


def test_failed_link_leaves_no_file(rpi4_exec, monkeypatch, tmp_path):
    monkeypatch.setenv(tvm_cross.CXX_ENV, "false")  # a "compiler" that always fails
    dest = tmp_path / "out" / "model.so"
    with pytest.raises(CompileError, match="linking model.so for aarch64 failed"):
        tvm_cross.export_library(rpi4_exec, dest, get_target("rpi4"))
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_rpi4_library_is_aarch64(rpi4_so, host_so):
    assert tvm_cross.elf_arch(rpi4_so) == "aarch64"
    assert tvm_cross.elf_arch(host_so) == tvm_cross.host_arch()
    assert tvm_cross.elf_arch(Path(__file__)) is None


def test_rpi4_under_qemu_matches_host(r20, rpi4_so, host_so, arm_runner):
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    ref = _host_logits(host_so, r20["x"])
    t0 = time.perf_counter()
    out = run_cpp_runner(arm_runner, rpi4_so, r20["x"])
    print(f"qemu run {time.perf_counter() - t0:.1f}s")
    assert out.command[0].endswith(("qemu-aarch64-static", "qemu-aarch64"))
    assert out.logits.shape == ref.shape
    _assert_close(out.logits, ref)
    assert [e.index for e in out.top[0]] == list(np.argsort(-ref[0], kind="stable")[:5])


def test_emulated_runner_validates_a_batch(r20, rpi4_so, host_so, arm_runner, runner_cache):
    """The Runner a backend can return for an ARM artifact: 3 samples through a batch-1 library."""
    from edgeres.backends.tvm.cpp_runner import emulated_runner

    run = emulated_runner(rpi4_so, SHAPE, cache_dir=runner_cache)
    assert run.exe == arm_runner
    x = np.random.default_rng(3).standard_normal((3, *SHAPE[1:])).astype(np.float32)
    ref = np.concatenate([_host_logits(host_so, x[i : i + 1]) for i in range(3)])
    _assert_close(run(x), ref)


@pytest.mark.parametrize("name", ["rpi5", "jetson-orin-cpu", "aarch64"])
def test_other_arm_targets_run_under_qemu(name, tmp_path, arm_runner):
    """A tiny CNN per target: the +dotprod / cortex-a76 / a78ae code runs and matches torch."""
    import torch

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 6))
    shape = (1, 3, 8, 8)
    onnx_path = _export(net, tmp_path / "tiny.onnx", shape)
    so = _compile(_relax(onnx_path, shape), get_target(name), tmp_path / f"{name}.so")
    assert tvm_cross.elf_arch(so) == "aarch64"
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    _assert_close(run_cpp_runner(arm_runner, so, x).logits, ref)


def test_backend_compile_for_rpi4_runs_under_qemu(r20, host_so, arm_runner, tmp_path):
    """The TVM backend itself (edgeres.backends.tvm) cross-compiles when the target is aarch64."""
    try:
        from edgeres.backends import tvm as tvm_backend
    except ImportError:
        pytest.skip("edgeres.backends.tvm is not present yet")
    art = tvm_backend.compile(r20["onnx"], get_target("rpi4"), tmp_path / "artifact", precision="fp32")
    assert tvm_cross.elf_arch(art.path) == "aarch64"
    from edgeres.backends.tvm.cpp_runner import run_cpp_runner

    _assert_close(run_cpp_runner(arm_runner, art.path, r20["x"]).logits, _host_logits(host_so, r20["x"]))


@pytest.fixture(scope="module")
def rpi5_bundle(tmp_path_factory):
    """An INT8 bundle for rpi5 (ARMv8.2 sdot kernels): cross-compiled here, checked under qemu."""
    _require_qemu_runtime()
    from edgeres.pipeline import compile_bundle

    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_onnx", Path(__file__).parents[1] / "device" / "tiny_onnx.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    root = tmp_path_factory.mktemp("rpi5")
    out = root / "bundle"
    compile_bundle(str(tiny.build_resnet_onnx(root / "tiny.onnx")), "rpi5", out, precision="int8", calib="builtin",
                   quant={"num_calib": 32})
    return out


@pytest.mark.filterwarnings("ignore:only .* calibration images")
def test_aarch64_bundle_passes_its_golden_selftest_under_qemu(rpi5_bundle, arm_runner):
    """`edgeres selftest` runs the aarch64 library in the C++ runner under qemu; the runner's own --selftest
    reads the same golden files and agrees."""
    from edgeres.backends.tvm.cpp_runner import run_cpp_selftest
    from edgeres.selftest import run_selftest

    res = run_selftest(rpi5_bundle)
    assert res.passed, res.line()
    assert res.runner == "tvm artifact artifact/model.so" and res.check.samples == 8
    rec = run_cpp_selftest(arm_runner, rpi5_bundle / "artifact" / "model.so", rpi5_bundle / "golden",
                           model_shape=(1, 3, 32, 32))
    assert rec["verdict"] == "PASS" and rec["exit"] == "0" and rec["top1"] == "8/8"
    assert float(rec["max_abs_err"]) <= float(rec["atol"])
    assert abs(float(rec["max_abs_err"]) - res.check.max_abs_err) <= 1e-5 + 1e-3 * res.check.max_abs_err
