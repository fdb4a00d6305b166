"""Activation range methods: minmax, percentile, entropy (KL) and mse, pure numpy.

Statistics are streamed: :class:`TensorStats` keeps the exact min/max of a tensor
and a histogram of ``|x|`` over ``[0, hmax]`` with a fixed number of bins. When a
batch exceeds ``hmax`` the range grows by an integer factor ``k`` and every ``k``
old bins merge into one new bin, so the histogram stays exact (no re-sampling)
and memory stays at ``num_bins`` counts per tensor however many batches come.

Every method returns an *amax* (the clipping threshold on ``|x|``);
:func:`compute_range` turns it into the ``(lo, hi)`` pair a quantizer needs,
symmetric (``(-amax, amax)``) or asymmetric (the observed ``[min, max]`` clipped to
``[-amax, amax]`` and widened to contain 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeres.errors import InputError, UsageError

METHODS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_NUM_BINS = 2048
DEFAULT_PERCENTILE = 99.99
INT8_LEVELS = 128  # positive levels of symmetric int8 (0..127), as TensorRT's entropy calibrator uses
UINT8_LEVELS = 256  # levels of uint8 on a one-sided range [0, amax]


@dataclass
class TensorStats:
    """Streaming statistics of one tensor: exact min/max/count/zeros and a histogram of |x|.

    ``hist[i]`` counts values with ``|x|`` in ``[i*w, (i+1)*w)`` where ``w = hmax/num_bins``
    (the last bin is closed). ``zeros`` counts exact zeros (they quantize without error).
    """

    num_bins: int = DEFAULT_NUM_BINS
    hist: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hmax: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    count: int = 0
    zeros: int = 0

    def __post_init__(self) -> None:
        if self.num_bins < INT8_LEVELS:
            raise UsageError(f"num_bins must be at least {INT8_LEVELS}, got {self.num_bins}")
        if self.hist.size == 0:
            self.hist = np.zeros(self.num_bins, dtype=np.int64)

    @property
    def bin_width(self) -> float:
        return self.hmax / self.num_bins

    def update(self, x: np.ndarray, name: str = "tensor") -> None:
        """Add the values of ``x``; NaN/Inf raise :class:`InputError` naming ``name``."""
        a = np.asarray(x, dtype=np.float32).ravel()
        if a.size == 0:
            return
        lo, hi = float(a.min()), float(a.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError(
                f"tensor {name!r} has NaN/Inf values during calibration; "
                "check the calibration images and their preprocessing (and that the FP32 model does not overflow)"
            )
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += a.size
        absa = np.abs(a)
        self.zeros += int(a.size - np.count_nonzero(a))
        amax = max(-lo, hi)
        if amax > self.hmax:
            self._grow(amax)
        if self.hmax == 0.0:  # everything so far is zero
            self.hist[0] += a.size
            return
        idx = (absa * np.float32(self.num_bins / self.hmax)).astype(np.int64)
        np.minimum(idx, self.num_bins - 1, out=idx)
        self.hist += np.bincount(idx, minlength=self.num_bins)

    def _grow(self, amax: float) -> None:
        """Widen the range to cover ``amax``, merging old bins exactly."""
        if self.hmax == 0.0:
            # Only zeros seen so far (all in bin 0): they stay in bin 0 of the new range.
            self.hmax = amax
            return
        k = int(math.ceil(amax / self.hmax))
        # Floating-point: make sure k*hmax really covers amax.
        while k * self.hmax < amax:
            k += 1
        merged = np.zeros(self.num_bins, dtype=np.int64)
        np.add.at(merged, np.arange(self.num_bins) // k, self.hist)
        self.hist = merged
        self.hmax *= k

    @property
    def amax(self) -> float:
        """max |x| seen (0.0 when nothing was seen)."""
        return 0.0 if self.count == 0 else max(-self.min, self.max)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the histogram sparsely: nonzero bin indices and counts)."""
        nz = np.flatnonzero(self.hist)
        return {
            "num_bins": self.num_bins,
            "hmax": self.hmax,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "count": self.count,
            "zeros": self.zeros,
            "hist_index": nz.tolist(),
            "hist_count": self.hist[nz].tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorStats":
        """Inverse of :meth:`to_dict`; a malformed record raises ValueError/KeyError/TypeError."""
        nb = int(d["num_bins"])
        hist = np.zeros(nb, dtype=np.int64)
        idx = np.asarray(d["hist_index"], dtype=np.int64)
        cnt = np.asarray(d["hist_count"], dtype=np.int64)
        if idx.shape != cnt.shape or (idx.size and (idx.min() < 0 or idx.max() >= nb)):
            raise ValueError("histogram indices out of range")
        hist[idx] = cnt
        count = int(d["count"])
        return cls(
            num_bins=nb,
            hist=hist,
            hmax=float(d["hmax"]),
            min=float(d["min"]) if count else math.inf,
            max=float(d["max"]) if count else -math.inf,
            count=count,
            zeros=int(d["zeros"]),
        )


def minmax_amax(stats: TensorStats) -> float:
    """max |x|, exact."""
    return stats.amax


def percentile_amax(stats: TensorStats, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The ``percentile``-th percentile of |x| from the histogram (linear inside a bin)."""
    if not 0.0 < percentile <= 100.0:
        raise UsageError(f"percentile must be in (0, 100], got {percentile}")
    if stats.count == 0 or stats.hmax == 0.0:
        return stats.amax
    if percentile == 100.0:
        return stats.amax
    cdf = np.cumsum(stats.hist)
    target = percentile / 100.0 * cdf[-1]
    i = int(np.searchsorted(cdf, target, side="left"))
    below = cdf[i - 1] if i > 0 else 0
    frac = (target - below) / max(int(stats.hist[i]), 1)
    return float(min((i + frac) * stats.bin_width, stats.amax))


def entropy_amax(stats: TensorStats, num_levels: int = INT8_LEVELS, eps: float = 1e-4) -> float:
    """TensorRT's entropy calibration: the threshold minimising KL(P || Q).

    For each candidate ``i`` (bins ``[0, i)``, ``i`` from ``num_levels`` to the last
    non-empty bin): P is ``hist[:i]`` with everything above folded into bin ``i-1``;
    Q quantizes ``hist[:i]`` into ``num_levels`` groups of bins (group ``j`` covers
    ``[floor(j*i/L), floor((j+1)*i/L))``) and spreads each group's count evenly over
    the group's bins that are non-empty in P. The threshold is the right edge of the
    best bin. Exact zeros (half of a post-ReLU tensor) are left out: they quantize
    without error at any scale, and as a spike in bin 0 they would make every wide
    group in Q look lossy and drag the threshold down. Where Q is empty but P is not
    (outliers folded into a bin inside a gap of the histogram), Q gets the probability
    ``eps`` there, as TensorRT's smoothing does.

    Vectorised over all candidates: with ``C_j``/``n_j`` the count/non-empty bins of
    group ``j`` and ``P_j`` the count of P in it, ``sum_b p_b log q_b = sum_j P_j
    log(C_j/n_j)``, so each candidate costs O(num_levels) instead of O(num_bins).
    """
    if stats.count == 0 or stats.hmax == 0.0 or stats.count == stats.zeros:
        return stats.amax
    hist = stats.hist.astype(np.float64)
    hist[0] = max(hist[0] - stats.zeros, 0.0)
    # Thresholds past the last non-empty bin only coarsen Q; they are not candidates.
    last = int(np.flatnonzero(hist)[-1]) + 1
    if last <= num_levels:
        return stats.amax
    L = num_levels
    csum = np.concatenate([[0.0], np.cumsum(hist)])
    nzsum = np.concatenate([[0.0], np.cumsum(hist > 0)])
    hlogh = np.concatenate([[0.0], np.cumsum(np.where(hist > 0, hist * np.log(np.maximum(hist, 1.0)), 0.0))])
    total = csum[-1]
    cand = np.arange(L, last + 1)  # i: P covers bins [0, i)
    edges = (np.arange(L + 1)[None, :] * cand[:, None]) // L  # (K, L+1)
    counts = csum[edges[:, 1:]] - csum[edges[:, :-1]]  # C_j
    nonempty = nzsum[edges[:, 1:]] - nzsum[edges[:, :-1]]  # n_j over hist
    outliers = total - csum[cand]
    p_last = hist[cand - 1] + outliers
    # bin i-1 is non-empty in P even when empty in hist if outliers were folded into it
    nonempty[:, -1] += (hist[cand - 1] == 0) & (outliers > 0)
    p_groups = counts.copy()
    p_groups[:, -1] += outliers
    q_total = csum[cand]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(counts) - np.log(np.maximum(nonempty, 1.0))
        # Q empty but P not: only possible in the last group, whose only P mass is bin i-1.
        log_q[:, -1] = np.where(counts[:, -1] > 0, log_q[:, -1], np.log(eps * q_total))
        cross = np.where(p_groups > 0, p_groups * log_q, 0.0).sum(axis=1)
        plogp = hlogh[cand - 1] + np.where(p_last > 0, p_last * np.log(np.maximum(p_last, 1.0)), 0.0)
        kl = (plogp - cross) / total - np.log(total) + np.log(q_total)
    kl = np.where(np.isfinite(kl), kl, np.inf)
    best_i = int(cand[int(np.argmin(kl))])
    return float(min(best_i * stats.bin_width, stats.amax))


def mse_amax(stats: TensorStats, num_levels: int = INT8_LEVELS) -> float:
    """The threshold minimising the expected squared quantization error over the histogram.

    A value ``|x| > amax`` costs ``(|x| - amax)^2`` (clipping); a value inside costs the
    rounding noise ``step^2 / 12`` with ``step = amax / (num_levels - 1)``, except exact
    zeros, which quantize without error. Bin centres stand for their bins; candidates are
    every bin edge.
    """
    if stats.count == 0 or stats.hmax == 0.0:
        return stats.amax
    hist = stats.hist.astype(np.float64)
    nb = stats.num_bins
    w = stats.bin_width
    centers = (np.arange(nb) + 0.5) * w
    centers[-1] = min(centers[-1], stats.amax)
    nonzero = hist.copy()
    nonzero[0] = max(nonzero[0] - stats.zeros, 0.0)
    # suffix sums for the clipping term sum_{c > t} n_c (c - t)^2 = S2 - 2 t S1 + t^2 S0
    s0 = np.cumsum(hist[::-1])[::-1]
    s1 = np.cumsum((hist * centers)[::-1])[::-1]
    s2 = np.cumsum((hist * centers**2)[::-1])[::-1]
    inside_nonzero = np.cumsum(nonzero)  # values in bins [0, i] for threshold edge (i+1)*w
    cand = np.arange(1, nb + 1)
    t = cand * w
    clip = np.zeros(nb)
    clip[:-1] = s2[1:] - 2 * t[:-1] * s1[1:] + t[:-1] ** 2 * s0[1:]
    step = t / (num_levels - 1)
    err = np.maximum(clip, 0.0) + inside_nonzero * step**2 / 12.0
    best = int(np.argmin(err))
    return float(min(t[best], stats.amax))


def compute_amax(
    stats: TensorStats, method: str, *, percentile: float = DEFAULT_PERCENTILE, num_levels: int = INT8_LEVELS
) -> float:
    """The clipping threshold on |x| by ``method`` (one of :data:`METHODS`)."""
    if method == "minmax":
        return minmax_amax(stats)
    if method == "percentile":
        return percentile_amax(stats, percentile)
    if method == "entropy":
        return entropy_amax(stats, num_levels)
    if method == "mse":
        return mse_amax(stats, num_levels)
    raise UsageError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")


def compute_range(
    stats: TensorStats, method: str, *, symmetric: bool, percentile: float = DEFAULT_PERCENTILE
) -> tuple[float, float]:
    """``(lo, hi)`` for a tensor: symmetric int8 ``(-amax, amax)`` or asymmetric uint8.

    The asymmetric range is the observed ``[min, max]`` clipped to ``[-amax, amax]`` and
    widened to contain 0; a one-sided (e.g. post-ReLU) tensor gets the 256 uint8 levels
    when choosing ``amax``, a two-sided one the 128 of each half.
    """
    if stats.count == 0:
        return (0.0, 0.0)
    if symmetric:
        amax = compute_amax(stats, method, percentile=percentile, num_levels=INT8_LEVELS)
        return (-amax, amax)
    one_sided = stats.min >= 0.0 or stats.max <= 0.0
    levels = UINT8_LEVELS if one_sided else INT8_LEVELS
    amax = compute_amax(stats, method, percentile=percentile, num_levels=levels)
    lo = min(max(stats.min, -amax), 0.0)
    hi = max(min(stats.max, amax), 0.0)
    return (float(lo), float(hi))
