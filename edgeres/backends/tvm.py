"""Apache TVM (Relax) backend: ONNX -> shared library for a CPU target.

Flow: ``relax.frontend.onnx.from_onnx`` with a static batch (the target's
``batch_size``) -> NCHW->NHWC conversion (the default layout) -> float32 convolutions
legalized to edgeres' packed-weight kernel (:mod:`edgeres.backends.tvm_conv`), the rest by
``relax.get_pipeline("zero")`` (legalize, fold constants, fuse) -> the MetaSchedule
database's schedules, when one is given -> edgeres' default CPU schedule for the rest
(:mod:`edgeres.backends.tvm_schedule`) -> ``tvm.compile`` -> ``model.so`` (linked by the
cross compiler for other architectures, see :mod:`edgeres.backends.tvm_cross`) plus
``model.tvm.json``, a sidecar that lets :func:`load` work from the ``.so`` path alone. The
lowering and scheduling steps live in :mod:`edgeres.backends.tvm_lower`.

INT8: TVM imports a Q/DQ model as ``quantize -> dequantize -> float conv``. edgeres rewrites
each quantized convolution into an integer one (:mod:`edgeres.backends.tvm_int8`: uint8
activations, int8 weights, the CPU's dot-product instruction) and the remaining activation
Q/DQ pairs into elementwise ops fused into the convolutions' epilogues
(:mod:`edgeres.backends.tvm_qdq`). ``info["int8_kernels"]`` says whether any convolution
runs integer arithmetic and ``info["int8_note"]`` how many, and why the others do not.

Options: see :mod:`edgeres.backends.tvm_target` (``target``, ``layout``, ``conv``, ``int8``,
``schedule``, ``tuning_db``, ``threads``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgeres.backends import tvm_target as tt
from edgeres.backends.base import Artifact, run_in_chunks
from edgeres.backends.tvm_lower import apply_schedules, conv_kernels, lower
from edgeres.errors import BackendUnavailable, CompileError, InputError, UsageError
from edgeres.fileio import write_json

NAME = "tvm"
MODEL_FILE = "model.so"
SIDECAR_SUFFIX = ".tvm.json"
SIDECAR_FORMAT = "edgeres-tvm/1"
PRECISIONS = ("fp32", "int8")


# -- availability ---------------------------------------------------------------------


def unavailable_reason() -> str:
    """Empty when TVM imports, else why not (one line)."""
    try:
        import tvm  # noqa: F401
        from tvm import relax  # noqa: F401
        from tvm.relax.frontend import onnx as _onnx  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means unavailable
        return f"apache-tvm does not import ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''})"
    return ""


def available() -> bool:
    return unavailable_reason() == ""


def version() -> str | None:
    try:
        import tvm
    except Exception:  # noqa: BLE001
        return None
    return str(tvm.__version__)


def _require() -> None:
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailable(f"the tvm backend is not available here ({reason}); "
                                 "install it with: pip install 'edgeres[tvm]'")


def _cross_compiler(target: Any) -> Any:
    """``fcompile`` for ``export_library``: None for the host, the aarch64 cross linker otherwise."""
    from edgeres.backends import tvm_cross

    return tvm_cross.cross_compiler(target)


# -- import and lowering --------------------------------------------------------------


@dataclass(frozen=True)
class ImportedModel:
    """An ONNX model imported into Relax with a static input shape."""

    mod: Any  # tvm.IRModule
    input_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    num_qdq: int


def onnx_input(proto: Any, name: str = "model") -> tuple[str, list[int | None]]:
    """The (first) graph input that is not an initializer: name and dims (None = symbolic)."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if not inputs:
        raise InputError(f"{name} has no graph input; export the model again with edgeres export")
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) != 4:
        raise InputError(f"{name} input {inp.name!r} has {len(shape)} dims; edgeres compiles NCHW image models "
                         "(4 dims)")
    if any(d is None for d in shape[1:]):
        raise InputError(f"{name} input {inp.name!r} has symbolic dims {shape[1:]} besides the batch; "
                         "export it with a fixed C, H, W")
    return inp.name, shape


