"""How to build a target's engine where it can be built, and whether this machine can.

``build_recipe`` is pure (no TensorRT, no GPU): it describes the on-device build for every
TensorRT API family in the target's version range, as ``trtexec`` command lines and as the
recommended ``edgeres build-engine BUNDLE``. ``check_buildable_here`` looks at this machine.
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import PurePosixPath
from typing import Any, Mapping

from edgeres.backends.tensorrt.options import TrtOptions, parse_version, resolve_options, version_in_range
from edgeres.errors import UsageError

# (first version, last version, api, workspace flag style)
_FAMILIES = (
    ("0", "8.3", "weakly-typed", "workspace"),  # trtexec --workspace=N (MiB); --memPoolSize came in 8.4
    ("8.4", "10.99", "weakly-typed", "mempool"),
    ("11.0", "99.99", "strongly-typed", "mempool"),
)
TRTEXEC_JETSON = "/usr/src/tensorrt/bin/trtexec"
MIN_EDGERES_PYTHON = (3, 10)


def _max(a: str, b: str) -> str:
    return a if parse_version(a) >= parse_version(b) else b


def _min(a: str, b: str) -> str:
    return a if parse_version(a) <= parse_version(b) else b


def fp16_onnx_name(onnx_name: str) -> str:
    """``model.onnx`` -> ``model_fp16.onnx`` (what a strongly typed FP16 build consumes)."""
    p = PurePosixPath(onnx_name)
    return str(p.with_name(f"{p.stem}_fp16{p.suffix or '.onnx'}"))


def _trtexec_argv(opts: TrtOptions, precision: str, family: str, ws_style: str, onnx_name: str,
                  engine_name: str, input_name: str, input_chw: tuple[int, ...], dynamic_batch: bool,
                  fp16_ok: bool) -> list[str]:
    exe = TRTEXEC_JETSON if opts.builds_on == "device" else "trtexec"
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
    if opts.uses_dla:
        argv += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    if opts.version_compatible:
        argv.append("--versionCompatible")
    if opts.hardware_compatibility:
        argv.append(f"--hardwareCompatibilityLevel={opts.hardware_compatibility}")
    argv.append("--timingCacheFile=timing.cache")
    return argv


def build_recipe(target: Any, precision: str, onnx_name: str = "model.onnx", *,
                 input_name: str = "input", input_chw: tuple[int, ...] = (3, 224, 224),
                 dynamic_batch: bool = True, options: Mapping[str, Any] | None = None,
                 engine_name: str = "model.engine", bundle: str = "BUNDLE") -> dict[str, Any]:
    """Describe exactly how to build ``target``'s engine from ``onnx_name`` (JSON-able dict).

    One entry in ``variants`` per TensorRT API family the target's version range covers:
    TensorRT 8.x/10.x builds with precision flags (``--int8``/``--fp16``), TensorRT 11 is
    strongly typed (precision from the ONNX; FP16 needs an FP16 ONNX first).
    """
    if precision not in target.precisions:
        raise UsageError(f"target {target.name} supports precisions {list(target.precisions)}, not {precision!r}")
    opts = resolve_options(target, options)
    variants = _variants(opts, precision, "fp16" in target.precisions, onnx_name, engine_name, input_name,
                         tuple(input_chw), dynamic_batch)
    py = opts.device_python
    edgeres_runs = not py or parse_version(py)[:2] >= MIN_EDGERES_PYTHON
    if any(parse_version(v["tensorrt"]["max"])[:2] >= (8, 5) for v in variants) and edgeres_runs:
        recommended = f"edgeres build-engine {bundle}"
    else:
        recommended = variants[-1]["trtexec"] if variants else ""
    notes = _notes(target.name, opts, precision, edgeres_runs)
    return {
        "format": "edgeres-tensorrt-recipe/1",
        "target": target.name,
        "arch": target.arch,
        "compute_capability": opts.compute_capability,
        "builds_on": opts.builds_on,
        "tensorrt": {"min": opts.trt_min, "max": opts.trt_max},
        "precision": precision,
        "onnx": onnx_name,
        "engine": engine_name,
        "input": {"name": input_name, "chw": list(input_chw), "dynamic_batch": dynamic_batch},
        "batch": dict(zip(("min", "opt", "max"), opts.profile())),
        "workspace_mb": opts.workspace_mb,
        "dla_core": opts.dla_core,
        "options": opts.to_dict(),
        "recommended": recommended,
        "variants": variants,
        "notes": notes,
    }


def _variants(opts: TrtOptions, precision: str, fp16_ok: bool, onnx_name: str, engine_name: str,
              input_name: str, input_chw: tuple[int, ...], dynamic_batch: bool) -> list[dict[str, Any]]:
    """One build variant per TensorRT API family inside the target's version range."""
    variants = []
    for lo, hi, family, ws_style in _FAMILIES:
        v_lo, v_hi = _max(lo, opts.trt_min), _min(hi, opts.trt_max)
        if parse_version(v_lo) > parse_version(v_hi):
            continue
        onnx_in = onnx_name
        steps: list[str] = []
        if family == "strongly-typed" and precision == "fp16":
            onnx_in = fp16_onnx_name(onnx_name)
            steps.append(
                "python -c \"from edgeres.backends.tensorrt import convert_to_fp16; "
                f"convert_to_fp16('{onnx_name}', '{onnx_in}')\"  "
                f"# or: python -m modelopt.onnx.autocast --onnx_path {onnx_name} --output_path {onnx_in}"
            )
        argv = _trtexec_argv(opts, precision, family, ws_style, onnx_in, engine_name, input_name,
                             input_chw, dynamic_batch, fp16_ok)
        variants.append({
            "tensorrt": {"min": v_lo, "max": v_hi},
            "api": family,
            "python_api": "edgeres build-engine" if parse_version(v_hi)[:2] >= (8, 5) else "trtexec only (< 8.5)",
            "prepare": steps,
            "trtexec_argv": argv,
            "trtexec": " ".join(argv),
        })
    return variants


