"""INT8 quantization as an ONNX-level stage: FP32 ONNX + calibration images -> explicit Q/DQ ONNX.

::

    from edgeres.quantize import quantize
    res = quantize(Path("m.onnx"), Path("m.int8.onnx"), lambda: batches,
                   data_fingerprint=ds.fingerprint, method="entropy", form="tensorrt",
                   cache_path=Path("m.calib.json"))

Modules: :mod:`~edgeres.quantize.calibration` (range methods),
:mod:`~edgeres.quantize.collect` (running the FP32 model on calibration batches),
:mod:`~edgeres.quantize.qdq` (Q/DQ placement and insertion),
:mod:`~edgeres.quantize.cache` (the reusable calibration cache).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Callable, Iterable

import numpy as np

from edgeres.errors import InputError, UsageError
from edgeres.fileio import atomic_path, sha256_file
from edgeres.quantize.cache import CalibCache, load_cache, ranges_key, save_cache
from edgeres.quantize.calibration import DEFAULT_NUM_BINS, DEFAULT_PERCENTILE, METHODS, compute_range
from edgeres.quantize.collect import collect_stats, tensor_errors
from edgeres.quantize.qdq import FORMS, calibration_tensors, check_form, insert_qdq, plan_quantization, prepare_model

if TYPE_CHECKING:  # pragma: no cover
    import onnx

QUANT_METADATA_KEY = "edgeres.quantization"

__all__ = [
    "FORMS",
    "METHODS",
    "QUANT_METADATA_KEY",
    "QuantizeResult",
    "load_onnx",
    "read_quantization_metadata",
    "quantize",
    "tensor_errors",
]


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` wrote and how."""

    path: Path
    cache_path: Path | None
    method: str
    form: str
    per_channel: bool
    num_calib: int
    num_quantized_nodes: int
    excluded: tuple[str, ...]
    calib_seconds: float
    cache_hit: bool
    reduce_range: bool = False  # 7-bit weights (levels -63..63)


def load_onnx(path: Path):
    """Load and check an ONNX file; a missing or corrupt file raises :class:`InputError`."""
    return _load(Path(path))[0]


def _load(path: Path) -> tuple["onnx.ModelProto", list[Path]]:
    """The checked model (external data loaded) and the external data files it uses."""
    from edgeres.onnx_io import load_with_data_files

    return load_with_data_files(path, check=True)


def _digest(path: Path, external: list[Path]) -> str:
    """sha256 of the model file; with external data, of the file's and the data files' hashes."""
    digest = sha256_file(path)
    if not external:
        return digest
    parts = [digest] + [f"{p.name}:{sha256_file(p)}" for p in external]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _check_options(method: str, form: str, percentile: float, num_bins: int) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    check_form(form)
    if not 0.0 < percentile <= 100.0:
        raise UsageError(f"percentile must be in (0, 100], got {percentile}")
    if num_bins < 128:
        raise UsageError(f"num_bins must be at least 128 (2048 recommended), got {num_bins}")


def quantize(
    fp32_onnx: Path,
    out: Path,
    calib_batches: Callable[[], Iterable[np.ndarray]] | None,
    *,
    data_fingerprint: str | None,
    method: str = "entropy",
    form: str = "cpu",
    per_channel: bool = True,
    percentile: float = DEFAULT_PERCENTILE,
    num_bins: int = DEFAULT_NUM_BINS,
    cache_path: Path | None = None,
    exclude: AbstractSet[str] = frozenset(),
    reduce_range: bool = False,
) -> QuantizeResult:
    """Calibrate ``fp32_onnx`` and write its explicit Q/DQ INT8 form to ``out``.

    ``calib_batches()`` yields NCHW float32 batches (the caller limits their number);
    it may be None only when ``cache_path`` holds a valid cache for this model and
    data. ``exclude`` names nodes kept in FP32. See :mod:`edgeres.quantize.qdq` for
    the ``tensorrt`` and ``cpu`` forms. ``reduce_range`` (as ONNX Runtime's): 7-bit
    weights, levels -63..63 stored as int8, for x86 integer kernels without VNNI.
    """
    import onnx

    _check_options(method, form, percentile, num_bins)
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if out.resolve() == fp32_onnx.resolve():
        raise UsageError(f"the INT8 output {out} would overwrite the FP32 model; choose another output path")
    raw, external = _load(fp32_onnx)
    model = prepare_model(raw)
    plan = plan_quantization(model, form, exclude)  # validates the exclude names
    model_sha = _digest(fp32_onnx, external)

    t0 = time.perf_counter()
    cache = None
    if cache_path is not None:
        cache = load_cache(cache_path, model_sha256=model_sha, data_fingerprint=data_fingerprint, num_bins=num_bins)
    cache_hit = cache is not None
    wanted = calibration_tensors(model)
    if cache is not None and any(t not in cache.stats for t in wanted):
        raise InputError(
            f"calibration cache {cache_path} lacks tensors of this model (made by another edgeres version?); "
            "delete it or pass --calib-cache to a new file"
        )
    if cache is None:
        if calib_batches is None:
            raise UsageError(
                "no calibration data and no valid calibration cache; "
                "pass calibration images (or an existing --calib-cache)"
            )
        stats, num_calib = collect_stats(model, wanted, calib_batches, num_bins=num_bins)
        cache = CalibCache(model_sha, data_fingerprint or "", num_bins, num_calib, stats)
    key = ranges_key(method, form, percentile)
    if key not in cache.ranges:
        sym = form == "tensorrt"
        cache.ranges[key] = {
            t: compute_range(s, method, symmetric=sym, percentile=percentile) for t, s in cache.stats.items()
        }
        if cache_path is not None:
            save_cache(cache_path, cache)
    ranges = cache.ranges[key]
    calib_seconds = time.perf_counter() - t0

    qmodel = insert_qdq(model, plan, ranges, per_channel=per_channel, reduce_range=reduce_range)
    excluded = tuple(sorted(exclude))
    _set_metadata(qmodel, {
        "method": method,
        "form": form,
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "num_calib": cache.num_calib,
        "fallback_layers": list(excluded),
        "percentile": percentile if method == "percentile" else None,
        "num_bins": num_bins,
        "source_sha256": model_sha,
        "data_fingerprint": data_fingerprint,
    })
    try:
        onnx.checker.check_model(qmodel)
    except onnx.checker.ValidationError as e:  # a bug in the insertion, not a user error
        raise RuntimeError(f"Q/DQ model failed the ONNX checker: {e}") from e
    with atomic_path(out) as tmp:
        onnx.save(qmodel, str(tmp))
    return QuantizeResult(
        path=out,
        cache_path=Path(cache_path) if cache_path else None,
        method=method,
        form=form,
        per_channel=per_channel,
        num_calib=cache.num_calib,
        num_quantized_nodes=len(plan.nodes),
        excluded=excluded,
        calib_seconds=calib_seconds,
        cache_hit=cache_hit,
        reduce_range=reduce_range,
    )


def _set_metadata(model, record: dict) -> None:
    """Add the ``edgeres.quantization`` record; the FP32 model's metadata_props are already there."""
    for prop in list(model.metadata_props):
        if prop.key == QUANT_METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = QUANT_METADATA_KEY
    entry.value = json.dumps(record)


def read_quantization_metadata(model) -> dict | None:
    """The ``edgeres.quantization`` record of a Q/DQ model, or None for an FP32 model."""
    for prop in model.metadata_props:
        if prop.key == QUANT_METADATA_KEY:
            return json.loads(prop.value)
    return None
