"""BF16 convolutions for x86 CPUs with AVX512_BF16 (``vdpbf16ps``): compute, packing and the intrinsic.

``--precision bf16`` needs no calibration: the FP32 model is compiled with its convolutions in
BF16 (inputs and weights rounded to bfloat16, round-to-nearest-even; products summed in FP32).
The rest of the graph stays FP32, and so do the activations between layers: each convolution's
padding pass converts its input to BF16 as it pads it, and its write-back applies the fused
epilogues (bias, residual, ReLU) in FP32, as the float kernel does.

Weights are packed at compile time as ``(K/16, KH, KW, C2, 16, 2)`` bfloat16 bit patterns:
two consecutive input channels of sixteen output channels, the operand of ``vdpbf16ps zmm``,
which adds ``a[2i] * b[2i] + a[2i+1] * b[2i+1]`` to FP32 lane ``i``. The kernel keeps the float
kernel's structure (:mod:`edgeres.backends.tvm.conv`: flattened-pixel register tiles, the
write-back block); its innermost ``16 channels x 2 inputs`` step is tensorized with
``vdpbf16ps``.

TVM 0.27 cannot pass ``<32 x bfloat>`` operands to an LLVM intrinsic (its BF16 legalization
turns bfloat16 values into float32 or int16 before code generation), so the step calls a
three-line LLVM function, ``edgeres_dpbf16_512``, that bitcasts two ``<32 x i16>`` to
``<32 x bfloat>`` and calls ``llvm.x86.avx512bf16.dpbf16ps.512``; the schedule imports it into
the module (``pragma_import_llvm``) and LLVM inlines it: the loop holds plain ``vdpbf16ps``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from edgeres.backends.tvm import tiles
from edgeres.backends.tvm.primitives import ACC_NAME, OUT_NAME

BLOCK = 16  # output channels per dot product (fp32 lanes of a zmm)
PAIR = 2  # input channels per dot product
FUNC_NAME = "conv2d_nhwc_packed_bf16"
INTRIN_NAME = "edgeres_dot_16x2_bf16"
DOT_FUNC = "edgeres_dpbf16_512"
DOT_LLVM = r"""
define linkonce_odr <16 x float> @edgeres_dpbf16_512(<16 x float> %acc, <32 x i16> %a, <32 x i16> %b) #0 {
  %ab = bitcast <32 x i16> %a to <32 x bfloat>
  %bb = bitcast <32 x i16> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %ab, <32 x bfloat> %bb)
  ret <16 x float> %r
}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = { alwaysinline nounwind "target-features"="+avx512f,+avx512bf16" }
"""


def supported(target: Any) -> bool:
    """Whether an LLVM ``target`` has AVX512_BF16 (``vdpbf16ps``)."""
    from tvm.target import codegen

    if target is None or target.kind.name != "llvm" or "aarch64" in str(target.attrs.get("mtriple", "")):
        return False
    try:
        return bool(codegen.llvm_cpu_has_features(["avx512bf16", "avx512f"], target))
    except Exception:  # noqa: BLE001 - a target LLVM cannot describe
        return False


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even (as ``vcvtneps2bf16``)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def pack_weights(w: np.ndarray) -> np.ndarray:
    """HWIO float32 weights -> ``(K/16, KH, KW, C2, 16, 2)`` bf16 bits, input channels zero-padded to even."""
    kh, kw, c, k = w.shape
    c2 = -(-c // PAIR)
    padded = np.zeros((kh, kw, c2 * PAIR, k), np.float32)
    padded[:, :, :c] = w
    bits = to_bf16_bits(padded).reshape(kh, kw, c2, PAIR, k // BLOCK, BLOCK)
    return np.ascontiguousarray(bits.transpose(4, 0, 1, 2, 5, 3))


def _widen(bits: Any) -> Any:
    """bfloat16 bits (uint16) -> float32, exactly: the bits become the float's upper half."""
    from tvm import tirx

    return tirx.reinterpret("float32", tirx.shift_left(bits.astype("uint32"), tirx.const(16, "uint32")))


def _narrow(value: Any) -> Any:
    """float32 -> bfloat16 bits (uint16), round to nearest even (NaN payloads aside)."""
    from tvm import tirx

    u = tirx.reinterpret("uint32", value)
    lsb = tirx.bitwise_and(tirx.shift_right(u, tirx.const(16, "uint32")), tirx.const(1, "uint32"))
    return tirx.shift_right(u + tirx.const(0x7FFF, "uint32") + lsb, tirx.const(16, "uint32")).astype("uint16")


def bf16_conv(data: Any, wp: Any, strides: list[int], padding: list[int], dilation: list[int]) -> Any:
    """NHWC convolution of float32 ``data`` with packed bf16 weights ``wp``; float32 output, NHWC."""
    from tvm import te, tirx
    from tvm.target import Target

    n, h, w, c = (int(d) for d in data.shape)
    ko, kh, kw, c2, block, pair = (int(d) for d in wp.shape)
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding if len(padding) == 4 else (padding * 4)[:4]
    src = te.compute(  # always materialized: the BF16 copy of the input, padded
        (n, h + pt + pb, w + pl + pr, c2 * pair),
        lambda b, y, x, ch: tirx.if_then_else(
            tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl, ch < c), _narrow(data[b, y - pt, x - pl, ch]),
            tirx.const(0, "uint16")),
        name="pad_temp")
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    pixels = oh * ow
    tile = tiles.pixel_tile(pixels, tiles.bf16_tiles(Target.current(allow_none=True), ko * block)[1])
    padded = -(-pixels // tile) * tile
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rc = te.reduce_axis((0, c2), "rc")
    rj = te.reduce_axis((0, pair), "rj")

    def acc_body(b: Any, p: Any, f: Any) -> Any:
        q = te.min(p, pixels - 1) if padded != pixels else p
        return te.sum(_widen(src[b, (q // ow) * sh + ry * dh, (q % ow) * sw + rx * dw, rc * pair + rj])
                      * _widen(wp[f // block, ry, rx, rc, f % block, rj]), axis=[ry, rx, rc, rj])

    acc = te.compute((n, padded, ko * block), acc_body, name=ACC_NAME)
    return te.compute((n, oh, ow, ko * block), lambda b, y, x, f: acc[b, y * ow + x, f], name=OUT_NAME)


@lru_cache(maxsize=None)
def intrinsic() -> str:
    """Register (once) and name the ``16 x 2`` BF16 dot-product tensor intrinsic."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "uint16", offset_factor=1)
        B = T.match_buffer(b, (16, 2), "uint16", offset_factor=1)
        C = T.match_buffer(c, (16,), "float32", offset_factor=1, scope="global")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.reinterpret("float32", T.shift_left(T.Cast("uint32", A[vk]), T.uint32(16))) \
                            * T.reinterpret("float32", T.shift_left(T.Cast("uint32", B[vi, vk]), T.uint32(16)))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "uint16", offset_factor=1)
        B = T.match_buffer(b, (16, 2), "uint16", offset_factor=1)
        C = T.match_buffer(c, (16,), "float32", offset_factor=1, scope="global")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            C[T.ramp(0, 1, 16)] = T.call_extern(
                "float32x16", DOT_FUNC, C.vload([0], "float32x16"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint16x2"), dtype="uint32"), 16),
                              dtype="uint16x32"),
                B.vload([0, 0], "uint16x32"))

    TensorIntrin.register(INTRIN_NAME, desc, impl, override=True)
    return INTRIN_NAME
