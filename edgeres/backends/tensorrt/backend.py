"""TensorRT backend: ONNX (FP32, FP16 or explicit Q/DQ INT8) -> serialized engine -> Runner.

:class:`TensorRTBackend` is the declared interface (:class:`~edgeres.backends.base.Backend`);
it can hand the build to the device (``device_build``): where this machine cannot build for
the target, the bundle carries ``build_recipe`` and the engine is built on the device with
``edgeres build-engine`` (:mod:`edgeres.backends.tensorrt.device_build`).

Version shims live in :mod:`edgeres.backends.tensorrt.builder` (builder) and
:mod:`edgeres.backends.tensorrt.runner` (runner); both are selected from
``tensorrt.__version__``. ``tensorrt_rtx`` is never used to build engines here: it is a
different product (see :mod:`edgeres.backends.tensorrt.conformance` for what it is good for).
"""

from __future__ import annotations

import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from edgeres.backends.base import Artifact, Backend, Capabilities, Runner
from edgeres.backends.tensorrt.builder import api_family, build_engine, convert_to_fp16, onnx_summary
from edgeres.backends.tensorrt.options import TrtOptions, resolve_options
from edgeres.backends.tensorrt.recipe import build_recipe, check_buildable_here, import_tensorrt
from edgeres.backends.tensorrt.runner import SIDECAR, TrtRunner, read_sidecar
from edgeres.errors import BackendUnavailable, CompileError, InputError, UsageError
from edgeres.fileio import sha256_file, write_json

NAME = "tensorrt"
ENGINE = "model.engine"
TIMING_CACHE = "timing.cache"
LAYERS = "layers.json"


def unavailable_reason() -> str:
    """Why ``available()`` is False ("" when it is True)."""
    from edgeres.backends.tensorrt.cuda import gpu_info

    trt, why = import_tensorrt()
    what = f"TensorRT {trt.__version__}" if trt is not None else None
    if trt is None:
        from edgeres.backends.tensorrt.trtexec import find_trtexec

        exe = find_trtexec()
        if exe is None:
            return why
        what = f"trtexec ({exe})"  # JetPack without the Python bindings: engines run through trtexec
    gpu = gpu_info()
    if gpu is None:
        return f"{what} is installed but no CUDA GPU was found"
    if gpu.get("cuda_error"):
        return f"{what} is installed but CUDA cannot use {gpu['name']} ({gpu['cuda_error']})"
    return ""


def available() -> bool:
    """True when TensorRT (the Python package, or trtexec) and a usable CUDA GPU are here."""
    return unavailable_reason() == ""


def version() -> str | None:
    trt, _ = import_tensorrt()
    if trt is not None:
        return str(trt.__version__)
    from edgeres.backends.tensorrt.trtexec import find_trtexec, trtexec_version

    exe = find_trtexec()
    return trtexec_version(exe) if exe is not None else None


def _check_onnx_for_precision(onnx_path: Path, precision: str, family: str) -> dict[str, Any]:
    summary = onnx_summary(onnx_path)
    if precision == "int8":
        if not summary["has_qdq"]:
            raise UsageError(
                f"{onnx_path.name} has no Q/DQ nodes; TensorRT builds INT8 only from an explicit Q/DQ ONNX: "
                "quantize it first in the tensorrt form (edgeres quantize ... --form tensorrt)"
            )
        from edgeres.backends.tensorrt.conformance import check_qdq

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
    from edgeres.backends.tensorrt.cuda import gpu_info

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
    gpu = gpu_info() or {}
    timing = timing_cache_path(opts, str(trt.__version__), gpu.get("compute_capability"))
    cache_before = sha256_file(timing) if timing is not None and timing.is_file() else None
    t0 = time.perf_counter()
    engine_path = out_dir / ENGINE
    applied = build_engine(trt, build_onnx, engine_path, opts, precision, timing)
    seconds = time.perf_counter() - t0
    layers = applied.pop("layers", None)
    if layers and layers.get("available"):
        write_json(out_dir / LAYERS, layers)
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
        "layers": ({"file": LAYERS, "num_layers": layers["num_layers"]} if layers and layers.get("available")
                   else {"file": None, "reason": (layers or {}).get("reason", "not inspected")}),
    }
    meta["reproducibility"] = reproducibility(meta, timing, cache_before, method="python")
    write_json(out_dir / SIDECAR, meta)
    files = [ENGINE, SIDECAR] + ([LAYERS] if (out_dir / LAYERS).is_file() else []) + ([build_onnx.name] if converted else [])
    return Artifact(
        backend=NAME,
        path=engine_path,
        precision=precision,
        input_name=summary["input_name"],
        input_shape=tuple(summary["input_shape"]),  # batch is -1 when the engine has a dynamic profile
        files=tuple(files),
        compile_seconds=seconds,
        info={k: meta[k] for k in ("tensorrt_version", "api", "gpu", "compute_capability", "target", "build",
                                   "reproducibility")},
    )


