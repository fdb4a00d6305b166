"""`edgeres compile ... --target jetson` on a machine without TensorRT: a complete bundle with the
TensorRT-form Q/DQ ONNX, calibration cache, conformance record, on-device recipe and C++ example,
validated on the CPU (ONNX Runtime on the Q/DQ model). No fake engine."""

from __future__ import annotations

import json

import pytest

from edgeres.errors import BackendUnavailable, UsageError


@pytest.fixture(scope="module")
def jetson_bundle(trained_r20, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("jetson") / "r20-orin"
    r = cli("compile", trained_r20, "--target", "jetson", "--precision", "int8", "--calib", "builtin",
            "--num-calib", "256", "--val", "builtin", "--val-limit", "500", "--out", out)
    return out, r


def test_jetson_compile_writes_a_complete_bundle_without_an_engine(jetson_bundle):
    from edgeres.bundle import load_bundle

    out, r = jetson_bundle
    assert r.returncode == 0, r.stderr[-3000:]
    assert "edgeres build-engine" in r.stdout
    b = load_bundle(out)
    m = b.manifest
    assert m["target"]["name"] == "jetson-agx-orin" and m["precision"] == "int8"
    assert m["artifact"] is None and not (out / "artifact").exists()  # never a fake engine
    assert m["quantization"]["form"] == "tensorrt"
    assert m["conformance"]["ok"] is True
    recipe = json.loads((out / "recipe.json").read_text())
    text = json.dumps(recipe)
    assert "model.int8.onnx" in text and "trtexec" in text and "build-engine" in text
    assert (out / "cpp" / "CMakeLists.txt").is_file() and (out / "cpp" / "main.cpp").is_file()
    assert "cpp/main.cpp" in m["files"] and "recipe.json" in m["files"]


def test_jetson_bundle_is_validated_on_cpu_with_the_qdq_model(jetson_bundle):
    out, _ = jetson_bundle
    rep = json.loads((out / "report.json").read_text())
    assert rep["num_images"] == 500
    assert "onnxruntime" in rep["context"]["backend"]
    assert rep["reference"]["top1"] > 0.5 and rep["drop_top1"] <= 3.0 and rep["passed"]


def test_tensorrt_form_is_symmetric_int8_without_bias_dq(jetson_bundle):
    import onnx
    from onnx import numpy_helper

    out, _ = jetson_bundle
    m = onnx.load(str(out / "model.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    for n in dq:
        if len(n.input) > 2 and n.input[2] in inits:
            zp = inits[n.input[2]]
            assert zp.dtype.name == "int8" and not zp.any()
        if n.input[0] in inits:
            assert inits[n.input[0]].dtype.name == "int8"  # no INT32 bias DequantizeLinear


def test_build_engine_here_says_where_to_build(jetson_bundle, cli):
    out, _ = jetson_bundle
    from edgeres.backends.tensorrt.device_build import build_bundle_engine

    with pytest.raises(BackendUnavailable, match="cannot build the engine here"):
        build_bundle_engine(out)
    r = cli("build-engine", out)
    assert r.returncode == 2 and "cannot build the engine here" in r.stderr and "Traceback" not in r.stderr
    assert "trtexec" in r.stderr and "python3-libnvinfer" in r.stderr


def test_jetson_bundle_selftest_runs_the_qdq_model_until_the_engine_exists(jetson_bundle, cli):
    out, _ = jetson_bundle
    r = cli("selftest", out)
    assert r.returncode == 0 and "PASS selftest" in r.stdout and "no engine yet" in r.stdout, r.stdout + r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["golden"]["expected_from"] == "model.int8.onnx on ONNX Runtime" and m["golden"]["count"] == 8


def test_dla_with_the_qdq_int8_model_is_refused_before_any_work(trained_r20, tmp_path, cli):
    r = cli("compile", trained_r20, "--target", "jetson", "--precision", "int8", "--calib", "builtin",
            "--option", "dla_core=0", "--out", tmp_path / "dla")
    assert r.returncode == 2 and "explicit Q/DQ" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "dla").exists()


def test_build_engine_refuses_a_tvm_bundle(trained_r20, tmp_path):
    from edgeres.backends.tensorrt.device_build import build_bundle_engine
    from edgeres.pipeline import compile_bundle

    out = tmp_path / "ort"
    compile_bundle(str(trained_r20), "onnxruntime-cpu", out, precision="fp32")
    with pytest.raises(UsageError, match="build-engine is for TensorRT"):
        build_bundle_engine(out)


def test_check_qdq_command(jetson_bundle, cli, tmp_path):
    out, _ = jetson_bundle
    r = cli("check-qdq", out / "model.int8.onnx")
    assert r.returncode == 0, r.stdout + r.stderr
    # ONNX Runtime's default Q/DQ (uint8, INT32 bias DQ) is not what TensorRT accepts
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    import numpy as np

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)}
                               for i in range(4)])

        def get_next(self):
            return next(self.items, None)

    bad = tmp_path / "ort_default.onnx"
    quantize_static(str(out / "model.fp32.onnx"), str(bad), Reader(), quant_format=QuantFormat.QDQ)
    r = cli("check-qdq", bad, "--no-parser")
    assert r.returncode == 1 and "int32-bias" in r.stdout
