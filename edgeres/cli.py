"""The ``edgeres`` command: a thin Typer layer over the library.

Options default to ``None`` meaning "the model's / target's default". An
:class:`~edgeres.errors.EdgeresError` becomes one line on stderr and its exit code
(2: bad usage or input, 1: accuracy regression); anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from edgeres import cli_device, cli_list, cli_quantize
from edgeres.cli_format import (
    Force, any_report_table, console, make_console, parse_options, pct, print_bundle_report,
    report_table, warn_random_weights,
)
from edgeres.errors import AccuracyRegression, EdgeresError, UsageError

try:  # Typer >= 0.22 vendors click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover - older Typer on click
    from click.exceptions import ClickException as _ClickException

app = typer.Typer(
    name="edgeres",
    help="Edge deployment compiler for ResNet classifiers: train -> ONNX -> INT8 -> TVM/TensorRT -> validate -> bundle.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = make_console(stderr=True)

TargetsDir = typer.Option(None, "--targets-dir", help="Extra directory of target .toml files.")
TaskOpt = typer.Option(None, "--task", help="classify (default) | features: the backbone's stage outputs for a "
                       "detector (c2..c5 = layer1..layer4, strides 4/8/16/32; CIFAR ResNets: c2..c4).")
FeaturesOpt = typer.Option(None, "--features", help="With --task features: which outputs, e.g. c3,c4,c5 (default all).")

cli_list.register(app, console, TargetsDir)  # models, targets: first in --help


@app.command()
def train(
    model: str = typer.Argument(..., help="Zoo name, e.g. resnet20, resnet50, plain20."),
    data: str = typer.Option(..., "--data", help="ImageFolder DIR (DIR/<class>/*.png, or DIR/train + DIR/val), "
                             "a CIFAR batch dir, a .npz, or 'builtin'."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file (.pt) or directory (best.pt + last.pt)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="quick (default) | cifar-paper | imagenet-paper | "
                                         "finetune | a .toml file. With --resume: optional, must match the run's."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Stop after this many optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="GLOBAL batch per step (split over --nproc/torchrun processes)."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from a torchvision/timm/edgeres checkpoint."),
    replace_head: bool = typer.Option(False, "--replace-head", help="With --init: always train a new classifier head."),
    freeze_backbone: bool = typer.Option(False, "--freeze-backbone", help="Train only the classifier head (fc)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from a last.pt checkpoint."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N | auto (under torchrun: cpu or cuda)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Launch torchrun with N local processes (DDP)."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Write the training-curve PNG next to the history."),
    force: bool = Force,
):
    """Train (or fine-tune) a zoo model; writes an edgeres checkpoint with its preprocessing."""
    import subprocess

    from edgeres.compat import require_torch

    require_torch("edgeres train")
    from edgeres.outputs import check_file_outputs
    from edgeres.training.dist import get_dist_info, torchrun_command
    from edgeres.training.state import output_paths

    check_file_outputs(vars(output_paths(out)).values(), "--out", force=force)

    if nproc is not None and nproc != 1:
        if get_dist_info().distributed:
            raise UsageError("--nproc given inside a torchrun job; drop --nproc (torchrun already started the processes)")
        cmd = torchrun_command(nproc, model, {
            "--data": data, "--out": out, "--recipe": recipe, "--epochs": epochs, "--iterations": iterations,
            "--batch-size": batch_size, "--lr": lr, "--weight-decay": weight_decay, "--init": init,
            "--replace-head": replace_head, "--freeze-backbone": freeze_backbone, "--resume": resume,
            "--workers": workers, "--seed": seed, "--device": device, "--no-plot": not plot, "--force": force})
        err.print(f"launching: {' '.join(cmd)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(subprocess.run(cmd).returncode)

    from edgeres.training import train as train_fn

    res = train_fn(model, data, out, recipe=recipe, epochs=epochs, iterations=iterations, batch_size=batch_size,
                   lr=lr, weight_decay=weight_decay, num_workers=workers, seed=seed,
                   freeze_backbone=True if freeze_backbone else None, init=init, replace_head=replace_head,
                   resume=resume, device=device, plot=plot)
    if not get_dist_info().is_main:
        return
    if res.head_replaced:
        console.print(f"classifier head replaced: new fc for {len(res.class_names)} classes (from {init})")
    if res.trainable_params != res.total_params:
        console.print(f"trainable parameters: {res.trainable_params:,} of {res.total_params:,} (backbone frozen)")
    console.print(f"[green]trained[/green] {model}: best val top-1 {pct(res.best_val_top1)} (epoch {res.best_epoch}) -> {res.best_checkpoint}")


@app.command()
def export(
    source: str = typer.Argument(..., help="edgeres checkpoint, or zoo name with --weights."),
    out: Path = typer.Option(..., "--out", help="Output .onnx file."),
    weights: Optional[str] = typer.Option(None, "--weights", help="torchvision-format .pth for a zoo name, or 'random'."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17 or later)."),
    task: Optional[str] = TaskOpt,
    features: Optional[str] = FeaturesOpt,
    force: bool = Force,
):
    """Export to ONNX (dynamic batch), checked for parity with PyTorch on ONNX Runtime."""
    from edgeres.export import OnnxSource, export_onnx, resolve_source
    from edgeres.outputs import check_file_output

    check_file_output(out, "--out", force=force)
    src = resolve_source(source, weights)
    if isinstance(src, OnnxSource):
        raise UsageError(f"{source} is already ONNX; pass it to `edgeres quantize` or `edgeres compile`")
    res = export_onnx(src, out, opset=opset, task=task, features=features)
    what = f"{res.task.describe()} " if res.task.is_features else ""
    console.print(f"[green]exported[/green] {res.model_name} {what}-> {res.path} (opset {res.opset}, "
                  f"max |ONNX Runtime - PyTorch| {res.max_abs_diff:.2e} at output scale {res.logit_scale:.2f})")


@app.command(name="compile")
def compile_cmd(
    source: str = typer.Argument(..., help="edgeres checkpoint, ONNX file, or zoo name with --weights."),
    target: str = typer.Option(..., "--target", help="Target name (edgeres targets) or a .toml file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Bundle folder (default: in bundles/, named "
                                       "MODEL-TARGET-PRECISION). An existing bundle there is replaced."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | fp16 | bf16 | int8 (default: the target's)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="For a zoo name: torchvision-format .pth, or 'random'."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images for INT8."),
    val: Optional[str] = typer.Option(None, "--val", help="Labelled images to validate the artifact against FP32."),
    method: Optional[str] = cli_quantize.MethodOpt,
    num_calib: Optional[int] = cli_quantize.NumCalibOpt,
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache", help="Calibration cache JSON: reused when it "
                                               "exists (same model and data), written there otherwise."),
    per_channel: Optional[bool] = cli_quantize.PerChannelOpt,
    percentile: Optional[float] = cli_quantize.PercentileOpt,
    bias_correction: Optional[str] = cli_quantize.BiasOpt,
    no_bias_correction: bool = cli_quantize.NoBiasOpt,
    equalize: Optional[bool] = cli_quantize.EqualizeOpt,
    exclude: Optional[List[str]] = cli_quantize.ExcludeOpt,
    qat_data: Optional[str] = cli_quantize.QatDataOpt,
    qat_epochs: Optional[int] = cli_quantize.QatEpochsOpt,
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points allowed (default: the target's)."),
    val_limit: Optional[int] = typer.Option(None, "--val-limit", help="Validate on at most this many images."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                  help="With --val: keep the most harmful layers in FP32 until --max-drop holds."),
    tuning_db: Optional[Path] = typer.Option(None, "--tuning-db", help="TVM MetaSchedule database (edgeres tune)."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Backend option key=value (threads=4, layout=NCHW, conv=topi, dla_core=0)."),
    targets_dir: Optional[List[Path]] = TargetsDir,
    task: Optional[str] = TaskOpt,
    features: Optional[str] = FeaturesOpt,
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="--task features: least mean cosine per "
                                               "output vs FP32 on --val images (default 0.98)."),
    force: bool = Force,
):
    """Export, quantize, compile and validate into a deployment bundle."""
    from edgeres.pipeline import compile_bundle
    from edgeres.targets import get_target

    if out is None:
        stem = Path(source).stem if source.endswith((".pt", ".pth", ".onnx")) else source
        tname = Path(target).stem if target.endswith(".toml") else target
        out = Path("bundles") / f"{stem}-{tname}-{precision or 'default'}"
    tgt = get_target(target, tuple(targets_dir or ()))
    quant = cli_quantize.options_from_cli(tgt, method=method, percentile=percentile, num_calib=num_calib,
                                          per_channel=per_channel, bias_correction=bias_correction, equalize=equalize,
                                          no_bias_correction=no_bias_correction)
    try:
        res = compile_bundle(
            source, tgt, out, precision=precision, weights=weights, calib=calib, val=val, quant=quant,
            calib_cache=calib_cache, exclude=tuple(exclude or ()), max_drop=max_drop, val_limit=val_limit,
            qat=cli_quantize.qat_from_cli(qat_data, qat_epochs),
            fallback=fallback, equalize_fallback=equalize is None, log=lambda s: console.print(f"  {s}", markup=False),
            backend_options=_backend_options(option, tuning_db), task=task, features=features, min_cosine=min_cosine,
            force=force, progress=True,
        )
    except AccuracyRegression:
        print_bundle_report(out)
        raise
    if res.report is not None:
        console.print(any_report_table(res.report))
    for n in res.notes:
        console.print(f"[yellow]note:[/yellow] {n}")
    console.print(f"[green]bundle[/green] {res.bundle} ({res.target.name}, {res.precision})")


def _backend_options(option: Optional[List[str]], tuning_db: Optional[Path]) -> Optional[dict]:
    opts = parse_options(option)
    if tuning_db is not None:
        if not tuning_db.is_dir():
            raise UsageError(f"--tuning-db {tuning_db} is not a directory; create one with `edgeres tune`")
        opts["tuning_db"] = str(tuning_db)
    return opts or None


@app.command()
def validate(
    bundle: Path = typer.Argument(..., help="Bundle directory from `edgeres compile`."),
    data: str = typer.Option(..., "--data", help="Labelled images (DIR/<class>/*, or DIR/val/<class>/*), or 'builtin'."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points allowed (default: the target's)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use at most this many images."),
    max_drop_top5: Optional[float] = typer.Option(None, "--max-drop-top5", help="Top-5 points allowed (default: not gated)."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", help="Least fraction of images where artifact "
                                                  "and FP32 agree on top-1, e.g. 0.99 (default: not gated)."),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Feature bundles: least mean cosine per "
                                               "output vs FP32 (default 0.98)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML: one test case per gate (for CI)."),
    summary: Optional[Path] = typer.Option(None, "--summary", help="Write a Markdown table (appended when FILE is "
                                           "$GITHUB_STEP_SUMMARY)."),
    crops: int = typer.Option(1, "--crops", help="1 (the model's preprocessing) | 10 (4 corners + centre, "
                              "and their flips, softmax averaged)."),
    scales: Optional[str] = typer.Option(None, "--scales", help="Multi-scale testing, e.g. 224,256,384,480,640 "
                                         "(artifacts compiled with a dynamic spatial size only)."),
    force: bool = Force,
    device: Optional[str] = cli_device.DeviceOpt,
    tracker: Optional[str] = cli_device.TrackerOpt,
    key: Optional[str] = cli_device.KeyOpt,
    devices: Optional[List[Path]] = cli_device.DevicesOpt,
):
    """Top-1/top-5 of the bundle's artifact vs its FP32 reference (a feature bundle: cosine per output);
    exit 1 when a gate (--max-drop, --max-drop-top5, --min-agreement, --min-cosine) is broken.
    With --device/--tracker the artifact runs on the board (the reference here)."""
    from edgeres.bundle import load_bundle
    from edgeres.ci_report import check_output_file, write_ci_files
    from edgeres.gates import bundle_selftest_gate, failed, report_gates
    from edgeres.pipeline import validate_bundle
    from edgeres.protocols import Protocol, parse_scales

    for path, opt, example in ((junit, "--junit", "edgeres-junit.xml"), (summary, "--summary", "summary.md"),
                               (json_out, "--json", "report.json")):
        check_output_file(path, opt, example, force=force)
    spec = cli_device.resolve(device, tracker, key, devices)  # a bad devices file ends here, before any bundle is read
    warn_random_weights(bundle)
    b = load_bundle(bundle)
    if b.task.is_features and (max_drop_top5 is not None or min_agreement is not None):
        raise UsageError(f"{bundle} is a feature extractor: --max-drop-top5/--min-agreement gate classifiers; "
                         "use --min-cosine")
    protocol = Protocol(crops=crops, scales=parse_scales(scales))
    report = validate_bundle(b, data, max_drop=max_drop, limit=limit, min_cosine=min_cosine, protocol=protocol,
                             progress=True, device=spec)
    gates = report_gates(report) if b.task.is_features else report_gates(
        report, max_drop_top5=max_drop_top5, min_agreement=min_agreement)
    selftest = bundle_selftest_gate(b)
    if selftest is not None:
        gates.append(selftest)
        console.print(f"selftest: {selftest.message}", markup=False, highlight=False, soft_wrap=True)
    if json_out:
        report.write(json_out)
    console.print(any_report_table(report))
    write_ci_files(report, gates, bundle, junit=junit, summary=summary)
    bad = failed(gates)
    for g in bad:
        err.print(f"error: {g.message}", markup=False, highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(1)


@app.command()
def quickstart(
    workdir: Path = typer.Option(Path("edgeres-quickstart"), "--workdir", help="Where the checkpoint and bundle go."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: the quick recipe's)."),
    target: str = typer.Option("x86-64-host", "--target", help="Target to compile for."),
    force: bool = Force,
):
    """Train ResNet-20 on built-in data, compile INT8 with TVM for this CPU, validate, and print the table."""
    from edgeres.quickstart import run_quickstart

    res = run_quickstart(workdir, epochs=epochs, target=target, log=console.print, force=force)
    console.print(report_table(res.report, title="edgeres quickstart: ResNet-20 on the built-in data"))
    t = Table(title="time per stage (s)")
    t.add_column("stage")
    t.add_column("s", justify="right")
    for k, v in res.timings.items():
        t.add_row(k, f"{v:.1f}")
    console.print(t)
    lt = Table(title="batch-1 latency (median ms)")
    lt.add_column("runner")
    lt.add_column("ms", justify="right")
    for k, v in res.latency_ms.items():
        lt.add_row(k, f"{v:.3f}")
    console.print(lt)
    console.print(f"bundle: {res.bundle}", soft_wrap=True)
    console.print(f"try: edgeres run {res.bundle} {res.samples[0]}   (or the folder {res.samples[0].parent})",
                  soft_wrap=True, highlight=False)


from edgeres import cli_debug, cli_deploy, cli_report, cli_run, cli_tune  # noqa: E402

cli_run.register(app, console)
cli_quantize.register(app, console)
cli_debug.register(app, console)
cli_tune.register(app, console)
cli_deploy.register(app, console)
cli_report.register(app, console)
cli_device.register(app, console)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    return f"warning: {message}\n"


_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH", "bool": ""}


def _readable_metavars(command) -> None:  # noqa: ANN001 - a click command or group
    """Help shows TEXT/INTEGER/PATH (not Typer's <str>, <list[Path]>), flags none, arguments their name."""
    help_option = command.get_help_option(command.context_class(command))
    if help_option is not None:
        help_option.metavar = ""
    for param in getattr(command, "params", ()):
        if param.param_type_name == "argument":
            param.metavar = param.metavar or param.name.upper()
            param.display_type_rich = lambda ctx=None: None  # the name column already says what it is
            continue
        if param.metavar is not None:
            continue
        bare = param.bare_type() if hasattr(param, "bare_type") else "str"
        if bare.startswith("list[") and bare.endswith("]"):
            bare = bare[5:-1]  # a repeatable option: its element type
        param.metavar = _METAVARS.get(bare, bare.upper())
    for sub in getattr(command, "commands", {}).values():
        _readable_metavars(sub)


def main(argv: Optional[List[str]] = None) -> None:
    warnings.formatwarning = _one_line_warning
    command = typer.main.get_command(app)
    _readable_metavars(command)
    try:
        rc = command.main(args=argv, prog_name="edgeres", standalone_mode=False)
    except EdgeresError as e:
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        from edgeres.compat import torch_missing_message

        command = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "this command")
        err.print(f"error: {torch_missing_message(f'edgeres {command}')}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except _ClickException as e:  # bad usage Typer/click caught: unknown option, bad value, missing argument
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err.print(f"error: {' '.join(e.format_message().split())}{where}", markup=False, highlight=False,
                  soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # `edgeres ... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
