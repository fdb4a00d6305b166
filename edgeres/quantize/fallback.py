"""Accuracy-aware INT8: fall back the most harmful layers to float until the top-1 drop is within a bound.

::

    from edgeres.quantize.fallback import quantize_with_fallback
    res = quantize_with_fallback(Path("m.onnx"), Path("m.int8.onnx"), calib, val, max_drop=0.5,
                                 data_fingerprint=ds.fingerprint())
    res.fallback_layers, res.drop_top1

1. Calibrate once and quantize everything; measure the top-1 drop of the Q/DQ model
   against the FP32 model in ONNX Runtime on the validation images. Above ``max_drop``
   (and unless the options already equalize, or ``equalize_fallback=False``): calibrate the
   cross-layer-equalized graph too and keep it when its plain INT8 drops less: one scaling
   channel can ruin every method's ranges, and equalization costs one calibration pass, not
   a float layer (the equalized calibration is not cached: the cache holds one graph).
2. Above ``max_drop``: rank the quantized nodes by harm, by default with the one-pass
   proxy :func:`~edgeres.quantize.sensitivity.local_errors`; ``rank="int8-one"`` or
   ``"fp32-one"`` measure each node's effect on the logits instead (one model per node;
   ``fp32-one`` misses two layers that are only harmful together).
3. Keep the ``step`` most harmful remaining nodes float, rebuild the Q/DQ model in
   memory from the calibration cache, re-measure; repeat until the drop is within
   the bound. A step that makes the drop worse is undone (the layers are quantized again
   and tried once more only when every other candidate has been tried: the ranking is a
   proxy, and a float layer can hurt, e.g. in a QAT model whose weights adapted to INT8).
   Every quantized node is a candidate (Conv/Gemm/MatMul, residual Adds, pooling inputs),
   so with all of them float the model is the FP32 one.

The output's ``edgeres.quantization`` metadata records the fallback layers (in the
order they fell back), the final and the plain-INT8 drop and the fallback precision.
``fallback_precision="fp16"`` (GPU targets) only records the intent: the excluded
nodes stay float in the Q/DQ ONNX. TensorRT 8.x-10.x runs them in FP16 when built with
FP16 allowed; strongly typed TensorRT 11 runs them in FP32 (the ONNX's own type).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.errors import AccuracyRegression, UsageError
from edgeres.evaluate import AccuracyReport
from edgeres.quantize import QuantizeResult, write_qdq
from edgeres.quantize.calibrated import calibrate
from edgeres.quantize.evaluator import Evaluator, LabelledBatches
from edgeres.quantize.options import QuantOptions
from edgeres.quantize.probes import local_errors
from edgeres.quantize.sensitivity import DEFAULT_PROBE_IMAGES, measure

__all__ = ["FALLBACK_PRECISIONS", "RANKINGS", "FallbackResult", "quantize_with_fallback"]

FALLBACK_PRECISIONS = ("fp32", "fp16")
RANKINGS = ("proxy", "fp32-one", "int8-one")


@dataclass
class FallbackResult:
    """What :func:`quantize_with_fallback` did. Drops are top-1 percentage points (FP32 - INT8)."""

    path: Path | None  # None when the bound was not met (nothing written)
    drop_top1: float  # of the final model
    baseline_drop_top1: float  # of plain INT8 (nothing excluded)
    fallback_layers: tuple[str, ...]  # in the order they fell back
    rounds: int  # fallback rounds run (0: plain INT8 met the bound)
    reports: list[AccuracyReport]  # one per evaluated model: [plain INT8, after round 1, ...]
    passed: bool
    max_drop: float
    fallback_precision: str
    rank: str = "proxy"  # how candidates were ranked (see RANKINGS)
    ranking: list[tuple[str, float]] = field(default_factory=list)  # candidates, most harmful first, with score
    num_candidates: int = 0
    all_fell_back: bool = False
    quantize_result: QuantizeResult | None = None
    seconds: float = 0.0
    # the cross-layer-equalization try, when plain INT8 broke the bound: {"kept", "drop_before", "drop_after", "pairs"}
    equalization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        d["reports"] = [r.to_dict() for r in self.reports]
        d["quantize_result"] = None
        if self.quantize_result is not None:
            d["quantize_result"] = {k: (str(v) if isinstance(v, Path) else v)
                                    for k, v in asdict(self.quantize_result).items()}
        return d

    def metadata(self) -> dict[str, Any]:
        """The ``fallback`` record stored in the output's ``edgeres.quantization`` metadata."""
        return {
            "max_drop": self.max_drop, "drop_top1": round(self.drop_top1, 4),
            "baseline_drop_top1": round(self.baseline_drop_top1, 4), "rounds": self.rounds,
            "precision": self.fallback_precision, "val_images": self.reports[0].num_images if self.reports else 0,
            "all_fell_back": self.all_fell_back, "rank": self.rank, "equalization": self.equalization,
        }


