"""``edgeres report BUNDLE --html FILE``: one self-contained HTML page about a bundle.

The page holds the manifest summary (model, task, target, precision, preprocessing, versions,
file hashes), accuracy of the artifact against FP32 (top-1/top-5, the CI gates, per-class
accuracy and confusion matrices; a feature bundle: cosine and relative error per output),
latency against ONNX Runtime, and the calibration choice with its debug plots. Numbers come
from the bundle (its ``report.json``, ``bench.json`` when present) or are measured when asked
(``data``: validate now; ``bench``: time now). CSS is inline and charts are base64 PNGs: the
file refers to nothing outside itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeres.bundle import REPORT, Bundle, load_bundle
from edgeres.errors import InputError
from edgeres.fileio import atomic_path
from edgeres.html_page import Raw, badge, card, code, esc, img, kv_table, note, page, pct, table
from edgeres.html_sections import accuracy_section, calibration_section, features_section, gates_table
from edgeres.reports import report_from_dict
from edgeres.similarity import FeatureReport

BENCH_FILE = "bench.json"  # `edgeres bench BUNDLE --json BUNDLE/bench.json` puts it where the report finds it
SENSITIVITY_FILE = "sensitivity.json"  # likewise `edgeres sensitivity ... --json BUNDLE/sensitivity.json`
LATENCY_PEERS = ("artifact", "onnxruntime-fp32", "onnxruntime-int8")


@dataclass
class ReportData:
    """Everything the page shows, gathered before any HTML is written."""

    bundle: Bundle
    report: Any  # AccuracyReport, FeatureReport or None
    report_source: str
    latency: dict[str, Any] | None
    calibration: dict[str, Any] | None
    sensitivity: dict[str, Any] | None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise InputError(f"{what} {path} does not exist; check the path") from e
    except (OSError, ValueError) as e:
        raise InputError(f"{what} {path} is not valid JSON ({e}); write it again") from e
    if not isinstance(d, dict):
        raise InputError(f"{what} {path} is not a JSON object; write it again")
    return d


def gather(bundle: str | os.PathLike | Bundle, *, data: str | None = None, limit: int | None = None,
           bench: bool = False, bench_json: str | os.PathLike | None = None,
           sensitivity: str | os.PathLike | None = None, repeats: int = 30) -> ReportData:
    """Load or measure what the page shows (validation with ``data``, latency with ``bench``)."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if sensitivity is None and (b.root / SENSITIVITY_FILE).is_file():
        sensitivity = b.root / SENSITIVITY_FILE
    sens = _read_json(Path(sensitivity), "--sensitivity") if sensitivity else None
    if sens is not None and not isinstance(sens.get("rows"), list):
        raise InputError(f"--sensitivity {sensitivity} is not from `edgeres sensitivity --json` (no rows); write it "
                         "with that command")
    bench_rec = _read_json(Path(bench_json), "--bench-json") if bench_json else None
    if bench_rec is not None and not isinstance(bench_rec.get("median_ms"), dict):
        raise InputError(f"--bench-json {bench_json} is not from `edgeres bench --json` (no median_ms); write it "
                         "with that command")
    if data is not None:
        from edgeres.pipeline import validate_bundle

        report, source = validate_bundle(b, data, limit=limit, verify=False), f"measured now on {data}"
    elif (b.root / REPORT).is_file():
        try:
            report = report_from_dict(_read_json(b.root / REPORT, "report"))
        except (KeyError, TypeError) as e:
            raise InputError(f"{b.root / REPORT} is not an edgeres report ({e!r}); pass --data DIR") from e
        source = f"the bundle's {REPORT} (data {report.context.get('data', '?')})"
    else:
        report, source = None, ""
    if bench:
        from edgeres.latency import cpu_name, measure_latency

        med = measure_latency(b.root, LATENCY_PEERS, repeats=repeats)
        bench_rec = {"median_ms": med, "cpu": cpu_name(), "batch_size": 1, "repeats": repeats,
                     "threads": os.cpu_count(), "source": "measured now"}
    elif bench_rec is None and (b.root / BENCH_FILE).is_file():
        bench_rec = {**_read_json(b.root / BENCH_FILE, "bench"), "source": f"the bundle's {BENCH_FILE}"}
    elif bench_rec is not None:
        bench_rec = {**bench_rec, "source": str(bench_json)}
    calib = None
    cache = b.manifest.get("calibration_cache")
    if cache and (b.root / cache).is_file():
        calib = _read_json(b.root / cache, "calibration cache")
    return ReportData(b, report, source, bench_rec, calib, sens)


