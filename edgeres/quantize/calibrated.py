"""Calibrate a model once; build any Q/DQ variant of it in memory.

:func:`calibrate` loads and prepares the FP32 graph (nodes named, BatchNormalization
folded, optionally cross-layer equalized), measures every activation's histogram in one
pass over the calibration images (or reuses a calibration cache), derives the ranges of
the chosen method — for ``auto``, of every method, then scores them on held-out images —
and measures bias correction where it helps. The :class:`Calibrated` result builds the
Q/DQ model with any set of layers kept float (``build(exclude)``) without touching an
image again: what ``quantize``, the sensitivity analysis and the fallback share.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from edgeres.errors import InputError, UsageError
from edgeres.fileio import sha256_file
from edgeres.quantize.cache import CalibCache, Range, load_cache, ranges_key, save_cache
from edgeres.quantize.calibration import compute_range
from edgeres.quantize.collect import Sample, collect_sample, collect_stats
from edgeres.quantize.options import AUTO, QuantOptions
from edgeres.quantize.qdq import QuantPlan, calibration_tensors, insert_qdq, plan_quantization, prepare_model

if TYPE_CHECKING:  # pragma: no cover
    import onnx

Batches = Callable[[], Iterable[np.ndarray]]


@dataclass
class Calibrated:
    """A model calibrated once. ``method`` is the range method in use (``auto``'s pick)."""

    model: "onnx.ModelProto"  # the prepared FP32 graph (named nodes, BN folded, equalized if asked)
    ranges: dict[str, Range]
    options: QuantOptions
    method: str
    bias: dict[str, np.ndarray] = field(default_factory=dict)  # bias correction per node (empty: none)
    choice: dict[str, Any] = field(default_factory=dict)  # auto's record: scores and why
    source_sha256: str = ""
    data_fingerprint: str | None = None
    num_calib: int = 0
    num_holdout: int = 0
    cache_path: Path | None = None
    cache_hit: bool = False
    calib_seconds: float = 0.0
    equalized: list[tuple[str, str]] = field(default_factory=list)

    def corrected(self, exclude: Iterable[str] = ()) -> "onnx.ModelProto":
        """The FP32 graph with bias correction on the layers that stay quantized."""
        if not self.bias:
            return self.model
        from edgeres.quantize.probes import with_bias

        return with_bias(self.model, self.bias, skip=exclude)

    def plan(self, exclude: Iterable[str] = ()) -> QuantPlan:
        return plan_quantization(self.model, self.options.form, exclude)

    def build(self, exclude: Iterable[str] = ()) -> "onnx.ModelProto":
        """The Q/DQ model with ``exclude`` kept float (what ``quantize(exclude=...)`` writes)."""
        exclude = set(exclude)
        model = self.corrected(exclude)
        plan = plan_quantization(model, self.options.form, exclude)
        return insert_qdq(model, plan, self.ranges, per_channel=self.options.per_channel,
                          reduce_range=self.options.reduce_range)

    def nodes(self, ops: Sequence[str] | None = None) -> list[str]:
        """Quantized nodes of the full plan, in graph order (only ``ops`` op types if given)."""
        kinds = {n.name: n.op_type for n in self.model.graph.node}
        return [n for n in self.plan().nodes if ops is None or kinds[n] in ops]

    def op_type(self, name: str) -> str:
        return next(n.op_type for n in self.model.graph.node if n.name == name)

    def record(self, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The ``edgeres.quantization`` metadata record of ``build(exclude)``."""
        o = self.options
        return {
            "method": self.method, "requested_method": o.method, "form": o.form, "per_channel": o.per_channel,
            "reduce_range": o.reduce_range, "num_calib": self.num_calib, "num_holdout": self.num_holdout,
            "fallback_layers": sorted(set(exclude)),
            "percentile": o.percentile if self.method == "percentile" else None, "num_bins": o.num_bins,
            "bias_correction": bool(self.bias), "bias_corrected_layers": len(set(self.bias) - set(exclude)),
            "equalize": o.equalize, "equalized_pairs": len(self.equalized),
            "auto": {k: v for k, v in self.choice.items() if k != "bias"} or None,
            "source_sha256": self.source_sha256, "data_fingerprint": self.data_fingerprint,
        }


def model_digest(path: Path, external: list[Path]) -> str:
    """sha256 of the model file; with external data, of the file's and the data files' hashes."""
    digest = sha256_file(path)
    if not external:
        return digest
    parts = [digest] + [f"{p.name}:{sha256_file(p)}" for p in external]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def prepared_graph(raw: Any, equalize: bool) -> tuple["onnx.ModelProto", list[tuple[str, str]]]:
    """The graph edgeres quantizes: nodes named, BN folded, and cross-layer equalized if asked.
    Deterministic: ``edgeres debug`` rebuilds it as the FP32 reference of a Q/DQ model."""
    model = prepare_model(raw)
    pairs: list[tuple[str, str]] = []
    if equalize:
        from edgeres.quantize.equalize import equalize as run_equalize

        pairs = run_equalize(model)
    return model, pairs


def graph_tag(equalize: bool) -> str:
    return "bn-folded+equalized" if equalize else "bn-folded"


def calibrate(fp32_onnx: Path, calib_batches: Batches | None, *, options: QuantOptions,
              data_fingerprint: str | None, cache_path: Path | None = None,
              exclude: Iterable[str] = ()) -> Calibrated:
    """Calibrate ``fp32_onnx`` (or reuse ``cache_path``, written back with what was computed).
    ``exclude``: node names checked before any work (UsageError for an unknown one)."""
    from edgeres.onnx_io import load_with_data_files

    t0 = time.perf_counter()
    raw, external = load_with_data_files(Path(fp32_onnx), check=True)
    model, pairs = prepared_graph(raw, options.equalize)
    plan_quantization(model, options.form, exclude)  # validates the names
    model_sha = model_digest(Path(fp32_onnx), external)
    cache = None
    if cache_path is not None:
        cache = load_cache(cache_path, model_sha256=model_sha, data_fingerprint=data_fingerprint,
                           num_bins=options.num_bins, graph=graph_tag(options.equalize))
    cache_hit = cache is not None
    wanted = calibration_tensors(model)
    if cache is not None and any(t not in cache.stats for t in wanted):
        raise InputError(f"calibration cache {cache_path} lacks tensors of this model (made by another edgeres "
                         "version?); delete it or pass --calib-cache to a new file")
    sample: Sample | None = None
    if cache is None:
        if calib_batches is None:
            raise UsageError("no calibration data and no valid calibration cache; "
                             "pass calibration images (or an existing --calib-cache)")
        # Images are held out of the ranges only when something will be scored on them.
        sample = Sample() if options.needs_scoring else None
        stats, num_range = collect_stats(model, wanted, calib_batches, num_bins=options.num_bins, sample=sample,
                                         means_of=_bias_outputs(model, options))
        held = sample.num_holdout if sample is not None else 0
        cache = CalibCache(model_sha, data_fingerprint or "", options.num_bins, num_range + held, stats,
                           num_holdout=held, graph=graph_tag(options.equalize))
    dirty = not cache_hit

    def ranges_of(method: str) -> dict[str, Range]:
        nonlocal dirty
        key = ranges_key(method, options.form, options.percentile)
        if key not in cache.ranges:
            cache.ranges[key] = {t: compute_range(s, method, symmetric=options.symmetric,
                                                  percentile=options.percentile) for t, s in cache.stats.items()}
            dirty = True
        return cache.ranges[key]

    choice, scored = _choice(model, options, cache, ranges_of, sample, calib_batches)
    dirty = dirty or scored
    method = choice.get("method", options.method)
    ranges = ranges_of(method)
    if cache_path is not None and dirty:
        save_cache(cache_path, cache)
    bias = {k: np.asarray(v, dtype=np.float32) for k, v in choice.get("bias", {}).items()}
    return Calibrated(model=model, ranges=ranges, options=options, method=method, bias=bias,
                      choice=choice if options.method == AUTO or options.bias_correction != "off" else {},
                      source_sha256=model_sha, data_fingerprint=data_fingerprint, num_calib=cache.num_calib,
                      num_holdout=cache.num_holdout, cache_path=Path(cache_path) if cache_path else None,
                      cache_hit=cache_hit, calib_seconds=time.perf_counter() - t0, equalized=pairs)


def _bias_outputs(model: Any, options: QuantOptions) -> list[str]:
    """The FP32 tensors bias correction compares against (the quantized Conv/Gemm outputs), or none."""
    if options.bias_correction == "off":
        return []
    from edgeres.quantize.probes import bias_sites

    outputs = {n.name: n.output[0] for n in model.graph.node}
    return [outputs[s] for s in bias_sites(model, plan_quantization(model, options.form))]


def _choice(model: Any, options: QuantOptions, cache: CalibCache, ranges_of: Callable[[str], dict],
            sample: Sample | None, calib_batches: Batches | None) -> tuple[dict[str, Any], bool]:
    """(auto's pick and the bias correction for ``options``, whether it was scored now and stored in
    ``cache``), from the cache when it holds them."""
    from edgeres.quantize.auto import choose

    if options.method != AUTO and options.bias_correction == "off":
        return {"method": options.method}, False
    key = f"{options.method}/{options.settings_key()}"
    if key in cache.choices:
        return dict(cache.choices[key]), False
    if sample is None:  # a cache hit that has not scored these settings yet
        if calib_batches is None:
            if options.method == AUTO:
                raise UsageError("--method auto needs calibration images to score the methods on (the calibration "
                                 "cache has no choice for these settings); pass --calib DIR or a --method")
            return {"method": options.method,
                    "why": "bias correction skipped: no calibration images (calibration cache only)"}, False
        sample = collect_sample(calib_batches)
    rec = choose(model, options, ranges_of, sample)
    if cache.num_holdout == 0 and rec.get("holdout_images"):
        rec["why"] += " (the calibration cache was made without a hold-out: these images also set the ranges)"
    cache.choices[key] = rec
    return dict(rec), True
