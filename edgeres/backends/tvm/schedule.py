"""A small, deterministic CPU schedule for untuned TVM Relax modules.

TVM's default Relax lowering leaves every operator as a naive loop nest: one thread,
no register blocking, the reduction innermost. This module supplies a cheap default
schedule (no search) for every TIR function a tuning database did not cover:

* direct convolutions (4 spatial + 3 reduction axes, NCHW or NHWC) are register-blocked:
  a tile of output values accumulates in a local buffer with the reduction loops
  outside it; the tile's contiguous axis (output columns in NCHW, output channels in
  NHWC) is vectorized and the other unrolled; fused epilogues (bias, residual add,
  ReLU) are applied as the tile is written back; the outer loops run in parallel;
* other reductions (matmul, pooling, mean) get their reduction moved outside a
  vectorized innermost spatial axis where that axis is long enough, and their outer
  spatial loops parallelized;
* everything else (padding, elementwise, reshapes) gets its outer loops fused and
  parallelized.

Every rule is best-effort: if a schedule primitive refuses (an unexpected loop nest),
that function keeps TVM's default lowering, which is always correct.

NHWC float32 convolutions normally arrive here as edgeres' packed-weight kernel and are
scheduled by :func:`edgeres.backends.tvm.conv.schedule_packed`; the NCHW/NHWC TOPI rules
below serve ``layout = "NCHW"``, ``conv = "topi"`` and convolutions the packed kernel does
not take (grouped, non-float32). Measured earlier (batch 1, 2-core AMD EPYC znver3, ORT
MLAS as reference): the NCHW rule ran ResNet-50 in ~159 ms against ORT's ~60 ms; the packed
kernel is what closed most of that gap (see the README's benchmark table).
"""

from __future__ import annotations

from typing import Any

from edgeres.backends.tvm.primitives import (
    ACC_NAME, COMM_REDUCE, DATA_PAR, extent, fold_epilogues, iter_types, largest_divisor, parallelize, schedule_injective,
    siblings, vectorize_tile,
)

# Register tile for NCHW convolutions: output columns (vectorized) x output channels
# (unrolled); 8 x 8 floats = 8 AVX2 or 16 SSE/NEON registers.
NCHW_COLUMNS = 8
NCHW_CHANNELS = 8
# Register tile for NHWC convolutions: output columns (unrolled) x channels (vectorized).
NHWC_COLUMNS = 8
NHWC_CHANNELS = 8
# Tile of the vectorized axis of other reductions (matmul).
REDUCTION_VECTOR = 16


def default_schedule_pass() -> Any:
    """A Relax module pass that schedules every TIR function not yet marked scheduled.

    Run it after legalization and fusion (``relax.get_pipeline("zero")``), under the
    compilation target (``with target:``).
    """
    from tvm.s_tir import dlight as dl

    class CpuDefault(dl.ScheduleRule):  # type: ignore[misc]
        """dlight rule wrapping :func:`schedule_func` for llvm (CPU) targets."""

        def apply(self, func: Any, target: Any, tunable: bool) -> Any:
            if target.kind.name != "llvm":
                return None
            return schedule_func(func, target)

    return dl.ApplyDefaultSchedule(CpuDefault())


