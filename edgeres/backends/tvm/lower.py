"""Relax lowering for the TVM backend: layout, legalization (edgeres' packed convolution),
fusion, then the tuning database's and edgeres' builtin schedules.

Kept apart from :mod:`edgeres.backends.tvm` (import, compile, artifacts, runtime) so that
compiling and tuning share one definition of "the module TVM schedules".
"""

from __future__ import annotations

from typing import Any

from edgeres.backends.tvm import options as tt


def lower(mod: Any, tvm_target: Any, opts: tt.TvmOptions, counts: dict[str, int] | None = None, *,
          precision: str = "fp32") -> Any:
    """Layout conversion, integer convolutions, then legalization, constant folding and fusion
    (``get_pipeline("zero")``). ``counts`` (if given) receives the integer rewrite's counts."""
    from tvm import relax

    if opts.layout == "NHWC":
        from edgeres.backends.tvm.int8 import int8_kind, integer_convolutions
        from edgeres.backends.tvm.qdq import fold_activation_qdq

        integer = opts.int8 == "integer" and opts.conv == "packed" and int8_kind(tvm_target) is not None
        mod = fold_activation_qdq(mod, integer=integer)  # else ConvertLayout wraps each Q/DQ pair in transposes
        mod = fold_layout_constants(relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod))
        if opts.conv == "packed":
            from edgeres.backends.tvm.dense import dense_as_conv

            mod = dense_as_conv(mod)  # the classifier on the packed kernels too
        if integer:
            with tvm_target:
                mod, found = integer_convolutions(mod, tvm_target)
            if counts is not None:
                counts.update(found)
            from edgeres.backends.tvm.qdq import drop_idle_casts

            mod = drop_idle_casts(mod)
        mod = fold_layout_constants(mod, dequantize=True)
    with tvm_target:
        if opts.conv == "packed" and tvm_target.kind.name == "llvm":
            from edgeres.backends.tvm.conv import legalize_map

            mod = relax.transform.LegalizeOps(legalize_map(precision))(mod)  # the rest: TVM's legalization
        # get_pipeline("zero"), with FoldConstant only where a kernel has constant inputs alone: on
        # ResNet-50 FP32 it spent 3 s of CPU finding nothing to fold.
        mod = relax.transform.AnnotateTIROpPattern()(relax.transform.LegalizeOps()(mod))
        if _has_constant_kernels(mod):
            mod = relax.transform.FoldConstant()(mod)
        return relax.transform.FuseTIR()(relax.transform.FuseOps()(mod))


def _has_constant_kernels(mod: Any) -> bool:
    from tvm import ir, relax

    call_tir, found = ir.Op.get("relax.call_tir"), []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op == call_tir and isinstance(expr.args[1], relax.Tuple) \
                and all(isinstance(a, ir.expr.Constant) for a in expr.args[1].fields):
            found.append(expr)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def fold_layout_constants(mod: Any, *, dequantize: bool = False) -> Any:
    """Fold ``permute_dims``/``reshape`` (and with ``dequantize``, ``dequantize``) of constants in numpy:
    weights to HWIO, biases to NHWC, the dequantized biases and weights left by the INT8 rewrite.

    Relax's FoldConstant compiles and runs a TIR kernel per distinct shape for these (13 s of
    CPU for ResNet-50 FP32, 9 s more for INT8); numpy does the same in milliseconds.
    """
    import numpy as np
    from tvm import ir, relax

    ops = ("permute_dims", "reshape") + (("dequantize",) if dequantize else ())
    permute, reshape, deq = (ir.Op.get(f"relax.{n}") for n in ("permute_dims", "reshape", "dequantize"))
    foldable = tuple(ir.Op.get(f"relax.{n}") for n in ops)

    @relax.expr_functor.mutator
    class _Folder(relax.PyExprMutator):  # type: ignore[misc]
        def _const(self, expr: Any) -> Any:
            bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
            return bound if isinstance(bound, ir.expr.Constant) else None

        def visit_dataflow_var_(self, var: Any) -> Any:  # noqa: N802 - uses of a folded value: the constant
            new = super().visit_dataflow_var_(var)
            folded = self._const(new)
            return new if folded is None else folded

        def visit_call_(self, call: Any) -> Any:  # noqa: N802 - TVM's visitor name
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call) or call.op not in foldable or self._const(call.args[0]) is None:
                return call
            value = self._const(call.args[0]).value.numpy()
            if call.op == deq:
                params = [self._const(a) for a in call.args[1:3]]
                if None in params or str(call.attrs.out_dtype) != "float32":
                    return call
                value = _dequantize(value, *(p.value.numpy() for p in params), int(call.attrs.axis))
            elif call.op == permute:
                axes = call.attrs.axes
                value = np.transpose(value, None if axes is None else [int(a) for a in axes])
            elif isinstance(call.args[1], relax.ShapeExpr) and all(
                    isinstance(v, tirx.IntImm) for v in call.args[1].values):
                value = value.reshape([int(v) for v in call.args[1].values])
            else:
                return call
            return relax.const(np.ascontiguousarray(value), str(value.dtype))

    from tvm import tirx

    out = ir.IRModule({}, attrs=mod.attrs)
    for gv, func in mod.functions_items():
        out[gv] = _Folder().visit_expr(func) if isinstance(func, relax.Function) else func
    return relax.transform.DeadCodeElimination()(out)


def _dequantize(q: Any, scale: Any, zero: Any, axis: int) -> Any:
    """``(q - zero) * scale`` in float32 as TVM's legalization computes it (per-tensor or along ``axis``)."""
    import numpy as np

    shape = [1] * q.ndim
    if scale.size > 1 or zero.size > 1:
        shape[axis % q.ndim] = -1
    diff = q.astype(np.int32) - zero.astype(np.int32).reshape(shape if zero.size > 1 else [])
    return diff.astype(np.float32) * scale.astype(np.float32).reshape(shape if scale.size > 1 else [])


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
