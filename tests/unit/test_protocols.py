"""validate --crops 10 / --scales: ten-crop scores equal a numpy reference; multi-scale only on dynamic sizes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeres.errors import UsageError
from edgeres.preprocessing import Preprocessing

CLASSES = ("a", "b", "c", "d")
PRE = Preprocessing(input_size=(16, 16), resize=20, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), class_names=CLASSES)


def _export(path: Path, dynamic_hw: bool) -> Path:
    import onnx

    from edgeres.preprocessing import write_onnx_preprocessing

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, len(CLASSES))).eval()
    axes = {0: "N", 2: "H", 3: "W"} if dynamic_hw else {0: "N"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": axes, "logits": {0: "N"}})
    m = onnx.load(str(path))
    write_onnx_preprocessing(m, PRE)
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """12 labelled images larger than the crop, of two aspect ratios (a .npz data set)."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(12, 24, 30, 3), dtype=np.uint8)
    images[6:, :, 24:] = 0  # some structure near the right edge: corners differ from the centre
    labels = rng.integers(0, len(CLASSES), 12)
    path = tmp_path_factory.mktemp("protocols") / "data.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(CLASSES))
    return path, images, labels


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from edgeres.pipeline import compile_bundle

    d = tmp_path_factory.mktemp("protocol-bundles")
    out = {}
    for dyn in (False, True):
        onnx_path = _export(d / f"net{int(dyn)}.onnx", dyn)
        out[dyn] = compile_bundle(str(onnx_path), "onnxruntime-cpu", d / f"b{int(dyn)}", precision="fp32").bundle
    return out


def _numpy_ten_crop(img: np.ndarray) -> np.ndarray:
    """The reference: Pillow resize (shorter side 20), numpy slicing for the crops and flips, normalize."""
    from PIL import Image

    h, w = img.shape[:2]
    nh, nw = (20, int(20 * w / h)) if h <= w else (int(20 * h / w), 20)
    r = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
    boxes = [(0, 0), (0, nw - 16), (nh - 16, 0), (nh - 16, nw - 16), (round((nh - 16) / 2), round((nw - 16) / 2))]
    crops = [r[y: y + 16, x: x + 16] for y, x in boxes]
    crops += [c[:, ::-1] for c in crops]
    x = (np.stack(crops) / 255.0 - np.float32(PRE.mean)) / np.float32(PRE.std)
    return x.transpose(0, 3, 1, 2).astype(np.float32)


def test_ten_crop_scores_equal_a_numpy_reference(bundles, data):
    from edgeres.pipeline import validate_bundle
    from edgeres.protocols import Protocol, ten_crop

    path, images, labels = data
    views = np.stack([_numpy_ten_crop(img) for img in images])
    np.testing.assert_allclose(np.stack([ten_crop(img, PRE) for img in images]), views, atol=1e-6)
    assert not np.allclose(views[:, 0], views[:, 4])  # corner and centre crops really differ

    sess = ort.InferenceSession(str(bundles[False] / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": views.reshape(-1, 3, 16, 16)})[0].reshape(len(images), 10, -1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    scores = (e / e.sum(-1, keepdims=True)).mean(1)  # softmax averaged over the ten views
    top1 = float(np.mean(scores.argmax(1) == labels))

    rep = validate_bundle(bundles[False], str(path), protocol=Protocol(crops=10))
    assert rep.num_images == 12 and rep.reference.top1 == pytest.approx(top1) and rep.artifact.top1 == pytest.approx(top1)
    assert rep.agreement_top1 == 1.0 and rep.context["protocol"].startswith("10-crop")
    one = validate_bundle(bundles[False], str(path))
    assert one.context["protocol"] == "1-crop"


def test_multi_scale_needs_a_dynamic_spatial_size(bundles, data):
    from edgeres.pipeline import validate_bundle
    from edgeres.protocols import Protocol, parse_scales, scaled

    path, images, labels = data
    with pytest.raises(UsageError, match="dynamic spatial size.*fixed 16x16 input"):
        validate_bundle(bundles[False], str(path), protocol=Protocol(scales=(16, 24)))
    rep = validate_bundle(bundles[True], str(path), protocol=Protocol(scales=parse_scales("16,24")))
    sess = ort.InferenceSession(str(bundles[True] / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    probs = []
    for img in images:
        outs = [sess.run(None, {"input": scaled(img, PRE, s)})[0][0] for s in (16, 24)]
        assert scaled(img, PRE, 24).shape[2:] == (24, 30)  # the whole image, shorter side 24
        probs.append(np.mean([np.exp(o - o.max()) / np.exp(o - o.max()).sum() for o in outs], axis=0))
    assert rep.reference.top1 == pytest.approx(float(np.mean(np.argmax(probs, 1) == labels)))
    assert rep.context["protocol"].startswith("multi-scale (16, 24")


def test_bad_protocols_are_refused():
    from edgeres.protocols import Protocol, parse_scales

    with pytest.raises(UsageError, match="--crops must be 1 or 10"):
        Protocol(crops=5)
    with pytest.raises(UsageError, match="choose one"):
        Protocol(crops=10, scales=(224,))
    with pytest.raises(UsageError, match="comma-separated"):
        parse_scales("224;256")
