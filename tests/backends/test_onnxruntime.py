"""The ONNX Runtime backend and the reference-runner helpers, on real small models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgeres.backends import onnxruntime as ortb
from edgeres.errors import BackendUnavailable, InputError, UsageError
from edgeres.targets import get_target, parse_target

torch = pytest.importorskip("torch")


def _target(**ort_options):
    rec = {"name": "ort-test", "backend": "onnxruntime", "precisions": ["fp32", "int8"],
           "onnxruntime": ort_options}
    return parse_target(rec)


def test_make_runner_matches_pytorch(tiny_torch, tiny_onnx, make_images):
    model = tiny_torch
    runner = ortb.make_runner(tiny_onnx)
    assert runner.input_name == "input" and runner.input_shape == (None, 3, 16, 16) and runner.num_classes == 10
    for n in (1, 5):
        x = make_images(n, 16, seed=n)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert got.shape == (n, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert runner(np.zeros((0, 3, 16, 16), np.float32)).shape == (0, 10)


def test_session_accepts_bytes_and_threads(tiny_onnx, make_images):
    x = make_images(2, 16)
    a = ortb.session(tiny_onnx.read_bytes(), threads=1).run(None, {"input": x})[0]
    b = ortb.session(tiny_onnx).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_corrupt_and_missing_models_are_input_errors(corrupt_onnx, tmp_path):
    with pytest.raises(InputError, match=r"broken.onnx is not a valid ONNX model: .*re-export it"):
        ortb.session(corrupt_onnx)
    with pytest.raises(InputError, match="the in-memory ONNX model is not a valid ONNX model"):
        ortb.make_runner(b"garbage")
    with pytest.raises(InputError, match="nothere.onnx does not exist"):
        ortb.make_runner(tmp_path / "nothere.onnx")
    with pytest.raises(InputError, match="broken.onnx is not a valid ONNX model"):
        ortb.compile(corrupt_onnx, get_target("onnxruntime-cpu"), tmp_path / "out", precision="fp32")
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_wrong_input_shape(tiny_onnx, make_images):
    msg = r"input batch has shape \(1, 3, 32, 32\) but tiny.onnx expects \(N, 3, 16, 16\)"
    with pytest.raises(InputError, match=msg):
        ortb.make_runner(tiny_onnx)(make_images(1, 32))


def test_compile_fp32_writes_a_portable_model_and_sidecar(r20_untrained_onnx, tmp_path, make_images):
    src = onnx.load(str(r20_untrained_onnx))
    meta = src.metadata_props.add()
    meta.key, meta.value = "edgeres.preprocessing", '{"input_size": [32, 32]}'
    with_meta = tmp_path / "src.onnx"
    onnx.save(src, str(with_meta))

    art = ortb.compile(with_meta, get_target("onnxruntime-cpu"), tmp_path / "artifact", precision="fp32")
    root = tmp_path / "artifact"
    assert art.path == root / "model.onnx" and set(art.files) == {"model.onnx", "model.ort.json"}
    assert sorted(p.name for p in root.iterdir()) == ["model.onnx", "model.ort.json"]
    saved = onnx.load(str(art.path))
    onnx.checker.check_model(saved)
    assert {n.domain for n in saved.graph.node} <= {"", "ai.onnx"}, "basic level must keep standard ops"
    assert {p.key: p.value for p in saved.metadata_props}["edgeres.preprocessing"] == meta.value
    assert art.input_name == "input" and art.input_shape == (1, 3, 32, 32)
    assert art.info["dynamic_batch"] is True and art.info["int8_kernels"] is False
    assert art.info["saved_optimization_level"] == "basic" and art.info["graph_optimization_level"] == "all"
    side = json.loads((root / "model.ort.json").read_text())
    assert side["format"] == "edgeres-onnxruntime/1" and side["precision"] == "fp32"
    assert side["info"]["onnxruntime_version"] == ortb.version()

    x = make_images(5, 32, seed=9)
    want = ortb.make_runner(r20_untrained_onnx)(x)
    for runner in (ortb.load(art), ortb.load(root), ortb.load(art.path, get_target("onnxruntime-cpu"))):
        np.testing.assert_allclose(runner(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_compile_qdq_keeps_qdq_and_reports_int8_kernels(r20_untrained_qdq, tmp_path, make_images):
    art = ortb.compile(r20_untrained_qdq, get_target("onnxruntime-cpu"), tmp_path / "a", precision="int8")
    before, after = ortb.count_ops(r20_untrained_qdq), ortb.count_ops(art.path)
    # Basic level keeps the Q/DQ graph (it may give shared DequantizeLinear nodes one copy per consumer).
    assert after["QuantizeLinear"] == before["QuantizeLinear"] > 0 and after["Conv"] == before["Conv"]
    assert after["DequantizeLinear"] >= before["DequantizeLinear"]
    assert art.info["int8_kernels"] is True and art.info["int8_ops"].get("QLinearConv", 0) > 0
    x = make_images(3, 32, seed=4)
    want = ortb.make_runner(r20_untrained_qdq)(x)
    np.testing.assert_allclose(ortb.load(art)(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_saved_level_none_copies_the_model(tiny_onnx, tmp_path):
    art = ortb.compile(tiny_onnx, _target(saved_optimization_level="none"), tmp_path, precision="fp32")
    assert onnx.load(str(art.path)).graph == onnx.load(str(tiny_onnx)).graph


def test_precision_must_fit_the_model(tiny_onnx, r20_untrained_qdq, tmp_path):
    with pytest.raises(UsageError, match="has no QuantizeLinear/DequantizeLinear nodes"):
        ortb.compile(tiny_onnx, get_target("onnxruntime-cpu"), tmp_path, precision="int8")
    with pytest.raises(UsageError, match="quantized \\(Q/DQ\\) model but precision fp32"):
        ortb.compile(r20_untrained_qdq, get_target("onnxruntime-cpu"), tmp_path, precision="fp32")
    with pytest.raises(UsageError, match="supports precisions \\['fp32', 'int8'\\], not 'fp16'"):
        ortb.compile(tiny_onnx, get_target("onnxruntime-cpu"), tmp_path, precision="fp16")


@pytest.mark.parametrize("options, pattern", [
    ({"bogus": True}, r"unknown keys \['bogus'\]"),
    ({"saved_optimization_level": "all"}, "ties the file to this CPU"),
    ({"graph_optimization_level": "max"}, "graph_optimization_level must be one of"),
    ({"providers": ["NoSuchExecutionProvider"]}, "has no NoSuchExecutionProvider"),
    ({"threads": -1}, "threads must be a positive integer"),
])
def test_bad_options(tiny_onnx, tmp_path, options, pattern):
    with pytest.raises(UsageError, match=pattern):
        ortb.compile(tiny_onnx, _target(**options), tmp_path, precision="fp32")


def test_backend_unavailable(monkeypatch):
    from edgeres.backends import get_backend

    assert ortb.available() and get_backend("onnxruntime") is ortb.BACKEND
    monkeypatch.setattr(ortb, "unavailable_reason", lambda: "onnxruntime does not import (ImportError: x)")
    with pytest.raises(BackendUnavailable, match="onnxruntime backend is not available here"):
        get_backend("onnxruntime")
