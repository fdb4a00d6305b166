"""INT8 quantization as an ONNX-level stage: FP32 ONNX + calibration images -> explicit Q/DQ ONNX.

::

    from edgeres.quantize import QuantOptions, quantize
    res = quantize(Path("m.onnx"), Path("m.int8.onnx"), lambda: batches, data_fingerprint=ds.fingerprint(),
                   options=QuantOptions(form="tensorrt"), cache_path=Path("m.calib.json"))

Modules: :mod:`~edgeres.quantize.options` (the one options record and its defaults),
:mod:`~edgeres.quantize.calibration` (range methods), :mod:`~edgeres.quantize.collect`
(running the FP32 model on calibration batches), :mod:`~edgeres.quantize.calibrated`
(calibrate once, build any variant), :mod:`~edgeres.quantize.auto` (``--method auto`` and
bias correction's choice), :mod:`~edgeres.quantize.probes` (per-layer probes: local error,
bias shift), :mod:`~edgeres.quantize.equalize` (cross-layer equalization),
:mod:`~edgeres.quantize.qdq` (Q/DQ placement and insertion), :mod:`~edgeres.quantize.cache`
(the reusable calibration cache).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Iterable

import numpy as np

from edgeres.errors import UsageError
from edgeres.fileio import atomic_path
from edgeres.quantize.calibration import METHODS
from edgeres.quantize.collect import tensor_errors
from edgeres.quantize.options import METHOD_CHOICES, QuantOptions
from edgeres.quantize.qdq import FORMS

if TYPE_CHECKING:  # pragma: no cover
    from edgeres.quantize.calibrated import Calibrated

QUANT_METADATA_KEY = "edgeres.quantization"

__all__ = [
    "FORMS",
    "METHODS",
    "METHOD_CHOICES",
    "QUANT_METADATA_KEY",
    "QuantOptions",
    "QuantizeResult",
    "read_quantization_metadata",
    "quantize",
    "tensor_errors",
    "write_qdq",
]


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` wrote and how. ``method`` is the range method used (``auto``'s pick)."""

    path: Path
    cache_path: Path | None
    method: str
    options: QuantOptions
    num_calib: int
    num_quantized_nodes: int
    excluded: tuple[str, ...]
    calib_seconds: float
    cache_hit: bool
    bias_correction: bool = False
    num_holdout: int = 0  # of num_calib: held out of the ranges, to score candidates on
    auto: dict[str, Any] = field(default_factory=dict)  # auto's scores and why (empty for a fixed method)

    @property
    def form(self) -> str:
        return self.options.form

    @property
    def per_channel(self) -> bool:
        return self.options.per_channel

    @property
    def reduce_range(self) -> bool:
        return self.options.reduce_range


def quantize(
    fp32_onnx: Path,
    out: Path,
    calib_batches: Callable[[], Iterable[np.ndarray]] | None,
    *,
    data_fingerprint: str | None,
    options: QuantOptions | None = None,
    cache_path: Path | None = None,
    exclude: AbstractSet[str] = frozenset(),
) -> QuantizeResult:
    """Calibrate ``fp32_onnx`` and write its explicit Q/DQ INT8 form to ``out``.

    ``calib_batches()`` yields NCHW float32 batches (the caller limits their number);
    it may be None only when ``cache_path`` holds a valid cache for this model and
    data. ``exclude`` names nodes kept in FP32. ``options`` (default :class:`QuantOptions`)
    holds the method, Q/DQ form (see :mod:`edgeres.quantize.qdq`), weight width, bias
    correction and equalization.
    """
    from edgeres.quantize.calibrated import calibrate

    options = options or QuantOptions()
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if out.resolve() == fp32_onnx.resolve():
        raise UsageError(f"the INT8 output {out} would overwrite the FP32 model; choose another output path")
    cal = calibrate(fp32_onnx, calib_batches, options=options, data_fingerprint=data_fingerprint,
                    cache_path=cache_path, exclude=exclude)
    return write_qdq(cal, out, exclude)


def write_qdq(cal: "Calibrated", out: Path, exclude: Iterable[str] = (), extra: dict[str, Any] | None = None
              ) -> QuantizeResult:
    """Write ``cal.build(exclude)`` to ``out`` (atomically) with its ``edgeres.quantization`` record
    (plus ``extra`` fields)."""
    import onnx

    excluded = tuple(sorted(set(exclude)))
    qmodel = cal.build(excluded)
    _set_metadata(qmodel, {**cal.record(excluded), **(extra or {})})
    try:
        onnx.checker.check_model(qmodel)
    except onnx.checker.ValidationError as e:  # a bug in the insertion, not a user error
        raise RuntimeError(f"Q/DQ model failed the ONNX checker: {e}") from e
    with atomic_path(Path(out)) as tmp:
        onnx.save(qmodel, str(tmp))
    return QuantizeResult(
        path=Path(out), cache_path=cal.cache_path, method=cal.method, options=cal.options, num_calib=cal.num_calib,
        num_quantized_nodes=len(cal.plan(excluded).nodes), excluded=excluded, calib_seconds=cal.calib_seconds,
        cache_hit=cal.cache_hit, bias_correction=bool(cal.bias), num_holdout=cal.num_holdout,
        auto={k: v for k, v in cal.choice.items() if k != "bias"},
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