def _check_options(max_drop: float, step: int, max_rounds: int | None, fallback_precision: str, rank: str) -> None:
    if not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop):
        raise UsageError(f"--max-drop must be a finite number of top-1 points, got {max_drop!r}")
    if step < 1:
        raise UsageError(f"the fallback step must be at least 1 layer per round, got {step}")
    if max_rounds is not None and max_rounds < 0:
        raise UsageError(f"max_rounds must be >= 0 (or None for no limit), got {max_rounds}")
    if fallback_precision not in FALLBACK_PRECISIONS:
        raise UsageError(f"unknown fallback precision {fallback_precision!r}; choose one of "
                         f"{', '.join(FALLBACK_PRECISIONS)}")
    if rank not in RANKINGS:
        raise UsageError(f"unknown fallback ranking {rank!r}; choose one of {', '.join(RANKINGS)}")


def quantize_with_fallback(
    fp32_onnx: Path,
    out: Path,
    calib_batches: Callable[[], Iterable[np.ndarray]] | None,
    val_batches_fn: LabelledBatches,
    *,
    max_drop: float,
    data_fingerprint: str | None,
    options: QuantOptions | None = None,
    cache_path: Path | None = None,
    step: int = 1,
    max_rounds: int | None = None,
    fallback_precision: str = "fp32",
    rank: str = "proxy",
    max_val_images: int | None = None,
    reference_onnx: Path | None = None,
    exclude: Iterable[str] = (),
    record: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    equalize_fallback: bool = True,
    range_overrides: dict[str, tuple[float, float]] | None = None,
) -> FallbackResult:
    """Quantize ``fp32_onnx`` to ``out`` with a top-1 drop of at most ``max_drop`` points on the val images.

    ``val_batches_fn()`` yields labelled ``(x, y)`` batches (``max_val_images`` caps
    them). Drops are measured against ``reference_onnx`` (default ``fp32_onnx``; the QAT
    fallback quantizes a fine-tuned model but measures against the original). Raises
    :class:`~edgeres.errors.AccuracyRegression` (exit code 1) and writes nothing when the
    bound cannot be met: with every quantized node float, or after ``max_rounds`` rounds;
    the exception's ``result`` attribute holds the :class:`FallbackResult`. ``options`` and
    ``exclude`` (layers float from the start) as for :func:`edgeres.quantize.quantize`; ``record``:
    extra fields for the output's ``edgeres.quantization`` metadata. ``equalize_fallback``: try the
    cross-layer-equalized graph when plain INT8 breaks the bound (see the module doc).
    ``range_overrides``: activation ranges that replace the calibrated ones (a QAT model's learned
    ranges; they hold for this graph only, so equalization is not tried with them).
    """
    _check_options(max_drop, step, max_rounds, fallback_precision, rank)
    options = options or QuantOptions()
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if out.resolve() == fp32_onnx.resolve():
        raise UsageError(f"the INT8 output {out} would overwrite the FP32 model; choose another output path")
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    cal = calibrate(fp32_onnx, calib_batches, options=options, data_fingerprint=data_fingerprint,
                    cache_path=cache_path, exclude=exclude)
    if range_overrides:
        cal.ranges = {**cal.ranges, **{t: r for t, r in range_overrides.items() if t in cal.ranges}}
        equalize_fallback = False
    if cal.choice.get("why"):
        say(f"calibration: {cal.choice['why']}")
    ev = Evaluator(Path(reference_onnx or fp32_onnx), val_batches_fn, max_images=max_val_images)

    first = _plain(cal, ev, list(dict.fromkeys(exclude)), max_drop, say)
    tried = None
    if not first.passed and equalize_fallback and not options.equalize and calib_batches is not None:
        cal, first, tried = _try_equalized(cal, first, fp32_onnx, calib_batches, ev, list(dict.fromkeys(exclude)),
                                           max_drop=max_drop, data_fingerprint=data_fingerprint, say=say)
    result = _fall_back(cal, ev, list(dict.fromkeys(exclude)), max_drop=max_drop, step=step, max_rounds=max_rounds,
                        rank=rank, fallback_precision=fallback_precision, say=say, first=first)
    result.equalization = tried
    excluded, candidates = list(result.fallback_layers), result.num_candidates
    if not result.passed:
        result.seconds = time.perf_counter() - t0
        raise _regression(result)
    if result.all_fell_back:
        warnings.warn(f"every one of the {candidates} quantized layers had to stay float to keep the top-1 "
                      f"drop within {max_drop} points: the model is effectively {fallback_precision}; check the "
                      "calibration data or try another --method", UserWarning, stacklevel=2)
    # The fallback layers keep their order in the record (write_qdq sorts its own list).
    q = write_qdq(cal, out, excluded,
                  extra={**(record or {}), "fallback_layers": list(excluded), "fallback": result.metadata()})
    result.path, result.quantize_result = out, q
    result.seconds = time.perf_counter() - t0
    return result


