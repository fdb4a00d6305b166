"""Per-layer sensitivity of INT8 quantization: which layers cost accuracy, measured on labelled images.

::

    from edgeres.quantize.sensitivity import analyze
    rep = analyze(Path("m.onnx"), calib, val, data_fingerprint=ds.fingerprint(), mode="fp32-one")
    rep.write_json("sens.json"); rep.plot("sens.png"); console.print(rep.table())

The model is calibrated **once** (:func:`~edgeres.quantize.calibrated.calibrate`, with its
calibration cache); every variant is then built in memory (``Calibrated.build`` with another
``exclude`` set) and run in ONNX Runtime against the FP32 logits
(:class:`~edgeres.quantize.evaluator.Evaluator`), which are computed once too.

Modes, per quantizable layer (Conv/Gemm/MatMul, named as ``quantize(exclude=...)`` expects):

``fp32-one``
    start from the full INT8 model and keep only that layer in FP32: how much
    top-1 and output error it gives back (its *harm*);
``int8-one``
    quantize only that layer: how much top-1 and output error it alone costs.

:func:`~edgeres.quantize.probes.local_errors` is a one-pass proxy: each node's output error
when only its own inputs and weights are quantized, measured on FP32 activations (no extra
model per layer); the accuracy-aware fallback ranks layers with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeres.errors import UsageError
from edgeres.fileio import write_json
from edgeres.quantize.calibrated import Calibrated, calibrate
from edgeres.quantize.evaluator import Evaluator, LabelledBatches, Score
from edgeres.quantize.options import QuantOptions
from edgeres.quantize.probes import local_errors

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = ["LAYER_OPS", "MODES", "LayerSensitivity", "SensitivityReport", "analyze", "measure"]

LAYER_OPS = ("Conv", "Gemm", "MatMul")
MODES = ("fp32-one", "int8-one")
DEFAULT_PROBE_IMAGES = 256


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's variant. ``harm_*``: what the layer costs (fp32-one: what keeping it FP32 gives back)."""

    name: str
    op_type: str
    top1: float
    drop_top1: float  # of the variant vs FP32, points
    harm_top1: float  # points
    output_error: float
    harm_error: float
    agreement: float
    local_error: float


@dataclass
class SensitivityReport:
    """Per-layer sensitivity, rows sorted by harm (top-1 points first, output error breaking ties)."""

    model: str
    mode: str
    method: str
    form: str
    per_channel: bool
    num_images: int
    num_calib: int
    fp32_top1: float
    int8_top1: float  # the full INT8 model
    int8_drop_top1: float
    int8_output_error: float
    rows: list[LayerSensitivity] = field(default_factory=list)
    seconds: float = 0.0
    reduce_range: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def table(self, limit: int | None = None) -> Table:
        """A rich Table of the ``limit`` most harmful layers (all by default)."""
        from rich.table import Table

        gain = "FP32 gives back" if self.mode == "fp32-one" else "costs"
        t = Table(title=f"INT8 sensitivity ({self.mode}, {self.method}, {self.form} form): full INT8 drops "
                        f"{self.int8_drop_top1:.2f} pts, output error {self.int8_output_error:.4f}")
        for col in ("#", "layer", "op", "top-1 drop", f"{gain} (pts)", "output err", f"{gain} (err)", "local err"):
            t.add_column(col, justify="left" if col in ("layer", "op") else "right")
        for i, r in enumerate(self.rows[:limit], 1):
            t.add_row(str(i), r.name, r.op_type, f"{r.drop_top1:.2f}", f"{r.harm_top1:+.2f}", f"{r.output_error:.4f}",
                      f"{r.harm_error:+.4f}", f"{r.local_error:.4f}")
        return t

    def plot(self, path: str | Path, limit: int = 40) -> Path:
        """A PNG bar chart of the ``limit`` most harmful layers (top-1 points and output error)."""
        from edgeres.plots import barh_panels

        rows = self.rows[:limit]
        what = "kept FP32 (gain)" if self.mode == "fp32-one" else "only INT8 (cost)"
        return barh_panels(
            path, [r.name for r in rows],
            [(f"top-1 points, layer {what}", [r.harm_top1 for r in rows]),
             (f"logit error, layer {what}", [r.harm_error for r in rows])],
            title=f"{Path(self.model).name}: INT8 sensitivity ({self.mode}, {self.method}, {self.form}); "
                  f"full INT8 drop {self.int8_drop_top1:.2f} pts",
        )


