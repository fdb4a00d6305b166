"""Packed-weight NHWC convolution for TVM CPU targets: its compute and its schedule.

TVM 0.27 legalizes ``relax.nn.conv2d`` to TOPI's generic direct convolution, whose
weights (HWIO) are read with a stride of one output-channel row per input channel, and
whose output pixels are tiled only along a row (7- or 14-wide rows in late ResNet
stages tile badly). This module replaces that legalization for float32 NHWC
convolutions with:

* a weight packing ``(KH, KW, C, K) -> (K/16, KH, KW, C, 16)``, folded into a constant
  at compile time, so that each step of the reduction reads 16 consecutive weights;
* a direct convolution over *flattened* output pixels (``p = y * OW + x``), padded up
  to a multiple of the pixel tile so that every register tile is full (padding pixels
  read a clamped, valid pixel and are never written back);
* a schedule that keeps a ``pixels x 16 channels`` tile of accumulators in registers
  (pixels unrolled, channels vectorized: 6 x 2 AVX2 registers, 6 x 4 NEON registers),
  the input-channel loop unrolled, weights broadcast-free, and the epilogues that TVM
  fused into the convolution (bias, residual add, ReLU, requantize) applied as the tile
  is written back.

This is the usual CPU direct-convolution micro-kernel (as in MLAS' NCHWc kernels and
TVM's own conv2d_NCHWc) expressed without a blocked activation layout, so the rest of
the Relax graph stays plain NHWC. On this project's 2-core AMD EPYC (znver3, AVX2) a
64->64 3x3 convolution at 56x56 ran at ~170 GFLOP/s with it against ~120 for ONNX
Runtime (MLAS) and ~55 for the previous NCHW schedule (see bench/latency.py for whole
models).
"""

from __future__ import annotations

from typing import Any

from edgeres.backends.tvm import bf16 as tvm_bf16
from edgeres.backends.tvm import int8 as tvm_int8
from edgeres.backends.tvm import primitives as prim
from edgeres.backends.tvm import tiles
from edgeres.backends.tvm.primitives import ACC_NAME, OUT_NAME, static_shape

# Unroll factor of the input-channel loop inside the register tile.
CHANNEL_UNROLL = 8
# Unroll factor of the integer kernel's loop over quads of input channels.
INT8_QUAD_UNROLL = 1
# Weights kept cache-resident while pixel tiles stream past them (about half a 512 KiB L2).
WEIGHT_CACHE_BYTES = 256 * 1024


def legalize_map(precision: str = "fp32") -> dict[str, Any]:
    """``customize_legalize_map`` for ``relax.transform.LegalizeOps``; ``precision="bf16"``: the
    convolutions run BF16 (:mod:`edgeres.backends.tvm.bf16`) where the target has AVX512_BF16."""
    if precision == "bf16":
        return {"relax.nn.conv2d": lambda bb, call: _legalize_conv2d(bb, call, bf16=True)}
    return {"relax.nn.conv2d": _legalize_conv2d}


def eligible(call: Any) -> bool:
    """Whether ``call`` (a relax.nn.conv2d) is a float32 NHWC/HWIO, ungrouped, static-shape convolution."""
    a = call.attrs
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != ("NHWC", "HWIO", "NHWC"):
        return False
    if int(a.groups) != 1 or str(a.out_dtype or "") not in ("", "None", "float32"):
        return False
    data, weight = (arg.ty for arg in call.args)
    if str(data.dtype) != "float32" or str(weight.dtype) != "float32":
        return False
    dshape, wshape = static_shape(data), static_shape(weight)
    return dshape is not None and wshape is not None and len(dshape) == 4 and wshape[3] % 8 == 0


