"""One frozen record of every calibration and quantization setting, and the one place each default lives.

Built once (from the CLI, a target, or in code) and passed down unchanged through
:func:`edgeres.quantize.quantize`, :func:`~edgeres.quantize.fallback.quantize_with_fallback`,
:func:`~edgeres.quantize.sensitivity.analyze` and the pipeline::

    opts = QuantOptions.for_target(target, method="minmax")     # the target's form and weight bits
    opts = QuantOptions(method="entropy", per_channel=False)     # in code
    opts = quant_options(target, method=None, percentile=None)   # CLI values: None = the default
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgeres.errors import UsageError
from edgeres.quantize.calibration import DEFAULT_NUM_BINS, DEFAULT_PERCENTILE, METHODS

AUTO = "auto"
#: every value ``method`` takes: a range method, or ``auto`` (pick the best one per model on held-out images)
METHOD_CHOICES = (AUTO, *METHODS)
BIAS_CORRECTION = ("auto", "on", "off")
DEFAULT_METHOD = AUTO
DEFAULT_FORM = "cpu"
DEFAULT_NUM_CALIB = 512


@dataclass(frozen=True)
class QuantOptions:
    """How to calibrate and quantize.

    ``method``: ``auto`` (default: calibrate once, derive the ranges of every method and keep the
    ones that keep the INT8 model closest to FP32 on held-out calibration images) or one of
    :data:`~edgeres.quantize.calibration.METHODS`. ``form``: the Q/DQ form (``cpu`` | ``tensorrt``).
    ``reduce_range``: 7-bit weights (x86 integer kernels without VNNI). ``bias_correction``:
    ``auto`` (correct each layer's output mean shift where that brings the held-out outputs closer
    to FP32), ``on`` or ``off``. ``equalize``: cross-layer equalization before calibration.
    """

    method: str = DEFAULT_METHOD
    form: str = DEFAULT_FORM
    per_channel: bool = True
    reduce_range: bool = False
    percentile: float = DEFAULT_PERCENTILE
    num_bins: int = DEFAULT_NUM_BINS
    num_calib: int = DEFAULT_NUM_CALIB
    bias_correction: str = "auto"
    equalize: bool = False

    def __post_init__(self) -> None:
        from edgeres.quantize.qdq import check_form

        if self.method not in METHOD_CHOICES:
            raise UsageError(f"unknown calibration method {self.method!r}; choose one of {', '.join(METHOD_CHOICES)}")
        check_form(self.form)
        if not 0.0 < float(self.percentile) <= 100.0:
            raise UsageError(f"percentile must be in (0, 100], got {self.percentile}")
        if int(self.num_bins) < 128:
            raise UsageError(f"num_bins must be at least 128 (2048 recommended), got {self.num_bins}")
        if int(self.num_calib) < 1:
            raise UsageError("--num-calib must be at least 1")
        if self.bias_correction not in BIAS_CORRECTION:
            raise UsageError(f"bias_correction must be one of {', '.join(BIAS_CORRECTION)}, "
                             f"got {self.bias_correction!r}")

    @property
    def symmetric(self) -> bool:
        """Symmetric int8 activations (the tensorrt form) rather than asymmetric uint8."""
        return self.form == "tensorrt"

    @property
    def needs_scoring(self) -> bool:
        """Whether calibration scores candidates on held-out images (auto, or bias correction "auto"/"on")."""
        return self.method == AUTO or self.bias_correction != "off"

    def with_(self, **changes: Any) -> "QuantOptions":
        """A copy with ``changes``; None values are ignored (they mean "keep the default")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def for_target(cls, target: Any, **overrides: Any) -> "QuantOptions":
        """The target's Q/DQ form and weight width, then ``overrides`` (None = keep)."""
        base = cls(form=target.qdq_form, reduce_range=bool(getattr(target, "reduce_range", False)))
        return base.with_(**overrides)

    def settings_key(self) -> str:
        """What changes the Q/DQ model besides the method: the key of ``auto``'s choice in a cache."""
        p = f"/p={self.percentile:g}"
        return (f"{self.form}/pc={int(self.per_channel)}/rr={int(self.reduce_range)}/bc={self.bias_correction}"
                f"/eq={int(self.equalize)}{p}")

    def to_record(self) -> dict[str, Any]:
        """JSON-able record (manifest, ONNX metadata)."""
        return asdict(self)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "QuantOptions":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})


def quant_options(target: Any = None, **values: Any) -> QuantOptions:
    """Options from CLI-style values where None means "the default" (the target's, when given)."""
    if target is not None:
        return QuantOptions.for_target(target, **values)
    return QuantOptions().with_(**values)


__all__ = ["AUTO", "BIAS_CORRECTION", "DEFAULT_METHOD", "DEFAULT_NUM_CALIB", "METHOD_CHOICES", "QuantOptions",
           "quant_options"]