def _evaluate(cal, ev: Evaluator, excluded: list[str], max_drop: float, round_: int) -> AccuracyReport:
    t = time.perf_counter()
    s = ev.score(cal.build(excluded))
    return ev.report(s, max_drop=max_drop, seconds=time.perf_counter() - t,
                     context={"round": round_, "fallback_layers": list(excluded)})


def _plain(cal, ev: Evaluator, excluded: list[str], max_drop: float, say: Callable[[str], None]) -> AccuracyReport:
    """The plain INT8 model's report (``excluded``, the user's layers, float)."""
    rep = _evaluate(cal, ev, excluded, max_drop, 0)
    say(f"plain INT8 ({cal.method}{' + bias correction' if cal.bias else ''}"
        f"{', equalized' if cal.options.equalize else ''}): top-1 drop {rep.drop_top1:.2f} points (limit {max_drop})")
    return rep


def _try_equalized(cal, first: AccuracyReport, fp32_onnx: Path, calib_batches: Callable[[], Iterable[np.ndarray]],
                   ev: Evaluator, excluded: list[str], *, max_drop: float, data_fingerprint: str | None,
                   say: Callable[[str], None]) -> tuple[Any, AccuracyReport, dict[str, Any]]:
    """Calibrate the cross-layer-equalized graph (same options, not cached); keep whichever plain INT8 drops
    less. (calibrated model, its plain report, the record of the try)."""
    eq = calibrate(fp32_onnx, calib_batches, options=cal.options.with_(equalize=True),
                   data_fingerprint=data_fingerprint, cache_path=None, exclude=excluded)
    record = {"kept": False, "drop_before": round(first.drop_top1, 4), "drop_after": None, "pairs": len(eq.equalized)}
    if not eq.equalized:
        say("cross-layer equalization: no conv -> relu -> conv pair to equalize")
        return cal, first, record
    rep = _plain(eq, ev, excluded, max_drop, say)
    record["drop_after"] = round(rep.drop_top1, 4)
    if rep.drop_top1 < first.drop_top1:
        say(f"cross-layer equalization kept ({len(eq.equalized)} layer pairs): top-1 drop "
            f"{first.drop_top1:.2f} -> {rep.drop_top1:.2f} points")
        return eq, rep, {**record, "kept": True}
    say(f"cross-layer equalization does not help ({rep.drop_top1:.2f} points): not kept")
    return cal, first, record


