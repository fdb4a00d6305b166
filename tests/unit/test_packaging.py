"""The wheel must carry every subpackage and the target TOML files (installed users have no checkout)."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "edgeres").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_wheel_ships_targets_and_templates(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("edgeres-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tomls = {Path(n).name for n in names if n.startswith("edgeres/_targets/") and n.endswith(".toml")}
    assert {p.name for p in (ROOT / "targets").glob("*.toml")} == tomls
    # installed from the wheel (not the checkout), targets resolve from package data
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = "import edgeres.targets as t; print(sorted(x.name for x in t.list_targets()))"
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "x86-64" in r.stdout and str(site) in subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); import edgeres; print(edgeres.__file__)"],
        capture_output=True, text=True, cwd=tmp_path).stdout
