"""The golden self-test's verdicts (edgeres.golden): what passes, what fails, and why."""

from __future__ import annotations

import numpy as np
import pytest

from edgeres.golden import GoldenSet, check, default_tolerance, synthetic_inputs


def _golden(expected: np.ndarray, rtol: float = 0.05, min_cosine: float = 0.995) -> GoldenSet:
    rng = float(expected.max() - expected.min())
    tol = {"rtol": rtol, "atol": rtol * rng, "min_cosine": min_cosine, "logit_range": rng}
    return GoldenSet(np.zeros((len(expected), 3, 4, 4), np.float32), expected, expected, {"tolerance": tol})


@pytest.fixture()
def expected():
    e = np.random.default_rng(0).normal(0, 2, (8, 10)).astype(np.float32)
    e[0, :] = 0.0
    e[0, 3], e[0, 4] = 5.0, 4.99  # sample 0: a near-tie between classes 3 and 4
    return e


def test_identical_and_within_tolerance_pass(expected):
    g = _golden(expected)
    assert check(expected, g).passed
    noisy = expected + np.random.default_rng(1).uniform(-0.5, 0.5, expected.shape).astype(np.float32) * g.atol
    res = check(noisy, g)
    assert res.passed and 0 < res.max_abs_err <= res.atol and res.vs_fp32["top1_agree"] >= 7


def test_a_near_tie_may_flip_but_a_clear_winner_may_not(expected):
    g = _golden(expected)
    tie = expected.copy()
    tie[0, 3], tie[0, 4] = 4.99, 5.0  # within rounding: allowed, reported
    res = check(tie, g)
    assert res.passed and res.top1_agree == 7 and res.decisive_disagree == 0
    flip = expected.copy()
    margins = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2]
    i = int(np.argmax(margins > 2 * g.atol))
    assert margins[i] > 2 * g.atol  # a sample with a clear winner exists
    a, b = np.argsort(expected[i])[-2:]
    flip[i, a], flip[i, b] = expected[i, b], expected[i, a]  # swap a clear winner with the runner-up
    res = check(flip, g)
    assert not res.passed and res.decisive_disagree >= 1 and any("clear top-1" in r for r in res.reasons)


def test_error_beyond_tolerance_nan_and_wrong_shape(expected):
    g = _golden(expected)
    res = check(expected + 2 * g.atol, g)
    assert not res.passed and res.max_abs_err > res.atol and "max abs err" in res.reasons[0]
    bad = expected.copy()
    bad[3, 2] = np.nan
    assert not check(bad, g).passed and "NaN" in check(bad, g).reasons[0]
    from edgeres.errors import InputError

    with pytest.raises(InputError, match="do not belong together"):
        check(expected[:, :5], g)


def test_tolerances_are_ordered_by_precision():
    fp32, fp16, int8 = (default_tolerance(p) for p in ("fp32", "fp16", "int8"))
    assert fp32.rtol < fp16.rtol < int8.rtol and fp32.min_cosine > fp16.min_cosine > int8.min_cosine


def test_synthetic_inputs_are_deterministic_and_normalised():
    from edgeres.preprocessing import cifar_preprocessing

    pre = cifar_preprocessing(32)
    a, b = synthetic_inputs(pre, 4), synthetic_inputs(pre, 4)
    assert a.shape == (4, 3, 32, 32) and a.dtype == np.float32 and np.array_equal(a, b)
    raw = a * np.asarray(pre.std, np.float32)[None, :, None, None] + np.asarray(pre.mean, np.float32)[None, :, None, None]
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5  # images in [0, 1] before normalisation


def test_compile_without_data_uses_synthetic_golden_inputs(tiny_model, tmp_path):
    from edgeres.bundle import load_bundle
    from edgeres.pipeline import compile_bundle
    from edgeres.selftest import run_selftest

    out = tmp_path / "fp32"
    compile_bundle(str(tiny_model), "onnxruntime-cpu", out, precision="fp32")
    m = load_bundle(out).manifest
    assert m["golden"]["source"].startswith("synthetic") and m["golden"]["tolerance"]["precision"] == "fp32"
    assert (out / "golden" / "reference.f32").read_bytes() == (out / "golden" / "expected.f32").read_bytes()
    assert run_selftest(out).passed
