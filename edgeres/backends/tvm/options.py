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
``variants``    x86 ISA levels to compile one variant each for (a portable artifact, see
                :mod:`edgeres.backends.tvm.variants`); ``target`` is then the baseline's. A
                ``target`` given in ``options`` (not the TOML) compiles that one library instead.
``jobs``        compile processes for the variants (default: one per CPU core; 1 compiles them
                one after another in this process).

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
OPTION_KEYS = ("target", "layout", "conv", "int8", "schedule", "tuning_db", "threads", "variants", "jobs")
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
    variants: tuple[str, ...] = ()
    jobs: int | None = None


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
    threads, jobs = merged.get("threads"), merged.get("jobs")
    for key, value in (("threads", threads), ("jobs", jobs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{where}: {key} must be a positive integer, got {value!r}")
    variants = merged.get("variants") or ()
    if options and "target" in options and "variants" not in options:
        variants = ()  # an explicit TVM target means that one library, not the target's portable set
    if isinstance(variants, str) or not all(isinstance(v, str) for v in variants):
        raise UsageError(f"{where}: variants must be a list of x86 ISA level names, got {variants!r}")
    from edgeres.backends.tvm.variants import get_level

    for v in variants:
        get_level(v)  # UsageError naming the known levels
    db = merged.get("tuning_db")
    db_path = check_tuning_db(Path(str(db)).expanduser()) if db else None
    return TvmOptions(target=_thaw(tvm_target), layout=layout, conv=conv, int8=int8, schedule=schedule, tuning_db=db_path,
                      threads=threads, variants=tuple(variants), jobs=jobs)


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

    On x86 the features LLVM assumes for that CPU model but this machine does not offer (in its
    ``/proc/cpuinfo`` flags: e.g. AMX under a hypervisor that hides it) are switched off in
    ``mattr``, so the library runs where it was compiled.
    ``cross`` says the target runs on another architecture, where "native" means nothing.
    """
    resolved = _thaw(tvm_target)
    if str(resolved.get("mcpu", "")).lower() == "native":
        if cross:
            raise UsageError(f"target {target_name!r} is for another CPU architecture, so mcpu = \"native\" "
                             "(this machine's CPU) cannot apply; name the target CPU, e.g. mcpu = \"cortex-a72\"")
        resolved["mcpu"] = host_cpu()
        if _is_x86(resolved):
            from edgeres.backends.tvm.variants import CPU_FLAGS, cpu_flags

            have = cpu_flags()
            if have is not None:
                off = [f"-{feat}" for feat, flag in CPU_FLAGS.items()
                       if flag not in have and feat in _llvm_features(resolved)]
                resolved["mattr"] = [*resolved.get("mattr", []), *off] if off else resolved.get("mattr", [])
                if not resolved["mattr"]:
                    del resolved["mattr"]
    return resolved


def _is_x86(tvm_target: Mapping[str, Any]) -> bool:
    return str(tvm_target.get("kind")) == "llvm" and str(tvm_target.get("mtriple", "x86_64")).startswith("x86_64")


def _llvm_features(tvm_target: Mapping[str, Any]) -> set[str]:
    """The CPU_FLAGS features LLVM enables for an x86 target dict."""
    from tvm.target import codegen

    from edgeres.backends.tvm.variants import CPU_FLAGS

    target = make_target(dict(tvm_target))
    try:
        return {f for f in CPU_FLAGS if codegen.llvm_cpu_has_features([f], target)}
    except Exception:  # noqa: BLE001 - LLVM cannot describe the target
        return set()


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


# Checked only when a target's mattr names them explicitly (an mcpu such as sapphirerapids implies AMX, but
# LLVM emits AMX only for intrinsics, and VMs often hide it: "emeraldrapids" hosts without AMX run such code).
EXPLICIT_FEATURES = {"amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16"}
# The same for AArch64 ("Features" in /proc/cpuinfo): dot product (SDOT/UDOT), int8 matmul, fp16, SVE.
ARM_CPU_FEATURES = {"dotprod": "asimddp", "i8mm": "i8mm", "fullfp16": "asimdhp", "sve": "sve"}


def required_cpu_flags(tvm_target: Mapping[str, Any]) -> list[str]:
    """The ``/proc/cpuinfo`` flags a library compiled for the x86 ``tvm_target`` needs ([] for other
    targets): every instruction-set feature LLVM may emit code for on that target (AMX only when the
    target's ``mattr`` asks for it: LLVM emits AMX for intrinsics only)."""
    if not _is_x86(tvm_target):
        return []
    from edgeres.backends.tvm.variants import CPU_FLAGS

    features = _llvm_features(tvm_target)
    asked = {str(a)[1:] for a in (tvm_target.get("mattr") or ()) if str(a).startswith("+")}
    return [flag for feat, flag in CPU_FLAGS.items()
            if feat in features and (feat not in EXPLICIT_FEATURES or feat in asked)]


def missing_host_features(tvm_target: Mapping[str, Any], flags: list[str] | None = None) -> list[str]:
    """Flags an x86 library (compiled for ``tvm_target``, needing ``flags`` if recorded) needs that this
    machine's CPU lacks ([] if none, or when it cannot tell: not Linux, not x86, not an LLVM target)."""
    from edgeres.backends.tvm.variants import cpu_flags

    have = cpu_flags()
    if have is None or not _is_x86(tvm_target):
        return []
    needed = flags if flags is not None else required_cpu_flags(tvm_target)
    return [f for f in needed if f not in have]


def missing_cpu_features(tvm_target: Mapping[str, Any], flags: set[str] | list[str]) -> list[str]:
    """What ``tvm_target`` compiles for that a CPU with /proc/cpuinfo ``flags`` (x86 "flags", ARM
    "Features", e.g. a remote board's) lacks: x86 flags, or AArch64 LLVM feature names; [] when it
    cannot tell (no flags, not an LLVM x86/AArch64 target)."""
    have = set(flags)
    if not have or str(tvm_target.get("kind")) != "llvm":
        return []
    if _is_x86(tvm_target):
        return [f for f in required_cpu_flags(tvm_target) if f not in have]
    if not str(tvm_target.get("mtriple", "")).startswith(("aarch64", "arm64")):
        return []
    from tvm.target import codegen

    target = make_target(dict(tvm_target))
    try:
        wanted = [f for f in ARM_CPU_FEATURES if codegen.llvm_cpu_has_features([f], target)]
    except Exception:  # noqa: BLE001 - LLVM cannot describe the target: do not block
        return []
    return [f for f in wanted if ARM_CPU_FEATURES[f] not in have]
