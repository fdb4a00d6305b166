"""TensorRT backend: ONNX (FP32, FP16 or explicit Q/DQ INT8) -> serialized engine -> Runner.

Interface (see :mod:`edgeres.backends`): ``NAME``, ``available()``, ``unavailable_reason()``,
``version()``, ``compile(...) -> Artifact``, ``load(artifact) -> Runner``. Extra helpers for
bundles built elsewhere: ``build_recipe``, ``check_buildable_here``, ``convert_to_fp16``,
``copy_cpp_template``.

Version shims live in :mod:`edgeres.backends.tensorrt_build` (builder) and
:mod:`edgeres.backends.tensorrt_runtime` (runner); both are selected from
``tensorrt.__version__``. ``tensorrt_rtx`` is never used to build engines here: it is a
different product (see :mod:`edgeres.conformance` for what it is good for).
"""

from __future__ import annotations

import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from edgeres.backends.base import Artifact, Runner
from edgeres.backends.tensorrt_build import api_family, build_engine, convert_to_fp16, onnx_summary
from edgeres.backends.tensorrt_options import TrtOptions, resolve_options
from edgeres.backends.tensorrt_recipe import build_recipe, check_buildable_here, import_tensorrt
from edgeres.backends.tensorrt_runtime import SIDECAR, TrtRunner, read_sidecar
from edgeres.errors import BackendUnavailable, CompileError, InputError, UsageError
from edgeres.fileio import sha256_file, write_json

__all__ = [
    "NAME", "ENGINE", "SIDECAR", "available", "unavailable_reason", "version", "compile", "load",
    "build_recipe", "check_buildable_here", "convert_to_fp16", "copy_cpp_template", "resolve_options",
]

NAME = "tensorrt"
ENGINE = "model.engine"
TIMING_CACHE = "timing.cache"


def unavailable_reason() -> str:
    """Why ``available()`` is False ("" when it is True)."""
    from edgeres.backends.tensorrt_cuda import gpu_info

    trt, why = import_tensorrt()
    if trt is None:
        return why
    if gpu_info() is None:
        return f"TensorRT {trt.__version__} is installed but no CUDA GPU was found"
    return ""


def available() -> bool:
    """True when the ``tensorrt`` package imports and a CUDA GPU is visible."""
    return unavailable_reason() == ""


def version() -> str | None:
    trt, _ = import_tensorrt()
    return str(trt.__version__) if trt is not None else None


def _check_onnx_for_precision(onnx_path: Path, precision: str, family: str) -> dict[str, Any]:
    summary = onnx_summary(onnx_path)
    if precision == "int8":
        if not summary["has_qdq"]:
            raise UsageError(
                f"{onnx_path.name} has no Q/DQ nodes; TensorRT builds INT8 only from an explicit Q/DQ ONNX: "
                "quantize it first in the tensorrt form (edgeres quantize ... --form tensorrt)"
            )
        from edgeres.conformance import check_qdq

        report = check_qdq(onnx_path, parse_with_trt=False)
        if not report.ok:
            rule, node, msg = report.issues[0]
            more = f" (+{len(report.issues) - 1} more)" if len(report.issues) > 1 else ""
            raise CompileError(f"{onnx_path.name} is not TensorRT-conformant Q/DQ: [{rule}] {node}: {msg}{more}")
    elif summary["has_qdq"]:
        raise UsageError(f"{onnx_path.name} is a Q/DQ INT8 model; build it with --precision int8, or pass the FP32 ONNX for {precision}")
    elif precision == "fp32" and summary["has_fp16"] and family == "strongly-typed":
        raise UsageError(f"{onnx_path.name} has FP16 tensors; strongly typed TensorRT would run them in FP16: pass the FP32 ONNX for fp32")
    return summary


