"""What the CLI commands share: consoles, the accuracy table, percentages, ``--option key=value``
parsing, ``--force``, image arguments, the random-weights warning."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgeres.errors import EdgeresError, InputError, UsageError

#: Width of piped output (no terminal, no $COLUMNS): wide enough that no path or message is cut mid-line.
PIPED_WIDTH = 1000


def make_console(stderr: bool = False) -> Console:
    """A rich console; without a terminal (and without $COLUMNS) lines are never wrapped."""
    c = Console(stderr=stderr)
    if not c.is_terminal and not os.environ.get("COLUMNS"):
        c = Console(stderr=stderr, width=PIPED_WIDTH)
    return c


console = make_console()

Force = typer.Option(False, "--force", help="Replace an existing output file or symlink edgeres did not write "
                     "(a folder holding files edgeres did not write is never replaced).")


def parse_options(items: Optional[List[str]]) -> dict:
    """``--option key=value`` pairs; values parsed as TOML scalars/tables where possible (``dla_core=0``)."""
    from edgeres.compat import tomllib

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--option {item!r} must look like key=value (e.g. dla_core=0)")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out



def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def report_table(report, title: str = "Accuracy") -> Table:
    t = Table(title=title)
    for c in ("", "top-1", "top-5"):
        t.add_column(c, justify="right" if c else "left")
    t.add_row("FP32 reference (ONNX Runtime)", pct(report.reference.top1), pct(report.reference.top5))
    label = f"artifact ({report.context.get('precision', '?')}, {report.context.get('backend', '?')})"
    t.add_row(label, pct(report.artifact.top1), pct(report.artifact.top5))
    t.add_row("drop (points)", f"{report.drop_top1:+.2f}", f"{report.drop_top5:+.2f}")
    t.caption = (f"{report.num_images} images · top-1 agreement {pct(report.agreement_top1)} · "
                 f"mean logit cosine {report.mean_cosine:.4f} · max drop {report.max_drop} · "
                 f"{'PASSED' if report.passed else 'FAILED'}"
                 + (f" · protocol: {report.context['protocol']}" if report.context.get("protocol") else ""))
    return t


def feature_table(report, title: str = "Feature outputs vs FP32") -> Table:
    t = Table(title=title)
    for c in ("output", "shape", "mean cosine", "worst image", "relative error", "max |diff|"):
        t.add_column(c, justify="left" if c in ("output", "shape") else "right")
    for o in report.outputs:
        t.add_row(o.name, "x".join(map(str, o.shape)), f"{o.mean_cosine:.4f}", f"{o.min_cosine:.4f}",
                  f"{o.rel_error:.4f}", f"{o.max_abs_error:.4g}")
    ctx = report.context
    t.caption = (f"{report.num_images} images · {ctx.get('precision', '?')}, {ctx.get('backend', '?')} · "
                 f"min cosine {report.min_cosine} · {'PASSED' if report.passed else 'FAILED'}")
    return t


def any_report_table(report) -> Table:
    """:func:`report_table` for an AccuracyReport, :func:`feature_table` for a FeatureReport."""
    from edgeres.similarity import FeatureReport

    return feature_table(report) if isinstance(report, FeatureReport) else report_table(report)


def print_bundle_report(bundle: Path) -> None:
    from edgeres.bundle import REPORT
    from edgeres.reports import report_from_dict

    path = Path(bundle) / REPORT
    if path.is_file():
        console.print(any_report_table(report_from_dict(json.loads(path.read_text()))))


def expand_images(paths: List[Path]) -> List[Path]:
    """Image arguments: files as given, a folder as its images (recursively, sorted)."""
    from edgeres.data.folder import list_images

    out: List[Path] = []
    for p in paths:
        if p.is_dir():
            images, others = list_images(p)
            if not images:
                hint = f" (it holds {len(others)} other files)" if others else ""
                raise InputError(f"folder {p} holds no images{hint}; pass image files (.png, .jpg, ...) or a folder "
                                 "of them")
            out += images
        else:
            out.append(p)
    return out


def warn_random_weights(bundle: Path) -> None:
    """Warn (one line) when ``bundle`` was compiled from ``--weights random``."""
    from edgeres.bundle import load_bundle

    try:
        b = load_bundle(bundle, verify=False)
    except EdgeresError:
        return  # the command itself reports what is wrong with the bundle
    if b.random_weights:
        warnings.warn(f"bundle {bundle} was compiled with --weights random: its predictions and accuracy mean "
                      "nothing (use it for latency only)", UserWarning, stacklevel=2)


def speed_vs(ms: float, base_ms: float | None) -> str:
    """How ``ms`` compares with ``base_ms``: '1.45x slower', '2.10x faster', 'same'."""
    if not base_ms or not ms:
        return "-"
    ratio = ms / base_ms
    if abs(ratio - 1.0) < 0.005:
        return "same"
    return f"{ratio:.2f}x slower" if ratio > 1 else f"{1 / ratio:.2f}x faster"
