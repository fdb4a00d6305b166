"""PNG charts (matplotlib, imported lazily; the ``plot`` extra).

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing here
touches pyplot's global state or needs a display, and files are written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from edgeres.errors import UsageError
from edgeres import __version__
from edgeres.fileio import atomic_path

#: PNG text chunk that marks a plot as written by edgeres (so a later run may replace it).
PNG_METADATA = {"Software": f"edgeres {__version__}"}

__all__ = ["barh_panels", "error_curves", "short_label", "training_curves"]


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError("plots need matplotlib, which is not installed; pip install 'edgeres[plot]'") from e
    return Figure, FigureCanvasAgg


def short_label(name: str, width: int = 48) -> str:
    """A node name made readable: ``/layer1/layer1.0/conv2/Conv`` -> ``layer1.0/conv2 (Conv)``, cut to ``width``."""
    parts = [p for p in name.split("/") if p]
    if len(parts) >= 2 and parts[-1][:1].isupper():
        op = parts.pop()
        parts = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
        label = f"{'/'.join(parts)} ({op})"
    else:
        label = name
    return label if len(label) <= width else "…" + label[-(width - 1):]


def barh_panels(
    path: str | Path,
    labels: Sequence[str],
    panels: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str = "",
) -> Path:
    """Side-by-side horizontal bar charts sharing the row ``labels`` (first row on top), as a PNG.

    ``panels`` holds ``(x-axis label, one value per row)``; negative values get their
    own colour. Returns ``path``.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"plot file {path} must end in .png")
    if not labels:
        raise UsageError("nothing to plot: no rows")
    for xlabel, values in panels:
        if len(values) != len(labels):
            raise ValueError(f"panel {xlabel!r} has {len(values)} values for {len(labels)} rows")
    Figure, Canvas = _matplotlib()
    n = len(labels)
    fig = Figure(figsize=(5.0 + 4.0 * len(panels), 1.2 + 0.28 * n), layout="constrained")
    Canvas(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    ys = list(range(n))
    for ax, (xlabel, values) in zip(axes, panels):
        colours = ["#c0392b" if v > 0 else "#2980b9" for v in values]
        ax.barh(ys, values, color=colours)
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [short_label(lb) for lb in labels], fontsize=8)
    axes[0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA)
    return path


def _check_png(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"plot file {path} must end in .png")
    return path


def training_curves(path: str | Path, history: Sequence[Mapping[str, float]], *, title: str = "") -> Path:
    """Loss, top-1 and learning rate against epoch, as a three-panel PNG.

    ``history`` holds one mapping per epoch with ``epoch``, ``train_loss``, ``val_loss``,
    ``train_top1``, ``val_top1`` and ``lr`` (an :class:`~edgeres.training.state.EpochRecord`
    as a dict). Returns ``path``.
    """
    path = _check_png(path)
    if not history:
        raise UsageError("nothing to plot: the run has no finished epoch")
    Figure, Canvas = _matplotlib()
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(13.0, 3.6), layout="constrained")
    Canvas(fig)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    marker = "o" if len(epochs) <= 30 else None
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker=marker, label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], marker=marker, label="val")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in history], marker=marker, label="train")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in history], marker=marker, label="val")
    ax_acc.set_ylabel("top-1 accuracy (%)")
    ax_lr.plot(epochs, [r["lr"] for r in history], marker=marker, color="#555555")
    ax_lr.set_ylabel("learning rate (epoch start)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata=PNG_METADATA)
    return path


def error_curves(path: str | Path, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                 xlabel: str = "iteration", ylabel: str = "training error (%)", title: str = "") -> Path:
    """Line chart of several ``name -> (x values, y values)`` series on one axis, as a PNG.

    Names starting with ``plain`` are drawn dashed (the paper's plain-vs-residual figures).
    """
    path = _check_png(path)
    if not series:
        raise UsageError("nothing to plot: no series")
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    Canvas(fig)
    ax = fig.subplots()
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r} has {len(xs)} x values for {len(ys)} y values")
        ax.plot(xs, ys, linestyle="--" if name.startswith("plain") else "-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA)
    return path
