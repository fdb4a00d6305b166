"""``edgeres report``: one self-contained HTML page per bundle (registered on the app in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeres.cli_format import Force


def register(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command()
    def report(
        bundle: Path = typer.Argument(..., help="Bundle directory from `edgeres compile`."),
        html: Path = typer.Option(..., "--html", help="Write the report here: one HTML file, nothing external."),
        data: Optional[str] = typer.Option(None, "--data", help="Validate now on these images (default: the "
                                           "bundle's report.json)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="With --data: at most this many images."),
        bench: bool = typer.Option(False, "--bench", help="Measure latency now (artifact vs ONNX Runtime)."),
        bench_json: Optional[Path] = typer.Option(None, "--bench-json", help="Latency from `edgeres bench --json` "
                                                  "(default: BUNDLE/bench.json when present)."),
        sensitivity: Optional[Path] = typer.Option(None, "--sensitivity", help="Per-layer sensitivity from "
                                                   "`edgeres sensitivity --json`, to plot (default: "
                                                   "BUNDLE/sensitivity.json when present)."),
        force: bool = Force,
    ):
        """One HTML page about a bundle: manifest, accuracy vs FP32, latency vs ONNX Runtime, calibration."""
        from edgeres import report_charts
        from edgeres.ci_report import check_output_file
        from edgeres.html_report import write_html_report

        check_output_file(html, "--html", "report.html", force=force)
        out = write_html_report(bundle, html, data=data, limit=limit, bench=bench, bench_json=bench_json,
                                sensitivity=sensitivity)
        if not report_charts.available():
            console.print("note: no charts: matplotlib is not installed (pip install 'edgeres[plot]')", markup=False,
                          highlight=False)
        console.print(f"[green]report[/green] {out}")
