"""Q/DQ insertion (edgeres.quantize.qdq / quantize()) on a small trained ResNet-like net, run in real ORT."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from edgeres.errors import InputError, UsageError
from edgeres.preprocessing import Preprocessing, read_onnx_preprocessing, write_onnx_preprocessing
from edgeres.quantize import QUANT_METADATA_KEY, QuantOptions, quantize, read_quantization_metadata, tensor_errors
from edgeres.quantize.qdq import insert_qdq, plan_quantization, prepare_model, quantize_weight

OPTION_FIELDS = {f.name for f in fields(QuantOptions)}

NUM_CLASSES = 10
SIZE = 16


class Block(nn.Module):
    """Basic residual block; a strided one uses an option-A (slice + zero-pad) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        sc = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            sc = F.pad(sc, (0, 0, 0, 0, 0, self.pad))
        return F.relu(out + sc)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 16, 2)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes: a fixed random pattern per class plus noise (the patterns use seed 0)."""
    protos = np.random.default_rng(0).normal(size=(NUM_CLASSES, 3, SIZE, SIZE)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = protos[y] + rng.normal(scale=1.0, size=(n, 3, SIZE, SIZE)).astype(np.float32)
    return x.astype(np.float32), y


def export(model: nn.Module, path: Path, **kw) -> Path:
    torch.onnx.export(
        model.eval(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, **kw,
    )
    return path


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    """TinyNet trained for a few steps on the synthetic task, exported with preprocessing metadata."""
    torch.manual_seed(0)
    net = TinyNet()
    x, y = synthetic(512, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine
    try:
        for step in range(30):
            i = np.arange(step * 32, step * 32 + 32) % 512
            loss = F.cross_entropy(net(torch.from_numpy(x[i])), torch.from_numpy(y[i]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    path = export(net, tmp_path_factory.mktemp("fp32") / "tiny.onnx")
    m = onnx.load(str(path))
    write_onnx_preprocessing(m, Preprocessing(input_size=(SIZE, SIZE), resize=None, class_names=tuple("abcdefghij")))
    onnx.save(m, str(path))
    return path


def calib() -> list[np.ndarray]:
    x, _ = synthetic(320, seed=2)
    return [x[i : i + 32] for i in range(0, 320, 32)]


def run(path_or_model, x: np.ndarray) -> np.ndarray:
    src = path_or_model if isinstance(path_or_model, (str, Path)) else path_or_model.SerializeToString()
    return ort.InferenceSession(str(src) if isinstance(src, Path) else src, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]


def q(fp32: Path, out: Path, **kw):
    """quantize() with QuantOptions fields given as keywords."""
    kw.setdefault("data_fingerprint", "synthetic-320")
    opts = {k: kw.pop(k) for k in list(kw) if k in OPTION_FIELDS}
    return quantize(fp32, out, calib, options=QuantOptions(**opts), **kw)


def graph_maps(model):
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return producer, inits


def dq_input(model, tensor: str):
    """The DequantizeLinear producing ``tensor`` (or None) and its (x, scale, zero point) arrays/names."""
    producer, inits = graph_maps(model)
    node = producer.get(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    return node, [inits.get(i) for i in node.input]


@pytest.fixture(scope="module")
def quantized(fp32, tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    return {form: q(fp32, d / f"{form}.onnx", form=form, method="entropy") for form in ("tensorrt", "cpu")}


def test_tensorrt_form_structure(quantized):
    res = quantized["tensorrt"]
    m = onnx.load(str(res.path))
    onnx.checker.check_model(m)
    producer, inits = graph_maps(m)
    ops = [n.op_type for n in m.graph.node]
    assert "BatchNormalization" not in ops
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and np.all(zp == 0), n.name  # symmetric int8
        if n.op_type == "DequantizeLinear":
            assert inits.get(n.input[0], np.zeros(1, np.int8)).dtype == np.int8, "no INT32 bias DQ in tensorrt form"
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert len(convs) == 5
    for conv in convs:
        x_dq, w_dq = dq_input(m, conv.input[0]), dq_input(m, conv.input[1])
        assert x_dq is not None and w_dq is not None, conv.name
        w, scale, zp = w_dq[1]
        assert w.dtype == np.int8 and np.abs(w).max() <= 127
        assert scale.shape == (w.shape[0],) and np.all(scale > 0)  # per output channel
        assert {a.name: a.i for a in w_dq[0].attribute}["axis"] == 0
        assert zp.dtype == np.int8 and np.all(zp == 0)
        assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32  # bias stays float
    adds = [n for n in m.graph.node if n.op_type == "Add"]
    assert len(adds) == 2
    for add in adds:
        assert dq_input(m, add.input[0]) and dq_input(m, add.input[1]), add.name
    (gemm,) = [n for n in m.graph.node if n.op_type == "Gemm"]
    g_dq = dq_input(m, gemm.input[1])
    assert g_dq[1][0].shape == (NUM_CLASSES, 16) and g_dq[1][1].shape == (NUM_CLASSES,)  # transB=1 -> axis 0
    assert {a.name: a.i for a in g_dq[0].attribute}["axis"] == 0
    assert res.num_quantized_nodes == 5 + 2 + 1 and res.form == "tensorrt" and res.per_channel


def test_cpu_form_structure_and_ort_fuses_it(quantized, tmp_path):
    res = quantized["cpu"]
    m = onnx.load(str(res.path))
    onnx.checker.check_model(m)
    _, inits = graph_maps(m)
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":
            assert inits[n.input[2]].dtype == np.uint8
    for conv in (n for n in m.graph.node if n.op_type == "Conv"):
        x_dq, w_dq, b_dq = (dq_input(m, conv.input[i]) for i in range(3))
        assert x_dq[1][2].dtype == np.uint8
        assert w_dq[1][0].dtype == np.int8 and np.all(w_dq[1][2] == 0)
        b, b_scale, _ = b_dq[1]
        assert b.dtype == np.int32
        np.testing.assert_allclose(b_scale, x_dq[1][1] * w_dq[1][1], rtol=1e-6)  # bias scale = s_x * s_w
    # ONNX Runtime turns every Conv into QLinearConv and every residual Add into QLinearAdd.
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(res.path), opts, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert fused.count("QLinearConv") == 5 and "Conv" not in fused
    assert fused.count("QLinearAdd") == 2


@pytest.mark.parametrize("form", ["tensorrt", "cpu"])
def test_int8_output_close_to_fp32(fp32, quantized, form):
    x, labels = synthetic(256, seed=3)
    ref, got = run(fp32, x), run(quantized[form].path, x)
    assert float(np.mean(ref.argmax(1) == labels)) > 0.6  # the FP32 net is trained-ish, logits mean something
    agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
    cos = np.sum(ref * got, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert agreement >= 0.9 and float(cos.mean()) > 0.99, (agreement, cos.mean())
    assert not np.allclose(ref, got, atol=1e-6)  # it really is quantized


def test_metadata_is_kept_and_added(fp32, quantized):
    m = onnx.load(str(quantized["cpu"].path))
    assert read_onnx_preprocessing(m) == read_onnx_preprocessing(onnx.load(str(fp32)))
    meta = read_quantization_metadata(m)
    assert meta["method"] == "entropy" and meta["form"] == "cpu" and meta["per_channel"] is True
    assert meta["num_calib"] == 320 and meta["fallback_layers"] == []
    assert json.loads({p.key: p.value for p in m.metadata_props}[QUANT_METADATA_KEY]) == meta


def test_per_tensor_weights(fp32, tmp_path):
    m = onnx.load(str(q(fp32, tmp_path / "pt.onnx", form="tensorrt", method="minmax", per_channel=False).path))
    for conv in (n for n in m.graph.node if n.op_type == "Conv"):
        node, (w, scale, _) = dq_input(m, conv.input[1])
        assert scale.shape == () and "axis" not in {a.name for a in node.attribute}
        assert np.abs(w).max() == 127


def scales(path: Path) -> dict[str, float]:
    m = onnx.load(str(path))
    _, inits = graph_maps(m)
    return {n.input[0]: float(inits[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear"}


def test_methods_give_different_scales(fp32, tmp_path):
    got = {
        meth: scales(q(fp32, tmp_path / f"{meth}.onnx", form="tensorrt", method=meth, percentile=99.0).path)
        for meth in ("minmax", "percentile", "entropy", "mse")
    }
    names = list(got["minmax"])
    for a in got:
        for b in got:
            if a < b:
                rel = [abs(got[a][t] - got[b][t]) / got[a][t] for t in names]
                assert max(rel) > 0.05, (a, b)
    # minmax is the widest range: every other method clips
    for meth in ("percentile", "entropy"):
        assert all(got[meth][t] <= got["minmax"][t] * (1 + 1e-6) for t in names)


def test_exclude_keeps_a_node_float(fp32, tmp_path):
    model = prepare_model(onnx.load(str(fp32)))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    target = convs[2]
    res = q(fp32, tmp_path / "ex.onnx", form="tensorrt", method="minmax", exclude={target})
    m = onnx.load(str(res.path))
    _, inits = graph_maps(m)
    (node,) = [n for n in m.graph.node if n.name == target]
    assert dq_input(m, node.input[0]) is None and dq_input(m, node.input[1]) is None
    assert inits[node.input[1]].dtype == np.float32
    assert res.excluded == (target,) and res.num_quantized_nodes == 8 - 1
    assert read_quantization_metadata(m)["fallback_layers"] == [target]
    with pytest.raises(UsageError, match="unknown node name.*nope"):
        q(fp32, tmp_path / "bad.onnx", exclude={"nope"})


def test_gemm_without_transb_uses_axis_1(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    w[:, 2] *= 50  # one output column with a far larger range: per-column scales matter
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W"], ["logits"], name="fc")],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    model = prepare_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    plan = plan_quantization(model, "tensorrt")
    assert plan.weights[0].axis == 1
    qm = insert_qdq(model, plan, {"input": (-3.0, 3.0)})
    onnx.checker.check_model(qm)
    x = rng.uniform(-1, 1, size=(64, 4)).astype(np.float32)
    sess = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    ref = x @ w
    col_err = np.abs(got - ref).max(axis=0) / np.abs(ref).max(axis=0)
    assert np.all(col_err < 0.05), col_err  # each output column within 5% of its own range


def test_batchnorm_is_folded(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    raw = onnx.load(str(export(net, tmp_path / "bn.onnx", do_constant_folding=False)))
    assert [n.op_type for n in raw.graph.node].count("BatchNormalization") == 2
    folded = prepare_model(raw)
    assert "BatchNormalization" not in [n.op_type for n in folded.graph.node]
    x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(run(folded, x), run(raw, x), atol=1e-5)


def test_nan_input_and_activation_are_named(fp32, tmp_path):
    bad = calib()
    bad[1][0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="batch 1 has NaN/Inf.*'input'"):
        quantize(fp32, tmp_path / "x.onnx", lambda: bad, data_fingerprint="d")
    # an activation that becomes NaN: Sqrt of a negative input feeding a Conv
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["input"], ["root"], name="sqrt"),
         helper.make_node("Conv", ["root", "W"], ["logits"], name="conv")],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, 2, 2])], [w],
    )
    path = tmp_path / "sqrt.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    batch = -np.ones((4, 1, 2, 2), np.float32)
    with pytest.raises(InputError, match="tensor 'root' became NaN/Inf on calibration batch 0"):
        quantize(path, tmp_path / "y.onnx", lambda: [batch], data_fingerprint="d")
    assert not (tmp_path / "y.onnx").exists()


def test_zero_and_few_images(fp32, tmp_path):
    with pytest.raises(InputError, match="no calibration images"):
        quantize(fp32, tmp_path / "z.onnx", lambda: [], data_fingerprint="d")
    x, _ = synthetic(40, seed=4)
    with pytest.warns(UserWarning, match="only 40 calibration images.*≥ 500 recommended for CNNs"):
        res = quantize(fp32, tmp_path / "few.onnx", lambda: [x[:20], x[20:]], data_fingerprint="d",
                       options=QuantOptions(method="minmax"))
    assert res.num_calib == 40 and res.path.exists()
    with pytest.raises(InputError, match="expects"):
        quantize(fp32, tmp_path / "w.onnx", lambda: [np.zeros((2, 3, 8, 8), np.float32)], data_fingerprint="d")


def test_bad_options(fp32, tmp_path):
    with pytest.raises(UsageError, match="minmax, percentile, entropy, mse"):
        q(fp32, tmp_path / "a.onnx", method="kl")
    with pytest.raises(UsageError, match="tensorrt, cpu"):
        q(fp32, tmp_path / "a.onnx", form="gpu")
    with pytest.raises(InputError, match="does not exist"):
        q(tmp_path / "missing.onnx", tmp_path / "a.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        q(tmp_path / "junk.onnx", tmp_path / "a.onnx")


def test_tensor_errors_per_layer(fp32, quantized):
    ref, cand = prepare_model(onnx.load(str(fp32))), onnx.load(str(quantized["tensorrt"].path))
    names = [n.output[0] for n in ref.graph.node if n.op_type in ("Conv", "Add")]
    x, _ = synthetic(16, seed=5)
    errs = tensor_errors(ref, cand, names, [x])
    assert set(errs) == set(names)
    assert all(0.0 < e < 0.2 for e in errs.values()), errs
    assert all(e == 0.0 for e in tensor_errors(ref, ref, names, [x]).values())



# --------------------------------------------------------------------------- reduce_range (7-bit weights)


def weight_dqs(model) -> dict[str, tuple]:
    """int8 initializer name -> (its DequantizeLinear, the int8 values, the scale): every quantized weight."""
    _, inits = graph_maps(model)
    return {n.input[0]: (n, inits[n.input[0]], inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8}


def channel_amax(w: np.ndarray, node) -> np.ndarray:
    axis = {a.name: a.i for a in node.attribute}.get("axis", 1)
    return np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1).max(1)


def test_quantize_weight_reduce_range():
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    w[2] = 0.0  # an all-zero channel: scale 1, values 0
    q8, s8 = quantize_weight(w, 0, True)
    q7, s7 = quantize_weight(w, 0, True, reduce_range=True)
    live = [0, 1, 3]
    assert q7.dtype == np.int8 and np.abs(q8).max() == 127
    assert np.all(np.abs(q7[live]).reshape(3, -1).max(1) == 63)  # every live channel spans -63..63
    np.testing.assert_allclose(s7[live], s8[live] * 127 / 63, rtol=1e-6)
    assert s7[2] == 1.0 and not q7[2].any()
    assert np.all(np.abs(w - q7 * s7.reshape(-1, 1, 1, 1)) <= s7.reshape(-1, 1, 1, 1) / 2 * (1 + 1e-6))
    qt, st = quantize_weight(w, 0, False, reduce_range=True)
    assert st.shape == () and np.abs(qt).max() == 63 and st == pytest.approx(np.abs(w).max() / 63)


@pytest.fixture(scope="module")
def reduced(fp32, tmp_path_factory):
    d = tmp_path_factory.mktemp("q7")
    return {form: q(fp32, d / f"{form}.onnx", form=form, method="entropy", reduce_range=True)
            for form in ("tensorrt", "cpu")}


@pytest.mark.parametrize("form", ["tensorrt", "cpu"])
def test_reduce_range_weights_are_7_bit_and_run_close_to_fp32(fp32, quantized, reduced, form, tmp_path):
    res, full = reduced[form], quantized[form]
    assert res.reduce_range is True and full.reduce_range is False
    m, m8 = onnx.load(str(res.path)), onnx.load(str(full.path))
    onnx.checker.check_model(m)
    assert read_quantization_metadata(m)["reduce_range"] is True
    assert read_quantization_metadata(m8)["reduce_range"] is False
    weights, weights8 = weight_dqs(m), weight_dqs(m8)
    assert len(weights) == 5 + 1 and set(weights) == set(weights8)  # 5 Conv + the Gemm
    for name, (node, w, scale) in weights.items():
        amax = channel_amax(w, node)
        assert w.dtype == np.int8 and amax.max() == 63, name  # within -63..63, the range used
        assert np.all((amax == 63) | (amax == 0)), name  # per channel: each live channel spans it
        np.testing.assert_allclose(scale, weights8[name][2] * 127 / 63, rtol=1e-6)
    if form == "cpu":
        for conv in (n for n in m.graph.node if n.op_type == "Conv"):
            x_dq, w_dq, b_dq = (dq_input(m, conv.input[i]) for i in range(3))
            assert b_dq[1][0].dtype == np.int32
            np.testing.assert_allclose(b_dq[1][1], x_dq[1][1] * w_dq[1][1], rtol=1e-6)  # bias scale = s_x * s_w
        opts = ort.SessionOptions()  # ONNX Runtime still fuses the 7-bit model into integer kernels
        opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(str(res.path), opts, providers=["CPUExecutionProvider"])
        assert [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node].count("QLinearConv") == 5
    x, _ = synthetic(256, seed=3)
    ref, got = run(fp32, x), run(res.path, x)
    agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
    cos = np.sum(ref * got, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert agreement >= 0.85 and float(cos.mean()) > 0.98, (agreement, cos.mean())
    assert not np.allclose(got, run(full.path, x), atol=1e-6)  # really other weights than 8-bit


def test_fallback_and_sensitivity_honour_reduce_range(fp32, tmp_path, monkeypatch):
    from edgeres.quantize import probes, sensitivity
    from edgeres.quantize.calibrated import calibrate
    from edgeres.quantize.fallback import quantize_with_fallback

    x, y = synthetic(128, seed=4)
    opts = QuantOptions(method="minmax", reduce_range=True)
    fb = quantize_with_fallback(fp32, tmp_path / "fb.onnx", calib, lambda: iter([(x, y)]), max_drop=100.0,
                                data_fingerprint="synthetic-320", options=opts)
    m = onnx.load(str(fb.path))
    assert fb.passed and fb.quantize_result.reduce_range and read_quantization_metadata(m)["reduce_range"] is True
    assert max(int(np.abs(w).max()) for _, w, _ in weight_dqs(m).values()) == 63

    cal = calibrate(fp32, calib, options=opts, data_fingerprint="synthetic-320", cache_path=tmp_path / "fb.calib.json")
    assert cal.options.reduce_range and max(int(np.abs(w).max()) for _, w, _ in weight_dqs(cal.build()).values()) == 63
    seen = []

    def spy(w, axis, per_channel, reduce_range=False):
        seen.append(reduce_range)
        return quantize_weight(w, axis, per_channel, reduce_range)

    monkeypatch.setattr(probes, "quantize_weight", spy)
    errs = probes.local_errors(cal, [x[:16]], cal.nodes(sensitivity.LAYER_OPS))
    assert len(errs) == 6 and seen == [True] * 6  # the per-layer proxy quantizes weights to 7 bits too


def test_cli_reduce_range(cli, fp32, tmp_path):
    out = tmp_path / "q7.onnx"
    r = cli("quantize", fp32, "--calib", "builtin", "--num-calib", "32", "--reduce-range", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "7-bit weights" in r.stdout
    m = onnx.load(str(out))
    assert read_quantization_metadata(m)["reduce_range"] is True
    assert max(int(np.abs(w).max()) for _, w, _ in weight_dqs(m).values()) == 63


@pytest.mark.tensorrt
def test_tensorrt_parser_accepts_tensorrt_form_and_rejects_cpu_form(quantized):
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip install edgeres[trtcheck]) not installed")
    logger = trt.Logger(trt.Logger.ERROR)

    def parses(path: Path) -> bool:
        builder = trt.Builder(logger)  # keep builder and network alive while the parser runs
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        ok = bool(parser.parse(path.read_bytes()))
        del parser, network, builder
        return ok

    assert parses(quantized["tensorrt"].path)
    assert not parses(quantized["cpu"].path)  # INT32 bias DequantizeLinear: why the tensorrt form exists


def test_weight_cache_builds_the_same_model(fp32):
    """auto's candidates share one weight quantization (``weight_cache``): the Q/DQ model is byte-identical,
    for other ranges too, and a key is per weight width (7-bit and 8-bit weights never mix)."""
    model = prepare_model(onnx.load(str(fp32)))
    plan = plan_quantization(model, "cpu")
    ranges = {t: (0.0, 2.0 + i) for i, t in enumerate(sorted({plan.tied.get(t, t) for t in plan.tensors}))}
    cache: dict = {}
    for rr in (False, True):
        for r in (ranges, {t: (lo, hi * 3) for t, (lo, hi) in ranges.items()}):
            plain = insert_qdq(model, plan, r, reduce_range=rr)
            cached = insert_qdq(model, plan, r, reduce_range=rr, weight_cache=cache)
            assert cached.SerializeToString() == plain.SerializeToString()
    assert cache and {k[3] for k in cache} == {False, True}