def load_onnx(onnx_path: str | os.PathLike) -> Any:
    """``onnx.load`` with a one-line InputError for a missing or corrupt file."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"ONNX model {path} does not exist; check the path")
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf DecodeError and friends
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise InputError(f"{path} is not a valid ONNX model: {reason}; re-export it (edgeres export)") from e


def import_onnx(onnx_path: str | os.PathLike, batch_size: int = 1, proto: Any = None) -> ImportedModel:
    """Import ``onnx_path`` (or its already loaded ``proto``) into Relax with batch ``batch_size``.

    The ONNX batch dimension may be symbolic or equal to ``batch_size``.
    """
    from tvm.relax.frontend.onnx import from_onnx

    path = Path(onnx_path)
    proto = proto if proto is not None else load_onnx(path)
    name, shape = onnx_input(proto, path.name)
    if shape[0] not in (None, batch_size):
        raise UsageError(f"{path.name} has a fixed batch of {shape[0]} but the target compiles batch {batch_size}; "
                         "export the model with a dynamic batch (edgeres export does)")
    static = (batch_size, *[int(d) for d in shape[1:]])
    num_qdq = sum(1 for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))
    try:
        mod = from_onnx(proto, shape_dict={name: list(static)})
    except Exception as e:  # noqa: BLE001 - the frontend raises many types
        raise CompileError(f"TVM cannot import {path.name}: {_first_line(e)}; check that the model uses standard "
                           "ONNX ops (opset <= 20) or compile it with the onnxruntime backend") from e
    return ImportedModel(mod, name, static, _output_shape(mod, proto), num_qdq)


def _output_shape(mod: Any, proto: Any) -> tuple[int, ...]:
    try:
        ret = mod["main"].ret_ty
        return tuple(int(v) for v in ret.shape.values)
    except Exception:  # noqa: BLE001 - tuple outputs, or another TVM version's spelling
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        return tuple(int(d.dim_value) for d in dims)


def tuning_module(onnx_path: str | os.PathLike, target: Any,
                  options: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """``(IRModule, tvm.target.Target)`` exactly as :func:`compile` schedules it.

    This is what a MetaSchedule run should extract its tasks from
    (``ms.relax_integration.extract_tasks(mod, target)``), so that the database it writes
    matches the workloads :func:`compile` looks up with ``options={"tuning_db": work_dir}``.
    """
    _require()
    from edgeres.backends import tvm_cross

    opts = tt.parse_options(target, options)
    target_dict = tt.resolve_target_dict(opts.target, cross=tvm_cross.needs_cross(target),
                                         target_name=getattr(target, "name", "?"))
    tvm_target = tt.make_target(target_dict)
    imported = import_onnx(onnx_path, int(getattr(target, "batch_size", 1) or 1))
    return lower(imported.mod, tvm_target, opts), tvm_target


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    # TVM errors end with the actual message after a traceback.
    msg = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
    return (msg or type(e).__name__)[:300]


# -- compile --------------------------------------------------------------------------


def sidecar_path(so_path: str | os.PathLike) -> Path:
    p = Path(so_path)
    return p.with_name(p.name[: -len(p.suffix)] + SIDECAR_SUFFIX if p.suffix else p.name + SIDECAR_SUFFIX)


def compile(onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
            options: Mapping[str, Any] | None = None) -> Artifact:
    """Compile ``onnx_path`` (FP32, or the Q/DQ INT8 model for ``precision="int8"``) for ``target``.

    Writes ``out_dir/model.so`` and ``out_dir/model.tvm.json`` atomically.
    """
    _require()
    from edgeres.backends import tvm_cross
    from edgeres.backends.onnxruntime import check_precision

    t0 = time.perf_counter()
    if precision not in PRECISIONS:
        raise UsageError(f"the tvm backend compiles precisions {list(PRECISIONS)}, not {precision!r}")
    opts = tt.parse_options(target, options)
    src = Path(onnx_path)
    proto = load_onnx(src)  # one-line InputError for a missing or corrupt model
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    check_precision(counts, precision, src.name, target)
    cross = tvm_cross.needs_cross(target)
    tvm_cross.check_tvm_target(target, opts.target)
    _cross_compiler(target)  # fail fast (BackendUnavailable) when the cross toolchain is missing
    target_dict = tt.resolve_target_dict(opts.target, cross=cross, target_name=getattr(target, "name", "?"))
    tvm_target = tt.make_target(target_dict)
    batch = int(getattr(target, "batch_size", 1) or 1)
    imported = import_onnx(src, batch, proto)
    del proto
    rewrite: dict[str, int] = {}
    try:
        mod, tuned = apply_schedules(lower(imported.mod, tvm_target, opts, rewrite), tvm_target, opts)
        convs = conv_kernels(mod)
        import tvm

        executable = tvm.compile(mod, tvm_target)
    except (UsageError, InputError):
        raise
    except Exception as e:  # noqa: BLE001 - TVM raises TVMError, ValueError, ...
        hint = ("retry with --option conv=topi, or schedule=none, to rule out edgeres' kernels and schedule"
                if opts.schedule == "builtin" else "report the model and target to edgeres")
        raise CompileError(f"TVM could not compile {src.name} for {getattr(target, 'name', '?')}: "
                           f"{_first_line(e)}; {hint}") from e
    out = Path(out_dir)
    so = out / MODEL_FILE
    sidecar_path(so).unlink(missing_ok=True)  # never a stale sidecar next to a new library
    tvm_cross.export_library(executable, so, target)  # atomic; cross-links for other archs
    seconds = time.perf_counter() - t0
    info: dict[str, Any] = {
        "tvm_version": version(),
        "tvm_target": target_dict,
        "tvm_target_str": str(tvm_target),
        "arch": tvm_cross.target_arch(target),
        "layout": opts.layout,
        "conv": opts.conv,
        "conv_kernels": convs,
        "schedule": opts.schedule,
        "tuning_db": str(opts.tuning_db) if opts.tuning_db else None,
        "tuned_functions": tuned,
        "threads": opts.threads,
        "output_shape": list(imported.output_shape),
        "int8": opts.int8,
        "int8_kernels": convs.get("packed_int8", 0) > 0,
    }
    if precision == "int8":
        from edgeres.backends.tvm_int8 import describe

        info["int8_note"] = describe(opts, tvm_target, rewrite)
    artifact = Artifact(backend=NAME, path=so, precision=precision, input_name=imported.input_name,
                        input_shape=imported.input_shape, files=(MODEL_FILE, sidecar_path(so).name),
                        compile_seconds=seconds, info=info)
    write_json(sidecar_path(so), {"format": SIDECAR_FORMAT, **artifact.to_dict()})
    return artifact


# -- load / run -----------------------------------------------------------------------


def read_artifact(path: str | os.PathLike) -> Artifact:
    """The Artifact recorded next to a compiled library (``model.so`` or its directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise InputError(f"TVM library {p} does not exist; compile the model first (edgeres compile)")
    side = sidecar_path(p)
    if not side.is_file():
        raise InputError(f"{side.name} is missing next to {p.name}; compile the model again to write it")
    try:
        rec = json.loads(side.read_text())
        if rec.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format {rec.get('format')!r}, expected {SIDECAR_FORMAT!r}")
        art = Artifact.from_dict(rec, p.parent)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{side} is not a valid edgeres TVM sidecar ({e}); compile the model again") from e
    return Artifact(art.backend, p, art.precision, art.input_name, art.input_shape, art.files,
                    art.compile_seconds, art.info)


def set_threads(threads: int) -> int:
    """Size TVM's (process-wide) CPU thread pool; return the threads it will use.

    TVM sizes its pool from ``TVM_NUM_THREADS`` when first used (default: half the
    logical CPUs on x86); this sets that variable if the user has not, then limits
    the pool to ``threads``. A pool created earlier with fewer threads cannot grow.
    """
    import tvm

    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    tvm.get_global_func("runtime.config_threadpool")(1, int(threads))
    return int(tvm.get_global_func("runtime.NumThreads")())


class TvmRunner:
    """Runner over a Relax VM: NCHW float32 batch (any size) -> float32 logits."""

    def __init__(self, artifact: Artifact, threads: int | None = None) -> None:
        import tvm
        from tvm import relax

        self.artifact = artifact
        self.input_name = artifact.input_name
        self.input_shape = tuple(artifact.input_shape)
        out = artifact.info.get("output_shape") or []
        self.num_classes: int | None = int(out[-1]) if out else None
        # like ONNX Runtime, use every core unless told otherwise (TVM's own default is half on x86)
        self.threads = set_threads(threads or int(os.environ.get("TVM_NUM_THREADS") or 0) or (os.cpu_count() or 1))
        try:
            lib = tvm.runtime.load_module(str(artifact.path))
            self._vm = relax.VirtualMachine(lib, tvm.cpu())
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot load {artifact.path} ({_first_line(e)}); compile the model again with "
                             f"this TVM ({version()})") from e
        self._tensor = tvm.runtime.tensor

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self._vm["main"](self._tensor(x))
        if not hasattr(out, "numpy"):  # a tuple of outputs: the logits come first
            out = out[0]
        return np.asarray(out.numpy(), dtype=np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise InputError(f"input batch has shape {tuple(x.shape)} but {self.artifact.path.name} expects "
                             f"(N, {', '.join(map(str, self.input_shape[1:]))}); resize/crop to the model's input size")
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        return run_in_chunks(self._run, x, self.input_shape[0])


def load(artifact_or_path: Artifact | str | os.PathLike, target: Any = None, *,
         threads: int | None = None) -> Any:
    """A Runner for a compiled library (an Artifact, ``model.so``, or its directory).

    ``threads`` (else the target's / artifact's ``threads`` option) sizes TVM's thread pool.
    A library built for another architecture runs in the C++ runner under qemu
    (:func:`edgeres.cpp_runner.emulated_runner`) when that is set up.
    """
    _require()
    from edgeres.backends import tvm_cross

    art = read_artifact(artifact_or_path.path if isinstance(artifact_or_path, Artifact) else artifact_or_path)
    if threads is None:
        threads = tt.parse_options(target, None).threads if target is not None else art.info.get("threads")
    arch = art.info.get("arch") or tvm_cross.elf_arch(art.path) or tvm_cross.host_arch()
    if arch != tvm_cross.host_arch():
        from edgeres.cpp_runner import emulated_runner

        return emulated_runner(art.path, art.input_shape)  # one qemu process per call, any batch size
    missing = tt.missing_host_features(art.info.get("tvm_target") or {})
    if missing:  # running it would die of SIGILL
        raise BackendUnavailable(
            f"{art.path} was compiled for {art.info['tvm_target'].get('mcpu', '?')} and this CPU lacks "
            f"{', '.join(missing)}; run it on such a CPU, or compile for x86-64-host to run it here")
    return TvmRunner(art, threads)
