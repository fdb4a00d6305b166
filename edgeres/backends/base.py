"""The declared backend interface: :class:`Backend`, what it returns (:class:`Artifact`, a
:class:`Runner`) and what it can do (:class:`Capabilities`).

The pipeline talks to every backend through :class:`Backend` only: it asks what a backend
can do and never which backend it is. Each backend package builds one instance
(``BACKEND``) that :func:`edgeres.backends.get_backend` returns.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol

import numpy as np

from edgeres.errors import BackendUnavailable, UsageError


@dataclass(frozen=True)
class Artifact:
    """A compiled model on disk.

    ``path`` is the main file (e.g. ``model.so`` or ``model.engine``); ``files`` lists
    every file the backend wrote, relative to ``path.parent``. ``info`` is a small
    JSON-able record (compile time, TVM target, TensorRT version, ...) that goes into
    the bundle manifest.
    """

    backend: str
    path: Path
    precision: str
    input_name: str
    input_shape: tuple[int, ...]  # as compiled; batch dimension may be the fixed batch size
    files: tuple[str, ...] = ()
    compile_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "file": self.path.name,
            "precision": self.precision,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "files": list(self.files),
            "compile_seconds": round(self.compile_seconds, 3),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], root: Path) -> "Artifact":
        return cls(
            backend=d["backend"],
            path=Path(root) / d["file"],
            precision=d["precision"],
            input_name=d["input_name"],
            input_shape=tuple(d["input_shape"]),
            files=tuple(d.get("files", ())),
            compile_seconds=float(d.get("compile_seconds", 0.0)),
            info=dict(d.get("info", {})),
        )


class Runner(Protocol):
    """Maps an NCHW float32 batch to (N, classes) float32 logits (``run_all``: every output, for feature
    extractors). Runners of artifacts with compiled variants also say which one runs (``variant``: a
    name, else None); see :func:`runner_variant`."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # NCHW float32 -> (N, classes) float32 (first output)
        ...

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:  # every output, in the model's order (features)
        ...


def runner_variant(runner: Any) -> str | None:
    """The compiled variant ``runner`` runs (a portable TVM artifact's ISA level), or None."""
    return getattr(runner, "variant", None)


