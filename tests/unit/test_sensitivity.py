"""Per-layer INT8 sensitivity (edgeres.quantize.sensitivity) on a tiny net with one INT8-hostile layer, in real ORT."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgeres.errors import InputError, UsageError
from edgeres.plots import short_label
from edgeres.quantize import QuantOptions, quantize
from edgeres.quantize.evaluator import Evaluator
from edgeres.quantize.sensitivity import analyze

SIZE = 12
NUM_CLASSES = 6
HOSTILE = "/b/Conv"  # node names: torch's exporter names them after the modules
MINMAX = QuantOptions(method="minmax", bias_correction="off")  # the plain calibration the test models


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c, self.bn_c = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_a(self.a(x)))
        x = F.relu(self.bn_b(self.b(x)))
        x = F.relu(self.bn_c(self.c(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def images(n: int, seed: int) -> np.ndarray:
    """A learnable task: a fixed random pattern per class (patterns from seed 0) plus noise."""
    protos = np.random.default_rng(0).normal(size=(NUM_CLASSES, 3, SIZE, SIZE))
    rng = np.random.default_rng(seed)
    return (protos[rng.integers(0, NUM_CLASSES, n)] + rng.normal(scale=1.5, size=(n, 3, SIZE, SIZE))).astype(np.float32)


def labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, NUM_CLASSES, n)  # the draw images() makes first


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Tiny net trained a few steps, made INT8-hostile like the fragile_r20 fixture, plus labelled val images.

    The most active channel k of ``bn_a`` is scaled by 1000 and the matching input channel
    of ``b`` by 1/1000: the FP32 function is unchanged, but ``b``'s input has one channel
    1000x the others, so a min/max activation range (and ``b``'s per-output-channel weight
    scale) crushes the rest. Val labels are the FP32 model's own predictions (top-1 = 100 %).
    """
    torch.manual_seed(0)
    net = Tiny()
    x, y = torch.from_numpy(images(640, 5)), torch.from_numpy(labels(640, 5))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared machine
    try:
        for step in range(40):
            i = torch.arange(step * 32, step * 32 + 32) % 640
            loss = F.cross_entropy(net(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    with torch.no_grad():
        probe = torch.from_numpy(images(8, 9))
        before = net(probe)
        k = int(torch.argmax(net.bn_a.bias + net.bn_a.weight.abs()))
        net.bn_a.weight[k] *= 1000.0
        net.bn_a.bias[k] *= 1000.0
        net.b.weight[:, k] /= 1000.0
        after = net(probe)
    torch.testing.assert_close(after, before, rtol=1e-3, atol=1e-3 * float(before.abs().max()))
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is "legacy"
        torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    val_x = images(300, 1)
    with torch.no_grad():
        val_y = net(torch.from_numpy(val_x)).argmax(1).numpy()
    return path, val_x, val_y


class Calib:
    """128 calibration images in 4 batches; counts how often it is iterated."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self):
        self.calls += 1
        x = images(128, 2)
        return (x[i: i + 32] for i in range(0, 128, 32))


def val_fn(x: np.ndarray, y: np.ndarray):
    return lambda: ((x[i: i + 100], y[i: i + 100]) for i in range(0, len(x), 100))


def run(path: Path, mode: str, **kw):
    calib = kw.pop("calib", Calib())
    p, x, y = path
    with pytest.warns(UserWarning, match="only 128 calibration images"):
        rep = analyze(p, calib, val_fn(x, y), data_fingerprint="tiny-128", options=MINMAX, mode=mode, **kw)
    return rep, calib


@pytest.fixture(scope="module")
def fp32_one(model):
    return run(model, "fp32-one")


def test_hostile_layer_ranks_first_and_calibration_runs_once(fp32_one):
    rep, calib = fp32_one
    assert calib.calls == 1  # one calibration for all the variants
    assert rep.rows[0].name == HOSTILE
    assert {r.name for r in rep.rows} == {"/a/Conv", HOSTILE, "/c/Conv", "/fc/Gemm"}
    assert rep.fp32_top1 == 1.0 and rep.num_images == 300 and rep.num_calib == 128
    assert rep.int8_drop_top1 > 20.0  # the hostile channel breaks plain INT8
    top, rest = rep.rows[0], rep.rows[1:]
    assert top.harm_top1 > 15.0 and top.drop_top1 < 10.0  # keeping it FP32 gives most of it back
    assert top.harm_error > 0.5 * rep.int8_output_error
    assert all(r.harm_top1 < 5.0 and r.harm_error < top.harm_error / 5 for r in rest)
    # The one-pass proxy agrees: the hostile layer's local error dwarfs the others'.
    assert top.local_error > 0.3 and all(r.local_error < top.local_error / 5 for r in rest)


def test_int8_one_mode_ranks_the_hostile_layer_first(model):
    rep, _ = run(model, "int8-one")
    assert rep.rows[0].name == HOSTILE
    assert rep.rows[0].drop_top1 > 15.0  # quantizing only it already breaks the model
    assert all(r.drop_top1 < 5.0 for r in rep.rows[1:])


def test_report_json_table_and_png(fp32_one, tmp_path):
    rep, _ = fp32_one
    d = json.loads(rep.write_json(tmp_path / "sens.json").read_text())
    assert d["mode"] == "fp32-one" and d["method"] == "minmax" and d["rows"][0]["name"] == HOSTILE
    assert {"harm_top1", "harm_error", "drop_top1", "output_error", "local_error"} <= set(d["rows"][0])
    png = rep.plot(tmp_path / "sens.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert rep.table().row_count == 4 and rep.table(limit=2).row_count == 2
    with pytest.raises(UsageError, match="must end in .png"):
        rep.plot(tmp_path / "sens.jpg")


def test_excluding_the_hostile_layer_keeps_it_float_and_fixes_int8(model, fp32_one, tmp_path):
    path, x, y = model
    calib = Calib()
    with pytest.warns(UserWarning):
        q = quantize(path, tmp_path / "q.onnx", calib, data_fingerprint="tiny-128", options=MINMAX,
                     exclude={HOSTILE})
    m = onnx.load(str(q.path))
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    inits = {t.name: t.data_type for t in m.graph.initializer}
    node = next(n for n in m.graph.node if n.name == HOSTILE)
    assert producer.get(node.input[0]) == "Relu"  # reads the float activation, no DequantizeLinear
    assert inits[node.input[1]] == onnx.TensorProto.FLOAT  # float weights
    others = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm") and n.name != HOSTILE]
    assert others and all(producer.get(n.input[0]) == "DequantizeLinear" for n in others)
    score = Evaluator(path, val_fn(x, y)).score(m)
    assert score.drop_top1 == pytest.approx(fp32_one[0].rows[0].drop_top1)  # same model as the fp32-one variant
    assert score.drop_top1 < 10.0


def test_cache_reuse_needs_no_images(model, tmp_path):
    cache = tmp_path / "calib.json"
    first, calib = run(model, "fp32-one", layers=[HOSTILE], cache_path=cache)
    assert calib.calls == 1 and cache.is_file()
    p, x, y = model
    again = analyze(p, None, val_fn(x, y), data_fingerprint="tiny-128", options=MINMAX, layers=[HOSTILE],
                    cache_path=cache)
    assert again.rows == first.rows
    with pytest.raises(InputError, match="made for another model/data"):
        analyze(p, None, val_fn(x, y), data_fingerprint="other", options=MINMAX, cache_path=cache)


def test_bad_input_is_refused_with_a_clear_message(model, tmp_path):
    p, x, y = model
    cache = tmp_path / "c.json"
    with pytest.warns(UserWarning):
        analyze(p, Calib(), val_fn(x[:10], y[:10]), data_fingerprint="f", options=MINMAX, layers=[HOSTILE],
                cache_path=cache)

    def go(val, **kw):
        return analyze(p, None, val, data_fingerprint="f", options=MINMAX, cache_path=cache, **kw)

    bad = x[:100].copy()
    bad[5, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="validation batch 0 has NaN/Inf"):
        go(lambda: iter([(bad, y[:100])]))
    with pytest.raises(InputError, match="no validation images"):
        go(lambda: iter([]))
    with pytest.raises(InputError, match="unlabelled"):
        go(lambda: iter([(x[:4], np.array([0, 1, -1, 2]))]))
    with pytest.raises(InputError, match="outside the model's 6 classes"):
        go(lambda: iter([(x[:2], np.array([0, 6]))]))
    with pytest.raises(UsageError, match="unknown sensitivity mode"):
        go(val_fn(x, y), mode="fp16-one")
    with pytest.raises(UsageError, match="not a quantized layer: nope"):
        go(val_fn(x, y), layers=["nope"])
    with pytest.raises(InputError, match="NaN/Inf"):  # calibration data is checked too
        bad_calib = images(32, 3)
        bad_calib[0, 0, 0, 0] = np.inf
        analyze(p, lambda: iter([bad_calib]), val_fn(x, y), data_fingerprint="g", options=MINMAX)


def test_short_label():
    assert short_label("/layer1/layer1.0/conv2/Conv") == "layer1.0/conv2 (Conv)"
    assert short_label("/fc/Gemm") == "fc (Gemm)"
    assert short_label("Conv_3") == "Conv_3"
    assert len(short_label("/x" * 60 + "/Conv", width=20)) == 20