def schedule_func(func: Any, target: Any = None) -> Any:
    """Schedule one PrimFunc; return a ``tvm.s_tir.Schedule``, or None to keep the default lowering."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    try:
        blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
        reductions = [b for b in blocks if COMM_REDUCE in iter_types(sch, b)]
        if len(reductions) == 1:
            _schedule_reduction(sch, reductions[0], target)
        elif not reductions and blocks:
            schedule_injective(sch, blocks)
        else:
            return None
    except Exception:  # noqa: BLE001 - a primitive refused: keep TVM's default lowering
        return None
    return sch


def _schedule_reduction(sch: Any, block: Any, target: Any = None) -> None:
    name = sch.get(block).name_hint
    if name.startswith(ACC_NAME):
        from edgeres.backends.tvm.conv import schedule_packed

        schedule_packed(sch, block, target)
        return
    types = iter_types(sch, block)
    loops = list(sch.get_loops(block))
    if len(loops) != len(types) or types != sorted(types) or any(t not in (DATA_PAR, COMM_REDUCE) for t in types):
        raise ValueError("loop nest is not spatial-then-reduction")
    is_conv = name.startswith(("conv2d_nhwc", "conv2d_nchw"))
    for pro in siblings(sch, block)[0]:
        if not is_conv:  # pooling: read through the padding instead of materializing it
            try:
                sch.compute_inline(pro)
                continue
            except Exception:  # noqa: BLE001 - not inlinable: its own pass
                pass
        schedule_injective(sch, [pro])  # convolution padding: its own parallel pass over memory
    n_spatial = types.count(DATA_PAR)
    if n_spatial == 4 and len(types) == 7 and name.startswith("conv2d_nhwc"):
        _schedule_conv(sch, block, loops, nhwc=True)
    elif n_spatial == 4 and len(types) == 7 and name.startswith("conv2d_nchw"):
        _schedule_conv(sch, block, loops, nhwc=False)
    else:
        _schedule_generic_reduction(sch, block, loops, n_spatial)


def _schedule_conv(sch: Any, block: Any, loops: list[Any], *, nhwc: bool) -> None:
    """Register-blocked direct convolution (loop nests as TVM's conv2d legalization emits them)."""
    if nhwc:
        n, y, x, f, r0, r1, r2 = loops  # r: ry, rx, rc
        cols, chans = NHWC_COLUMNS, NHWC_CHANNELS
    else:
        n, f, y, x, r0, r1, r2 = loops  # r: rc, ry, rx
        cols, chans = NCHW_COLUMNS, NCHW_CHANNELS
    f_ext, x_ext = extent(sch, f), extent(sch, x)
    if f_ext is None or x_ext is None:
        raise ValueError("dynamic convolution shape")
    x_o, x_i = sch.split(x, factors=[None, largest_divisor(x_ext, cols)])
    f_o, f_i = sch.split(f, factors=[None, largest_divisor(f_ext, chans)])
    # Output-channel tiles outermost: each tile's weights stay in cache across the image.
    inner = (x_i, f_i) if nhwc else (f_i, x_i)
    sch.reorder(n, f_o, y, x_o, r0, r1, r2, *inner)
    local = sch.cache_write(block, 0, "global")  # small: a stack alloca ("local" = a workspace call per tile)
    fold_epilogues(sch, local)
    sch.reverse_compute_at(local, x_o, preserve_unit_loops=True)
    # Vectorize/parallelize before decompose_reduction: the primitives need the init in place.
    vectorize_tile(sch, sch.get_loops(block))
    vectorize_tile(sch, sch.get_loops(local))
    parallelize(sch, [n, f_o, y])
    sch.decompose_reduction(block, r0)


def _schedule_generic_reduction(sch: Any, block: Any, loops: list[Any], n_spatial: int) -> None:
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    last_ext = extent(sch, spatial[-1]) if spatial else None
    if last_ext is None or last_ext < 8 or not reduce:
        for epi in siblings(sch, block)[1]:
            schedule_injective(sch, [epi])
        parallelize(sch, list(spatial))
        return
    s_o, s_i = sch.split(spatial[-1], factors=[None, largest_divisor(last_ext, REDUCTION_VECTOR)])
    outer = [*spatial[:-1], s_o]
    sch.reorder(*outer, *reduce, s_i)
    local = sch.cache_write(block, 0, "global")  # small: a stack alloca ("local" = a workspace call per tile)
    fold_epilogues(sch, local)
    sch.reverse_compute_at(local, s_o, preserve_unit_loops=True)
    for blk in (block, local):
        inner = sch.get_loops(blk)[-1]
        if (extent(sch, inner) or 0) > 1:
            sch.vectorize(inner)
    parallelize(sch, outer)
    sch.decompose_reduction(block, reduce[0])
