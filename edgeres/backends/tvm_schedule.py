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
scheduled by :func:`edgeres.backends.tvm_conv.schedule_packed`; the NCHW/NHWC TOPI rules
below serve ``layout = "NCHW"``, ``conv = "topi"`` and convolutions the packed kernel does
not take (grouped, non-float32). Measured earlier (batch 1, 2-core AMD EPYC znver3, ORT
MLAS as reference): the NCHW rule ran ResNet-50 in ~159 ms against ORT's ~60 ms; the packed
kernel is what closed most of that gap (see the README's benchmark table).
"""

from __future__ import annotations

from typing import Any

# Register tile for NCHW convolutions: output columns (vectorized) x output channels
# (unrolled); 8 x 8 floats = 8 AVX2 or 16 SSE/NEON registers.
NCHW_COLUMNS = 8
NCHW_CHANNELS = 8
# Register tile for NHWC convolutions: output columns (unrolled) x channels (vectorized).
NHWC_COLUMNS = 8
NHWC_CHANNELS = 8
# Tile of the vectorized axis of other reductions (matmul).
REDUCTION_VECTOR = 16
# Vector width (elements) of the innermost loop of padding/elementwise passes.
INJECTIVE_VECTOR = 16
_DATA_PAR, _COMM_REDUCE = 0, 2  # tvm IterVar kinds


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
        reductions = [b for b in blocks if _COMM_REDUCE in _iter_types(sch, b)]
        if len(reductions) == 1:
            _schedule_reduction(sch, reductions[0], target)
        elif not reductions and blocks:
            _schedule_injective(sch, blocks)
        else:
            return None
    except Exception:  # noqa: BLE001 - a primitive refused: keep TVM's default lowering
        return None
    return sch


# -- helpers ----------------------------------------------------------------------------


def _iter_types(sch: Any, block: Any) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _largest_divisor(n: int, limit: int) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def _parallelize(sch: Any, loops: list[Any]) -> None:
    """Fuse ``loops`` (outermost first) and run the result in parallel if it has >= 2 iterations."""
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if (_extent(sch, fused) or 0) >= 2:
        sch.parallel(fused)


def _siblings(sch: Any, block: Any) -> tuple[list[Any], list[Any]]:
    """Blocks of the root scope before and after ``block``, in program order."""
    children = list(sch.get_child_blocks(sch.get_sblock("root")))
    names = [sch.get(b).name_hint for b in children]
    i = names.index(sch.get(block).name_hint)
    return children[:i], children[i + 1 :]


def _schedule_injective(sch: Any, blocks: list[Any]) -> None:
    """Inline what can be inlined, then parallelize the outer loops of each remaining block."""
    remaining = []
    for block in blocks[:-1]:
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - not inlinable (e.g. several consumers)
            remaining.append(block)
    remaining.append(blocks[-1])
    for block in remaining:
        loops = list(sch.get_loops(block))
        if len(loops) > 1:
            _parallelize(sch, loops[:-1])
            _vectorize_inner(sch, loops[-1])
        elif loops and (_extent(sch, loops[0]) or 0) >= 64:
            outer, inner = sch.split(loops[0], factors=[None, 16])
            sch.parallel(outer)
            _vectorize_inner(sch, inner)


def _vectorize_inner(sch: Any, loop: Any) -> None:
    """Vectorize (a 4..16-wide inner part of) ``loop`` where that is possible; else leave it."""
    ext = _extent(sch, loop) or 0
    lanes = _largest_divisor(ext, INJECTIVE_VECTOR)
    if lanes < 4:
        return
    try:
        inner = sch.split(loop, factors=[None, lanes])[1] if lanes < ext else loop
        sch.vectorize(inner)
    except Exception:  # noqa: BLE001 - e.g. an opaque access: stay scalar
        pass


def _fold_epilogues(sch: Any, writer: Any) -> None:
    """Reverse-inline the elementwise blocks after ``writer`` (bias, residual, ReLU) into it."""
    for epi in _siblings(sch, writer)[1]:
        try:
            sch.reverse_compute_inline(epi)
        except Exception:  # noqa: BLE001 - not inlinable: give it its own parallel loop
            _schedule_injective(sch, [epi])


def _vectorize_tile(sch: Any, loops: Any) -> None:
    """Unroll the second-innermost loop and vectorize the innermost loop of a tile."""
    loops = list(loops)
    if len(loops) >= 2:
        sch.unroll(loops[-2])
    if loops and (_extent(sch, loops[-1]) or 0) > 1:
        sch.vectorize(loops[-1])


def _schedule_reduction(sch: Any, block: Any, target: Any = None) -> None:
    name = sch.get(block).name_hint
    if name.startswith("conv2d_nhwc_packed"):
        from edgeres.backends.tvm_conv import schedule_packed

        schedule_packed(sch, block, target)
        return
    types = _iter_types(sch, block)
    loops = list(sch.get_loops(block))
    if len(loops) != len(types) or types != sorted(types) or any(t not in (_DATA_PAR, _COMM_REDUCE) for t in types):
        raise ValueError("loop nest is not spatial-then-reduction")
    is_conv = name.startswith(("conv2d_nhwc", "conv2d_nchw"))
    for pro in _siblings(sch, block)[0]:
        if not is_conv:  # pooling: read through the padding instead of materializing it
            try:
                sch.compute_inline(pro)
                continue
            except Exception:  # noqa: BLE001 - not inlinable: its own pass
                pass
        _schedule_injective(sch, [pro])  # convolution padding: its own parallel pass over memory
    n_spatial = types.count(_DATA_PAR)
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
    f_ext, x_ext = _extent(sch, f), _extent(sch, x)
    if f_ext is None or x_ext is None:
        raise ValueError("dynamic convolution shape")
    x_o, x_i = sch.split(x, factors=[None, _largest_divisor(x_ext, cols)])
    f_o, f_i = sch.split(f, factors=[None, _largest_divisor(f_ext, chans)])
    # Output-channel tiles outermost: each tile's weights stay in cache across the image.
    inner = (x_i, f_i) if nhwc else (f_i, x_i)
    sch.reorder(n, f_o, y, x_o, r0, r1, r2, *inner)
    local = sch.cache_write(block, 0, "global")  # small: a stack alloca ("local" = a workspace call per tile)
    _fold_epilogues(sch, local)
    sch.reverse_compute_at(local, x_o, preserve_unit_loops=True)
    # Vectorize/parallelize before decompose_reduction: the primitives need the init in place.
    _vectorize_tile(sch, sch.get_loops(block))
    _vectorize_tile(sch, sch.get_loops(local))
    _parallelize(sch, [n, f_o, y])
    sch.decompose_reduction(block, r0)


def _schedule_generic_reduction(sch: Any, block: Any, loops: list[Any], n_spatial: int) -> None:
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    last_ext = _extent(sch, spatial[-1]) if spatial else None
    if last_ext is None or last_ext < 8 or not reduce:
        for epi in _siblings(sch, block)[1]:
            _schedule_injective(sch, [epi])
        _parallelize(sch, list(spatial))
        return
    s_o, s_i = sch.split(spatial[-1], factors=[None, _largest_divisor(last_ext, REDUCTION_VECTOR)])
    outer = [*spatial[:-1], s_o]
    sch.reorder(*outer, *reduce, s_i)
    local = sch.cache_write(block, 0, "global")  # small: a stack alloca ("local" = a workspace call per tile)
    _fold_epilogues(sch, local)
    sch.reverse_compute_at(local, s_o, preserve_unit_loops=True)
    for blk in (block, local):
        inner = sch.get_loops(blk)[-1]
        if (_extent(sch, inner) or 0) > 1:
            sch.vectorize(inner)
    _parallelize(sch, outer)
    sch.decompose_reduction(block, reduce[0])
