"""Feature extractors (``--task features``): a ResNet's stage outputs c2..c5 for a detector,
exported, quantized (every output calibrated), compiled and validated per output against FP32."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest

from edgeres.task import ONNX_TASK_KEY


def _outputs(path):
    m = onnx.load(str(path))
    dims = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    meta = {p.key: p.value for p in m.metadata_props}
    return dims, json.loads(meta[ONNX_TASK_KEY]) if ONNX_TASK_KEY in meta else None


def test_imagenet_resnet_exports_c2_to_c5_at_strides_4_to_32(tmp_path):
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.export import export_onnx, resolve_source

    res = export_onnx(resolve_source("resnet18", "random"), tmp_path / "r18.onnx", task="features")
    dims, task = _outputs(res.path)
    assert list(dims) == ["c2", "c3", "c4", "c5"]
    assert [(o["stage"], o["stride"], o["channels"]) for o in task["outputs"]] == [
        ("layer1", 4, 64), ("layer2", 8, 128), ("layer3", 16, 256), ("layer4", 32, 512)]
    outs = make_runner(res.path).run_all(np.zeros((2, 3, 224, 224), np.float32))
    assert [o.shape for o in outs] == [(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14), (2, 512, 7, 7)]
    assert res.preprocessing.class_names == ()  # a backbone has no classes


def test_cifar_resnet_maps_its_three_stages_and_refuses_c5(cli_main, tmp_path):
    out = tmp_path / "r20f.onnx"
    r = cli_main("export", "resnet20", "--weights", "random", "--task", "features", "--features", "c3,c4", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "c3 (layer2, stride 2, 32 ch)" in r.stdout
    dims, task = _outputs(out)
    assert dims == {"c3": ["N", 32, 16, 16], "c4": ["N", 64, 8, 8]} and task["kind"] == "features"
    from edgeres.errors import UsageError
    from edgeres.export import export_onnx, resolve_source

    src = resolve_source("resnet20", "random")
    with pytest.raises(UsageError, match=r"3 stages \(c2,c3,c4\)"):
        export_onnx(src, out, task="features", features="c5")
    with pytest.raises(UsageError, match="--features needs --task features"):
        export_onnx(src, out, features="c3")


@pytest.fixture(scope="module")
def feature_bundle(tmp_path_factory):
    """A random-weight ResNet-20 backbone (c2..c4) compiled INT8 for ONNX Runtime, compared on 64 images."""
    from edgeres.pipeline import compile_bundle

    out = tmp_path_factory.mktemp("feat") / "r20-features"
    res = compile_bundle("resnet20", "onnxruntime-cpu", out, weights="random", precision="int8", calib="builtin",
                         quant={"num_calib": 64}, val="builtin", val_limit=64, task="features")
    return out, res


def test_feature_bundle_records_the_task_and_calibrates_every_output(feature_bundle):
    from edgeres.bundle import load_bundle

    out, res = feature_bundle
    b = load_bundle(out)
    assert b.task.output_names == ("c2", "c3", "c4")
    assert b.manifest["task"]["outputs"][2] == {"name": "c4", "stage": "layer3", "stride": 4, "channels": 64}
    q = onnx.load(str(out / "model.int8.onnx"))
    assert [o.name for o in q.graph.output] == ["c2", "c3", "c4"]
    dq_outputs = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized_convs = [n.name for n in q.graph.node if n.op_type == "Conv" and n.input[0] in dq_outputs]
    for stage in ("layer1", "layer2", "layer3"):  # every stage behind an output was calibrated and quantized
        assert any(f"/{stage}/" in name for name in quantized_convs), (stage, quantized_convs)
    rep = json.loads((out / "report.json").read_text())
    assert rep["task"] == "features" and rep["num_images"] == 64 and rep["passed"]
    assert [o["name"] for o in rep["outputs"]] == ["c2", "c3", "c4"]
    assert [o["shape"] for o in rep["outputs"]] == [[16, 32, 32], [32, 16, 16], [64, 8, 8]]
    for o in rep["outputs"]:
        assert 0.99 < o["mean_cosine"] <= 1.0 and 0.0 < o["rel_error"] < 0.15


def test_runtime_returns_every_output_of_a_feature_bundle(feature_bundle):
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.errors import UsageError
    from edgeres.runtime import load

    out, _ = feature_bundle
    pred = load(out)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    feats = pred.features(x)
    ref = make_runner(out / "model.int8.onnx").run_all(x)
    assert list(feats) == ["c2", "c3", "c4"]
    for got, want in zip(feats.values(), ref):
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-4)
    with pytest.raises(UsageError, match="feature extractor"):
        pred.classify([np.zeros((32, 32, 3), np.uint8)])


def test_validate_feature_bundle_gates_on_min_cosine(feature_bundle, cli_main, tmp_path):
    out, _ = feature_bundle
    junit = tmp_path / "j.xml"
    r = cli_main("validate", out, "--data", "builtin", "--limit", "16", "--min-cosine", "0.999999", "--junit", junit)
    assert r.returncode == 1, r.stderr
    assert "below --min-cosine 0.999999" in r.stderr and "relative error" in r.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["cosine c2", "cosine c3", "cosine c4", "selftest"]
    assert cases[-1].find("failure") is None and cases[-1].find("skipped") is None  # golden outputs reproduced
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases) >= 1
    r = cli_main("validate", out, "--data", "builtin", "--max-drop", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--min-cosine" in r.stderr


def test_an_onnx_with_feature_outputs_needs_task_features(feature_bundle, cli_main, tmp_path):
    """A backbone ONNX from elsewhere (no edgeres task record) is refused as a classifier and
    accepted with --task features, its outputs read from the graph."""
    out, _ = feature_bundle
    m = onnx.load(str(out / "model.fp32.onnx"))
    for p in list(m.metadata_props):
        if p.key == ONNX_TASK_KEY:
            m.metadata_props.remove(p)
    foreign = tmp_path / "backbone.onnx"
    onnx.save(m, str(foreign))
    r = cli_main("compile", foreign, "--target", "onnxruntime-cpu", "--precision", "fp32", "--out", tmp_path / "b1")
    assert r.returncode == 2 and "--task features" in r.stderr and not (tmp_path / "b1").exists()
    from edgeres.pipeline import compile_bundle

    compile_bundle(str(foreign), "onnxruntime-cpu", tmp_path / "b2", precision="fp32", task="features",
                   val="builtin", val_limit=8)
    task = json.loads((tmp_path / "b2" / "manifest.json").read_text())["task"]
    assert [(o["name"], o["stride"], o["stage"]) for o in task["outputs"]] == [
        ("c2", 1, None), ("c3", 2, None), ("c4", 4, None)]
    rep = json.loads((tmp_path / "b2" / "report.json").read_text())
    assert all(o["mean_cosine"] > 0.99999 for o in rep["outputs"])  # FP32 artifact vs FP32
