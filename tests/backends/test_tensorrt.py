"""TensorRT backend.

* Version dispatch (TensorRT 8.x/10 flags vs 11 strongly typed) against a stand-in module that
  exposes only TensorRT's real attribute names; a TensorRT-10 stand-in is needed because no
  TensorRT 10 installs here.
* The strongly typed build path end to end with NVIDIA's real TensorRT-RTX builder (CPU-only).
* What happens on a machine that cannot build (this one): a clear refusal, never a fake engine.
* The C++ example ships as package data.
* GPU + TensorRT tests (marked) build, run and compare engines; they skip here with a reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeres.backends import get_backend
from edgeres.backends import tensorrt as trt_backend
from edgeres.backends.tensorrt.builder import (api_family, build_engine, configure, network_flags, onnx_summary,
                                             require_python_api)
from edgeres.backends.tensorrt.options import resolve_options
from edgeres.errors import BackendUnavailable, CompileError, UsageError
from edgeres.targets import get_target, parse_target

ROOT = Path(__file__).resolve().parents[2]
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript", "ignore::DeprecationWarning")


# ---------------------------------------------------------------- tiny models
def _export(path, static=False):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5)).eval()
    axes = None if static else {"input": {0: "N"}, "logits": {0: "N"}}
    torch.onnx.export(net, torch.randn(2, 3, 16, 16), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def _quantize(fp32, out, tensorrt_form=True):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"input": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.it, None)

    kw = dict(per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
              extra_options={"QuantizeBias": False, "ActivationSymmetric": True, "WeightSymmetric": True})
    if not tensorrt_form:
        kw = dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, **kw)
    return out


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt")
    fp32 = _export(d / "fp32.onnx")
    return {"fp32": fp32, "int8": _quantize(fp32, d / "int8.onnx"),
            "ort": _quantize(fp32, d / "ort.onnx", tensorrt_form=False),
            "static": _export(d / "static.onnx", static=True), "dir": d}


# ---------------------------------------------------------------- version dispatch
class _Config:
    def __init__(self):
        self.calls: list[tuple] = []
        self.default_device_type = None
        self.DLA_core = None
        self.hardware_compatibility_level = None

    def set_flag(self, f):
        self.calls.append(("set_flag", f))

    def clear_flag(self, f):
        self.calls.append(("clear_flag", f))

    def set_memory_pool_limit(self, pool, size):
        self.calls.append(("set_memory_pool_limit", pool, size))

    def add_optimization_profile(self, p):
        self.calls.append(("add_optimization_profile", p))

    def flags(self):
        return [c[1] for c in self.calls if c[0] == "set_flag"]

    def cleared(self):
        return [c[1] for c in self.calls if c[0] == "clear_flag"]


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (list(lo), list(opt), list(hi))


def _fake_trt(version: str):
    """Stand-in exposing TensorRT's real Python names; TensorRT 11 has no precision flags."""
    flags = ["GPU_FALLBACK", "VERSION_COMPATIBLE", "TF32"] + (["FP16", "INT8"] if int(version.split(".")[0]) < 11 else [])
    return types.SimpleNamespace(
        __version__=version,
        BuilderFlag=types.SimpleNamespace(**{f: f for f in flags}),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
        DeviceType=types.SimpleNamespace(GPU="GPU", DLA="DLA"),
        HardwareCompatibilityLevel=types.SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS"),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
    )


def _fake_graph(shape=(-1, 3, 224, 224), dla_cores=2):
    tensor = types.SimpleNamespace(name="input", shape=shape)
    network = types.SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)
    builder = types.SimpleNamespace(num_DLA_cores=dla_cores, create_optimization_profile=_Profile)
    return builder, network, _Config()


