"""x86 ISA levels of a portable TVM artifact, and which compiled variant a CPU runs.

A portable target (``x86-64``: ``variants = [...]`` in its ``[tvm]`` table) compiles the model
once per ISA level into its own library, ``model.<level>.so`` (the most portable level is
``model.so``), and records the variants, best first, in the sidecar (``model.tvm.json``, with
sha256 and the CPU flags each needs) and in ``model.variants`` (the same list as text, for the
C++ runner). At load time the runtime reads this CPU's feature flags (``/proc/cpuinfo``) and
runs the first variant whose flags the CPU has.

Why one ``.so`` per variant and not one library that dispatches inside: TVM compiles a module
for one LLVM target; a dispatching library would need every kernel compiled per ISA, renamed,
and a dispatch stub in front of each, plus a VM that picks among them — none of which TVM's
Relax VM or ``export_library`` offers. Separate libraries are TVM's normal output, the loader
opens only the one it runs (memory and load time of one variant), each variant is verified on
its own (sha256 in the manifest), and the C++ runner selects with a few lines and no TVM
changes. The cost is disk: every variant carries its own copy of the packed weights (a
ResNet-50 FP32 variant is ~100 MB, INT8 ~25 MB). Users who want one small library use a
single-ISA target (``x86-64-avx2``, ``x86-64-avx512``, ``x86-64-host``).

Levels (LLVM's x86-64 psABI levels, plus the dot-product extensions edgeres' kernels use):

==================  ==========================================  ====================  =============
level               instructions                                CPUs (examples)       precisions
==================  ==========================================  ====================  =============
``x86-64-amx``      AMX-INT8/BF16 tiles + AVX-512               Sapphire Rapids+      (not built)
``x86-64-v4-bf16``  AVX-512 + VNNI + AVX512_BF16 ``vdpbf16ps``  Cooper Lake, SPR,     bf16
                                                                Zen 4+
``x86-64-v4-vnni``  AVX-512 + VNNI ``vpdpbusd`` zmm             Cascade Lake+, Zen 4  int8
``x86-64-v4``       AVX-512 F/BW/CD/DQ/VL                       Skylake-SP+, Zen 4    fp32, int8
``x86-64-v3-vnni``  AVX2 + AVX-VNNI ``{vex} vpdpbusd`` ymm      Alder Lake+ cores     int8
``x86-64-v3``       AVX2, FMA, BMI2, F16C, MOVBE                Haswell+, Zen 1+      fp32, int8
``x86-64-v2``       SSE4.2, SSSE3, POPCNT                       any x86-64 since ~09  fp32, int8
==================  ==========================================  ====================  =============

A level is compiled only for the precisions it speeds up (FP32 has no use for VNNI). Selection
can be forced with ``EDGERES_TVM_VARIANT=<level>`` or ``--variant`` (``edgeres run``/``bench``,
the C++ runner); a forced variant the CPU cannot run is refused with the flags it lacks, never
run into SIGILL.

Nothing here imports tvm: the runtime side (selection) needs only the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from edgeres.errors import BackendUnavailable, UsageError

VARIANT_ENV = "EDGERES_TVM_VARIANT"
CPUINFO_ENV = "EDGERES_CPUINFO"  # another /proc/cpuinfo to read (tests fake CPUs with it)
VARIANTS_SUFFIX = ".variants"
TRIPLE = "x86_64-linux-gnu"


@dataclass(frozen=True)
class IsaLevel:
    """One x86 ISA level a portable artifact can carry a variant for."""

    name: str
    description: str
    mcpu: str
    mattr: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32", "int8")

    def tvm_target(self) -> dict[str, Any]:
        target: dict[str, Any] = {"kind": "llvm", "mtriple": TRIPLE, "mcpu": self.mcpu}
        if self.mattr:
            target["mattr"] = list(self.mattr)
        return target


LEVELS: tuple[IsaLevel, ...] = (  # best first
    IsaLevel("x86-64-v4-bf16", "AVX-512 + VNNI + AVX512_BF16 (Cooper Lake, Sapphire Rapids, Zen 4)", "x86-64-v4",
             ("+avx512vnni", "+avx512bf16"), ("bf16",)),
    IsaLevel("x86-64-v4-vnni", "AVX-512 + VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4)", "x86-64-v4",
             ("+avx512vnni",), ("int8",)),
    IsaLevel("x86-64-v4", "AVX-512 F/BW/CD/DQ/VL (Skylake-SP and later, Zen 4)", "x86-64-v4"),
    IsaLevel("x86-64-v3-vnni", "AVX2 + AVX-VNNI (Alder Lake and later Intel cores)", "x86-64-v3", ("+avxvnni",),
             ("int8",)),
    IsaLevel("x86-64-v3", "AVX2 + FMA (Haswell and later, AMD Zen and later)", "x86-64-v3"),
    IsaLevel("x86-64-v2", "SSE4.2 (any x86-64 PC or server since about 2009)", "x86-64-v2"),
)
LEVEL_NAMES = tuple(level.name for level in LEVELS)

# LLVM feature -> /proc/cpuinfo flag, for every instruction-set feature LLVM may emit code for.
CPU_FLAGS = {
    "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "popcnt": "popcnt", "cx16": "cx16",
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2", "lzcnt": "abm",
    "movbe": "movbe", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512cd": "avx512cd",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2", "avx512ifma": "avx512ifma", "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq", "gfni": "gfni", "vaes": "vaes", "vpclmulqdq": "vpclmulqdq",
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
}
AMX_FLAG = "amx_tile"


@dataclass(frozen=True)
class Variant:
    """A compiled variant as recorded in the sidecar: its name, library file and the CPU flags it needs."""

    name: str
    file: str
    cpu_flags: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Variant":
        return cls(str(d["name"]), str(d["file"]), tuple(str(f) for f in d.get("cpu_flags", ())))


def get_level(name: str) -> IsaLevel:
    for level in LEVELS:
        if level.name == name:
            return level
    raise UsageError(f"unknown x86 ISA level {name!r} in the target's [tvm] variants; known: {list(LEVEL_NAMES)}")


def levels_for(names: Sequence[str], precision: str) -> list[IsaLevel]:
    """The levels named by a target that pay for ``precision``, best first."""
    wanted = {get_level(n).name for n in names}
    return [level for level in LEVELS if level.name in wanted and precision in level.precisions]


def variant_file(level: str, baseline: bool) -> str:
    """``model.so`` for the most portable variant, ``model.<level>.so`` for the others."""
    return "model.so" if baseline else f"model.{level}.so"


# -- this CPU ---------------------------------------------------------------------------------


def cpu_flags(path: str | os.PathLike | None = None) -> frozenset[str] | None:
    """The feature flags of this CPU (``/proc/cpuinfo``, or ``$EDGERES_CPUINFO``); None if unknown."""
    p = Path(path or os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo")
    try:
        text = p.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return None


def request_amx() -> bool:
    """Ask Linux for the AMX tile state (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``):
    without it the first AMX instruction dies of SIGILL even on a CPU that has AMX."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(158, 0x1023, 18) == 0  # SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    except (OSError, AttributeError):
        return False


