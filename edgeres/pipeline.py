"""The chained stages: source -> FP32 ONNX -> (INT8 Q/DQ ONNX) -> backend artifact
-> validation -> bundle. ``edgeres compile`` and ``edgeres quickstart`` call
:func:`compile_bundle`; ``edgeres validate`` calls :func:`validate_bundle`.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeres.bundle import (
    ARTIFACT_DIR, CALIB_CACHE, FP32_ONNX, INT8_ONNX, LABELS, REPORT, Bundle, load_bundle, write_manifest,
)
from edgeres.errors import AccuracyRegression, CompileError, UsageError
from edgeres.evaluate import AccuracyReport, compare
from edgeres.fileio import atomic_dir, sha256_file, write_json
from edgeres.preprocessing import Preprocessing
from edgeres.targets import Target, get_target

DEFAULT_NUM_CALIB = 512
RECIPE = "recipe.json"
EVAL_BATCH = 64


@dataclass
class CompileResult:
    bundle: Path
    target: Target
    precision: str
    report: AccuracyReport | None
    timings: dict[str, float] = field(default_factory=dict)
    artifact: Any = None
    notes: list[str] = field(default_factory=list)


def resolve_precision(target: Target, precision: str | None) -> str:
    p = precision or target.default_precision
    if p not in target.precisions:
        raise UsageError(f"target {target.name} does not support {p}; choose one of {list(target.precisions)}")
    return p


def open_data(spec: str, split: str, pre: Preprocessing, *, limit: int | None, allow_unlabelled: bool = False):
    """Open ``spec`` with the model's preprocessing. Labels are matched to the model's classes by
    name, except for calibration, which needs images only (any folder of images will do)."""
    from edgeres.data import open_dataset

    names = None if split == "calib" else (pre.class_names or None)
    return open_dataset(spec, split, pre, class_names=names, limit=limit, allow_unlabelled=allow_unlabelled)


def open_calibration(calib: str | None, pre: Preprocessing, num_calib: int,
                     batch_size: int = 32) -> tuple[Callable[[], Any] | None, str | None]:
    """(zero-arg callable yielding calibration batches, data fingerprint), or (None, None) without
    ``calib`` (a calibration cache must then supply the ranges)."""
    from edgeres.data import iter_batches

    if num_calib < 1:
        raise UsageError("--num-calib must be at least 1")
    if not calib:
        return None, None
    ds = open_data(calib, "calib", pre, limit=num_calib, allow_unlabelled=True)
    return (lambda: (x for x, _ in iter_batches(ds, batch_size))), ds.fingerprint()


def export_stage(source: Any, dest: Path, preprocessing: Preprocessing | None = None) -> tuple[Preprocessing, str, dict]:
    """Write the FP32 ONNX for ``source`` (a LoadedModel or OnnxSource) to ``dest``."""
    from edgeres.export import OnnxSource, export_onnx

    if isinstance(source, OnnxSource):
        import onnx

        from edgeres.preprocessing import write_onnx_preprocessing

        proto = onnx.load(str(source.path))
        write_onnx_preprocessing(proto, source.preprocessing)
        onnx.save(proto, str(dest))
        return source.preprocessing, source.model_name, {"source": str(source.path), "sha256": sha256_file(source.path)}
    res = export_onnx(source, dest)
    info = {"source": source.source, "max_abs_diff": res.max_abs_diff, "logit_scale": res.logit_scale,
            "opset": res.opset, "seconds": round(res.seconds, 3)}
    if source.source and Path(source.source).is_file():
        info["sha256"] = sha256_file(source.source)
    return res.preprocessing, res.model_name, info


def compile_bundle(
    source: str,
    target: str | Target,
    out: str | os.PathLike,
    *,
    precision: str | None = None,
    weights: str | None = None,
    calib: str | None = None,
    val: str | None = None,
    method: str = "entropy",
    num_calib: int = DEFAULT_NUM_CALIB,
    calib_cache: str | os.PathLike | None = None,
    per_channel: bool = True,
    percentile: float = 99.99,
    max_drop: float | None = None,
    val_limit: int | None = None,
    fallback: bool = True,
    backend_options: dict[str, Any] | None = None,
    targets_dirs: tuple[str, ...] = (),
    log: Callable[[str], None] = lambda s: None,
) -> CompileResult:
    """Compile ``source`` for ``target`` into the bundle directory ``out`` (atomically).

    Everything that can be checked without work is checked first (target, precision, the
    backend and its toolchain, the model source, calibration inputs). Raises
    AccuracyRegression (exit 1) after writing the bundle when validation on ``val`` breaks
    ``max_drop`` (default: the target's threshold).
    """
    from edgeres.backends import get_backend
    from edgeres.export import resolve_source

    tgt = target if isinstance(target, Target) else get_target(target, targets_dirs)
    prec = resolve_precision(tgt, precision)
    backend = get_backend(tgt.backend, require=False)
    backend.preflight(tgt, prec, backend_options)  # a missing backend fails here, before any work
    src = resolve_source(source, weights)
    if prec == "int8" and not calib and not calib_cache:
        raise UsageError("--precision int8 needs calibration images: pass --calib DIR (or --calib-cache FILE)")
    out = Path(out)
    threshold = max_drop if max_drop is not None else tgt.max_drop
    timings: dict[str, float] = {}
    notes: list[str] = []
    with atomic_dir(out) as tmp:
        t = time.perf_counter()
        pre, model_name, export_info = export_stage(src, tmp / FP32_ONNX)
        timings["export"] = time.perf_counter() - t
        log(f"exported FP32 ONNX in {timings['export']:.1f} s")
        (tmp / LABELS).write_text("".join(f"{c}\n" for c in pre.class_names))
        val_ds = open_data(val, "val", pre, limit=val_limit) if val else None
        deploy_onnx, quant_info = tmp / FP32_ONNX, None
        if prec == "int8":
            t = time.perf_counter()
            quant_info = _quantize_into(tmp, tgt, pre, calib=calib, calib_cache=calib_cache, num_calib=num_calib,
                                        method=method, per_channel=per_channel, percentile=percentile,
                                        val_ds=val_ds if fallback else None, max_drop=threshold, log=log)
            deploy_onnx = tmp / INT8_ONNX
            timings["quantize"] = time.perf_counter() - t
            fb = quant_info["fallback"]
            log(f"quantized INT8 ({method}, {tgt.qdq_form} form) in {timings['quantize']:.1f} s"
                + (f"; {len(fb['layers'])} layer(s) kept in {fb['precision']} to meet --max-drop {threshold}"
                   if fb and fb["layers"] else ""))
        conformance = backend.check_deploy_model(deploy_onnx, prec)
        t = time.perf_counter()
        artifact, recipe = None, None
        buildable, why = backend.buildable_here(tgt, backend_options, bundle=str(out))
        if buildable:
            artifact = backend.compile(deploy_onnx, tgt, tmp / ARTIFACT_DIR, precision=prec, options=backend_options)
            timings["compile"] = time.perf_counter() - t
            log(f"compiled with {tgt.backend} in {timings['compile']:.1f} s"
                + (f"; {artifact.info['int8_note']}" if artifact.info.get("int8_note") else ""))
        else:
            recipe = backend.build_recipe(tgt, prec, deploy_onnx.name, input_chw=(3, *pre.input_size),
                                          options=backend_options, bundle=str(out))
            write_json(tmp / RECIPE, recipe)
            notes.append(f"engine not built here ({why})")
        backend.write_app_example(tmp)
        report = None
        if val_ds is not None:
            t = time.perf_counter()
            report = _validate(tmp / FP32_ONNX, deploy_onnx, artifact, backend, val_ds, threshold,
                               {"model": model_name, "target": tgt.name, "precision": prec, "data": str(val)})
            report.write(tmp / REPORT)
            timings["validate"] = time.perf_counter() - t
        write_manifest(tmp, {
            "model": {"name": model_name, **export_info},
            "target": tgt.to_dict(),
            "precision": prec,
            "preprocessing": pre.to_dict(),
            "onnx": {"fp32": FP32_ONNX, **({"int8": INT8_ONNX} if prec == "int8" else {})},
            "quantization": quant_info,
            "calibration_cache": CALIB_CACHE if prec == "int8" else None,
            "artifact": artifact.to_dict() if artifact else None,
            "recipe": RECIPE if recipe else None,
            "conformance": conformance,
            "backend_options": backend_options or {},
            "validation": ({"report": REPORT, "passed": report.passed, "drop_top1": report.drop_top1,
                            "data": val} if report else None),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        })
    result = CompileResult(out, tgt, prec, report, timings, artifact, notes)
    if report is not None and not report.passed:
        raise AccuracyRegression(
            f"top-1 dropped {report.drop_top1:.2f} points (limit {report.max_drop}); bundle written to {out} "
            "with the failing report — try --method percentile/mse, more --num-calib images, or --precision fp32"
        )
    return result


def _quantize_into(tmp: Path, tgt: Target, pre: Preprocessing, *, calib: str | None,
                   calib_cache: str | os.PathLike | None, num_calib: int, method: str, per_channel: bool,
                   percentile: float, val_ds: Any, max_drop: float | None,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Quantize the bundle's FP32 ONNX into its INT8 ONNX (with the calibration cache); the manifest record."""
    batches, fingerprint = open_calibration(calib, pre, num_calib)
    cache_dest = tmp / CALIB_CACHE
    if calib_cache and Path(calib_cache).is_file():
        shutil.copyfile(calib_cache, cache_dest)
    q, fb_record = quantize_stage(
        tmp / FP32_ONNX, tmp / INT8_ONNX, batches, fingerprint, form=tgt.qdq_form,
        fallback_precision=tgt.fallback_precision, method=method, per_channel=per_channel,
        reduce_range=tgt.reduce_range, percentile=percentile, cache_path=cache_dest, val_ds=val_ds,
        max_drop=max_drop, log=log)
    if calib_cache and not Path(calib_cache).is_file():
        shutil.copyfile(cache_dest, calib_cache)
    return {"method": q.method, "form": q.form, "per_channel": q.per_channel, "reduce_range": q.reduce_range,
            "num_calib": q.num_calib, "quantized_nodes": q.num_quantized_nodes, "excluded": list(q.excluded),
            "cache_hit": q.cache_hit, "calib_data": calib, "calib_fingerprint": fingerprint,
            "fallback": fb_record}


def _artifact_runner(artifact: Any, backend: Any, deploy_onnx: Path) -> tuple[Any, str]:
    from edgeres.backends import reference_runner
    from edgeres.errors import BackendUnavailable

    if artifact is None:
        return reference_runner(deploy_onnx), "onnxruntime Q/DQ (engine not built here)"
    try:
        return backend.load(artifact), f"{artifact.backend}"
    except BackendUnavailable as e:  # built for a CPU this machine is not (e.g. AVX-512 on an AVX2 host)
        return reference_runner(deploy_onnx), f"onnxruntime (the {artifact.backend} artifact cannot run here: {e})"


def _validate(fp32_onnx: Path, deploy_onnx: Path, artifact: Any, backend: Any, ds: Any, max_drop: float | None,
              context: dict[str, Any], runner: Any = None) -> AccuracyReport:
    """Compare ``artifact`` (or ``runner``, e.g. one on a remote board) with the FP32 reference on ``ds``."""
    from edgeres.backends import reference_runner
    from edgeres.data import iter_batches

    reference = reference_runner(fp32_onnx)
    runner_name = context.get("backend")
    if runner is None:
        runner, runner_name = _artifact_runner(artifact, backend, deploy_onnx)
    ctx = {**context, "backend": runner_name, "data_fingerprint": ds.fingerprint()}
    return compare(reference, runner, iter_batches(ds, EVAL_BATCH), max_drop=max_drop, context=ctx)


def quantize_stage(fp32: Path, out: Path, batches: Any, fingerprint: str | None, *, form: str, method: str,
                   per_channel: bool, percentile: float, cache_path: Path | None, val_ds: Any = None,
                   max_drop: float | None = None, fallback_precision: str = "fp32", reduce_range: bool = False,
                   log: Callable[[str], None] = lambda s: None):
    """Quantize to the Q/DQ ``form`` (``reduce_range``: 7-bit weights). With validation data, guarantee
    ``max_drop`` by keeping the most harmful layers in ``fallback_precision``.
    Returns (QuantizeResult, fallback record or None)."""
    from edgeres.quantize import quantize

    if val_ds is None or max_drop is None:
        q = quantize(fp32, out, batches, data_fingerprint=fingerprint, method=method, form=form,
                     per_channel=per_channel, percentile=percentile, cache_path=cache_path,
                     reduce_range=reduce_range)
        return q, None
    from edgeres.data import iter_batches
    from edgeres.quantize.fallback import quantize_with_fallback

    fb = quantize_with_fallback(
        fp32, out, batches, lambda: iter_batches(val_ds, EVAL_BATCH), max_drop=max_drop,
        data_fingerprint=fingerprint, method=method, form=form, per_channel=per_channel,
        percentile=percentile, cache_path=cache_path, fallback_precision=fallback_precision,
        reduce_range=reduce_range, log=log,
    )
    return fb.quantize_result, {**fb.metadata(), "layers": list(fb.fallback_layers)}


def validate_bundle(bundle: str | os.PathLike | Bundle, data: str, *, max_drop: float | None = None,
                    limit: int | None = None, verify: bool = True, device: Any = None) -> AccuracyReport:
    """Validate a bundle's artifact against its FP32 ONNX on labelled images ``data``.

    ``max_drop`` defaults to the bundle target's threshold. ``device`` (an
    :class:`edgeres.devices.DeviceSpec`) runs the artifact on that board, through the backend's
    :meth:`~edgeres.backends.base.Backend.open_device`; the reference still runs here.
    Returns the report; the caller decides what a failure means (the CLI exits 1).
    """
    from edgeres.backends import get_backend

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=verify)
    backend = get_backend(b.backend, require=False)
    art = b.artifact()
    if art is not None or device is not None:
        backend.require()  # BackendUnavailable with the install hint
    threshold = max_drop if max_drop is not None else b.manifest["target"].get("max_drop")
    ds = open_data(data, "val", b.preprocessing, limit=limit)
    ctx = {"model": b.manifest["model"]["name"], "target": b.target_name, "precision": b.precision,
           "bundle": str(b.root), "data": str(data)}
    if device is None:
        return _validate(b.file("fp32"), b.deploy_onnx, art, backend, ds, threshold, ctx)
    if art is None:
        raise UsageError(f"bundle {b.root} holds no compiled artifact to run on {device.label}; build it first")
    with backend.open_device(device) as board:
        runner = board.load(art)  # refuses an artifact the board cannot run, before uploading it
        ctx = {**ctx, "backend": f"{art.backend} on {device.label}", "device": board.describe()}
        return _validate(b.file("fp32"), b.deploy_onnx, art, backend, ds, threshold, ctx, runner=runner)


def get_target_from_manifest(b: Bundle) -> Target:
    from edgeres.targets import parse_target

    t = dict(b.manifest["target"])
    rec = {k: t[k] for k in ("name", "description", "backend", "device", "arch", "precisions",
                              "default_precision", "qdq_form", "batch_size", "aliases")}
    rec["reduce_range"] = t.get("reduce_range", False)  # absent from bundles made before the option
    rec["thresholds"] = {"max_drop": t["max_drop"]}
    rec[t["backend"]] = t.get("options", {})
    return parse_target(rec, f"{b.root}/manifest.json")
