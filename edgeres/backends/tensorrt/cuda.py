"""CUDA plumbing for the TensorRT backend: which GPU is here, and device buffers for the runner.

Nothing here needs a pip CUDA wheel. Device buffers come from, in this order (first that works;
``EDGERES_CUDA_IO=cudart|cuda-python|torch`` forces one):

1. ``cudart``: the CUDA runtime library already on the machine (JetPack's ``libcudart.so.12``, a
   toolkit's), through ``ctypes``. The one TensorRT itself loaded is preferred, so a process never
   mixes two CUDA runtimes;
2. ``cuda-python``: only if installed *and* its major matches the driver (cuda-python 13 on a CUDA 12
   driver fails ``cudaGetDeviceCount`` with cudaErrorInsufficientDriver and is skipped, with that reason);
3. ``torch``: a CUDA build of PyTorch, if present.

GPU detection (:func:`gpu_info`) reads a Jetson's device tree first (see
:mod:`edgeres.backends.tensorrt.jetson`; ``nvidia-smi`` says "N/A" there), then asks the CUDA runtime,
and uses ``nvidia-smi`` only off Jetson.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.backends.tensorrt import jetson
from edgeres.errors import BackendUnavailable, CompileError

CUDART_SONAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2", "libcudart.so")
CUDA_LIB_DIRS = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib",
                 "/usr/local/cuda/targets/sbsa-linux/lib", "/usr/local/cuda/targets/x86_64-linux/lib")
IO_ENV = "EDGERES_CUDA_IO"
_H2D, _D2H = 1, 2  # cudaMemcpyKind
_CC_MAJOR, _CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


class Cudart:
    """The CUDA runtime API through ctypes (the few calls edgeres needs)."""

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.lib, self.path = lib, path
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaMemcpyAsync.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                        ctypes.c_void_p]
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            msg = self.lib.cudaGetErrorString(code)
            raise CompileError(f"CUDA call {what} failed ({code}: {msg.decode() if msg else '?'}); "
                               "check the GPU driver (Jetson: is your user in the video group?)")

    def _int(self, fn: str, *args: Any) -> int:
        v = ctypes.c_int(0)
        self._check(getattr(self.lib, fn)(ctypes.byref(v), *args), fn)
        return v.value

    def runtime_version(self) -> str:
        v = self._int("cudaRuntimeGetVersion")
        return f"{v // 1000}.{(v % 1000) // 10}"

    def driver_version(self) -> str:
        v = self._int("cudaDriverGetVersion")
        return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"

    def device_count(self) -> int:
        return self._int("cudaGetDeviceCount")

    def capability(self, dev: int = 0) -> str:
        return f"{self._int('cudaDeviceGetAttribute', _CC_MAJOR, dev)}.{self._int('cudaDeviceGetAttribute', _CC_MINOR, dev)}"

    def name(self, dev: int = 0) -> str:
        buf = ctypes.create_string_buffer(8192)  # cudaDeviceProp starts with char name[256] in every CUDA
        fn = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        self._check(fn(buf, dev), "cudaGetDeviceProperties")
        return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace")

    def malloc(self, nbytes: int) -> int:
        p = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(p), max(int(nbytes), 1)), "cudaMalloc")
        return int(p.value or 0)

    def free(self, ptr: int) -> None:
        self._check(self.lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), nbytes, kind,
                                             ctypes.c_void_p(stream)), "cudaMemcpyAsync")

    def stream_create(self) -> int:
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def stream_synchronize(self, stream: int) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


def _mapped_cudart() -> list[str]:
    """libcudart files already mapped into this process (TensorRT's own), from /proc/self/maps."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({ln.split()[-1] for ln in lines if "libcudart.so" in ln and ln.split()[-1].startswith("/")})


_CUDART: tuple[Cudart | None, str] | None = None


def load_cudart() -> tuple[Cudart | None, str]:
    """``(Cudart, "")`` for the CUDA runtime library on this machine, or ``(None, why not)``. Cached."""
    global _CUDART
    if _CUDART is not None:
        return _CUDART
    mapped = _mapped_cudart()
    candidates = mapped + list(CUDART_SONAMES) + [str(Path(d) / n) for d in CUDA_LIB_DIRS for n in CUDART_SONAMES]
    first: Cudart | None = None
    for cand in candidates:
        try:
            rt = Cudart(ctypes.CDLL(cand), cand)
        except OSError:
            continue
        if cand in mapped:  # the runtime TensorRT itself uses: never mix in a second one
            _CUDART = (rt, "")
            return _CUDART
        first = first or rt
        try:
            if rt.device_count() > 0:  # e.g. skip a CUDA 13 runtime on a CUDA 12 driver when 12 is there too
                _CUDART = (rt, "")
                return _CUDART
        except CompileError:
            continue
    _CUDART = (first, "") if first is not None else (
        None, "no CUDA runtime library (libcudart.so.*) found on the loader path or in /usr/local/cuda; "
              "install the CUDA runtime (JetPack: sudo apt install cuda-runtime-12-6, part of nvidia-jetpack)")
    return _CUDART


def cuda_runtime_info() -> dict[str, Any]:
    """What ``doctor`` shows about CUDA: the runtime library, its version, the driver's, the device count."""
    rt, why = load_cudart()
    if rt is None:
        return {"found": False, "error": why}
    info: dict[str, Any] = {"found": True, "path": rt.path}
    try:
        info["runtime_version"] = rt.runtime_version()
        info["driver_version"] = rt.driver_version()
        info["device_count"] = rt.device_count()
    except CompileError as e:
        info["error"] = str(e).split(";")[0]
    return info


def _torch_cuda() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install makes is_available() raise on some builds
        return None


def _nvidia_smi() -> dict[str, Any] | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[c.strip() for c in r.split(",")] for r in out.strip().splitlines() if r.strip()]
    if rows and len(rows[0]) == 2 and rows[0][1].replace(".", "").isdigit():
        return {"name": rows[0][0], "compute_capability": rows[0][1], "count": len(rows), "via": "nvidia-smi"}
    return None