def _configure(version, target, precision, options=None, shape=(-1, 3, 224, 224)):
    trt = _fake_trt(version)
    builder, network, config = _fake_graph(shape)
    applied = configure(trt, builder, network, config, resolve_options(get_target(target), options), precision)
    return applied, config


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0"])
def test_tensorrt_10_int8_sets_precision_flags_and_no_calibrator(version):
    applied, config = _configure(version, "rtx-ampere", "int8")
    assert applied["api"] == "weakly-typed"
    assert config.flags() == ["INT8", "FP16"]
    assert ("set_memory_pool_limit", "WORKSPACE", 4096 << 20) in config.calls
    (profile,) = [c[1] for c in config.calls if c[0] == "add_optimization_profile"]
    assert profile.shapes["input"] == ([1, 3, 224, 224], [8, 3, 224, 224], [32, 3, 224, 224])
    assert config.default_device_type is None and config.DLA_core is None


def test_tensorrt_10_fp16_and_fp32():
    assert _configure("10.3.0", "rtx-ada", "fp16")[1].flags() == ["FP16"]
    applied, config = _configure("10.3.0", "rtx-ada", "fp32")
    # TF32 is on by default on Ampere+: an "fp32" engine would round convolutions to TF32 unless it is cleared
    assert config.flags() == [] and config.cleared() == ["TF32"] and applied["cleared_flags"] == ["TF32"]
    assert _configure("10.3.0", "rtx-ada", "fp16")[1].cleared() == []
    assert _configure("10.3.0", "rtx-ada", "int8", {"int8_allow_fp16": False})[1].flags() == ["INT8"]


@pytest.mark.parametrize("precision", ["int8", "fp16", "fp32"])
def test_tensorrt_11_is_strongly_typed_no_precision_flags(precision):
    # The TensorRT 11 stand-in has no BuilderFlag.FP16/INT8: touching them would raise AttributeError.
    applied, config = _configure("11.4.0", "datacenter-hopper", precision)
    assert applied["api"] == "strongly-typed" and config.flags() == []
    assert config.cleared() == (["TF32"] if precision == "fp32" else [])
    assert ("set_memory_pool_limit", "WORKSPACE", 8192 << 20) in config.calls


def test_dla_core_fp16_with_gpu_fallback_pins_the_profile():
    applied, config = _configure("10.3.0", "jetson-agx-orin", "fp16", {"dla_core": 1})
    assert config.default_device_type == "DLA" and config.DLA_core == 1
    assert "GPU_FALLBACK" in config.flags() and "FP16" in config.flags() and applied["dla_core"] == 1
    (profile,) = [c[1] for c in config.calls if c[0] == "add_optimization_profile"]
    assert profile.shapes["input"][0] == profile.shapes["input"][2] == [1, 3, 224, 224]
    with pytest.raises(UsageError, match="DLA runs FP16 and INT8 only"):
        _configure("10.3.0", "jetson-agx-orin", "fp32", {"dla_core": 0})
    trt = _fake_trt("10.3.0")
    builder, network, config = _fake_graph(dla_cores=1)  # an Orin NX 8GB has one DLA core
    with pytest.raises(CompileError, match="has 1 DLA cores"):
        configure(trt, builder, network, config, resolve_options(get_target("jetson-agx-orin"), {"dla_core": 1}), "fp16")


def test_dla_refuses_explicit_qdq_int8_and_tensorrt_without_dla():
    """Defect 4: DLA takes INT8 only from implicit calibration; with the explicit Q/DQ model and GPU fallback
    every layer would silently run on the GPU. TensorRT 10.8-11.4.0 have no DLA at all."""
    with pytest.raises(UsageError, match="explicit Q/DQ"):
        _configure("10.3.0", "jetson-agx-orin", "int8", {"dla_core": 0})
    for no_dla in ("10.8.0", "10.13.3", "11.4.0"):
        with pytest.raises(BackendUnavailable, match="cannot build for the DLA"):
            _configure(no_dla, "jetson-agx-orin", "fp16", {"dla_core": 0})
    assert _configure("11.4.1", "jetson-agx-orin", "fp16", {"dla_core": 0})[1].DLA_core == 0  # JetPack 7.2.2+
    assert _configure("10.7.0", "jetson-agx-orin", "fp16", {"dla_core": 0})[1].DLA_core == 0


