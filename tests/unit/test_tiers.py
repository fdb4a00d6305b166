"""The unit tier stays fast: no unit test asks for a fixture that trains a model (tests/conftest.py).

Training ResNet-20 for the session costs ~40 s; unit tests that fail or measure before weights
matter use random weights (``random_r20``, ``random_r20_onnx``) or train a tiny net themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

UNIT = Path(__file__).resolve().parent
TRAINED_FIXTURES = {"trained_r20", "r20_onnx", "fragile_r20"}


def _requested_fixtures(path: Path) -> dict[str, set[str]]:
    """test or fixture function -> the parameter names it requests."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = {a.arg for a in node.args.args + node.args.kwonlyargs}
    return out


def test_no_unit_test_needs_a_trained_model():
    found = [f"{path.name}::{name} ({', '.join(sorted(args & TRAINED_FIXTURES))})"
             for path in sorted(UNIT.glob("*.py"))
             for name, args in _requested_fixtures(path).items() if args & TRAINED_FIXTURES]
    assert not found, "unit tests using a trained-model fixture (move them to tests/e2e or use random weights): " \
        + "; ".join(found)


def test_the_scan_sees_fixture_parameters(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_a(cli, trained_r20):\n    pass\n\ndef helper(x):\n    pass\n")
    assert _requested_fixtures(probe) == {"test_a": {"cli", "trained_r20"}, "helper": {"x"}}
