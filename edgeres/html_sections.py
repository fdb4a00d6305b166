"""Sections of the HTML bundle report (:mod:`edgeres.html_report`): accuracy, feature outputs,
CI gates and calibration. Each takes plain data and returns escaped HTML."""

from __future__ import annotations

from typing import Any, Sequence

from edgeres import report_charts
from edgeres.html_page import Raw, badge, code, esc, img, kv_table, note, pct, table

NO_CHARTS = "Charts need matplotlib: pip install 'edgeres[plot]'."
MAX_CLASS_ROWS = 30  # classes listed one by one; beyond, the 30 that lost the most accuracy
MAX_RANGE_ROWS = 40  # tensors in the calibration range chart (the most clipped)


def _change(points: float) -> Raw:
    points = round(points, 2) + 0.0  # no "-0.00"
    cls = "worse" if points < -1e-9 else "better" if points > 1e-9 else ""
    return Raw(f'<span class="{cls}">{esc(f"{points:+.2f}")}</span>')


def gates_table(gates: Sequence[Any]) -> str:
    rows = [(g.name, badge(g.status, {"passed": "pass", "failed": "FAIL", "skipped": "not gated"}[g.status]),
             g.measured, g.limit, g.message) for g in gates]
    return ("<p>What <code>edgeres validate</code> gates on (its <code>--junit</code> report has one test case per "
            "row).</p>" + table(["gate", "result", "measured", "limit", "detail"], rows, num_cols=[2]))


def accuracy_section(r: Any, source: str, names: Sequence[str] = ()) -> str:
    if r is None:
        return note("No validation report in this bundle: compile with --val DIR, or pass --data DIR to "
                    "`edgeres report` to validate now.")
    head = (f"<p>{r.num_images} labelled images; FP32 reference on ONNX Runtime, artifact on "
            f"{esc(r.context.get('backend', '?'))}. Source: {esc(source)}.</p>")
    rows = [("FP32 reference", pct(r.reference.top1), pct(r.reference.top5)),
            (f"artifact ({r.context.get('precision', '?')})", pct(r.artifact.top1), pct(r.artifact.top5)),
            ("change (points)", _change(-r.drop_top1), _change(-r.drop_top5))]
    body = head + table(["", "top-1", "top-5"], rows, num_cols=[1, 2])
    body += kv_table([("top-1 agreement", pct(r.agreement_top1)), ("mean logit cosine", f"{r.mean_cosine:.4f}"),
                      ("allowed top-1 drop", f"{r.max_drop} points" if r.max_drop is not None else "not gated")])
    names = list(names)
    return body + _per_class(r, names) + _confusion(r, names)


def _class_names(r: Any, names: list[str]) -> list[str]:
    k = len(r.per_class["count"])
    return names if len(names) == k else [str(i) for i in range(k)]


def _per_class(r: Any, names: list[str]) -> str:
    pc = r.per_class
    if not pc:
        return "<h3>Per class</h3>" + note("This report has no per-class counts (made by an older edgeres): pass "
                                           "--data DIR to `edgeres report` to measure them.")
    names = _class_names(r, names)
    count, ref, art = pc["count"], pc["reference_top1"], pc["artifact_top1"]
    idx = [i for i in range(len(count)) if count[i]]
    ref_acc = {i: ref[i] / count[i] for i in idx}
    art_acc = {i: art[i] / count[i] for i in idx}
    shown = idx
    caption = "Top-1 accuracy per class"
    if len(idx) > MAX_CLASS_ROWS:
        shown = sorted(idx, key=lambda i: art_acc[i] - ref_acc[i])[:MAX_CLASS_ROWS]
        caption = f"The {MAX_CLASS_ROWS} classes (of {len(idx)}) that lost the most top-1 accuracy"
    rows = [(names[i], count[i], pct(ref_acc[i]), pct(art_acc[i]), _change(100 * (art_acc[i] - ref_acc[i])))
            for i in shown]
    chart = report_charts.per_class([names[i] for i in shown], [ref_acc[i] for i in shown], [art_acc[i] for i in shown])
    return (f"<h3>Per class</h3><div class=\"grid2\"><div>{table(['class', 'images', 'FP32', 'artifact', 'change'], rows, num_cols=[1, 2, 3, 4])}"
            f"</div><div>{img(chart, 'per-class accuracy chart', caption, NO_CHARTS)}</div></div>")


def _confusion(r: Any, names: list[str]) -> str:
    if not r.confusion:
        if r.per_class and len(r.per_class["count"]) > 100:
            return "<h3>Confusion matrix</h3>" + note(
                f"{len(r.per_class['count'])} classes: confusion matrices are kept for up to 100 classes.")
        return ""
    names = _class_names(r, names)
    png = report_charts.confusion([("FP32 reference", r.confusion["reference"]),
                                   (f"artifact ({r.context.get('precision', '?')})", r.confusion["artifact"])], names)
    return "<h3>Confusion matrix</h3>" + img(png, "confusion matrices", "Rows: true class; columns: predicted; "
                                             "colour: fraction of the row; numbers: images.", NO_CHARTS)


