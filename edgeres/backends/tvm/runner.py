"""Running a compiled TVM library: its sidecar record, the thread pool, the Relax VM runner.

A library built for another architecture runs in the C++ runner under qemu
(:func:`edgeres.backends.tvm.cpp_runner.emulated_runner`) when that is set up; a library
built for CPU features this machine lacks is refused (it would die of SIGILL).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.backends.base import Artifact, run_all_in_chunks, run_in_chunks
from edgeres.backends.tvm import cross as tvm_cross
from edgeres.backends.tvm import options as tt
from edgeres.backends.tvm.importer import first_line
from edgeres.errors import BackendUnavailable, InputError, UsageError

MODEL_FILE = "model.so"
SIDECAR_SUFFIX = ".tvm.json"
SIDECAR_FORMAT = "edgeres-tvm/1"


def unavailable_reason() -> str:
    """Empty when TVM imports, else why not (one line)."""
    try:
        import tvm  # noqa: F401
        from tvm import relax  # noqa: F401
        from tvm.relax.frontend import onnx as _onnx  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means unavailable
        return f"apache-tvm does not import ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''})"
    return ""


def version() -> str | None:
    try:
        import tvm
    except Exception:  # noqa: BLE001
        return None
    return str(tvm.__version__)


def require() -> None:
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailable(f"the tvm backend is not available here ({reason}); "
                                 "install it with: pip install 'edgeres[tvm]'")


def sidecar_path(so_path: str | os.PathLike) -> Path:
    p = Path(so_path)
    return p.with_name(p.name[: -len(p.suffix)] + SIDECAR_SUFFIX if p.suffix else p.name + SIDECAR_SUFFIX)



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

    def __init__(self, artifact: Artifact, threads: int | None = None, variant: str | None = None) -> None:
        import tvm
        from tvm import relax

        self.artifact = artifact
        self.variant = variant  # the ISA level that runs, for a portable artifact
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
            raise InputError(f"cannot load {artifact.path} ({first_line(e)}); compile the model again with "
                             f"this TVM ({version()})") from e
        self._tensor = tvm.runtime.tensor

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self._vm["main"](self._tensor(x))
        if not hasattr(out, "numpy"):  # a tuple of outputs: the logits come first
            out = out[0]
        return np.asarray(out.numpy(), dtype=np.float32)

    def _run_all(self, x: np.ndarray) -> list[np.ndarray]:
        out = self._vm["main"](self._tensor(x))
        outs = [out] if hasattr(out, "numpy") else list(out)
        return [np.asarray(o.numpy(), dtype=np.float32) for o in outs]

    def _check(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise InputError(f"input batch has shape {tuple(x.shape)} but {self.artifact.path.name} expects "
                             f"(N, {', '.join(map(str, self.input_shape[1:]))}); resize/crop to the model's input size")
        return x

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = self._check(batch)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        return run_in_chunks(self._run, x, self.input_shape[0])

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the library (a feature extractor's stages), in the ONNX model's order."""
        x = self._check(batch)
        if x.shape[0] == 0:
            raise InputError("no images in the batch")
        return run_all_in_chunks(self._run_all, x, self.input_shape[0])


def pick_variant(art: Artifact, flags: Any, variant: str | None = None) -> tuple[Artifact, str | None]:
    """(``art`` pointing at the variant library a CPU with ``flags`` runs, its name); a single-ISA artifact
    unchanged (name None). ``variant`` (else ``$EDGERES_TVM_VARIANT``) forces one (refused when ``flags``
    lack its instructions); ``flags=None`` (unknown CPU): the most portable variant."""
    from edgeres.backends.tvm import variants as tv

    if not art.info.get("variants"):
        return art, None
    forced = variant or os.environ.get(tv.VARIANT_ENV) or None
    listed = [tv.Variant.from_dict(v) for v in art.info["variants"]]
    chosen = tv.select(listed, flags, forced, what=str(art.path.parent))
    return Artifact(art.backend, art.path.parent / chosen.file, art.precision, art.input_name, art.input_shape,
                    art.files, art.compile_seconds, art.info), chosen.name


def load(artifact_or_path: Artifact | str | os.PathLike, target: Any = None, *,
         threads: int | None = None, variant: str | None = None) -> Any:
    """A Runner for a compiled library (an Artifact, ``model.so``, or its directory).

    ``threads`` (else the target's / artifact's ``threads`` option) sizes TVM's thread pool.
    A portable artifact runs the best variant this CPU supports, or ``variant``
    (else ``$EDGERES_TVM_VARIANT``) if given: refused when this CPU lacks its instructions.
    A library built for another architecture runs in the C++ runner under qemu
    (:func:`edgeres.backends.tvm.cpp_runner.emulated_runner`) when that is set up.
    """
    from edgeres.backends.tvm import variants as tv

    require()

    art = read_artifact(artifact_or_path.path if isinstance(artifact_or_path, Artifact) else artifact_or_path)
    if threads is None:
        threads = tt.parse_options(target, None).threads if target is not None else art.info.get("threads")
    arch = art.info.get("arch") or tvm_cross.elf_arch(art.path) or tvm_cross.host_arch()
    if art.info.get("variants"):
        art, chosen = pick_variant(art, tv.cpu_flags(), variant)
        return TvmRunner(art, threads, variant=chosen)
    if variant:
        raise UsageError(f"{art.path} is a single-ISA library (no variants); drop --variant, or compile for the "
                         "portable target x86-64")
    if arch != tvm_cross.host_arch():
        from edgeres.backends.tvm.cpp_runner import emulated_runner

        return emulated_runner(art.path, art.input_shape)  # one qemu process per call, any batch size
    missing = tt.missing_host_features(art.info.get("tvm_target") or {}, art.info.get("cpu_flags"))
    if missing:  # running it would die of SIGILL
        raise BackendUnavailable(
            f"{art.path} was compiled for {art.info['tvm_target'].get('mcpu', '?')} and this CPU lacks "
            f"{', '.join(missing)}; run it on such a CPU, or compile for x86-64 (portable) or x86-64-host")
    return TvmRunner(art, threads)


def available() -> bool:
    return unavailable_reason() == ""
