"""How to build a target's engine where it can be built, and whether (and how) this machine can.

``build_recipe`` is pure (no TensorRT, no GPU): it describes the on-device build for every
TensorRT API family in the target's version range, as ``trtexec`` command lines and as the
recommended ``edgeres build-engine BUNDLE``. ``check_buildable_here`` looks at this machine
(TensorRT's Python bindings, the GPU, its compute capability, the CPU architecture);
:func:`edgeres.backends.tensorrt.trtexec.build_method` adds the fallback for a board without the
Python bindings: JetPack's ``trtexec``.

TensorRT families: 8.0-8.4 (JetPack 4.6 / 5.0.2; ``--workspace``, no name-based Python API: trtexec
only), 8.5-10.x (precision flags ``--int8``/``--fp16``; ``--memPoolSize``), 11.x (strongly typed:
precision from the ONNX). FP32 builds pass ``--noTF32``. DLA builds exist only where TensorRT has DLA
(<= 10.7, >= 11.4.1) and only for FP16 (see :func:`~edgeres.backends.tensorrt.options.check_dla`).
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import PurePosixPath
from typing import Any, Mapping

from edgeres.backends.tensorrt.options import (
    DLA_RANGES, TrtOptions, check_dla, parse_version, resolve_options, version_in_range,
)
from edgeres.errors import UsageError

# (first version, last version, api, workspace flag style)
_FAMILIES = (
    ("0", "8.3.99", "weakly-typed", "workspace"),  # trtexec --workspace=N (MiB); --memPoolSize came in 8.4
    ("8.4", "10.99", "weakly-typed", "mempool"),
    ("11.0", "99.99", "strongly-typed", "mempool"),
)
TRTEXEC_JETSON = "/usr/src/tensorrt/bin/trtexec"
MIN_EDGERES_PYTHON = (3, 10)
MIN_PYTHON_API = (8, 5)
ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}


def _max(a: str, b: str) -> str:
    return a if parse_version(a) >= parse_version(b) else b


def _min(a: str, b: str) -> str:
    return a if parse_version(a) <= parse_version(b) else b


def fp16_onnx_name(onnx_name: str) -> str:
    """``model.onnx`` -> ``model_fp16.onnx`` (what a strongly typed FP16 build consumes)."""
    p = PurePosixPath(onnx_name)
    return str(p.with_name(f"{p.stem}_fp16{p.suffix or '.onnx'}"))


def family_of(version: str) -> tuple[str, str]:
    """``(api, workspace flag style)`` of a TensorRT version."""
    for lo, hi, family, ws_style in _FAMILIES:
        if version_in_range(version, lo, hi):
            return family, ws_style
    return _FAMILIES[-1][2], _FAMILIES[-1][3]


def trtexec_argv(opts: TrtOptions, precision: str, version: str, onnx_name: str, engine_name: str, *,
                 input_name: str, input_chw: tuple[int, ...], dynamic_batch: bool, fp16_ok: bool,
                 exe: str | None = None, timing_cache: str = "timing.cache") -> list[str]:
    """The ``trtexec`` build line for TensorRT ``version`` (any version of its family gives the same line)."""
    family, ws_style = family_of(version)
    exe = exe or (TRTEXEC_JETSON if opts.builds_on == "device" else "trtexec")
    argv = [exe, f"--onnx={onnx_name}", f"--saveEngine={engine_name}"]
    if dynamic_batch:
        chw = "x".join(str(d) for d in input_chw)
        for flag, b in zip(("min", "opt", "max"), opts.profile()):
            argv.append(f"--{flag}Shapes={input_name}:{b}x{chw}")
    if ws_style == "workspace":
        argv.append(f"--workspace={opts.workspace_mb}")
    else:
        argv.append(f"--memPoolSize=workspace:{opts.workspace_mb}M")
    if family == "weakly-typed":
        if precision == "fp16":
            argv.append("--fp16")
        elif precision == "int8":
            argv.append("--int8")  # explicit Q/DQ in the ONNX: no calibration cache needed
            if opts.int8_allow_fp16 and fp16_ok:
                argv.append("--fp16")
    if precision == "fp32":
        argv.append("--noTF32")  # TF32 is on by default on Ampere and later: FP32 would not be FP32
    if opts.uses_dla:
        argv += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    if opts.version_compatible:
        argv.append("--versionCompatible")
    if opts.hardware_compatibility:
        argv.append(f"--hardwareCompatibilityLevel={opts.hardware_compatibility}")
    argv.append(f"--timingCacheFile={timing_cache}")
    return argv


def _windows(opts: TrtOptions) -> list[tuple[str, str, str]]:
    """(lo, hi, api) version windows of the target's range, cut to DLA-capable versions for a DLA build."""
    out = []
    for lo, hi, family, _ in _FAMILIES:
        ranges = DLA_RANGES if opts.uses_dla else (("0", "99.99"),)
        for dlo, dhi in ranges:
            v_lo, v_hi = _max(_max(lo, opts.trt_min), dlo), _min(_min(hi, opts.trt_max), dhi)
            if parse_version(v_lo) <= parse_version(v_hi):
                out.append((v_lo, v_hi, family))
    return out


