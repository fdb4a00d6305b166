"""edgeres debug on real bundles of the INT8-hostile ResNet-20 (the fragile_r20 fixture): the injected bad
layer (layer1.0's conv2, reading the 1000x channel) is ranked first, and --bisect finds it alone."""

from __future__ import annotations

import json

import pytest

CONV2 = "/layer1/layer1.0/conv2/Conv"  # the layer the fixture made hostile


@pytest.fixture(scope="module")
def ort_bundle(fragile_r20, tmp_path_factory):
    """Plain min/max INT8 of the fragile model on ONNX Runtime, no fallback: it breaks (tens of points)."""
    from edgeres.pipeline import compile_bundle
    from edgeres.quantize import QuantOptions

    out = tmp_path_factory.mktemp("debug") / "fragile-ort"
    with pytest.warns(UserWarning, match="calibration images"):
        compile_bundle(str(fragile_r20), "onnxruntime-cpu", out, precision="int8", calib="builtin",
                       quant=QuantOptions(method="minmax", bias_correction="off", num_calib=128))
    return out


def test_debug_ranks_the_injected_bad_layer_first_and_bisect_finds_it(ort_bundle, cli, tmp_path):
    r = cli("debug", ort_bundle, "--data", "builtin", "--images", "48", "--bisect", "--limit", "300",
            "--max-drop", "1.0", "--json", tmp_path / "d.json", "--plot", tmp_path / "d.png")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "d.json").read_text())
    rows = rep["layers"]
    assert rows[0]["name"] == CONV2 and rows[0]["op_type"] == "Conv"
    assert rows[0]["alone_snr_db"] < 5.0 and all(r["alone_snr_db"] > 20.0 for r in rows[1:])
    assert rows[0]["levels_per_std"] < 1.0  # the outlier channel stretches its input range
    assert rep["suspects"][0]["name"] == CONV2 and any("--equalize" in f for f in rep["suspects"][0]["fixes"])
    assert "intermediates: ONNX Runtime on model.int8.onnx" in rep["source"]
    assert rep["artifact_check"]["checked"] and rep["artifact_check"]["agreement_top1"] == 1.0
    bs = rep["bisect"]
    assert bs["baseline_drop"] > 10.0 and bs["layers"] == [CONV2] and bs["passed"] and bs["drop_top1"] <= 1.0
    assert [s["phase"] for s in bs["steps"]][:2] == ["baseline", "all float"]
    assert f"--exclude '{CONV2}'" in r.stdout and (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    # the reproduce command really fixes it: compile with that layer kept float meets the bound
    fixed = tmp_path / "fixed"
    r = cli("compile", json.loads((ort_bundle / "manifest.json").read_text())["model"]["source"], "--target",
            "onnxruntime-cpu", "--precision", "int8", "--calib", "builtin", "--num-calib", "128", "--method", "minmax",
            "--bias-correction", "off", "--exclude", CONV2, "--val", "builtin", "--val-limit", "300", "--max-drop", "1.0",
            "--no-fallback", "--out", fixed)
    assert r.returncode == 0, r.stderr[-2000:]


def test_debug_a_tvm_bundle_checks_the_artifact(fragile_r20, tmp_path):
    pytest.importorskip("tvm")
    from edgeres.debug import debug_bundle
    from edgeres.pipeline import compile_bundle
    from edgeres.quantize import QuantOptions
    from edgeres.targets import get_target

    tgt = get_target("x86-64")
    out = tmp_path / "fragile-tvm"
    with pytest.warns(UserWarning):
        compile_bundle(str(fragile_r20), tgt, out, precision="int8", calib="builtin",
                       quant=QuantOptions.for_target(tgt, method="minmax", bias_correction="off", num_calib=128))
    rep = debug_bundle(out, "builtin", images=32)
    assert rep.backend == "tvm" and rep.layers[0].name == CONV2
    c = rep.artifact_check
    assert c["checked"] and c["runner"] == "tvm" and c["agreement_top1"] >= 0.9
    assert c["max_abs_logit_diff"] < 0.05 * c["logit_range"]


def test_debug_refuses_an_fp32_bundle(trained_r20, tmp_path):
    from edgeres.debug import debug_bundle
    from edgeres.errors import UsageError
    from edgeres.pipeline import compile_bundle

    out = tmp_path / "fp32"
    compile_bundle(str(trained_r20), "onnxruntime-cpu", out, precision="fp32")
    with pytest.raises(UsageError, match="nothing is quantized"):
        debug_bundle(out, "builtin")
