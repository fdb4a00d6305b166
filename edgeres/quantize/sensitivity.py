"""Per-layer sensitivity of INT8 quantization: which layers cost accuracy, measured on labelled images.

::

    from edgeres.quantize.sensitivity import analyze
    rep = analyze(Path("m.onnx"), calib, val, data_fingerprint=ds.fingerprint(), mode="fp32-one")
    rep.write_json("sens.json"); rep.plot("sens.png"); console.print(rep.table())

The model is calibrated **once** (through :func:`edgeres.quantize.quantize` and its
calibration cache); every variant is then built in memory from the cached ranges
(:func:`~edgeres.quantize.qdq.insert_qdq` with another ``exclude`` set) and run in
ONNX Runtime against the FP32 logits, which are computed once too.

Modes, per quantizable layer (Conv/Gemm/MatMul, named as ``quantize(exclude=...)`` expects):

``fp32-one``
    start from the full INT8 model and keep only that layer in FP32: how much
    top-1 and output error it gives back (its *harm*);
``int8-one``
    quantize only that layer: how much top-1 and output error it alone costs.

:func:`local_errors` is a one-pass proxy: each node's output error when only its own
inputs and weights are quantized, measured on FP32 activations (no extra model per
layer); the accuracy-aware fallback ranks layers with it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeres.errors import InputError, UsageError
from edgeres.evaluate import AccuracyReport, TopK, topk_hits
from edgeres.fileio import write_json
from edgeres.quantize import QuantizeResult, load_onnx, quantize, read_quantization_metadata
from edgeres.quantize.cache import load_cache, ranges_key
from edgeres.quantize.calibration import DEFAULT_NUM_BINS, DEFAULT_PERCENTILE
from edgeres.quantize.collect import iter_tensors
from edgeres.quantize.qdq import QuantPlan, activation_qparams, insert_qdq, plan_quantization
from edgeres.quantize.qdq import prepare_model, quantize_weight

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    from rich.table import Table

__all__ = [
    "LAYER_OPS", "MODES", "Calibrated", "Evaluator", "LayerSensitivity", "Score", "SensitivityReport",
    "analyze", "calibrate", "local_errors", "measure",
]

LAYER_OPS = ("Conv", "Gemm", "MatMul")
MODES = ("fp32-one", "int8-one")
DEFAULT_PROBE_IMAGES = 256
EVAL_CHUNK = 64
LabelledBatches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


# --------------------------------------------------------------------------- calibrate once


@dataclass
class Calibrated:
    """A model calibrated once: any Q/DQ variant is built from it in memory, without images."""

    model: onnx.ModelProto  # the prepared FP32 graph (named nodes, BN folded)
    ranges: dict[str, tuple[float, float]]
    form: str
    per_channel: bool
    quant: QuantizeResult  # the calibration run (it wrote the full INT8 model)
    cache_path: Path
    reduce_range: bool = False  # 7-bit weights

    def plan(self, exclude: Iterable[str] = ()) -> QuantPlan:
        return plan_quantization(self.model, self.form, exclude)

    def build(self, exclude: Iterable[str] = ()) -> onnx.ModelProto:
        """The Q/DQ model with ``exclude`` kept float (what ``quantize(exclude=...)`` writes)."""
        return insert_qdq(self.model, self.plan(exclude), self.ranges, per_channel=self.per_channel,
                          reduce_range=self.reduce_range)

    def nodes(self, ops: Sequence[str] | None = None) -> list[str]:
        """Quantized nodes of the full plan, in graph order (only ``ops`` op types if given)."""
        kinds = {n.name: n.op_type for n in self.model.graph.node}
        return [n for n in self.plan().nodes if ops is None or kinds[n] in ops]

    def op_type(self, name: str) -> str:
        return next(n.op_type for n in self.model.graph.node if n.name == name)


def calibrate(
    fp32_onnx: Path, calib_batches: Callable[[], Iterable[np.ndarray]] | None, workdir: Path, *,
    data_fingerprint: str, method: str, form: str, per_channel: bool, percentile: float, num_bins: int,
    cache_path: Path | None, reduce_range: bool = False,
) -> Calibrated:
    """Calibrate ``fp32_onnx`` once (or reuse ``cache_path``); the full INT8 model goes to ``workdir``."""
    cache = Path(cache_path) if cache_path is not None else Path(workdir) / "calibration.json"
    q = quantize(Path(fp32_onnx), Path(workdir) / "full.int8.onnx", calib_batches, data_fingerprint=data_fingerprint,
                 method=method, form=form, per_channel=per_channel, percentile=percentile, num_bins=num_bins,
                 cache_path=cache, reduce_range=reduce_range)
    import onnx

    meta = read_quantization_metadata(onnx.load(str(q.path), load_external_data=False)) or {}
    c = load_cache(cache, model_sha256=str(meta.get("source_sha256")), data_fingerprint=data_fingerprint,
                   num_bins=num_bins)
    if c is None:  # quantize() just wrote it
        raise RuntimeError(f"calibration cache {cache} vanished after calibration")
    ranges = c.ranges[ranges_key(method, form, percentile)]
    return Calibrated(prepare_model(load_onnx(Path(fp32_onnx))), ranges, form, per_channel, q, cache, reduce_range)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Score:
    """One Q/DQ variant against the FP32 model on the validation images (top-1/top-5 as fractions)."""

    top1: float
    top5: float
    drop_top1: float  # percentage points, FP32 - variant
    drop_top5: float
    agreement: float  # fraction of images with the same top-1 class as FP32
    output_error: float  # ||logits - fp32 logits|| / ||fp32 logits|| over all images
    cosine_error: float  # 1 - mean per-image cosine of logits


class Evaluator:
    """Holds the validation images and the FP32 logits; scores Q/DQ variants against them."""

    def __init__(self, fp32_onnx: Path, val_batches_fn: LabelledBatches, *, max_images: int | None = None) -> None:
        xs, ys = [], []
        n = 0
        for index, (x, y) in enumerate(val_batches_fn()):
            if max_images is not None and n >= max_images:
                break
            x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
            if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating) or y.shape != (x.shape[0],):
                raise InputError(f"validation batch {index} is not (NCHW float images, labels); check the data loader")
            if not np.isfinite(x).all():
                raise InputError(f"validation batch {index} has NaN/Inf values; check the validation images")
            if (y < 0).any():
                raise InputError("validation data has unlabelled images; use an ImageFolder tree DIR/<class>/*.png")
            keep = x.shape[0] if max_images is None else min(x.shape[0], max_images - n)
            xs.append(x[:keep].astype(np.float32, copy=False))
            ys.append(y[:keep])
            n += keep
        if n == 0:
            raise InputError("no validation images; pass labelled images (--val DIR with DIR/<class>/*.png)")
        self.inputs = np.concatenate(xs)
        self.labels = np.concatenate(ys)
        self.reference = self.logits(fp32_onnx)
        if self.labels.max() >= self.reference.shape[1]:
            raise InputError(f"a label ({int(self.labels.max())}) is outside the model's {self.reference.shape[1]} "
                             "classes; is this the data the model was trained on?")
        self.ref_top1 = float(topk_hits(self.reference, self.labels, 1).mean())
        self.ref_top5 = float(topk_hits(self.reference, self.labels, 5).mean())

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    def logits(self, model: Any) -> np.ndarray:
        """Logits of ``model`` (ModelProto or path) on every validation image; non-finite ones raise."""
        from edgeres.backends.onnxruntime import make_runner

        runner = make_runner(model.SerializeToString() if hasattr(model, "SerializeToString") else Path(model))
        out = np.concatenate([runner(self.inputs[i: i + EVAL_CHUNK]) for i in range(0, len(self.inputs), EVAL_CHUNK)])
        if not np.isfinite(out).all():
            raise InputError("the model gives NaN/Inf logits on the validation images; check the data and the model")
        return out

    def score(self, model: Any) -> Score:
        lq, lf, y = self.logits(model), self.reference, self.labels
        if lq.shape != lf.shape:
            raise InputError(f"FP32 and INT8 output shapes differ: {lf.shape} vs {lq.shape}")
        top1, top5 = float(topk_hits(lq, y, 1).mean()), float(topk_hits(lq, y, 5).mean())
        cos = np.sum(lq * lf, 1) / np.maximum(np.linalg.norm(lq, axis=1) * np.linalg.norm(lf, axis=1), 1e-12)
        ref_norm = float(np.linalg.norm(lf))
        return Score(
            top1=top1, top5=top5, drop_top1=100.0 * (self.ref_top1 - top1), drop_top5=100.0 * (self.ref_top5 - top5),
            agreement=float((lq.argmax(1) == lf.argmax(1)).mean()),
            output_error=float(np.linalg.norm(lq - lf)) / max(ref_norm, 1e-12),
            cosine_error=float(1.0 - cos.mean()),
        )

    def report(self, s: Score, *, max_drop: float | None, seconds: float = 0.0,
               context: dict[str, Any] | None = None) -> AccuracyReport:
        """``s`` as an :class:`~edgeres.evaluate.AccuracyReport` (FP32 vs the variant)."""
        passed = True if max_drop is None else s.drop_top1 <= max_drop + 1e-9
        return AccuracyReport(
            reference=TopK(self.ref_top1, self.ref_top5), artifact=TopK(s.top1, s.top5), drop_top1=s.drop_top1,
            drop_top5=s.drop_top5, agreement_top1=s.agreement, mean_cosine=1.0 - s.cosine_error,
            num_images=self.num_images, max_drop=max_drop, passed=passed, seconds=seconds, context=dict(context or {}),
        )


def local_errors(cal: Calibrated, inputs: Iterable[np.ndarray], nodes: Sequence[str]) -> dict[str, float]:
    """Per node: mean over output channels of ``||y_q - y|| / ||y||``, ``y_q`` from quantized inputs and weights.

    One pass over FP32 activations: a copy of each node reading Q/DQ'd inputs and
    INT8 weights is added beside it, so upstream error does not pile up (a proxy for
    the node's own harm; the cpu form's INT32 bias is left float, a negligible error).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(cal.model)
    g, plan = model.graph, cal.plan()
    inits = {t.name: t for t in g.initializer}
    node_by_name = {n.name: n for n in g.node}
    counter = iter(range(1 << 30))

    def fresh(base: str) -> str:
        return f"{base}__probe{next(counter)}"

    dq_of: dict[str, str] = {}
    pairs: dict[str, tuple[str, str]] = {}
    zp_dtype = np.int8 if cal.form == "tensorrt" else np.uint8
    for name in nodes:
        node = node_by_name[name]
        new_inputs = list(node.input)
        for (owner, idx), t in plan.activations.items():
            if owner != name:
                continue
            if t not in dq_of:
                scale, zp = activation_qparams(*cal.ranges[plan.tied.get(t, t)], cal.form)
                s, z, q, dq = fresh(f"{t}_s"), fresh(f"{t}_z"), fresh(f"{t}_q"), fresh(f"{t}_dq")
                g.initializer.extend([numpy_helper.from_array(np.asarray(scale, np.float32), s),
                                      numpy_helper.from_array(np.asarray(zp, zp_dtype), z)])
                g.node.extend([helper.make_node("QuantizeLinear", [t, s, z], [q], name=fresh("Q")),
                               helper.make_node("DequantizeLinear", [q, s, z], [dq], name=fresh("DQ"))])
                dq_of[t] = dq
            new_inputs[idx] = dq_of[t]
        for site in (w for w in plan.weights if w.node == name):
            qw, scale = quantize_weight(numpy_helper.to_array(inits[node.input[site.index]]), site.axis,
                                        cal.per_channel, cal.reduce_range)
            shape = [-1 if cal.per_channel and d == site.axis else 1 for d in range(qw.ndim)]
            w = (qw.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
            w_name = fresh(f"{node.input[site.index]}_w8")
            g.initializer.append(numpy_helper.from_array(w, w_name))
            new_inputs[site.index] = w_name
        probe = helper.make_node(node.op_type, new_inputs, [fresh(node.output[0])], name=fresh(name),
                                 domain=node.domain)
        probe.attribute.extend(node.attribute)
        g.node.append(probe)
        pairs[name] = (node.output[0], probe.output[0])
    names = [t for pair in pairs.values() for t in pair]
    err: dict[str, np.ndarray] = {}
    ref: dict[str, np.ndarray] = {}
    for _, _, values in iter_tensors(model, names, list(inputs)):
        for name, (a, b) in pairs.items():
            va = values[a].astype(np.float64)
            axes = tuple(d for d in range(va.ndim) if d != 1) if va.ndim >= 2 else None
            e, r = np.sum(np.square(values[b] - va), axis=axes), np.sum(np.square(va), axis=axes)
            err[name], ref[name] = err.get(name, 0.0) + e, ref.get(name, 0.0) + r
    return {n: _channel_error(err[n], ref[n]) for n in pairs}


def _channel_error(err: np.ndarray, ref: np.ndarray) -> float:
    """Mean over channels of ``sqrt(err / ref)`` (channels that are all zero in FP32 skipped).

    Per channel, so a channel 1000x larger than the others cannot hide the others'
    loss (an outlier channel crushing its neighbours' quantization is the classic case).
    """
    err, ref = np.atleast_1d(err), np.atleast_1d(ref)
    live = ref > 0
    if not live.any():
        return float(err.sum() > 0)
    return float(np.mean(np.sqrt(err[live] / ref[live])))


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
    data_fingerprint: str,
    method: str = "entropy",
    form: str = "cpu",
    per_channel: bool = True,
    percentile: float = DEFAULT_PERCENTILE,
    num_bins: int = DEFAULT_NUM_BINS,
    cache_path: Path | None = None,
    mode: str = "fp32-one",
    reduce_range: bool = False,
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
    if max_val_images is not None and max_val_images < 1:
        raise UsageError(f"max_val_images must be at least 1, got {max_val_images}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeres-sens-") as work:
        cal = calibrate(Path(fp32_onnx), calib_batches, Path(work), data_fingerprint=data_fingerprint, method=method,
                        form=form, per_channel=per_channel, percentile=percentile, num_bins=num_bins,
                        cache_path=cache_path, reduce_range=reduce_range)
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
        model=str(fp32_onnx), mode=mode, method=method, form=form, per_channel=per_channel,
        num_images=ev.num_images, num_calib=cal.quant.num_calib, fp32_top1=ev.ref_top1, int8_top1=base.top1,
        int8_drop_top1=base.drop_top1, int8_output_error=base.output_error, rows=rows,
        seconds=time.perf_counter() - t0, reduce_range=reduce_range,
    )
