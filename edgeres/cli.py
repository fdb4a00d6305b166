"""The ``edgeres`` command: a thin Typer layer over the library.

Options default to ``None`` meaning "the model's / target's default". An
:class:`~edgeres.errors.EdgeresError` becomes one line on stderr and its exit code
(2: bad usage or input, 1: accuracy regression); anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgeres.cli_format import console, parse_options, pct, print_bundle_report, report_table
from edgeres.errors import AccuracyRegression, EdgeresError, UsageError

app = typer.Typer(
    name="edgeres",
    help="Edge deployment compiler for ResNet classifiers: train -> ONNX -> INT8 -> TVM/TensorRT -> validate -> bundle.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

TargetsDir = typer.Option(None, "--targets-dir", help="Extra directory of target .toml files.")


@app.command()
def models(pattern: Optional[str] = typer.Argument(None, help="fnmatch pattern, e.g. 'resnet*' or 'plain*'.")):
    """List the model zoo."""
    from edgeres.models import list_models

    t = Table(title="edgeres model zoo")
    for c in ("name", "family", "depth", "block", "shortcut", "classes", "input"):
        t.add_column(c)
    for m in list_models(pattern):
        shortcut = m.shortcut_default if m.residual else "none (plain)"
        t.add_row(m.name, m.family, str(m.depth), m.block, str(shortcut), str(m.default_num_classes),
                  f"{m.default_input_size}x{m.default_input_size}")
    console.print(t)


@app.command()
def targets(targets_dir: Optional[List[Path]] = TargetsDir):
    """List the hardware targets (targets/*.toml)."""
    from edgeres.targets import list_targets

    t = Table(title="edgeres targets")
    for c in ("name", "backend", "arch", "precisions", "default", "aliases", "description"):
        t.add_column(c)
    for tg in list_targets(targets_dir or ()):
        t.add_row(tg.name, tg.backend, tg.arch, ",".join(tg.precisions), tg.default_precision,
                  ",".join(tg.aliases), tg.description)
    console.print(t)


@app.command()
def train(
    model: str = typer.Argument(..., help="Zoo name, e.g. resnet20, resnet50, plain20."),
    data: str = typer.Option(..., "--data", help="ImageFolder DIR (DIR/<class>/*.png, or DIR/train + DIR/val), "
                             "a CIFAR batch dir, a .npz, or 'builtin'."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file (.pt) or directory (best.pt + last.pt)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="quick (default) | cifar-paper | imagenet-paper | "
                                         "finetune | a .toml file. Not with --resume."),
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
):
    """Train (or fine-tune) a zoo model; writes an edgeres checkpoint with its preprocessing."""
    import subprocess

    from edgeres.training.dist import get_dist_info, torchrun_command

    if nproc is not None and nproc != 1:
        if get_dist_info().distributed:
            raise UsageError("--nproc given inside a torchrun job; drop --nproc (torchrun already started the processes)")
        cmd = torchrun_command(nproc, model, {
            "--data": data, "--out": out, "--recipe": recipe, "--epochs": epochs, "--iterations": iterations,
            "--batch-size": batch_size, "--lr": lr, "--weight-decay": weight_decay, "--init": init,
            "--replace-head": replace_head, "--freeze-backbone": freeze_backbone, "--resume": resume,
            "--workers": workers, "--seed": seed, "--device": device, "--no-plot": not plot})
        err.print(f"launching: {' '.join(cmd)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(subprocess.run(cmd).returncode)

    from edgeres.train import train as train_fn

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
    opset: int = typer.Option(17, "--opset"),
):
    """Export to ONNX (dynamic batch), checked for parity with PyTorch on ONNX Runtime."""
    from edgeres.export import OnnxSource, export_onnx, resolve_source

    src = resolve_source(source, weights)
    if isinstance(src, OnnxSource):
        raise UsageError(f"{source} is already ONNX; pass it to `edgeres quantize` or `edgeres compile`")
    res = export_onnx(src, out, opset=opset)
    console.print(f"[green]exported[/green] {res.model_name} -> {res.path} (opset {res.opset}, "
                  f"max |ONNX Runtime - PyTorch| {res.max_abs_diff:.2e} at logit scale {res.logit_scale:.2f})")


@app.command(name="compile")
def compile_cmd(
    source: str = typer.Argument(..., help="edgeres checkpoint, ONNX file, or zoo name with --weights."),
    target: str = typer.Option(..., "--target", help="Target name (edgeres targets) or a .toml file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Bundle directory (default bundles/<model>-<target>-<precision>)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | fp16 | bf16 | int8 (default: the target's)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="For a zoo name: torchvision-format .pth, or 'random'."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images for INT8."),
    val: Optional[str] = typer.Option(None, "--val", help="Labelled images to validate the artifact against FP32."),
    method: str = typer.Option("entropy", "--method", help="entropy | minmax | percentile | mse"),
    num_calib: int = typer.Option(512, "--num-calib"),
    calib_cache: Optional[Path] = typer.Option(None, "--calib-cache"),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor"),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points allowed (default: the target's)."),
    val_limit: Optional[int] = typer.Option(None, "--val-limit", help="Validate on at most this many images."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback",
                                  help="With --val: keep the most harmful layers in FP32 until --max-drop holds."),
    tuning_db: Optional[Path] = typer.Option(None, "--tuning-db", help="TVM MetaSchedule database (edgeres tune)."),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Backend option key=value (threads=4, layout=NCHW, conv=topi, dla_core=0)."),
    targets_dir: Optional[List[Path]] = TargetsDir,
):
    """Export, quantize, compile and validate into a deployment bundle."""
    from edgeres.pipeline import compile_bundle

    if out is None:
        stem = Path(source).stem if source.endswith((".pt", ".pth", ".onnx")) else source
        out = Path("bundles") / f"{stem}-{target}-{precision or 'default'}"
    try:
        res = compile_bundle(
            source, target, out, precision=precision, weights=weights, calib=calib, val=val, method=method,
            num_calib=num_calib, calib_cache=calib_cache, per_channel=per_channel, max_drop=max_drop,
            val_limit=val_limit, fallback=fallback, targets_dirs=tuple(targets_dir or ()), log=lambda s: console.print(f"  {s}"),
            backend_options=_backend_options(option, tuning_db),
        )
    except AccuracyRegression:
        print_bundle_report(out)
        raise
    if res.report is not None:
        console.print(report_table(res.report))
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
):
    """Top-1/top-5 of the bundle's artifact vs its FP32 reference; exit 1 when --max-drop is broken."""
    from edgeres.pipeline import validate_bundle

    report = validate_bundle(bundle, data, max_drop=max_drop, limit=limit)
    if json_out:
        report.write(json_out)
    console.print(report_table(report))
    if not report.passed:
        err.print(f"error: top-1 dropped {report.drop_top1:.2f} points, more than --max-drop {report.max_drop}")
        raise typer.Exit(1)


@app.command()
def run(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    images: List[Path] = typer.Argument(..., help="Image files."),
    top_k: int = typer.Option(5, "--top-k"),
    backend: Optional[str] = typer.Option(None, "--backend", help="Override: 'onnxruntime' runs the bundle's ONNX."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Portable TVM bundles: run this ISA-level variant "
                                          "(default: the best this CPU runs; also $EDGERES_TVM_VARIANT)."),
):
    """Classify images with a bundle; prints the top-k classes with scores."""
    from edgeres.runtime import load

    pred = load(bundle, backend=backend, variant=variant)
    if pred.variant:
        console.print(f"variant: {pred.variant}")
    for path, result in zip(images, pred.classify(images, top_k=top_k)):
        console.print(f"[bold]{path}[/bold]")
        for name, p in result:
            console.print(f"  {p:7.4f}  {name}")


@app.command()
def bench(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    vs: Optional[List[str]] = typer.Option(None, "--vs", help="Peers: onnxruntime, torch (repeatable)."),
    batch_size: int = typer.Option(1, "--batch-size"),
    repeats: int = typer.Option(50, "--repeats"),
    variant: Optional[str] = typer.Option(None, "--variant", help="Portable TVM bundles: time this ISA-level variant "
                                          "(default: the best this CPU runs)."),
):
    """Median latency of the bundle's artifact beside ONNX Runtime / PyTorch."""
    from edgeres.bench import measure_latency

    peers = ["artifact"]
    for v in vs or ["onnxruntime"]:
        if v == "onnxruntime":
            peers += ["onnxruntime-fp32", "onnxruntime-int8"]
        elif v == "torch":
            peers.append("torch")
        else:
            raise UsageError(f"unknown --vs {v!r}; choose onnxruntime or torch")
    res = measure_latency(bundle, peers, batch_size=batch_size, repeats=repeats, variant=variant)
    t = Table(title=f"latency, batch {batch_size} (median ms)")
    t.add_column("runner")
    t.add_column("ms", justify="right")
    t.add_column("vs artifact", justify="right")
    base = next((v for k, v in res.items() if k.startswith("artifact")), None)
    for k, v in res.items():
        t.add_row(k, f"{v:.3f}", f"{v / base:.2f}x" if base else "-")
    console.print(t)


@app.command(name="make-data")
def make_data(
    out: Path = typer.Argument(..., help="Directory to write DIR/train/<class>/*.png and DIR/val/<class>/*.png."),
    train_per_class: int = typer.Option(500, "--train-per-class"),
    val_per_class: int = typer.Option(100, "--val-per-class"),
    seed: int = typer.Option(0, "--seed"),
):
    """Write the built-in data set as an ImageFolder tree (to try the DIR-based commands)."""
    from edgeres.data.builtin import write_image_folder

    write_image_folder(out, train_per_class, val_per_class, seed=seed)
    console.print(f"[green]wrote[/green] {out}/train and {out}/val")


@app.command()
def quickstart(
    workdir: Path = typer.Option(Path("edgeres-quickstart"), "--workdir", help="Where the checkpoint and bundle go."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (default: the quick recipe's)."),
    target: str = typer.Option("x86-64-host", "--target"),
):
    """Train ResNet-20 on built-in data, compile INT8 with TVM for this CPU, validate, and print the table."""
    from edgeres.quickstart import run_quickstart

    res = run_quickstart(workdir, epochs=epochs, target=target, log=console.print)
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
    console.print(f"bundle: {res.bundle}   try: edgeres run {res.bundle} IMAGE.png")


from edgeres import cli_deploy, cli_quantize, cli_tune  # noqa: E402

cli_quantize.register(app, console)
cli_tune.register(app, console)
cli_deploy.register(app, console)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
    return f"warning: {message}\n"


def main(argv: Optional[List[str]] = None) -> None:
    warnings.formatwarning = _one_line_warning
    try:
        app(args=argv, prog_name="edgeres")
    except EdgeresError as e:
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