def _notes(target: Any, opts: TrtOptions, precision: str, edgeres_runs: bool) -> list[str]:
    notes = ["A TensorRT engine is tied to the TensorRT version and the GPU it was built with; "
             "rebuild after upgrading TensorRT/JetPack."]
    if opts.builds_on == "device":
        notes.append(f"Build on the {target.name} itself (engines cannot be built for Jetson on an x86 host); "
                     f"JetPack's trtexec is at {TRTEXEC_JETSON}.")
    if not edgeres_runs:
        notes.append(f"The device's Python is {opts.device_python}; edgeres needs Python >= 3.10, so use the "
                     "trtexec command there.")
    if parse_version(opts.trt_max)[:2] < MIN_PYTHON_API:
        notes.append(f"TensorRT {opts.trt_min}-{opts.trt_max} predates the 8.5 Python API: build with trtexec.")
    if "int8" not in target.precisions:
        notes.append(f"SM {opts.compute_capability} has no INT8 support in TensorRT (no INT8 tensor cores or DP4A): "
                     "FP16 is the fastest precision on this GPU.")
    if precision == "int8":
        notes.append("INT8 comes from the Q/DQ nodes in the ONNX (explicit quantization); no calibrator is used.")
    if precision == "fp32":
        notes.append("--noTF32: FP32 layers stay FP32 (TensorRT enables TF32 by default on Ampere and later).")
    if opts.uses_dla:
        notes.append("DLA: FP16 only (explicit Q/DQ INT8 cannot run on the DLA); TensorRT <= 10.7 or >= 11.4.1; "
                     "static shapes (the batch is pinned to the profile's opt value); layers the DLA cannot run "
                     "fall back to the GPU -- build-engine reports where each layer runs.")
    if opts.jetpack:
        notes.append(f"JetPack: {opts.jetpack}")
    return notes


def build_recipe(target: Any, precision: str, onnx_name: str = "model.onnx", *,
                 input_name: str = "input", input_chw: tuple[int, ...] = (3, 224, 224),
                 dynamic_batch: bool = True, options: Mapping[str, Any] | None = None,
                 engine_name: str = "model.engine", bundle: str = "BUNDLE") -> dict[str, Any]:
    """Describe exactly how to build ``target``'s engine from ``onnx_name`` (JSON-able dict).

    One entry in ``variants`` per TensorRT API family (and DLA window) the target's range covers.
    """
    if precision not in target.precisions:
        raise UsageError(f"target {target.name} supports precisions {list(target.precisions)}, not {precision!r}")
    opts = resolve_options(target, options)
    check_dla(opts, precision)
    variants = []
    for v_lo, v_hi, family in _windows(opts):
        onnx_in, steps = onnx_name, []
        if family == "strongly-typed" and precision == "fp16":
            onnx_in = fp16_onnx_name(onnx_name)
            steps.append(
                "python -c \"from edgeres.backends.tensorrt import convert_to_fp16; "
                f"convert_to_fp16('{onnx_name}', '{onnx_in}')\"  "
                f"# or: python -m modelopt.onnx.autocast --onnx_path {onnx_name} --output_path {onnx_in}"
                + (" --target_dla" if opts.uses_dla else ""))
        argv = trtexec_argv(opts, precision, v_lo, onnx_in, engine_name, input_name=input_name,
                            input_chw=tuple(input_chw), dynamic_batch=dynamic_batch,
                            fp16_ok="fp16" in target.precisions)
        variants.append({
            "tensorrt": {"min": v_lo, "max": v_hi}, "api": family,
            "python_api": "edgeres build-engine" if parse_version(v_hi)[:2] >= MIN_PYTHON_API else "trtexec only (< 8.5)",
            "prepare": steps, "trtexec_argv": argv, "trtexec": " ".join(argv),
        })
    py = opts.device_python
    edgeres_runs = not py or parse_version(py)[:2] >= MIN_EDGERES_PYTHON
    if any(parse_version(v["tensorrt"]["max"])[:2] >= MIN_PYTHON_API for v in variants) and edgeres_runs:
        recommended = f"edgeres build-engine {bundle}"
    else:
        recommended = variants[-1]["trtexec"] if variants else ""
    return {
        "format": "edgeres-tensorrt-recipe/1", "target": target.name, "arch": target.arch,
        "compute_capability": opts.compute_capability, "builds_on": opts.builds_on,
        "tensorrt": {"min": opts.trt_min, "max": opts.trt_max}, "precision": precision,
        "onnx": onnx_name, "engine": engine_name,
        "input": {"name": input_name, "chw": list(input_chw), "dynamic_batch": dynamic_batch},
        "batch": dict(zip(("min", "opt", "max"), opts.profile())), "workspace_mb": opts.workspace_mb,
        "dla_core": opts.dla_core, "options": opts.to_dict(), "recommended": recommended,
        "variants": variants, "notes": _notes(target, opts, precision, edgeres_runs),
    }


