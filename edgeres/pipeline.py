"""The chained stages: source -> FP32 ONNX -> (INT8 Q/DQ ONNX) -> backend artifact
-> validation -> bundle. ``edgeres compile`` and ``edgeres quickstart`` call
:func:`compile_bundle`; ``edgeres validate`` calls :func:`validate_bundle`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeres.bundle import (
    ARTIFACT_DIR, CALIB_CACHE, FP32_ONNX, INT8_ONNX, LABELS, REPORT, Bundle, load_bundle, write_manifest,
)
from edgeres.errors import AccuracyRegression, UsageError
from edgeres.evaluate import EVAL_BATCH, compare
from edgeres.export import export_stage
from edgeres.fileio import atomic_dir, write_json
from edgeres.preprocessing import Preprocessing
from edgeres.quant_stage import check_qat, check_quant_options, log_quantized, quantize_into
from edgeres.quantize.options import QuantOptions
from edgeres.targets import Target, get_target
from edgeres.reports import regression_message, validation_record
from edgeres.task import Task, check_task

RECIPE = "recipe.json"


@dataclass
class CompileResult:
    bundle: Path
    target: Target
    precision: str
    report: Any  # AccuracyReport (a classifier), FeatureReport (a feature extractor) or None
    timings: dict[str, float] = field(default_factory=dict)
    artifact: Any = None
    notes: list[str] = field(default_factory=list)


def resolve_precision(target: Target, precision: str | None) -> str:
    p = precision or target.default_precision
    if p not in target.precisions:
        raise UsageError(f"target {target.name} does not support {p}; choose one of {list(target.precisions)}")
    return p


def preflight(target: str | Target, precision: str | None = None, backend_options: dict[str, Any] | None = None,
              targets_dirs: tuple[str, ...] = ()) -> tuple[Target, str, Any]:
    """(target, precision, backend) for a compile, checked without any work: the target exists, it
    supports the precision, the backend and its toolchain are installed."""
    from edgeres.backends import get_backend

    tgt = target if isinstance(target, Target) else get_target(target, targets_dirs)
    prec = resolve_precision(tgt, precision)
    backend = get_backend(tgt.backend, require=False)
    backend.preflight(tgt, prec, backend_options)  # a missing backend fails here, before any work
    return tgt, prec, backend


def open_data(spec: str, split: str, pre: Preprocessing, *, limit: int | None, allow_unlabelled: bool = False):
    """Open ``spec`` with the model's preprocessing. Labels are matched to the model's classes by
    name, except for calibration, which needs images only (any folder of images will do). Data that
    does not fit the model (image size, class count) gives a warning."""
    import warnings

    from edgeres.data import DataWarning, open_dataset
    from edgeres.data.fit import fit_warning

    names = None if split == "calib" else (pre.class_names or None)
    ds = open_dataset(spec, split, pre, class_names=names, limit=limit, allow_unlabelled=allow_unlabelled)
    data_classes = len(ds.class_names) if names is None and ds.labelled else None
    note = fit_warning(ds, pre, "calibration" if split == "calib" else "validation", data_classes)
    if note:
        warnings.warn(note, DataWarning, stacklevel=2)
    return ds


def open_calibration(calib: str | None, pre: Preprocessing, num_calib: int, batch_size: int = 32, *,
                     progress: bool = False) -> tuple[Callable[[], Any] | None, str | None]:
    """(zero-arg callable yielding calibration batches, data fingerprint), or (None, None) without
    ``calib`` (a calibration cache must then supply the ranges). ``progress``: each pass over the
    batches shows a progress bar (see :mod:`edgeres.progress`)."""
    from edgeres.data import iter_batches
    from edgeres.progress import track

    if num_calib < 1:
        raise UsageError("--num-calib must be at least 1")
    if not calib:
        return None, None
    ds = open_data(calib, "calib", pre, limit=num_calib, allow_unlabelled=True)

    def batches() -> Any:
        xs = (x for x, _ in iter_batches(ds, batch_size))
        return track(xs, "calibrating", len(ds), "images", count=len, enabled=progress)

    return batches, ds.fingerprint()


def compile_bundle(
    source: str,
    target: str | Target,
    out: str | os.PathLike,
    *,
    precision: str | None = None,
    weights: str | None = None,
    calib: str | None = None,
    val: str | None = None,
    quant: QuantOptions | dict[str, Any] | None = None,
    calib_cache: str | os.PathLike | None = None,
    exclude: tuple[str, ...] = (),
    qat: Any = None,
    max_drop: float | None = None,
    val_limit: int | None = None,
    fallback: bool = True,
    equalize_fallback: bool = True,
    backend_options: dict[str, Any] | None = None,
    targets_dirs: tuple[str, ...] = (),
    log: Callable[[str], None] = lambda s: None,
    task: str | None = None,
    features: Any = None,
    min_cosine: float | None = None,
    force: bool = False,
    progress: bool = False,
) -> CompileResult:
    """Compile ``source`` for ``target`` into the bundle directory ``out`` (atomically).

    Everything that can be checked without work is checked first (the output paths, target,
    precision, the backend and its toolchain, the model source, calibration inputs). ``out`` may
    be absent, empty or an edgeres bundle (a file or symlink there needs ``force``; a folder
    holding anything edgeres did not write is never replaced). ``progress``: show progress bars
    for calibration and validation (one line per stage without a terminal). Raises
    AccuracyRegression (exit 1) after writing the bundle when validation on ``val`` breaks
    ``max_drop`` (default: the target's threshold). ``task="features"`` compiles the backbone's
    stage outputs ``features`` (see :mod:`edgeres.task`); ``val`` then needs images only and the
    gate is ``min_cosine`` per output (accuracy-aware fallback needs labels: not applied).
    ``quant`` defaults to the target's :class:`QuantOptions` (a dict: the target's with those
    settings, e.g. ``{"num_calib": 64}``); ``exclude`` keeps ONNX nodes float;
    ``qat`` (:class:`~edgeres.training.qat.QatOptions`) allows quantization-aware fine-tuning
    when the ``max_drop`` bound cannot be met otherwise.
    """
    from edgeres.outputs import check_dir_output

    out = check_dir_output(out, "--out", kind="bundle", force=force)
    tgt, prec, backend, src = _preflight(source, target, precision, weights, calib, calib_cache, backend_options,
                                         targets_dirs, task=task, features=features)
    quant = check_quant_options(tgt, quant)
    if qat is not None:
        check_qat(src, prec, val, fallback)
    threshold = max_drop if max_drop is not None else tgt.max_drop
    timings: dict[str, float] = {}
    notes: list[str] = []
    with atomic_dir(out, check=lambda p: check_dir_output(p, "--out", kind="bundle", force=force)) as tmp:
        t = time.perf_counter()
        pre, model_name, export_info, task_rec = export_stage(src, tmp / FP32_ONNX, task=task, features=features)
        timings["export"] = time.perf_counter() - t
        log(f"exported FP32 ONNX in {timings['export']:.1f} s")
        (tmp / LABELS).write_text("".join(f"{c}\n" for c in pre.class_names))
        val_ds = open_data(val, "val", pre, limit=val_limit, allow_unlabelled=task_rec.is_features) if val else None
        deploy_onnx, quant_info = tmp / FP32_ONNX, None
        if prec == "int8":
            t = time.perf_counter()
            batches, fingerprint = open_calibration(calib, pre, quant.num_calib, progress=progress)
            quant_info = quantize_into(tmp / FP32_ONNX, tmp / INT8_ONNX, tmp / CALIB_CACHE, tgt, quant,
                                       batches=batches, fingerprint=fingerprint, calib=calib, calib_cache=calib_cache,
                                       exclude=exclude, val_ds=val_ds if fallback and not task_rec.is_features else None,
                                       max_drop=threshold, log=log, qat=qat, source=src,
                                       equalize_fallback=equalize_fallback)
            deploy_onnx = tmp / INT8_ONNX
            timings["quantize"] = time.perf_counter() - t
            log_quantized(log, quant_info, tgt, timings["quantize"], threshold)
        conformance = backend.check_deploy_model(deploy_onnx, prec)
        artifact, recipe = _compile_stage(backend, tgt, prec, deploy_onnx, tmp, out, pre, backend_options,
                                          timings, notes, log)
        backend.write_app_example(tmp)
        golden = _write_golden(tmp, pre, prec, backend, deploy_onnx, val_ds=val_ds, calib=calib)
        context = {"model": model_name, "target": tgt.name, "precision": prec, "data": str(val)}
        report = _validate_into(tmp, deploy_onnx, artifact, backend, val_ds, threshold, context, timings,
                                task=task_rec, min_cosine=min_cosine, progress=progress)
        write_manifest(tmp, {
            "model": {"name": model_name, **export_info},
            "task": task_rec.to_dict(),
            "target": tgt.to_dict(),
            "precision": prec,
            "preprocessing": pre.to_dict(),
            "onnx": {"fp32": FP32_ONNX, **({"int8": INT8_ONNX} if prec == "int8" else {})},
            "quantization": quant_info,
            "calibration_cache": CALIB_CACHE if prec == "int8" else None,
            "artifact": artifact.to_dict() if artifact else None,
            "recipe": RECIPE if recipe else None,
            "conformance": conformance,
            "golden": golden,
            "backend_options": backend_options or {},
            "validation": validation_record(report, val),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        })
    result = CompileResult(out, tgt, prec, report, timings, artifact, notes)
    if report is not None and not report.passed:
        raise AccuracyRegression(regression_message(report, out))
    return result


def _preflight(source: str, target: str | Target, precision: str | None, weights: str | None, calib: str | None,
               calib_cache: str | os.PathLike | None, backend_options: dict[str, Any] | None,
               targets_dirs: tuple[str, ...], *, task: str | None = None,
               features: Any = None) -> tuple[Target, str, Any, Any]:
    """(target, precision, backend, model source): everything checked that needs no work."""
    from edgeres.export import resolve_source
    from edgeres.outputs import check_calib_cache

    if calib_cache is not None:
        check_calib_cache(calib_cache)
    tgt, prec, backend = preflight(target, precision, backend_options, targets_dirs)
    if features is not None and check_task(task) != "features":
        raise UsageError("--features needs --task features")
    src = resolve_source(source, weights, task=task)
    if prec == "int8" and not calib and not calib_cache:
        raise UsageError("--precision int8 needs calibration images: pass --calib DIR (any folder of the model's "
                         "kind of images, e.g. one `edgeres make-data data/shapes` wrote; `--calib builtin` for the "
                         "built-in 32x32 set) or an existing --calib-cache FILE, or choose --precision fp32")
    return tgt, prec, backend, src


def _compile_stage(backend: Any, tgt: Target, prec: str, deploy_onnx: Path, tmp: Path, out: Path,
                   pre: Preprocessing, backend_options: dict[str, Any] | None, timings: dict[str, float],
                   notes: list[str], log: Callable[[str], None]) -> tuple[Any, dict[str, Any] | None]:
    """(artifact, None) when this machine can build for ``tgt``; else (None, the device-build recipe)."""
    t = time.perf_counter()
    buildable, why = backend.buildable_here(tgt, backend_options, bundle=str(out))
    if buildable:
        artifact = backend.compile(deploy_onnx, tgt, tmp / ARTIFACT_DIR, precision=prec, options=backend_options)
        timings["compile"] = time.perf_counter() - t
        log(f"compiled with {tgt.backend} in {timings['compile']:.1f} s"
            + (f"; {artifact.info['int8_note']}" if artifact.info.get("int8_note") else ""))
        return artifact, None
    recipe = backend.build_recipe(tgt, prec, deploy_onnx.name, input_chw=(3, *pre.input_size),
                                  options=backend_options, bundle=str(out))
    write_json(tmp / RECIPE, recipe)
    notes.append(f"engine not built here ({why})")
    return None, recipe


def _validate_into(tmp: Path, deploy_onnx: Path, artifact: Any, backend: Any, val_ds: Any, max_drop: float | None,
                   context: dict[str, Any], timings: dict[str, float], *, task: Task | None = None,
                   min_cosine: float | None = None, progress: bool = False) -> Any:
    """Validate the bundle being written (when there are validation images) and write its report."""
    if val_ds is None:
        return None
    t = time.perf_counter()
    report = _validate(tmp / FP32_ONNX, deploy_onnx, artifact, backend, val_ds, max_drop, context, task=task,
                       min_cosine=min_cosine, progress=progress)
    report.write(tmp / REPORT)
    timings["validate"] = time.perf_counter() - t
    return report


def _write_golden(tmp: Path, pre: Preprocessing, prec: str, backend: Any, deploy_onnx: Path, *, val_ds: Any,
                  calib: str | None) -> dict[str, Any]:
    """The bundle's golden self-test (inputs, expected outputs on ONNX Runtime, tolerance): validation
    images if given, else calibration images, else deterministic synthetic ones."""
    from edgeres.backends import reference_runner
    from edgeres.golden import dataset_inputs, golden_count, synthetic_inputs, write_golden

    count = golden_count((3, *pre.input_size))
    if val_ds is not None:
        x, source = dataset_inputs(val_ds, count), "validation data"
    elif calib:
        ds = open_data(calib, "calib", pre, limit=max(64, count), allow_unlabelled=True)
        x, source = dataset_inputs(ds, count), "calibration data"
    else:
        x, source = synthetic_inputs(pre, count), "synthetic (deterministic)"
    fp32 = reference_runner(tmp / FP32_ONNX)
    quantized = deploy_onnx != tmp / FP32_ONNX
    return write_golden(tmp, x, expected_runner=reference_runner(deploy_onnx) if quantized else fp32,
                        reference_runner=fp32 if quantized else None, tolerance=backend.selftest_tolerance(prec),
                        precision=prec, source=source,
                        expected_from=f"{deploy_onnx.name} on ONNX Runtime")


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
              context: dict[str, Any], *, task: Task | None = None, min_cosine: float | None = None,
              protocol: Any = None, progress: bool = False, runner: Any = None) -> Any:
    """AccuracyReport of the artifact (or ``runner``, e.g. one on a remote board) vs FP32 on labelled
    ``ds`` (under ``protocol``: 10-crop, multi-scale; default 1-crop); for a feature extractor, a
    FeatureReport."""
    from edgeres.backends import reference_runner
    from edgeres.data import iter_batches
    from edgeres.progress import track

    reference = reference_runner(fp32_onnx)
    runner_name = context.get("backend")
    if runner is None:
        runner, runner_name = _artifact_runner(artifact, backend, deploy_onnx)
    ctx = {**context, "backend": runner_name, "data_fingerprint": ds.fingerprint()}
    if task is None or not task.is_features:
        from edgeres.protocols import validate_with_protocol

        if protocol is not None and not protocol.plain:
            return validate_with_protocol(fp32_onnx, deploy_onnx, artifact, reference, runner, runner_name, ds,
                                          max_drop, ctx, protocol)
        ctx["protocol"] = "1-crop"
        batches = track(iter_batches(ds, EVAL_BATCH), "validating", len(ds), "images", count=lambda b: len(b[0]),
                        enabled=progress)
        return compare(reference, runner, batches, max_drop=max_drop, context=ctx)
    from edgeres.errors import BackendUnavailable
    from edgeres.similarity import DEFAULT_MIN_COSINE, compare_features

    gate = DEFAULT_MIN_COSINE if min_cosine is None else min_cosine
    try:
        return compare_features(reference, runner, iter_batches(ds, EVAL_BATCH), task.output_names,
                                min_cosine=gate, context=ctx)
    except BackendUnavailable as e:  # a runner that returns the first output only (emulated C++ runner)
        ctx["backend"] = f"onnxruntime ({e})"
        return compare_features(reference, reference_runner(deploy_onnx), iter_batches(ds, EVAL_BATCH),
                                task.output_names, min_cosine=gate, context=ctx)


def validate_bundle(bundle: str | os.PathLike | Bundle, data: str, *, max_drop: float | None = None,
                    limit: int | None = None, verify: bool = True, min_cosine: float | None = None,
                    protocol: Any = None, progress: bool = False, device: Any = None) -> Any:
    """Validate a bundle's artifact against its FP32 ONNX on labelled images ``data``.

    ``max_drop`` defaults to the bundle target's threshold. A feature extractor's bundle is
    compared output by output on the images of ``data`` (labels not needed), gated by
    ``min_cosine``, and gives a FeatureReport. ``protocol``: an :class:`edgeres.protocols.Protocol`
    (10-crop, multi-scale; classifiers only; default 1-crop). ``device`` (an
    :class:`edgeres.devices.DeviceSpec`) runs the artifact on that board, through the backend's
    :meth:`~edgeres.backends.base.Backend.open_device`; the reference still runs here. Returns the
    report; the caller decides what a failure means (the CLI exits 1).
    """
    from edgeres.backends import get_backend

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=verify)
    task = b.task
    if task.is_features and max_drop is not None:
        raise UsageError(f"{b.root} is a feature extractor ({', '.join(task.output_names)}): it has no top-1 to "
                         "gate with --max-drop; gate it with --min-cosine")
    if not task.is_features and min_cosine is not None:
        raise UsageError(f"{b.root} is a classifier: --min-cosine gates a feature extractor's outputs; "
                         "gate a classifier with --max-drop")
    if task.is_features and protocol is not None and not protocol.plain:
        raise UsageError(f"{b.root} is a feature extractor: --crops/--scales average a classifier's softmax; "
                         "validate it with the default single crop")
    backend = get_backend(b.backend, require=False)
    art = b.artifact()
    if art is not None or device is not None:
        backend.require()  # BackendUnavailable with the install hint
    threshold = max_drop if max_drop is not None else b.manifest["target"].get("max_drop")
    ds = open_data(data, "val", b.preprocessing, limit=limit, allow_unlabelled=task.is_features)
    ctx = {"model": b.manifest["model"]["name"], "target": b.target_name, "precision": b.precision,
           "bundle": str(b.root), "data": str(data)}
    kw = {"task": task, "min_cosine": min_cosine, "protocol": protocol, "progress": progress}
    if device is None:
        return _validate(b.file("fp32"), b.deploy_onnx, art, backend, ds, threshold, ctx, **kw)
    if art is None:
        raise UsageError(f"bundle {b.root} holds no compiled artifact to run on {device.label}; build it first")
    with backend.open_device(device) as board:
        runner = board.load(art)  # refuses an artifact the board cannot run, before uploading it
        ctx = {**ctx, "backend": f"{art.backend} on {device.label}", "device": board.describe()}
        return _validate(b.file("fp32"), b.deploy_onnx, art, backend, ds, threshold, ctx, runner=runner, **kw)
