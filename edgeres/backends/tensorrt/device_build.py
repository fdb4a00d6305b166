"""``edgeres build-engine BUNDLE``: build a bundle's TensorRT engine on the device (Jetson, or any NVIDIA
host that matches the target), check it with the bundle's golden self-test, and record it in the bundle.

With TensorRT's Python bindings (8.5+) the engine is built through the API; without them (or with
TensorRT 8.0-8.4) the recipe's exact ``trtexec`` line is printed and run. The timing cache lives
outside the bundle's atomic temporary directory (see
:func:`~edgeres.backends.tensorrt.backend.timing_cache_path`), so a rebuild starts warm; its path and
sha256, the TensorRT version, the GPU and the builder flags are recorded in the manifest
(``artifact.info.reproducibility``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from edgeres.bundle import ARTIFACT_DIR, REPORT, Bundle, load_bundle, write_manifest
from edgeres.errors import AccuracyRegression, UsageError
from edgeres.evaluate import AccuracyReport
from edgeres.fileio import atomic_dir, sha256_file, write_json

_MANIFEST_AUTO = ("format", "created", "versions", "host", "files")


@dataclass
class EngineBuild:
    bundle: Bundle
    method: str  # "python" (TensorRT's Python API) or "trtexec"
    command: list[str] | None  # the trtexec line that ran
    placement: str  # one line: where the layers run
    selftest: Any = None  # edgeres.selftest.SelftestResult
    report: AccuracyReport | None = None


def _trtexec_artifact(exe: str, version: str, b: Bundle, tgt: Any, out_dir: Any, options: dict[str, Any],
                      log: Callable[[str], None]) -> tuple[dict[str, Any], list[str]]:
    from edgeres.backends.base import Artifact
    from edgeres.backends.tensorrt.backend import ENGINE, NAME, SIDECAR, reproducibility, timing_cache_path
    from edgeres.backends.tensorrt.cuda import gpu_info
    from edgeres.backends.tensorrt.options import resolve_options
    from edgeres.backends.tensorrt.trtexec import compile_with_trtexec

    opts = resolve_options(tgt, options)
    timing = timing_cache_path(opts, version, (gpu_info() or {}).get("compute_capability"))
    before = sha256_file(timing) if timing is not None and timing.is_file() else None
    meta, argv = compile_with_trtexec(exe, version, b.deploy_onnx, tgt, out_dir, precision=b.precision,
                                      options=options, timing_cache=timing, log=log)
    meta["build"]["timing_cache_reused"] = before is not None
    meta["reproducibility"] = reproducibility(meta, timing, before, method="trtexec", command=argv)
    write_json(out_dir / SIDECAR, meta)
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file())
    art = Artifact(backend=NAME, path=out_dir / ENGINE, precision=b.precision, input_name=meta["input_name"],
                   input_shape=tuple(meta["input_shape"]), files=tuple(files), compile_seconds=meta["build_seconds"],
                   info={k: meta[k] for k in ("tensorrt_version", "api", "gpu", "compute_capability", "target",
                                              "build", "reproducibility")})
    return art.to_dict(), argv


def _rewrite(b: Bundle, record: dict[str, Any]) -> Bundle:
    write_manifest(b.root, record)
    return load_bundle(b.root)


def build_bundle_engine(bundle: str | os.PathLike, *, options: dict[str, Any] | None = None, data: str | None = None,
                 max_drop: float | None = None, limit: int | None = None, selftest: bool = True,
                 log: Callable[[str], None] = lambda s: None) -> EngineBuild:
    """Build the engine into ``BUNDLE/artifact``, run the golden self-test on it, update the manifest.

    Raises BackendUnavailable (one line: what is missing, how to get it) when this machine cannot
    build; AccuracyRegression (exit 1, after recording the numbers) when the self-test fails or, with
    ``data``, when validation breaks ``max_drop``.
    """
    from edgeres.backends import get_backend
    from edgeres.backends.tensorrt.options import check_dla, resolve_options
    from edgeres.backends.tensorrt.trtexec import build_method
    from edgeres.pipeline import validate_bundle
    from edgeres.targets import get_target_from_manifest
    from edgeres.reports import regression_message, validation_record

    b = load_bundle(bundle)
    if b.backend != "tensorrt":
        raise UsageError(f"bundle {b.root} targets {b.target_name} ({b.backend}); build-engine is for TensorRT "
                         "bundles — it already holds its compiled artifact")
    tgt = get_target_from_manifest(b)
    merged = {**b.manifest.get("backend_options", {}), **(options or {})}
    check_dla(resolve_options(tgt, merged or None), b.precision)
    method, version, exe = build_method(tgt, merged or None, bundle=str(b.root))
    check_dla(resolve_options(tgt, merged or None), b.precision, version)
    log(f"building {b.target_name} {b.precision} with TensorRT {version} ({'Python API' if method == 'python' else exe})")
    t = time.perf_counter()
    command = None
    with atomic_dir(b.root / ARTIFACT_DIR) as tmp:
        if method == "python":
            art = get_backend("tensorrt", require=False).compile(b.deploy_onnx, tgt, tmp, precision=b.precision,
                                                                 options=merged or None).to_dict()
        else:
            art, command = _trtexec_artifact(str(exe), version, b, tgt, tmp, merged, log)
    record = {k: v for k, v in b.manifest.items() if k not in _MANIFEST_AUTO}
    record["artifact"] = art
    record["backend_options"] = merged
    record.setdefault("timings", {})["build_engine"] = round(time.perf_counter() - t, 3)
    b = _rewrite(b, record)
    build = art["info"].get("build", {})
    result = EngineBuild(b, method, command, _placement_line(b, build))
    if selftest and not b.manifest.get("golden"):
        log("note: this bundle has no golden self-test (made by an older edgeres); recompile it to add one")
    elif selftest:
        from edgeres.selftest import run_selftest

        result.selftest = run_selftest(b)
        record["selftest"] = result.selftest.to_dict()
        b = result.bundle = _rewrite(b, record)
        if not result.selftest.passed:
            raise AccuracyRegression(f"the engine fails the bundle's golden self-test: {result.selftest.line()}")
    if data:
        result.report = validate_bundle(b, data, max_drop=max_drop, limit=limit)
        result.report.write(b.root / REPORT)
        record["validation"] = validation_record(result.report, data)
        result.bundle = _rewrite(b, record)
        if not result.report.passed:
            raise AccuracyRegression(f"engine: {regression_message(result.report, b.root)}")
    return result


def _placement_line(b: Bundle, build: dict[str, Any]) -> str:
    """Where the layers run, from the engine record (engine.json) of the new artifact."""
    import json

    from edgeres.backends.tensorrt.placement import summary

    side = b.root / ARTIFACT_DIR / "engine.json"
    meta = json.loads(side.read_text()) if side.is_file() else {}
    layers = meta.get("layers") or {}
    inspected = ({"available": True, "num_layers": layers["num_layers"]} if layers.get("file")
                 else {"available": False, "reason": layers.get("reason", "not inspected")})
    return summary(build.get("placement"), inspected)


__all__ = ["EngineBuild", "build_bundle_engine"]
