"""Device-side commands of the ``edgeres`` CLI: build-engine, selftest, doctor, check-qdq (registered on the
app in cli.py). None of them needs torch."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeres import cli_device
from edgeres.cli_format import Force, console, parse_options

def build_engine_cmd(
    bundle: Path = typer.Argument(..., help="Bundle from `edgeres compile --target jetson...`."),
    data: Optional[str] = typer.Option(None, "--data", help="Also validate the engine on these labelled images."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop"),
    limit: Optional[int] = typer.Option(None, "--limit"),
    option: Optional[List[str]] = typer.Option(None, "--option", help="Builder option key=value (dla_core=0, workspace_mb=1024)."),
    selftest: bool = typer.Option(True, "--selftest/--no-selftest", help="Run the bundle's golden self-test on the engine."),
):
    """On the device: build the bundle's TensorRT engine (Python API, else JetPack's trtexec), self-test it, record it."""
    from edgeres.backends.tensorrt.device_build import build_bundle_engine

    res = build_bundle_engine(bundle, options=parse_options(option), data=data, max_drop=max_drop, limit=limit,
                       selftest=selftest, log=lambda s: console.print(f"  {s}", markup=False, highlight=False))
    art = res.bundle.manifest["artifact"]
    repro = art["info"].get("reproducibility", {})
    cache = repro.get("timing_cache") or {}
    console.print(f"[green]engine[/green] {res.bundle.root}/artifact/{art['file']} "
                  f"(TensorRT {art['info'].get('tensorrt_version', '?')}, {art['compile_seconds']:.1f} s, "
                  f"{'trtexec' if res.method == 'trtexec' else 'Python API'})")
    console.print(f"  layers: {res.placement}", markup=False, highlight=False)
    if cache:
        console.print(f"  timing cache: {cache['path']} ({'reused' if cache.get('reused') else 'new'})",
                      markup=False, highlight=False)
    if res.selftest is not None:
        console.print(res.selftest.line(), markup=False, highlight=False)
    if res.report is not None:
        from edgeres.cli_format import any_report_table

        console.print(any_report_table(res.report))

def selftest(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the numbers as JSON."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check every file's sha256 first."),
    device: Optional[str] = cli_device.DeviceOpt,
    tracker: Optional[str] = cli_device.TrackerOpt,
    key: Optional[str] = cli_device.KeyOpt,
    devices: Optional[List[Path]] = cli_device.DevicesOpt,
    force: bool = Force,
):
    """Run the bundle's golden self-test on this machine (or, with --device/--tracker, on the board):
    PASS/FAIL with numbers (exit 1 on FAIL)."""
    from edgeres.fileio import write_json
    from edgeres.selftest import run_selftest

    from edgeres.outputs import check_option_outputs

    check_option_outputs([(json_out, "--json")], force=force)
    spec = cli_device.resolve(device, tracker, key, devices)
    res = run_selftest(bundle, verify=verify, device=spec)
    if res.note:
        console.print(f"note: {res.note}", markup=False, highlight=False)
    console.print(res.line(), markup=False, highlight=False)
    if json_out:
        write_json(json_out, {"format": "edgeres.selftest/1", **res.to_dict()})
    if not res.passed:
        raise typer.Exit(1)

def doctor(
    target: Optional[str] = typer.Option(None, "--target", help="Check what this target needs (name or .toml)."),
    json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
):
    """What this machine has and lacks (for a target): Python, TensorRT, CUDA, GPU, DLA, trtexec -- with fixes.

    Exit 0 when everything required is present, 2 when something is missing."""
    import json

    from rich.table import Table

    from edgeres.doctor import diagnose

    rep = diagnose(target)
    if json_out:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        t = Table(title=f"edgeres doctor{f' --target {rep.target}' if rep.target else ''}")
        for c in ("", "check", "found", "fix"):
            t.add_column(c, overflow="fold")
        for c in rep.checks:
            mark = "ok" if c["ok"] else ("MISSING" if c["required"] else "warn")
            t.add_row(mark, c["name"], c["found"], c["fix"])
        console.print(t)
        console.print("ready" if rep.ready else f"missing: {', '.join(rep.missing)}", markup=False)
    if not rep.ready:
        raise typer.Exit(2)

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


def register(app: typer.Typer, console_=None) -> None:  # noqa: ANN001 - cli.py passes its (the same) console
    app.command(name="build-engine")(build_engine_cmd)
    app.command(name="selftest")(selftest)
    app.command(name="doctor")(doctor)
    app.command(name="check-qdq")(check_qdq_cmd)
