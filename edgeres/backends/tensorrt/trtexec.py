"""TensorRT through NVIDIA's ``trtexec`` when the Python bindings are missing (or predate 8.5).

On a JetPack board ``trtexec`` is ``/usr/src/tensorrt/bin/trtexec`` (package ``libnvinfer-bin``).
``edgeres build-engine`` then prints and runs the recipe's exact build line (:func:`compile_with_trtexec`),
and runs the engine for the self-test, ``run`` and ``validate`` with :class:`TrtexecRunner`:
``trtexec --loadEngine=E --loadInputs=NAME:FILE --exportOutput=OUT.json`` per batch (slower than the
Python runner -- a process per call -- but it needs nothing beyond JetPack).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgeres.backends.tensorrt.options import parse_version, resolve_options
from edgeres.backends.tensorrt.recipe import (
    MIN_PYTHON_API, TRTEXEC_JETSON, check_buildable_here, check_machine, family_of, import_tensorrt,
    trtexec_argv, where_to_build,
)
from edgeres.errors import BackendUnavailable, CompileError, InputError
from edgeres.fileio import sha256_file

TIMEOUT_S = 4 * 3600  # a ResNet-50 INT8 build on a Jetson Nano-class board takes tens of minutes


def find_trtexec(root: Path = Path("/")) -> Path | None:
    """JetPack's trtexec, else one on PATH (only when ``root`` is the real root)."""
    p = Path(root) / TRTEXEC_JETSON.lstrip("/")
    if p.is_file() and os.access(p, os.X_OK):
        return p
    found = shutil.which("trtexec") if Path(root) == Path("/") else None
    return Path(found) if found else None


def parse_banner(text: str) -> str | None:
    """``[TensorRT v100300]`` -> ``"10.3.0"``, ``[TensorRT v8201]`` -> ``"8.2.1"`` (trtexec's first line)."""
    m = re.search(r"TensorRT v(\d+)", text)
    if not m:
        return None
    n = int(m.group(1))
    if n >= 100000:  # 10.x and later: MMmmpp
        return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
    return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"  # 8.x: Mmpp


def trtexec_version(exe: str | os.PathLike) -> str | None:
    try:
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_banner(out.stdout + out.stderr)


def build_method(target: Any, options: Mapping[str, Any] | None = None, *,
                 bundle: str = "BUNDLE") -> tuple[str, str, str | None]:
    """How ``edgeres build-engine`` builds here: ``("python", version, None)`` with TensorRT's Python API, or
    ``("trtexec", version, path)`` with JetPack's trtexec when the bindings are missing or predate 8.5.
    Raises BackendUnavailable (one line naming what is missing and the fix) when neither can."""
    opts = resolve_options(target, options)
    where = where_to_build(target, opts, bundle)
    trt, why = import_tensorrt()
    if trt is not None and parse_version(str(trt.__version__))[:2] >= MIN_PYTHON_API:
        ok, reason = check_buildable_here(target, options, bundle)
        if not ok:
            raise BackendUnavailable(f"cannot build the engine here: {reason}")
        return "python", str(trt.__version__), None
    exe = find_trtexec()
    if exe is None:
        missing = why or f"TensorRT {trt.__version__} predates the 8.5 Python API"
        raise BackendUnavailable(f"cannot build the engine here: {missing}, and trtexec is not at {TRTEXEC_JETSON} "
                                 "or on PATH; on JetPack: sudo apt install python3-libnvinfer libnvinfer-bin "
                                 f"(and a venv made with --system-site-packages); otherwise {where}")
    version = trtexec_version(exe)
    if version is None:
        raise BackendUnavailable(f"cannot build the engine here: {exe} does not report its TensorRT version")
    ok, reason = check_machine(target, opts, version, where)
    if not ok:
        raise BackendUnavailable(f"cannot build the engine here: {reason}")
    return "trtexec", version, str(exe)


def _last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "[E]" in ln or "Error" in ln or "error" in ln]
    return (errs or lines or ["no output"])[-1][:400]


