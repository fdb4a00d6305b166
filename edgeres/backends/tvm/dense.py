"""Fully connected layers as 1x1 convolutions, so they run on edgeres' packed kernels.

A ResNet's classifier is ``matmul(x, W^T)`` with constant weights (ONNX Gemm). TVM legalizes it
to a generic matmul that reads the FP32 weights column by column (ResNet-50: 8 MB, strided), and
a Q/DQ model's Gemm runs that way too, on dequantized weights. Written as a 1x1 convolution of a
``N x 1 x 1 x C`` image, the layer gets the packed float kernel (contiguous weight blocks) or,
for a quantized layer, the integer kernel (int8 weights: a quarter of the bytes to stream).
Output channels are padded with zero weights up to a multiple of 32 (one register tile) and
sliced off after.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHANNEL_MULTIPLE = 32


def _const(expr: Any) -> np.ndarray | None:
    from tvm import ir

    return np.asarray(expr.value.numpy()) if isinstance(expr, ir.expr.Constant) else None


def dense_as_conv(mod: Any) -> Any:
    """Rewrite ``matmul(x (N, C), W (C, K))`` with constant (or dequantized constant) ``W`` into
    ``reshape -> conv2d 1x1 NHWC/HWIO -> reshape -> strided_slice``."""
    from tvm import ir, relax

    matmul, permute, dequantize = (ir.Op.get(f"relax.{n}") for n in ("matmul", "permute_dims", "dequantize"))

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def _bound(self, expr: Any) -> Any:
            return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

        def _weights(self, w: Any) -> Any:
            """The HWIO 1x1 weight expression for ``w`` (C, K), padded to Kp output channels, or None."""
            value = _const(self._bound(w))
            if value is not None and value.ndim == 2 and value.dtype == np.float32:
                c, k = value.shape
                kp = -(-k // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
                padded = np.zeros((1, 1, c, kp), np.float32)
                padded[0, 0, :, :k] = value
                return relax.const(padded), k, kp
            perm = self._bound(w)
            if not (isinstance(perm, relax.Call) and perm.op == permute and perm.attrs.axes is not None
                    and [int(a) for a in perm.attrs.axes] == [1, 0]):
                return None
            dq = self._bound(perm.args[0])
            if not (isinstance(dq, relax.Call) and dq.op == dequantize):
                return None
            wq, scale, zero = (_const(self._bound(a)) for a in dq.args[:3])
            if wq is None or scale is None or zero is None or wq.ndim != 2 or wq.dtype != np.int8 \
                    or int(dq.attrs.axis) not in (0, -2) and scale.size > 1:
                return None
            k, c = wq.shape
            kp = -(-k // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
            q = np.zeros((kp, c, 1, 1), np.int8)
            q[:k, :, 0, 0] = wq
            s = np.ones(kp, np.float32)
            s[:k] = np.broadcast_to(scale.reshape(-1).astype(np.float32), (k,))
            z = np.zeros(kp, zero.dtype)
            z[:k] = np.broadcast_to(zero.reshape(-1), (k,))
            deq = self.builder_.emit(relax.op.dequantize(relax.const(q), relax.const(s), relax.const(z), axis=0,
                                                         out_dtype="float32"))
            return self.builder_.emit(relax.op.permute_dims(deq, [2, 3, 1, 0])), k, kp

        def visit_call_(self, call: Any) -> Any:  # noqa: N802 - TVM's visitor name
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call) or call.op != matmul:
                return call
            x = call.args[0]
            shape = getattr(getattr(x.ty, "shape", None), "values", None)
            if shape is None or len(shape) != 2 or str(x.ty.dtype) != "float32" \
                    or not all(hasattr(v, "value") for v in shape):
                return call
            found = self._weights(call.args[1])
            if found is None:
                return call
            w, k, kp = found
            n, c = (int(v.value) for v in shape)
            x4 = self.builder_.emit(relax.op.reshape(x, (n, 1, 1, c)))
            y = self.builder_.emit(relax.op.nn.conv2d(x4, w, data_layout="NHWC", kernel_layout="HWIO",
                                                      out_layout="NHWC"))
            y = self.builder_.emit(relax.op.reshape(y, (n, kp)))
            return relax.op.strided_slice(y, axes=[1], begin=[0], end=[k]) if kp != k else y

    out = ir.IRModule({}, attrs=mod.attrs)
    for gv, func in mod.functions_items():
        out[gv] = _Rewriter(mod).visit_expr(func) if isinstance(func, relax.Function) else func
    return relax.transform.DeadCodeElimination()(out)
