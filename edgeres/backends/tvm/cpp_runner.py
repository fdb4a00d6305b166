"""The C++ runner that ships in every TVM bundle: copy it, build it, run it.

The template (``edgeres/backends/tvm/cpp_template``: ``main.cc``, ``Makefile``, ``README.md``) is a
small program that loads ``model.so`` with the TVM runtime (tvm-ffi C++ API, Relax VM), reads a
raw float32 NCHW tensor and prints the top-k classes. It builds natively against the installed
``apache-tvm`` / ``apache-tvm-ffi`` wheels, or for aarch64 with the cross compiler and the
aarch64 runtime that ``tools/setup-aarch64.sh`` installs; aarch64 programs run here under
``qemu-aarch64-static``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeres.backends.tvm import cross as tvm_cross
from edgeres.errors import BackendUnavailable, CompileError, InputError
from edgeres.fileio import atomic_dir

TEMPLATE_DIR = Path(__file__).resolve().parent / "cpp_template"
TEMPLATE_FILES = ("main.cc", "variants.h", "Makefile", "README.md")
CPP_DIRNAME = "cpp"
EXE_NAME = "edgeres_tvm_classify"


@dataclass(frozen=True)
class TopEntry:
    """One line of the runner's top-k: class index, logit, softmax probability, class name."""

    index: int
    logit: float
    prob: float
    label: str = ""


@dataclass
class CppRunOutput:
    """What the C++ runner printed: top-k per sample, all logits, optional latency."""

    top: list[list[TopEntry]]
    logits: np.ndarray
    latency_ms: float | None = None
    command: list[str] = field(default_factory=list)


def write_cpp_runner(dest: str | os.PathLike) -> Path:
    """Copy the C++ runner sources into ``dest/cpp`` (e.g. a bundle's ``artifact/``); return that folder."""
    out = Path(dest) / CPP_DIRNAME
    with atomic_dir(out) as tmp:
        for name in TEMPLATE_FILES:
            shutil.copyfile(TEMPLATE_DIR / name, tmp / name)
    return out


def _package_dir(name: str) -> Path | None:
    """Where a package is installed, without importing it (importing tvm takes seconds)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def build_paths(arch: str = "host") -> dict[str, str]:
    """The Makefile variables (CXX, TVM_LIB_DIR, TVM_FFI_LIB_DIR, TVM_FFI_INCLUDE) for ``arch``.

    Raises BackendUnavailable, saying what to install, when a compiler or library is missing.
    """
    arch = tvm_cross.host_arch() if arch == "host" else tvm_cross.normalize_arch(arch)
    if arch == tvm_cross.host_arch():
        cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
        if cxx is None:
            raise BackendUnavailable("no C++ compiler to build the C++ runner; install one (apt-get install g++)")
        tvm_dir, ffi_dir = _package_dir("tvm"), _package_dir("tvm_ffi")
        if tvm_dir is None or ffi_dir is None:
            raise BackendUnavailable("the C++ runner needs the TVM runtime; install it with: pip install 'edgeres[tvm]'")
        paths = {"CXX": cxx, "TVM_LIB_DIR": str(tvm_dir / "lib"), "TVM_FFI_LIB_DIR": str(ffi_dir / "lib"),
                 "TVM_FFI_INCLUDE": str(ffi_dir / "include")}
    elif arch == "aarch64":
        cxx = tvm_cross.find_cross_cxx("aarch64")
        # A C cross compiler alone (aarch64-linux-gnu-gcc) links TVM libraries but not this C++ program.
        if cxx is None or (cxx.endswith("gcc") and not os.environ.get(tvm_cross.CXX_ENV)):
            raise BackendUnavailable(f"no aarch64 C++ cross compiler (aarch64-linux-gnu-g++); {tvm_cross.SETUP_HINT}")
        reason = tvm_cross.aarch64_runtime_missing()
        if reason:
            raise BackendUnavailable(reason)
        root = tvm_cross.aarch64_runtime_dir()
        paths = {"CXX": cxx, "TVM_LIB_DIR": str(root / "lib"), "TVM_FFI_LIB_DIR": str(root / "lib"),
                 "TVM_FFI_INCLUDE": str(root / "include")}
    else:
        raise BackendUnavailable(f"building the C++ runner for {arch} on {tvm_cross.host_arch()} is not supported")
    checks = {"TVM_LIB_DIR": "libtvm_runtime.so", "TVM_FFI_LIB_DIR": "libtvm_ffi.so",
              "TVM_FFI_INCLUDE": "tvm/ffi/function.h"}
    for var, rel in checks.items():
        if not (Path(paths[var]) / rel).is_file():
            raise BackendUnavailable(f"{rel} is not in {paths[var]}; reinstall 'edgeres[tvm]'"
                                     + (" or run tools/setup-aarch64.sh" if arch != tvm_cross.host_arch() else ""))
    return paths


def build_cpp_runner(src_dir: str | os.PathLike, *, arch: str = "host", build_dir: str | os.PathLike | None = None,
                     timeout: float = 600) -> Path:
    """Build the runner in ``src_dir`` (a folder written by :func:`write_cpp_runner`) with make.

    ``arch`` is ``"host"`` or a Target.arch name (``"aarch64"`` cross-compiles on x86-64).
    The program goes to ``build_dir`` (default ``src_dir/build-<arch>``); returns its path.
    """
    src = Path(src_dir)
    if not (src / "Makefile").is_file() or not (src / "main.cc").is_file():
        raise InputError(f"{src} does not hold the C++ runner (Makefile, main.cc); write it with write_cpp_runner()")
    make = shutil.which("make")
    if make is None:
        raise BackendUnavailable("make is not installed; install it (apt-get install make) to build the C++ runner")
    resolved = tvm_cross.host_arch() if arch == "host" else tvm_cross.normalize_arch(arch)
    paths = build_paths(resolved)
    out = Path(build_dir) if build_dir is not None else src / f"build-{resolved}"
    cmd = [make, "-s", "-C", str(src), f"BUILD_DIR={out.resolve()}", *(f"{k}={v}" for k, v in paths.items())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    exe = out / EXE_NAME
    if proc.returncode != 0 or not exe.is_file():
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "no output")
        raise CompileError(f"building the C++ runner for {resolved} failed: {detail.strip()} "
                           f"(command: {' '.join(cmd)})")
    return exe


def _runner_env(arch: str) -> dict[str, str]:
    env = dict(os.environ)
    if arch == "aarch64" and arch != tvm_cross.host_arch():
        lib = str(tvm_cross.aarch64_runtime_dir() / "lib")
        env["LD_LIBRARY_PATH"] = lib + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def parse_output(text: str) -> tuple[list[list[TopEntry]], dict[int, list[float]], float | None]:
    """Parse the runner's tab-separated ``top`` / ``logits`` / ``latency_ms`` records."""
    top: dict[int, list[TopEntry]] = {}
    logits: dict[int, list[float]] = {}
    latency = None
    for line in text.splitlines():
        parts = line.split("\t")
        if parts[0] == "top" and len(parts) >= 6:
            label = parts[6] if len(parts) > 6 else ""
            top.setdefault(int(parts[1]), []).append(TopEntry(int(parts[3]), float(parts[4]), float(parts[5]), label))
        elif parts[0] == "logits":
            logits[int(parts[1])] = [float(v) for v in parts[2:]]
        elif parts[0] == "latency_ms":
            latency = float(parts[1])
    return [top[k] for k in sorted(top)], logits, latency


