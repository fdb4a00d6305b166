"""``edgeres tune``: MetaSchedule tuning into a reusable database (registered on the app in cli.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from edgeres import cli_device
from edgeres.errors import UsageError


def register(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command(name="tune")
    def tune_cmd(
        source: str = typer.Argument(..., metavar="MODEL_OR_ONNX",
                                     help="Checkpoint (.pt), ONNX file or zoo name (resnet18, resnet50, ...)."),
        target: Optional[str] = typer.Option(None, "--target", "-t", help="A TVM target (x86-64-host, rpi5, ...); "
                                             "default: the --device's target in devices.toml."),
        trials: int = typer.Option(..., "--trials", help="Measured candidates in this run, over all tasks."),
        db: Path = typer.Option(..., "--db", help="Database directory (created; tasks it holds are skipped)."),
        trials_per_task: Optional[int] = typer.Option(None, "--trials-per-task",
                                                      help="Cap per task (default: an even share, at least 8)."),
        time_budget: Optional[str] = typer.Option(None, "--time-budget", help="Stop after this long: 2h, 30m, 90s."),
        weights: Optional[str] = typer.Option(None, "--weights",
                                              help="Weights for a zoo name; tuning needs only the graph, so the "
                                                   "default for zoo names is 'random'."),
        option: Optional[List[str]] = typer.Option(None, "--option",
                                                   help="TVM backend option key=value, as for compile (layout=NCHW, conv=topi)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
        force: bool = typer.Option(False, "--force", help="Add to a --db folder that is not an edgeres tuning "
                                   "database (nothing in it is deleted)."),
        device: Optional[str] = cli_device.DeviceOpt,
        tracker: Optional[str] = cli_device.TrackerOpt,
        key: Optional[str] = cli_device.KeyOpt,
        devices: Optional[List[Path]] = cli_device.DevicesOpt,
    ):
        """Tune a model's TVM kernels with MetaSchedule; compile applies the database with --tuning-db DIR.
        With --tracker/--key (or --device) candidates are measured on the boards (all of a key's boards at once)."""
        from edgeres.cli_format import parse_options
        from edgeres.outputs import check_dir_output
        from edgeres.export import OnnxSource, export_onnx, resolve_source
        from edgeres.targets import get_target
        from edgeres.backends.tvm.tuning import parse_duration, tune

        check_dir_output(db, "--db", kind="tuning-db", force=force, adds=True)
        budget = parse_duration(time_budget) if time_budget else None
        spec = cli_device.resolve(device, tracker, key, devices)
        target = target or (spec.target if spec is not None else None)
        if not target:
            raise UsageError("--target is required (or a --device whose devices.toml entry names its target)")
        tgt = get_target(target)
        p = Path(source)
        is_file = p.suffix.lower() in (".onnx", ".pt", ".pth", ".ckpt", ".bin") or p.exists() or "/" in source
        src = resolve_source(source, weights if (weights or is_file) else "random")
        with tempfile.TemporaryDirectory(prefix="edgeres-tune-") as tmp:
            onnx_path = src.path if isinstance(src, OnnxSource) else export_onnx(src, Path(tmp) / "model.onnx").path
            res = tune(onnx_path, tgt, db, trials=trials, trials_per_task=trials_per_task, time_budget_s=budget,
                       progress=not quiet, log=lambda s: console.print(f"  {s}"), options=parse_options(option),
                       device=spec)
        console.print(f"[green]tuned[/green] {res.tasks_tuned} of {res.tasks_found} tasks "
                      f"({res.tasks_skipped} already in the database), {res.trials} trials in {res.seconds:.0f} s "
                      f"-> {res.db_dir}")
        console.print(f"apply it: edgeres compile MODEL --target {tgt.name} --tuning-db {res.db_dir}")
