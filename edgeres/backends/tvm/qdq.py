"""Activation quantize->dequantize pairs as plain elementwise Relax ops (layout-transparent).

A Q/DQ ONNX model imports into Relax as ``R.quantize`` -> ``R.dequantize`` around every
activation. Relax's ConvertLayout has no layout rule for those two ops, so converting
the graph to NHWC wrapped every pair in an NHWC->NCHW and an NCHW->NHWC transpose: two
extra passes over each activation tensor (ResNet-50 INT8 ran ~40 % slower than FP32).

With per-tensor (scalar) scale and zero point, ``dequantize(quantize(x))`` is
``(max(min(round(x / s) + zp, qmax), qmin) - zp) * s``: exactly what TVM's own legalization of
the pair computes (the integer value is held exactly in float32), written with
``divide/round/add/minimum/maximum/subtract/multiply``, which ConvertLayout propagates and FuseOps
fuses into the neighbouring convolution's epilogue. Per-channel pairs (weights: constant,
folded at compile time anyway) are left as they are.

With ``integer=True`` the quantized value is materialized as a uint8/int8 tensor between
the two halves (``astype`` there and back, exact for these integral values), so that
:mod:`edgeres.backends.tvm.int8` can feed it to integer convolutions: the producer then
writes one byte per activation instead of four. Quantizing then multiplies by ``1 / s``
instead of dividing by ``s`` (as integer runtimes requantize, ONNX Runtime's included): a
value within one float32 ulp of a rounding midpoint may land one step away from the
division's result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


def _scalar(expr: Any) -> float | None:
    from tvm import ir

    if not isinstance(expr, ir.expr.Constant):
        return None
    value = np.asarray(expr.value.numpy() if hasattr(expr.value, "numpy") else expr.value)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def fold_activation_qdq(mod: Any, *, integer: bool = False) -> Any:
    """Rewrite every scalar-parameter ``dequantize(quantize(x))`` of ``mod`` into elementwise ops."""
    from tvm import ir, relax

    quantize_op, dequantize_op = ir.Op.get("relax.quantize"), ir.Op.get("relax.dequantize")

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:  # noqa: N802 - TVM's visitor name
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call) or call.op != dequantize_op:
                return call
            src = call.args[0]
            bound = self.lookup_binding(src) if isinstance(src, relax.Var) else src
            if not isinstance(bound, relax.Call) or bound.op != quantize_op:
                return call
            x = bound.args[0]
            q_scale, q_zp = _scalar(bound.args[1]), _scalar(bound.args[2])
            d_scale, d_zp = _scalar(call.args[1]), _scalar(call.args[2])
            qrange = _RANGES.get(str(bound.attrs.out_dtype))
            out_dtype = str(call.attrs.out_dtype)
            if None in (q_scale, q_zp, d_scale, d_zp) or qrange is None or out_dtype != "float32" \
                    or str(x.ty.dtype) != "float32" or q_zp != d_zp:
                return call
            emit = self.builder_.emit
            f32 = "float32"
            if integer:  # a multiply: vdivps in every epilogue cost ~25 % of a 1x1 conv's time
                t = emit(relax.op.multiply(x, relax.const(np.float32(1.0) / np.float32(q_scale), f32)))
            else:
                t = emit(relax.op.divide(x, relax.const(np.float32(q_scale), f32)))
            t = emit(relax.op.round(t))
            t = emit(relax.op.add(t, relax.const(np.float32(q_zp), f32)))
            t = emit(relax.op.minimum(t, relax.const(np.float32(qrange[1]), f32)))  # clip: no layout rule
            t = emit(relax.op.maximum(t, relax.const(np.float32(qrange[0]), f32)))
            if integer:
                t = emit(relax.op.astype(t, str(bound.attrs.out_dtype)))
                t = emit(relax.op.astype(t, f32))
            t = emit(relax.op.subtract(t, relax.const(np.float32(d_zp), f32)))
            return relax.op.multiply(t, relax.const(np.float32(d_scale), f32))

    out = ir.IRModule({})
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            func = _Rewriter().visit_expr(func)
        out[gv] = func
    out = out.with_attrs(mod.attrs) if mod.attrs is not None else out
    return relax.transform.DeadCodeElimination()(out)



def drop_idle_casts(mod: Any) -> Any:
    """Turn the ``astype(int) -> astype(float32)`` round trips of :func:`fold_activation_qdq` whose
    integer tensor nothing else reads (no integer convolution took it) into float32 no-op casts.

    The value is already rounded and clipped to the integer range, so the round trip is the
    identity; in a fused epilogue (ResNet-50: a convolution's requantize before the residual add)
    it costs four vector conversions per element. Same-type casts keep the graph's shape, so
    operator fusion decides as before, and vanish in the generated code.
    """
    from tvm import ir, relax

    astype, maximum, minimum = (ir.Op.get(f"relax.{n}") for n in ("astype", "maximum", "minimum"))
    uses: dict[Any, int] = {}

    def count(expr: Any) -> None:
        if isinstance(expr, relax.Call):
            for a in expr.args:
                if isinstance(a, relax.Var):
                    uses[a] = uses.get(a, 0) + 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, count)

    @relax.expr_functor.mutator
    class _Dropper(relax.PyExprMutator):  # type: ignore[misc]
        def _bound(self, expr: Any, op: Any) -> Any:
            bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
            return bound if isinstance(bound, relax.Call) and bound.op == op else None

        def visit_call_(self, call: Any) -> Any:  # noqa: N802 - TVM's visitor name
            new = super().visit_call_(call)
            if not isinstance(new, relax.Call) or new.op != astype or str(new.attrs.dtype) != "float32" \
                    or not isinstance(call.args[0], relax.Var) or uses.get(call.args[0], 0) != 1:
                return new
            narrow = self._bound(new.args[0], astype)
            if narrow is None or str(narrow.attrs.dtype) not in _RANGES or not self._clipped(narrow):
                return new
            same = self.builder_.emit(relax.op.astype(narrow.args[0], "float32"))
            return relax.op.astype(same, "float32")

        def _clipped(self, cast: Any) -> bool:
            lo, hi = _RANGES[str(cast.attrs.dtype)]
            clip_lo = self._bound(cast.args[0], maximum)
            clip_hi = self._bound(clip_lo.args[0], minimum) if clip_lo is not None else None
            if clip_hi is None or str(clip_lo.ty.dtype) != "float32":
                return False
            bounds = (_scalar(clip_lo.args[1]), _scalar(clip_hi.args[1]))
            return None not in bounds and bounds[0] >= lo and bounds[1] <= hi

    out = ir.IRModule({}, attrs=mod.attrs)
    for gv, func in mod.functions_items():
        out[gv] = _Dropper(mod).visit_expr(func) if isinstance(func, relax.Function) else func
    return relax.transform.DeadCodeElimination()(out)