def _size(p: Path) -> str:
    try:
        n = p.stat().st_size
    except OSError:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def manifest_section(d: ReportData) -> str:
    m, b = d.bundle.manifest, d.bundle
    pre, model, tgt = m.get("preprocessing", {}), m.get("model", {}), m.get("target", {})
    art = m.get("artifact") or {}
    names = pre.get("class_names") or []
    shown = ", ".join(names[:12]) + (f", … ({len(names)} classes)" if len(names) > 12 else "")
    info = art.get("info", {})
    model_rows = [
        ("model", model.get("name")), ("task", b.task.describe()), ("source", code(model.get("source", "?"))),
        ("source sha256", code(model["sha256"]) if model.get("sha256") else None),
        ("export parity", f"max |ONNX Runtime − PyTorch| {model['max_abs_diff']:.2e}"
         if isinstance(model.get("max_abs_diff"), (int, float)) else None),
        ("target", f"{tgt.get('name')} — {tgt.get('description', '')}"),
        ("backend / arch", f"{tgt.get('backend')} / {tgt.get('arch')} ({tgt.get('device')})"),
        ("precision", m.get("precision")), ("created", m.get("created")),
        ("input", f"{'x'.join(map(str, pre.get('input_size', [])))}, resize {pre.get('resize') or 'none'}, "
                  f"mean {pre.get('mean')}, std {pre.get('std')}"),
        ("classes", shown or None),
        ("artifact", f"{art.get('backend')}: {art.get('file')} (compiled in {art.get('compile_seconds', 0):.1f} s)"
         if art else "none built here (see recipe.json: build it on the device)"),
        ("artifact notes", info.get("int8_note")),
    ]
    versions = [(k, v) for k, v in (m.get("versions") or {}).items() if v]
    files = [(code(rel), _size(b.root / rel), code(digest[:16] + "…")) for rel, digest in sorted(m.get("files", {}).items())]
    timings = [(k, f"{v:.1f}") for k, v in (m.get("timings") or {}).items()]
    return (kv_table(model_rows)
            + '<div class="grid2"><div><h3>Tool versions</h3>' + table(["tool", "version"], versions)
            + "<h3>Stage times</h3>" + table(["stage", "seconds"], timings, num_cols=[1]) + "</div>"
            + "<div><h3>Files (sha256, verified on load)</h3>" + table(["file", "size", "sha256"], files, num_cols=[1])
            + "</div></div>")


def latency_section(d: ReportData) -> str:
    rec = d.latency
    if not rec:
        return note("Latency not measured: run `edgeres report BUNDLE --html FILE --bench`, or "
                    f"`edgeres bench BUNDLE --json BUNDLE/{BENCH_FILE}` first.")
    from edgeres import report_charts

    med = {k: float(v) for k, v in rec.get("median_ms", {}).items()}
    base = med.get("onnxruntime-fp32")
    rows = []
    for k, v in med.items():
        if base and k != "onnxruntime-fp32":
            ratio = base / v
            rel = Raw(f'<span class="{"better" if ratio >= 1 else "worse"}">'
                      f'{esc(f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower")}</span>')
        else:
            rel = "reference" if k == "onnxruntime-fp32" else "–"
        rows.append((k, f"{v:.3f}", rel))
    facts = (f"batch {rec.get('batch_size', 1)}, median of {rec.get('repeats', '?')} runs, {rec.get('threads', '?')} "
             f"threads on {rec.get('cpu', 'an unnamed CPU')} ({rec.get('source', '')})")
    other = rec.get("bundle")
    if other and Path(other).resolve() != d.bundle.root.resolve():
        facts += f"; measured on the bundle {other}, not this one"
    chart = report_charts.hbars(list(med), list(med.values()), xlabel="median latency (ms), lower is better",
                                fmt="{:.3f} ms")
    return (f"<p>{esc(facts)}</p>" + table(["runner", "median ms", "vs ONNX Runtime FP32"], rows, num_cols=[1])
            + img(chart, "latency chart", missing=_no_charts()))