def _check(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown sensitivity mode {mode!r}; choose one of {', '.join(MODES)}")


def measure(cal: Calibrated, ev: Evaluator, layers: Sequence[str], mode: str, *, base: Score | None = None,
            local: dict[str, float] | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> list[LayerSensitivity]:
    """Score one variant per layer and return the rows sorted by harm (most harmful first)."""
    _check(mode)
    base = base or ev.score(cal.build())
    everything = set(cal.plan().nodes)
    rows = []
    for i, name in enumerate(layers):
        if progress is not None:
            progress(i, len(layers), name)
        s = ev.score(cal.build({name} if mode == "fp32-one" else everything - {name}))
        if mode == "fp32-one":
            harm_top1, harm_err = base.drop_top1 - s.drop_top1, base.output_error - s.output_error
        else:
            harm_top1, harm_err = s.drop_top1, s.output_error
        rows.append(LayerSensitivity(name, cal.op_type(name), s.top1, s.drop_top1, harm_top1, s.output_error,
                                     harm_err, s.agreement, (local or {}).get(name, float("nan"))))
    rows.sort(key=lambda r: (-round(r.harm_top1, 6), -r.harm_error))
    return rows


def analyze(
    fp32_onnx: Path,
    calib_batches: Callable[[], Iterable[np.ndarray]] | None,
    val_batches_fn: LabelledBatches,
    *,
    data_fingerprint: str | None,
    options: QuantOptions | None = None,
    cache_path: Path | None = None,
    mode: str = "fp32-one",
    layers: Sequence[str] | None = None,
    max_val_images: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> SensitivityReport:
    """Per-layer INT8 sensitivity of ``fp32_onnx`` on labelled ``val_batches_fn()`` batches.

    Calibrates once (reusing ``cache_path`` when valid for this model and data), then
    scores one in-memory Q/DQ variant per layer (see the module doc for ``mode``).
    ``layers`` defaults to every quantized Conv/Gemm/MatMul; ``progress(i, n, name)``
    is called before each variant.
    """
    _check(mode)
    options = options or QuantOptions()
    if max_val_images is not None and max_val_images < 1:
        raise UsageError(f"max_val_images must be at least 1, got {max_val_images}")
    t0 = time.perf_counter()
    cal = calibrate(Path(fp32_onnx), calib_batches, options=options, data_fingerprint=data_fingerprint,
                    cache_path=cache_path)
    quantized = cal.nodes()
    if layers is None:
        layers = cal.nodes(LAYER_OPS)
    unknown = [n for n in layers if n not in quantized]
    if unknown:
        raise UsageError(f"not a quantized layer: {', '.join(unknown[:3])}; quantized layers look like: "
                         f"{', '.join(quantized[:3])}")
    ev = Evaluator(Path(fp32_onnx), val_batches_fn, max_images=max_val_images)
    base = ev.score(cal.build())
    local = local_errors(cal, [ev.inputs[:DEFAULT_PROBE_IMAGES]], list(layers))
    rows = measure(cal, ev, list(layers), mode, base=base, local=local, progress=progress)
    return SensitivityReport(
        model=str(fp32_onnx), mode=mode, method=cal.method, form=options.form, per_channel=options.per_channel,
        num_images=ev.num_images, num_calib=cal.num_calib, fp32_top1=ev.ref_top1, int8_top1=base.top1,
        int8_drop_top1=base.drop_top1, int8_output_error=base.output_error, rows=rows,
        seconds=time.perf_counter() - t0, reduce_range=options.reduce_range,
    )
