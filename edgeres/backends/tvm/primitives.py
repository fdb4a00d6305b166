"""Schedule primitives shared by edgeres' TVM kernels and its default CPU schedule.

The packed float convolution (:mod:`.conv`), the integer convolution (:mod:`.int8`) and the
default schedule (:mod:`.schedule`) all build on these; none of those modules calls
another's private helpers. Nothing here imports tvm at module level.
"""

from __future__ import annotations

from typing import Any

# Names of the packed convolution's accumulator block and its write-back block (the
# float and the integer kernel use the same two, so one schedule serves both).
ACC_NAME = "conv2d_nhwc_packed"
OUT_NAME = "conv2d_nhwc_packed_out"
# Largest fraction of padding pixels a register tile may add before a smaller tile is preferred.
MAX_PIXEL_WASTE = 0.08
# Vector width (elements) of the innermost loop of padding/elementwise passes.
INJECTIVE_VECTOR = 16
DATA_PAR, COMM_REDUCE = 0, 2  # tvm IterVar kinds


def static_shape(sinfo: Any) -> list[int] | None:
    """The static shape of a Relax struct info, or None when any dimension is symbolic."""
    from tvm import tirx

    shape = getattr(sinfo, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(v, tirx.IntImm) for v in values):
        return None
    return [int(v.value) for v in values]


def iter_types(sch: Any, block: Any) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def largest_divisor(n: int, limit: int) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def parallelize(sch: Any, loops: list[Any]) -> None:
    """Fuse ``loops`` (outermost first) and run the result in parallel if it has >= 2 iterations."""
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if (extent(sch, fused) or 0) >= 2:
        sch.parallel(fused)


def siblings(sch: Any, block: Any) -> tuple[list[Any], list[Any]]:
    """Blocks of the root scope before and after ``block``, in program order."""
    children = list(sch.get_child_blocks(sch.get_sblock("root")))
    names = [sch.get(b).name_hint for b in children]
    i = names.index(sch.get(block).name_hint)
    return children[:i], children[i + 1 :]


def schedule_injective(sch: Any, blocks: list[Any]) -> None:
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
            parallelize(sch, loops[:-1])
            vectorize_inner(sch, loops[-1])
        elif loops and (extent(sch, loops[0]) or 0) >= 64:
            outer, inner = sch.split(loops[0], factors=[None, 16])
            sch.parallel(outer)
            vectorize_inner(sch, inner)


def vectorize_inner(sch: Any, loop: Any) -> None:
    """Vectorize (a 4..16-wide inner part of) ``loop`` where that is possible; else leave it."""
    ext = extent(sch, loop) or 0
    lanes = largest_divisor(ext, INJECTIVE_VECTOR)
    if lanes < 4:
        return
    try:
        inner = sch.split(loop, factors=[None, lanes])[1] if lanes < ext else loop
        sch.vectorize(inner)
    except Exception:  # noqa: BLE001 - e.g. an opaque access: stay scalar
        pass


def fold_epilogues(sch: Any, writer: Any) -> None:
    """Reverse-inline the elementwise blocks after ``writer`` (bias, residual, ReLU) into it."""
    for epi in siblings(sch, writer)[1]:
        try:
            sch.reverse_compute_inline(epi)
        except Exception:  # noqa: BLE001 - not inlinable: give it its own parallel loop
            schedule_injective(sch, [epi])


def vectorize_tile(sch: Any, loops: Any) -> None:
    """Unroll the second-innermost loop and vectorize the innermost loop of a tile."""
    loops = list(loops)
    if len(loops) >= 2:
        sch.unroll(loops[-2])
    if loops and (extent(sch, loops[-1]) or 0) > 1:
        sch.vectorize(loops[-1])
