"""--method auto and bias correction, in real ONNX Runtime, on small models built with onnx.helper.

The auto test model has "a few outlier activations" that decide the class: channel 0 of its only
convolution fires rarely (a high threshold) but strongly, and the classifier reads it as "class 0".
Entropy calibration clips those rare values (they are a tiny part of the histogram), so INT8 loses
class 0; min/max or MSE keep them. ``auto`` must find that on held-out calibration images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeres.backends.onnxruntime import make_runner
from edgeres.quantize import QuantOptions, quantize
from edgeres.quantize.calibrated import calibrate
from edgeres.quantize.collect import iter_tensors
from edgeres.quantize.qdq import prepare_model

SIZE, K = 8, 5


def spiky_model(path: Path, threshold: float = 2.6, gain: float = 50.0, seed: int = 0) -> Path:
    """conv(3->8) -> relu -> global pool -> fc. Channel 0 = gain * relu(unit-norm filter . x - threshold):
    rare spikes (~0.5 % of positions on N(0, 1) images); fc: class 0 = 50 * pooled channel 0 - 8."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32)
    w0 = rng.normal(size=(3, 3, 3))
    w[0] = gain * w0 / np.linalg.norm(w0)
    b = np.zeros(8, np.float32)
    b[0] = -gain * threshold
    wf = rng.normal(size=(K, 8)).astype(np.float32)
    wf[:, 0], wf[0, :], wf[0, 0] = 0.0, 0.0, 50.0
    bf = np.zeros(K, np.float32)
    bf[0] = -8.0
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(x, n) for x, n in ((w, "w"), (b, "b"), (wf, "wf"), (bf, "bf"))]
    graph = helper.make_graph(nodes, "spiky", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", K])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)


CALIB = images(512, 1)


def calib():
    return [CALIB[i: i + 64] for i in range(0, 512, 64)]


def disagreement(fp32: Path, int8: Path, x: np.ndarray) -> float:
    """Top-1 points lost against the FP32 model's own predictions (its labels)."""
    return 100.0 * float(np.mean(make_runner(fp32)(x).argmax(1) != make_runner(int8)(x).argmax(1)))


def test_auto_beats_entropy_on_rare_decisive_activations(tmp_path):
    fp32 = spiky_model(tmp_path / "spiky.onnx")
    val = images(1000, 2)
    assert 0.05 < np.mean(make_runner(fp32)(val).argmax(1) == 0) < 0.2  # class 0 = "a spike fired"
    cache = tmp_path / "calib.json"
    auto = quantize(fp32, tmp_path / "auto.onnx", calib, data_fingerprint="n01", cache_path=cache)
    # what the default was before auto: entropy, calibrated on all the images
    entropy = quantize(fp32, tmp_path / "entropy.onnx", calib, data_fingerprint="n01",
                       options=QuantOptions(method="entropy", bias_correction="off"))
    lost_entropy, lost_auto = disagreement(fp32, entropy.path, val), disagreement(fp32, auto.path, val)
    assert lost_entropy - lost_auto > 1.0, (lost_entropy, lost_auto, auto.auto["why"])
    assert auto.method != "entropy" and auto.options.method == "auto"
    scores = auto.auto["scores"]
    assert set(scores) >= {"minmax", "entropy", "percentile", "mse"} and auto.auto["holdout_images"] == 128
    assert scores["entropy"]["kl"] > scores[auto.method]["kl"] and auto.method in auto.auto["why"]
    # what auto chose, and why, is in the calibration cache and in the model's metadata
    choices = json.loads(cache.read_text())["choices"]
    key = next(k for k in choices if k.startswith("auto/"))
    assert choices[key]["method"] == auto.method and "held-out" in choices[key]["why"]
    meta = json.loads(next(p.value for p in onnx.load(str(auto.path)).metadata_props
                           if p.key == "edgeres.quantization"))
    assert meta["method"] == auto.method and meta["requested_method"] == "auto" and meta["num_holdout"] == 128
    # a second run takes the choice from the cache: no image is run again
    again = quantize(fp32, tmp_path / "again.onnx", None, data_fingerprint="n01", cache_path=cache)
    assert again.cache_hit and again.method == auto.method


def test_auto_without_images_or_choice_is_refused(tmp_path):
    from edgeres.errors import UsageError

    fp32 = spiky_model(tmp_path / "spiky.onnx")
    cache = tmp_path / "calib.json"
    quantize(fp32, tmp_path / "mm.onnx", calib, data_fingerprint="n01", cache_path=cache,
             options=QuantOptions(method="minmax", bias_correction="off"))
    with pytest.raises(UsageError, match="--method auto needs calibration images"):
        quantize(fp32, tmp_path / "auto.onnx", None, data_fingerprint="n01", cache_path=cache)


def _mean_errors(reference, model, x: np.ndarray, outputs: list[str]) -> dict[str, float]:
    """Per tensor: mean over channels of |mean(model) - mean(reference)| (means over images and positions)."""
    sums = {}
    for which, m in (("ref", reference), ("q", model)):
        for _, _, v in iter_tensors(m, outputs, [x]):
            for o in outputs:
                axes = tuple(d for d in range(v[o].ndim) if d != 1)
                sums[which, o] = sums.get((which, o), 0.0) + v[o].astype(np.float64).sum(axis=axes)
    return {o: float(np.mean(np.abs(sums["q", o] - sums["ref", o]))) / len(x) for o in outputs}


def test_bias_correction_reduces_each_layers_output_mean_error(tmp_path):
    """A model with a measurable shift: per-tensor 7-bit weights and activation ranges clipped at the 99th
    percentile (clipping lowers the means). Bias correction must cut the per-layer output mean error."""
    from tests.unit.test_quantize_cache import small_resnet

    fp32 = small_resnet(tmp_path / "m.onnx")
    x = [np.random.default_rng(i).normal(size=(64, 3, 8, 8)).astype(np.float32) for i in range(8)]
    common = {"method": "percentile", "percentile": 99.0, "per_channel": False, "reduce_range": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        off = calibrate(fp32, lambda: x, options=QuantOptions(**common, bias_correction="off"), data_fingerprint="d")
        on = calibrate(fp32, lambda: x, options=QuantOptions(**common, bias_correction="on"), data_fingerprint="d")
    assert not off.bias and set(on.bias) == {"stem", "conv1", "conv2", "fc"}
    reference = prepare_model(onnx.load(str(fp32)))
    outputs = [n.output[0] for n in reference.graph.node if n.op_type in ("Conv", "Gemm")]
    fresh = np.random.default_rng(99).normal(size=(256, 3, 8, 8)).astype(np.float32)  # not the calibration images
    before = _mean_errors(reference, off.build(), fresh, outputs)
    after = _mean_errors(reference, on.build(), fresh, outputs)
    shifted = [o for o in outputs if before[o] > 0.015]  # measurable: well above the estimate's noise
    assert len(shifted) >= 3, before
    assert all(after[o] < 0.75 * before[o] for o in shifted), (before, after)
    assert sum(after[o] for o in shifted) < 0.5 * sum(before[o] for o in shifted), (before, after)
    assert all(after[o] < 1.2 * before[o] for o in outputs), (before, after)  # no layer made worse
    # the correction is an ONNX rewrite: the corrected biases are in the Q/DQ model every backend gets
    corrected = {t.name.split(".")[0] for t in on.build().graph.initializer if t.name.endswith("bias_corrected_int32")}
    producer = {n.output[0]: n.name for n in reference.graph.node}
    assert {producer[o] for o in shifted} <= corrected


def test_auto_with_too_few_images_to_score_says_so(tmp_path):
    fp32 = spiky_model(tmp_path / "spiky.onnx")
    with pytest.warns(UserWarning, match="--method auto: 10 held-out calibration images are too few.*percentile"):
        res = quantize(fp32, tmp_path / "few.onnx", lambda: [CALIB[:40]], data_fingerprint="few")
    assert res.method == "percentile" and "too few" in res.auto["why"] and res.num_calib == 40


def test_bias_reference_comes_from_the_calibration_pass(tmp_path):
    """The FP32 means bias correction compares against are taken during the calibration pass (no extra
    pass): they equal a separate FP32 run on the bias images, and the correction is the same either way."""
    from edgeres.quantize.calibrated import _bias_outputs, prepared_graph
    from edgeres.quantize.collect import BIAS_IMAGES, Sample, collect_stats
    from edgeres.quantize.probes import measure_bias, reference_means
    from edgeres.quantize.qdq import calibration_tensors
    from tests.unit.test_quantize_cache import small_resnet

    model, _ = prepared_graph(onnx.load(str(small_resnet(tmp_path / "m.onnx"))), False)
    opts = QuantOptions(method="minmax", bias_correction="on", per_channel=False, reduce_range=True)
    x = [np.random.default_rng(i).normal(size=(24, 3, 8, 8)).astype(np.float32) for i in range(6)]
    sample = Sample()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stats, _ = collect_stats(model, calibration_tensors(model), lambda: x, sample=sample,
                                 means_of=_bias_outputs(model, opts))
    assert sample.bias.shape[0] == BIAS_IMAGES and sample.reference is not None
    separate = reference_means(model, opts, sample.bias)
    assert set(separate) == set(sample.reference) and len(separate) == 4
    for name, means in separate.items():
        np.testing.assert_allclose(sample.reference[name], means, rtol=1e-5, atol=1e-6)
    from edgeres.quantize.calibration import compute_range

    ranges = {t: compute_range(s, "minmax", symmetric=False) for t, s in stats.items()}
    a = measure_bias(model, ranges, opts, sample.bias, sample.reference)
    b = measure_bias(model, ranges, opts, sample.bias)
    assert any(np.any(v) for v in a.values())
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6)