def test_compatibility_options():
    applied, config = _configure("11.4.0", "rtx-ampere", "int8",
                                 {"version_compatible": True, "hardware_compatibility": "ampere+"})
    assert config.flags() == ["VERSION_COMPATIBLE"]
    assert config.hardware_compatibility_level == "AMPERE_PLUS"
    assert applied["hardware_compatibility"] == "ampere+"


def test_static_input_needs_no_profile_and_other_dynamic_dims_are_refused():
    applied, config = _configure("10.3.0", "rtx-ampere", "fp16", shape=(4, 3, 32, 32))
    assert applied["profile"] is None and not [c for c in config.calls if c[0] == "add_optimization_profile"]
    with pytest.raises(CompileError, match="fixed input size"):
        _configure("10.3.0", "rtx-ampere", "fp16", shape=(-1, 3, -1, -1))


def test_network_flags_and_minimum_version():
    assert network_flags(_fake_trt("8.6.2")) == 1 << 0  # EXPLICIT_BATCH is required on 8.x
    assert network_flags(_fake_trt("10.3.0")) == 0 and network_flags(_fake_trt("11.4.0")) == 0
    assert api_family("10.16.1") == "weakly-typed" and api_family("11.0.0") == "strongly-typed"
    with pytest.raises(BackendUnavailable, match="trtexec"):
        require_python_api(_fake_trt("8.2.1"))


# ---------------------------------------------------------------- real NVIDIA builder (CPU-only)
@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install 'edgeres[trtcheck]')")
@pytest.mark.parametrize("kind, precision", [("int8", "int8"), ("fp32", "fp32")])
def test_strongly_typed_build_path_with_real_tensorrt_rtx(onnx_models, tmp_path, kind, precision):
    import tensorrt_rtx

    class As11(types.ModuleType):  # TensorRT-RTX is strongly typed like TensorRT 11: same builder API
        def __getattr__(self, name):
            return getattr(tensorrt_rtx, name)

    trt = As11("tensorrt")
    trt.__version__ = "11.4.0"
    opts = resolve_options(get_target("rtx-ampere"), {"hardware_compatibility": "ampere+"})
    engine, cache = tmp_path / "model.engine", tmp_path / "timing.cache"
    applied = build_engine(trt, onnx_models[kind], engine, opts, precision, cache)
    assert engine.stat().st_size > 10_000 and cache.is_file()
    assert applied["api"] == "strongly-typed" and applied["flags"] == []
    assert applied["profile"]["input"]["max"] == [32, 3, 16, 16]
    with pytest.raises(CompileError, match="cannot parse ort.onnx"):
        build_engine(trt, onnx_models["ort"], tmp_path / "bad.engine", opts, "int8", None)
    assert not (tmp_path / "bad.engine").exists()


@pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install 'edgeres[trtcheck]')")
def test_compile_writes_engine_sidecar_and_fp16_onnx(onnx_models, tmp_path, monkeypatch):
    """compile() end to end with the real (strongly typed) RTX builder standing in for TensorRT 11;
    only the "is this the right GPU?" check is bypassed, since there is no GPU here."""
    import tensorrt_rtx

    class As11(types.ModuleType):
        def __getattr__(self, name):
            return getattr(tensorrt_rtx, name)

    trt = As11("tensorrt")
    trt.__version__ = "11.4.0"
    monkeypatch.setattr(trt_backend.backend, "import_tensorrt", lambda: (trt, ""))
    monkeypatch.setenv("EDGERES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(trt_backend.backend, "check_buildable_here", lambda target, options=None: (True, "test"))
    art = trt_backend.compile(onnx_models["fp32"], get_target("rtx-ada"), tmp_path, precision="fp16",
                              options={"batch": {"min": 1, "opt": 2, "max": 4}})
    assert art.files == ("model.engine", "engine.json", "fp32_fp16.onnx")
    assert art.input_shape == (-1, 3, 16, 16) and art.precision == "fp16"
    meta = trt_backend.read_sidecar(art.path)
    assert meta["tensorrt_version"] == "11.4.0" and meta["api"] == "strongly-typed"
    assert meta["onnx_converted_to_fp16"] and onnx_summary(tmp_path / meta["onnx"])["has_fp16"]
    assert meta["build"]["profile"]["input"]["max"] == [4, 3, 16, 16] and meta["build"]["batch_max"] == 4
    from edgeres.fileio import sha256_file

    assert meta["engine_sha256"] == sha256_file(art.path)
    # the timing cache lives outside the artifact directory (an atomic temp dir in build-engine), keyed by
    # TensorRT version and GPU, and its hash is part of the reproducibility record
    repro = meta["reproducibility"]
    cache = Path(repro["timing_cache"]["path"])
    assert cache.is_file() and tmp_path / "cache" in cache.parents and not (tmp_path / "timing.cache").exists()
    assert repro["timing_cache"]["sha256"] == sha256_file(cache) and repro["timing_cache"]["sha256_before"] is None
    assert repro["tensorrt_version"] == "11.4.0" and repro["method"] == "python" and repro["onnx_sha256"]
    art2 = trt_backend.compile(onnx_models["fp32"], get_target("rtx-ada"), tmp_path / "again", precision="fp16",
                               options={"batch": {"min": 1, "opt": 2, "max": 4}})
    again = art2.info["reproducibility"]["timing_cache"]
    assert again["path"] == str(cache) and again["sha256_before"] == repro["timing_cache"]["sha256"]
    assert again["reused"] is True
    with pytest.raises(CompileError, match=r"not TensorRT-conformant Q/DQ: \[int32-bias\]"):
        trt_backend.compile(onnx_models["ort"], get_target("rtx-ada"), tmp_path / "bad", precision="int8")
    assert not (tmp_path / "bad" / "model.engine").exists()


# ---------------------------------------------------------------- this machine cannot build
no_trt_here = pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")


@no_trt_here
def test_cannot_build_here_says_where_to_build():
    ok, reason = trt_backend.check_buildable_here(get_target("jetson"))
    assert not ok and "tensorrt" in reason and "edgeres build-engine BUNDLE" in reason and "jetson-agx-orin" in reason
    ok, reason = trt_backend.check_buildable_here(get_target("rtx-ampere"))
    assert not ok and "SM 8.6" in reason
    assert not trt_backend.available() and "tensorrt" in trt_backend.unavailable_reason()
    assert trt_backend.version() is None
    with pytest.raises(BackendUnavailable, match="python3-libnvinfer.*--system-site-packages"):
        get_backend("tensorrt")  # the fix names JetPack's apt package, never a pip wheel that cannot match


@no_trt_here
def test_compile_refuses_without_writing_an_engine(onnx_models, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(BackendUnavailable, match="build-engine") as e:
        trt_backend.compile(onnx_models["int8"], get_target("jetson"), out, precision="int8")
    assert "\n" not in str(e.value)
    assert not (out / "model.engine").exists()
    with pytest.raises(BackendUnavailable, match="cannot run a TensorRT engine here"):
        trt_backend.load(tmp_path / "model.engine")


def test_compile_checks_precision_before_anything(onnx_models, tmp_path):
    with pytest.raises(UsageError, match="not 'int8'"):
        trt_backend.compile(onnx_models["fp32"], get_target("jetson-nano"), tmp_path, precision="int8")


def test_onnx_must_match_the_precision(onnx_models):
    check = trt_backend.backend._check_onnx_for_precision
    with pytest.raises(UsageError, match="no Q/DQ nodes"):
        check(onnx_models["fp32"], "int8", "weakly-typed")
    with pytest.raises(CompileError, match=r"\[int32-bias\]"):
        check(onnx_models["ort"], "int8", "strongly-typed")
    with pytest.raises(UsageError, match="--precision int8"):
        check(onnx_models["int8"], "fp16", "weakly-typed")
    assert check(onnx_models["int8"], "int8", "weakly-typed")["input_name"] == "input"


def test_convert_to_fp16_keeps_float32_io(onnx_models, tmp_path):
    import onnxruntime as ort

    out = trt_backend.convert_to_fp16(onnx_models["fp32"], tmp_path / "fp16.onnx")
    s = onnx_summary(out)
    assert s["has_fp16"] and not s["input_fp16"] and s["input_shape"] == [-1, 3, 16, 16]
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(onnx_models["fp32"])).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    assert got.dtype == np.float32 and np.allclose(got, ref, atol=1e-2)
    with pytest.raises(UsageError, match="Q/DQ INT8 model"):
        trt_backend.convert_to_fp16(onnx_models["int8"], tmp_path / "x.onnx")


# ---------------------------------------------------------------- C++ example
def test_cpp_template_is_shipped_and_uses_the_tensorrt_runtime(tmp_path):
    assert trt_backend.cpp_template_files() == ["CMakeLists.txt", "README.md", "main.cpp"]
    files = trt_backend.copy_cpp_template(tmp_path / "cpp")
    cmake = (tmp_path / "cpp" / "CMakeLists.txt").read_text()
    assert "nvinfer" in cmake and "cudart" in cmake
    src = (tmp_path / "cpp" / "main.cpp").read_text()
    for call in ("createInferRuntime", "deserializeCudaEngine", "createExecutionContext", "setInputShape",
                 "setTensorAddress", "enqueueV3", "labels.txt"):
        assert call in src, call
    assert len(files) == 3


def test_wheel_carries_the_cpp_template(built_wheel):
    """The session's wheel (built once, see tests/conftest.py) holds every file of the TensorRT template."""
    names = zipfile.ZipFile(built_wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "edgeres" / "backends" / "tensorrt" / "cpp_template").iterdir())
    assert shipped == trt_backend.cpp_template_files()
    for f in shipped:
        assert f"edgeres/backends/tensorrt/cpp_template/{f}" in names