def missing_flags(variant: Variant, flags: Iterable[str]) -> list[str]:
    have = set(flags)
    return [f for f in variant.cpu_flags if f not in have]


def select(variants: Sequence[Variant], flags: Iterable[str] | None, forced: str | None = None,
           *, amx_ok: bool | None = None, what: str = "this artifact") -> Variant:
    """The variant to run: ``forced`` (refused with the missing flags if this CPU lacks them), else the
    first of ``variants`` (best first) whose flags ``flags`` contains. ``flags=None`` (unknown CPU):
    the last, most portable variant. AMX variants also need Linux's permission (``amx_ok``)."""
    if not variants:
        raise UsageError(f"{what} lists no variants; compile it again")
    have = set(flags) if flags is not None else None

    def runs(v: Variant) -> list[str]:
        if have is None:
            return [] if v is variants[-1] else ["(unknown CPU flags)"]
        missing = missing_flags(v, have)
        if not missing and AMX_FLAG in v.cpu_flags and not (request_amx() if amx_ok is None else amx_ok):
            missing = ["the AMX tile state (Linux refused arch_prctl ARCH_REQ_XCOMP_PERM)"]
        return missing

    if forced:
        match = [v for v in variants if v.name == forced]
        if not match:
            raise UsageError(f"{what} has no variant {forced!r} (from --variant or ${VARIANT_ENV}); "
                             f"it has {[v.name for v in variants]}")
        missing = runs(match[0])
        if missing:
            raise BackendUnavailable(f"variant {forced} of {what} needs {', '.join(missing)}, which this CPU lacks; "
                                     f"pick another of {[v.name for v in variants]} or unset ${VARIANT_ENV}")
        return match[0]
    for v in variants:
        if not runs(v):
            return v
    last = variants[-1]
    raise BackendUnavailable(f"no variant of {what} runs on this CPU: the most portable, {last.name}, needs "
                             f"{', '.join(missing_flags(last, have or ()))}; compile for a target this CPU supports "
                             "(edgeres targets)")


def write_variants_file(path: str | os.PathLike, variants: Sequence[Variant]) -> Path:
    """``model.variants``: the variant list for the C++ runner (tab-separated, best first)."""
    from edgeres.fileio import atomic_path

    lines = ["# edgeres TVM variants, best first: name<TAB>library<TAB>comma-separated /proc/cpuinfo flags it needs"]
    lines += [f"{v.name}\t{v.file}\t{','.join(v.cpu_flags)}" for v in variants]
    p = Path(path)
    with atomic_path(p) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return p
