"""``edgeres doctor --target <TensorRT target>``: what this machine has and lacks to build and run the
target's engine, each with the fix. Jetson facts come from files (device tree, nv_tegra_release, sysfs;
see :mod:`edgeres.backends.tensorrt.jetson`), never from nvidia-smi.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from edgeres.backends.tensorrt import jetson
from edgeres.backends.tensorrt.options import TrtOptions, dla_supported, parse_version, resolve_options, version_in_range
from edgeres.backends.tensorrt.recipe import MIN_PYTHON_API, TRTEXEC_JETSON, import_tensorrt

APT_TRT = "sudo apt install python3-libnvinfer libnvinfer-bin"
VENV = "python3 -m venv --system-site-packages ~/edgeres-venv"


def _check(name: str, ok: bool, found: str, fix: str = "", required: bool = True) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "found": found, "fix": "" if ok else fix, "required": required}


def _targets_for(cc: str, arch: str, builds_on: str) -> list[str]:
    from edgeres.targets import list_targets

    out = []
    for t in list_targets():
        if t.backend != "tensorrt" or t.arch != arch:
            continue
        o = resolve_options(t)
        if o.compute_capability == cc and o.builds_on == builds_on:
            out.append(t.name)
    return out


def _board(target: Any, opts: TrtOptions, root: Path) -> tuple[list[dict[str, Any]], Any]:
    from edgeres.backends.tensorrt.cuda import gpu_info

    board = jetson.detect(root)
    gpu = gpu_info(root)
    machine = {"arm64": "aarch64"}.get(platform.machine(), platform.machine())
    checks = []
    if board is not None:
        jp = (f", L4T {board.l4t} = JetPack {board.jetpack} (ships TensorRT {board.tensorrt_shipped})"
              if board.jetpack else f", L4T {board.l4t or '?'}")
        found = f"{board.model} ({board.soc}, {board.gpu_arch} SM {board.compute_capability}){jp}"
        fits = board.compute_capability == opts.compute_capability
        others = [n for n in _targets_for(board.compute_capability, "aarch64", "device") if n != target.name]
        checks.append(_check("Jetson board", fits, found,
                             f"this board is SM {board.compute_capability}, {target.name} is SM {opts.compute_capability}: "
                             f"compile for {' or '.join(others) or 'a target of this board'} instead"))
        if board.tensorrt_shipped and not version_in_range(board.tensorrt_shipped, opts.trt_min, opts.trt_max):
            checks.append(_check("JetPack's TensorRT", False, f"JetPack {board.jetpack} ships TensorRT {board.tensorrt_shipped}",
                                 f"{target.name} needs TensorRT {opts.trt_min}-{opts.trt_max}: flash a JetPack that "
                                 f"ships it ({opts.jetpack or 'see the target'})"))
    elif opts.builds_on == "device":
        checks.append(_check("Jetson board", False, f"not a Jetson ({machine}, no nvidia,tegra* in "
                             f"{Path(root) / 'proc/device-tree/compatible'})",
                             f"build {target.name} engines on the Jetson itself: copy the bundle there and run "
                             "`edgeres build-engine BUNDLE`"))
    if gpu is None:
        checks.append(_check("GPU", False, "no CUDA GPU found", "install the NVIDIA driver (JetPack includes it)"))
    else:
        cc = gpu["compute_capability"]
        ok = cc == opts.compute_capability and not gpu.get("cuda_error")
        fix = (f"CUDA cannot use the GPU ({gpu['cuda_error']}): add your user to the video/render groups, or run the "
               "container with --runtime nvidia" if gpu.get("cuda_error") else
               f"this GPU is SM {cc}; {target.name} is SM {opts.compute_capability}: use "
               f"{' or '.join(_targets_for(cc, machine, opts.builds_on)) or 'a matching target'}")
        checks.append(_check("GPU", ok, f"{gpu['name']} (SM {cc}, via {gpu['via']})"
                             + (f"; CUDA: {gpu['cuda_error']}" if gpu.get("cuda_error") else ""), fix))
    if opts.builds_on == "host" and machine != target.arch:
        checks.append(_check("CPU architecture", False, machine,
                             f"{target.name} engines are built on {target.arch} (engines are not portable across platforms)"))
    return checks, board


def _tensorrt(target: Any, opts: TrtOptions, root: Path) -> tuple[list[dict[str, Any]], str | None]:
    from edgeres.backends.tensorrt.trtexec import find_trtexec, trtexec_version

    trt, why = import_tensorrt()
    exe = find_trtexec(root)
    version = str(trt.__version__) if trt is not None else (trtexec_version(exe) if exe is not None else None)
    fix = (f"{APT_TRT}, then {VENV} and pip install edgeres into it (JetPack's TensorRT is for the system Python)"
           if opts.builds_on == "device" else "pip install tensorrt-cu12 (the wheel for your CUDA major) inside "
           f"{opts.trt_min}-{opts.trt_max}")
    checks = []
    if trt is not None:
        v = str(trt.__version__)
        in_range = version_in_range(v, opts.trt_min, opts.trt_max)
        api = parse_version(v)[:2] >= MIN_PYTHON_API
        checks.append(_check("TensorRT Python bindings", in_range and api,
                             f"tensorrt {v} ({'in' if in_range else 'outside'} {target.name}'s {opts.trt_min}-{opts.trt_max})",
                             fix if not in_range else "TensorRT < 8.5 has no name-based Python API: build-engine uses "
                             "trtexec", required=exe is None))
    else:
        checks.append(_check("TensorRT Python bindings", False, why.split(";")[0], fix, required=exe is None))
    checks.append(_check("trtexec", exe is not None, f"{exe} (TensorRT {version})" if exe else f"not at {TRTEXEC_JETSON}",
                         "sudo apt install libnvinfer-bin (JetPack) -- build-engine falls back to it without the "
                         "Python bindings", required=trt is None))
    return checks, version


def doctor_checks(target: Any, root: Path = Path("/")) -> list[dict[str, Any]]:
    from edgeres.backends.tensorrt.cuda import cuda_runtime_info

    opts = resolve_options(target)
    checks = []
    py = platform.python_version()
    dev_py = f"; the target's OS Python is {opts.device_python}" if opts.device_python else ""
    checks.append(_check("Python for edgeres", sys.version_info[:2] >= (3, 10), f"{py}{dev_py}",
                         "edgeres needs Python >= 3.10; on this board build with the recipe's trtexec line "
                         "(BUNDLE/recipe.json)"))
    board_checks, board = _board(target, opts, root)
    checks += board_checks
    trt_checks, version = _tensorrt(target, opts, root)
    checks += trt_checks
    rt = cuda_runtime_info()
    found = (f"{rt['path']} (runtime {rt.get('runtime_version', '?')}, driver {rt.get('driver_version', '?')})"
             if rt["found"] else rt["error"])
    checks.append(_check("CUDA runtime", rt["found"] and "error" not in rt,
                         found + (f"; {rt['error']}" if rt["found"] and "error" in rt else ""),
                         "install the CUDA runtime matching the driver (JetPack: sudo apt install nvidia-jetpack); "
                         "a runtime newer than the driver fails with 'driver version is insufficient'"))
    if board is not None and (opts.dla_cores or board.dla_cores) or opts.uses_dla:
        have = board.dla_cores if board is not None else 0
        ok = opts.dla_core < have if opts.uses_dla else True
        note = "" if version is None or dla_supported(version) else f"; TensorRT {version} has no DLA support"
        checks.append(_check("DLA cores", ok and not (opts.uses_dla and note), f"{have} on this board{note}",
                             f"dla_core={opts.dla_core} needs that DLA core and TensorRT <= 10.7 or >= 11.4.1; "
                             "use dla_core=-1 (GPU)", required=opts.uses_dla))
    if "int8" not in target.precisions:
        checks.append(_check("INT8", False, f"SM {opts.compute_capability} has no INT8 in TensorRT",
                             "use --precision fp16 (the target's default)", required=False))
    return checks


__all__ = ["doctor_checks"]
