"""``edgeres run``, ``edgeres bench`` and ``edgeres make-data``: use a bundle, time it, make sample data."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from edgeres import cli_device
from edgeres.cli_format import Force, expand_images, speed_vs, warn_random_weights
from edgeres.errors import UsageError


def register(app: typer.Typer, console) -> None:  # noqa: ANN001
    """Add ``run``, ``bench`` and ``make-data`` to ``app``."""
    _register_run(app, console)
    _register_bench(app, console)
    _register_make_data(app, console)


def _register_run(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command()
    def run(
        bundle: Path = typer.Argument(..., help="Bundle directory."),
        images: List[Path] = typer.Argument(..., help="Image files, or folders (their images, sorted)."),
        top_k: int = typer.Option(5, "--top-k", help="Classes to print per image."),
        backend: Optional[str] = typer.Option(None, "--backend", help="Override: 'onnxruntime' runs the bundle's ONNX."),
        variant: Optional[str] = typer.Option(None, "--variant", help="Portable TVM bundles: run this ISA-level "
                                              "variant (default: the best this CPU runs; also $EDGERES_TVM_VARIANT)."),
    ):
        """Classify images with a bundle; prints the top-k classes with scores."""
        from edgeres.runtime import load

        if top_k < 1:
            raise UsageError(f"--top-k must be at least 1, got {top_k}")
        warn_random_weights(bundle)
        pred = load(bundle, backend=backend, variant=variant)
        if pred.variant:
            console.print(f"variant: {pred.variant}", markup=False)
        files = expand_images(images)
        for start in range(0, len(files), 64):  # a folder of thousands of images: a batch at a time
            chunk = files[start:start + 64]
            if pred.bundle.task.is_features:
                for path, x in zip(chunk, pred.preprocess(chunk)):
                    console.print(f"[bold]{path}[/bold]", markup=True, highlight=False, soft_wrap=True)
                    for name, f in pred.features(x[None]).items():
                        console.print(f"  {name}  {'x'.join(map(str, f.shape[1:]))}  mean {f.mean():.4f}  "
                                      f"max {f.max():.4f}", markup=False, highlight=False)
                continue
            for path, result in zip(chunk, pred.classify(chunk, top_k=top_k)):
                console.print(f"[bold]{path}[/bold]", markup=True, highlight=False, soft_wrap=True)
                for name, p in result:
                    console.print(f"  {p:7.4f}  {name}", markup=False, highlight=False)


def _register_bench(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command()
    def bench(
        bundle: Path = typer.Argument(..., help="Bundle directory."),
        vs: Optional[List[str]] = typer.Option(None, "--vs", help="Peers: onnxruntime, torch (repeatable)."),
        batch_size: int = typer.Option(1, "--batch-size"),
        repeats: int = typer.Option(50, "--repeats"),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results (and the CPU's or "
                                                "board's name) as JSON; `edgeres report` shows local ones."),
        device: Optional[str] = cli_device.DeviceOpt,
        tracker: Optional[str] = cli_device.TrackerOpt,
        key: Optional[str] = cli_device.KeyOpt,
        devices: Optional[List[Path]] = cli_device.DevicesOpt,
        variant: Optional[str] = typer.Option(None, "--variant", help="Portable TVM bundles: time this ISA-level "
                                              "variant (default: the best this CPU runs)."),
        force: bool = Force,
    ):
        """Median latency of the bundle's artifact beside ONNX Runtime / PyTorch; with --device/--tracker, on
        the board: median/p90/p99 and throughput, beside ONNX Runtime on the board when it has it."""
        from edgeres.latency import measure_latency, write_latency

        if batch_size < 1 or repeats < 1:
            raise UsageError("--batch-size and --repeats must be at least 1")
        if json_out is not None:
            from edgeres.outputs import check_file_output

            check_file_output(json_out, "--json", force=force)  # before any measuring
        warn_random_weights(bundle)
        spec = cli_device.resolve(device, tracker, key, devices)
        if spec is not None:
            if vs or batch_size != 1:
                raise UsageError("--vs and --batch-size are for local runs; on a board the artifact runs on its own "
                                 "batch size, beside ONNX Runtime when the board has it")
            return cli_device.bench_on_device(bundle, spec, repeats, json_out, console)

        peers = ["artifact"]
        for v in vs or ["onnxruntime"]:
            if v == "onnxruntime":
                peers += ["onnxruntime-fp32", "onnxruntime-int8"]
            elif v == "torch":
                peers.append("torch")
            else:
                raise UsageError(f"unknown --vs {v!r}; choose onnxruntime or torch")
        ran: dict = {}
        res = measure_latency(bundle, peers, batch_size=batch_size, repeats=repeats, variant=variant, info=ran)
        if ran.get("variant"):
            console.print(f"variant: {ran['variant']}", markup=False)
        if json_out:
            write_latency(json_out, res, bundle=bundle, batch_size=batch_size, repeats=repeats)
        t = Table(title=f"latency, batch {batch_size} (median ms)")
        t.add_column("runner")
        t.add_column("ms", justify="right")
        t.add_column("vs artifact", justify="right")
        base = res.get("artifact")
        for k, v in res.items():
            t.add_row(k, f"{v:.3f}", "-" if k == "artifact" else speed_vs(v, base))
        console.print(t)


def _register_make_data(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command(name="make-data")
    def make_data(
        out: Path = typer.Argument(..., help="Directory to write DIR/train/<class>/*.png and DIR/val/<class>/*.png."),
        train_per_class: int = typer.Option(500, "--train-per-class", help="Training images per class."),
        val_per_class: int = typer.Option(100, "--val-per-class", help="Validation images per class."),
        seed: int = typer.Option(0, "--seed"),
        force: bool = Force,
    ):
        """Write the built-in data set as an ImageFolder tree (to try the DIR-based commands)."""
        from edgeres.data.builtin import write_image_folder
        from edgeres.outputs import check_dir_output

        check_dir_output(out, "OUT", kind="data", force=force)

        write_image_folder(out, train_per_class, val_per_class, seed=seed)
        console.print(f"[green]wrote[/green] {out}/train and {out}/val")
