"""The fallback's rounds (quantize/fallback.py::_fall_back) against a scripted accuracy table: a layer whose float
copy makes the drop worse is quantized again, tried once more only when every other candidate has been tried, and
the result is the best accepted state, never the last evaluation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeres.quantize import fallback

DROPS = {frozenset(k): v for k, v in {"": 5.0, "a": 6.0, "b": 3.0, "bc": 0.2, "bd": 4.0, "ab": 4.5, "abd": 0.1}.items()}


class Cal:
    method, bias = "minmax", {}
    options = SimpleNamespace(equalize=False)

    def nodes(self):
        return ["a", "b", "c", "d"]

    def build(self, excluded):
        return tuple(excluded)


class Ev:
    def score(self, model):
        return DROPS[frozenset(model)]

    def report(self, drop, *, max_drop, seconds, context):
        return SimpleNamespace(drop_top1=drop, passed=drop <= max_drop, context=context)


def run(monkeypatch, ranking, max_rounds=None):
    monkeypatch.setattr(fallback, "_rank", lambda cal, ev, candidates, rank: [(n, 1.0) for n in ranking])
    said: list[str] = []
    res = fallback._fall_back(Cal(), Ev(), [], max_drop=0.3, step=1, max_rounds=max_rounds, rank="proxy",
                              fallback_precision="fp32", say=said.append)
    return res, said


def test_a_layer_that_makes_it_worse_is_quantized_again(monkeypatch):
    res, said = run(monkeypatch, ["a", "b", "c", "d"])
    assert res.passed and res.fallback_layers == ("b", "c") and res.drop_top1 == pytest.approx(0.2)
    assert [r.drop_top1 for r in res.reports] == [5.0, 6.0, 3.0, 0.2] and res.rounds == 3
    assert any("a float makes it worse" in s for s in said)


def test_deferred_layers_are_kept_float_when_nothing_else_is_left(monkeypatch):
    res, _ = run(monkeypatch, ["a", "b", "d"])  # c is not a candidate here: only b + d + a meets the bound
    # a (worse) and d (worse with b) are deferred, then kept float in that order: all three meet the bound
    assert res.passed and res.fallback_layers == ("b", "a", "d") and res.drop_top1 == pytest.approx(0.1)
    assert [r.drop_top1 for r in res.reports] == [5.0, 6.0, 3.0, 4.0, 4.5, 0.1]


def test_the_result_is_the_best_accepted_state_not_the_last_evaluation(monkeypatch):
    res, _ = run(monkeypatch, ["b", "a", "c"], max_rounds=2)  # round 2 (a) is worse and undone; out of rounds
    assert not res.passed and res.fallback_layers == ("b",) and res.drop_top1 == pytest.approx(3.0)
    assert fallback._regression(res).args[0].startswith("top-1 drop is still 3.00 points")
