"""TVM backend options: the ``[tvm]`` table of a target, checked and resolved.

The table is passed through verbatim except for what edgeres adds on top:

``target``      the ``tvm.target.Target`` dict (``{kind="llvm", mtriple=..., mcpu=...}``);
                ``mcpu = "native"`` means this machine's CPU, resolved to the name LLVM
                detects (e.g. ``"znver3"``, ``"sapphirerapids"``).
``layout``      ``"NHWC"`` (default) or ``"NCHW"``: the layout TVM compiles the graph in
                (the ONNX model stays NCHW at its input and output).
``conv``        ``"packed"`` (default): NHWC float32 convolutions use edgeres' packed-weight
                kernel (:mod:`edgeres.backends.tvm.conv`); ``"topi"``: TVM's own
                convolution. Only applies with ``layout = "NHWC"``.
``int8``        ``"integer"`` (default): quantized convolutions of a Q/DQ model run as integer
                kernels where the CPU has a dot-product instruction (AVX2/AVX-512/VNNI,
                AArch64 dotprod; :mod:`edgeres.backends.tvm.int8`); ``"float"``: TVM's
                fake quantization (float kernels on dequantized weights).
``schedule``    ``"builtin"`` (default): edgeres' deterministic CPU schedule for every
                operator a tuning database does not cover; ``"none"``: TVM's naive default
                lowering (single thread, no blocking; slow, for debugging).
``tuning_db``   a MetaSchedule database directory (``database_workload.json`` +
                ``database_tuning_record.json``) whose schedules are applied at compile time.
``threads``     runtime threads for the TVM thread pool (default: ``TVM_NUM_THREADS`` when set, else
                ``os.cpu_count()``, as ONNX Runtime uses every core; TVM's own default is half the
                logical CPUs on x86).

Nothing here imports tvm at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgeres.errors import InputError, UsageError

LAYOUTS = ("NCHW", "NHWC")
SCHEDULES = ("builtin", "none")
CONVS = ("packed", "topi")
INT8_MODES = ("integer", "float")
OPTION_KEYS = ("target", "layout", "conv", "int8", "schedule", "tuning_db", "threads")
TUNING_DB_FILES = ("database_workload.json", "database_tuning_record.json")


@dataclass(frozen=True)
class TvmOptions:
    """The resolved ``[tvm]`` options of one compile."""

    target: dict[str, Any]  # as given (``mcpu`` may still say "native")
    layout: str = "NHWC"
    conv: str = "packed"
    int8: str = "integer"
    schedule: str = "builtin"
    tuning_db: Path | None = None
    threads: int | None = None


def parse_options(target: Any, options: Mapping[str, Any] | None = None) -> TvmOptions:
    """Merge ``target.options`` (the ``[tvm]`` table) with ``options`` (which win) and validate them."""
    merged: dict[str, Any] = dict(target.options_dict()) if target is not None else {}
    merged.update(dict(options or {}))
    where = f"TVM options of target {getattr(target, 'name', '?')!r}"
    unknown = sorted(set(merged) - set(OPTION_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown keys {unknown}; allowed: {list(OPTION_KEYS)}")
    tvm_target = merged.get("target", {"kind": "llvm"})
    if isinstance(tvm_target, str) or not isinstance(tvm_target, Mapping) or "kind" not in tvm_target:
        raise UsageError(f"{where}: target must be a table such as {{ kind = \"llvm\", mcpu = \"native\" }}, "
                         f"got {tvm_target!r} (TVM 0.27 rejects \"llvm -mcpu=...\" strings)")
    layout = str(merged.get("layout", "NHWC")).upper()
    if layout not in LAYOUTS:
        raise UsageError(f"{where}: layout must be one of {list(LAYOUTS)}, got {merged.get('layout')!r}")
    conv = str(merged.get("conv", "packed")).lower()
    if conv not in CONVS:
        raise UsageError(f"{where}: conv must be one of {list(CONVS)}, got {merged.get('conv')!r}")
    int8 = str(merged.get("int8", "integer")).lower()
    if int8 not in INT8_MODES:
        raise UsageError(f"{where}: int8 must be one of {list(INT8_MODES)}, got {merged.get('int8')!r}")
    schedule = str(merged.get("schedule", "builtin"))
    if schedule not in SCHEDULES:
        raise UsageError(f"{where}: schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    threads = merged.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"{where}: threads must be a positive integer, got {threads!r}")
    db = merged.get("tuning_db")
    db_path = check_tuning_db(Path(str(db)).expanduser()) if db else None
    return TvmOptions(target=_thaw(tvm_target), layout=layout, conv=conv, int8=int8, schedule=schedule, tuning_db=db_path,
                      threads=threads)


def check_tuning_db(path: str | Path) -> Path:
    """Return ``path`` if it is a MetaSchedule database directory, else raise InputError."""
    p = Path(path)
    missing = [n for n in TUNING_DB_FILES if not (p / n).is_file()]
    if not p.is_dir() or missing:
        raise InputError(f"tuning database {p} is not a MetaSchedule work directory (missing "
                         f"{missing[0] if p.is_dir() else 'the directory'}); pass the work_dir a tuning run wrote")
    return p


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def host_cpu() -> str:
    """The host CPU name as LLVM detects it (``llvm_get_system_cpu``), e.g. ``"znver3"``."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def resolve_target_dict(tvm_target: Mapping[str, Any], *, cross: bool, target_name: str = "?") -> dict[str, Any]:
    """A copy of ``tvm_target`` with ``mcpu = "native"`` replaced by the host CPU name.

    ``cross`` says the target runs on another architecture, where "native" means nothing.
    """
    resolved = _thaw(tvm_target)
    if str(resolved.get("mcpu", "")).lower() == "native":
        if cross:
            raise UsageError(f"target {target_name!r} is for another CPU architecture, so mcpu = \"native\" "
                             "(this machine's CPU) cannot apply; name the target CPU, e.g. mcpu = \"cortex-a72\"")
        resolved["mcpu"] = host_cpu()
    return resolved


