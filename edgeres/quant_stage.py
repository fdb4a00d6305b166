"""The quantize stage of the pipeline: FP32 ONNX -> INT8 Q/DQ ONNX with one
:class:`~edgeres.quantize.options.QuantOptions`, the accuracy-aware fallback (layers kept
float, then quantization-aware training) and the bundle's manifest record.
``edgeres compile`` reaches it through :func:`edgeres.pipeline.compile_bundle`;
``edgeres quantize`` calls :func:`quantize_stage` directly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from edgeres.errors import UsageError
from edgeres.evaluate import EVAL_BATCH
from edgeres.fileio import atomic_path
from edgeres.quantize.options import QuantOptions
from edgeres.targets import Target


def check_quant_options(tgt: Target, quant: QuantOptions | dict[str, Any] | None) -> QuantOptions:
    """``quant`` (default: the target's; a dict: the target's with these settings, e.g.
    ``{"num_calib": 64}``) checked against the target's Q/DQ form."""
    if quant is None or isinstance(quant, dict):
        return QuantOptions.for_target(tgt, **(quant or {}))
    if quant.form != tgt.qdq_form:
        raise UsageError(f"target {tgt.name} takes the {tgt.qdq_form!r} Q/DQ form, not {quant.form!r}; "
                         "build the options with QuantOptions.for_target(target, ...)")
    return quant


def check_qat(src: Any, precision: str, val: str | None, fallback: bool) -> None:
    """Quantization-aware training needs a trainable source, INT8, and a bound to meet (--val)."""
    from edgeres.checkpoint import LoadedModel

    if precision != "int8":
        raise UsageError(f"--qat-data is for --precision int8, not {precision}")
    if not val or not fallback:
        raise UsageError("--qat-data needs --val DIR (QAT runs only when the --max-drop bound cannot be met "
                         "otherwise) and the fallback on")
    if not isinstance(src, LoadedModel) or not src.source:
        raise UsageError("quantization-aware training needs an edgeres checkpoint as the source "
                         "(edgeres train writes one), not an ONNX file or zoo weights")


def describe_quantization(info: dict[str, Any]) -> str:
    """One phrase for the compile log: the method (auto's pick), bias correction, equalization."""
    method = info["method"] if info.get("requested_method") != "auto" else f"auto -> {info['method']}"
    extras = [x for x, on in (("bias correction", info.get("bias_correction")),
                              ("equalized", info.get("equalize"))) if on]
    return ", ".join([method, *extras])


def log_quantized(log: Callable[[str], None], quant_info: dict[str, Any], tgt: Target, seconds: float,
                  threshold: float | None) -> None:
    fb = quant_info["fallback"]
    log(f"quantized INT8 ({describe_quantization(quant_info)}, {tgt.qdq_form} form) in {seconds:.1f} s"
        + (f"; {len(fb['layers'])} layer(s) kept in {fb['precision']} to meet --max-drop {threshold}"
           if fb and fb["layers"] else ""))


def quantize_into(fp32: Path, int8: Path, cache_dest: Path, tgt: Target, quant: QuantOptions, *,
                  batches: Any, fingerprint: str | None, calib: str | None,
                  calib_cache: str | os.PathLike | None, exclude: tuple[str, ...], val_ds: Any,
                  max_drop: float | None, log: Callable[[str], None], qat: Any = None,
                  source: Any = None, equalize_fallback: bool = True) -> dict[str, Any]:
    """Quantize a bundle's FP32 ONNX into its INT8 ONNX (with the calibration cache ``cache_dest``,
    seeded from and copied back to ``calib_cache``); the manifest record."""
    if calib_cache and Path(calib_cache).is_file():
        shutil.copyfile(calib_cache, cache_dest)
    q, fb_record = quantize_stage(
        fp32, int8, batches, fingerprint, options=quant, cache_path=cache_dest, exclude=exclude,
        fallback_precision=tgt.fallback_precision, val_ds=val_ds, max_drop=max_drop, log=log, qat=qat,
        source=source, equalize_fallback=equalize_fallback)
    if calib_cache and not Path(calib_cache).is_file():
        with atomic_path(calib_cache) as tmp_cache:
            shutil.copyfile(cache_dest, tmp_cache)
    if q.auto.get("why") and fb_record is None:  # the fallback logs the choice itself
        log(f"calibration: {q.auto['why']}")
    return {**q.options.to_record(), "method": q.method, "requested_method": quant.method,
            "bias_correction": q.bias_correction, "auto": q.auto or None, "num_calib": q.num_calib,
            "num_holdout": q.num_holdout,
            "quantized_nodes": q.num_quantized_nodes, "excluded": list(q.excluded), "cache_hit": q.cache_hit,
            "calib_seconds": round(q.calib_seconds, 3), "calib_data": calib, "calib_fingerprint": fingerprint,
            "fallback": fb_record}


def quantize_stage(fp32: Path, out: Path, batches: Any, fingerprint: str | None, *, options: QuantOptions,
                   cache_path: Path | None, exclude: tuple[str, ...] = (), val_ds: Any = None,
                   max_drop: float | None = None, fallback_precision: str = "fp32", qat: Any = None,
                   source: Any = None, log: Callable[[str], None] = lambda s: None, equalize_fallback: bool = True):
    """Quantize with ``options``. With validation data, guarantee ``max_drop`` by keeping the most
    harmful layers in ``fallback_precision`` (``exclude`` is kept float from the start then too), and
    with ``qat`` (:class:`~edgeres.training.qat.QatOptions`) and ``source`` (the checkpoint's model),
    by quantization-aware fine-tuning when more than a few layers would have to stay float.
    ``equalize_fallback``: also try cross-layer equalization before float layers (False: the user
    said ``--no-equalize``). Returns (QuantizeResult, fallback record or None)."""
    from edgeres.quantize import quantize

    if val_ds is None or max_drop is None:
        q = quantize(fp32, out, batches, data_fingerprint=fingerprint, options=options, cache_path=cache_path,
                     exclude=frozenset(exclude))
        return q, None
    from edgeres.data import iter_batches

    common = {"max_drop": max_drop, "data_fingerprint": fingerprint, "options": options, "exclude": exclude,
              "fallback_precision": fallback_precision, "log": log, "equalize_fallback": equalize_fallback}
    if qat is not None:
        from edgeres.quantize.qat_fallback import quantize_with_qat

        fb, qat_record = quantize_with_qat(fp32, out, batches, lambda: iter_batches(val_ds, EVAL_BATCH),
                                           cache_path=cache_path, source=source, qat=qat, **common)
        return fb.quantize_result, {**fb.metadata(), "layers": list(fb.fallback_layers), "qat": qat_record}
    from edgeres.quantize.fallback import quantize_with_fallback

    fb = quantize_with_fallback(fp32, out, batches, lambda: iter_batches(val_ds, EVAL_BATCH), cache_path=cache_path,
                                **common)
    return fb.quantize_result, {**fb.metadata(), "layers": list(fb.fallback_layers)}


__all__ = ["check_qat", "check_quant_options", "describe_quantization", "log_quantized", "quantize_into",
           "quantize_stage"]