def features_section(r: Any, task: Any, source: str) -> str:
    outs = [(o.name, o.stage or "–", o.stride or "–", o.channels or "–") for o in task.outputs]
    body = ("<p>A detection backbone: the artifact returns these stage outputs (inputs of a Faster R-CNN / FPN "
            "neck).</p>" + table(["output", "backbone stage", "stride", "channels"], outs, num_cols=[2, 3]))
    if r is None:
        return body + note("No comparison with FP32 yet: compile with --val DIR, or pass --data DIR to "
                           "`edgeres report` (images only, no labels needed).")
    rows = [(o.name, "x".join(map(str, o.shape)), f"{o.mean_cosine:.4f}", f"{o.min_cosine:.4f}", f"{o.rel_error:.4f}",
             f"{o.max_abs_error:.4g}") for o in r.outputs]
    gate = r.min_cosine
    chart = report_charts.hbars([o.name for o in r.outputs], [o.rel_error for o in r.outputs],
                                xlabel="relative error ||artifact − FP32|| / ||FP32||", fmt="{:.4f}",
                                highlight=[gate is not None and o.mean_cosine < gate for o in r.outputs])
    return (body + f"<h3>Against FP32 on {r.num_images} images</h3><p>Source: {esc(source)}; "
            f"artifact on {esc(r.context.get('backend', '?'))}; gate: mean cosine ≥ {esc(gate)}.</p>"
            + table(["output", "shape", "mean cosine", "worst image", "relative error", "max |diff|"], rows,
                    num_cols=[2, 3, 4, 5])
            + img(chart, "relative error per output", "Relative error of each output (red: below the cosine gate)",
                  NO_CHARTS))


def calibration_section(m: dict[str, Any], calib: dict[str, Any] | None, sens: dict[str, Any] | None) -> str:
    q = m.get("quantization")
    if not q:
        return note(f"{m.get('precision', '?').upper()} bundle: nothing was quantized.") + _sensitivity(sens)
    fb = q.get("fallback") or {}
    rows = [("method", q.get("method")), ("Q/DQ form", q.get("form")),
            ("weights", f"{'per channel' if q.get('per_channel') else 'per tensor'}, "
                        f"{'7-bit (reduce_range)' if q.get('reduce_range') else '8-bit'}"),
            ("calibration images", f"{q.get('num_calib')} from {q.get('calib_data') or 'a calibration cache'}"),
            ("quantized nodes", q.get("quantized_nodes")),
            ("calibration cache", "reused" if q.get("cache_hit") else "computed for this bundle")]
    if fb:
        kept = ", ".join(fb.get("layers") or []) or "none"
        rows += [("accuracy-aware fallback", f"plain INT8 dropped {fb.get('baseline_drop_top1', 0):.2f} points; "
                  f"after {fb.get('rounds', 0)} round(s) {fb.get('drop_top1', 0):.2f} (limit {fb.get('max_drop')})"),
                 (f"layers kept in {fb.get('precision', 'fp32')}", code(kept))]
    elif q.get("excluded"):
        rows.append(("layers kept in FP32", code(", ".join(q["excluded"]))))
    return kv_table(rows) + _ranges(q, calib) + _sensitivity(sens)


def _ranges(q: dict[str, Any], calib: dict[str, Any] | None) -> str:
    if not calib:
        return ""
    key = next((k for k in calib.get("ranges", {}) if k.startswith(f"{q.get('method')}/{q.get('form')}")), None)
    if key is None:
        return note("The calibration cache holds no ranges for this method.")
    rows = []
    for name, (lo, hi) in calib["ranges"][key].items():
        st = calib.get("tensors", {}).get(name, {})
        omin, omax = st.get("min"), st.get("max")
        if omin is None or omax is None:
            continue
        span = max(abs(omin), abs(omax))
        kept = max(abs(lo), abs(hi)) / span if span > 0 else 1.0
        rows.append((name, min(kept, 1.0), lo, hi, omin, omax))
    if not rows:
        return ""
    rows.sort(key=lambda r: r[1])
    shown = rows[:MAX_RANGE_ROWS]
    from edgeres.plots import short_label

    chart = report_charts.hbars([short_label(r[0], 40) for r in shown], [r[1] for r in shown],
                                xlabel="calibrated range / observed range (1 = nothing clipped)", fmt="{:.2f}",
                                highlight=[r[1] < 0.5 for r in shown], ref_line=1.0)
    more = f" (the {len(shown)} most clipped of {len(rows)})" if len(rows) > len(shown) else ""
    return (f"<h3>Activation ranges ({esc(key)}){esc(more)}</h3>"
            + img(chart, "calibration range chart", "How much of each tensor's observed range the INT8 range keeps; "
                  "clipping outliers is what entropy/percentile/mse calibration trade for resolution.", NO_CHARTS))


def _sensitivity(sens: dict[str, Any] | None) -> str:
    if not sens:
        return ""
    rows = list(sens.get("rows") or [])[:25]
    title = (f"{sens.get('mode', '?')}, {sens.get('method', '?')}: full INT8 drops "
             f"{float(sens.get('int8_drop_top1', 0)):.2f} points")
    table_rows = [(code(r.get("name")), r.get("op_type"), f"{float(r.get('harm_top1', 0)):+.2f}",
                   f"{float(r.get('harm_error', 0)):+.4f}") for r in rows[:10]]
    return ("<h3>Per-layer sensitivity (edgeres sensitivity)</h3>"
            + img(report_charts.sensitivity(rows, title), "per-layer sensitivity chart",
                  "What each layer gives back when kept in FP32 (fp32-one) or costs as the only INT8 layer "
                  "(int8-one); red: the layer's quantization hurts.", NO_CHARTS)
            + table(["layer", "op", "top-1 points", "logit error"], table_rows, num_cols=[2, 3]))


__all__ = ["accuracy_section", "calibration_section", "features_section", "gates_table"]