# ---------------------------------------------------------------- needs an NVIDIA GPU + TensorRT
def _gpu_target_record() -> dict:
    import platform

    from edgeres.backends.tensorrt.cuda import gpu_info

    gpu = gpu_info()
    return {"name": "this-gpu", "backend": "tensorrt", "precisions": ["int8", "fp16", "fp32"],
            "arch": {"arm64": "aarch64"}.get(platform.machine(), platform.machine()),
            "tensorrt": {"compute_capability": gpu["compute_capability"], "tensorrt": {"min": "8.5", "max": "99"},
                         "batch": {"min": 1, "opt": 4, "max": 8},
                         "builds_on": "device" if "jetson" in gpu else "host"}}


def _gpu_target():
    return parse_target(_gpu_target_record())


needs_gpu = pytest.mark.skipif(not trt_backend.available(),
                               reason=f"needs TensorRT and an NVIDIA GPU: {trt_backend.unavailable_reason()}")


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnxruntime_on_gpu(onnx_models, tmp_path, precision):
    import onnxruntime as ort

    onnx_path = onnx_models["int8" if precision == "int8" else "fp32"]
    art = trt_backend.compile(onnx_path, _gpu_target(), tmp_path, precision=precision)
    assert art.path.is_file() and (tmp_path / "engine.json").is_file()
    meta = trt_backend.read_sidecar(art.path)
    assert meta["tensorrt_version"] == trt_backend.version() and meta["precision"] == precision
    runner = trt_backend.load(art)
    x = np.random.default_rng(2).standard_normal((11, 3, 16, 16)).astype(np.float32)  # > max batch: chunks
    ref = ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]
    got = runner(x)
    assert got.shape == ref.shape
    tol = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.25}[precision]
    assert np.abs(got - ref).max() < tol * max(1.0, np.abs(ref).max())