def _notes(target_name: str, opts: TrtOptions, precision: str, edgeres_runs: bool) -> list[str]:
    notes = [
        "A TensorRT engine is tied to the TensorRT version and the GPU it was built with; "
        "rebuild after upgrading TensorRT/JetPack.",
    ]
    if opts.builds_on == "device":
        notes.append(f"Build on the {target_name} itself (engines cannot be built for Jetson on an x86 host); "
                     f"JetPack's trtexec is at {TRTEXEC_JETSON}.")
    if not edgeres_runs:
        notes.append(f"The device's Python is {opts.device_python}; edgeres needs Python >= 3.10, so use the "
                     "trtexec command there.")
    if precision == "int8":
        notes.append("INT8 comes from the Q/DQ nodes in the ONNX (explicit quantization); no calibrator is used.")
    if opts.uses_dla:
        notes.append("DLA needs static shapes: the batch is pinned to the profile's opt value; "
                     "layers DLA cannot run fall back to the GPU.")
    if opts.jetpack:
        notes.append(f"JetPack: {opts.jetpack}")
    return notes


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


def _where_to_build(target: Any, opts: TrtOptions, bundle: str) -> str:
    rng = f"TensorRT {opts.trt_min}-{opts.trt_max}"
    if opts.builds_on == "device":
        return f"copy the bundle to the {target.name} and run `edgeres build-engine {bundle}` there ({rng})"
    return f"run `edgeres build-engine {bundle}` on a host with an SM {opts.compute_capability} GPU and {rng}"


def check_buildable_here(target: Any, options: Mapping[str, Any] | None = None,
                         bundle: str = "BUNDLE") -> tuple[bool, str]:
    """Can this machine build ``target``'s engine now? ``(ok, one-line reason)``."""
    from edgeres.backends.tensorrt.cuda import gpu_info

    opts = resolve_options(target, options)
    where = _where_to_build(target, opts, bundle)
    trt, why = import_tensorrt()
    if trt is None:
        return False, f"{why}; {where}"
    version = str(trt.__version__)
    if not version_in_range(version, opts.trt_min, opts.trt_max):
        return False, f"TensorRT {version} is installed but {target.name} needs {opts.trt_min}-{opts.trt_max}; {where}"
    if parse_version(version)[:2] < (8, 5):
        return False, f"TensorRT {version} predates the 8.5 Python API edgeres uses; use the recipe's trtexec command"
    gpu = gpu_info()
    if gpu is None:
        return False, f"no CUDA GPU found here (TensorRT {version} is installed); {where}"
    cc = gpu["compute_capability"]
    if opts.builds_on == "device":
        if platform.machine() not in ("aarch64", "arm64") or cc != opts.compute_capability:
            return False, (f"{target.name} engines are built on the device; this is {platform.machine()} with "
                           f"{gpu['name']} (SM {cc}); {where}")
    elif cc != opts.compute_capability:
        hw_ok = opts.hardware_compatibility == "ampere+" and parse_version(cc)[0] >= 8
        if not hw_ok:
            return False, (f"this GPU is {gpu['name']} (SM {cc}) but {target.name} is SM {opts.compute_capability}; "
                           f"{where}")
    if sys.version_info[:2] < MIN_EDGERES_PYTHON:
        return False, f"Python {platform.python_version()} is too old for edgeres; use the recipe's trtexec command"
    return True, f"TensorRT {version} on {gpu['name']} (SM {cc}) can build {target.name}"
