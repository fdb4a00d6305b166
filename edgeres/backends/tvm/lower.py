"""Relax lowering for the TVM backend: layout, legalization (edgeres' packed convolution),
fusion, then the tuning database's and edgeres' builtin schedules.

Kept apart from :mod:`edgeres.backends.tvm` (import, compile, artifacts, runtime) so that
compiling and tuning share one definition of "the module TVM schedules".
"""

from __future__ import annotations

from typing import Any

from edgeres.backends.tvm import options as tt


def lower(mod: Any, tvm_target: Any, opts: tt.TvmOptions, counts: dict[str, int] | None = None) -> Any:
    """Layout conversion, integer convolutions, then legalization, constant folding and fusion
    (``get_pipeline("zero")``). ``counts`` (if given) receives the integer rewrite's counts."""
    from tvm import relax

    if opts.layout == "NHWC":
        from edgeres.backends.tvm.int8 import int8_kind, integer_convolutions
        from edgeres.backends.tvm.qdq import fold_activation_qdq

        integer = opts.int8 == "integer" and opts.conv == "packed" and int8_kind(tvm_target) is not None
        mod = fold_activation_qdq(mod, integer=integer)  # else ConvertLayout wraps each Q/DQ pair in transposes
        mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
        if integer:
            with tvm_target:
                mod, found = integer_convolutions(mod, tvm_target)
            if counts is not None:
                counts.update(found)
        mod = relax.transform.FoldConstant()(mod)
    with tvm_target:
        if opts.conv == "packed" and tvm_target.kind.name == "llvm":
            from edgeres.backends.tvm.conv import legalize_map

            mod = relax.transform.LegalizeOps(legalize_map())(mod)  # the rest: TVM's legalization
        return relax.get_pipeline("zero")(mod)


def apply_schedules(mod: Any, tvm_target: Any, opts: tt.TvmOptions) -> tuple[Any, int]:
    """Apply the tuning database (if any), then the builtin schedule to the remaining functions.

    Returns the module and how many TIR functions the database scheduled.
    """
    from tvm import relax, tirx

    with tvm_target:
        if opts.tuning_db is not None:
            from tvm.s_tir import meta_schedule as ms

            from edgeres.backends.tvm.int8 import int8_kind, intrinsic

            if int8_kind(tvm_target) is not None:  # records may replay edgeres' tensorize
                intrinsic(int8_kind(tvm_target))

            with ms.database.JSONDatabase(work_dir=str(opts.tuning_db), allow_missing=False):
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)  # marks tirx.is_scheduled
        tuned = sum(1 for _, f in mod.functions_items()
                    if isinstance(f, tirx.PrimFunc) and f.attrs is not None and "tirx.is_scheduled" in f.attrs)
        if opts.schedule == "builtin":
            from edgeres.backends.tvm.schedule import default_schedule_pass

            mod = default_schedule_pass()(mod)
    return mod, tuned


def conv_kernels(mod: Any) -> dict[str, int]:
    """How many of ``mod``'s convolution functions use edgeres' integer or float packed kernel, and TVM's."""
    from tvm import tirx

    names = [gv.name_hint for gv, f in mod.functions_items()
             if isinstance(f, tirx.PrimFunc) and "conv2d" in gv.name_hint]
    int8 = sum("conv2d_nhwc_packed_int8" in n for n in names)
    packed = sum("conv2d_nhwc_packed" in n for n in names) - int8
    return {"packed_int8": int8, "packed": packed, "tvm": len(names) - packed - int8}
