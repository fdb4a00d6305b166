"""TensorRT build options: the target's ``[tensorrt]`` table plus user overrides, validated.

Pure Python (no TensorRT import): used by the backend, the build recipe and the
"can this machine build it?" check.

``[tensorrt]`` keys (all optional except ``compute_capability``)::

    compute_capability = "8.7"            # SM version of the target GPU
    tensorrt = { min = "10.0", max = "11.99" }   # TensorRT versions the target supports
    jetpack = "..."                       # free text: which JetPack ships which TensorRT
    device_python = "3.10"                # Python of the device's OS image (Jetson); edgeres needs >= 3.10
    dla_cores = 2                         # DLA cores on the device (0: none)
    dla_core = -1                         # DLA core to build for; -1: GPU only
    workspace_mb = 1024                   # builder workspace memory pool limit
    batch = { min = 1, opt = 8, max = 32 } # optimization profile for a dynamic batch dimension
    builds_on = "device" | "host"         # "device": build on the target itself (Jetson)
    hardware_compatibility = "ampere+"    # optional: engine runs on any Ampere+ GPU (not Jetson)
    version_compatible = false            # engine runs on later TensorRT versions (lean runtime)
    int8_allow_fp16 = true                # TensorRT < 11, int8: also enable FP16 for layers without Q/DQ
    timing_cache = "path"                 # timing cache file; default: timing.cache beside the engine
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from edgeres.errors import BackendUnavailable, InputError, UsageError

BUILDS_ON = ("device", "host")
# user-facing spelling -> attribute of trt.HardwareCompatibilityLevel
HARDWARE_COMPAT = {"ampere+": "AMPERE_PLUS"}
_KEYS = {
    "compute_capability", "tensorrt", "jetpack", "device_python", "dla_cores", "dla_core",
    "workspace_mb", "batch", "builds_on", "hardware_compatibility", "version_compatible",
    "int8_allow_fp16", "timing_cache", "notes",
}
# Keys a user may override per build (``options=`` of compile / build-engine).
OVERRIDABLE = ("dla_core", "workspace_mb", "batch", "hardware_compatibility", "version_compatible",
               "int8_allow_fp16", "timing_cache")


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)``; raises InputError on anything else."""
    s = str(text).strip()
    if not re.fullmatch(r"\d+(\.\d+)*", s):
        raise InputError(f"{text!r} is not a version number like 10.3 or 8.5.2")
    return tuple(int(p) for p in s.split("."))


# TensorRT versions whose builder can target the DLA: up to 10.7 (weakly typed; 10.8-11.3 dropped it),
# and from 11.4.1 on Jetson AGX Orin under JetPack 7.2.2+ (strongly typed). Thor has no DLA.
DLA_RANGES = (("0", "10.7.99"), ("11.4.1", "99.99"))


def dla_supported(version: str) -> bool:
    return any(version_in_range(version, lo, hi) for lo, hi in DLA_RANGES)


def version_in_range(version: str, lo: str, hi: str) -> bool:
    """Whether ``version`` lies in ``[lo, hi]``, comparing as many components as ``lo``/``hi`` give."""
    v = parse_version(version)
    lo_t, hi_t = parse_version(lo), parse_version(hi)
    return v[: len(lo_t)] >= lo_t and v[: len(hi_t)] <= hi_t