def timing_cache_path(opts: TrtOptions, trt_version: str, compute_capability: str | None) -> Path | None:
    """Where the builder's timing cache lives: the ``timing_cache`` option, or one file per TensorRT
    version and GPU under ``$EDGERES_CACHE_DIR`` (default ``~/.cache/edgeres``)/tensorrt -- never inside
    the artifact being written, so every later build on this machine starts warm. ``""`` disables it."""
    if opts.timing_cache == "":
        return None
    if opts.timing_cache:
        return Path(opts.timing_cache).expanduser()
    root = Path(os.environ.get("EDGERES_CACHE_DIR") or Path.home() / ".cache" / "edgeres")
    return root / "tensorrt" / f"timing-trt{trt_version}-sm{compute_capability or 'unknown'}.cache"


def reproducibility(meta: dict[str, Any], timing: Path | None, cache_before: str | None, *, method: str,
                    command: list[str] | None = None) -> dict[str, Any]:
    """What it takes to rebuild this engine the same way: TensorRT, GPU, flags, inputs, the timing cache."""
    import platform

    build = meta.get("build", {})
    jet = (meta.get("gpu") or {}).get("jetson") or {}
    return {
        "method": method, "command": command,
        "tensorrt_version": meta.get("tensorrt_version"), "api": meta.get("api"),
        "gpu": (meta.get("gpu") or {}).get("name"), "compute_capability": meta.get("compute_capability"),
        "l4t": jet.get("l4t"), "jetpack": jet.get("jetpack"),
        "flags": build.get("flags", []), "cleared_flags": build.get("cleared_flags", []),
        "onnx_sha256": meta.get("onnx_sha256"), "engine_sha256": meta.get("engine_sha256"),
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "timing_cache": None if timing is None else {
            "path": str(timing), "sha256_before": cache_before,
            "sha256": sha256_file(timing) if timing.is_file() else None,
            "reused": bool(build.get("timing_cache_reused", False))},
    }


def load(artifact: Artifact | str | os.PathLike, target: Any = None) -> Runner:
    """Deserialize the engine and return a Runner (NCHW float32 batch of any size -> logits)."""
    from edgeres.backends.tensorrt.builder import MIN_PYTHON_API
    from edgeres.backends.tensorrt.options import parse_version

    path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
    if path.is_dir():
        path = path / ENGINE
    trt, why = import_tensorrt()
    if trt is None or parse_version(str(trt.__version__))[:2] < MIN_PYTHON_API:
        from edgeres.backends.tensorrt.trtexec import TrtexecRunner, find_trtexec

        exe = find_trtexec()
        if exe is None:
            why = why or f"TensorRT {trt.__version__} predates the 8.5 Python API"
            raise BackendUnavailable(f"cannot run a TensorRT engine here: {why}, and there is no trtexec; "
                                     f"{TensorRTBackend().install_hint()}")
        if not path.is_file():
            raise InputError(f"TensorRT engine {path} does not exist; build it with `edgeres build-engine BUNDLE`")
        return TrtexecRunner(exe, path, read_sidecar(path))
    if not path.is_file():
        raise InputError(f"TensorRT engine {path} does not exist; build it with `edgeres build-engine BUNDLE`")
    return TrtRunner(trt, path, read_sidecar(path))


