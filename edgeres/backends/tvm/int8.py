"""Integer INT8 convolutions for TVM CPU targets: the Relax rewrite, the kernel and its dot-product intrinsics.

TVM 0.27 imports a Q/DQ ONNX model as *fake quantization*: every ``DequantizeLinear`` of a
weight folds into a float32 constant and the convolutions run in float. This module turns
each quantized convolution back into an integer one:

``conv2d(dequantize(quantize(x, s, z)), dequantize(Wq, s_w))``  becomes
``float(sum(q * Wq) - (z - shift) * sum(Wq)) * (s * s_w)``

where ``q`` is the uint8 activation the previous layer already wrote (the Q/DQ pair is
rewritten by :func:`edgeres.backends.tvm.qdq.fold_activation_qdq` so that the uint8 tensor
exists in the graph) and ``Wq`` the int8 weights, packed at compile time as
``(K/16, KH, KW, C/4, 16, 4)``: four consecutive input channels of sixteen output channels,
the operand shape of the CPU dot-product instructions:

===========  ====================================================  ==============
kind         instruction (per 16 output channels x 4 input ones)    weights
===========  ====================================================  ==============
``vnni``     ``vpdpbusd`` zmm (AVX-512 VNNI), u8 x s8               8-bit
``avx512bw`` ``vpmaddubsw`` + ``vpmaddwd`` zmm                      7-bit
``avxvnni``  2 x ``{vex} vpdpbusd`` ymm (AVX-VNNI), u8 x s8         8-bit
``avx2``     2 x (``vpmaddubsw`` + ``vpmaddwd``) ymm                7-bit
``ssse3``    4 x (``pmaddubsw`` + ``pmaddwd``) xmm                  7-bit
``sdot``     4 x ``sdot`` (AArch64 dot product, ARMv8.2), s8 x s8   8-bit
===========  ====================================================  ==============

``vpmaddubsw`` adds two u8 x s8 products into an int16 *with saturation*; with weights of at
most 64 in magnitude (7-bit, the quantizer's ``reduce_range``) no sum can saturate. A
convolution whose weights do not fit keeps the float (fake-quant) path on those targets, so
results never depend on saturation. ``sdot`` multiplies signed bytes: the kernel's prologue
shifts the uint8 activations by -128 and the epilogue's zero-point term absorbs the shift
(``shift`` above). The prologue also pads: with the activation's zero point (its real value
is 0.0) spatially, and the input channels up to a multiple of 4.

The convolution keeps the float kernel's structure (:mod:`edgeres.backends.tvm.conv`): the
same flattened-pixel register tiles, the write-back block that applies the fused epilogues
(bias, residual, ReLU, the next layer's quantize), and its schedule, whose innermost
``16 channels x 4 inputs`` step is tensorized with the instruction above.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from edgeres.backends.tvm import tiles
from edgeres.backends.tvm.primitives import ACC_NAME, OUT_NAME, static_shape

BLOCK = 16  # output channels per packed weight block = the intrinsic's lanes
QUAD = 4  # input channels per dot product
SATURATING = ("avx512bw", "avx2", "ssse3")  # vpmaddubsw: weights must fit 7 bits
WEIGHT_LIMIT_7BIT = 64
INT8_FLOAT_NOTE = ("quantized convolutions run as quantize->dequantize->float kernels (INT8 numerics, float "
                   "speed): {why}")
INT8_INTEGER_NOTE = ("{n} of {total} quantized convolutions (the classifier counts as one) run integer kernels ({kind}){rest}")
INTRIN_PREFIX = "edgeres_dot_16x4_"
FUNC_NAME = "conv2d_nhwc_packed_int8"


def int8_kind(target: Any) -> str | None:
    """The dot-product instruction family of an LLVM ``target``, or None (no integer kernel)."""
    from tvm.target import codegen

    if target is None or target.kind.name != "llvm":
        return None
    triple = str(target.attrs.get("mtriple", ""))
    try:
        if triple.startswith("aarch64"):
            mattr = [str(a) for a in (target.attrs.get("mattr") or [])]
            ok = "+dotprod" in mattr or codegen.llvm_cpu_has_features(["dotprod"], target)
            return "sdot" if ok else None
        for kind, features in (("vnni", ["avx512vnni", "avx512bw"]), ("avx512bw", ["avx512bw"]),
                               ("avxvnni", ["avxvnni"]), ("avx2", ["avx2"]), ("ssse3", ["ssse3"])):
            if codegen.llvm_cpu_has_features(features, target):
                return kind
    except Exception:  # noqa: BLE001 - a target LLVM cannot describe: keep the float path
        return None
    return None


def input_dtype(kind: str) -> str:
    return "int8" if kind == "sdot" else "uint8"


# -- intrinsics --------------------------------------------------------------------------


@lru_cache(maxsize=None)
def intrinsic(kind: str) -> str:
    """Register (once) and name the ``16 x 4`` dot-product tensor intrinsic of ``kind``."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    a_dtype = input_dtype(kind)

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="global")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    lanes, steps, madd, wd = {  # int32 lanes per instruction, instructions per 16 channels
        "vnni": (16, 1, "llvm.x86.avx512.vpdpbusd.512", ""),
        "avxvnni": (8, 2, "llvm.x86.avx512.vpdpbusd.256", ""),
        "avx512bw": (16, 1, "llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"),
        "avx2": (8, 2, "llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
        "ssse3": (4, 4, "llvm.x86.ssse3.pmadd.ub.sw.128", "llvm.x86.sse2.pmadd.wd"),
        "sdot": (4, 4, "llvm.aarch64.neon.sdot.v4i32.v16i8", ""),
    }[kind]
    nbytes = lanes * 4

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="global")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            # No intermediate variables: TVMScript would make each a local buffer, which TVM
            # allocates through TVMBackendAllocWorkspace inside parallel loops (~700 cycles/tile).
            for j in T.unroll(steps):
                if kind in ("vnni", "avxvnni"):
                    C[T.ramp(j * lanes, 1, lanes)] = T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id(madd), C.vload([j * lanes], f"int32x{lanes}"),
                        T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], f"{a_dtype}x4"), dtype="int32"), lanes),
                                      dtype=f"uint8x{nbytes}"),
                        B.vload([j * lanes, 0], f"int8x{nbytes}"),  # LLVM >= 19: byte-vector operands
                        dtype=f"int32x{lanes}")
                elif kind == "sdot":
                    C[T.ramp(j * lanes, 1, lanes)] = T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id(madd), C.vload([j * lanes], f"int32x{lanes}"),
                        B.vload([j * lanes, 0], f"int8x{nbytes}"),
                        T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], f"{a_dtype}x4"), dtype="int32"), lanes),
                                      dtype=f"int8x{nbytes}"), dtype=f"int32x{lanes}")
                else:
                    C[T.ramp(j * lanes, 1, lanes)] = C.vload([j * lanes], f"int32x{lanes}") + T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id(wd), T.call_llvm_pure_intrin(
                            T.llvm_lookup_intrinsic_id(madd),
                            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], f"{a_dtype}x4"), dtype="int32"),
                                                      lanes), dtype=f"uint8x{nbytes}"),
                            B.vload([j * lanes, 0], f"int8x{nbytes}"), dtype=f"int16x{2 * lanes}"),
                        T.broadcast(T.int16(1), 2 * lanes), dtype=f"int32x{lanes}")

    name = INTRIN_PREFIX + kind
    TensorIntrin.register(name, desc, impl, override=True)
    return name


