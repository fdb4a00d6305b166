"""Building blocks of a self-contained HTML page: inline CSS, escaped tables, base64 PNG images.

Nothing here refers to anything outside the page: no scripts, no style sheets, no fonts, no
URLs; images are ``data:image/png;base64`` URIs and links are in-page anchors.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Iterable, Sequence

CSS = """
* { box-sizing: border-box; }
body { margin:0; background:#f5f7fa; color:#1d2430;
       font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1120px; margin:0 auto; padding:24px 28px 48px; }
header { display:flex; align-items:center; justify-content:space-between; gap:16px; flex-wrap:wrap;
         border-bottom:1px solid #dfe3ea; padding-bottom:14px; margin-bottom:14px; }
h1 { font-size:22px; margin:0; }
h1 small { display:block; font-size:13px; font-weight:normal; color:#5b6677; margin-top:4px; }
h2 { font-size:17px; margin:0 0 12px; padding-bottom:6px; border-bottom:1px solid #dfe3ea; }
h3 { font-size:14px; margin:18px 0 8px; color:#5b6677; text-transform:uppercase; letter-spacing:.04em; }
nav { display:flex; gap:14px; flex-wrap:wrap; margin:0 0 18px; font-size:13px; }
nav a { color:#2f6fb3; text-decoration:none; }
section { background:#ffffff; border:1px solid #dfe3ea; border-radius:8px; padding:18px 20px;
          margin:0 0 18px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(170px, 1fr)); gap:12px; margin:0 0 18px; }
.card { background:#ffffff; border:1px solid #dfe3ea; border-radius:8px; padding:12px 14px; }
.card .label { font-size:12px; color:#5b6677; }
.card .value { font-size:22px; font-weight:600; margin-top:2px; }
.card .sub { font-size:12px; color:#5b6677; }
.badge { display:inline-block; white-space:nowrap; padding:4px 12px; border-radius:999px; font-weight:600; font-size:13px; }
.pass { color:#1e7e44; background:#e3f4ea; }
.fail { color:#b42318; background:#fdeceb; }
.skip { color:#7a5d00; background:#fff6d6; }
table { border-collapse:collapse; width:100%; margin:4px 0 8px; font-size:13px; }
th, td { text-align:left; padding:5px 10px; border-bottom:1px solid #dfe3ea; vertical-align:top; }
th { background:#f0f3f7; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:nth-child(even) td { background:#fafbfd; }
table.kv th { width:28%; background:transparent; font-weight:normal; color:#5b6677; }
code, .mono { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12px;
              overflow-wrap:anywhere; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(420px, 1fr)); gap:18px; }
figure { margin:10px 0; text-align:center; }
figure img { max-width:100%; height:auto; border:1px solid #dfe3ea; border-radius:6px; background:#fff; }
figcaption { font-size:12px; color:#5b6677; margin-top:4px; }
.note { color:#5b6677; font-size:13px; background:#f7f8fb; border-left:3px solid #dfe3ea;
        padding:6px 10px; margin:8px 0; }
.worse { color:#b42318; } .better { color:#1e7e44; }
footer { color:#5b6677; font-size:12px; text-align:center; margin-top:24px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def cell(value: Any, num: bool = False, raw: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("num" if num else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{value if raw else esc(value)}</td>"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], num_cols: Sequence[int] = ()) -> str:
    """A table; cells are escaped unless given as ``Raw`` strings; ``num_cols`` align right."""
    out = ["<table><thead><tr>"]
    out += [f'<th{" class=num" if i in num_cols else ""}>{esc(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell(v, i in num_cols, isinstance(v, Raw)) for i, v in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def kv_table(pairs: Iterable[tuple[str, Any]]) -> str:
    """Two-column key/value table (None values left out)."""
    rows = [f"<tr><th>{esc(k)}</th>{cell(v, raw=isinstance(v, Raw))}</tr>" for k, v in pairs if v is not None]
    return '<table class="kv"><tbody>' + "".join(rows) + "</tbody></table>"


class Raw(str):
    """HTML that is already safe (built from escaped parts)."""


def code(value: Any) -> Raw:
    return Raw(f"<code>{esc(value)}</code>")


def badge(status: str, text: str | None = None) -> Raw:
    cls = {"passed": "pass", "failed": "fail"}.get(status, "skip")
    return Raw(f'<span class="badge {cls}">{esc(text or status)}</span>')


def img(png: bytes | None, alt: str, caption: str = "", missing: str = "") -> str:
    """A base64-embedded PNG figure; a note (``missing``) when there is no image."""
    if png is None:
        return note(missing) if missing else ""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def card(label: str, value: str, sub: str = "") -> str:
    return (f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            + (f'<div class="sub">{esc(sub)}</div>' if sub else "") + "</div>")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, heading: str, subtitle: str, verdict: Raw | str, cards: str, sections: Sequence[tuple[str, str, str]],
         footer: str) -> str:
    """The whole document: ``sections`` are (anchor, title, body HTML)."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="generator" content="edgeres">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{esc(heading)}<small>{esc(subtitle)}</small></h1>{verdict}</header>"
        f"<nav>{nav}</nav>"
        + (f'<div class="cards">{cards}</div>' if cards else "")
        + body + f"<footer>{esc(footer)}</footer></main></body></html>\n"
    )


__all__ = ["CSS", "Raw", "badge", "card", "code", "esc", "img", "kv_table", "note", "page", "pct", "section", "table"]