def _fall_back(cal, ev: Evaluator, excluded: list[str], *, max_drop: float, step: int, max_rounds: int | None,
               rank: str, fallback_precision: str, say: Callable[[str], None],
               first: AccuracyReport | None = None) -> FallbackResult:
    """Evaluate plain INT8 (unless ``first`` is its report), then keep the ``step`` most harmful remaining
    layers float per round until the bound holds (or ``max_rounds`` / the candidates run out); the result
    without path."""
    def evaluate(round_: int) -> AccuracyReport:
        return _evaluate(cal, ev, excluded, max_drop, round_)

    reports = [first if first is not None else _plain(cal, ev, excluded, max_drop, say)]
    candidates = [n for n in cal.nodes() if n not in excluded]
    ranking: list[tuple[str, float]] = []
    if not reports[0].passed and max_rounds != 0:
        ranking = _rank(cal, ev, candidates, rank)
        say("most harmful: " + ", ".join(f"{n} ({v:.3g})" for n, v in ranking[:5]))
    queue = [n for n, _ in ranking]
    deferred: list[str] = []  # layers whose float copy made the drop worse: tried again only at the end
    best = reports[0]
    while not best.passed and (queue or deferred) and (max_rounds is None or len(reports) - 1 < max_rounds):
        forced = not queue  # only layers that hurt are left: keep them float anyway (all float is FP32)
        source = queue if queue else deferred
        take = source[:step]
        del source[:step]
        excluded += take
        rep = evaluate(len(reports))
        reports.append(rep)
        if not forced and rep.drop_top1 > best.drop_top1:
            del excluded[-len(take):]
            deferred += take
            say(f"round {len(reports) - 1}: {', '.join(take)} float makes it worse (top-1 drop "
                f"{rep.drop_top1:.2f} points): quantized again")
            continue
        best = rep
        say(f"round {len(reports) - 1}: {len(excluded)} layer(s) float, top-1 drop {rep.drop_top1:.2f} points")
    final = best
    return FallbackResult(
        path=None, drop_top1=final.drop_top1, baseline_drop_top1=reports[0].drop_top1,
        fallback_layers=tuple(excluded), rounds=len(reports) - 1, reports=reports, passed=final.passed,
        max_drop=max_drop, fallback_precision=fallback_precision, rank=rank, ranking=ranking,
        num_candidates=len(candidates), all_fell_back=bool(candidates) and set(candidates) <= set(excluded),
    )


def _rank(cal, ev: Evaluator, candidates: list[str], rank: str) -> list[tuple[str, float]]:
    """Candidates most harmful first, with their score.

    ``proxy``: local output error (one pass); ``fp32-one`` / ``int8-one``: the logit error
    each node gives back when kept float / costs when quantized alone (one model each).
    """
    if rank == "proxy":
        scores = local_errors(cal, [ev.inputs[:DEFAULT_PROBE_IMAGES]], candidates)
    else:
        scores = {r.name: r.harm_error for r in measure(cal, ev, candidates, rank)}
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _regression(result: FallbackResult) -> AccuracyRegression:
    if result.all_fell_back or result.num_candidates == 0:
        msg = (f"top-1 drop is {result.drop_top1:.2f} points even with all {result.num_candidates} quantized layers "
               f"kept float (limit {result.max_drop}); the limit cannot be met on this data: "
               "raise --max-drop or use --precision fp32")
    else:
        msg = (f"top-1 drop is still {result.drop_top1:.2f} points after {result.rounds} fallback round(s) "
               f"({len(result.fallback_layers)} of {result.num_candidates} layers float; limit {result.max_drop}); "
               "allow more rounds, a larger fallback step or a larger --max-drop")
    err = AccuracyRegression(msg)
    err.result = result  # type: ignore[attr-defined]
    return err
