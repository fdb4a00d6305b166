"""Running a serialized TensorRT engine (TensorRT >= 8.5 name-based I/O API; older boards, or boards
without the Python bindings, run engines through trtexec: :mod:`edgeres.backends.tensorrt.trtexec`).

``Runtime.deserialize_cuda_engine`` -> ``create_execution_context`` -> per batch:
``set_input_shape`` + ``set_tensor_address`` for every I/O tensor -> ``execute_async_v3``.
The same calls exist in TensorRT 8.5, 10 and 11. A DLA engine gets ``Runtime.DLA_core`` set to the
core it was built for (recorded in ``engine.json``) before it is deserialized.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.backends.tensorrt.builder import make_logger, require_python_api
from edgeres.backends.tensorrt.cuda import DeviceIO, make_device_io
from edgeres.errors import CompileError, InputError

SIDECAR = "engine.json"


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    """The build record written next to ``model.engine`` (empty dict if absent)."""
    side = engine_path.parent / SIDECAR
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{side} is not valid JSON ({e.msg}); rebuild the engine with `edgeres build-engine`") from e


class TrtRunner:
    """Maps an NCHW float32 batch of any size to float32 logits through a TensorRT engine."""

    def __init__(self, trt: Any, engine_path: Path, meta: dict[str, Any] | None = None,
                 io: DeviceIO | None = None) -> None:
        require_python_api(trt)
        meta = meta if meta is not None else read_sidecar(engine_path)
        built_with = meta.get("tensorrt_version")
        version_compatible = bool(meta.get("build", {}).get("version_compatible", False))
        if built_with and built_with != trt.__version__ and not version_compatible:
            raise InputError(
                f"{engine_path.name} was built with TensorRT {built_with} but {trt.__version__} is installed; "
                "engines are tied to one TensorRT version: rebuild it here with `edgeres build-engine BUNDLE`"
            )
        self._logger = make_logger(trt)
        self.runtime = trt.Runtime(self._logger)
        core = meta.get("build", {}).get("dla_core")
        self.dla_core = -1 if core is None else int(core)
        if self.dla_core >= 0:
            self.runtime.DLA_core = self.dla_core  # a DLA engine runs on the core it was built for
        if version_compatible:
            self.runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            gpu = meta.get("gpu", {}).get("name", "another GPU")
            why = "; ".join(self._logger.errors()[-1:]) or "TensorRT gave no reason"
            raise InputError(
                f"TensorRT {trt.__version__} cannot load {engine_path.name} (built for {gpu}): {why}; "
                "rebuild it on this device with `edgeres build-engine BUNDLE`"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        ins = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not self.outputs:
            raise InputError(f"{engine_path.name} has {len(ins)} inputs and {len(self.outputs)} outputs; expected 1 image input and a logits output")
        self.input = ins[0]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        shape = [int(d) for d in self.engine.get_tensor_shape(self.input)]
        self.chw = tuple(shape[1:])
        if shape[0] >= 0:
            self.bmin = self.bmax = shape[0]
        else:
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input, 0)
            self.bmin, self.bmax = int(lo[0]), int(hi[0])
        self.io = io or make_device_io()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outs = self._chunks(batch, first_only=True)
        if not outs:
            return np.zeros((0, 0), np.float32)
        return outs[0].reshape(outs[0].shape[0], -1)

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output tensor of the engine (a feature extractor's stages), in the engine's I/O order."""
        outs = self._chunks(batch, first_only=False)
        if not outs:
            raise InputError("no images in the batch")
        return outs

    def _chunks(self, batch: np.ndarray, *, first_only: bool) -> list[np.ndarray]:
        batch = np.asarray(batch)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.chw:
            raise InputError(f"expected an N x {' x '.join(map(str, self.chw))} batch, got shape {tuple(batch.shape)}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = []
        for start in range(0, batch.shape[0], self.bmax):
            chunk = batch[start : start + self.bmax]
            n = chunk.shape[0]
            if n < self.bmin:  # static or DLA-pinned batch: pad, then drop the padding
                chunk = np.concatenate([chunk, np.zeros((self.bmin - n, *self.chw), np.float32)])
            parts.append([o[:n] for o in self._run(chunk, self.outputs[:1] if first_only else self.outputs)])
        return [np.concatenate(o).astype(np.float32, copy=False) for o in zip(*parts)]

    def _run(self, x: np.ndarray, wanted: list[str]) -> list[np.ndarray]:
        ctx, io = self.context, self.io
        if not ctx.set_input_shape(self.input, tuple(x.shape)):
            raise InputError(f"batch shape {tuple(x.shape)} is outside the engine's profile (batch {self.bmin}..{self.bmax})")
        bufs = {self.input: io.upload(x.astype(self.dtypes[self.input], copy=False))}
        shapes = {}
        for name in self.outputs:
            shapes[name] = tuple(int(d) for d in ctx.get_tensor_shape(name))
            bufs[name] = io.empty(shapes[name], self.dtypes[name])
        for name, buf in bufs.items():
            ctx.set_tensor_address(name, io.ptr(buf))
        try:
            if not ctx.execute_async_v3(io.stream_handle):
                errs = self._logger.errors()
                raise CompileError(f"TensorRT execution failed: {errs[-1] if errs else 'no message'}; check the engine and GPU")
            outs = [io.download(bufs[n], shapes[n], self.dtypes[n]).astype(np.float32, copy=False) for n in wanted]
        finally:
            for buf in bufs.values():
                io.release(buf)
        return outs
