"""Device-side commands of the ``edgeres`` CLI: build-engine, check-qdq (registered on the app in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeres.cli_format import parse_options


def register(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command(name="build-engine")
    def build_engine_cmd(
        bundle: Path = typer.Argument(..., help="Bundle from `edgeres compile --target jetson...`."),
        data: Optional[str] = typer.Option(None, "--data", help="Validate the engine on these labelled images."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop"),
        limit: Optional[int] = typer.Option(None, "--limit"),
        option: Optional[List[str]] = typer.Option(None, "--option", help="Builder option key=value (dla_core=0, workspace_mb=1024)."),
    ):
        """On the device: build the bundle's TensorRT engine with the installed TensorRT and record it."""
        from edgeres.backends.tensorrt.device_build import build_bundle_engine

        b, report = build_bundle_engine(bundle, options=parse_options(option), data=data, max_drop=max_drop, limit=limit)
        art = b.manifest["artifact"]
        console.print(f"[green]engine[/green] {b.root}/artifact/{art['file']} "
                      f"(TensorRT {art['info'].get('tensorrt_version', '?')}, {art['compile_seconds']:.1f} s)")
        if report is not None:
            from edgeres.cli_format import any_report_table

            console.print(any_report_table(report))

    @app.command(name="check-qdq")
    def check_qdq_cmd(
        onnx_path: Path = typer.Argument(..., metavar="ONNX", help="Q/DQ INT8 ONNX (e.g. a bundle's model.int8.onnx)."),
        parser: Optional[bool] = typer.Option(None, "--parser/--no-parser",
                                              help="Require (or skip) a real TensorRT/TensorRT-RTX parse; default: if installed."),
    ):
        """Check a Q/DQ ONNX against TensorRT's explicit-quantization rules, without a GPU."""
        from edgeres.backends.tensorrt.conformance import check_qdq, format_report
        rep = check_qdq(onnx_path, parse_with_trt=parser)
        console.print(format_report(rep), markup=False, highlight=False)
        if not rep.ok:
            raise typer.Exit(1)
