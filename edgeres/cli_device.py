"""Commands and options for boards over the network (registered on the app in cli.py).

``edgeres serve-device`` (on the board) and ``edgeres profile``; the ``--device`` /
``--tracker`` / ``--key`` / ``--devices`` options that ``bench``, ``validate`` and ``profile``
share, and the remote bench table. The work is done by :mod:`edgeres.devices`,
:func:`edgeres.latency.measure_on_device` and the backend's ``open_device`` / ``profile``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from edgeres.cli_format import Force
from edgeres.errors import UsageError
from edgeres.outputs import check_option_outputs

DeviceOpt = typer.Option(None, "--device", help="The board: HOST:PORT of its TVM RPC server, or a name from "
                         "devices.toml (README 'Measure on your board').")
TrackerOpt = typer.Option(None, "--tracker", help="A TVM RPC tracker HOST:PORT: use any free board under --key.")
KeyOpt = typer.Option(None, "--key", help="With --tracker: the key the boards registered with (e.g. rpi5).")
DevicesOpt = typer.Option(None, "--devices", help="A devices file (TOML) to search before $EDGERES_DEVICES "
                          "and ./devices.toml.")


def resolve(device: Optional[str], tracker: Optional[str], key: Optional[str],
            devices: Optional[List[Path]]) -> Any:
    """The DeviceSpec the options name, or None."""
    from edgeres.devices import resolve_device

    return resolve_device(device, tracker=tracker, key=key, devices=devices or ())


def emulated_note(board: dict) -> str:
    return ("EMULATED: this 'board' is qemu on another CPU; its times say nothing about the real board's speed"
            if board.get("emulated") else "")


def print_remote_bench(res: dict, console: Any) -> None:
    from edgeres.backends.tvm.device_server import summary_line

    board = res["board"]
    unit = "emulated ms" if res["emulated"] else "ms"
    t = Table(title=f"latency on {res['device']}: {summary_line(board)}")
    for c in ("runner", f"median {unit}", "p90", "p99", "images/s", "vs artifact"):
        t.add_column(c, justify="left" if c == "runner" else "right")
    base = res["runners"]["artifact"]["median_ms"]
    for name, s in res["runners"].items():
        t.add_row(name, f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}",
                  f"{s['images_per_s']:.1f}", f"{s['median_ms'] / base:.2f}x")
    batch = res["runners"]["artifact"]["batch"]
    t.caption = f"batch {batch}, {res['runners']['artifact']['samples']} runs, timed on the board by TVM's time_evaluator"
    console.print(t)
    for n in res["notes"]:
        console.print(f"[yellow]note:[/yellow] {n}")
    if res["emulated"]:
        console.print(f"[yellow]{emulated_note(board)}[/yellow]")


def profile_table(res: dict, top: int) -> tuple[Table, Table]:
    unit = "emulated ms" if res.get("emulated") else "ms"
    e2e = res["end_to_end_ms"]["median"]
    variant = f", variant {res['variant']}" if res.get("variant") else ""
    t = Table(title=f"per-stage latency ({res.get('where', 'this machine')}{variant})")
    for c in ("stage", unit, "share", "kernels"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    total = res["kernels_ms"]
    for s in res["stages"]:
        t.add_row(s["stage"], f"{s['ms']:.3f}", f"{100 * s['ms'] / total:.1f}%" if total else "-", str(s["kernels"]))
    t.add_row("sum of stages", f"{total:.3f}", "", str(sum(s["kernels"] for s in res["stages"])))
    t.caption = (f"end-to-end median {e2e:.3f} {unit} in the same run; the stages cover {100 * res['coverage']:.1f}% "
                 "of it (the rest: VM calls between kernels)" if e2e else "")
    ops = sorted(res["operators"], key=lambda o: -o["ms"])[:top]
    k = Table(title=f"slowest {len(ops)} operators")
    for c in ("#", "operator", "stage", unit, "output"):
        k.add_column(c, justify="right" if c in ("#", unit) else "left")
    for o in ops:
        k.add_row(str(o["index"]), o["name"], o["stage"], f"{o['ms']:.3f}", "x".join(map(str, o["shape"])))
    return t, k


def register(app: typer.Typer, console: Any) -> None:  # noqa: C901 - one closure per command
    @app.command(name="serve-device")
    def serve_device(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 127.0.0.1 (default) is this "
                                 "machine only: reach it through an SSH tunnel. 0.0.0.0 opens it to the network."),
        port: int = typer.Option(9090, "--port", help="Port to listen on."),
        port_end: Optional[int] = typer.Option(None, "--port-end", help="Search free ports up to this one."),
        tracker: Optional[str] = typer.Option(None, "--tracker", help="Register with this tracker, HOST:PORT."),
        key: Optional[str] = typer.Option(None, "--key", help="The key to register under (e.g. rpi5)."),
        custom_addr: Optional[str] = typer.Option(None, "--custom-addr", help="The address the tracker gives clients."),
    ):
        """On the board: TVM's RPC server, plus the board's description, ONNX Runtime and per-operator profiles."""
        from edgeres.backends.tvm.device_server import serve
        from edgeres.devices import parse_address

        if tracker:
            parse_address(tracker, "--tracker")
            if not key:
                raise UsageError("--tracker needs --key (e.g. --key rpi5)")
        serve(host, port, port_end=port_end, tracker=tracker, key=key or "", custom_addr=custom_addr,
              log=lambda s: console.print(s, markup=False, highlight=False))

    @app.command()
    def profile(
        bundle: Path = typer.Argument(..., help="Bundle directory."),
        device: Optional[str] = DeviceOpt,
        tracker: Optional[str] = TrackerOpt,
        key: Optional[str] = KeyOpt,
        devices: Optional[List[Path]] = DevicesOpt,
        repeats: int = typer.Option(10, "--repeats", help="Timed runs per operator (median)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Write the profile as JSON."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Write a bar chart of the stages (.png)."),
        top: int = typer.Option(10, "--top", help="How many of the slowest operators to list."),
        force: bool = Force,
    ):
        """Per-operator latency grouped per ResNet stage (stem, layer1..N, head), here or on a board."""
        from edgeres.backends import get_backend
        from edgeres.backends.tvm.device_server import summary_line
        from edgeres.bundle import load_bundle
        from edgeres.errors import InputError

        if repeats < 3:
            raise UsageError("--repeats must be at least 3")
        check_option_outputs([(json_out, "--json"), (plot, "--plot")], force=force)
        spec = resolve(device, tracker, key, devices)
        b = load_bundle(bundle)
        art = b.artifact()
        if art is None:
            raise InputError(f"bundle {b.root} holds no compiled artifact to profile")
        backend = get_backend(b.backend)
        if not backend.capabilities.profile:
            raise UsageError(f"the {b.backend} backend has no per-operator profile; profile a TVM bundle")
        if spec is None:
            res = backend.profile(art, repeats=repeats)
            res["where"], res["emulated"] = "this machine", False
        else:
            with backend.open_device(spec) as board:
                res = board.profile(art, repeats=repeats)
                res["board"] = board.describe()
            res["where"], res["emulated"] = f"{spec.label}: {summary_line(res['board'])}", bool(res["board"].get("emulated"))
        res = {"bundle": str(b.root), "model": b.manifest["model"]["name"], "target": b.target_name, **res}
        stages, ops = profile_table(res, top)
        console.print(stages)
        console.print(ops)
        if res["emulated"]:
            console.print(f"[yellow]{emulated_note(res['board'])}[/yellow]")
        if json_out:
            from edgeres.fileio import write_json

            write_json(json_out, {"format": "edgeres.profile/1", **res})
            console.print(f"wrote {json_out}")
        if plot:
            from edgeres.plots import barh_panels

            unit = "emulated ms" if res["emulated"] else "ms"
            barh_panels(plot, [s["stage"] for s in res["stages"]], [(unit, [s["ms"] for s in res["stages"]])],
                        title=f"{res['model']} ({res['target']}) per stage, {res['where']}")
            console.print(f"wrote {plot}")


def bench_on_device(bundle: Path, spec: Any, repeats: int, json_out: Optional[Path], console: Any) -> None:
    """``edgeres bench --device``: measure on the board, print the table, optionally write JSON."""
    from edgeres.latency import measure_on_device

    res = measure_on_device(bundle, spec, repeats=repeats)
    print_remote_bench(res, console)
    if json_out:
        from edgeres.fileio import write_json

        write_json(json_out, {"format": "edgeres.bench-device/1", **res})
        console.print(f"wrote {json_out}")
