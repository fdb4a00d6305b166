"""The accuracy ladder on a ResNet-20 that plain post-training quantization cannot hold within a tight --max-drop.

The trained ResNet-20 made weight-hostile without changing its FP32 function: in every block, the
most active channel of ``bn1`` is divided by K and the matching input channel of ``conv2``
multiplied by K (ReLU is positively homogeneous). With the x86 targets' 7-bit weights, each
``conv2``'s other input channels keep only ~2 levels per output channel: nine hostile layers, more
than the three float layers the QAT fallback allows PTQ, and no activation range can fix weights.

Cross-layer equalization undoes exactly this scaling, so the fallback tries it before float layers
and before QAT. With ``--no-equalize`` QAT has to do it, and does not (measured: a fine-tune of
1-3 epochs moves the FP32 weights and leaves the drop at 5-15 points; see the session note).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

MAX_DROP = 0.3
K = 50.0


@pytest.fixture(scope="module")
def hostile(trained_r20, tmp_path_factory):
    import torch

    from edgeres.checkpoint import load_checkpoint, save_checkpoint
    from edgeres.export import export_onnx

    loaded = load_checkpoint(trained_r20)
    m = loaded.model
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        before = m(x)
        for stage in (m.layer1, m.layer2, m.layer3):
            for blk in stage:
                c = int(torch.argmax(blk.bn1.bias + blk.bn1.weight.abs()))
                blk.bn1.weight[c] /= K
                blk.bn1.bias[c] /= K
                blk.conv2.weight[:, c] *= K
        torch.testing.assert_close(m(x), before, rtol=1e-3, atol=1e-3 * float(before.abs().max()))
    d = tmp_path_factory.mktemp("qat")
    ck = save_checkpoint(d / "hostile.pt", m, loaded.name, loaded.preprocessing, model_kwargs=loaded.model_kwargs)
    export_onnx(load_checkpoint(ck), d / "hostile.onnx")
    return d, ck, d / "hostile.onnx"


def _meta(path) -> dict:
    return json.loads(next(p.value for p in onnx.load(str(path)).metadata_props if p.key == "edgeres.quantization"))


@pytest.mark.slow
def test_equalization_comes_before_float_layers_and_qat(hostile, cli):
    d, ck, fp32 = hostile
    out = d / "ladder.int8.onnx"
    r = cli("quantize", fp32, "--calib", "builtin", "--num-calib", "256", "--reduce-range", "--val", "builtin",
            "--val-limit", "500", "--max-drop", str(MAX_DROP), "--qat-checkpoint", ck, "--qat-data", "builtin:100",
            "--qat-epochs", "1", "--out", out)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    plain = [line for line in r.stdout.splitlines() if "plain INT8 (" in line]
    assert len(plain) == 2 and "equalized" not in plain[0] and "equalized" in plain[1], r.stdout
    assert "cross-layer equalization kept" in r.stdout and "quantization-aware" not in r.stdout, r.stdout
    meta = _meta(out)
    assert meta["equalize"] is True and meta["equalized_pairs"] == 9 and meta["fallback"]["drop_top1"] <= MAX_DROP
    assert not (d / "ladder.qat.fp32.onnx").exists()  # QAT never ran

    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.data import iter_batches
    from edgeres.evaluate import compare
    from edgeres.pipeline import open_data

    val = open_data("builtin", "val", load_checkpoint(ck).preprocessing, limit=500)
    assert compare(make_runner(fp32), make_runner(out), iter_batches(val, 100)).drop_top1 <= MAX_DROP

    # --no-equalize is honoured: without equalization the bound costs many float layers
    r = cli("quantize", fp32, "--calib", "builtin", "--num-calib", "256", "--reduce-range", "--val", "builtin",
            "--val-limit", "500", "--max-drop", str(MAX_DROP), "--no-equalize", "--out", d / "noeq.int8.onnx")
    assert r.returncode == 0 and "equaliz" not in r.stdout, r.stdout
    meta = _meta(d / "noeq.int8.onnx")
    assert meta["equalize"] is False and len(meta["fallback_layers"]) > 3


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known gap (issue 14): QAT of a few epochs does not recover a weight-scale-"
                   "hostile model; cross-layer equalization does (test above)")
def test_qat_recovers_what_ptq_cannot(hostile, cli):
    d, ck, fp32 = hostile
    out = d / "hostile.int8.onnx"
    r = cli("quantize", fp32, "--calib", "builtin", "--num-calib", "256", "--reduce-range", "--val", "builtin",
            "--val-limit", "500", "--max-drop", str(MAX_DROP), "--qat-checkpoint", ck, "--qat-data", "builtin:100",
            "--qat-epochs", "1", "--no-equalize", "--out", out)
    assert "quantization-aware training" in r.stdout, r.stdout  # PTQ gave up: QAT ran
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    assert "quantization-aware training" in r.stdout
    meta = json.loads(next(p.value for p in onnx.load(str(out)).metadata_props if p.key == "edgeres.quantization"))
    qat = meta["qat"]
    assert qat["before"]["drop_top1"] > MAX_DROP and len(qat["before"]["fallback_layers"]) == 3  # PTQ gave up
    assert meta["fallback"]["drop_top1"] <= MAX_DROP and qat["steps"] >= 10
    assert (d / "hostile.qat.fp32.onnx").is_file() and (d / "hostile.qat.calib.json").is_file()

    # The Q/DQ model is edgeres's own form: uint8 activations, int8 constant 7-bit weights (what TVM's
    # integer rewrite and ONNX Runtime's QLinearConv take).
    m = onnx.load(str(out))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    zps = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.uint8 for z in zps)
    weights = [inits[n.input[0]] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].dtype == np.int8]
    assert len(weights) >= 19 and max(int(np.abs(w).max()) for w in weights) == 63

    # the drop is really met, measured independently on the original FP32 model
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.data import iter_batches
    from edgeres.evaluate import compare
    from edgeres.pipeline import open_data

    val = open_data("builtin", "val", load_checkpoint(ck).preprocessing, limit=500)
    assert compare(make_runner(fp32), make_runner(out), iter_batches(val, 100)).drop_top1 <= MAX_DROP

    tvm = pytest.importorskip("tvm")  # noqa: F841
    from edgeres.backends.tvm import BACKEND
    from edgeres.targets import get_target

    art = BACKEND.compile(out, get_target("x86-64"), d / "tvm", precision="int8")
    assert art.info["conv_kernels"]["packed_int8"] == 19  # every convolution on integer kernels


@pytest.mark.slow
def test_qat_export_keeps_the_learned_ranges(hostile, tmp_path):
    """The Q/DQ model edgeres writes after QAT is the model QAT trained: its activation ranges are the ones the
    fake-quant modules learned (matched to ONNX tensors by value), so ONNX Runtime agrees with PyTorch's
    fake-quantized model on nearly every image (recalibrating instead measured 93-94 % here)."""
    import torch

    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.data import iter_batches
    from edgeres.pipeline import open_data
    from edgeres.quantize.calibrated import prepared_graph
    from edgeres.quantize.qdq import activation_qparams, insert_qdq, plan_quantization
    from edgeres.training.qat import QatOptions, finetune

    d, ck, _ = hostile
    loaded = load_checkpoint(ck)
    res = finetune(loaded, QatOptions("builtin:100"), form="cpu", reduce_range=True, out_onnx=tmp_path / "ft.onnx")
    model, _ = prepared_graph(onnx.load(str(res.onnx)), False)
    plan = plan_quantization(model, "cpu")
    wanted = {plan.tied.get(t, t) for t in plan.tensors}
    assert len(wanted & set(res.ranges)) >= len(wanted) - 2, (len(res.ranges), len(wanted))
    fq_scales = sorted(float(m.scale) for n, m in res.model.named_modules()
                       if type(m).__name__ == "FakeQuantize" and "weight_fake_quant" not in n)
    for lo, hi in res.ranges.values():  # each range gives back a learned scale exactly
        scale, _ = activation_qparams(lo, hi, "cpu")
        assert min(abs(scale - s) / s for s in fq_scales) < 1e-6
    ranges = {t: res.ranges.get(t, (0.0, 8.0)) for t in wanted}
    q = insert_qdq(model, plan, ranges, per_channel=True, reduce_range=True)
    val = open_data("builtin", "val", loaded.preprocessing, limit=300)
    x = np.concatenate([b for b, _ in iter_batches(val, 100)])
    with torch.no_grad():
        fake = res.model(torch.from_numpy(x)).numpy()
    ours = make_runner(q.SerializeToString())(x)
    assert float(np.mean(fake.argmax(1) == ours.argmax(1))) >= 0.96  # measured 0.98