# -- compute -------------------------------------------------------------------------------


def pack_weights(wq: np.ndarray) -> np.ndarray:
    """int8 OIHW weights -> ``(K/16, KH, KW, C4/4, 16, 4)``, input channels zero-padded to C4 = 4k."""
    k, c, kh, kw = wq.shape
    c4 = -(-c // QUAD) * QUAD
    w = np.zeros((k, c4, kh, kw), np.int8)
    w[:, :c] = wq
    return np.ascontiguousarray(
        w.reshape(k // BLOCK, BLOCK, c4 // QUAD, QUAD, kh, kw).transpose(0, 4, 5, 2, 1, 3))


def int8_conv(data: Any, wp: Any, comp: Any, scale: Any, strides: list[int], padding: list[int],
              dilation: list[int], pad_value: int, shift: int, kind: str) -> Any:
    """NHWC integer convolution of quantized ``data`` (uint8/int8) with packed int8 weights ``wp``;
    output ``float32((acc - comp[f]) * scale[f])``, NHWC."""
    from tvm import te, tirx


    n, h, w, c = (int(d) for d in data.shape)
    ko, kh, kw, cq, block, quad = (int(d) for d in wp.shape)
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding if len(padding) == 4 else (padding * 4)[:4]
    in_dtype = input_dtype(kind)
    c4 = cq * quad
    src = data
    if pt or pl or pb or pr or c4 != c or shift or str(data.dtype) != in_dtype:
        def value(b: Any, y: Any, x: Any, ch: Any) -> Any:
            v = data[b, y - pt, x - pl, ch]
            if shift or str(data.dtype) != in_dtype:
                v = (v.astype("int32") - shift).astype(in_dtype)
            return v

        src = te.compute(
            (n, h + pt + pb, w + pl + pr, c4),
            lambda b, y, x, ch: tirx.if_then_else(
                tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl, ch < c), value(b, y, x, ch),
                tirx.const(pad_value - shift, in_dtype)),
            name="pad_temp")
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    pixels = oh * ow
    tile = tiles.pixel_tile(pixels, tiles.int8_tiles(kind, ko * block, pointwise=kh * kw == 1)[1])
    padded = -(-pixels // tile) * tile
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rc = te.reduce_axis((0, cq), "rc")
    rj = te.reduce_axis((0, quad), "rj")

    def acc_body(b: Any, p: Any, f: Any) -> Any:
        q = te.min(p, pixels - 1) if padded != pixels else p
        return te.sum(src[b, (q // ow) * sh + ry * dh, (q % ow) * sw + rx * dw, rc * quad + rj].astype("int32")
                      * wp[f // block, ry, rx, rc, f % block, rj].astype("int32"), axis=[ry, rx, rc, rj])

    acc = te.compute((n, padded, ko * block), acc_body, name=ACC_NAME)
    return te.compute((n, oh, ow, ko * block),
                      lambda b, y, x, f: (acc[b, y * ow + x, f] - comp[f]).astype("float32") * scale[f],
                      name=OUT_NAME)


# -- the Relax rewrite ---------------------------------------------------------------------


def _const(expr: Any) -> np.ndarray | None:
    from tvm import ir

    if not isinstance(expr, ir.expr.Constant):
        return None
    return np.asarray(expr.value.numpy())


def _scalar(expr: Any) -> float | None:
    v = _const(expr)
    return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def integer_convolutions(mod: Any, target: Any) -> tuple[Any, dict[str, int]]:
    """Rewrite ``mod``'s quantized NHWC convolutions into integer ones for ``target``.

    Expects the graph after :func:`~edgeres.backends.tvm.qdq.fold_activation_qdq` (with
    ``integer=True``) and ConvertLayout to NHWC/HWIO, before constant folding. Returns the
    module and counts: ``{"int8": rewritten, "float": quantized convolutions left in float}``.
    """
    from tvm import ir, relax


    kind = int8_kind(target)
    counts = {"int8": 0, "float": 0}
    if kind is None:
        return mod, counts
    ops = {n: ir.Op.get(f"relax.{n}") for n in ("nn.conv2d", "multiply", "subtract", "astype", "permute_dims",
                                                "dequantize", "reshape")}

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def __init__(self, module: Any) -> None:
            super().__init__(module)
            self.module = module

        def _bound(self, expr: Any, op: str) -> Any:
            bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
            return bound if isinstance(bound, relax.Call) and bound.op == ops[op] else None

        def _activation(self, data: Any) -> tuple[Any, float, int] | None:
            flat = self._bound(data, "reshape")  # a classifier's input, reshaped to a 1x1 image (dense.py)
            if flat is not None:
                found = self._activation(flat.args[0])
                if found is None:
                    return None
                q, s, z = found
                return self.builder_.emit(relax.op.reshape(q, flat.args[1])), s, z
            perm = self._bound(data, "permute_dims")  # the model input: quantized in NCHW, then transposed
            if perm is not None:
                if [int(a) for a in perm.attrs.axes] != [0, 2, 3, 1]:
                    return None
                found = self._activation(perm.args[0])
                if found is None:
                    return None
                q, s, z = found
                return self.builder_.emit(relax.op.permute_dims(q, [0, 2, 3, 1])), s, z
            mul = self._bound(data, "multiply")
            sub = self._bound(mul.args[0], "subtract") if mul is not None else None
            cast = self._bound(sub.args[0], "astype") if sub is not None else None
            if cast is None:
                return None
            s, z = _scalar(mul.args[1]), _scalar(sub.args[1])
            q = cast.args[0]
            if s is None or z is None or str(q.ty.dtype) not in ("uint8", "int8") or z != round(z):
                return None
            return q, s, int(z)

        def _weights(self, weight: Any) -> tuple[np.ndarray, np.ndarray] | None:
            perm = self._bound(weight, "permute_dims")
            dq = self._bound(perm.args[0], "dequantize") if perm is not None else None
            if dq is None or [int(a) for a in perm.attrs.axes] != [2, 3, 1, 0]:
                return None
            wq, sw, zw = (_const(a) for a in dq.args[:3])
            if wq is None or sw is None or zw is None or wq.dtype != np.int8 or wq.ndim != 4 or np.any(zw != 0):
                return None
            if sw.size != 1 and int(dq.attrs.axis) != 0:  # per-tensor scales have no meaningful axis
                return None
            sw = np.broadcast_to(sw.reshape(-1), (wq.shape[0],)) if sw.size in (1, wq.shape[0]) else None
            return (wq, sw.astype(np.float64)) if sw is not None else None

        def visit_call_(self, call: Any) -> Any:  # noqa: N802 - TVM's visitor name
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call) or call.op != ops["nn.conv2d"]:
                return call
            act = self._activation(call.args[0])
            if act is None:  # not a quantized convolution
                return call
            a = call.attrs
            wts = self._weights(call.args[1])
            if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != \
                    ("NHWC", "HWIO", "NHWC") or int(a.groups) != 1 \
                    or str(a.out_dtype or "") not in ("", "None", "float32") \
                    or wts is None or static_shape(act[0].ty) is None or wts[0].shape[0] % BLOCK:
                counts["float"] += 1  # grouped, dynamic, K % 16, weights not symmetric int8 constants
                return call
            (q, s, z), (wq, sw) = act, wts
            if kind in SATURATING and int(np.abs(wq.astype(np.int32)).max(initial=0)) > WEIGHT_LIMIT_7BIT:
                counts["float"] += 1  # vpmaddubsw could saturate: quantize with reduce_range
                return call
            shift = {"uint8": 0, "int8": -128}[str(q.ty.dtype)] if kind != "sdot" else \
                {"uint8": 128, "int8": 0}[str(q.ty.dtype)]
            comp = ((z - shift) * wq.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32)
            scale = (s * sw).astype(np.float32)
            counts["int8"] += 1
            return self.builder_.call_te(
                int8_conv, q, relax.const(pack_weights(wq)), relax.const(comp), relax.const(scale),
                [int(v) for v in a.strides], [int(v) for v in a.padding], [int(v) for v in a.dilation],
                z, shift, kind, primfunc_name_hint=FUNC_NAME)

        def transform(self) -> Any:
            for gv, func in self.module.functions_items():
                if isinstance(func, relax.Function):
                    self.builder_.update_func(gv, self.visit_expr(func))
            return self.builder_.get()

    out = _Rewriter(mod).transform()
    return relax.transform.DeadCodeElimination()(out), counts


def describe(opts: Any, tvm_target: Any, rewrite: dict[str, int]) -> str:
    """One line for the artifact: which quantized convolutions run integer kernels, and why not the rest."""
    kind = int8_kind(tvm_target)
    if opts.int8 == "float":
        return INT8_FLOAT_NOTE.format(why="int8 = \"float\" was asked for")
    if opts.layout != "NHWC" or opts.conv != "packed":
        return INT8_FLOAT_NOTE.format(why="integer kernels need layout = NHWC and conv = packed")
    if kind is None:
        return INT8_FLOAT_NOTE.format(why=f"{tvm_target.attrs.get('mcpu', 'this CPU')} has no dot-product "
                                          "instruction edgeres uses (SSSE3/AVX2/AVX-512, AArch64 dotprod)")
    n, rest = rewrite.get("int8", 0), rewrite.get("float", 0)
    if n + rest == 0:
        return INT8_FLOAT_NOTE.format(why="no Q/DQ convolution was found")
    why = ""
    if rest:
        why = (f"; {rest} keep float kernels" + (" (weights wider than 7 bits would saturate vpmaddubsw: "
                                                 "quantize with --reduce-range)" if kind in SATURATING else ""))
    return INT8_INTEGER_NOTE.format(n=n, total=n + rest, kind=kind, rest=why)