def run_cpp_runner(exe: str | os.PathLike, so: str | os.PathLike, batch: np.ndarray, *,
                   model_shape: Sequence[int] | None = None, qemu: bool | Sequence[str] | None = None,
                   labels: str | os.PathLike | None = None, topk: int = 5, repeat: int = 0,
                   timeout: float = 600) -> CppRunOutput:
    """Run the built runner on ``batch`` (NCHW float32) and return its top-k and logits.

    ``model_shape`` is the input shape the library was compiled for (default: ``batch.shape``);
    a batch of any size then runs in groups of ``model_shape[0]`` inside one process.
    ``qemu``: None (or True) picks emulation from the program's ELF architecture (qemu for an
    aarch64 program on x86-64); False never emulates; a sequence is the command prefix verbatim.
    """
    exe, so = Path(exe), Path(so)
    for p in (exe, so):
        if not p.is_file():
            raise InputError(f"{p} does not exist; build the runner / compile the model first")
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"the C++ runner takes an NCHW batch (4 dimensions), got shape {x.shape}")
    arch = tvm_cross.elf_arch(exe) or tvm_cross.host_arch()
    if isinstance(qemu, (list, tuple)):
        prefix = list(qemu)
    elif qemu is False:
        prefix = []
    else:
        prefix = tvm_cross.qemu_prefix(arch)
    with tempfile.TemporaryDirectory(prefix="edgeres-cpp-") as tmp:
        tensor = Path(tmp) / "input.bin"
        x.tofile(tensor)
        shape = tuple(int(d) for d in (model_shape if model_shape is not None else x.shape))
        if len(shape) != 4 or tuple(shape[1:]) != tuple(x.shape[1:]):
            raise InputError(f"input samples of shape {tuple(x.shape[1:])} do not fit the model's input {shape}")
        cmd = [*prefix, str(exe), str(so), str(tensor), "--shape", "x".join(map(str, shape)),
               "--topk", str(int(topk)), "--logits"]
        if labels is not None:
            cmd += ["--labels", str(labels)]
        if repeat > 0:
            cmd += ["--repeat", str(int(repeat))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_runner_env(arch))
    if proc.returncode != 0:
        err = next((ln for ln in proc.stderr.splitlines() if ln.startswith("error:")), proc.stderr.strip()[-500:])
        if proc.returncode == 2:
            raise InputError(f"the C++ runner rejected its input: {err}")
        raise RuntimeError(f"the C++ runner failed (exit {proc.returncode}): {err}\ncommand: {' '.join(cmd)}")
    top, logits, latency = parse_output(proc.stdout)
    if len(top) != x.shape[0] or len(logits) != x.shape[0]:
        raise RuntimeError(f"the C++ runner printed {len(top)} results for {x.shape[0]} inputs:\n{proc.stdout[-2000:]}")
    return CppRunOutput(top=top, logits=np.array([logits[i] for i in sorted(logits)], dtype=np.float32),
                        latency_ms=latency, command=cmd)