def import_tensorrt() -> tuple[Any | None, str]:
    """``(tensorrt module, "")`` or ``(None, reason)``. ``tensorrt_rtx`` is never a substitute."""
    try:
        return importlib.import_module("tensorrt"), ""
    except (ImportError, OSError) as e:  # OSError: bindings present but libnvinfer missing
        reason = f"the tensorrt Python package cannot be imported ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    try:
        importlib.import_module("tensorrt_rtx")
        reason += "; tensorrt_rtx is installed, but TensorRT-RTX is a different product that cannot build these engines"
    except (ImportError, OSError):
        pass
    return None, reason


def where_to_build(target: Any, opts: TrtOptions, bundle: str) -> str:
    rng = f"TensorRT {opts.trt_min}-{opts.trt_max}"
    if opts.builds_on == "device":
        return f"copy the bundle to the {target.name} and run `edgeres build-engine {bundle}` there ({rng})"
    return (f"run `edgeres build-engine {bundle}` on a {target.arch} host with an SM {opts.compute_capability} GPU "
            f"and {rng}")


def check_machine(target: Any, opts: TrtOptions, version: str, where: str) -> tuple[bool, str]:
    """Does this machine (CPU architecture, GPU, compute capability) fit ``target`` for TensorRT ``version``?"""
    from edgeres.backends.tensorrt.cuda import gpu_info

    machine = ARCH_ALIASES.get(platform.machine(), platform.machine())
    if not version_in_range(version, opts.trt_min, opts.trt_max):
        return False, f"TensorRT {version} is installed but {target.name} needs {opts.trt_min}-{opts.trt_max}; {where}"
    gpu = gpu_info()
    if gpu is None:
        return False, f"no CUDA GPU found here (TensorRT {version} is installed); {where}"
    if gpu.get("cuda_error"):
        return False, (f"{gpu['name']} is here but CUDA cannot use it ({gpu['cuda_error']}); add your user to the "
                       "video/render groups, or run the container with the NVIDIA runtime")
    cc = gpu["compute_capability"]
    if machine != target.arch:  # engines are not portable across platforms (x86_64 vs aarch64)
        return False, f"{target.name} engines are built on {target.arch}; this is {machine}; {where}"
    if opts.builds_on == "device" and "jetson" not in gpu:
        return False, f"{target.name} engines are built on the Jetson itself; this is {gpu['name']}; {where}"
    if cc != opts.compute_capability:
        hw_ok = opts.hardware_compatibility == "ampere+" and parse_version(cc)[0] >= 8
        if not hw_ok:
            return False, (f"this GPU is {gpu['name']} (SM {cc}) but {target.name} is SM {opts.compute_capability}; "
                           f"{where}")
    return True, f"TensorRT {version} on {gpu['name']} (SM {cc}) can build {target.name}"


def check_buildable_here(target: Any, options: Mapping[str, Any] | None = None,
                         bundle: str = "BUNDLE") -> tuple[bool, str]:
    """Can this machine build ``target``'s engine with TensorRT's Python API now? ``(ok, one-line reason)``."""
    opts = resolve_options(target, options)
    where = where_to_build(target, opts, bundle)
    trt, why = import_tensorrt()
    if trt is None:
        return False, f"{why}; {where}"
    version = str(trt.__version__)
    if parse_version(version)[:2] < MIN_PYTHON_API:
        return False, f"TensorRT {version} predates the 8.5 Python API edgeres uses; use the recipe's trtexec command"
    if sys.version_info[:2] < MIN_EDGERES_PYTHON:
        return False, f"Python {platform.python_version()} is too old for edgeres; use the recipe's trtexec command"
    return check_machine(target, opts, version, where)
