"""The wheel must carry every subpackage, the target TOML files and both backends' C++ templates
(installed users have no checkout); installed from the wheel, targets and templates load from it."""

import hashlib
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = {backend: ROOT / "edgeres" / "backends" / backend / "cpp_template" for backend in ("tvm", "tensorrt")}

# Run from the unpacked wheel: where edgeres was imported from, the targets, and each backend's C++
# template as the package writes it into a bundle (file name -> sha256).
_INSTALLED_PROBE = """
import hashlib, json, sys, tempfile
from pathlib import Path
import edgeres, edgeres.targets
from edgeres.backends.tensorrt import copy_cpp_template
from edgeres.backends.tvm.cpp_runner import write_cpp_runner
out = Path(tempfile.mkdtemp())
digest = lambda files: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
print(json.dumps({
    "edgeres": edgeres.__file__,
    "targets": sorted(t.name for t in edgeres.targets.list_targets()),
    "tensorrt": digest(copy_cpp_template(out / "trt")),
    "tvm": digest(sorted(write_cpp_runner(out / "tvm").iterdir())),
}))
"""


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


def _template_files(backend: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(TEMPLATES[backend].iterdir()) if p.is_file()}


def test_wheel_ships_targets_and_templates(built_wheel, tmp_path):
    names = set(zipfile.ZipFile(built_wheel).namelist())
    tomls = {Path(n).name for n in names if n.startswith("edgeres/_targets/") and n.endswith(".toml")}
    assert {p.name for p in (ROOT / "targets").glob("*.toml")} == tomls
    for backend in TEMPLATES:
        files = _template_files(backend)
        assert len(files) >= 3, files  # sources, build file, README
        missing = [f for f in files if f"edgeres/backends/{backend}/cpp_template/{f}" not in names]
        assert not missing, f"the wheel lacks {backend} template files {missing}: list them as package data"

    # Installed from the wheel (not the checkout): targets resolve and both templates are written from
    # package data, byte for byte the checkout's files.
    site = tmp_path / "site"
    with zipfile.ZipFile(built_wheel) as z:
        z.extractall(site)
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n{_INSTALLED_PROBE}"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["edgeres"].startswith(str(site)), got["edgeres"]
    assert "x86-64" in got["targets"] and "jetson-agx-orin" in got["targets"]
    assert sorted(got["targets"]) == sorted(p.stem for p in (ROOT / "targets").glob("*.toml"))
    for backend in TEMPLATES:
        assert got[backend] == _template_files(backend), backend
