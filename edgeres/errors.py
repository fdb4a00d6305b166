"""Errors a user can fix. Every message says what is wrong and how to fix it.

The CLI turns an :class:`EdgeresError` into one line on stderr and exits with
``exit_code`` (2: bad usage or input, 1: an accuracy regression). Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeresError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is the CLI's exit status."""

    exit_code = 2


class UsageError(EdgeresError):
    """Options that do not fit together, or a value out of range."""


class InputError(EdgeresError):
    """A file or directory that is missing, empty, corrupt or of the wrong kind."""


class ModelNotFound(EdgeresError):
    """An unknown model name."""


class TargetNotFound(EdgeresError):
    """An unknown hardware target."""


class BackendUnavailable(EdgeresError):
    """A backend whose Python package (or hardware) is missing; says which extra to install."""


class CompileError(EdgeresError):
    """A backend failed to build an artifact."""


class ParityError(EdgeresError):
    """Two runtimes disagree on the same model beyond tolerance (e.g. ONNX export vs PyTorch)."""


class AccuracyRegression(EdgeresError):
    """Accuracy fell further than the user allowed; exit code 1 so CI can gate on it."""

    exit_code = 1


class DeviceError(EdgeresError):
    """A remote board (RPC server or tracker) that cannot be reached, or that dropped the connection."""
