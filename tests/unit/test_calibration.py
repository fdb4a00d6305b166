"""Range methods of edgeres.quantize.calibration against hand-computed / reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeres.errors import InputError, UsageError
from edgeres.quantize.calibration import (
    METHODS,
    TensorStats,
    compute_amax,
    compute_range,
    entropy_amax,
    minmax_amax,
    mse_amax,
    percentile_amax,
)


def stats_of(x: np.ndarray, num_bins: int = 2048, batches: int = 1) -> TensorStats:
    s = TensorStats(num_bins=num_bins)
    for part in np.array_split(np.asarray(x, dtype=np.float32), batches):
        s.update(part)
    return s


def reference_entropy(hist: np.ndarray, width: float, levels: int = 128, eps: float = 1e-4) -> float:
    """Straight per-candidate loop of TensorRT's entropy calibration (the spec, slowly)."""
    hist = hist.astype(np.float64)
    last = int(np.flatnonzero(hist)[-1]) + 1
    best_kl, best_i = math.inf, last
    for i in range(levels, last + 1):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        edges = (np.arange(levels + 1) * i) // levels
        q = np.zeros(i)
        for j in range(levels):
            s, e = edges[j], edges[j + 1]
            nz = p[s:e] > 0
            if nz.any():
                q[s:e][nz] = hist[s:e].sum() / nz.sum()
        if q.sum() == 0:
            continue
        pn, qn = p / p.sum(), q / q.sum()
        qn[(pn > 0) & (qn == 0)] = eps  # TensorRT-style smoothing of an empty Q bin
        m = pn > 0
        kl = float(np.sum(pn[m] * np.log(pn[m] / qn[m])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * width


def test_minmax_is_exact_over_batches():
    s = stats_of(np.array([0.5, -3.25, 2.0, 0.0, 1.5, -0.125]), batches=3)
    assert s.min == -3.25 and s.max == 2.0 and s.count == 6 and s.zeros == 1
    assert minmax_amax(s) == 3.25
    assert compute_range(s, "minmax", symmetric=True) == (-3.25, 3.25)
    assert compute_range(s, "minmax", symmetric=False) == (-3.25, 2.0)


def test_growing_histogram_rebins_exactly():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, 3000), rng.normal(0, 7, 3000), rng.normal(0, 30, 3000)]).astype(np.float32)
    s = stats_of(x, num_bins=512, batches=3)  # the range grows twice
    assert s.hmax >= np.abs(x).max()
    assert s.hist.sum() == x.size
    direct = np.minimum((np.abs(x) * np.float32(512 / s.hmax)).astype(np.int64), 511)
    expected = np.bincount(direct, minlength=512)
    # identical up to float rounding at a bin edge
    assert np.abs(s.hist - expected).sum() <= 4


def test_percentile_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_t(3, 100_000).astype(np.float32)
    s = stats_of(x, batches=5)
    for p in (90.0, 99.0, 99.99):
        want = np.percentile(np.abs(x), p)
        assert abs(percentile_amax(s, p) - want) <= 2 * s.bin_width, p
    assert percentile_amax(s, 100.0) == minmax_amax(s)
    with pytest.raises(UsageError, match="percentile"):
        percentile_amax(s, 0.0)


def test_mse_on_uniform_data_keeps_nearly_all_of_the_range():
    # U(0,1), 128 levels: clipping at 1-d costs d^3/3, rounding saves ~3d*step^2/12: optimum d ≈ 0.004.
    x = np.random.default_rng(3).uniform(0, 1, 200_000)
    s = stats_of(x, batches=4)
    amax = mse_amax(s)
    assert 0.985 <= amax <= s.amax
    assert abs(amax - (1 - 0.004)) < 0.006


def test_mse_balances_clipping_one_outlier_against_rounding():
    # N values U(0,1) and one at v=3. For t in [1, 3] the error is (v-t)^2 + N t^2/(127^2*12),
    # minimal at t = v / (1 + N/(127^2*12)).
    n = 100_000
    x = np.concatenate([np.random.default_rng(4).uniform(0, 1, n), [3.0]])
    want = 3.0 / (1 + n / (127**2 * 12))
    assert mse_amax(stats_of(x)) == pytest.approx(want, abs=0.01)


def test_entropy_clips_huge_outliers():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 1, 100_000), [150.0, -200.0, 180.0]]).astype(np.float32)
    s = stats_of(x, batches=4)
    amax = entropy_amax(s)
    assert s.amax == 200.0
    assert amax < 0.1 * s.amax
    assert amax > 2.5  # still covers the bulk of N(0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_matches_the_reference_algorithm(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.laplace(0, 1, 50_000), rng.uniform(-60, 60, 20)]).astype(np.float32)
    s = stats_of(x, num_bins=512, batches=2)
    assert entropy_amax(s) == pytest.approx(reference_entropy(s.hist, s.bin_width), rel=1e-9)


def test_methods_differ_on_heavy_tailed_activations():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.standard_t(3, 200_000), [60.0, -80.0, 95.0, 70.0, -100.0]]).astype(np.float32)
    s = stats_of(x, batches=8)
    got = {m: compute_amax(s, m) for m in METHODS}
    assert got["minmax"] == 100.0
    assert got["percentile"] == pytest.approx(np.percentile(np.abs(x), 99.99), abs=2 * s.bin_width)
    values = sorted(got.values())
    for a, b in zip(values, values[1:]):
        assert b > 1.05 * a, got  # every pair differs by more than 5%
    assert got["entropy"] < 0.3 * got["minmax"] and got["percentile"] < 0.3 * got["minmax"]


def test_one_sided_tensor_gets_asymmetric_uint8_range():
    x = np.maximum(np.random.default_rng(7).normal(0, 1, 50_000), 0.0)  # post-ReLU
    s = stats_of(x)
    lo, hi = compute_range(s, "entropy", symmetric=False)
    assert lo == 0.0 and 0 < hi <= s.amax
    lo2, hi2 = compute_range(s, "entropy", symmetric=True)
    assert lo2 == -hi2


def test_nan_or_inf_names_the_tensor():
    s = TensorStats()
    with pytest.raises(InputError, match="'conv1_out'.*NaN/Inf"):
        s.update(np.array([1.0, np.nan]), "conv1_out")
    with pytest.raises(InputError, match="NaN/Inf"):
        s.update(np.array([np.inf]), "x")


def test_all_zero_and_empty_tensors():
    s = stats_of(np.zeros(100))
    assert all(compute_amax(s, m) == 0.0 for m in METHODS)
    s.update(np.array([0.0, 2.0]))  # the range grows from zero
    assert s.hist[0] == 101 and s.hist[-1] == 1 and s.hmax == 2.0
    assert compute_range(TensorStats(), "minmax", symmetric=True) == (0.0, 0.0)


def test_stats_round_trip_through_dict():
    s = stats_of(np.random.default_rng(8).normal(size=5000), num_bins=256)
    t = TensorStats.from_dict(s.to_dict())
    assert np.array_equal(s.hist, t.hist)
    assert (t.min, t.max, t.count, t.zeros, t.hmax) == (s.min, s.max, s.count, s.zeros, s.hmax)
    assert entropy_amax(t) == entropy_amax(s)


def test_bad_method_and_bins():
    s = stats_of(np.ones(10))
    with pytest.raises(UsageError, match="minmax, percentile, entropy, mse"):
        compute_amax(s, "kl")
    with pytest.raises(UsageError, match="num_bins"):
        TensorStats(num_bins=16)
