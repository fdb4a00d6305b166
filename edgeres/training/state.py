"""Run state and outputs: where files go, per-epoch records, RNG state for exact resume.

Output layout (see :func:`output_paths`)::

    --out runs/r20.pt   ->  runs/r20.pt (best val top-1)   runs/r20.last.pt (resumable)
                            runs/r20.history.json          runs/r20.history.csv   runs/r20.history.png
    --out runs/r20      ->  runs/r20/best.pt  runs/r20/last.pt  runs/r20/history.json  runs/r20/history.csv
                            runs/r20/history.png (training curves)
"""

from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.errors import UsageError
from edgeres.fileio import atomic_path, write_json


@dataclass(frozen=True)
class OutputPaths:
    """The files a training run writes."""

    best: Path
    last: Path
    history_json: Path
    history_csv: Path
    curves_png: Path


def output_paths(out: str | os.PathLike) -> OutputPaths:
    """``out`` ending in ``.pt`` names the best checkpoint; anything else is a directory."""
    out = Path(out)
    if out.suffix == ".pt":
        if out.is_dir():
            raise UsageError(f"--out {out} is an existing directory; drop the .pt suffix or pick a file name")
        stem = out.with_suffix("")
        return OutputPaths(
            best=out,
            last=stem.with_name(stem.name + ".last.pt"),
            history_json=stem.with_name(stem.name + ".history.json"),
            history_csv=stem.with_name(stem.name + ".history.csv"),
            curves_png=stem.with_name(stem.name + ".history.png"),
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is an existing file; name a directory, or a file ending in .pt")
    return OutputPaths(out / "best.pt", out / "last.pt", out / "history.json", out / "history.csv",
                       out / "history.png")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a run. ``lr`` is the rate of the epoch's first step; losses are per-image means."""

    epoch: int  # 1-based
    iteration: int  # optimizer steps done at the end of this epoch
    lr: float
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    seconds: float
    images_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpochRecord":
        return cls(**{f.name: d[f.name] for f in fields(cls)})


def write_history(paths: OutputPaths, header: dict[str, Any], history: list[EpochRecord]) -> None:
    """Write the per-epoch log as JSON (with ``header``: model, config, data) and as CSV."""
    write_json(paths.history_json, {**header, "epochs": [r.to_dict() for r in history]})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(EpochRecord)], lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow(record.to_dict())
    with atomic_path(paths.history_csv) as tmp:
        tmp.write_text(buf.getvalue())


def write_curves(paths: OutputPaths, history: list[EpochRecord], title: str = "") -> str | None:
    """Draw loss / top-1 / LR per epoch to ``paths.curves_png``; returns a one-line note instead
    when matplotlib is not installed (the plot is optional, the run goes on)."""
    from edgeres.plots import training_curves

    try:
        training_curves(paths.curves_png, [r.to_dict() for r in history], title=title)
    except UsageError as e:
        if "matplotlib" in str(e):
            return f"note: no training-curve plot ({e})"
        raise
    return None


def capture_rng() -> dict[str, Any]:
    """The global RNG states (torch CPU/CUDA, numpy, random) as weights_only-loadable data."""
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng` (missing parts are left alone)."""
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, key, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        states = list(state["cuda"])[: torch.cuda.device_count()]
        for i, s in enumerate(states):
            torch.cuda.set_rng_state(s, i)