def compile_with_trtexec(exe: str, version: str, onnx_path: Path, target: Any, out_dir: Path, *, precision: str,
                         options: Mapping[str, Any] | None, timing_cache: Path | None,
                         log: Any = None) -> tuple[dict[str, Any], list[str]]:
    """Build ``out_dir/model.engine`` with ``exe``; return the engine record (``engine.json``) and the argv run."""
    from edgeres.backends.tensorrt.builder import onnx_summary
    from edgeres.backends.tensorrt.cuda import gpu_info

    opts = resolve_options(target, options)
    summary = onnx_summary(onnx_path)
    if family_of(version)[0] == "strongly-typed" and precision == "fp16" and not summary["has_fp16"]:
        from edgeres.backends.tensorrt.builder import convert_to_fp16

        onnx_path = convert_to_fp16(onnx_path, out_dir / f"{onnx_path.stem}_fp16.onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = out_dir / "model.engine"
    dynamic = summary["input_shape"][0] == -1
    argv = trtexec_argv(opts, precision, version, str(onnx_path), str(engine), input_name=summary["input_name"],
                        input_chw=tuple(summary["input_shape"][1:]), dynamic_batch=dynamic,
                        fp16_ok="fp16" in target.precisions, exe=exe,
                        timing_cache=str(timing_cache) if timing_cache else "timing.cache")
    if timing_cache is None:
        argv = [a for a in argv if not a.startswith("--timingCacheFile=")]
    else:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"running: {' '.join(argv)}")
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0 or not engine.is_file():
        raise CompileError(f"trtexec failed (exit {proc.returncode}): {_last_error(proc.stdout + proc.stderr)}; "
                           f"command: {' '.join(argv)}")
    profile = None
    if dynamic:
        chw = list(summary["input_shape"][1:])
        lo, mid, hi = opts.profile()
        profile = {summary["input_name"]: {"min": [lo, *chw], "opt": [mid, *chw], "max": [hi, *chw]}}
    gpu = gpu_info() or {}
    meta = {
        "format": "edgeres-tensorrt-engine/1", "engine": engine.name, "engine_sha256": sha256_file(engine),
        "tensorrt_version": version, "api": family_of(version)[0], "gpu": gpu,
        "compute_capability": gpu.get("compute_capability"), "target": target.name, "precision": precision,
        "onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "input_name": summary["input_name"],
        "input_shape": summary["input_shape"], "built_with": "trtexec",
        "build": {"method": "trtexec", "argv": argv, "profile": profile,
                  "flags": [a for a in argv if a in ("--int8", "--fp16", "--noTF32")], **opts.to_dict()},
        "build_seconds": round(time.perf_counter() - t0, 3),
        "layers": {"file": None, "reason": "built with trtexec: rerun with --profilingVerbosity=detailed "
                   "--exportLayerInfo=layers.json for a per-layer report"},
    }
    return meta, argv


class TrtexecRunner:
    """A Runner (NCHW float32 batch -> logits) that runs the engine with trtexec, one process per chunk."""

    def __init__(self, exe: str | os.PathLike, engine_path: Path, meta: dict[str, Any]) -> None:
        self.exe, self.engine = str(exe), Path(engine_path)
        self.input = meta.get("input_name", "input")
        shape = list(meta.get("input_shape") or [])
        if len(shape) != 4:
            raise InputError(f"{engine_path.parent / 'engine.json'} lacks the engine's input shape; rebuild the engine")
        self.chw = tuple(int(d) for d in shape[1:])
        build = meta.get("build", {})
        prof = (build.get("profile") or {}).get(self.input)
        self.dynamic = shape[0] == -1
        self.bmin, self.bmax = (int(prof["min"][0]), int(prof["max"][0])) if prof else (max(shape[0], 1),) * 2
        core = build.get("dla_core")
        self.dla_core = -1 if core is None else int(core)

    def _run(self, x: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="edgeres-trtexec-") as tmp:
            inp, out = Path(tmp) / "input.bin", Path(tmp) / "out.json"
            np.ascontiguousarray(x, dtype="<f4").tofile(inp)
            argv = [self.exe, f"--loadEngine={self.engine}", f"--loadInputs={self.input}:{inp}",
                    f"--exportOutput={out}", "--iterations=1", "--warmUp=0", "--duration=0", "--avgRuns=1"]
            if self.dynamic:
                argv.append(f"--shapes={self.input}:{'x'.join(map(str, x.shape))}")
            if self.dla_core >= 0:
                argv.append(f"--useDLACore={self.dla_core}")
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0 or not out.is_file():
                raise CompileError(f"trtexec could not run {self.engine.name}: {_last_error(proc.stdout + proc.stderr)}")
            text = re.sub(r"\b(-?)(nan|inf)\b", r'"\1\2"', out.read_text())  # trtexec prints bare nan/inf
            first = json.loads(text)[0]
        values = np.asarray([float(v) for v in first["values"]], np.float32)
        return values.reshape(x.shape[0], -1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.chw:
            raise InputError(f"expected an N x {' x '.join(map(str, self.chw))} batch, got shape {tuple(x.shape)}")
        outs = []
        for start in range(0, x.shape[0], self.bmax):
            chunk = x[start:start + self.bmax]
            n = chunk.shape[0]
            if n < self.bmin:
                chunk = np.concatenate([chunk, np.zeros((self.bmin - n, *self.chw), np.float32)])
            outs.append(self._run(chunk)[:n])
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


__all__ = ["TrtexecRunner", "build_method", "compile_with_trtexec", "find_trtexec", "parse_banner",
           "trtexec_version"]
