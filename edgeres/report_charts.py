"""The charts of ``edgeres report --html``, as PNG bytes (matplotlib, Agg canvas, no pyplot state).

Every function returns None when matplotlib is not installed (the page then says how to get
the charts: ``pip install 'edgeres[plot]'``).
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

FP32_COLOUR, ARTIFACT_COLOUR, BAD_COLOUR = "#8a9bb0", "#2f6fb3", "#c0392b"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def confusion(matrices: Sequence[tuple[str, Sequence[Sequence[int]]]], names: Sequence[str]) -> bytes | None:
    """Row-normalized confusion matrices side by side (``(title, counts[true][pred])``), counts annotated."""
    if not available() or not matrices:
        return None
    k = len(names)
    side = min(max(3.2, 0.42 * k + 1.4), 7.5)
    fig = _figure(side * len(matrices) + 0.8, side)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    im = None
    for ax, (title, counts) in zip(axes, matrices):
        m = np.asarray(counts, dtype=np.float64)
        rows = m.sum(axis=1, keepdims=True)
        frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("true class", fontsize=9)
        if k <= 30:
            ax.set_xticks(range(k), [str(n) for n in names], rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(k), [str(n) for n in names], fontsize=7)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    if m[i, j]:
                        ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=6.5,
                                color="white" if frac[i, j] > 0.55 else "#333333")
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="fraction of the true class")
    return _png(fig)


def per_class(names: Sequence[str], ref: Sequence[float], art: Sequence[float]) -> bytes | None:
    """Grouped bars: FP32 and artifact top-1 accuracy (%) per class."""
    if not available() or not names:
        return None
    n = len(names)
    fig = _figure(min(max(5.5, 0.55 * n + 1.5), 14.0), 3.4)
    ax = fig.subplots()
    x = np.arange(n)
    ax.bar(x - 0.2, [100 * v for v in ref], 0.4, label="FP32 reference", color=FP32_COLOUR)
    ax.bar(x + 0.2, [100 * v for v in art], 0.4, label="artifact", color=ARTIFACT_COLOUR)
    ax.set_xticks(x, [str(s) for s in names], rotation=45 if n > 8 else 0, ha="right" if n > 8 else "center")
    ax.set_ylabel("top-1 accuracy (%)", fontsize=9)
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    _style(ax)
    return _png(fig)


def hbars(labels: Sequence[str], values: Sequence[float], *, xlabel: str, highlight: Sequence[bool] = (),
          fmt: str = "{:.3f}", ref_line: float | None = None) -> bytes | None:
    """Horizontal bars, first label on top, each bar labelled with its value."""
    if not available() or not labels:
        return None
    n = len(labels)
    fig = _figure(7.5, 0.9 + 0.3 * n)
    ax = fig.subplots()
    colours = [BAD_COLOUR if (highlight and highlight[i]) else ARTIFACT_COLOUR for i in range(n)]
    ys = np.arange(n)
    ax.barh(ys, values, color=colours, height=0.65)
    ax.set_yticks(ys, [str(s) for s in labels], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # first label on top, no empty rows
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    top = max([abs(float(v)) for v in values] + [1e-12])
    for y, v in zip(ys, values):
        ax.text(float(v) + 0.01 * top, y, fmt.format(v), va="center", fontsize=7.5)
    ax.set_xlim(0, top * 1.15)
    if ref_line is not None:
        ax.axvline(ref_line, color="#555555", linewidth=0.8, linestyle="--")
    _style(ax)
    return _png(fig)


def sensitivity(rows: Sequence[dict[str, Any]], title: str) -> bytes | None:
    """Top-1 points and logit error each layer gives back (or costs), from ``edgeres sensitivity --json`` rows."""
    if not available() or not rows:
        return None
    from edgeres.plots import short_label

    n = len(rows)
    fig = _figure(11.0, 1.2 + 0.28 * n)
    axes = fig.subplots(1, 2, sharey=True)
    ys = np.arange(n)
    for ax, key, xlabel in ((axes[0], "harm_top1", "top-1 points"), (axes[1], "harm_error", "logit error")):
        vals = [float(r.get(key, 0.0)) for r in rows]
        ax.barh(ys, vals, color=[BAD_COLOUR if v > 0 else ARTIFACT_COLOUR for v in vals])
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        _style(ax)
    axes[0].set_yticks(ys, [short_label(str(r.get("name", "?"))) for r in rows], fontsize=7.5)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    return _png(fig)


__all__ = ["available", "confusion", "hbars", "per_class", "sensitivity"]
