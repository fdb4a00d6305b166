"""CI gates: what ``edgeres validate`` checks, one :class:`Gate` per check, with the numbers.

Every bundle with golden files has a ``selftest`` gate (:func:`bundle_selftest_gate`: the
artifact's outputs on the golden inputs, as ``edgeres selftest``). A classifier bundle has the
gates ``top-1 drop`` (``--max-drop``, default the target's),
``top-5 drop`` (``--max-drop-top5``) and ``top-1 agreement`` (``--min-agreement``); a gate
without a limit is reported as skipped, with its number. A feature bundle has one
``cosine <output>`` gate per output (``--min-cosine``). Other checks join the list by
passing their result to a gate function (:func:`selftest_gate`: anything with ``passed``
and ``line()``, as ``edgeres selftest`` returns). JUnit XML and the Markdown summary are
written from the list (:mod:`edgeres.ci_report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class Gate:
    name: str  # e.g. "top-1 drop"
    status: str  # passed | failed | skipped
    measured: str  # the number, formatted: "0.40 points"
    limit: str  # "<= 1.0 points", or how to set one when skipped
    message: str  # one line with the numbers: the failure message, or the skip reason
    detail: str = ""  # more numbers (JUnit system-out / failure body)
    kind: str = "AccuracyRegression"  # the failure type JUnit records

    @property
    def failed(self) -> bool:
        return self.status == FAILED


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _drop_gate(name: str, drop: float, ref: float, art: float, limit: float | None, option: str,
               images: int) -> Gate:
    measured = f"{drop:+.2f} points"
    detail = f"FP32 {_pct(ref)} -> artifact {_pct(art)} on {images} images"
    if limit is None:
        return Gate(name, SKIPPED, measured, f"not gated (pass {option})",
                    f"not gated: {name} {drop:+.2f} points ({detail}); pass {option} POINTS to gate it", detail)
    ok = drop <= limit + 1e-9
    msg = (f"{name} {drop:.2f} points, within {option} {limit:g}" if ok else
           f"{name} {drop:.2f} points, more than {option} {limit:g} ({detail})")
    return Gate(name, PASSED if ok else FAILED, measured, f"<= {limit:g} points", msg, detail)


def accuracy_gates(report: Any, *, max_drop_top5: float | None = None,
                   min_agreement: float | None = None) -> list[Gate]:
    """The gates of an :class:`~edgeres.evaluate.AccuracyReport` (top-1 limit: its ``max_drop``)."""
    r = report
    gates = [
        _drop_gate("top-1 drop", r.drop_top1, r.reference.top1, r.artifact.top1, r.max_drop, "--max-drop",
                   r.num_images),
        _drop_gate("top-5 drop", r.drop_top5, r.reference.top5, r.artifact.top5, max_drop_top5, "--max-drop-top5",
                   r.num_images),
    ]
    agree = r.agreement_top1
    detail = (f"artifact and FP32 predict the same class on {_pct(agree)} of {r.num_images} images; "
              f"mean logit cosine {r.mean_cosine:.4f}")
    if min_agreement is None:
        gates.append(Gate("top-1 agreement", SKIPPED, _pct(agree), "not gated (pass --min-agreement)",
                          f"not gated: top-1 agreement {_pct(agree)}; pass --min-agreement FRACTION to gate it",
                          detail))
    else:
        ok = agree >= min_agreement - 1e-12
        msg = (f"top-1 agreement {_pct(agree)}, at least --min-agreement {min_agreement:g}" if ok else
               f"top-1 agreement {_pct(agree)}, below --min-agreement {min_agreement:g} ({detail})")
        gates.append(Gate("top-1 agreement", PASSED if ok else FAILED, _pct(agree), f">= {_pct(min_agreement)}",
                          msg, detail))
    return gates


def feature_gates(report: Any) -> list[Gate]:
    """One gate per output of a :class:`~edgeres.similarity.FeatureReport` (mean cosine >= its ``min_cosine``)."""
    gates = []
    for o in report.outputs:
        measured = f"{o.mean_cosine:.4f}"
        detail = (f"{o.name} {'x'.join(map(str, o.shape))}: mean cosine {o.mean_cosine:.4f} (worst image "
                  f"{o.min_cosine:.4f}), relative error {o.rel_error:.4f}, max |diff| {o.max_abs_error:.4g} "
                  f"on {report.num_images} images")
        if report.min_cosine is None:
            gates.append(Gate(f"cosine {o.name}", SKIPPED, measured, "not gated (pass --min-cosine)",
                              f"not gated: {detail}", detail))
            continue
        ok = o.mean_cosine >= report.min_cosine - 1e-12
        msg = (f"{o.name}: mean cosine {o.mean_cosine:.4f}, at least --min-cosine {report.min_cosine:g}" if ok else
               f"{o.name}: mean cosine {o.mean_cosine:.4f}, below --min-cosine {report.min_cosine:g} "
               f"(relative error {o.rel_error:.4f}, worst image {o.min_cosine:.4f})")
        gates.append(Gate(f"cosine {o.name}", PASSED if ok else FAILED, measured, f">= {report.min_cosine:g}", msg,
                          detail))
    return gates


def selftest_gate(result: Any) -> Gate:
    """The bundle's golden self-test as a gate: ``result`` has ``passed`` and ``line()``."""
    line = str(result.line())
    return Gate("selftest", PASSED if result.passed else FAILED, "pass" if result.passed else "FAIL",
                "golden outputs within tolerance", line, line, kind="SelftestFailure")


def bundle_selftest_gate(bundle: Any) -> Gate | None:
    """The golden self-test of a loaded bundle as a gate (None when the bundle has no golden files);
    skipped, with the reason, when its artifact cannot run on this machine."""
    if not bundle.manifest.get("golden"):
        return None
    from edgeres.errors import BackendUnavailable
    from edgeres.selftest import run_selftest

    try:
        return selftest_gate(run_selftest(bundle))
    except BackendUnavailable as e:
        return Gate("selftest", SKIPPED, "not run", "golden outputs within tolerance", f"not run here: {e}", str(e),
                    kind="SelftestFailure")


def report_gates(report: Any, **limits: Any) -> list[Gate]:
    """:func:`feature_gates` for a FeatureReport, else :func:`accuracy_gates` (``limits``: its keywords)."""
    from edgeres.similarity import FeatureReport

    if isinstance(report, FeatureReport):
        return feature_gates(report)
    return accuracy_gates(report, **limits)


def failed(gates: Sequence[Gate]) -> list[Gate]:
    return [g for g in gates if g.failed]


__all__ = ["FAILED", "PASSED", "SKIPPED", "Gate", "accuracy_gates", "bundle_selftest_gate", "failed", "feature_gates", "report_gates",
           "selftest_gate"]
