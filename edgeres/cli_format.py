"""What the CLI commands share: the accuracy table, percentages, ``--option key=value`` parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

from rich.console import Console
from rich.table import Table

from edgeres.errors import UsageError

console = Console()


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
