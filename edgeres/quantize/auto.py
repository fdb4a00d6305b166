"""``--method auto`` and bias correction's "where it helps": score candidate Q/DQ models against FP32.

Calibration measures histograms once; the ranges of every method come from them without
another pass. Each candidate (a method, with or without bias correction) is built in memory
and run in ONNX Runtime on the **held-out** calibration images (never used for ranges), and
compared with the FP32 model's outputs there — no labels needed:

* ``kl``: mean KL(softmax(FP32) || softmax(INT8)) per image — the ranking score;
* ``logit_mse``: ``||INT8 - FP32||^2 / ||FP32||^2`` over the logits;
* ``agreement``: fraction of images with the same top-1 class.

The candidate with the lowest ``kl`` wins; a bias-corrected candidate must beat its plain
method by :data:`BIAS_MARGIN` (relative) to be preferred (correction "where it helps").
What was chosen, and the scores that chose it, go to the calibration cache and the manifest.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Mapping

import numpy as np

from edgeres.quantize.calibration import METHODS
from edgeres.quantize.collect import Sample
from edgeres.quantize.options import AUTO, QuantOptions
from edgeres.quantize.probes import measure_bias, reference_means, with_bias
from edgeres.quantize.qdq import insert_qdq, plan_quantization

MIN_HOLDOUT = 16  # fewer held-out images cannot tell candidates apart
FALLBACK_METHOD = "percentile"  # auto's pick when it cannot score (too few calibration images)
BIAS_MARGIN = 0.02  # bias correction must lower the KL by 2 % to count as helping
BIAS_FINALISTS = 1  # bias correction is tried on the best method only (each try costs two short passes)
Ranges = Mapping[str, tuple[float, float]]


def _logits(model: Any, x: np.ndarray) -> np.ndarray:
    from edgeres.backends.onnxruntime import make_runner

    runner = make_runner(model.SerializeToString())
    return np.concatenate([runner(x[i: i + 64]) for i in range(0, len(x), 64)]).astype(np.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def agreement_scores(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """``kl``, ``logit_mse`` and ``agreement`` of logits ``out`` against ``ref`` (see the module doc)."""
    lp, lq = _log_softmax(ref), _log_softmax(out)
    kl = float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))
    mse = float(np.sum((out - ref) ** 2) / max(float(np.sum(ref ** 2)), 1e-30))
    return {"kl": kl, "logit_mse": mse, "agreement": float(np.mean(out.argmax(1) == ref.argmax(1)))}


def _fallback(options: QuantOptions, why: str) -> dict[str, Any]:
    method = FALLBACK_METHOD if options.method == AUTO else options.method
    return {"method": method, "bias_correction": False, "bias": {}, "scores": {}, "why": why}


def choose(model: Any, options: QuantOptions, ranges_of: Callable[[str], Ranges], sample: Sample) -> dict[str, Any]:
    """What to quantize ``model`` with: the record stored in the calibration cache.

    ``{"method", "bias_correction" (bool), "bias" ({node: [per-channel shift]}), "scores"
    ({candidate: {kl, logit_mse, agreement}}), "why", "holdout_images", "bias_images", "seconds"}``.
    """
    t0 = time.perf_counter()
    methods = METHODS if options.method == AUTO else (options.method,)
    want_bias = options.bias_correction != "off" and sample.bias is not None
    if sample.num_holdout < MIN_HOLDOUT and (options.method == AUTO or options.bias_correction == "auto"):
        why = (f"{sample.num_holdout} held-out calibration images are too few to score candidates "
               f"(>= {MIN_HOLDOUT} needed, i.e. >= {4 * MIN_HOLDOUT} calibration images)")
        if options.method == AUTO:
            warnings.warn(f"--method auto: {why}; using {FALLBACK_METHOD}", UserWarning, stacklevel=3)
        rec = _fallback(options, why)
        if options.bias_correction == "on" and sample.bias is not None:
            rec["bias_correction"] = True
            rec["bias"] = _listed(measure_bias(model, ranges_of(rec["method"]), options, sample.bias,
                                               sample.reference))
        return _finish(rec, sample, t0)
    if sample.holdout is None:  # one fixed method, bias correction "on" or "off": nothing to score
        rec = _fallback(options, "no scoring needed")
        if options.bias_correction == "on" and sample.bias is not None:
            rec["bias_correction"] = True
            rec["bias"] = _listed(measure_bias(model, ranges_of(rec["method"]), options, sample.bias,
                                               sample.reference))
        return _finish(rec, sample, t0)
    ref = _logits(model, sample.holdout)
    plan = plan_quantization(model, options.form)
    weights: dict = {}  # every candidate has the model's weights (bias correction changes biases only)

    def score(m: Any, ranges: Ranges) -> dict[str, float]:
        q = insert_qdq(m, plan_quantization(m, options.form) if m is not model else plan, ranges,
                       per_channel=options.per_channel, reduce_range=options.reduce_range, weight_cache=weights)
        return agreement_scores(ref, _logits(q, sample.holdout))

    scores: dict[str, dict[str, float]] = {}
    if options.bias_correction != "on" or not want_bias:
        for m in methods:
            scores[m] = score(model, ranges_of(m))
    biases: dict[str, dict[str, np.ndarray]] = {}
    if want_bias:
        finalists = sorted(methods, key=lambda m: scores[m]["kl"])[:BIAS_FINALISTS] if scores else list(methods)
        fp32_means = sample.reference or reference_means(model, options, sample.bias)  # shared by the finalists
        for m in finalists:
            biases[m] = measure_bias(model, ranges_of(m), options, sample.bias, fp32_means, weight_cache=weights)
            scores[f"{m}+bias"] = score(with_bias(model, biases[m]), ranges_of(m))
    best = _pick(scores, options)
    method, corrected = best.split("+")[0], best.endswith("+bias")
    rec = {"method": method, "bias_correction": corrected, "bias": _listed(biases[method]) if corrected else {},
           "scores": scores, "why": _why(best, scores, sample.num_holdout)}
    return _finish(rec, sample, t0)


def _pick(scores: dict[str, dict[str, float]], options: QuantOptions) -> str:
    """The winning candidate; a ``+bias`` one must beat its plain method by BIAS_MARGIN (when both ran)."""
    def effective(name: str) -> float:
        kl = scores[name]["kl"]
        plain = name.removesuffix("+bias")
        if name.endswith("+bias") and plain in scores and kl > scores[plain]["kl"] * (1.0 - BIAS_MARGIN):
            return float("inf")  # does not help enough
        return kl

    return min(scores, key=lambda n: (effective(n), n.endswith("+bias")))


def _why(best: str, scores: dict[str, dict[str, float]], n: int) -> str:
    s = scores[best]
    others = ", ".join(f"{k} {v['kl']:.3g}" for k, v in sorted(scores.items(), key=lambda kv: kv[1]["kl"])
                       if k != best)
    return (f"{best}: lowest KL(FP32 || INT8) on {n} held-out calibration images ({s['kl']:.3g}; top-1 agreement "
            f"{100 * s['agreement']:.1f} %)" + (f"; others: {others}" if others else ""))


def _listed(bias: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: [float(x) for x in v] for k, v in bias.items()}


def _finish(rec: dict[str, Any], sample: Sample, t0: float) -> dict[str, Any]:
    rec["holdout_images"] = sample.num_holdout
    rec["bias_images"] = 0 if sample.bias is None else int(sample.bias.shape[0])
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


__all__ = ["BIAS_MARGIN", "FALLBACK_METHOD", "MIN_HOLDOUT", "agreement_scores", "choose"]
