"""``edgeres report BUNDLE --html``: one self-contained page, checked by parsing it and, when Debian's
chromium is installed, by rendering it in a real headless browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

URL_ATTRS = {"src", "href", "action", "data", "poster", "srcset", "formaction", "background", "xlink:href", "ping"}


class Page(HTMLParser):
    """Collects what the checks need: section ids, tags, URL-valued attributes, images, text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.tags, self.urls, self.images, self.text, self.styles = [], [], [], [], [], []
        self._style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "section":
            self.ids.append(a.get("id"))
        for k, v in attrs:
            if k in URL_ATTRS and v is not None:
                self.urls.append(v)
            if k == "style":
                self.styles.append(v or "")
        if tag == "img":
            self.images.append(a)
        self._style = tag == "style"

    def handle_endtag(self, tag):
        self._style = False

    def handle_data(self, data):
        (self.styles if self._style else self.text).append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def assert_self_contained(page: Page, raw: str) -> None:
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(page.tags)
    for url in page.urls:
        assert url.startswith("data:image/png;base64,") or url.startswith("#"), url
    for css in page.styles:
        assert "url(" not in css and "@import" not in css
    assert not re.search(r"(?i)(https?:|ftp:|file:)//", raw)
    for im in page.images:
        assert base64.b64decode(im["src"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
        assert im.get("alt")


@pytest.fixture(scope="module")
def ort_bundle(tmp_path_factory):
    """ResNet-20 (random weights, the built-in data's class names) compiled INT8 for ONNX Runtime and
    validated on 200 built-in images: real numbers, no training (the unit tier stays fast)."""
    from edgeres.checkpoint import save_checkpoint
    from edgeres.data.builtin import BUILTIN_CLASSES
    from edgeres.export import resolve_source
    from edgeres.pipeline import compile_bundle

    work = tmp_path_factory.mktemp("report")
    loaded = resolve_source("resnet20", "random")
    pre = loaded.preprocessing.with_classes(BUILTIN_CLASSES)
    ckpt = save_checkpoint(work / "r20.pt", loaded.model, loaded.name, pre)
    out = work / "r20-ort"
    compile_bundle(str(ckpt), "onnxruntime-cpu", out, precision="int8", calib="builtin", quant={"num_calib": 64},
                   val="builtin", val_limit=200, max_drop=100.0)
    return out


def test_report_page_sections_numbers_and_nothing_external(ort_bundle, cli_main, tmp_path):
    bench = ort_bundle.parent / "bench.json"
    r = cli_main("bench", ort_bundle, "--repeats", "5", "--json", bench)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "sub" / "report.html"
    r = cli_main("report", ort_bundle, "--html", out, "--bench-json", bench)
    assert r.returncode == 0, r.stderr
    raw = out.read_text(encoding="utf-8")
    page = parse(out)
    assert page.ids == ["manifest", "accuracy", "gates", "latency", "calibration"]
    assert_self_contained(page, raw)
    text = " ".join(page.text)
    rep = json.loads((ort_bundle / "report.json").read_text())
    assert f"{100 * rep['artifact']['top1']:.2f}%" in text and f"{100 * rep['reference']['top5']:.2f}%" in text
    assert rep["per_class"]["count"] == [20] * 10 and len(rep["confusion"]["artifact"]) == 10
    for name in (ort_bundle / "labels.txt").read_text().split():
        assert name in text  # the per-class table
    manifest = json.loads((ort_bundle / "manifest.json").read_text())
    assert manifest["model"]["name"] in text and manifest["versions"]["onnxruntime"] in text
    assert manifest["files"]["model.int8.onnx"][:16] in text and "entropy" in text
    lat = json.loads(bench.read_text())
    assert f"{lat['median_ms']['artifact']:.3f}" in text and lat["cpu"] in text
    assert len(page.images) >= 4  # per-class, confusion, latency, calibration ranges


def test_report_without_matplotlib_still_writes_the_page(ort_bundle, tmp_path, monkeypatch):
    from edgeres.html_report import write_html_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    out = write_html_report(ort_bundle, tmp_path / "plain.html")
    page = parse(out)
    assert not page.images and "Charts need matplotlib" in " ".join(page.text)
    assert "accuracy" in page.ids and "Latency not measured" in " ".join(page.text)


def test_report_page_renders_in_headless_chromium(ort_bundle, tmp_path):
    """Loads the page in a real browser (no network, fresh profile) and checks the screenshot has content."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the page is still checked by parsing")
    from PIL import Image

    from edgeres.html_report import write_html_report

    page = write_html_report(ort_bundle, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
           page.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    im = Image.open(shot).convert("RGB")
    assert im.size == (1280, 2400)
    colours = im.resize((160, 300)).getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50  # text, tables, badges and charts, not a blank page
    green = sum(n for n, (r, g, b) in colours if g > r + 40 and g > b + 10)
    assert green > 0  # the PASSED badge rendered with its style sheet


def test_report_plots_per_layer_sensitivity(ort_bundle, tmp_path):
    """`edgeres sensitivity --json` output (two layers measured here) becomes a chart and a table."""
    import onnx

    from edgeres.data import iter_batches
    from edgeres.export import onnx_source
    from edgeres.html_report import write_html_report
    from edgeres.pipeline import open_calibration, open_data
    from edgeres.quantize.sensitivity import analyze

    fp32 = ort_bundle / "model.fp32.onnx"
    pre = onnx_source(fp32).preprocessing
    batches, fingerprint = open_calibration("builtin", pre, 32)
    val = open_data("builtin", "val", pre, limit=32)
    layers = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"][:2]
    rep = analyze(fp32, batches, lambda: iter_batches(val, 32), data_fingerprint=fingerprint, layers=layers)
    rep.write_json(tmp_path / "sens.json")
    page = parse(write_html_report(ort_bundle, tmp_path / "r.html", sensitivity=tmp_path / "sens.json"))
    text = " ".join(page.text)
    assert "Per-layer sensitivity" in text and all(name in text for name in layers)
    assert any(im.get("alt") == "per-layer sensitivity chart" for im in page.images)
