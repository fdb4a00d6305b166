"""Q/DQ conformance for TensorRT: structural rules on real ONNX Runtime output, plus NVIDIA's parser."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeres.backends.tensorrt import conformance
from edgeres.backends.tensorrt.conformance import check_qdq, format_report
from edgeres.errors import BackendUnavailable, InputError

HAVE_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript")
needs_rtx = pytest.mark.skipif(not HAVE_RTX, reason="tensorrt_rtx not installed (pip install 'edgeres[trtcheck]')")


def _export_tiny_net(path):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x):
            y = torch.relu(self.bn(self.c1(x)))
            y = torch.relu(self.c2(y) + y)
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))

    torch.manual_seed(0)
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=17, dynamo=False)


def _quantize(fp32, out, **kw):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"input": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)} for _ in range(3)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, **kw)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from onnxruntime.quantization import QuantType

    d = tmp_path_factory.mktemp("qdq")
    fp32 = d / "fp32.onnx"
    _export_tiny_net(fp32)
    trt_form = _quantize(fp32, d / "trt.onnx", per_channel=True, activation_type=QuantType.QInt8,
                         weight_type=QuantType.QInt8,
                         extra_options={"QuantizeBias": False, "ActivationSymmetric": True, "WeightSymmetric": True})
    ort_default = _quantize(fp32, d / "ort.onnx", activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {"fp32": fp32, "trt": trt_form, "ort": ort_default, "dir": d}


def _rules(report):
    return {i.rule for i in report.issues}


def test_tensorrt_form_conforms_structurally(models):
    r = check_qdq(models["trt"], parse_with_trt=False)
    assert r.ok, format_report(r)
    assert r.issues == [] and r.trt_parser is None and r.trt_parse_ok is None
    assert r.stats["quantize_linear"] > 5 and r.stats["dequantize_linear"] > r.stats["quantize_linear"]


def test_ort_default_fails_with_the_bias_rule(models):
    r = check_qdq(models["ort"], parse_with_trt=False)
    assert not r.ok
    assert {"int32-bias", "int8", "zero-point"} <= _rules(r)
    bias = [i for i in r.issues if i.rule == "int32-bias"]
    assert {i.node for i in bias} >= {"c2.bias_DequantizeLinear", "fc.bias_DequantizeLinear"}
    assert "QuantizeBias=False" in bias[0].message
    text = format_report(r)
    assert text.startswith("Q/DQ conformance of ort.onnx: FAIL") and "[int32-bias] c2.bias_DequantizeLinear" in text


@needs_rtx
def test_real_tensorrt_rtx_parses_and_builds_the_tensorrt_form(models):
    r = check_qdq(models["trt"])
    assert r.trt_parser.startswith("tensorrt-rtx ")
    assert r.trt_parse_ok is True and r.trt_build_ok is True
    assert r.ok, format_report(r)
    assert "parsed; CPU-only build ok" in format_report(r)


@needs_rtx
def test_real_tensorrt_rtx_rejects_ort_default(models):
    r = check_qdq(models["ort"], parse_with_trt=True)
    assert r.trt_parse_ok is False and r.trt_build_ok is None and not r.ok
    parse = [i for i in r.issues if i.rule == "trt-parse"]
    assert parse and "Int32" in parse[0].message and "bias" in parse[0].node
    assert "cudaError" not in parse[0].message  # GPU-less noise is stripped
    assert "REJECTED" in format_report(r)


def test_parse_with_trt_true_without_a_parser_is_an_error(models, monkeypatch):
    monkeypatch.setattr(conformance, "_trt_module", lambda: None)
    with pytest.raises(BackendUnavailable, match=r"edgeres\[trtcheck\]"):
        check_qdq(models["trt"], parse_with_trt=True)
    r = check_qdq(models["trt"])  # auto: falls back to the structural rules with a note
    assert r.ok and any("structural rules only" in n for n in r.notes)


def _mutate(models, name, fn):
    m = onnx.load(str(models["trt"]))
    fn(m)
    path = models["dir"] / f"{name}.onnx"
    onnx.save(m, str(path))
    return check_qdq(path, parse_with_trt=False)


def _node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def _init(m, name):
    return next(i for i in m.graph.initializer if i.name == name)


def _set_init(m, name, arr):
    _init(m, name).CopyFrom(numpy_helper.from_array(np.asarray(arr), name))


def test_nonzero_zero_point(models):
    def fn(m):
        zp = _node(m, "input_QuantizeLinear").input[2]
        _set_init(m, zp, np.int8(3))
    r = _mutate(models, "zp", fn)
    assert "zero-point" in _rules(r) and not r.ok


def test_bad_scale(models):
    def fn(m):
        s = _node(m, "input_QuantizeLinear").input[1]
        _set_init(m, s, np.float32(-0.5))
    assert "scale" in _rules(_mutate(models, "scale", fn))


def test_conv_weight_axis_must_be_zero(models):
    def fn(m):
        dq = _node(m, "c2.weight_DequantizeLinear")
        for a in dq.attribute:
            if a.name == "axis":
                a.i = 1  # c2 weights are 8x8x3x3, so 8 scales still fit axis 1
    r = _mutate(models, "axis", fn)
    axis = [i for i in r.issues if i.rule == "axis"]
    assert axis and "output-channel axis 0" in axis[0].message


def test_gemm_axis_follows_transB(models):
    def fn(m):
        gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
        for a in gemm.attribute:
            if a.name == "transB":
                a.i = 0
    r = _mutate(models, "gemm", fn)
    assert any(i.rule == "axis" and "axis 1" in i.message for i in r.issues)


def test_q_dq_pair_needs_identical_scale(models):
    def fn(m):
        dq = _node(m, "input_DequantizeLinear")
        s = numpy_helper.to_array(_init(m, dq.input[1]))
        m.graph.initializer.append(numpy_helper.from_array((s * 2).astype(np.float32), "other_scale"))
        dq.input[1] = "other_scale"
    r = _mutate(models, "pair", fn)
    assert any(i.rule == "pair" and i.node == "input_DequantizeLinear" for i in r.issues)


def test_per_channel_activation(models):
    def fn(m):
        q, dq = _node(m, "input_QuantizeLinear"), _node(m, "input_DequantizeLinear")
        m.graph.initializer.append(numpy_helper.from_array(np.full(3, 0.02, np.float32), "pc_scale"))
        m.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.int8), "pc_zp"))
        for n in (q, dq):
            n.input[1], n.input[2] = "pc_scale", "pc_zp"
    assert "per-tensor-activation" in _rules(_mutate(models, "perchan", fn))


def test_old_opset_and_custom_domain(models):
    def fn(m):
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = 12
        relu = next(n for n in m.graph.node if n.op_type == "Relu")
        relu.domain = "com.microsoft"
    rules = _rules(_mutate(models, "opset", fn))
    assert {"opset", "op"} <= rules


def test_matmul_weight_axis_is_the_last_one(tmp_path):
    def model(axis):
        w = numpy_helper.from_array(np.ones((4, 3), np.int8), "w")
        s = numpy_helper.from_array(np.full(3 if axis == 1 else 4, 0.1, np.float32), "s")
        zp = numpy_helper.from_array(np.zeros(3 if axis == 1 else 4, np.int8), "zp")
        nodes = [helper.make_node("DequantizeLinear", ["w", "s", "zp"], ["wf"], name="w_dq", axis=axis),
                 helper.make_node("MatMul", ["x", "wf"], ["y"], name="mm")]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])], [w, s, zp])
        path = tmp_path / f"mm{axis}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return check_qdq(path, parse_with_trt=False)

    assert model(1).ok
    bad = model(0)
    assert any(i.rule == "axis" and "axis 1" in i.message for i in bad.issues)


def test_unreadable_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_qdq(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model at all")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        check_qdq(junk)


def test_report_is_json_able(models):
    import json

    d = check_qdq(models["ort"], parse_with_trt=False).to_dict()
    assert json.loads(json.dumps(d))["issues"][0].keys() == {"rule", "node", "message"}
