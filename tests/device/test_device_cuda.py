"""CUDA buffers for the TensorRT runner without a CUDA wheel: the CUDA runtime library through ctypes, chosen
at run time, with a clear error naming every provider that was tried (defect 2: unpinned cuda-python 13
needs a CUDA 13 driver; JetPack 6 has CUDA 12.6)."""

from __future__ import annotations

import re
import types

import pytest

from edgeres.backends.tensorrt import cuda
from edgeres.errors import BackendUnavailable


def test_the_installed_cuda_runtime_loads_through_ctypes():
    info = cuda.cuda_runtime_info()
    if not info["found"]:
        pytest.skip(f"no libcudart on this machine: {info['error']}")
    assert re.fullmatch(r"\d+\.\d", info["runtime_version"]) and "libcudart.so" in info["path"]
    if info.get("device_count", 0) == 0:  # no GPU/driver here: the runtime says why, in words
        assert "error" in info and "cudaGetDeviceCount" in info["error"]


def test_without_a_gpu_every_provider_is_named(monkeypatch):
    if cuda.gpu_info(probe_cuda=True) is not None:
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailable) as e:
        cuda.make_device_io()
    msg = str(e.value)
    assert "cudart:" in msg and "cuda-python:" in msg and "torch:" in msg and "\n" not in msg
    monkeypatch.setenv(cuda.IO_ENV, "pycuda")
    with pytest.raises(BackendUnavailable, match="is not one of"):
        cuda.make_device_io()


def test_cuda_python_of_another_major_than_the_driver_is_skipped_with_the_reason():
    from edgeres.backends.tensorrt.cuda_python import CudaPythonIO

    err = types.SimpleNamespace(cudaSuccess=0, cudaErrorInsufficientDriver=35)
    cuda13_on_cuda12 = types.SimpleNamespace(cudaError_t=err, cudaGetDeviceCount=lambda: (35, 0))
    with pytest.raises(BackendUnavailable, match="major must match the driver"):
        CudaPythonIO(cuda13_on_cuda12)


def test_a_second_cuda_runtime_is_never_loaded_beside_tensorrts(monkeypatch):
    """When TensorRT already mapped libcudart.so.12, that one is used, not the first soname on the path."""
    monkeypatch.setattr(cuda, "_CUDART", None)
    seen = []

    class FakeCDLL:
        def __init__(self, name):
            seen.append(name)
            if name != "/usr/lib/aarch64-linux-gnu/libcudart.so.12":
                raise OSError(f"{name}: cannot open shared object file")
            self.cudaGetErrorString = types.SimpleNamespace(restype=None, argtypes=None)
            for fn in ("cudaMemcpyAsync", "cudaMalloc", "cudaFree", "cudaStreamSynchronize", "cudaStreamDestroy"):
                setattr(self, fn, types.SimpleNamespace(argtypes=None))

    monkeypatch.setattr(cuda, "_mapped_cudart", lambda: ["/usr/lib/aarch64-linux-gnu/libcudart.so.12"])
    monkeypatch.setattr(cuda.ctypes, "CDLL", FakeCDLL)
    rt, why = cuda.load_cudart()
    assert rt is not None and rt.path.endswith("libcudart.so.12") and seen == [rt.path]
    monkeypatch.setattr(cuda, "_CUDART", None)