def cpp_template_files() -> list[str]:
    """Names of the C++ example's files shipped in the package (``backends/tensorrt/cpp_template``)."""
    root = resources.files("edgeres.backends.tensorrt") / "cpp_template"
    return sorted(p.name for p in root.iterdir() if p.is_file())


def copy_cpp_template(dest: str | os.PathLike) -> list[Path]:
    """Copy the C++ engine-runner example (main.cpp, CMakeLists.txt, README.md) into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = resources.files("edgeres.backends.tensorrt") / "cpp_template"
    out = []
    for name in cpp_template_files():
        with resources.as_file(root / name) as src:
            shutil.copyfile(src, dest / name)
        out.append(dest / name)
    return out


class TensorRTBackend(Backend):
    """TensorRT 8.5-11 on NVIDIA GPUs and Jetson; engines built here or on the device."""

    name = NAME
    extra = "edgeres[tensorrt]"
    capabilities = Capabilities(precisions=("fp32", "fp16", "int8"), device_build=True, cpp_example=True)

    def unavailable_reason(self) -> str:
        return unavailable_reason()

    def version(self) -> str | None:
        return version()

    def compile(self, onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
                options: Mapping[str, Any] | None = None) -> Artifact:
        return compile(onnx_path, target, out_dir, precision=precision, options=options)

    def load(self, artifact: Artifact | str | os.PathLike, target: Any = None, *,
             variant: str | None = None) -> Runner:
        self.no_variants(variant)
        return load(artifact, target)

    def preflight(self, target: Any, precision: str, options: Mapping[str, Any] | None = None) -> None:
        """The options must resolve (and a DLA build be possible); TensorRT itself may be absent (the engine
        is then built on the device)."""
        from edgeres.backends.tensorrt.options import check_dla

        check_dla(resolve_options(target, options), precision)

    def install_hint(self) -> str:
        return ("on Jetson: sudo apt install python3-libnvinfer (JetPack's TensorRT; libnvinfer-bin has trtexec) "
                "and use a venv made with --system-site-packages; on an x86/SBSA host: pip install tensorrt-cu12 "
                "(the wheel for your driver's CUDA major)")

    def doctor_checks(self, target: Any, root: Path = Path("/")) -> list[dict[str, Any]]:
        from edgeres.backends.tensorrt.diagnose import doctor_checks

        return doctor_checks(target, root)

    def buildable_here(self, target: Any, options: Mapping[str, Any] | None = None, *,
                       bundle: str = "BUNDLE") -> tuple[bool, str]:
        return check_buildable_here(target, options, bundle=bundle)

    def check_deploy_model(self, onnx_path: Path, precision: str) -> dict[str, Any] | None:
        """The GPU-free Q/DQ check (structural rules + TensorRT's parser where installed) of an INT8
        model; a failure here is a quantizer bug, never something to ship."""
        if precision != "int8":
            return None
        from edgeres.backends.tensorrt.conformance import check_qdq, format_report

        rep = check_qdq(onnx_path)
        if not rep.ok:
            raise CompileError(f"the Q/DQ model fails TensorRT's rules: {format_report(rep).splitlines()[0]}; "
                               "please report this to edgeres with the model")
        return rep.to_dict()

    def build_recipe(self, target: Any, precision: str, onnx_name: str, *, input_chw: tuple[int, ...],
                     options: Mapping[str, Any] | None = None, bundle: str = "BUNDLE") -> dict[str, Any]:
        return build_recipe(target, precision, onnx_name, input_chw=input_chw, options=options, bundle=bundle)

    def write_app_example(self, bundle_dir: Path) -> None:
        copy_cpp_template(bundle_dir / "cpp")