def _gpu_bundle(tmp_path, precision):
    """A bundle for this GPU from the tiny model: compile builds the engine here (TensorRT + matching GPU)."""
    from edgeres.pipeline import compile_bundle

    spec = importlib.util.spec_from_file_location("tiny_onnx", ROOT / "tests" / "device" / "tiny_onnx.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)  # the device tier's torch-free model
    build_resnet_onnx = tiny.build_resnet_onnx

    toml = tmp_path / "this-gpu.toml"
    rec = _gpu_target_record()
    trt_rows = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in rec["tensorrt"].items()
                          if not isinstance(v, dict))
    toml.write_text(f'name = "this-gpu"\nbackend = "tensorrt"\narch = "{rec["arch"]}"\n'
                    'precisions = ["int8", "fp16", "fp32"]\n[tensorrt]\n' + trt_rows +
                    '\ntensorrt = { min = "8.5", max = "99" }\nbatch = { min = 1, opt = 4, max = 8 }\n')
    model = build_resnet_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / f"bundle-{precision}"
    compile_bundle(str(model), str(toml), out, precision=precision, calib="builtin", quant={"num_calib": 64})
    return out


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_build_engine_selftests_and_reuses_the_timing_cache_on_gpu(tmp_path, precision):
    from edgeres.backends.tensorrt.device_build import build_bundle_engine
    from edgeres.selftest import run_selftest

    out = _gpu_bundle(tmp_path, precision)
    assert run_selftest(out).passed  # the engine compile built here
    res = build_bundle_engine(out)  # rebuild on the device: warm timing cache, self-test, record
    assert res.method == "python" and res.selftest.passed, res.selftest.line()
    repro = res.bundle.manifest["artifact"]["info"]["reproducibility"]
    assert repro["timing_cache"]["reused"] is True and repro["tensorrt_version"]
    if precision == "fp32":
        assert repro["cleared_flags"] == ["TF32"]
    assert res.bundle.manifest["selftest"]["passed"] is True


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu
def test_cpp_example_compiles_and_runs_on_gpu(tmp_path):
    """Built from the bundle's cpp/ with the board's CMake: --selftest passes, and the README's command
    (../artifact/model.engine) prints class names from the bundle's labels.txt."""
    if not shutil.which("cmake"):
        pytest.skip("cmake not installed")
    out = _gpu_bundle(tmp_path, "int8")
    cpp = out / "cpp"
    for cmd in (["cmake", "-S", str(cpp), "-B", str(cpp / "build")], ["cmake", "--build", str(cpp / "build")]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode and "TensorRT not found" in r.stderr:
            pytest.skip("TensorRT C++ headers/libraries not installed")
        assert r.returncode == 0, r.stderr[-2000:]
    exe = str(cpp / "build" / "edgeres_trt_classify")
    r = subprocess.run([exe, "../artifact/model.engine", "--selftest", "../golden"], capture_output=True, text=True,
                       cwd=cpp)
    assert r.returncode == 0 and r.stdout.startswith("selftest\tPASS"), r.stdout + r.stderr
    r = subprocess.run([exe, "../artifact/model.engine", "../golden/inputs.f32"], capture_output=True, text=True,
                       cwd=cpp)
    assert r.returncode == 0, r.stderr
    from edgeres.golden import read_golden
    from edgeres.runtime import load

    golden = read_golden(out, load(out).bundle.manifest["golden"])
    top1 = load(out).predict(golden.inputs).argmax(1)
    names = (out / "labels.txt").read_text().split()
    for n in range(2):
        assert f"sample {n}:\n  1. class {top1[n]} ({names[top1[n]]})" in r.stdout


# ---------------------------------------------------------------- runner and placement (TensorRT's API names)
class _Engine:
    """Just the ICudaEngine names TrtRunner uses: one input "input" (dynamic batch 1..4), one output."""

    num_io_tensors = 2

    def get_tensor_name(self, i):
        return ["input", "logits"][i]

    def get_tensor_mode(self, name):
        return "INPUT" if name == "input" else "OUTPUT"

    def get_tensor_dtype(self, name):
        return "FLOAT"

    def get_tensor_shape(self, name):
        return (-1, 3, 16, 16) if name == "input" else (-1, 5)

    def get_tensor_profile_shape(self, name, profile):
        return (1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16)

    def create_execution_context(self):
        return object()


def _runner_trt(events):
    class Runtime:
        def __init__(self, logger):
            self._dla = -1

        @property
        def DLA_core(self):  # noqa: N802 - TensorRT's Python name
            return self._dla

        @DLA_core.setter
        def DLA_core(self, core):  # noqa: N802
            events.append(("DLA_core", core))
            self._dla = core

        def deserialize_cuda_engine(self, data):
            events.append(("deserialize", self._dla))
            return _Engine()

    class ILogger:
        Severity = types.SimpleNamespace(WARNING=1)

        def __init__(self):
            pass

    return types.SimpleNamespace(__version__="10.3.0", Runtime=Runtime, ILogger=ILogger,
                                 TensorIOMode=types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"),
                                 nptype=lambda t: np.float32)


@pytest.mark.parametrize("dla_core", [0, 1, -1])
def test_runner_loads_a_dla_engine_on_its_core(tmp_path, dla_core):
    """Defect 4: the Python runner never set Runtime.DLA_core, so a DLA engine would load for core 0 (or fail)."""
    from edgeres.backends.tensorrt.runner import TrtRunner

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    events = []
    meta = {"tensorrt_version": "10.3.0", "build": {"dla_core": dla_core}}
    runner = TrtRunner(_runner_trt(events), engine, meta, io=object())
    expected = [("DLA_core", dla_core), ("deserialize", dla_core)] if dla_core >= 0 else [("deserialize", -1)]
    assert events == expected and runner.dla_core == dla_core
    assert (runner.bmin, runner.bmax, runner.chw) == (1, 4, (3, 16, 16))


def test_dla_placement_report():
    from edgeres.backends.tensorrt.placement import dla_placement, engine_layers, summary

    trt = _fake_trt("10.3.0")
    layers = [types.SimpleNamespace(name=n, type=f"LayerType.{t}") for n, t in
              (("conv1", "CONVOLUTION"), ("relu1", "ACTIVATION"), ("topk", "TOPK"))]
    network = types.SimpleNamespace(num_layers=3, get_layer=lambda i: layers[i])
    config = types.SimpleNamespace(default_device_type="DLA", DLA_core=1,
                                   can_run_on_DLA=lambda layer: layer.name != "topk")
    rep = dla_placement(trt, network, config)
    assert rep["layers_on_dla"] == 2 and rep["gpu_fallback"] == ["topk"] and rep["layers"][0]["type"] == "CONVOLUTION"
    assert dla_placement(trt, network, types.SimpleNamespace(default_device_type="GPU")) is None
    assert "2 layers on the DLA, 1 fall back to the GPU" in summary(rep, None)
    broken = engine_layers(types.SimpleNamespace(__version__="10.3.0", Runtime=None), b"", None)
    assert broken["available"] is False and broken["reason"]


TRT_HEADERS = [p for p in os.environ.get("EDGERES_TRT_HEADERS", "").split(os.pathsep) if p]


@pytest.mark.skipif(not TRT_HEADERS or not shutil.which("g++"),
                    reason="set EDGERES_TRT_HEADERS=DIR[:DIR...] (TensorRT include dirs, e.g. 8.2 and 10.3) to "
                           "compile-check the C++ example against them")
@pytest.mark.parametrize("include", TRT_HEADERS or ["none"])
def test_cpp_example_compiles_against_tensorrt_headers(include):
    cuda_inc = os.environ.get("CUDA_INCLUDE", "/usr/local/cuda/include")
    src = ROOT / "edgeres" / "backends" / "tensorrt" / "cpp_template" / "main.cpp"
    r = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-fsyntax-only", "-isystem", include, "-isystem", cuda_inc,
                        str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
