"""Register tiles of edgeres' packed convolutions, chosen from the target's vector register file.

A register tile is ``pixels x channels`` accumulators that stay in vector registers while
the whole reduction (kernel rows, columns, input channels) streams past them: pixels are
unrolled, channels vectorized. Its size is set by the register file, not by the model:

==========  =====================  ===========================  ==========================
ISA         registers              float32 tile (ch x pixels)   integer tile (ch x pixels)
==========  =====================  ===========================  ==========================
``avx512``  32 zmm x 16 fp32       32 x 14 = 28 zmm (few input   32 x 14 = 28 zmm (VNNI, BF16)
                                   channels: 64 x 6 = 24 zmm)
``avx2``    16 ymm x 8 fp32        16 x 6 = 12 ymm              16 x 4 = 8 ymm (+ temps);
                                                                AVX-VNNI 16 x 6 = 12 ymm
``sse``     16 xmm x 4 fp32        8 x 6 = 12 xmm               16 x 2 = 8 xmm (+ temps)
``neon``    32 q x 4 fp32          16 x 6 = 24 q                16 x 4 = 16 q
==========  =====================  ===========================  ==========================

AVX-512 needs about 10 independent accumulator chains per port pair to hide the FMA /
``vpdpbusd`` latency (4-5 cycles, two ports): the AVX2 tile (6 zmm) left half of an AVX-512
core idle. 28 of 32 zmm hold accumulators; the other 4 hold the weights of the step (two
vectors) and the broadcast input (or none: ``{1to16}`` memory broadcasts). The float weights
are packed in blocks of the tile's channel count, so one step loads the tile's weights as
contiguous vectors. Measured (one core of the Xeon this was written on, float32, min of 40
runs): the 6 x 16 tile ran ResNet-18's 3x3 convolutions at 30-60 GFLOP/s, the 14 x 32 tile
at 155-175, as ONNX Runtime's MLAS (see bench/latency.py for whole models).

The stem (few input channels: the input-channel loop cannot be unrolled, the kernel row
is) prefers wider, shorter tiles (64 x 6), as MLAS' NCHWc kernels do.

Nothing here imports tvm at module level.
"""

from __future__ import annotations

from typing import Any

from edgeres.backends.tvm.primitives import MAX_PIXEL_WASTE

# (channels, pixel tiles best first) per ISA, first that divides the output channels wins.
FLOAT_TILES: dict[str, tuple[tuple[int, tuple[int, ...]], ...]] = {
    "avx512": ((32, (14, 12, 8, 7, 6, 4, 3, 2, 1)), (16, (14, 12, 8, 7, 6, 4, 3, 2, 1)),
               (8, (8, 7, 6, 4, 3, 2, 1))),
    "avx2": ((16, (6, 4, 7, 5, 8, 3, 2, 1)), (8, (6, 4, 7, 5, 8, 3, 2, 1))),
    "neon": ((16, (6, 4, 7, 5, 8, 3, 2, 1)), (8, (6, 4, 7, 5, 8, 3, 2, 1))),
    "sse": ((8, (6, 4, 7, 5, 8, 3, 2, 1)),),
}
# 1x1 (pointwise) convolutions on AVX-512: 16 channels x 14 pixels (14 accumulator chains, enough for two
# FMA ports). Their reduction is short (the input channels only), and the 32 x 14 tile (28 zmm) ran them
# 10-40 % slower: measured on a Zen 4 (x86-64-v4 variant, 2 threads, kernel time in a model):
# 64->256 @56x56 0.84 -> 0.57 ms, 128->512 @28x28 0.55 -> 0.46, 256->1024 @14x14 0.56 -> 0.50.
POINTWISE_FLOAT_TILES = {"avx512": ((16, (14, 12, 8, 7, 6, 4, 3, 2, 1)), (8, (8, 7, 6, 4, 3, 2, 1)))}
# The float tile when the input-channel loop is too short to unroll (the RGB stem).
FLOAT_STEM_TILES = {"avx512": ((64, (6, 4, 5, 3, 2, 1)),)}
STEM_CHANNELS = 8  # fewer input channels than this: the stem tile
# Integer kernels: 16 output channels x 4 input channels per dot product (see int8.py).
INT8_TILES: dict[str, tuple[tuple[int, tuple[int, ...]], ...]] = {
    "vnni": ((32, (14, 12, 8, 7, 6, 4, 3, 2, 1)), (16, (8, 7, 6, 4, 5, 3, 2, 1))),
    "avx512bw": ((32, (12, 8, 7, 6, 4, 3, 2, 1)), (16, (8, 7, 6, 4, 5, 3, 2, 1))),
    "avxvnni": ((16, (6, 4, 7, 5, 3, 2, 1)),),
    "avx2": ((16, (4, 5, 3, 6, 7, 2, 1)),),
    "ssse3": ((16, (2, 3, 1)),),
    "sdot": ((16, (4, 5, 3, 6, 7, 2, 1)),),
}
# 1x1 integer convolutions with AVX-512 VNNI: 16 channels x 14 pixels, for the same reason as the float
# ones. Measured on a Zen 4 (x86-64-v4-vnni, 2 threads, bench/latency.py, two A/B runs): ResNet-50 INT8
# 1.08x / 1.13x -> 0.97x / 1.01x ONNX Runtime INT8. Other integer kinds: unmeasured, unchanged.
POINTWISE_INT8_TILES = {"vnni": ((16, (14, 12, 8, 7, 6, 4, 5, 3, 2, 1)),)}


