"""Quantization commands of the ``edgeres`` CLI: quantize, sensitivity (registered on the app in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeres.cli_format import Force
from edgeres.errors import UsageError


def register(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command()
    def quantize(
        onnx_path: Path = typer.Argument(..., metavar="ONNX", help="FP32 ONNX model exported by edgeres."),
        calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images (ImageFolder/flat DIR, 'builtin')."),
        out: Path = typer.Option(..., "--out", help="Output Q/DQ INT8 .onnx."),
        method: str = typer.Option("entropy", "--method", help="entropy | minmax | percentile | mse"),
        percentile: float = typer.Option(99.99, "--percentile"),
        num_calib: int = typer.Option(512, "--num-calib", help="Calibration images to use."),
        per_channel: bool = typer.Option(True, "--per-channel/--per-tensor"),
        reduce_range: bool = typer.Option(
            False, "--reduce-range", help="7-bit weights, for x86 CPUs without VNNI (as ONNX Runtime's reduce_range)"),
        form: str = typer.Option("cpu", "--form", help="Q/DQ form: cpu (ONNX Runtime/TVM) | tensorrt"),
        calib_cache: Optional[Path] = typer.Option(
            None, "--calib-cache", help="Calibration cache JSON: reused when it exists (same model and data), "
            "written there otherwise (default: OUT with .calib.json)."),
        val: Optional[str] = typer.Option(None, "--val", help="Labelled images: fall back sensitive layers to meet --max-drop."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points allowed with --val (default 1.0)."),
        val_limit: Optional[int] = typer.Option(None, "--val-limit", help="Use at most this many --val images."),
        force: bool = Force,
    ):
        """Quantize an ONNX model to explicit Q/DQ INT8 with calibration images."""
        from edgeres.export import onnx_source
        from edgeres.outputs import check_calib_cache, check_file_output
        from edgeres.pipeline import open_calibration, open_data, quantize_stage

        check_file_output(out, "--out", force=force)
        cache = calib_cache or out.with_suffix(".calib.json")
        check_calib_cache(cache, "--calib-cache" if calib_cache else "the calibration cache")
        src = onnx_source(onnx_path)
        if calib is None and (calib_cache is None or not calib_cache.is_file()):
            raise UsageError("pass --calib DIR (calibration images) or an existing --calib-cache FILE")
        if max_drop is not None and val is None:
            raise UsageError("--max-drop needs --val DIR (labelled images to measure the drop on)")
        batches, fingerprint = open_calibration(calib, src.preprocessing, num_calib, progress=True)
        val_ds = open_data(val, "val", src.preprocessing, limit=val_limit) if val else None
        res, fb = quantize_stage(onnx_path, out, batches, fingerprint, form=form, method=method,
                                 per_channel=per_channel, reduce_range=reduce_range, percentile=percentile,
                                 cache_path=cache, val_ds=val_ds,
                                 max_drop=(1.0 if max_drop is None else max_drop) if val_ds is not None else None,
                                 log=lambda s: console.print(f"  {s}"))
        console.print(f"[green]quantized[/green] {onnx_path} -> {res.path} ({res.method}, {res.form} form, "
                      f"{'7-bit weights, ' if res.reduce_range else ''}"
                      f"{res.num_quantized_nodes} nodes INT8, {res.num_calib} calibration images"
                      f"{', cache hit' if res.cache_hit else ''}; cache {res.cache_path})")
        if fb is not None:
            console.print(f"top-1 drop {fb['drop_top1']:.2f} points (plain INT8: {fb['baseline_drop_top1']:.2f}); "
                          f"kept in FP32: {', '.join(fb['layers']) or 'none'}")


    @app.command()
    def sensitivity(
        onnx_path: Path = typer.Argument(..., metavar="ONNX", help="FP32 ONNX model exported by edgeres."),
        calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images."),
        val: str = typer.Option(..., "--val", help="Labelled validation images."),
        method: str = typer.Option("entropy", "--method"),
        form: str = typer.Option("cpu", "--form"),
        reduce_range: bool = typer.Option(
            False, "--reduce-range", help="7-bit weights, for x86 CPUs without VNNI (as ONNX Runtime's reduce_range)"),
        mode: str = typer.Option("fp32-one", "--mode", help="fp32-one: INT8 but this layer | int8-one: only this layer INT8"),
        num_calib: int = typer.Option(512, "--num-calib", help="Calibration images to use (at most)."),
        val_limit: Optional[int] = typer.Option(500, "--val-limit", help="Use at most this many --val images."),
        calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", help="Calibration cache JSON (reused or written)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-layer table as JSON."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Bar plot (PNG)."),
        top: int = typer.Option(20, "--top", help="Rows to print."),
        force: bool = Force,
    ):
        """Per-layer INT8 sensitivity: effect on output error and top-1 of each layer's quantization."""
        from edgeres.data import iter_batches
        from edgeres.export import onnx_source
        from edgeres.outputs import check_calib_cache, check_file_output
        from edgeres.pipeline import EVAL_BATCH, open_calibration, open_data
        from edgeres.progress import stage
        from edgeres.quantize.sensitivity import analyze

        for path, option in ((json_out, "--json"), (plot, "--plot")):
            if path is not None:
                check_file_output(path, option, force=force)
        if calib_cache is not None:
            check_calib_cache(calib_cache)
        src = onnx_source(onnx_path)
        if calib is None and (calib_cache is None or not calib_cache.is_file()):
            raise UsageError("pass --calib DIR (calibration images) or an existing --calib-cache FILE")
        batches, fingerprint = open_calibration(calib, src.preprocessing, num_calib, progress=True)
        vds = open_data(val, "val", src.preprocessing, limit=val_limit)
        with stage("sensitivity", None, "layers") as bar:
            rep = analyze(onnx_path, batches, lambda: iter_batches(vds, EVAL_BATCH), data_fingerprint=fingerprint,
                          method=method, form=form, cache_path=calib_cache, mode=mode, reduce_range=reduce_range,
                          progress=lambda i, n, name: bar.update(i, n, name))
            bar.update(bar.total or 0, bar.total)
        console.print(rep.table(limit=top))
        if json_out:
            rep.write_json(json_out)
        if plot:
            rep.plot(plot)
            console.print(f"plot: {plot}")
