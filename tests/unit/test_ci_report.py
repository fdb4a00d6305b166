"""CI outputs of ``edgeres validate``: JUnit XML (one test case per gate) and the Markdown summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgeres.ci_report import junit_xml, summary_markdown, write_junit, write_summary
from edgeres.evaluate import compare
from edgeres.gates import accuracy_gates, feature_gates, selftest_gate
from edgeres.similarity import compare_features


def _report(max_drop: float):
    """100 images of 10 classes: FP32 right on all of them, the artifact wrong on the first 25
    (top-1 drop exactly 25 points; top-5 drop 0: the label is its second choice)."""
    y = np.arange(100) % 10
    ref = np.eye(10, dtype=np.float32)[y] * 5.0
    art = ref.copy()
    art[np.arange(25), (y[:25] + 1) % 10] = 9.0
    return compare(lambda x: ref[x[:, 0, 0, 0].astype(int)], lambda x: art[x[:, 0, 0, 0].astype(int)],
                   [(np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1), y)], max_drop=max_drop,
                   context={"model": "m", "target": "t", "precision": "int8", "backend": "b", "data": "d"})


def _suite(data: bytes) -> tuple[ET.Element, ET.Element]:
    """Parse and check the de-facto JUnit schema: testsuites > testsuite > testcase (> failure | skipped)."""
    root = ET.fromstring(data)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    cases = suite.findall("testcase")
    for el in (root, suite):
        assert int(el.get("tests")) == len(cases)
        assert int(el.get("failures")) == sum(c.find("failure") is not None for c in cases)
        assert int(el.get("skipped")) == sum(c.find("skipped") is not None for c in cases)
        assert int(el.get("errors")) == 0
        float(el.get("time"))
    for c in cases:
        assert c.get("name") and c.get("classname") and float(c.get("time")) >= 0
        assert set(ch.tag for ch in c) <= {"failure", "skipped", "system-out"}
    return root, suite


def test_junit_has_one_case_per_gate_with_the_numbers_in_the_failure():
    rep = _report(max_drop=1.0)
    assert rep.drop_top1 == pytest.approx(25.0) and rep.drop_top5 == pytest.approx(0.0)
    gates = accuracy_gates(rep, max_drop_top5=0.5, min_agreement=0.9)
    _, suite = _suite(junit_xml(gates, suite="edgeres validate b", classname="edgeres.validate.b",
                                properties={"model": "m"}, seconds=1.5))
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["top-1 drop", "top-5 drop", "top-1 agreement"]
    fail = cases["top-1 drop"].find("failure")
    assert fail is not None and "25.00 points" in fail.get("message") and "--max-drop 1" in fail.get("message")
    assert "100.00% -> artifact 75.00%" in fail.text
    assert cases["top-5 drop"].find("failure") is None
    agree = cases["top-1 agreement"].find("failure")
    assert agree is not None and "75.00%" in agree.get("message")
    assert suite.find("properties/property").get("name") == "model"


def test_gates_without_a_limit_are_skipped_with_their_number():
    gates = accuracy_gates(_report(max_drop=30.0))
    assert [g.status for g in gates] == ["passed", "skipped", "skipped"]
    _, suite = _suite(junit_xml(gates, suite="s", classname="c"))
    skipped = suite.findall("testcase/skipped")
    assert len(skipped) == 2 and "75.00%" in skipped[1].get("message")


def test_selftest_result_becomes_a_gate():
    class Result:  # what `edgeres selftest` returns: passed + line()
        passed = False

        def line(self):
            return "FAIL selftest of b: max abs err 0.5 (limit 0.01)"

    gates = accuracy_gates(_report(max_drop=30.0)) + [selftest_gate(Result())]
    _, suite = _suite(junit_xml(gates, suite="s", classname="c"))
    case = suite.findall("testcase")[-1]
    assert case.get("name") == "selftest" and "max abs err 0.5" in case.find("failure").get("message")


def test_feature_gates_one_per_output():
    rng = np.random.default_rng(0)

    class Runner:
        def __init__(self, noise):
            self.noise = noise

        def run_all(self, x):
            base = [np.repeat(x, 4, axis=1), x[:, :, ::2, ::2] * 3]
            return [b + n * rng.standard_normal(b.shape).astype(np.float32) for b, n in zip(base, self.noise)]

    x = rng.standard_normal((6, 2, 8, 8)).astype(np.float32)
    rep = compare_features(Runner((0, 0)), Runner((0.01, 2.0)), [x], ["c2", "c3"], min_cosine=0.9)
    gates = feature_gates(rep)
    assert [(g.name, g.status) for g in gates] == [("cosine c2", "passed"), ("cosine c3", "failed")]
    assert rep.outputs[0].shape == (8, 8, 8) and rep.outputs[0].mean_cosine > 0.999
    assert "below --min-cosine 0.9" in gates[1].message
    _suite(junit_xml(gates, suite="s", classname="c"))


def test_summary_appends_to_the_github_step_summary_and_replaces_other_files(tmp_path, monkeypatch):
    gates = accuracy_gates(_report(max_drop=1.0))
    text = summary_markdown(gates, title="edgeres validate b", facts=["`b`", "m"], table=[["", "top-1"], ["x", "1|2"]])
    lines = text.splitlines()
    assert lines[0].startswith("### edgeres validate b") and "FAILED" in lines[0]
    assert "| gate | result | measured | limit |" in lines
    row = next(ln for ln in lines if ln.startswith("| top-1 drop |"))
    assert "FAIL" in row and "+25.00 points" in row and row.count("|") == 5
    assert "| x | 1\\|2 |" in lines  # pipes in cells are escaped

    step = tmp_path / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    write_summary(step, text)
    write_summary(step, text)
    assert step.read_text() == "earlier step\n" + text + text  # appended, as GitHub expects
    other = tmp_path / "summary.md"
    other.write_text("old\n")
    write_summary(other, text)
    assert other.read_text() == text  # replaced
    write_junit(tmp_path / "j.xml", gates, suite="s", classname="c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.xml", "step_summary.md", "summary.md"]  # no temp files


def test_ci_outputs_never_replace_a_file_edgeres_did_not_write(tmp_path, monkeypatch):
    """--junit/--summary/--html: a user's file there is refused (unless --force), edgeres's own is
    replaced, the GitHub step summary (anyone's file) is appended to."""
    from edgeres.ci_report import check_output_file
    from edgeres.errors import UsageError
    from edgeres.html_page import page

    gates = accuracy_gates(_report(max_drop=1.0))
    cases = [(tmp_path / "results.xml", "--junit", lambda p: write_junit(p, gates, suite="s", classname="c")),
             (tmp_path / "notes.md", "--summary", lambda p: write_summary(p, summary_markdown(gates, title="edgeres v"))),
             (tmp_path / "index.html", "--html", lambda p: p.write_text(page("t", "h", "s", "", "", [], "f")))]
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    for path, option, write in cases:
        path.write_text("<p>a user's own file</p>\n")
        with pytest.raises(UsageError, match=f"{option} .* was not written by edgeres; pass --force"):
            check_output_file(path, option)
        check_output_file(path, option, force=True)
        write(path)
        check_output_file(path, option)  # edgeres's own file: replaced without --force
    step = tmp_path / "step.md"
    step.write_text("another step's summary\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    check_output_file(step, "--summary")
    check_output_file(tmp_path / "new" / "deeper" / "j.xml", "--junit")
    assert (tmp_path / "new" / "deeper").is_dir()
