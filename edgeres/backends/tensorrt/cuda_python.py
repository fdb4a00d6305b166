"""Device buffers through NVIDIA's ``cuda-python`` bindings (optional; see :mod:`edgeres.backends.tensorrt.cuda`).

Used only when the package is installed and its major matches the driver: cuda-python 13 on a
CUDA 12 driver (JetPack 6) cannot initialise, which :class:`CudaPythonIO` reports instead of failing later.
"""

from __future__ import annotations

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


class CudaPythonIO:
    """``cudaMalloc`` buffers with async copies on a private stream, through cuda-python (the
    :class:`edgeres.backends.tensorrt.cuda.DeviceIO` interface)."""

    name = "cuda-python"

    def __init__(self, cudart: Any | None = None) -> None:
        self.rt = cudart if cudart is not None else import_cudart()
        if self.rt is None:
            raise BackendUnavailable("cuda-python is not installed")
        err, count = self.rt.cudaGetDeviceCount()
        if err != self.rt.cudaError_t.cudaSuccess or count < 1:
            raise BackendUnavailable(f"cuda-python cannot use the GPU ({err}); its major must match the driver's CUDA")
        self._keep: list[np.ndarray] = []
        self.stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def _check(self, result: Any, what: str) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise CompileError(f"CUDA call {what} failed with {err}; check the GPU driver")
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