def vector_isa(target: Any) -> str:
    """The vector register file of an LLVM ``target``: ``avx512``, ``avx2``, ``neon`` or ``sse``."""
    from tvm.target import codegen

    if target is None:
        return "avx2"
    try:
        if "aarch64" in str(target.attrs.get("mtriple", "")):
            return "neon"
        if codegen.llvm_cpu_has_features(["avx512f"], target):
            return "avx512"
        if codegen.llvm_cpu_has_features(["avx2"], target):
            return "avx2"
    except Exception:  # noqa: BLE001 - a target LLVM cannot describe: the narrow, always-correct tile
        pass
    return "sse"


def _choose(options: tuple[tuple[int, tuple[int, ...]], ...], k: int) -> tuple[int, tuple[int, ...]]:
    for channels, tiles in options:
        if k % channels == 0:
            return channels, tiles
    return k, options[-1][1]


def float_tiles(target: Any, k: int, c: int, pointwise: bool = False) -> tuple[int, tuple[int, ...]]:
    """``(channels, pixel tiles best first)`` of the float kernel: ``k`` output, ``c`` input channels
    (``pointwise``: a 1x1 kernel)."""
    isa = vector_isa(target)
    if c < STEM_CHANNELS and isa in FLOAT_STEM_TILES and k % FLOAT_STEM_TILES[isa][0][0] == 0:
        return FLOAT_STEM_TILES[isa][0]
    if pointwise and isa in POINTWISE_FLOAT_TILES:
        return _choose(POINTWISE_FLOAT_TILES[isa], k)
    return _choose(FLOAT_TILES[isa], k)


def int8_tiles(kind: str, k: int, pointwise: bool = False) -> tuple[int, tuple[int, ...]]:
    """``(channels, pixel tiles best first)`` of the integer kernel of ``kind`` (channels: 16 x W;
    ``pointwise``: a 1x1 kernel)."""
    if pointwise and kind in POINTWISE_INT8_TILES:
        return _choose(POINTWISE_INT8_TILES[kind], k)
    return _choose(INT8_TILES[kind], k)


def bf16_tiles(target: Any, k: int) -> tuple[int, tuple[int, ...]]:
    """``(channels, pixel tiles best first)`` of the BF16 kernel (``vdpbf16ps`` zmm: as the VNNI tile)."""
    return _choose(INT8_TILES["vnni"], k)


def pixel_tile(pixels: int, tiles: tuple[int, ...]) -> int:
    """Register-tile rows for ``pixels`` output pixels: the first of ``tiles`` that wastes little
    (padding pixels compute on a clamped valid pixel and are never written back)."""
    for t in tiles:
        if -(-pixels // t) * t - pixels <= MAX_PIXEL_WASTE * pixels:
            return t
    return 1
