"""The README's command block runs top to bottom, as a new user would paste it after the set-up
(as Polygraphy tests its README): in a fresh temporary folder, with the set-up's virtualenv active.

Runs the ```bash block of "## Commands" line by line, then the Python snippet of "### Bundles" (it
uses the bundle the block wrote). Commands that need hardware or weights this machine cannot have
are listed in NOT_RUN with the reason; there are none in that block today.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: README lines (exactly as written) that this machine cannot run, and why.
NOT_RUN: dict[str, str] = {}
ACTIVATE = "source .venv/bin/activate"


def _block(text: str, heading: str, lang: str) -> str:
    """The first ```lang fenced block after ``heading``."""
    start = text.index(heading)
    m = re.compile(rf"^```{lang}\n(.*?)^```", re.S | re.M).search(text, start)
    assert m, f"no ```{lang} block after {heading!r}"
    return m.group(1)


def readme_commands() -> list[str]:
    lines = []
    for raw in _block((ROOT / "README.md").read_text(), "## Commands", "bash").splitlines():
        words = shlex.split(raw, comments=True)
        if words:
            lines.append(shlex.join(words))
    return lines


def test_readme_block_is_what_this_test_expects():
    cmds = readme_commands()
    assert cmds[0] == ACTIVATE, "the block starts by putting edgeres on PATH"
    assert all(c.startswith("edgeres ") for c in cmds[1:]), cmds
    for line in NOT_RUN:
        assert line in cmds, f"NOT_RUN lists {line!r}, which the README no longer has"


@pytest.mark.slow
def test_readme_commands_run_top_to_bottom(tmp_path):
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "PYTHONPATH")}
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    times = []
    for cmd in readme_commands():
        if cmd == ACTIVATE:  # what `source .venv/bin/activate` does for the commands that follow
            env["PATH"] = f"{venv_bin}{os.pathsep}{env['PATH']}"
            env["VIRTUAL_ENV"] = str(venv_bin.parent)
            continue
        if cmd in NOT_RUN:
            continue
        t = time.perf_counter()
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        times.append((cmd, time.perf_counter() - t))
        assert r.returncode == 0, f"README command failed: {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr
    snippet = _block((ROOT / "README.md").read_text(), "### Bundles", "python")
    r = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"README Python snippet failed:\n{snippet}\n{r.stderr[-3000:]}"
    assert "circle" in r.stdout
    print("\n".join(f"{s:7.1f} s  {c}" for c, s in times))
