"""Apache TVM (Relax) backend: ONNX -> shared library for a CPU target.

Flow: ``relax.frontend.onnx.from_onnx`` with a static batch (the target's
``batch_size``) -> NCHW->NHWC conversion (the default layout) -> float32 convolutions
legalized to edgeres' packed-weight kernel (:mod:`edgeres.backends.tvm.conv`), the rest by
``relax.get_pipeline("zero")`` (legalize, fold constants, fuse) -> the MetaSchedule
database's schedules, when one is given -> edgeres' default CPU schedule for the rest
(:mod:`edgeres.backends.tvm.schedule`) -> ``tvm.compile`` -> ``model.so`` (linked by the
cross compiler for other architectures, see :mod:`edgeres.backends.tvm.cross`) plus
``model.tvm.json``, a sidecar that lets :func:`load` work from the ``.so`` path alone. The
lowering and scheduling steps live in :mod:`edgeres.backends.tvm.lower`.

INT8: TVM imports a Q/DQ model as ``quantize -> dequantize -> float conv``. edgeres rewrites
each quantized convolution into an integer one (:mod:`edgeres.backends.tvm.int8`: uint8
activations, int8 weights, the CPU's dot-product instruction) and the remaining activation
Q/DQ pairs into elementwise ops fused into the convolutions' epilogues
(:mod:`edgeres.backends.tvm.qdq`). ``info["int8_kernels"]`` says whether any convolution
runs integer arithmetic and ``info["int8_note"]`` how many, and why the others do not.

Options: see :mod:`edgeres.backends.tvm.options` (``target``, ``layout``, ``conv``, ``int8``,
``schedule``, ``tuning_db``, ``threads``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from edgeres.backends.base import Artifact, Backend, Capabilities, Runner, check_precision
from edgeres.backends.tvm import cross as tvm_cross
from edgeres.backends.tvm import options as tt
from edgeres.backends.tvm.importer import import_onnx
from edgeres.backends.tvm.library import build_library
from edgeres.backends.tvm.lower import lower
from edgeres.backends.tvm import runner as _runner
from edgeres.backends.tvm.runner import MODEL_FILE, SIDECAR_FORMAT, sidecar_path
from edgeres.errors import UsageError
from edgeres.fileio import write_json

NAME = "tvm"
PRECISIONS = ("fp32", "int8", "bf16")


def tuning_module(onnx_path: str | os.PathLike, target: Any,
                  options: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """``(IRModule, tvm.target.Target)`` exactly as :func:`compile` schedules it.

    This is what a MetaSchedule run should extract its tasks from
    (``ms.relax_integration.extract_tasks(mod, target)``), so that the database it writes
    matches the workloads :func:`compile` looks up with ``options={"tuning_db": work_dir}``.
    """
    _runner.require()
    opts = tt.parse_options(target, options)
    target_dict = tt.resolve_target_dict(opts.target, cross=tvm_cross.needs_cross(target),
                                         target_name=getattr(target, "name", "?"))
    tvm_target = tt.make_target(target_dict)
    imported = import_onnx(onnx_path, int(getattr(target, "batch_size", 1) or 1))
    return lower(imported.mod, tvm_target, opts), tvm_target


def compile(onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
            options: Mapping[str, Any] | None = None) -> Artifact:
    """Compile ``onnx_path`` (FP32, or the Q/DQ INT8 model for ``precision="int8"``) for ``target``.

    Writes ``out_dir/model.so`` and ``out_dir/model.tvm.json`` atomically; a portable target
    (``variants`` in its ``[tvm]`` table) also writes one ``model.<level>.so`` per further ISA
    level and ``model.variants`` (:mod:`edgeres.backends.tvm.portable`).
    """
    _runner.require()
    from edgeres.onnx_io import load_model, op_counts

    t0 = time.perf_counter()
    opts = tt.parse_options(target, options)
    check_target_precision(target, precision, opts)
    src = Path(onnx_path)
    proto = load_model(src)  # one-line InputError for a missing or corrupt model
    check_precision(op_counts(proto), precision, src.name, target)
    tvm_cross.check_tvm_target(target, opts.target)
    tvm_cross.cross_compiler(target)  # fail fast (BackendUnavailable) when the cross toolchain is missing
    out = Path(out_dir)
    so = out / MODEL_FILE
    sidecar_path(so).unlink(missing_ok=True)  # never a stale sidecar next to a new library
    if opts.variants:
        from edgeres.backends.tvm.portable import compile_variants

        del proto
        info, files = compile_variants(src, target, out, precision, opts)
    else:
        target_dict = tt.resolve_target_dict(opts.target, cross=tvm_cross.needs_cross(target),
                                             target_name=getattr(target, "name", "?"))
        info = build_library(src, target, target_dict, opts, precision, so, proto=proto)
        files = [MODEL_FILE]
    shape = info.pop("input_shape")
    artifact = Artifact(backend=NAME, path=so, precision=precision, input_name=info.pop("input_name"),
                        input_shape=tuple(shape), files=(*files, sidecar_path(so).name),
                        compile_seconds=time.perf_counter() - t0, info=info)
    write_json(sidecar_path(so), {"format": SIDECAR_FORMAT, **artifact.to_dict()})
    return artifact


def check_target_precision(target: Any, precision: str, opts: tt.TvmOptions) -> None:
    """UsageError when the TVM backend, or the CPU the target compiles for, cannot run ``precision``."""
    if precision not in PRECISIONS:
        raise UsageError(f"the tvm backend compiles precisions {list(PRECISIONS)}, not {precision!r}")
    if precision != "bf16":
        return
    name = getattr(target, "name", "?")
    if opts.variants:
        from edgeres.backends.tvm.variants import levels_for

        if not levels_for(opts.variants, "bf16"):
            raise UsageError(f"target {name!r} has no ISA level with BF16 (its variants: {list(opts.variants)}); "
                             "use --precision fp32 or int8")
        return
    from edgeres.backends.tvm.bf16 import supported

    target_dict = tt.resolve_target_dict(opts.target, cross=tvm_cross.needs_cross(target), target_name=name)
    if not supported(tt.make_target(target_dict)):
        raise UsageError(f"target {name!r} compiles for {target_dict.get('mcpu', 'a CPU')}, which has no BF16 dot "
                         "product (AVX512_BF16: Cooper Lake, Sapphire Rapids, Zen 4 and later); edgeres' TVM BF16 "
                         "kernels need it: use --precision fp32 or int8, or --target x86-64 / x86-64-host on such a CPU")


class TvmBackend(Backend):
    """Apache TVM (Relax): x86 and ARM CPUs, cross-compiled where the target's arch is not this machine's."""

    name = NAME
    extra = "edgeres[tvm]"
    capabilities = Capabilities(precisions=PRECISIONS, cross_compile=True, cpp_example=True, tuning=True,
                                remote=True, profile=True)

    def unavailable_reason(self) -> str:
        return _runner.unavailable_reason()

    def version(self) -> str | None:
        return _runner.version()

    def compile(self, onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
                options: Mapping[str, Any] | None = None) -> Artifact:
        return compile(onnx_path, target, out_dir, precision=precision, options=options)

    def load(self, artifact: Artifact | str | os.PathLike, target: Any = None, *,
             variant: str | None = None) -> Runner:
        return _runner.load(artifact, target, variant=variant)

    def preflight(self, target: Any, precision: str, options: Mapping[str, Any] | None = None) -> None:
        """TVM imports, the options parse, and a cross target has its toolchain — before any work."""
        self.require()
        opts = tt.parse_options(target, options)
        check_target_precision(target, precision, opts)
        tvm_cross.check_tvm_target(target, opts.target)
        tvm_cross.cross_compiler(target)

    def write_app_example(self, bundle_dir: Path) -> None:
        from edgeres.backends.tvm.cpp_runner import write_cpp_runner

        write_cpp_runner(bundle_dir)

    def open_device(self, device: Any) -> Any:
        """A board over TVM's RPC (:class:`edgeres.backends.tvm.rpc.TvmDevice`); connects on first use."""
        self.require()
        from edgeres.backends.tvm.rpc import TvmDevice

        return TvmDevice(device)

    def profile(self, artifact: Artifact, *, repeats: int = 10) -> dict[str, Any]:
        """Per-operator profile on this machine (:mod:`edgeres.backends.tvm.profile`)."""
        self.require()
        from edgeres.backends.tvm.profile import profile_library

        art = _runner.read_artifact(artifact.path)
        arch = art.info.get("arch") or tvm_cross.elf_arch(art.path)
        if arch and arch != tvm_cross.host_arch():
            raise UsageError(f"{art.path} is built for {arch}; profile it on the board with --device HOST:PORT "
                             "(a server started with edgeres serve-device)")
        # a portable artifact: the variant `run` and `bench` would pick here (or $EDGERES_TVM_VARIANT)
        from edgeres.backends.tvm.variants import cpu_flags

        art, variant = _runner.pick_variant(art, cpu_flags())
        if variant is None:
            missing = tt.missing_host_features(art.info.get("tvm_target") or {})
            if missing:
                raise UsageError(f"{art.path} needs {', '.join(missing)}, which this CPU lacks; profile it on such a CPU")
        threads = art.info.get("threads") or int(os.environ.get("TVM_NUM_THREADS") or 0) or (os.cpu_count() or 1)
        res = profile_library(str(art.path), art.input_shape, repeats=repeats,
                              layout=str(art.info.get("layout") or "NHWC"), threads=threads)
        return {**res, "variant": variant} if variant else res