def _no_charts() -> str:
    return "Charts need matplotlib: pip install 'edgeres[plot]'."


def _cards(d: ReportData) -> str:
    r, cards = d.report, []
    if isinstance(r, FeatureReport):
        w = r.worst
        cards.append(card("worst output cosine", f"{w.mean_cosine:.4f}", f"{w.name}, vs FP32 on {r.num_images} images"))
        cards.append(card("outputs", str(len(r.outputs)), ", ".join(o.name for o in r.outputs)))
    elif r is not None:
        cards.append(card("top-1 FP32 → artifact", f"{pct(r.artifact.top1)}", f"FP32 {pct(r.reference.top1)}, "
                          f"drop {r.drop_top1:+.2f} points"))
        cards.append(card("top-5 artifact", pct(r.artifact.top5), f"drop {r.drop_top5:+.2f} points"))
        cards.append(card("top-1 agreement", pct(r.agreement_top1), f"{r.num_images} images"))
    med = (d.latency or {}).get("median_ms", {})
    if "artifact" in med:
        base = med.get("onnxruntime-fp32")
        sub = f"ONNX Runtime FP32 {base:.3f} ms" if base else ""
        cards.append(card("latency, batch 1", f"{med['artifact']:.3f} ms", sub))
    return "".join(cards)


def build_html(d: ReportData) -> str:
    """The page for ``d`` (a string; nothing outside it is referenced)."""
    from edgeres import __version__
    from edgeres.gates import failed, report_gates

    b, m = d.bundle, d.bundle.manifest
    gates = report_gates(d.report) if d.report is not None else []
    verdict = (badge("skipped", "not validated") if d.report is None else
               badge("failed", "FAILED") if failed(gates) else badge("passed", "PASSED"))
    model = m.get("model", {}).get("name", "model")
    title = f"{model} → {b.target_name} ({b.precision})"
    sections = [("manifest", "Manifest", manifest_section(d))]
    if b.task.is_features:
        sections.append(("features", "Feature outputs vs FP32", features_section(d.report, b.task, d.report_source)))
    else:
        sections.append(("accuracy", "Accuracy: FP32 vs artifact", accuracy_section(d.report, d.report_source, b.class_names)))
    if gates:
        sections.append(("gates", "CI gates", gates_table(gates)))
    sections.append(("latency", "Latency vs ONNX Runtime", latency_section(d)))
    sections.append(("calibration", "Calibration", calibration_section(m, d.calibration, d.sensitivity)))
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return page(f"edgeres report — {title}", title,
                f"{b.task.describe()} · bundle {b.root} · edgeres {m.get('versions', {}).get('edgeres', '?')}",
                verdict, _cards(d), sections, f"Generated by edgeres {__version__} at {when}.")


def write_html_report(bundle: str | os.PathLike | Bundle, out: str | os.PathLike, **kw: Any) -> Path:
    """Gather (see :func:`gather` for ``kw``) and write the page to ``out`` atomically."""
    text = build_html(gather(bundle, **kw))
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


__all__ = ["BENCH_FILE", "SENSITIVITY_FILE", "ReportData", "build_html", "gather", "write_html_report"]
