"""Validation results for CI: JUnit XML (GitHub Actions, GitLab, Jenkins) and a Markdown summary.

JUnit: ``<testsuites>`` holding one ``<testsuite>`` per validated bundle, one ``<testcase>`` per
gate (:mod:`edgeres.gates`); a broken gate is a ``<failure>`` whose message carries the numbers, a
gate without a limit is ``<skipped>``. Written atomically.

Markdown: a table for ``$GITHUB_STEP_SUMMARY``. When the file is the one that variable names,
the summary is appended (GitHub joins every step's additions); any other file is replaced,
atomically.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgeres.errors import UsageError
from edgeres.fileio import atomic_path
from edgeres.gates import FAILED, SKIPPED, Gate

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
_ICONS = {"passed": "✅ pass", "failed": "❌ FAIL", "skipped": "⏭️ not gated"}


def check_output_file(path: Path | None, option: str, example: str = "edgeres.xml", *, force: bool = False) -> None:
    """Before any work: ``path`` must not be a directory, nor a file edgeres did not write (unless
    ``force``; the step summary is appended to, so it may be anyone's); its missing parent folders
    are created."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {p} is a directory; pass a file path, e.g. {option} {p / example}")
    if not is_step_summary(p):
        from edgeres.outputs import check_file_output

        check_file_output(p, option, force=force)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {p}: cannot create its folder ({e.strerror}); pass a writable path") from e


def junit_xml(gates: Sequence[Gate], *, suite: str, classname: str, properties: Mapping[str, Any] | None = None,
              seconds: float = 0.0) -> bytes:
    """The JUnit XML document (UTF-8 bytes) of one suite of ``gates``."""
    counts = {"tests": str(len(gates)), "failures": str(sum(g.status == FAILED for g in gates)), "errors": "0",
              "skipped": str(sum(g.status == SKIPPED for g in gates)), "time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "edgeres", **counts})
    ts = ET.SubElement(root, "testsuite", {
        "name": suite, **counts,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
        "hostname": platform.node() or "localhost"})
    if properties:
        props = ET.SubElement(ts, "properties")
        for k, v in properties.items():
            if v is not None:
                ET.SubElement(props, "property", {"name": str(k), "value": str(v)})
    per_case = seconds / len(gates) if gates else 0.0
    for g in gates:
        case = ET.SubElement(ts, "testcase", {"classname": classname, "name": g.name, "time": f"{per_case:.3f}"})
        if g.status == FAILED:
            fail = ET.SubElement(case, "failure", {"message": g.message, "type": g.kind})
            fail.text = g.detail or g.message
        elif g.status == SKIPPED:
            ET.SubElement(case, "skipped", {"message": g.message})
        out = ET.SubElement(case, "system-out")
        out.text = f"{g.name}: {g.measured} (limit: {g.limit})\n{g.detail}".rstrip() + "\n"
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode() + b"\n"


def write_junit(path: str | os.PathLike, gates: Sequence[Gate], **kw: Any) -> Path:
    """Write :func:`junit_xml` to ``path`` atomically."""
    path = Path(path)
    data = junit_xml(gates, **kw)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(gates: Sequence[Gate], *, title: str, facts: Sequence[str] = (),
                     table: Sequence[Sequence[Any]] = ()) -> str:
    """A Markdown section: heading with the verdict, a line of facts, the gate table, an optional
    second table (``table``: header row, then rows)."""
    verdict = "❌ FAILED" if any(g.status == FAILED for g in gates) else "✅ passed"
    lines = [f"### {title} — {verdict}", ""]
    if facts:
        lines += [" · ".join(_cell(f) for f in facts), ""]
    lines += ["| gate | result | measured | limit |", "| --- | --- | --- | --- |"]
    for g in gates:
        lines.append(f"| {_cell(g.name)} | {_ICONS.get(g.status, g.status)} | {_cell(g.measured)} | {_cell(g.limit)} |")
    failures = [g for g in gates if g.status == FAILED]
    if failures:
        lines += [""] + [f"- **{_cell(g.name)}**: {_cell(g.message)}" for g in failures]
    if table:
        head, *rows = table
        lines += ["", "| " + " | ".join(_cell(h) for h in head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n"


def is_step_summary(path: str | os.PathLike) -> bool:
    """True when ``path`` is the file ``$GITHUB_STEP_SUMMARY`` names (then it is appended to)."""
    env = os.environ.get(STEP_SUMMARY_ENV)
    if not env:
        return False
    try:
        return Path(path).resolve() == Path(env).resolve()
    except OSError:
        return False


def write_summary(path: str | os.PathLike, text: str) -> Path:
    """Append ``text`` to the GitHub step summary file; replace any other file atomically."""
    path = Path(path)
    if is_step_summary(path):
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return path
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _report_rows(report: Any) -> list[list[Any]]:
    from edgeres.similarity import FeatureReport

    if isinstance(report, FeatureReport):
        return [["output", "shape", "mean cosine", "worst image", "relative error"]] + [
            [o.name, "x".join(map(str, o.shape)), f"{o.mean_cosine:.4f}", f"{o.min_cosine:.4f}", f"{o.rel_error:.4f}"]
            for o in report.outputs]
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    return [["", "top-1", "top-5"],
            ["FP32 reference", pct(report.reference.top1), pct(report.reference.top5)],
            [f"artifact ({report.context.get('backend', '?')})", pct(report.artifact.top1), pct(report.artifact.top5)]]


def write_ci_files(report: Any, gates: Sequence[Gate], bundle: str | os.PathLike, *, junit: Path | None = None,
                   summary: Path | None = None) -> list[Path]:
    """Write the JUnit XML and/or Markdown summary of one validation; returns the files written."""
    ctx = report.context
    name = Path(bundle).name or str(bundle)
    facts = [f"`{bundle}`", *(str(ctx[k]) for k in ("model", "target", "precision", "backend") if ctx.get(k)),
             f"{report.num_images} images of `{ctx.get('data', '?')}`"]
    written = []
    if junit is not None:
        props = {"bundle": str(bundle), "images": report.num_images, **{k: ctx.get(k) for k in
                 ("model", "target", "precision", "backend", "data", "data_fingerprint")}}
        from edgeres import __version__

        props["edgeres"] = __version__
        written.append(write_junit(junit, gates, suite=f"edgeres validate {name}",
                                   classname=f"edgeres.validate.{name}", properties=props, seconds=report.seconds))
    if summary is not None:
        written.append(write_summary(summary, summary_markdown(gates, title=f"edgeres validate {name}", facts=facts,
                                                               table=_report_rows(report))))
    return written


__all__ = ["STEP_SUMMARY_ENV", "check_output_file", "is_step_summary", "junit_xml", "summary_markdown",
           "write_ci_files", "write_junit", "write_summary"]
