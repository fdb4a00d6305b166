"""A validation report of either kind, as the rest of edgeres handles it: read from JSON, the bundle
manifest's ``validation`` record, the one-line message of a regression.

An :class:`~edgeres.evaluate.AccuracyReport` (a classifier: top-1/top-5 against FP32) or a
:class:`~edgeres.similarity.FeatureReport` (a feature extractor: cosine per output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeres.bundle import REPORT
from edgeres.evaluate import AccuracyReport
from edgeres.similarity import FeatureReport


def report_from_dict(d: dict[str, Any]) -> Any:
    """An AccuracyReport or a FeatureReport, as the record's ``task`` says (none: accuracy)."""
    if d.get("task") == "features":
        return FeatureReport.from_dict(d)
    return AccuracyReport.from_dict(d)


def validation_record(report: Any, data: str | None) -> dict[str, Any] | None:
    """The manifest's ``validation`` entry for an AccuracyReport or a FeatureReport."""
    if report is None:
        return None
    if isinstance(report, AccuracyReport):
        return {"report": REPORT, "passed": report.passed, "drop_top1": report.drop_top1, "data": data}
    return {"report": REPORT, "passed": report.passed, "min_cosine": report.min_cosine,
            "worst_cosine": report.worst.mean_cosine, "data": data}


def regression_message(report: Any, out: Path) -> str:
    """The one-line AccuracyRegression message for a failed report of the bundle ``out``."""
    hint = "try another --method, more --num-calib images, or --precision fp32"
    if isinstance(report, AccuracyReport):
        hint = f"find the layer with `edgeres debug {out} --data DIR`, {hint}"
        return (f"top-1 dropped {report.drop_top1:.2f} points (limit {report.max_drop}); bundle written to {out} "
                f"with the failing report — {hint}")
    w = report.worst
    return (f"feature output {w.name} has mean cosine {w.mean_cosine:.4f} against FP32, below --min-cosine "
            f"{report.min_cosine}; bundle written to {out} with the failing report — {hint}")


__all__ = ["regression_message", "report_from_dict", "validation_record"]
