"""One TVM library: import, lower, schedule, compile and export the model for one LLVM target.

:func:`edgeres.backends.tvm.backend.compile` builds one library this way; a portable target
builds one per ISA level (:mod:`edgeres.backends.tvm.portable`, possibly in worker processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeres.backends.tvm import cross as tvm_cross
from edgeres.backends.tvm import options as tt
from edgeres.backends.tvm import runner as _runner
from edgeres.backends.tvm.importer import first_line, import_onnx
from edgeres.backends.tvm.lower import apply_schedules, conv_kernels, lower
from edgeres.errors import CompileError, InputError, UsageError


def build_library(src: Path, target: Any, target_dict: dict[str, Any], opts: tt.TvmOptions, precision: str,
                  so: Path, *, proto: Any = None) -> dict[str, Any]:
    """Import, lower, schedule, compile and export one library for ``target_dict``; its info record
    (with ``input_name``/``input_shape`` for the Artifact)."""
    tvm_target = tt.make_target(target_dict)
    imported = import_onnx(src, int(getattr(target, "batch_size", 1) or 1), proto)
    rewrite: dict[str, int] = {}
    try:
        mod, tuned = apply_schedules(lower(imported.mod, tvm_target, opts, rewrite, precision=precision),
                                     tvm_target, opts)
        convs = conv_kernels(mod)
        import tvm

        executable = tvm.compile(mod, tvm_target)
    except (UsageError, InputError):
        raise
    except Exception as e:  # noqa: BLE001 - TVM raises TVMError, ValueError, ...
        hint = ("retry with --option conv=topi, or schedule=none, to rule out edgeres' kernels and schedule"
                if opts.schedule == "builtin" else "report the model and target to edgeres")
        raise CompileError(f"TVM could not compile {src.name} for {getattr(target, 'name', '?')}: "
                           f"{first_line(e)}; {hint}") from e
    tvm_cross.export_library(executable, so, target)  # atomic; cross-links for other archs
    info: dict[str, Any] = {
        "input_name": imported.input_name,
        "input_shape": list(imported.input_shape),
        "tvm_version": _runner.version(),
        "tvm_target": target_dict,
        "tvm_target_str": str(tvm_target),
        "cpu_flags": tt.required_cpu_flags(target_dict),
        "arch": tvm_cross.target_arch(target),
        "layout": opts.layout,
        "conv": opts.conv,
        "conv_kernels": convs,
        "schedule": opts.schedule,
        "tuning_db": str(opts.tuning_db) if opts.tuning_db else None,
        "tuned_functions": tuned,
        "threads": opts.threads,
        "output_shape": list(imported.output_shape),
        "output_shapes": [list(o) for o in imported.output_shapes],
        "int8": opts.int8,
        "int8_kernels": convs.get("packed_int8", 0) > 0,
    }
    if precision == "int8":
        from edgeres.backends.tvm.int8 import describe

        info["int8_note"] = describe(opts, tvm_target, rewrite)
    return info
