"""Every ``--option`` a user-facing string of the package names is an option of some ``edgeres`` command.

Error messages, warnings, help texts and log lines tell users what to type; an option that does
not exist (renamed, never implemented) sends them nowhere. The strings are read with ``ast``
(f-strings included); the options come from the click command tree behind the Typer app.
Flags of other programs (trtexec, torchrun, nvidia-smi, the C++ example) are listed below per
module, and the C++ runner's are checked against its template's source.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import typer.main

from edgeres.cli import app

ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")

# module -> (the other program, its flags that module's strings name)
OTHER_PROGRAMS = {
    "edgeres/backends/tensorrt/recipe.py": ("trtexec / modelopt", {
        "onnx", "save", "min", "opt", "max", "workspace", "mem", "fp16", "int8", "use", "allow", "version",
        "hardware", "timing", "output", "no"}),  # --noTF32
    "edgeres/backends/tensorrt/trtexec.py": ("trtexec / python -m venv", {
        "avg", "duration", "export", "fp16", "help", "int8", "load", "no", "profiling", "shapes",
        "system-site-packages", "timing", "use", "warm"}),
    "edgeres/backends/tensorrt/backend.py": ("python -m venv", {"system-site-packages"}),
    "edgeres/backends/tensorrt/diagnose.py": ("python -m venv / the CUDA runtime", {"system-site-packages", "runtime"}),
    "edgeres/backends/tensorrt/cuda.py": ("nvidia-smi", {"query-gpu", "format"}),
    "edgeres/backends/tvm/cpp_runner.py": ("the C++ runner", {"shape", "topk", "logits", "labels", "repeat"}),
    "edgeres/training/dist.py": ("torchrun", {"nproc-per-node", "flag"}),
    "edgeres/training/trainer.py": ("torchrun", {"nproc-per-node"}),
}


def cli_options() -> set[str]:
    """Every long option of every command of the app (``--per-channel`` and ``--per-tensor`` both)."""
    group = typer.main.get_command(app)
    names: set[str] = {"help"}  # every command has --help (not among its params)
    for command in group.commands.values():
        for param in command.params:
            for opt in (*param.opts, *param.secondary_opts):
                if opt.startswith("--"):
                    names.add(opt[2:])
    return names


def hinted_options(root: Path = ROOT) -> dict[str, set[str]]:
    """``--name`` tokens in the string literals of each module of the package."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / "edgeres").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for m in TOKEN.finditer(node.value):
                    found.setdefault(rel, set()).add(m.group(1))
    return found


def test_the_scan_sees_fstrings_and_the_app_tree():
    options = cli_options()
    assert {"calib", "per-channel", "per-tensor", "no-plot", "resume", "targets-dir", "parser", "no-parser"} <= options
    hinted = hinted_options()
    assert "max-drop" in hinted["edgeres/cli.py"]
    assert "num-calib" in hinted["edgeres/pipeline.py"]  # inside an f-string's constant parts


def test_every_hinted_option_exists():
    options = cli_options()
    unknown = []
    for module, names in hinted_options().items():
        other = OTHER_PROGRAMS.get(module, ("", set()))[1]
        unknown += [f"{module}: --{n}" for n in sorted(names - options - other)]
    assert not unknown, "strings name options no edgeres command has: " + ", ".join(unknown)


def test_other_programs_flags_are_theirs():
    options = cli_options()
    hinted = hinted_options()
    for module, (program, flags) in OTHER_PROGRAMS.items():
        assert flags & hinted.get(module, set()), f"{module} no longer names {program} flags; drop the entry"
    # The C++ runner's flags are real: its template parses them.
    source = (ROOT / "edgeres" / "backends" / "tvm" / "cpp_template" / "main.cc").read_text()
    for flag in OTHER_PROGRAMS["edgeres/backends/tvm/cpp_runner.py"][1]:
        assert f'"--{flag}"' in source, flag
    assert "nproc-per-node" not in options  # edgeres's own flag is --nproc
