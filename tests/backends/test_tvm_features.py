"""A feature-extractor bundle (``--task features``) on TVM: the library returns every stage output
(a Relax tuple), INT8 on the integer kernels, each output compared with ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")


@pytest.mark.slow
def test_tvm_int8_feature_bundle_returns_every_output(tmp_path):
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.pipeline import compile_bundle
    from edgeres.runtime import load

    out = tmp_path / "r20-features-tvm"
    res = compile_bundle("resnet20", "x86-64-host", out, weights="random", precision="int8", calib="builtin",
                         quant={"num_calib": 64}, val="builtin", val_limit=32, task="features")
    info = json.loads((out / "artifact" / "model.tvm.json").read_text())["info"]
    assert info["output_shapes"] == [[1, 16, 32, 32], [1, 32, 16, 16], [1, 64, 8, 8]]
    assert info["conv_kernels"]["packed_int8"] > 0  # integer kernels, although stage outputs are graph outputs
    assert [o.name for o in res.report.outputs] == ["c2", "c3", "c4"]
    assert all(o.mean_cosine > 0.99 for o in res.report.outputs), res.report.outputs

    pred = load(out)
    assert pred.backend == "tvm"
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)  # 3 runs of the batch-1 library
    feats = pred.features(x)
    ref = make_runner(out / "model.int8.onnx", optimization_level="disabled").run_all(x)  # Q/DQ as float, like TVM
    assert list(feats) == ["c2", "c3", "c4"]
    for (name, got), want in zip(feats.items(), ref):
        assert got.shape == want.shape, name
        scale = float(np.abs(want).max())
        assert np.median(np.abs(got - want)) < 1e-3 * scale, name
        assert np.abs(got - want).max() < 0.05 * scale, name
