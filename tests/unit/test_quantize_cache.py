"""The calibration cache: reuse without images, refusal of a stale cache, atomic writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeres.errors import InputError, UsageError
from edgeres.quantize import QuantOptions, quantize
from edgeres.quantize.cache import CACHE_FORMAT


def small_resnet(path: Path, seed: int = 0) -> Path:
    """conv-relu-conv + identity shortcut, relu, global pool, fc: built with onnx.helper."""
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="stem_relu"),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r0"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    inits = [init("w0", 8, 3, 3, 3), init("b0", 8), init("w1", 8, 8, 3, 3, scale=0.15), init("b1", 8),
             init("w2", 8, 8, 3, 3, scale=0.15), init("b2", 8), init("wf", 5, 8), init("bf", 5)]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


BATCHES = [np.random.default_rng(i).normal(size=(50, 3, 8, 8)).astype(np.float32) for i in range(6)]


class Counting:
    """A calib_batches callable that counts how often it is called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return iter(BATCHES)


def must_not_run():
    raise AssertionError("calibration images were run although the cache is valid")


def scales(path: Path) -> dict[str, float]:
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear"}


@pytest.fixture()
def model(tmp_path) -> Path:
    return small_resnet(tmp_path / "m.onnx")


def test_cache_hit_runs_no_images_and_gives_the_same_model(model, tmp_path):
    cache = tmp_path / "calib.json"
    calib = Counting()
    first = quantize(model, tmp_path / "a.onnx", calib, data_fingerprint="set-1", options=QuantOptions(method="entropy"), cache_path=cache)
    assert calib.calls == 1 and not first.cache_hit and first.num_calib == 300
    record = json.loads(cache.read_text())
    assert record["format"] == CACHE_FORMAT and record["data_fingerprint"] == "set-1"
    assert record["num_calib"] == 300 and "entropy/cpu" in record["ranges"]
    assert {"input", "r0", "r1", "c2", "f"} <= set(record["tensors"])

    again = quantize(model, tmp_path / "b.onnx", must_not_run, data_fingerprint="set-1",
                     options=QuantOptions(method="entropy"), cache_path=cache)
    assert again.cache_hit and again.num_calib == 300
    assert scales(again.path) == scales(first.path)
    # calib_batches may be None when the cache is valid
    none = quantize(model, tmp_path / "c.onnx", None, data_fingerprint="set-1", options=QuantOptions(method="entropy"), cache_path=cache)
    assert none.cache_hit and scales(none.path) == scales(first.path)


def test_other_method_and_form_come_from_cached_histograms(model, tmp_path):
    cache = tmp_path / "calib.json"
    base = quantize(model, tmp_path / "mm.onnx", Counting(), data_fingerprint="d",
                    options=QuantOptions(method="minmax"), cache_path=cache)
    # no images: the percentile ranges come from the histograms (bias correction is skipped: nothing to measure on)
    other = quantize(model, tmp_path / "pc.onnx", None, data_fingerprint="d",
                     options=QuantOptions(method="percentile", percentile=99.0, form="tensorrt"), cache_path=cache)
    assert other.cache_hit
    assert scales(other.path) != scales(base.path)
    # the new ranges are stored too, keyed by method, form and the setting that matters
    assert set(json.loads(cache.read_text())["ranges"]) == {"minmax/cpu", "percentile/tensorrt/p=99"}


def test_stale_cache_is_refused(model, tmp_path):
    cache = tmp_path / "calib.json"
    quantize(model, tmp_path / "a.onnx", Counting(), data_fingerprint="set-1", cache_path=cache)
    fix = re.escape("delete it or pass --calib-cache to a new file")
    stale = r"calibration cache .*calib.json was made for another model/data"
    with pytest.raises(InputError, match=rf"{stale} \(data fingerprint.*\); {fix}"):
        quantize(model, tmp_path / "b.onnx", must_not_run, data_fingerprint="set-2", cache_path=cache)
    other_model = small_resnet(tmp_path / "other.onnx", seed=1)
    with pytest.raises(InputError, match=rf"was made for another model/data \(model sha256.*\); {fix}"):
        quantize(other_model, tmp_path / "b.onnx", must_not_run, data_fingerprint="set-1", cache_path=cache)
    with pytest.raises(InputError, match=rf"num_bins=2048, not 1024; {fix}"):
        quantize(model, tmp_path / "b.onnx", must_not_run, data_fingerprint="set-1",
                 options=QuantOptions(num_bins=1024), cache_path=cache)
    assert not (tmp_path / "b.onnx").exists()


def test_corrupt_cache_and_missing_data(model, tmp_path):
    cache = tmp_path / "calib.json"
    cache.write_text("{not json")
    with pytest.raises(InputError, match="calibration cache .* is unreadable .*delete it"):
        quantize(model, tmp_path / "a.onnx", must_not_run, data_fingerprint="d", cache_path=cache)
    cache.write_text(json.dumps({"format": CACHE_FORMAT, "model_sha256": "x"}))
    with pytest.raises(InputError, match="unreadable"):
        quantize(model, tmp_path / "a.onnx", must_not_run, data_fingerprint="d", cache_path=cache)
    with pytest.raises(UsageError, match="no calibration data and no valid calibration cache"):
        quantize(model, tmp_path / "a.onnx", None, data_fingerprint="d", cache_path=tmp_path / "new.json")


def test_failed_calibration_writes_nothing(model, tmp_path):
    bad = [b.copy() for b in BATCHES]
    bad[3][0, 0, 0, 0] = np.inf
    cache = tmp_path / "calib.json"
    with pytest.raises(InputError, match="batch 3 has NaN/Inf"):
        quantize(model, tmp_path / "a.onnx", lambda: bad, data_fingerprint="d", cache_path=cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no cache, no model, no temp files
    quantize(model, tmp_path / "a.onnx", Counting(), data_fingerprint="d", cache_path=cache)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "calib.json", "m.onnx"]


def test_external_weights_are_part_of_the_model_identity(tmp_path):
    """A model saved with its weights in a side file: changing only the weights makes the cache stale."""
    d = tmp_path / "ext"
    d.mkdir()
    m = onnx.load(str(small_resnet(tmp_path / "src.onnx")))
    onnx.save(m, str(d / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    cache = tmp_path / "calib.json"
    res = quantize(d / "m.onnx", tmp_path / "a.onnx", Counting(), data_fingerprint="d", cache_path=cache)
    assert not res.cache_hit and len(onnx.load(str(res.path)).graph.initializer) > 0  # weights embedded
    data = bytearray((d / "m.onnx.data").read_bytes())
    data[:4] = np.float32(0.5).tobytes()  # change one weight, leave m.onnx untouched
    (d / "m.onnx.data").write_bytes(bytes(data))
    with pytest.raises(InputError, match="was made for another model/data"):
        quantize(d / "m.onnx", tmp_path / "b.onnx", must_not_run, data_fingerprint="d", cache_path=cache)
