"""The example GitHub Actions workflow (examples/ci/) runs edgeres commands that exist, with options
they accept: every ``edgeres ...`` line is parsed by the real CLI (click, through Typer)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "examples" / "ci" / "edgeres-accuracy.yml"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def run_scripts(text: str) -> list[str]:
    """The ``run:`` scalars of a workflow (plain, ``|`` literal or ``>`` folded blocks): enough YAML for this."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s+)?run:\s*(.*?)\s*$", lines[i])
        i += 1
        if not m:
            continue
        key_indent, value = len(m.group(1)), m.group(2)
        if not value or value[0] not in "|>":
            out.append(value.strip("'\""))
            continue
        block = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > key_indent):
            block.append(lines[i].strip())
            i += 1
        out.append(" ".join(b for b in block if b) if value[0] == ">" else "\n".join(block))
    return out


def workflow_env(text: str) -> dict[str, str]:
    """The top-level ``env:`` mapping (KEY: value lines under it)."""
    env, inside = {}, False
    for line in text.splitlines():
        if re.match(r"^env:\s*$", line):
            inside = True
            continue
        if inside:
            if not line.strip() or line.strip().startswith("#"):
                continue
            m = re.match(r"^\s+([A-Z_][A-Z0-9_]*):\s*(\"[^\"]*\"|'[^']*'|[^#\s]+)", line)
            if not m:
                break
            env[m.group(1)] = m.group(2).strip("'\"")
    return env


def edgeres_commands(scripts: list[str], env: dict[str, str]) -> list[list[str]]:
    """Each ``edgeres ...`` command line as argv, variables expanded from ``env``."""
    cmds = []
    for script in scripts:
        script = script.replace("\\\n", " ")
        script = re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), script)
        for line in script.splitlines():
            for part in re.split(r"&&|\|\||;|\|", line):
                argv = shlex.split(part, comments=True)
                if argv and Path(argv[0]).name == "edgeres":
                    cmds.append(argv[1:])
    return cmds


def test_the_workflow_runs_existing_edgeres_commands_with_their_options(tmp_path):
    from edgeres.cli import app

    text = WORKFLOW.read_text()
    env = {**workflow_env(text), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    assert env.get("MAX_DROP") and env.get("TARGET")
    cmds = edgeres_commands(run_scripts(text), env)
    names = [c[0] for c in cmds]
    assert {"compile", "validate", "report"} <= set(names), names
    group = typer.main.get_command(app)
    for argv in cmds:
        sub = group.commands.get(argv[0])
        assert sub is not None, f"the workflow runs `edgeres {argv[0]}`, which does not exist"
        # click parses the arguments as a user's shell would pass them: unknown options, missing
        # values and wrong types (e.g. --max-drop "1.0") raise here.
        try:
            sub.make_context(f"edgeres {argv[0]}", list(argv[1:]))
        except Exception as e:  # noqa: BLE001 - click.UsageError / BadParameter
            pytest.fail(f"`edgeres {' '.join(argv)}` is rejected by the CLI: {e}")
    validate = next(c for c in cmds if c[0] == "validate")
    for opt in ("--max-drop", "--junit", "--summary"):
        assert opt in validate
    assert validate[validate.index("--summary") + 1] == env["GITHUB_STEP_SUMMARY"]
    junit = validate[validate.index("--junit") + 1]
    # the JUnit file the validate step writes is the one the publishing step reads and uploads
    assert re.search(r"uses:\s*mikepenz/action-junit-report@v\d+", text)
    assert re.search(rf"report_paths:\s*{re.escape(junit)}\s*$", text, re.M)
    assert re.search(r"uses:\s*actions/upload-artifact@v\d+", text)
    assert "torch==2.13.0" in text  # pinned, as the README


def test_the_parser_reads_block_scalars():
    text = "jobs:\n  a:\n    steps:\n      - run: edgeres models\n      - name: x\n        run: |\n" \
           "          echo hi\n          edgeres targets --targets-dir d\n      - run: >-\n" \
           "          edgeres validate b --data d\n          --max-drop \"$M\"\n      - uses: y\n"
    scripts = run_scripts(text)
    assert scripts == ["edgeres models", "echo hi\nedgeres targets --targets-dir d",
                       "edgeres validate b --data d --max-drop \"$M\""]
    assert edgeres_commands(scripts, {"M": "1.5"})[-1] == ["validate", "b", "--data", "d", "--max-drop", "1.5"]
