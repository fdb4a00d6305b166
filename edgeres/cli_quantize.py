"""Quantization commands of the ``edgeres`` CLI: quantize, sensitivity (registered on the app in cli.py),
and the quantization options ``compile`` shares with them.

Every option defaults to None: "the default", which :mod:`edgeres.quantize.options` defines once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from edgeres.cli_format import Force
from edgeres.errors import UsageError

MethodOpt = typer.Option(None, "--method", help="auto (default: the best of the four on held-out calibration "
                         "images) | entropy | minmax | percentile | mse")
PercentileOpt = typer.Option(None, "--percentile", help="For --method percentile (default 99.99).")
NumCalibOpt = typer.Option(None, "--num-calib", help="Calibration images to use (default 512).")
PerChannelOpt = typer.Option(None, "--per-channel/--per-tensor", help="Weight scales (default: per channel).")
BiasOpt = typer.Option(None, "--bias-correction", help="Correct each layer's output mean shift: auto (default: "
                       "where it helps on held-out images) | on | off.")
NoBiasOpt = typer.Option(False, "--no-bias-correction", hidden=True, help="The same as --bias-correction off.")
EqualizeOpt = typer.Option(None, "--equalize/--no-equalize", help="Cross-layer equalization before calibration.")
ExcludeOpt = typer.Option(None, "--exclude", help="Keep this layer (ONNX node name) in float; repeatable.")
QatDataOpt = typer.Option(None, "--qat-data", help="Training images: fine-tune with quantization-aware training "
                          "when --max-drop cannot be met with calibration choices and <= 3 float layers.")
QatEpochsOpt = typer.Option(None, "--qat-epochs", help="Epochs of quantization-aware training (default 1).")


def qat_from_cli(data: Optional[str], epochs: Optional[int]):
    """QatOptions, or None without --qat-data."""
    if data is None:
        if epochs is not None:
            raise UsageError("--qat-epochs needs --qat-data DIR (the training images)")
        return None
    from edgeres.training.qat import QatOptions

    return QatOptions(data=data) if epochs is None else QatOptions(data=data, epochs=epochs)


def options_from_cli(target: Any = None, *, method: Optional[str] = None, percentile: Optional[float] = None,
                     num_calib: Optional[int] = None, per_channel: Optional[bool] = None,
                     bias_correction: Optional[str] = None, equalize: Optional[bool] = None,
                     no_bias_correction: bool = False, **more: Any):
    """The one :class:`~edgeres.quantize.options.QuantOptions` of a command (None = the default)."""
    from edgeres.quantize.options import quant_options

    if bias_correction is not None and bias_correction not in ("auto", "on", "off"):
        raise UsageError(f"--bias-correction takes auto, on or off, not {bias_correction!r}")
    if no_bias_correction:
        if bias_correction not in (None, "off"):
            raise UsageError(f"--no-bias-correction contradicts --bias-correction {bias_correction}; pass one")
        bias_correction = "off"

    return quant_options(target, method=method, percentile=percentile, num_calib=num_calib,
                         per_channel=per_channel, bias_correction=bias_correction, equalize=equalize, **more)


def register(app: typer.Typer, console) -> None:  # noqa: ANN001
    """Add ``quantize`` and ``sensitivity`` to ``app``."""
    _register_quantize(app, console)
    _register_sensitivity(app, console)


def _register_quantize(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command()
    def quantize(
        onnx_path: Path = typer.Argument(..., metavar="ONNX", help="FP32 ONNX model exported by edgeres."),
        calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images (ImageFolder/flat DIR, 'builtin')."),
        out: Path = typer.Option(..., "--out", help="Output Q/DQ INT8 .onnx."),
        method: Optional[str] = MethodOpt,
        percentile: Optional[float] = PercentileOpt,
        num_calib: Optional[int] = NumCalibOpt,
        per_channel: Optional[bool] = PerChannelOpt,
        reduce_range: Optional[bool] = typer.Option(
            None, "--reduce-range/--full-range", help="7-bit weights, for x86 CPUs without VNNI (as ONNX Runtime's "
            "reduce_range); default 8-bit"),
        form: Optional[str] = typer.Option(None, "--form", help="Q/DQ form: cpu (default; ONNX Runtime/TVM) | tensorrt"),
        bias_correction: Optional[str] = BiasOpt,
        no_bias_correction: bool = NoBiasOpt,
        equalize: Optional[bool] = EqualizeOpt,
        exclude: Optional[List[str]] = ExcludeOpt,
        calib_cache: Optional[Path] = typer.Option(
            None, "--calib-cache", help="Calibration cache JSON: reused when it exists (same model and data), "
            "written there otherwise (default: OUT with .calib.json)."),
        val: Optional[str] = typer.Option(None, "--val", help="Labelled images: fall back sensitive layers to meet --max-drop."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points allowed with --val (default 1.0)."),
        val_limit: Optional[int] = typer.Option(None, "--val-limit", help="Use at most this many --val images."),
        qat_checkpoint: Optional[Path] = typer.Option(None, "--qat-checkpoint", help="The edgeres checkpoint the "
                                                      "ONNX was exported from (trainable source for --qat-data)."),
        qat_data: Optional[str] = QatDataOpt,
        qat_epochs: Optional[int] = QatEpochsOpt,
        force: bool = Force,
    ):
        """Quantize an ONNX model to explicit Q/DQ INT8 with calibration images."""
        from edgeres.export import onnx_source
        from edgeres.outputs import check_calib_cache, check_file_output
        from edgeres.pipeline import open_calibration, open_data
        from edgeres.quant_stage import describe_quantization, quantize_stage

        check_file_output(out, "--out", force=force)
        cache = calib_cache or out.with_suffix(".calib.json")
        check_calib_cache(cache, "--calib-cache" if calib_cache else "the calibration cache")

        opts = options_from_cli(method=method, percentile=percentile, num_calib=num_calib, per_channel=per_channel,
                                bias_correction=bias_correction, no_bias_correction=no_bias_correction,
                                equalize=equalize, form=form,
                                reduce_range=reduce_range)
        src = onnx_source(onnx_path)
        if calib is None and (calib_cache is None or not calib_cache.is_file()):
            raise UsageError("pass --calib DIR (calibration images) or an existing --calib-cache FILE")
        if max_drop is not None and val is None:
            raise UsageError("--max-drop needs --val DIR (labelled images to measure the drop on)")
        if val is not None and src.task.is_features:
            raise UsageError(f"{onnx_path} is a feature extractor: --val measures a classifier's top-1 drop; "
                             "quantize without --val and compare the outputs with `edgeres validate --min-cosine`")
        qat = qat_from_cli(qat_data, qat_epochs)
        source = _qat_source(qat, qat_checkpoint, val)
        batches, fingerprint = open_calibration(calib, src.preprocessing, opts.num_calib, progress=True)
        val_ds = open_data(val, "val", src.preprocessing, limit=val_limit) if val else None
        res, fb = quantize_stage(onnx_path, out, batches, fingerprint, options=opts, cache_path=cache,
                                 exclude=tuple(exclude or ()), val_ds=val_ds, qat=qat, source=source,
                                 max_drop=(1.0 if max_drop is None else max_drop) if val_ds is not None else None,
                                 log=lambda s: console.print(f"  {s}", markup=False), equalize_fallback=equalize is None)
        info = {"method": res.method, "requested_method": opts.method, "bias_correction": res.bias_correction,
                "equalize": res.options.equalize}
        if res.auto.get("why") and fb is None:
            console.print(f"  calibration: {res.auto['why']}", markup=False)
        console.print(f"[green]quantized[/green] {onnx_path} -> {res.path} ({describe_quantization(info)}, "
                      f"{res.form} form, {'7-bit weights, ' if res.reduce_range else ''}"
                      f"{res.num_quantized_nodes} nodes INT8, {res.num_calib} calibration images"
                      f"{', cache hit' if res.cache_hit else ''}; "
                      f"{f'cache {res.cache_path}' if res.cache_path else 'equalized graph not cached'})")
        if fb is not None and fb.get("qat"):
            qr = fb["qat"]
            console.print(f"quantization-aware training ({qr['epochs']} epoch(s), {qr['steps']} steps): top-1 drop "
                          f"{qr['before']['drop_top1']:.2f} -> {qr['after']['drop_top1']:.2f} points; fine-tuned "
                          f"FP32 model {qr['onnx']}", markup=False)
        if fb is not None:
            console.print(f"top-1 drop {fb['drop_top1']:.2f} points (plain INT8: {fb['baseline_drop_top1']:.2f}); "
                          f"kept in FP32: {', '.join(fb['layers']) or 'none'}")



def _qat_source(qat, checkpoint: Optional[Path], val: Optional[str]):  # noqa: ANN001, ANN202
    """The trainable model for --qat-data (its --qat-checkpoint), or None without QAT."""
    if qat is None:
        return None
    if checkpoint is None or val is None:
        raise UsageError("--qat-data needs --qat-checkpoint PT (the model to fine-tune) and --val DIR")
    from edgeres.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def _register_sensitivity(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command()
    def sensitivity(
        onnx_path: Path = typer.Argument(..., metavar="ONNX", help="FP32 ONNX model exported by edgeres."),
        calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images."),
        val: str = typer.Option(..., "--val", help="Labelled validation images."),
        method: Optional[str] = MethodOpt,
        form: Optional[str] = typer.Option(None, "--form", help="Q/DQ form: cpu (default) | tensorrt"),
        reduce_range: Optional[bool] = typer.Option(
            None, "--reduce-range/--full-range", help="7-bit weights, for x86 CPUs without VNNI (default 8-bit)"),
        bias_correction: Optional[str] = BiasOpt,
        no_bias_correction: bool = NoBiasOpt,
        equalize: Optional[bool] = EqualizeOpt,
        mode: str = typer.Option("fp32-one", "--mode", help="fp32-one: INT8 but this layer | int8-one: only this layer INT8"),
        num_calib: Optional[int] = NumCalibOpt,
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

        opts = options_from_cli(method=method, num_calib=num_calib, bias_correction=bias_correction,
                                no_bias_correction=no_bias_correction,
                                equalize=equalize, form=form, reduce_range=reduce_range)
        for path, option in ((json_out, "--json"), (plot, "--plot")):
            if path is not None:
                check_file_output(path, option, force=force)
        if calib_cache is not None:
            check_calib_cache(calib_cache)
        src = onnx_source(onnx_path)
        if src.task.is_features:
            raise UsageError(f"{onnx_path} is a feature extractor: sensitivity ranks layers by top-1 on labelled "
                             "images, which needs a classifier")
        if calib is None and (calib_cache is None or not calib_cache.is_file()):
            raise UsageError("pass --calib DIR (calibration images) or an existing --calib-cache FILE")
        batches, fingerprint = open_calibration(calib, src.preprocessing, opts.num_calib, progress=True)
        vds = open_data(val, "val", src.preprocessing, limit=val_limit)
        with stage("sensitivity", None, "layers") as bar:
            rep = analyze(onnx_path, batches, lambda: iter_batches(vds, EVAL_BATCH), data_fingerprint=fingerprint,
                          options=opts, cache_path=calib_cache, mode=mode,
                          progress=lambda i, n, name: bar.update(i, n, name))
            bar.update(bar.total or 0, bar.total)
        console.print(rep.table(limit=top))
        if json_out:
            rep.write_json(json_out)
        if plot:
            rep.plot(plot)
            console.print(f"plot: {plot}")
