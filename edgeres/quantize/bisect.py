"""Bisection: the smallest set of quantized layers whose return to float restores an accuracy bound.

Layers are tried in the order of a ranking (``edgeres debug`` ranks by the error each layer adds
alone). A binary search finds the shortest prefix of the ranking that meets the bound when kept
float; each of its layers is then dropped again if the bound still holds without it, so the
result is 1-minimal (no layer in it can go back to INT8 alone). Every evaluated set is recorded
with its drop: the report is visible and reproducible (same Q/DQ model, images and ranking give
the same steps). Variants are run in ONNX Runtime on the Q/DQ model (see
:func:`~edgeres.quantize.layerwise.restore`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from edgeres.quantize.evaluator import Evaluator
from edgeres.quantize.layerwise import restore


@dataclass(frozen=True)
class BisectStep:
    layers: tuple[str, ...]  # kept float
    drop_top1: float  # points vs FP32
    passed: bool
    phase: str  # "baseline", "all float", "search" or "minimize"


@dataclass
class BisectResult:
    max_drop: float
    baseline_drop: float  # the Q/DQ model as it is
    layers: tuple[str, ...]  # the minimal set kept float (empty: nothing needed, or impossible)
    drop_top1: float  # with ``layers`` float
    passed: bool
    num_images: int
    steps: list[BisectStep] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [asdict(s) for s in self.steps]
        return d


def bisect(qmodel: Any, reference: Any, ranking: Sequence[str], ev: Evaluator, max_drop: float) -> BisectResult:
    """Smallest set of ``ranking``'s layers to keep float so the top-1 drop (on ``ev``) is <= ``max_drop``."""
    steps: list[BisectStep] = []
    seen: dict[frozenset, BisectStep] = {}

    def drop(layers: Sequence[str], phase: str) -> BisectStep:
        key = frozenset(layers)
        if key not in seen:
            d = ev.score(restore(qmodel, reference, layers)).drop_top1
            seen[key] = BisectStep(tuple(layers), d, d <= max_drop + 1e-9, phase)
            steps.append(seen[key])
        return seen[key]

    base = drop((), "baseline")

    def result(layers: Sequence[str], note: str) -> BisectResult:
        s = seen[frozenset(layers)]
        return BisectResult(max_drop, base.drop_top1, tuple(layers), s.drop_top1, s.passed, ev.num_images, steps, note)

    if base.passed:
        return result((), "the Q/DQ model already meets the bound: nothing to keep float")
    everything = list(ranking)
    if not drop(everything, "all float").passed:
        return result(everything, "even with every quantized layer float the bound is not met: the loss is not "
                                  "the quantization's (check --max-drop and the data)")
    lo, hi = 0, len(everything)  # prefix of length lo fails, of length hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if drop(everything[:mid], "search").passed:
            hi = mid
        else:
            lo = mid
    chosen = everything[:hi]
    for name in reversed(everything[:hi]):
        if len(chosen) > 1:
            trial = [n for n in chosen if n != name]
            if drop(trial, "minimize").passed:
                chosen = trial
    return result(chosen, f"{len(chosen)} layer(s) kept float restore the bound; {len(steps)} variants evaluated")