def run_in_chunks(fn, batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """Run ``fn`` over ``batch`` in chunks of ``fixed_batch``, padding the last chunk.

    For artifacts compiled with a static batch dimension.
    """
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not fixed_batch or batch.shape[0] == fixed_batch:
        return fn(batch)
    outs = []
    for start in range(0, batch.shape[0], fixed_batch):
        chunk = batch[start : start + fixed_batch]
        n = chunk.shape[0]
        if n < fixed_batch:
            pad = np.zeros((fixed_batch - n, *chunk.shape[1:]), dtype=np.float32)
            chunk = np.concatenate([chunk, pad])
        outs.append(fn(chunk)[:n])
    return np.concatenate(outs) if outs else np.zeros((0,), dtype=np.float32)


def run_all_in_chunks(fn, batch: np.ndarray, fixed_batch: int | None) -> list[np.ndarray]:
    """:func:`run_in_chunks` for a ``fn`` that returns a list of outputs (batch first in each)."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not fixed_batch or batch.shape[0] == fixed_batch:
        return list(fn(batch))
    parts: list[list[np.ndarray]] = []
    for start in range(0, batch.shape[0], fixed_batch):
        chunk = batch[start : start + fixed_batch]
        n = chunk.shape[0]
        if n < fixed_batch:
            chunk = np.concatenate([chunk, np.zeros((fixed_batch - n, *chunk.shape[1:]), dtype=np.float32)])
        parts.append([o[:n] for o in fn(chunk)])
    return [np.concatenate(outs) for outs in zip(*parts)]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond compile and load (declared, never probed)."""

    precisions: tuple[str, ...]  # precisions compile() accepts
    cross_compile: bool = False  # builds for CPU architectures other than this machine's
    device_build: bool = False  # may hand the build to the device: a bundle then carries a recipe
    cpp_example: bool = False  # writes a C++ example application into the bundle (cpp/)
    tuning: bool = False  # a tuning database can speed up its artifacts (edgeres tune)
    remote: bool = False  # runs its artifacts on a board over the network (open_device: --device, --tracker)
    profile: bool = False  # per-operator latency of an artifact (profile; on a board: DeviceSession.profile)


class DeviceSession(abc.ABC):
    """A board reached over the network (:meth:`Backend.open_device`); a context manager.

    ``load`` returns a Runner with the local runner's call signature (NCHW float32 batch ->
    logits), computed on the board, so validate/selftest take either. Timings are measured on
    the board; ``describe()["emulated"]`` is True when the "board" is an emulator (qemu).
    """

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the board says about itself: arch, CPU, cores, memory, emulated, server kind."""

    @abc.abstractmethod
    def load(self, artifact: Artifact) -> Runner:
        """Upload ``artifact`` (refused first if the board cannot run it) and return a Runner on the board."""

    @abc.abstractmethod
    def latency(self, artifact: Artifact, *, repeats: int = 50, max_seconds: float = 60.0) -> list[float]:
        """Milliseconds per run of ``artifact`` on its own batch size, timed on the board."""

    def profile(self, artifact: Artifact, *, repeats: int = 10) -> dict[str, Any]:
        """Per-operator latency on the board (backends with ``capabilities.profile``)."""
        raise UsageError("this backend cannot profile on a board")

    def onnx_latency(self, onnx_path: Path, input_shape: tuple[int, ...], *, repeats: int = 50) -> list[float] | str:
        """ONNX Runtime on the board: milliseconds per run, or why it cannot run there (a note)."""
        return "the board's server does not run ONNX Runtime"

    @abc.abstractmethod
    def close(self) -> None:
        """Drop the connection (idempotent)."""

    def __enter__(self) -> "DeviceSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Backend(abc.ABC):
    """One compiler/runtime. Subclasses set the class attributes and implement the abstract methods.

    ``compile`` turns an ONNX file (FP32, or Q/DQ INT8 for ``precision="int8"``) into an
    :class:`Artifact` under ``out_dir``; ``load`` turns an artifact into a :class:`Runner`.
    """

    name: ClassVar[str]
    extra: ClassVar[str]  # the pip requirement that installs it, e.g. "edgeres[tvm]"
    capabilities: ClassVar[Capabilities]

    @abc.abstractmethod
    def unavailable_reason(self) -> str:
        """Empty when the backend can compile and run here, else why not (one line)."""

    def available(self) -> bool:
        return self.unavailable_reason() == ""

    @abc.abstractmethod
    def version(self) -> str | None:
        """The installed compiler/runtime version, or None when it is not installed."""

    @abc.abstractmethod
    def compile(self, onnx_path: str | os.PathLike, target: Any, out_dir: str | os.PathLike, *, precision: str,
                options: Mapping[str, Any] | None = None) -> Artifact:
        """Compile ``onnx_path`` for ``target`` into ``out_dir``."""

    @abc.abstractmethod
    def load(self, artifact: Artifact | str | os.PathLike, target: Any = None, *,
             variant: str | None = None) -> Runner:
        """A Runner for a compiled artifact (an Artifact, its main file, or its directory).

        ``variant`` forces one of an artifact's compiled variants (e.g. a portable TVM artifact's
        ISA levels); backends that compile a single artifact refuse it (:meth:`no_variants`)."""

    def no_variants(self, variant: str | None) -> None:
        """UsageError when ``variant`` is given to a backend whose artifacts have no variants."""
        if variant:
            raise UsageError(f"the {self.name} backend compiles one artifact per target; --variant ({variant!r}) "
                             "applies to TVM's portable x86 bundles")

    def install_hint(self) -> str:
        return f"pip install '{self.extra}'"

    def require(self) -> None:
        """Raise BackendUnavailable (with the install command) when the backend cannot run here."""
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(f"the {self.name} backend is not available here ({reason}); "
                                     f"install it with: {self.install_hint()}")

    def preflight(self, target: Any, precision: str, options: Mapping[str, Any] | None = None) -> None:
        """Raise before any work starts when compiling for ``target`` cannot succeed here
        (backend, toolchain or option missing). Default: the backend must be available unless
        it can hand the build to the device."""
        if not self.capabilities.device_build:
            self.require()

    def buildable_here(self, target: Any, options: Mapping[str, Any] | None = None, *,
                       bundle: str = "BUNDLE") -> tuple[bool, str]:
        """(True, "") when this machine can build the artifact for ``target``; else (False, why).
        Only device-build backends answer False: the others fail in :meth:`preflight`."""
        return True, ""

    def check_deploy_model(self, onnx_path: Path, precision: str) -> dict[str, Any] | None:
        """Check the model about to be deployed (e.g. Q/DQ rules); return a record for the manifest."""
        return None

    def build_recipe(self, target: Any, precision: str, onnx_name: str, *, input_chw: tuple[int, ...],
                     options: Mapping[str, Any] | None = None, bundle: str = "BUNDLE") -> dict[str, Any]:
        """How to build the artifact on the device (device-build backends only)."""
        raise NotImplementedError(f"the {self.name} backend does not build on the device")

    def write_app_example(self, bundle_dir: Path) -> None:
        """Write the example application into the bundle (backends with ``cpp_example``)."""

    def selftest_tolerance(self, precision: str) -> Any:
        """The :class:`edgeres.golden.Tolerance` the bundle's golden self-test allows between this
        backend's artifact and the deployed model on ONNX Runtime (default: per precision)."""
        from edgeres.golden import default_tolerance

        return default_tolerance(precision)

    def doctor_checks(self, target: Any, root: Path = Path("/")) -> list[dict[str, Any]]:
        """What this machine has and lacks to compile for / run on ``target`` (``edgeres doctor``).

        Each check is ``{"name", "ok", "found", "fix", "required"}``; ``root`` is the filesystem
        root to inspect (tests pass a fake one). Default: is the backend itself available here."""
        reason = self.unavailable_reason()
        return [{"name": f"{self.name} backend", "ok": not reason, "required": True,
                 "found": f"{self.name} {self.version() or ''}".strip() if not reason else reason,
                 "fix": "" if not reason else self.install_hint()}]

    def open_device(self, device: Any) -> DeviceSession:
        """Connect to the board ``device`` (an :class:`edgeres.devices.DeviceSpec`); backends with ``remote``."""
        raise UsageError(f"the {self.name} backend cannot run artifacts on a remote board; run it on the device "
                         "itself, or use a TVM target (edgeres targets)")

    def profile(self, artifact: Artifact, *, repeats: int = 10) -> dict[str, Any]:
        """Per-operator latency of ``artifact`` on this machine (backends with ``profile``)."""
        raise UsageError(f"the {self.name} backend has no per-operator profile; profile a TVM bundle")


def check_precision(counts: Mapping[str, int], precision: str, name: str, target: Any) -> None:
    """UsageError when ``precision`` does not fit the model (Q/DQ nodes present or not) or the target."""
    allowed = tuple(getattr(target, "precisions", ("fp32", "int8")))
    if precision not in allowed:
        raise UsageError(f"target {getattr(target, 'name', '?')!r} supports precisions {list(allowed)}, "
                         f"not {precision!r}; pick one of those")
    from edgeres.onnx_io import num_qdq

    n_qdq = num_qdq(counts)
    if precision == "int8" and n_qdq == 0:
        raise UsageError(f"{name} has no QuantizeLinear/DequantizeLinear nodes, so it cannot be compiled as int8; "
                         "quantize it first (edgeres quantize) or use precision fp32")
    if precision in ("fp32", "bf16") and n_qdq:
        raise UsageError(f"{name} is a quantized (Q/DQ) model but precision {precision} was asked for; "
                         "pass the FP32 ONNX model, or precision int8")
