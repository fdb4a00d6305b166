"""The QAT fallback: post-training quantization first, quantization-aware fine-tuning when it cannot do.

1. :func:`~edgeres.quantize.fallback.quantize_with_fallback` with at most
   :data:`~edgeres.training.qat.MAX_PTQ_FALLBACK` float layers (calibration choice included: the
   options' ``auto`` method and bias correction);
2. if the bound is still broken: :func:`edgeres.training.qat.finetune` on the training images,
   then the same PTQ + fallback on the fine-tuned model, its drop measured against the
   **original** FP32 model. The fine-tuned FP32 ONNX and its calibration cache are written
   next to ``out`` (:func:`qat_files`); the record says before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgeres.errors import AccuracyRegression, UsageError
from edgeres.quantize.fallback import FallbackResult, quantize_with_fallback
from edgeres.quantize.options import QuantOptions



def qat_files(out: Path) -> tuple[Path, Path]:
    """Where the fine-tuned FP32 model and its calibration cache go: beside ``out``, named after its first
    name part (``model.int8.onnx`` -> ``model.qat.fp32.onnx``, ``model.qat.calib.json``)."""
    base = Path(out).name.split(".")[0] or "model"
    return Path(out).with_name(f"{base}.qat.fp32.onnx"), Path(out).with_name(f"{base}.qat.calib.json")


def _summary(fb: FallbackResult) -> dict[str, Any]:
    return {"drop_top1": round(fb.drop_top1, 4), "baseline_drop_top1": round(fb.baseline_drop_top1, 4),
            "fallback_layers": list(fb.fallback_layers), "passed": fb.passed}


def quantize_with_qat(fp32_onnx: Path, out: Path, calib_batches: Callable[[], Iterable[np.ndarray]] | None,
                      val_batches_fn: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *, max_drop: float,
                      data_fingerprint: str | None, options: QuantOptions, cache_path: Path | None,
                      source: Any, qat: Any, exclude: Iterable[str] = (), fallback_precision: str = "fp32",
                      log: Callable[[str], None] = lambda s: None, equalize_fallback: bool = True,
                      ) -> tuple[FallbackResult, dict[str, Any] | None]:
    """(the fallback result, the QAT record or None when PTQ met the bound). ``source``: the edgeres
    checkpoint's LoadedModel; ``qat``: :class:`~edgeres.training.qat.QatOptions`."""
    from edgeres.training.qat import MAX_PTQ_FALLBACK, finetune

    common = {"max_drop": max_drop, "data_fingerprint": data_fingerprint, "options": options, "exclude": exclude,
              "fallback_precision": fallback_precision, "max_rounds": MAX_PTQ_FALLBACK, "log": log,
              "equalize_fallback": equalize_fallback}
    try:
        return quantize_with_fallback(fp32_onnx, out, calib_batches, val_batches_fn, cache_path=cache_path,
                                      **common), None
    except AccuracyRegression as e:
        before = e.result  # type: ignore[attr-defined]
    log(f"post-training quantization cannot meet --max-drop {max_drop} with <= {MAX_PTQ_FALLBACK} float layers "
        f"(drop {before.drop_top1:.2f} points); quantization-aware fine-tuning for {qat.epochs} epoch(s) on {qat.data}")
    qat_onnx, qat_cache = qat_files(out)
    if qat_onnx.exists():
        raise UsageError(f"{qat_onnx} exists; edgeres writes the fine-tuned model there and never overwrites a file: "
                         "move it or choose another --out")
    res = finetune(source, qat, form=options.form, reduce_range=options.reduce_range, per_channel=options.per_channel,
                   out_onnx=qat_onnx, log=log)
    record = {"data": qat.data, "epochs": res.epochs, "steps": res.steps, "images": res.images, "lr": qat.lr,
              "seconds": round(res.seconds, 1), "last_loss": round(res.last_loss, 4), "onnx": qat_onnx.name,
              "calibration_cache": qat_cache.name, "learned_ranges": len(res.ranges), "before": _summary(before)}
    # The network adapted to its fake-quant ranges and weights: keep those ranges (minmax where none
    # matched), and no bias correction or equalization (both would pull it back towards the FP32 weights).
    after_common = {**common, "options": options.with_(method="minmax", bias_correction="off", equalize=False)}
    try:
        fb = quantize_with_fallback(res.onnx, out, calib_batches, val_batches_fn, cache_path=qat_cache,
                                    reference_onnx=fp32_onnx, record={"qat": record}, range_overrides=res.ranges,
                                    **after_common)
    except AccuracyRegression as e:
        after = e.result  # type: ignore[attr-defined]
        err = AccuracyRegression(
            f"top-1 drop is {after.drop_top1:.2f} points after quantization-aware training too (before: "
            f"{before.drop_top1:.2f}; limit {max_drop}); train more (--qat-epochs), raise --max-drop or use fp32")
        err.result = after  # type: ignore[attr-defined]
        raise err from None
    record["after"] = _summary(fb)
    log(f"QAT: top-1 drop {before.drop_top1:.2f} -> {fb.drop_top1:.2f} points (limit {max_drop})")
    return fb, record