def check_mcpu(tvm_target: Mapping[str, Any]) -> None:
    """UsageError when LLVM does not know ``mcpu`` for ``mtriple`` (LLVM would silently use "generic")."""
    import difflib

    from tvm.target import codegen

    mcpu, triple = tvm_target.get("mcpu"), tvm_target.get("mtriple")
    if tvm_target.get("kind") != "llvm" or not mcpu or not triple:
        return
    if codegen.llvm_is_valid_cpu(str(mcpu), str(triple)):
        return
    import tvm

    names = [str(n) for n in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))]
    close = difflib.get_close_matches(str(mcpu), names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"LLVM does not know mcpu {mcpu!r} for {triple}{hint}; fix the [tvm] target table")


def make_target(tvm_target: Mapping[str, Any]) -> Any:
    """``tvm.target.Target`` from a dict; UsageError with TVM's reason if it rejects it."""
    import tvm

    check_mcpu(tvm_target)
    try:
        return tvm.target.Target(dict(tvm_target))
    except Exception as e:  # noqa: BLE001 - TVM raises several types for bad targets
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UsageError(f"TVM rejects the target {dict(tvm_target)}: {reason}; fix the [tvm] target table") from e


# LLVM feature name -> /proc/cpuinfo flag, for the instruction sets edgeres' kernels use.
CPU_FEATURES = {"sse4.2": "sse4_2", "ssse3": "ssse3", "avx2": "avx2", "fma": "fma", "avx512f": "avx512f",
                "avx512bw": "avx512bw", "avx512vnni": "avx512_vnni"}
# Checked only when a target's mattr names them explicitly (an mcpu such as sapphirerapids implies AMX, but
# LLVM emits AMX only for intrinsics, and VMs often hide it: "emeraldrapids" hosts without AMX run such code).
EXPLICIT_FEATURES = {"amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
                     "avx512fp16": "avx512_fp16", "avx512bf16": "avx512_bf16", "avxvnni": "avx_vnni"}
# The same for AArch64 ("Features" in /proc/cpuinfo): dot product (SDOT/UDOT), int8 matmul, fp16, SVE.
ARM_CPU_FEATURES = {"dotprod": "asimddp", "i8mm": "i8mm", "fullfp16": "asimdhp", "sve": "sve"}


def missing_host_features(tvm_target: Mapping[str, Any]) -> list[str]:
    """x86 instruction sets an x86 target dict compiles for that this machine's CPU lacks ([] if none,
    or when it cannot tell: not Linux, not x86, not an LLVM target)."""
    flags_file = Path("/proc/cpuinfo")
    if not str(tvm_target.get("mtriple", "x86_64")).startswith("x86_64") or not flags_file.is_file():
        return []
    flags: set[str] = set()
    for line in flags_file.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return missing_cpu_features(tvm_target, flags)


def missing_cpu_features(tvm_target: Mapping[str, Any], flags: set[str] | list[str]) -> list[str]:
    """Instruction sets ``tvm_target`` compiles for that a CPU with /proc/cpuinfo ``flags`` (x86
    "flags", ARM "Features") lacks; [] when it cannot tell (no flags, not an LLVM x86/AArch64 target)."""
    triple = str(tvm_target.get("mtriple", "x86_64"))
    table = ARM_CPU_FEATURES if triple.startswith(("aarch64", "arm64")) else (
        CPU_FEATURES if triple.startswith("x86_64") else None)
    if str(tvm_target.get("kind")) != "llvm" or table is None or not flags:
        return []
    from tvm.target import codegen

    target = make_target(dict(tvm_target))
    try:
        wanted = [f for f in table if codegen.llvm_cpu_has_features([f], target)]
    except Exception:  # noqa: BLE001 - LLVM cannot describe the target: do not block
        return []
    have = set(flags)
    if table is CPU_FEATURES:
        # Extensions LLVM never emits on its own (AMX tiles, ...) count only when the target asks for them.
        explicit = [str(a)[1:] for a in (tvm_target.get("mattr") or ()) if str(a).startswith("+")]
        wanted += [f for f in explicit if f in EXPLICIT_FEATURES and f not in wanted]
        table = {**CPU_FEATURES, **EXPLICIT_FEATURES}
    return [f for f in wanted if table[f] not in have]
