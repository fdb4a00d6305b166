"""The whole pipeline on a real ResNet-20 trained briefly on the built-in data:
export -> INT8 (the default: --method auto, bias correction where it helps) -> TVM -> validate -> bundle
-> runtime / CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tvm")

INT8_MAX_DROP = 3.0  # stated bound for the INT8 top-1 drop (points) on held-out built-in data


@pytest.fixture(scope="module")
def r20_bundle(trained_r20, tmp_path_factory):
    from edgeres.pipeline import compile_bundle
    from edgeres.quantize import QuantOptions
    from edgeres.targets import get_target

    out = tmp_path_factory.mktemp("bundles") / "r20-x86-int8"
    tgt = get_target("x86-64")
    res = compile_bundle(str(trained_r20), tgt, out, precision="int8", calib="builtin", val="builtin",
                         quant=QuantOptions.for_target(tgt, num_calib=256), max_drop=INT8_MAX_DROP)
    return out, res


def test_bundle_contents_and_manifest(r20_bundle):
    from edgeres.bundle import load_bundle

    out, res = r20_bundle
    names = {p.name for p in out.iterdir()}
    assert {"manifest.json", "model.fp32.onnx", "model.int8.onnx", "calibration.json", "report.json",
            "labels.txt", "artifact"} <= names
    b = load_bundle(out)  # verifies every sha256
    m = b.manifest
    assert m["precision"] == "int8" and m["target"]["name"] == "x86-64"
    assert set(m["files"]) >= {"model.fp32.onnx", "model.int8.onnx", "artifact/model.so"}
    assert m["versions"]["onnxruntime"] and m["versions"]["apache-tvm"] and m["versions"]["torch"]
    assert m["preprocessing"]["input_size"] == [32, 32] and len(m["preprocessing"]["class_names"]) == 10
    assert m["model"]["name"] == "resnet20" and m["model"]["max_abs_diff"] < 1e-3
    q = m["quantization"]
    assert q["requested_method"] == "auto" and q["method"] in ("minmax", "entropy", "percentile", "mse")
    assert q["num_calib"] == 256 and q["num_holdout"] == 64 and "held-out calibration images" in q["auto"]["why"]
    assert set(q["auto"]["scores"]) >= {"minmax", "entropy", "percentile", "mse"}
    assert m["target"]["reduce_range"] is True and m["quantization"]["reduce_range"] is True  # x86: 7-bit weights
    assert {"export", "quantize", "compile", "validate"} <= set(m["timings"])
    assert (out / "labels.txt").read_text().split() == list(b.class_names)


def test_int8_accuracy_within_bound_of_fp32(r20_bundle):
    out, res = r20_bundle
    rep = json.loads((out / "report.json").read_text())
    assert rep["num_images"] == 1000  # builtin val: 100 per class
    assert rep["reference"]["top1"] > 0.5, "the model did not learn (chance is 0.1)"
    assert rep["drop_top1"] <= INT8_MAX_DROP and rep["passed"]
    assert rep["agreement_top1"] >= 0.9
    assert rep["artifact"]["top5"] >= rep["artifact"]["top1"]


def test_tvm_artifact_matches_onnxruntime_on_the_same_qdq_model(r20_bundle):
    """TVM runs Q/DQ as float (quantize -> dequantize -> float conv): it must equal ONNX Runtime
    executing the same graph unfused, and stay close to ORT's integer kernels."""
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.data import iter_batches, open_dataset
    from edgeres.runtime import load

    out, _ = r20_bundle
    pred = load(out)
    assert pred.backend == "tvm"
    ds = open_dataset("builtin", "val", pred.preprocessing, class_names=pred.class_names, limit=64)
    x, _ = next(iter_batches(ds, 64))
    tvm_logits = pred.predict(x)
    ort_float = make_runner(out / "model.int8.onnx", optimization_level="disabled")(x)
    ort_int8 = make_runner(out / "model.int8.onnx")(x)
    scale = np.abs(ort_float).max()
    assert np.median(np.abs(tvm_logits - ort_float)) < 1e-4 * scale
    assert (tvm_logits.argmax(1) == ort_float.argmax(1)).mean() >= 0.98
    assert (tvm_logits.argmax(1) == ort_int8.argmax(1)).mean() >= 0.95
    assert np.abs(tvm_logits - ort_int8).max() < 0.1 * scale


def test_golden_selftest_passes_in_python_and_in_the_cpp_runner(r20_bundle, cli):
    """The bundle checks itself: 8 validation images and the Q/DQ model's ONNX Runtime logits, recorded at
    compile time; the TVM library (integer kernels) must match them within the INT8 tolerance."""
    from edgeres.backends.tvm.cpp_runner import cached_runner, run_cpp_selftest
    from edgeres.selftest import run_selftest

    out, _ = r20_bundle
    res = run_selftest(out)
    assert res.passed, res.line()
    assert res.check.samples == 8 and res.check.max_abs_err < res.check.atol and res.check.decisive_disagree == 0
    r = cli("selftest", out)
    assert r.returncode == 0 and r.stdout.startswith("PASS selftest"), r.stdout + r.stderr
    rec = run_cpp_selftest(cached_runner("host"), out / "artifact" / "model.so", out / "golden",
                           model_shape=(1, 3, 32, 32))
    assert rec["verdict"] == "PASS" and float(rec["max_abs_err"]) == pytest.approx(res.check.max_abs_err, abs=1e-5)