def gpu_info(root: Path = Path("/"), *, probe_cuda: bool = True) -> dict[str, Any] | None:
    """``{"name", "compute_capability", "count", "via"}`` for GPU 0, or None without a GPU.

    On a Jetson the device tree decides (``via="device-tree"``, plus ``jetson``: the board record);
    ``cuda_error`` is set when the CUDA runtime cannot use that GPU (e.g. a container without the
    NVIDIA runtime). Elsewhere: the CUDA runtime, then a CUDA build of torch, then ``nvidia-smi``.
    """
    board = jetson.detect(root)
    rt, why = load_cudart() if probe_cuda else (None, "not probed")
    if board is not None:
        info: dict[str, Any] = {"name": board.model, "compute_capability": board.compute_capability, "count": 1,
                                "via": "device-tree", "jetson": board.to_dict()}
        if probe_cuda:
            try:
                if rt is None or rt.device_count() < 1:
                    info["cuda_error"] = why or "the CUDA runtime sees no device"
            except CompileError as e:
                info["cuda_error"] = str(e).split(";")[0]
        return info
    if rt is not None:
        try:
            if rt.device_count() > 0:
                return {"name": rt.name(0), "compute_capability": rt.capability(0), "count": rt.device_count(),
                        "via": "cudart"}
        except CompileError:
            pass  # no driver / no device: try the others
    torch = _torch_cuda() if probe_cuda else None
    if torch is not None:
        major, minor = torch.cuda.get_device_capability(0)
        return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}",
                "count": torch.cuda.device_count(), "via": "torch"}
    return _nvidia_smi() if probe_cuda else None


class DeviceIO:
    """Device buffers the runner needs: upload, allocate, download, a stream."""

    name = "?"
    stream_handle: int

    def upload(self, arr: np.ndarray) -> Any: ...
    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any: ...
    def ptr(self, buf: Any) -> int: ...
    def download(self, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...
    def release(self, buf: Any) -> None: ...


class CudartIO(DeviceIO):
    """``cudaMalloc`` buffers and async copies on a private stream, through ctypes on libcudart."""

    name = "cudart"

    def __init__(self, rt: Cudart) -> None:
        self.rt = rt
        self._keep: list[np.ndarray] = []
        self.stream_handle = rt.stream_create()  # type: ignore[misc]

    def upload(self, arr: np.ndarray) -> int:
        arr = np.ascontiguousarray(arr)
        ptr = self.rt.malloc(arr.nbytes)
        self._keep.append(arr)  # host memory must outlive the async copy
        self.rt.memcpy_async(ptr, arr.ctypes.data, arr.nbytes, _H2D, self.stream_handle)
        return ptr

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> int:
        return self.rt.malloc(int(np.prod(shape)) * np.dtype(dtype).itemsize)

    def ptr(self, buf: Any) -> int:
        return int(buf)

    def download(self, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        self.rt.memcpy_async(out.ctypes.data, int(buf), out.nbytes, _D2H, self.stream_handle)
        self.rt.stream_synchronize(self.stream_handle)
        self._keep.clear()
        return out

    def release(self, buf: Any) -> None:
        self.rt.free(int(buf))


class TorchIO(DeviceIO):
    """Buffers as torch CUDA tensors, work on torch's current stream."""

    name = "torch"

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    @property
    def stream_handle(self) -> int:  # type: ignore[override]
        return int(self.torch.cuda.current_stream().cuda_stream)

    def upload(self, arr: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(arr)).to("cuda")

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        return self.torch.empty(tuple(shape), dtype=self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype,
                                device="cuda")

    def ptr(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def download(self, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.torch.cuda.current_stream().synchronize()
        return buf.cpu().numpy().reshape(shape).astype(dtype, copy=False)

    def release(self, buf: Any) -> None:
        del buf


def _io_cudart() -> DeviceIO:
    rt, why = load_cudart()
    if rt is None:
        raise BackendUnavailable(why)
    if rt.device_count() < 1:
        raise BackendUnavailable(f"{rt.path} sees no CUDA device")
    return CudartIO(rt)


def _io_cuda_python() -> DeviceIO:
    from edgeres.backends.tensorrt.cuda_python import CudaPythonIO

    return CudaPythonIO()


def _io_torch() -> DeviceIO:
    torch = _torch_cuda()
    if torch is None:
        raise BackendUnavailable("no CUDA build of torch")
    return TorchIO(torch)


IO_KINDS = {"cudart": _io_cudart, "cuda-python": _io_cuda_python, "torch": _io_torch}


def make_device_io() -> DeviceIO:
    """The first CUDA buffer provider that works here (or the one ``EDGERES_CUDA_IO`` names)."""
    forced = os.environ.get(IO_ENV, "").strip()
    if forced and forced not in IO_KINDS:
        raise BackendUnavailable(f"{IO_ENV}={forced!r} is not one of {list(IO_KINDS)}")
    reasons = []
    for kind in [forced] if forced else list(IO_KINDS):
        try:
            return IO_KINDS[kind]()
        except (BackendUnavailable, CompileError, ImportError, OSError) as e:
            reasons.append(f"{kind}: {str(e).split(';')[0]}")
    raise BackendUnavailable("running a TensorRT engine needs CUDA buffers and none of the providers works ("
                             + "; ".join(reasons) + "); install the CUDA runtime that matches the driver "
                             "(JetPack ships it), or cuda-python of the driver's major")
