"""List commands of the ``edgeres`` CLI: models, targets (registered on the app in cli.py).

Names are never cut at 80 columns; long text goes to ``edgeres targets NAME`` or ``--verbose``;
``--json`` prints the list for scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

JsonList = typer.Option(False, "--json", help="Print the list as JSON (for scripts).")


def register(app: typer.Typer, console, targets_dir_option) -> None:  # noqa: ANN001
    @app.command()
    def models(pattern: Optional[str] = typer.Argument(None, help="fnmatch pattern, e.g. 'resnet*' or 'plain*'."),
               as_json: bool = JsonList):
        """List the model zoo."""
        from edgeres.models import list_models

        rows = [{"name": m.name, "family": m.family, "depth": m.depth, "block": m.block,
                 "shortcut": m.shortcut_default if m.residual else "none (plain)", "classes": m.default_num_classes,
                 "input": f"{m.default_input_size}x{m.default_input_size}"} for m in list_models(pattern)]
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        t = Table(title="edgeres model zoo")
        for c in ("name", "family", "depth", "block", "shortcut", "classes", "input"):
            t.add_column(c, no_wrap=c == "name")
        for r in rows:
            t.add_row(*(str(v) for v in r.values()))
        console.print(t)

    @app.command()
    def targets(
        name: Optional[str] = typer.Argument(None, help="Show one target in detail (name, alias or .toml file)."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="List the descriptions too."),
        as_json: bool = JsonList,
        targets_dir: Optional[List[Path]] = targets_dir_option,
    ):
        """List the hardware targets (targets/*.toml); `edgeres targets NAME` shows one in detail."""
        from edgeres.targets import get_target, list_targets

        found = [get_target(name, targets_dir or ())] if name else list_targets(targets_dir or ())
        if as_json:
            print(json.dumps([{**t.to_dict(), "source": t.source} for t in found], indent=2))
        elif name:
            console.print(target_details(found[0]))
        else:
            console.print(targets_table(found, verbose=verbose))


def targets_table(targets: list, verbose: bool = False) -> Table:
    """The ``edgeres targets`` list: short columns that fit 80 columns, names never cut; the
    descriptions only with ``verbose`` (``edgeres targets NAME`` shows one target in full)."""
    from rich import box

    t = Table(title="edgeres targets", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    t.add_column("name", no_wrap=True, style="bold")
    if verbose:  # the descriptions get the width: name + description only
        t.add_column("description")
        for tg in targets:
            t.add_row(tg.name, tg.description)
        t.caption = "details: edgeres targets NAME"
        return t
    t.caption = "* default precision · details: edgeres targets NAME · descriptions: --verbose"
    t.add_column("backend", no_wrap=True)
    t.add_column("arch", no_wrap=True)
    t.add_column("precisions", no_wrap=True)
    t.add_column("aliases", overflow="fold")
    for tg in targets:
        precs = " ".join(f"{p}*" if p == tg.default_precision else p for p in tg.precisions)
        t.add_row(tg.name, tg.backend, tg.arch, precs, ", ".join(tg.aliases))
    return t


def target_details(tg) -> Table:  # noqa: ANN001
    """One target in full: every field, its backend options and the file it came from."""
    t = Table(title=f"target {tg.name}", show_header=False, box=None, padding=(0, 2, 0, 0))
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    d = tg.to_dict()
    options = d.pop("options")
    d["aliases"] = ", ".join(d["aliases"]) or "-"
    d["precisions"] = ", ".join(d["precisions"])
    for k, v in d.items():
        t.add_row(k, str(v))
    for k, v in options.items():
        t.add_row(f"{tg.backend}.{k}", json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    t.add_row("file", tg.source or "-")
    return t
