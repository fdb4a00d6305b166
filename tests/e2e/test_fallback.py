"""Accuracy-aware fallback on a real ResNet-20 made INT8-hostile (the fragile_r20 fixture):
plain min/max per-tensor INT8 breaks a 0.5-point bound, the fallback meets it with a few layers float."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import pytest

from edgeres.errors import AccuracyRegression, UsageError
from edgeres.quantize import QUANT_METADATA_KEY, QuantOptions, quantize, read_quantization_metadata
from edgeres.quantize.fallback import quantize_with_fallback

MAX_DROP = 0.5
CONV2 = "/layer1/layer1.0/conv2/Conv"  # reads the 1000x outlier channel
SETTINGS = {"options": QuantOptions(method="minmax", form="cpu", per_channel=False)}


@pytest.fixture(scope="module")
def setup(fragile_r20, tmp_path_factory):
    """The fragile model's FP32 ONNX, 128 calibration and 300 labelled val images, a shared calibration cache."""
    from edgeres.checkpoint import load_checkpoint
    from edgeres.data import iter_batches, open_dataset
    from edgeres.export import export_onnx

    d = tmp_path_factory.mktemp("fallback")
    loaded = load_checkpoint(fragile_r20)
    fp32 = d / "fragile.fp32.onnx"
    export_onnx(loaded, fp32)
    cal = open_dataset("builtin", "calib", loaded.preprocessing, limit=128, allow_unlabelled=True)
    val = open_dataset("builtin", "val", loaded.preprocessing, limit=300)
    return {
        "fp32": fp32, "dir": d, "cache": d / "calib.json", "fingerprint": cal.fingerprint(),
        "calib": lambda: (x for x, _ in iter_batches(cal, 32)), "val": lambda: iter_batches(val, 100),
    }


def fallback(s, out: Path, **kw):
    """The float-layer fallback alone (equalization, which fixes this model by itself, is tested below)."""
    kw.setdefault("max_drop", MAX_DROP)
    kw.setdefault("equalize_fallback", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "only 128 calibration images"
        return quantize_with_fallback(s["fp32"], out, s["calib"], s["val"], data_fingerprint=s["fingerprint"],
                                      cache_path=s["cache"], **{**SETTINGS, **kw})


def drop(s, int8: Path) -> float:
    """Top-1 drop measured independently: evaluate.compare with ONNX Runtime runners."""
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.evaluate import compare

    return compare(make_runner(s["fp32"]), make_runner(int8), s["val"]()).drop_top1


@pytest.fixture(scope="module")
def result(setup):
    return fallback(setup, setup["dir"] / "fragile.int8.onnx")


def test_plain_int8_breaks_the_bound(setup, result):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        q = quantize(setup["fp32"], setup["dir"] / "plain.onnx", None, data_fingerprint=setup["fingerprint"],
                     cache_path=setup["cache"], **SETTINGS)
    plain = drop(setup, q.path)
    assert plain > MAX_DROP
    assert result.baseline_drop_top1 == pytest.approx(plain)
    assert result.reports[0].drop_top1 == pytest.approx(plain) and not result.reports[0].passed


def test_fallback_meets_the_bound_with_few_layers(setup, result):
    assert result.passed and result.drop_top1 <= MAX_DROP
    assert CONV2 in result.fallback_layers and len(result.fallback_layers) <= 3
    assert result.rounds >= len(result.fallback_layers) and len(result.reports) == result.rounds + 1
    assert result.ranking[0][0] in result.fallback_layers and not result.all_fell_back
    assert result.num_candidates > 20  # every quantized node of ResNet-20 was a candidate
    # The written model really is within the bound, measured independently, and keeps them float.
    assert drop(setup, result.path) == pytest.approx(result.drop_top1)
    m = onnx.load(str(result.path))
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    conv2 = next(n for n in m.graph.node if n.name == CONV2)
    assert producer.get(conv2.input[0]) != "DequantizeLinear"
    assert sum(n.op_type == "QuantizeLinear" for n in m.graph.node) > 15  # the rest stays INT8


def test_metadata_records_the_fallback(result):
    rec = read_quantization_metadata(onnx.load(str(result.path)))
    assert rec["fallback_layers"] == list(result.fallback_layers)  # in fallback order
    fb = rec["fallback"]
    assert fb["max_drop"] == MAX_DROP and fb["precision"] == "fp32" and fb["rounds"] == result.rounds
    assert fb["drop_top1"] == pytest.approx(result.drop_top1, abs=1e-3)
    assert fb["baseline_drop_top1"] == pytest.approx(result.baseline_drop_top1, abs=1e-3)
    assert fb["val_images"] == 300 and rec["method"] == "minmax" and rec["per_channel"] is False
    json.dumps(result.to_dict())  # serialisable for the manifest


def test_unmeetable_bound_raises_exit_code_1_and_writes_nothing(setup):
    out = setup["dir"] / "never.onnx"
    with pytest.raises(AccuracyRegression, match="after 0 fallback round") as e:
        fallback(setup, out, max_rounds=0)
    assert e.value.exit_code == 1 and not out.exists()
    assert e.value.result.baseline_drop_top1 > MAX_DROP and not e.value.result.passed
    # Even all-float cannot beat FP32 by 5 points: every layer falls back, then it fails.
    with pytest.raises(AccuracyRegression, match="even with all .* quantized layers kept float") as e:
        fallback(setup, out, max_drop=-5.0, step=1000)
    r = e.value.result
    assert r.all_fell_back and r.rounds == 1 and abs(r.drop_top1) < 0.7 and not out.exists()


def test_plain_int8_within_a_loose_bound_needs_no_fallback_fp16_recorded(setup):
    r = fallback(setup, setup["dir"] / "loose.onnx", max_drop=100.0, fallback_precision="fp16")
    assert r.passed and r.rounds == 0 and r.fallback_layers == () and r.ranking == []
    rec = json.loads(next(p.value for p in onnx.load(str(r.path)).metadata_props if p.key == QUANT_METADATA_KEY))
    assert rec["fallback_layers"] == [] and rec["fallback"]["precision"] == "fp16"


def test_bad_options(setup):
    for kw, msg in [({"step": 0}, "at least 1 layer"), ({"fallback_precision": "int4"}, "fallback precision"),
                    ({"max_drop": float("nan")}, "finite"), ({"rank": "random"}, "ranking"),
                    ({"max_rounds": -1}, "max_rounds")]:
        with pytest.raises(UsageError, match=msg):
            fallback(setup, setup["dir"] / "x.onnx", **kw)
    with pytest.raises(UsageError, match="overwrite the FP32 model"):
        fallback(setup, setup["fp32"])


def test_equalization_is_tried_before_float_layers(setup):
    """By default a broken bound first tries the cross-layer-equalized graph: on this model (one channel
    x1000 between two convolutions) it meets the bound with no float layer, and the record says so."""
    res = fallback(setup, setup["dir"] / "equalized.int8.onnx", equalize_fallback=True)
    assert res.passed and res.fallback_layers == () and res.rounds == 0
    eq = res.equalization
    assert eq["kept"] and eq["pairs"] > 0 and eq["drop_before"] > MAX_DROP >= eq["drop_after"], eq
    rec = read_quantization_metadata(onnx.load(str(res.path)))
    assert rec["equalize"] is True and rec["fallback"]["equalization"] == eq
    assert drop(setup, res.path) == pytest.approx(res.drop_top1) and res.drop_top1 <= MAX_DROP