def run_cpp_selftest(exe: str | os.PathLike, so: str | os.PathLike, golden_dir: str | os.PathLike, *,
                     model_shape: Sequence[int] | None = None, qemu: bool | Sequence[str] | None = None,
                     timeout: float = 600) -> dict[str, str]:
    """Run the runner's ``--selftest golden_dir`` and return its ``selftest`` record (``verdict``, ``exit``,
    ``max_abs_err``, ``top1``, ...). The exit status is 0 on PASS and 1 on FAIL."""
    exe, so = Path(exe), Path(so)
    arch = tvm_cross.elf_arch(exe) or tvm_cross.host_arch()
    prefix = list(qemu) if isinstance(qemu, (list, tuple)) else [] if qemu is False else tvm_cross.qemu_prefix(arch)
    cmd = [*prefix, str(exe), str(so), "--selftest", str(golden_dir)]
    if model_shape is not None:
        cmd += ["--shape", "x".join(str(int(d)) for d in model_shape)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_runner_env(arch))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("selftest\t")), None)
    if line is None or proc.returncode not in (0, 1):
        raise InputError(f"the C++ runner's --selftest failed (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    parts = line.split("\t")
    rec = {"verdict": parts[1], "exit": str(proc.returncode)}
    rec.update(p.split("=", 1) for p in parts[2:] if "=" in p)
    return rec


def missing_requirements(arch: str = "host") -> str | None:
    """None when the runner can be built (and run) for ``arch`` here, else a one-line reason."""
    try:
        build_paths(arch)
        if shutil.which("make") is None:
            return "make is not installed (apt-get install make)"
        resolved = tvm_cross.host_arch() if arch == "host" else tvm_cross.normalize_arch(arch)
        tvm_cross.qemu_prefix(resolved)
    except BackendUnavailable as e:
        return str(e)
    return None


class CppRunner:
    """A backend Runner (NCHW float32 batch -> logits) that runs ``model.so`` in the C++ runner.

    Runs an aarch64 library on an x86-64 machine under qemu, so an ARM artifact can be
    validated here. Each call starts one process that loads the library once.
    """

    def __init__(self, exe: str | os.PathLike, so: str | os.PathLike, input_shape: Sequence[int], *,
                 qemu: bool | Sequence[str] | None = None, timeout: float = 3600) -> None:
        self.exe, self.so = Path(exe), Path(so)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.qemu, self.timeout = qemu, timeout

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, 0), dtype=np.float32)
        return run_cpp_runner(self.exe, self.so, x, model_shape=self.input_shape, qemu=self.qemu,
                              topk=1, timeout=self.timeout).logits

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """The C++ runner prints the first output only: a feature extractor's stages cannot be read here."""
        raise BackendUnavailable(f"the C++ runner reads only the first output of {self.so.name}; a feature "
                                 "extractor built for another architecture cannot run here with all its outputs")


def cached_runner(arch: str = "host", cache_dir: str | os.PathLike | None = None) -> Path:
    """Build the runner for ``arch`` once into a cache folder and return the program.

    The folder (default ``~/.cache/edgeres/cpp-runner``) is keyed by a hash of the sources and
    the runtime paths, so an edited template or another TVM install builds afresh.
    """
    import hashlib

    resolved = tvm_cross.host_arch() if arch == "host" else tvm_cross.normalize_arch(arch)
    paths = build_paths(resolved)
    h = hashlib.sha256(repr(sorted(paths.items())).encode())
    for name in TEMPLATE_FILES:
        h.update((TEMPLATE_DIR / name).read_bytes())
    root = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "edgeres" / "cpp-runner"
    dest = root / f"{resolved}-{h.hexdigest()[:16]}"
    exe = dest / "build" / EXE_NAME
    if exe.is_file():
        return exe
    with atomic_dir(dest) as tmp:
        src = write_cpp_runner(tmp)
        build_cpp_runner(src, arch=resolved, build_dir=tmp / "build")
    return exe


def emulated_runner(so: str | os.PathLike, input_shape: Sequence[int], *,
                    cache_dir: str | os.PathLike | None = None) -> CppRunner:
    """A Runner for a library built for another CPU (``model.so`` for aarch64 on x86-64), under qemu.

    Raises BackendUnavailable, saying to run tools/setup-aarch64.sh, when emulation is not set up.
    """
    arch = tvm_cross.elf_arch(so)
    if arch is None:
        raise InputError(f"{so} is not an ELF shared library; compile the model again")
    reason = missing_requirements(arch)
    if reason:
        raise BackendUnavailable(f"cannot run the {arch} library {Path(so).name} here: {reason}")
    return CppRunner(cached_runner(arch, cache_dir), so, input_shape)
