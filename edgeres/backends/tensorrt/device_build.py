"""``edgeres build-engine BUNDLE``: build a bundle's TensorRT engine on the device
(Jetson, or any NVIDIA host that matches the target) and record it in the bundle."""

from __future__ import annotations

import os
import time
from typing import Any

from edgeres.bundle import ARTIFACT_DIR, REPORT, Bundle, load_bundle, write_manifest
from edgeres.errors import AccuracyRegression, BackendUnavailable, UsageError
from edgeres.evaluate import AccuracyReport
from edgeres.fileio import atomic_dir

_MANIFEST_AUTO = ("format", "created", "versions", "host", "files")


def build_bundle_engine(bundle: str | os.PathLike, *, options: dict[str, Any] | None = None,
                        data: str | None = None, max_drop: float | None = None,
                        limit: int | None = None) -> tuple[Bundle, AccuracyReport | None]:
    """Build the engine with the installed TensorRT into ``BUNDLE/artifact`` and update the manifest.

    With ``data``, validate the engine against the bundle's FP32 ONNX; raises
    AccuracyRegression (after recording the report) when ``max_drop`` is broken.
    """
    from edgeres.backends import get_backend
    from edgeres.pipeline import get_target_from_manifest, regression_message, validate_bundle, validation_record

    b = load_bundle(bundle)
    if b.backend != "tensorrt":
        raise UsageError(f"bundle {b.root} targets {b.target_name} ({b.backend}); build-engine is for TensorRT "
                         "bundles — it already holds its compiled artifact")
    tgt = get_target_from_manifest(b)
    merged = {**b.manifest.get("backend_options", {}), **(options or {})}
    backend = get_backend("tensorrt", require=False)
    ok, why = backend.buildable_here(tgt, merged or None, bundle=str(b.root))
    if not ok:
        raise BackendUnavailable(f"cannot build the engine here: {why}")
    t = time.perf_counter()
    with atomic_dir(b.root / ARTIFACT_DIR) as tmp:
        artifact = backend.compile(b.deploy_onnx, tgt, tmp, precision=b.precision, options=merged or None)
    seconds = time.perf_counter() - t
    record = {k: v for k, v in b.manifest.items() if k not in _MANIFEST_AUTO}
    record["artifact"] = artifact.to_dict()
    record["backend_options"] = merged
    record.setdefault("timings", {})["build_engine"] = round(seconds, 3)
    write_manifest(b.root, record)
    b = load_bundle(b.root)
    report = None
    if data:
        report = validate_bundle(b, data, max_drop=max_drop, limit=limit)
        report.write(b.root / REPORT)
        record["validation"] = validation_record(report, data)
        write_manifest(b.root, record)
        b = load_bundle(b.root)
        if not report.passed:
            raise AccuracyRegression(f"engine: {regression_message(report, b.root)}")
    return b, report


__all__ = ["build_bundle_engine"]