def compile(onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
            options: Mapping[str, Any] | None = None) -> Artifact:
    """Build ``out_dir/model.engine`` (+ ``engine.json``) for ``target`` with the installed TensorRT.

    Raises BackendUnavailable (with where to build instead) when this machine cannot build
    for the target: no TensorRT, no GPU, another GPU, or a Jetson target off the device.
    ``options`` may override the target's ``dla_core``, ``workspace_mb``, ``batch``,
    ``hardware_compatibility``, ``version_compatible``, ``int8_allow_fp16`` and ``timing_cache``.
    """
    from edgeres.backends.tensorrt_cuda import gpu_info

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise InputError(f"ONNX file {onnx_path} does not exist; export the model first")
    if precision not in target.precisions:
        raise UsageError(f"target {target.name} supports precisions {list(target.precisions)}, not {precision!r}")
    opts = resolve_options(target, options)
    ok, reason = check_buildable_here(target, options)
    if not ok:
        raise BackendUnavailable(f"cannot build the {target.name} engine here: {reason}")
    trt, _ = import_tensorrt()
    family = api_family(trt.__version__)
    summary = _check_onnx_for_precision(onnx_path, precision, family)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_onnx, converted = onnx_path, False
    if family == "strongly-typed" and precision == "fp16" and not summary["has_fp16"]:
        build_onnx = convert_to_fp16(onnx_path, out_dir / f"{onnx_path.stem}_fp16.onnx")
        converted = True
    timing = _timing_cache_path(opts, out_dir)
    t0 = time.perf_counter()
    engine_path = out_dir / ENGINE
    applied = build_engine(trt, build_onnx, engine_path, opts, precision, timing)
    seconds = time.perf_counter() - t0
    gpu = gpu_info() or {}
    meta = {
        "format": "edgeres-tensorrt-engine/1",
        "engine": ENGINE,
        "engine_sha256": sha256_file(engine_path),
        "tensorrt_version": str(trt.__version__),
        "api": family,
        "gpu": gpu,
        "compute_capability": gpu.get("compute_capability"),
        "target": target.name,
        "precision": precision,
        "onnx": build_onnx.name,
        "onnx_sha256": sha256_file(build_onnx),
        "onnx_converted_to_fp16": converted,
        "input_name": summary["input_name"],
        "input_shape": summary["input_shape"],
        "build": {**applied, **opts.to_dict()},
        "build_seconds": round(seconds, 3),
    }
    write_json(out_dir / SIDECAR, meta)
    files = [ENGINE, SIDECAR] + ([build_onnx.name] if converted else [])
    return Artifact(
        backend=NAME,
        path=engine_path,
        precision=precision,
        input_name=summary["input_name"],
        input_shape=tuple(summary["input_shape"]),  # batch is -1 when the engine has a dynamic profile
        files=tuple(files),
        compile_seconds=seconds,
        info={k: meta[k] for k in ("tensorrt_version", "api", "gpu", "compute_capability", "target", "build")},
    )


def _timing_cache_path(opts: TrtOptions, out_dir: Path) -> Path | None:
    if opts.timing_cache == "":
        return None
    return Path(opts.timing_cache) if opts.timing_cache else out_dir / TIMING_CACHE


def load(artifact: Artifact | str | os.PathLike, target: Any = None) -> Runner:
    """Deserialize the engine and return a Runner (NCHW float32 batch of any size -> logits)."""
    trt, why = import_tensorrt()
    if trt is None:
        raise BackendUnavailable(f"cannot run a TensorRT engine here: {why}; install it with: pip install 'edgeres[tensorrt]'")
    path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
    if path.is_dir():
        path = path / ENGINE
    if not path.is_file():
        raise InputError(f"TensorRT engine {path} does not exist; build it with `edgeres build-engine BUNDLE`")
    return TrtRunner(trt, path, read_sidecar(path))


def cpp_template_files() -> list[str]:
    """Names of the C++ example's files shipped in the package (``templates/tensorrt_cpp``)."""
    root = resources.files("edgeres") / "templates" / "tensorrt_cpp"
    return sorted(p.name for p in root.iterdir() if p.is_file())


def copy_cpp_template(dest: str | os.PathLike) -> list[Path]:
    """Copy the C++ engine-runner example (main.cpp, CMakeLists.txt, README.md) into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = resources.files("edgeres") / "templates" / "tensorrt_cpp"
    out = []
    for name in cpp_template_files():
        with resources.as_file(root / name) as src:
            shutil.copyfile(src, dest / name)
        out.append(dest / name)
    return out