def _legalize_conv2d(bb: Any, call: Any, bf16: bool = False) -> Any:
    import numpy as np
    from tvm import ir, relax
    from tvm.target import Target

    if not eligible(call):
        default = ir.Op.get("relax.nn.conv2d").get_attr("FLegalize")
        return default(bb, call)
    a = call.attrs
    data, weight = call.args
    _, _, c, k = static_shape(weight.ty)
    conv_args = ([int(s) for s in a.strides], [int(p) for p in a.padding], [int(d) for d in a.dilation])
    if bf16 and isinstance(weight, ir.expr.Constant) and k % tvm_bf16.BLOCK == 0 \
            and tvm_bf16.supported(Target.current(allow_none=True)):
        packed = relax.const(tvm_bf16.pack_weights(weight.value.numpy()), "uint16")
        return bb.call_te(tvm_bf16.bf16_conv, data, packed, *conv_args, primfunc_name_hint=tvm_bf16.FUNC_NAME)
    kh_, kw_ = static_shape(weight.ty)[:2]
    block, _ = tiles.float_tiles(Target.current(allow_none=True), k, c, pointwise=kh_ * kw_ == 1)
    if isinstance(weight, ir.expr.Constant):  # packed here in numpy: FoldConstant would compile a kernel per shape
        w = weight.value.numpy()
        kh, kw = w.shape[:2]
        packed = relax.const(np.ascontiguousarray(w.reshape(kh, kw, c, k // block, block).transpose(3, 0, 1, 2, 4)),
                             str(w.dtype))
    else:
        packed = bb.emit(bb.call_te(pack_weights, weight, block, primfunc_name_hint="conv2d_weight_pack"))
    return bb.call_te(packed_conv, data, packed, *conv_args, primfunc_name_hint="conv2d_nhwc_packed")


def pack_weights(w: Any, block: int) -> Any:
    """HWIO weights -> ``(K/block, KH, KW, C, block)``."""
    from tvm import te

    kh, kw, c, k = (int(d) for d in w.shape)
    return te.compute((k // block, kh, kw, c, block),
                      lambda ko, ry, rx, rc, ki: w[ry, rx, rc, ko * block + ki], name="weight_pack")


def packed_conv(data: Any, wp: Any, strides: list[int], padding: list[int], dilation: list[int]) -> Any:
    """NHWC convolution of ``data`` with packed weights ``wp``; output NHWC."""
    from tvm import te, tirx

    n, h, w, c = (int(d) for d in data.shape)
    ko, kh, kw, _, block = (int(d) for d in wp.shape)
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding if len(padding) == 4 else (padding * 4)[:4]
    src = data
    if pt or pl or pb or pr:
        src = te.compute(
            (n, h + pt + pb, w + pl + pr, c),
            lambda b, y, x, ch: tirx.if_then_else(
                tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl), data[b, y - pt, x - pl, ch],
                tirx.const(0.0, data.dtype)),
            name="pad_temp")
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    pixels = oh * ow
    from tvm.target import Target

    tile = tiles.pixel_tile(pixels, tiles.float_tiles(Target.current(allow_none=True), ko * block, c,
                                                      pointwise=kh * kw == 1)[1])
    padded = -(-pixels // tile) * tile
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rc = te.reduce_axis((0, c), "rc")

    def acc_body(b: Any, p: Any, f: Any) -> Any:
        q = te.min(p, pixels - 1) if padded != pixels else p
        return te.sum(src[b, (q // ow) * sh + ry * dh, (q % ow) * sw + rx * dw, rc]
                      * wp[f // block, ry, rx, rc, f % block], axis=[ry, rx, rc])

    acc = te.compute((n, padded, ko * block), acc_body, name=ACC_NAME)
    return te.compute((n, oh, ow, ko * block), lambda b, y, x, f: acc[b, y * ow + x, f], name=OUT_NAME)


# -- schedule ---------------------------------------------------------------------------


def schedule_packed(sch: Any, acc: Any, target: Any = None) -> None:
    """Schedule a function holding [prologues..., pad_temp], conv2d_nhwc_packed, its _out, [epilogues...]."""
    before, after = prim.siblings(sch, acc)
    if not after or not sch.get(after[0]).name_hint.startswith(OUT_NAME):
        raise ValueError("packed convolution without its write-back block")
    out = after[0]
    for pro in before:  # pad_temp stays a pass; elementwise inputs (a residual's dequantize) inline
        if not sch.get(pro).name_hint.startswith("pad_temp"):
            try:
                sch.compute_inline(pro)
                continue
            except Exception:  # noqa: BLE001 - not inlinable: its own parallel pass
                pass
        prim.schedule_injective(sch, [pro])
    for epi in after[1:]:  # bias, residual, ReLU, (de)quantize: elementwise on the output
        try:
            sch.reverse_compute_inline(epi)
        except Exception:  # noqa: BLE001 - not elementwise on the output: its own parallel pass
            prim.schedule_injective(sch, [epi])
    _, padded, k = (int(iv.dom.extent) for iv in sch.get(acc).iter_vars[:3])
    _, oh, ow, _ = (int(iv.dom.extent) for iv in sch.get(out).iter_vars)
    red = [int(iv.dom.extent) for iv in sch.get(acc).iter_vars[3:]]  # ry, rx, rc[, rj]
    kind = None
    if len(red) == 4 and red[3] == tvm_bf16.PAIR:  # the BF16 kernel: rc counts pairs of input channels
        kind = "bf16"
        vec, rows = tiles.bf16_tiles(target, k)
    elif len(red) == 4:  # the integer kernel (tvm_int8): rc counts quads of input channels
        kind = tvm_int8.int8_kind(target)
        if kind is None:
            raise ValueError("integer packed convolution on a target without a dot-product instruction")
        vec, rows = tiles.int8_tiles(kind, k, pointwise=red[0] * red[1] == 1)
    else:
        vec, rows = tiles.float_tiles(target, k, red[2], pointwise=red[0] * red[1] == 1)
    tile = tiles.pixel_tile(oh * ow, rows)
    if padded % tile:
        raise ValueError("pixel padding does not match the pixel tile")
    sch.transform_block_layout(out, lambda b, y, x, f: (b, y * ow + x, f))
    b, p, f = sch.get_loops(out)
    p_o, p_i = sch.split(p, factors=[None, tile])
    f_o, f_i = sch.split(f, factors=[None, vec])
    # Cache blocking: a group of output-channel blocks whose weights fit in half the L2
    # stays resident while every pixel tile streams past it; inputs are re-read once per group.
    block_bytes = red[0] * red[1] * red[2] * vec * 4  # float32, or int8 x 4 channels per quad
    groups = k // vec
    inner = prim.largest_divisor(groups, max(1, WEIGHT_CACHE_BYTES // block_bytes))
    if inner > 1 and inner < groups:
        f_oo, f_oi = sch.split(f_o, factors=[None, inner])
        outer = [b, f_oo, p_o, f_oi]
    elif inner == groups:
        outer = [b, p_o, f_o]
    else:
        outer = [b, f_o, p_o]
    sch.reorder(*outer, p_i, f_i)
    sch.vectorize(f_i)
    # The accumulator tile keeps the default "global" scope: TVM lowers a small constant-size
    # global allocation to a stack alloca (registers after LLVM's SROA), but a "local" one to
    # TVMBackendAllocWorkspace, called once per tile inside the parallel loop (measured: a
    # 1x1 int8 conv 1.04 -> 0.62 ms, a 3x3 fp32 conv 1.77 -> 1.51 ms).
    sch.compute_at(acc, outer[-1], preserve_unit_loops=True)
    if kind is not None:
        _schedule_int8_tile(sch, acc, outer, red, kind)
        return
    _, a_p, a_f, r_y, r_x, r_c = sch.get_loops(acc)[len(outer):]
    unroll = prim.largest_divisor(red[2], CHANNEL_UNROLL)
    rc_o, rc_i = sch.split(r_c, factors=[None, unroll])
    sch.reorder(r_y, r_x, rc_o, rc_i, a_p, a_f)
    sch.unroll(rc_i)
    if red[2] < CHANNEL_UNROLL:  # few input channels (the stem): unroll the filter row as well
        sch.unroll(r_x)
    sch.unroll(a_p)
    sch.vectorize(a_f)
    prim.parallelize(sch, outer)
    sch.decompose_reduction(acc, r_y)


def _schedule_int8_tile(sch: Any, acc: Any, outer: list[Any], red: list[int], kind: str) -> None:
    """The integer (BF16) kernel's register tile: pixels unrolled, the 16 x 4 (16 x 2) dot product tensorized."""
    _, a_p, a_f, r_y, r_x, r_c, r_j = sch.get_loops(acc)[len(outer):]
    unroll = prim.largest_divisor(red[2], INT8_QUAD_UNROLL)
    rc_o, rc_i = sch.split(r_c, factors=[None, unroll])
    a_w, a_f = sch.split(a_f, factors=[None, 16])  # W dot products of 16 channels per pixel
    sch.reorder(r_y, r_x, rc_o, rc_i, a_p, a_w, a_f, r_j)
    sch.unroll(rc_i)
    sch.unroll(a_w)
    if red[2] < 2:  # one quad of input channels (the stem): unroll the filter row as well
        sch.unroll(r_x)
    sch.unroll(a_p)
    prim.parallelize(sch, outer)
    top = sch.get_loops(acc)[0]
    init = sch.decompose_reduction(acc, r_y)
    sch.vectorize(sch.get_loops(init)[-1])
    if kind == "bf16":
        sch.tensorize(a_f, tvm_bf16.intrinsic())
        sch.annotate(top, "pragma_import_llvm", tvm_bf16.DOT_LLVM)  # vdpbf16ps, inlined
    else:
        sch.tensorize(a_f, tvm_int8.intrinsic(kind))
