"""Cross-compilation helpers for the TVM backend: which compiler links the ``.so`` for a target.

A target whose ``arch`` differs from this machine's (e.g. ``rpi4``: aarch64, built on an
x86-64 PC) is compiled by TVM's LLVM for the target triple and linked by the matching GCC
cross compiler (Debian's ``gcc-aarch64-linux-gnu`` / ``g++-aarch64-linux-gnu``; override with
``EDGERES_AARCH64_CXX``). ``tools/setup-aarch64.sh`` installs that toolchain, ``qemu-aarch64-static``
(to run aarch64 programs here) and the aarch64 TVM runtime libraries.

Nothing here imports tvm at module level.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from edgeres.errors import BackendUnavailable, CompileError, UsageError

# Canonical arch names (Target.arch) and the spellings platform.machine() may return.
_ARCH_ALIASES = {
    "x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64",
    "aarch64": "aarch64", "arm64": "aarch64", "armv8": "aarch64",
}
# GNU triple per arch (TVM's "mtriple", Debian's toolchain prefix).
TRIPLES = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}
# ELF e_machine values (bytes 18-19 of the header).
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0x03: "x86"}

SETUP_HINT = ("install the aarch64 cross toolchain: apt-get install gcc-aarch64-linux-gnu "
              "g++-aarch64-linux-gnu, or run tools/setup-aarch64.sh")
RUNTIME_ENV = "EDGERES_AARCH64_RUNTIME"
CXX_ENV = "EDGERES_AARCH64_CXX"
SYSROOT_ENV = "EDGERES_AARCH64_SYSROOT"


def normalize_arch(arch: str) -> str:
    """``"arm64"`` -> ``"aarch64"``, ``"AMD64"`` -> ``"x86_64"``; raise UsageError for unknown names."""
    key = str(arch).strip().lower()
    if key not in _ARCH_ALIASES:
        raise UsageError(f"unknown CPU architecture {arch!r}; use one of {sorted(set(_ARCH_ALIASES.values()))}")
    return _ARCH_ALIASES[key]


def host_arch() -> str:
    """This machine's architecture as a Target.arch name (``"x86_64"`` or ``"aarch64"``)."""
    machine = platform.machine()
    return _ARCH_ALIASES.get(machine.lower(), machine.lower())


def target_arch(target: Any) -> str:
    """The arch of ``target``: a Target (its ``arch``), an arch name, or ``None`` (the host)."""
    if target is None:
        return host_arch()
    if isinstance(target, str):
        return normalize_arch(target)
    return normalize_arch(getattr(target, "arch", host_arch()))


def needs_cross(target: Any) -> bool:
    """True when ``target`` (Target, arch name or None) runs on another architecture than this machine."""
    return target_arch(target) != host_arch()


def check_tvm_target(target: Any, tvm_target: dict[str, Any] | None = None) -> None:
    """Raise UsageError when the TVM target's ``mtriple`` contradicts the edgeres target's ``arch``.

    ``tvm_target`` defaults to ``target.options["target"]`` (the ``[tvm] target`` table).
    A missing mtriple is accepted (TVM then compiles for the host).
    """
    if tvm_target is None:
        tvm_target = dict(getattr(target, "options", {}).get("target", {}) or {})
    triple = str(tvm_target.get("mtriple", "")) if isinstance(tvm_target, dict) else ""
    if not triple:
        if needs_cross(target):
            raise UsageError(f"target {getattr(target, 'name', target)!r} is {target_arch(target)} but its "
                             f"[tvm] target has no mtriple; add mtriple = \"{TRIPLES.get(target_arch(target))}\"")
        return
    head = triple.split("-")[0].lower()
    arch = _ARCH_ALIASES.get(head, head)
    if arch != target_arch(target):
        raise UsageError(f"target {getattr(target, 'name', target)!r} says arch = {target_arch(target)!r} "
                         f"but its [tvm] target mtriple is {triple!r}; make them agree")


def find_cross_cxx(arch: str = "aarch64") -> str | None:
    """Path of the C++ (or C) cross compiler for ``arch``, or None. ``$EDGERES_AARCH64_CXX`` wins."""
    arch = normalize_arch(arch)
    if arch == "aarch64" and os.environ.get(CXX_ENV):
        return shutil.which(os.environ[CXX_ENV]) or os.environ[CXX_ENV]
    triple = TRIPLES[arch]
    for name in (f"{triple}-g++", f"{triple}-gcc"):
        path = shutil.which(name)
        if path:
            return path
    return None


