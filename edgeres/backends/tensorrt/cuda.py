"""CUDA plumbing for the TensorRT backend: which GPU is here, and device buffers.

Buffers go through torch CUDA tensors when ``torch.cuda`` works, else through
``cuda-python``'s runtime bindings. Every import is lazy; nothing here needs a GPU
to be imported.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import numpy as np

from edgeres.errors import BackendUnavailable, CompileError


def import_cudart() -> Any | None:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6), or None."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # type: ignore[import-not-found,attr-defined]

        return cudart
    except ImportError:
        return None


def _torch_cuda() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install makes is_available() raise on some builds
        return None


def gpu_info() -> dict[str, Any] | None:
    """``{"name", "compute_capability": "8.7", "count", "via"}`` for CUDA device 0, or None without a GPU."""
    torch = _torch_cuda()
    if torch is not None:
        major, minor = torch.cuda.get_device_capability(0)
        return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}",
                "count": torch.cuda.device_count(), "via": "torch"}
    cudart = import_cudart()
    if cudart is not None:
        try:
            err, count = cudart.cudaGetDeviceCount()
            if err == cudart.cudaError_t.cudaSuccess and count > 0:
                err, props = cudart.cudaGetDeviceProperties(0)
                if err == cudart.cudaError_t.cudaSuccess:
                    name = props.name
                    if isinstance(name, bytes):
                        name = name.split(b"\0", 1)[0].decode(errors="replace")
                    return {"name": str(name), "compute_capability": f"{props.major}.{props.minor}",
                            "count": int(count), "via": "cuda-python"}
        except Exception:  # no driver / libcuda missing: treat as "no GPU"
            pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        rows = [r.split(",") for r in out.strip().splitlines() if r.strip()]
        if rows and len(rows[0]) == 2:
            return {"name": rows[0][0].strip(), "compute_capability": rows[0][1].strip(),
                    "count": len(rows), "via": "nvidia-smi"}
    return None


class DeviceIO:
    """Minimal device-buffer interface the runner needs: upload, allocate, download, a stream."""

    stream_handle: int

    def upload(self, arr: np.ndarray) -> Any: ...
    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any: ...
    def ptr(self, buf: Any) -> int: ...
    def download(self, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...
    def release(self, buf: Any) -> None: ...


class TorchIO(DeviceIO):
    """Buffers as torch CUDA tensors, work on torch's current stream."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    @property
    def stream_handle(self) -> int:  # type: ignore[override]
        return int(self.torch.cuda.current_stream().cuda_stream)

    def upload(self, arr: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(arr)).to("cuda")

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        tdtype = self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        return self.torch.empty(tuple(shape), dtype=tdtype, device="cuda")

    def ptr(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def download(self, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.torch.cuda.current_stream().synchronize()
        return buf.cpu().numpy().reshape(shape).astype(dtype, copy=False)

    def release(self, buf: Any) -> None:
        del buf


class CudartIO(DeviceIO):
    """Buffers from ``cudaMalloc`` with async copies on a private stream (cuda-python)."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart
        self._keep: list[np.ndarray] = []
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CompileError(f"CUDA call {what} failed with {err}; check the GPU driver (nvidia-smi / tegrastats)")
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def stream_handle(self) -> int:  # type: ignore[override]
        return int(self.stream)

    def upload(self, arr: np.ndarray) -> Any:
        arr = np.ascontiguousarray(arr)
        ptr = self._check(self.rt.cudaMalloc(max(arr.nbytes, 1)), "cudaMalloc")
        self._keep.append(arr)  # host memory must outlive the async copy
        self._check(self.rt.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
                    "cudaMemcpyAsync(H2D)")
        return ptr

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self._check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc")

    def ptr(self, buf: Any) -> int:
        return int(buf)

    def download(self, buf: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        self._check(self.rt.cudaMemcpyAsync(out.ctypes.data, buf, out.nbytes,
                                            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream),
                    "cudaMemcpyAsync(D2H)")
        self._check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        self._keep.clear()
        return out

    def release(self, buf: Any) -> None:
        self._check(self.rt.cudaFree(buf), "cudaFree")


def make_device_io() -> DeviceIO:
    """torch CUDA buffers if torch sees the GPU, else cuda-python; BackendUnavailable if neither."""
    torch = _torch_cuda()
    if torch is not None:
        return TorchIO(torch)
    cudart = import_cudart()
    if cudart is not None:
        return CudartIO(cudart)
    raise BackendUnavailable(
        "running a TensorRT engine needs CUDA buffers from torch (a CUDA build) or cuda-python; "
        "install one: pip install 'edgeres[tensorrt]'"
    )
