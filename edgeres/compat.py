"""Shims for the oldest Python edgeres supports (3.10, JetPack 6's system Python), and the one
place that says what to install when PyTorch is missing.

PyTorch is an optional extra (``edgeres[train]``): training, export from a checkpoint or a zoo
name, and the model zoo need it; the device side (targets, run, validate, selftest,
build-engine, doctor, check-qdq) never imports it.
"""

from __future__ import annotations

import importlib.util

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib  # type: ignore[no-redef]

TORCH_EXTRA = "edgeres[train]"
TORCH_HINT = (f"install it with: pip install '{TORCH_EXTRA}' (on a CPU-only host pin the CPU build first: "
              "pip install torch==2.13.0)")


def torch_missing_message(what: str) -> str:
    """The one-line error for ``what`` (e.g. "edgeres train") when PyTorch is not installed."""
    return f"{what} needs PyTorch, which is not installed here; {TORCH_HINT}"


def require_torch(what: str) -> None:
    """Raise BackendUnavailable (exit 2, one line naming the extra) when PyTorch cannot be imported.

    Checks without importing torch (importing it takes seconds)."""
    from edgeres.errors import BackendUnavailable

    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BackendUnavailable(torch_missing_message(what))


__all__ = ["TORCH_EXTRA", "require_torch", "tomllib", "torch_missing_message"]