def cross_compiler(target: Any) -> Callable[..., Any] | None:
    """The ``fcompile`` for ``export_library``: None for a host target, else the cross linker.

    Raises BackendUnavailable (with the install command) when the cross toolchain is missing.
    """
    if not needs_cross(target):
        return None
    arch = target_arch(target)
    if arch != "aarch64":
        raise BackendUnavailable(f"cross-compiling TVM libraries for {arch} from {host_arch()} is not "
                                 f"supported; build on a {arch} machine or use an aarch64 target")
    cxx = find_cross_cxx(arch)
    if cxx is None:
        raise BackendUnavailable(f"no aarch64 cross compiler (aarch64-linux-gnu-g++) found to link the "
                                 f"{getattr(target, 'name', arch)} library; {SETUP_HINT}")
    from tvm.support import cc

    triple = TRIPLES[arch]
    # A fresh function per call: tvm's cross_compiler appends per-call options to its base list.
    return cc.cross_compiler(cxx, options=[], get_target_triple=lambda: triple)


def export_library(lib: Any, path: str | os.PathLike, target: Any = None) -> Path:
    """Write ``lib`` (the result of ``tvm.compile``) as a shared library at ``path``, atomically.

    ``target`` (Target, arch name or None for the host) picks the linker: the system C++
    compiler for the host, the aarch64 cross compiler otherwise. A failed link leaves no file.
    """
    path = Path(path)
    fcompile = cross_compiler(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp = tmpdir / path.name
        work = tmpdir / "work"
        work.mkdir()
        try:
            lib.export_library(str(tmp), fcompile=fcompile, workspace_dir=str(work))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[:2]
            raise CompileError(f"linking {path.name} for {target_arch(target)} failed ({' '.join(first)}); "
                               f"check the C++ compiler (for aarch64: {SETUP_HINT})") from e
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def elf_arch(path: str | os.PathLike) -> str | None:
    """The CPU architecture an ELF file was built for (``"x86_64"``, ``"aarch64"``, ...), or None."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], order)
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")


def aarch64_runtime_dir() -> Path:
    """Where tools/setup-aarch64.sh put the aarch64 TVM runtime (``$EDGERES_AARCH64_RUNTIME``)."""
    env = os.environ.get(RUNTIME_ENV)
    return Path(env) if env else Path.home() / ".cache" / "edgeres" / "aarch64-runtime"


def aarch64_runtime_missing() -> str | None:
    """None when the aarch64 TVM runtime is installed, else a one-line reason with the fix."""
    d = aarch64_runtime_dir()
    missing = [n for n in ("lib/libtvm_runtime.so", "lib/libtvm_ffi.so", "include/tvm/ffi/function.h")
               if not (d / n).is_file()]
    if missing:
        return f"the aarch64 TVM runtime is not in {d} (missing {missing[0]}); run tools/setup-aarch64.sh"
    # The runtime must be the host's TVM release: it loads libraries the host's TVM compiled.
    try:
        stamp = json.loads((d / "edgeres-runtime.json").read_text())
        host = metadata.version("apache-tvm")
    except (OSError, ValueError, metadata.PackageNotFoundError):
        return None
    if stamp.get("apache-tvm") != host:
        return (f"the aarch64 TVM runtime in {d} is apache-tvm {stamp.get('apache-tvm')} but this machine has "
                f"{host}; run tools/setup-aarch64.sh again")
    return None


def aarch64_sysroot() -> Path:
    """The aarch64 root qemu uses for the dynamic loader and libc (``$EDGERES_AARCH64_SYSROOT``)."""
    return Path(os.environ.get(SYSROOT_ENV, "/usr/aarch64-linux-gnu"))


def qemu_prefix(arch: str = "aarch64") -> list[str]:
    """The command prefix that runs an ``arch`` Linux program here: ``[]`` natively, else qemu.

    Raises BackendUnavailable when emulation is needed but qemu or the sysroot is missing.
    """
    arch = normalize_arch(arch)
    if arch == host_arch():
        return []
    if arch != "aarch64":
        raise BackendUnavailable(f"running {arch} programs on {host_arch()} is not supported")
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if qemu is None:
        raise BackendUnavailable("qemu-aarch64-static is not installed; apt-get install qemu-user-static, "
                                 "or run tools/setup-aarch64.sh")
    root = aarch64_sysroot()
    if not (root / "lib" / "ld-linux-aarch64.so.1").exists():
        raise BackendUnavailable(f"no aarch64 sysroot at {root} (lib/ld-linux-aarch64.so.1); {SETUP_HINT}")
    return [qemu, "-L", str(root)]


PYTHON_ENV = "EDGERES_AARCH64_PYTHON"


def aarch64_python() -> Path | None:
    """The emulated aarch64 Python (Debian's, with the aarch64 TVM wheel, under qemu) that
    tools/setup-aarch64.sh installs for the RPC tests, or None when it is not there or is for
    another TVM release than this machine's. ``$EDGERES_AARCH64_PYTHON`` moves it."""
    root = Path(os.environ.get(PYTHON_ENV) or Path.home() / ".cache" / "edgeres" / "aarch64-python")
    exe = root / "root" / "usr" / "bin" / "python3"
    try:
        stamp = json.loads((root / "edgeres-python.json").read_text())
        host = metadata.version("apache-tvm")
    except (OSError, ValueError, metadata.PackageNotFoundError):
        return None
    return exe if exe.is_file() and stamp.get("apache-tvm") == host else None