def test_runtime_and_run_command_classify_pngs(r20_bundle, shapes_dir, cli):
    from edgeres.runtime import load

    out, _ = r20_bundle
    imgs = sorted((shapes_dir / "val").glob("*/*.png"))[::4]  # 5 per class
    pred = load(out)
    top = pred.classify(imgs, top_k=5)
    assert len(top) == len(imgs) == 50 and all(len(t) == 5 for t in top)
    assert all(t[0][1] >= t[1][1] >= t[4][1] and sum(p for _, p in t) <= 1.0 + 1e-5 for t in top)
    logits = pred.predict(pred.preprocess(imgs))
    assert [t[0][0] for t in top] == [pred.class_names[i] for i in logits.argmax(1)]
    hits = sum(t[0][0] == img.parent.name for t, img in zip(top, imgs))
    assert hits >= 25  # the model learned (chance: 5 of 50); images read from the ImageFolder tree
    r = cli("run", out, *imgs[:2])
    assert r.returncode == 0, r.stderr
    assert str(imgs[0]) in r.stdout and top[0][0][0] in r.stdout and top[1][0][0] in r.stdout


def test_validate_cli_exit_codes_and_json(r20_bundle, tmp_path, cli):
    out, _ = r20_bundle
    report = tmp_path / "report.json"
    r = cli("validate", out, "--data", "builtin", "--max-drop", "100", "--json", report, "--limit", "300")
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    for key in ("reference", "artifact", "drop_top1", "agreement_top1", "num_images", "passed"):
        assert key in rep
    assert rep["num_images"] == 300 and rep["passed"] is True
    assert 0 <= rep["artifact"]["top1"] <= 1 and 0 <= rep["reference"]["top5"] <= 1


def test_tampered_bundle_is_refused(r20_bundle, tmp_path):
    import shutil

    from edgeres.bundle import load_bundle
    from edgeres.errors import InputError

    out, _ = r20_bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model.int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="model.int8.onnx does not match its sha256"):
        load_bundle(copy)
    (copy / "model.int8.onnx").unlink()
    with pytest.raises(InputError, match="model.int8.onnx is missing"):
        load_bundle(copy)


def test_interrupted_compile_leaves_nothing(trained_r20, tmp_path, monkeypatch):
    import edgeres.backends.onnxruntime as ortb
    from edgeres.pipeline import compile_bundle

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ortb, "compile", boom)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        compile_bundle(str(trained_r20), "onnxruntime-cpu", out, precision="fp32")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_accuracy_regression_exits_1_and_fallback_repairs_it(fragile_r20, tmp_path, cli):
    """Plain min/max INT8 breaks the INT8-hostile model. Without fallback, compile writes the bundle
    with the failing report and exits 1, and validate exits 1; with fallback (the default when
    --val is given) and --no-equalize compile keeps the harmful layer in FP32 and meets --max-drop."""
    common = ["--target", "onnxruntime-cpu", "--precision", "int8", "--calib", "builtin", "--num-calib", "128",
              "--method", "minmax", "--val", "builtin", "--val-limit", "300", "--max-drop", "1.0"]
    plain = tmp_path / "plain"
    r = cli("compile", fragile_r20, *common, "--no-fallback", "--out", plain)
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-2000:])
    assert "top-1 dropped" in r.stderr and "Traceback" not in r.stderr
    rep = json.loads((plain / "report.json").read_text())
    assert rep["passed"] is False and rep["drop_top1"] > 1.0
    r = cli("validate", plain, "--data", "builtin", "--limit", "300", "--max-drop", "1.0", "--json", tmp_path / "v.json",
            "--junit", tmp_path / "ci" / "junit.xml", "--summary", tmp_path / "ci" / "summary.md")
    v = json.loads((tmp_path / "v.json").read_text())
    assert r.returncode == 1 and v["passed"] is False
    import xml.etree.ElementTree as ET

    case = ET.parse(tmp_path / "ci" / "junit.xml").getroot().find("testsuite/testcase[@name='top-1 drop']")
    assert f"{v['drop_top1']:.2f} points, more than --max-drop 1" in case.find("failure").get("message")
    assert "FAILED" in (tmp_path / "ci" / "summary.md").read_text().splitlines()[0]
    r = cli("validate", plain, "--data", "builtin", "--limit", "300", "--max-drop", "100")
    assert r.returncode == 0

    fixed = tmp_path / "fixed"  # float layers only: equalization alone would repair this model (test_fallback.py)
    r = cli("compile", fragile_r20, *common, "--no-equalize", "--out", fixed)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    m = json.loads((fixed / "manifest.json").read_text())
    fb = m["quantization"]["fallback"]
    assert fb["baseline_drop_top1"] > 1.0 and fb["drop_top1"] <= 1.0 and 1 <= len(fb["layers"]) <= 3
    assert fb["equalization"] is None and m["quantization"]["equalize"] is False
    assert m["validation"]["passed"] is True
    # the self-test checks the artifact against the deployed model, not accuracy: both bundles pass it
    for bundle in (plain, fixed):
        r = cli("selftest", bundle)
        assert r.returncode == 0 and "PASS selftest" in r.stdout, r.stdout + r.stderr
