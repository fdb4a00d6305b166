"""Shims for the oldest Python edgeres supports (3.10, JetPack 6's system Python)."""

from __future__ import annotations

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["tomllib"]