@dataclass(frozen=True)
class TrtOptions:
    """Validated TensorRT build options for one target (after user overrides)."""

    target: str
    compute_capability: str
    trt_min: str
    trt_max: str
    builds_on: str
    dla_cores: int = 0
    dla_core: int = -1
    workspace_mb: int = 1024
    batch_min: int = 1
    batch_opt: int = 1
    batch_max: int = 1
    hardware_compatibility: str | None = None
    version_compatible: bool = False
    int8_allow_fp16: bool = True
    timing_cache: str | None = None  # None: default path beside the engine; "" disables
    jetpack: str = ""
    device_python: str = ""

    @property
    def uses_dla(self) -> bool:
        return self.dla_core >= 0

    def profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch; DLA needs static shapes, so a DLA build pins all three to ``opt``."""
        if self.uses_dla:
            return self.batch_opt, self.batch_opt, self.batch_opt
        return self.batch_min, self.batch_opt, self.batch_max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_dla(opts: TrtOptions, precision: str, trt_version: str | None = None) -> None:
    """Refuse a DLA build that cannot do what it says (one line, with what to do instead).

    DLA runs INT8 only from TensorRT's implicit quantization (a calibrator), never from an explicit
    Q/DQ model like the one edgeres builds: with GPU fallback every layer would quietly run on the
    GPU. FP16 runs on the DLA. ``trt_version`` (the installed TensorRT) must be one with DLA support.
    """
    if not opts.uses_dla:
        return
    if precision == "int8":
        raise UsageError(f"dla_core={opts.dla_core} with int8: the DLA takes INT8 only from TensorRT's implicit "
                         "calibration, not the explicit Q/DQ model edgeres builds (every layer would fall back to "
                         "the GPU); build FP16 on the DLA (--precision fp16 --option dla_core=N) or INT8 on the GPU "
                         "(dla_core=-1)")
    if precision == "fp32":
        raise UsageError("the DLA runs FP16 and INT8 only; use --precision fp16 with dla_core, or dla_core=-1 for the GPU")
    if trt_version is not None and not dla_supported(trt_version):
        raise BackendUnavailable(f"TensorRT {trt_version} cannot build for the DLA (10.7 was the last 10.x with DLA; "
                                 "11.4.1+ has it again on Jetson AGX Orin with JetPack 7.2.2+); "
                                 "build for the GPU with dla_core=-1")


def _int(where: str, key: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise UsageError(f"{where}: {key} must be an integer >= {lo}, got {value!r}")
    return value


def _bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def resolve_options(target: Any, options: Mapping[str, Any] | None = None) -> TrtOptions:
    """Merge ``target.options`` (its ``[tensorrt]`` table) with per-build ``options`` and validate.

    ``options`` may override only :data:`OVERRIDABLE` keys; anything else is a UsageError
    (never silently ignored).
    """
    where, merged = _merged_table(target, options)
    cc = merged.get("compute_capability")
    if cc is None:
        raise InputError(f"{where} lacks compute_capability; add e.g. compute_capability = \"8.7\"")
    cc = str(cc)
    if not re.fullmatch(r"\d+\.\d", cc):
        raise InputError(f"{where}: compute_capability must look like \"8.7\", got {cc!r}")
    trt_min, trt_max = _version_range(where, merged)
    builds_on = merged.get("builds_on", "host")
    if builds_on not in BUILDS_ON:
        raise InputError(f"{where}: builds_on must be one of {list(BUILDS_ON)}, got {builds_on!r}")
    dla_cores, dla_core = _dla(where, target.name, merged)
    workspace_mb = _int(where, "workspace_mb", merged.get("workspace_mb", 1024), 1)
    bmin, bopt, bmax = _batch(where, merged)
    hw = _hardware_compatibility(where, merged, builds_on, dla_core)
    vc = _bool(where, "version_compatible", merged.get("version_compatible", False))
    if vc and dla_core >= 0:
        raise UsageError(f"{where}: version_compatible engines cannot use DLA; set dla_core=-1 or version_compatible=false")
    tc = merged.get("timing_cache")
    if tc is not None and not isinstance(tc, str):
        raise UsageError(f"{where}: timing_cache must be a file path (or \"\" to disable), got {tc!r}")
    return TrtOptions(
        target=target.name,
        compute_capability=cc,
        trt_min=trt_min,
        trt_max=trt_max,
        builds_on=builds_on,
        dla_cores=dla_cores,
        dla_core=dla_core,
        workspace_mb=workspace_mb,
        batch_min=bmin,
        batch_opt=bopt,
        batch_max=bmax,
        hardware_compatibility=hw,
        version_compatible=vc,
        int8_allow_fp16=_bool(where, "int8_allow_fp16", merged.get("int8_allow_fp16", True)),
        timing_cache=tc,
        jetpack=str(merged.get("jetpack", "")),
        device_python=str(merged.get("device_python", "")),
    )


def _merged_table(target: Any, options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(where, the target's ``[tensorrt]`` table with the per-build overrides); unknown keys refused."""
    if getattr(target, "backend", None) != "tensorrt":
        raise UsageError(f"target {getattr(target, 'name', target)!r} is not a TensorRT target; pick one with backend = \"tensorrt\"")
    where = f"target {target.name} [tensorrt]"
    base = dict(target.options_dict() if hasattr(target, "options_dict") else dict(target.options))
    unknown = sorted(set(base) - _KEYS)
    if unknown:
        raise InputError(f"{where} has unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    overrides = dict(options or {})
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise UsageError(f"TensorRT options {bad} cannot be set per build; allowed: {list(OVERRIDABLE)}")
    return where, {**base, **overrides}


def _version_range(where: str, merged: Mapping[str, Any]) -> tuple[str, str]:
    rng = merged.get("tensorrt", {"min": "10.0", "max": "11.99"})
    if not isinstance(rng, Mapping) or "min" not in rng or "max" not in rng:
        raise InputError(f"{where}: tensorrt must be a table like {{ min = \"10.0\", max = \"11.99\" }}")
    trt_min, trt_max = str(rng["min"]), str(rng["max"])
    if parse_version(trt_min) > parse_version(trt_max):
        raise InputError(f"{where}: tensorrt.min {trt_min} is above tensorrt.max {trt_max}")
    return trt_min, trt_max


def _dla(where: str, target_name: str, merged: Mapping[str, Any]) -> tuple[int, int]:
    """(DLA cores of the device, the DLA core to build for or -1)."""
    dla_cores = _int(where, "dla_cores", merged.get("dla_cores", 0), 0)
    dla_core = merged.get("dla_core", -1)
    if isinstance(dla_core, bool) or not isinstance(dla_core, int) or dla_core < -1:
        raise UsageError(f"{where}: dla_core must be -1 (GPU only) or a DLA core index, got {dla_core!r}")
    if dla_core >= dla_cores:
        have = f"has {dla_cores} DLA cores" if dla_cores else "has no DLA"
        raise UsageError(f"target {target_name} {have}, so dla_core={dla_core} is impossible; use dla_core=-1 (GPU)")
    return dla_cores, dla_core


def _batch(where: str, merged: Mapping[str, Any]) -> tuple[int, int, int]:
    batch = merged.get("batch", {"min": 1, "opt": 1, "max": 1})
    if not isinstance(batch, Mapping) or set(batch) != {"min", "opt", "max"}:
        raise UsageError(f"{where}: batch must be a table {{ min = 1, opt = 8, max = 32 }}, got {batch!r}")
    bmin, bopt, bmax = (_int(where, f"batch.{k}", batch[k], 1) for k in ("min", "opt", "max"))
    if not bmin <= bopt <= bmax:
        raise UsageError(f"{where}: batch needs min <= opt <= max, got {bmin}/{bopt}/{bmax}")
    return bmin, bopt, bmax


def _hardware_compatibility(where: str, merged: Mapping[str, Any], builds_on: str, dla_core: int) -> str | None:
    hw = merged.get("hardware_compatibility")
    if hw in ("", "none"):
        hw = None
    if hw is not None and hw not in HARDWARE_COMPAT:
        raise UsageError(f"{where}: hardware_compatibility must be one of {list(HARDWARE_COMPAT)}, got {hw!r}")
    if hw is not None and (builds_on == "device" or dla_core >= 0):
        raise UsageError(f"{where}: hardware_compatibility is for discrete GPUs only (not Jetson or DLA); remove it")
    return hw
