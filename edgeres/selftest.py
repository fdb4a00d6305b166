"""``edgeres selftest BUNDLE``: run the bundle's artifact on this machine on its golden inputs and
compare with the outputs recorded at compile time (see :mod:`edgeres.golden`).

    >>> from edgeres.selftest import run_selftest
    >>> res = run_selftest("bundles/r20")
    >>> res.passed, res.line()
    (True, 'PASS ... 8 golden inputs: max abs err 2.1e-06 (limit 0.0171, ...)')

A bundle whose artifact is built on the device (no engine yet) is checked by running its
deployed ONNX on ONNX Runtime, and the result says so. An artifact that cannot run here (its
backend is missing, or it was compiled for CPU features this machine lacks) is refused with
BackendUnavailable before anything runs: never a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeres.bundle import Bundle, load_bundle
from edgeres.golden import GoldenCheck, check, read_golden


@dataclass(frozen=True)
class SelftestResult:
    bundle: Path
    runner: str  # what ran: the artifact, or the deployed ONNX on ONNX Runtime
    check: GoldenCheck
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.check.passed

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        why = "" if self.passed else f" -- {'; '.join(self.check.reasons)}"
        return f"{verdict} selftest of {self.bundle} ({self.runner}): {self.check.numbers()}{why}"

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "runner": self.runner, "passed": self.passed, "note": self.note,
                **self.check.to_dict()}


def selftest_runner(b: Bundle) -> tuple[Any, str, str]:
    """(runner, what it is, note) for the bundle's artifact on this machine."""
    from edgeres.backends import get_backend, reference_runner

    backend = get_backend(b.backend, require=False)
    art = b.artifact()
    if art is None:
        if not backend.capabilities.device_build:
            from edgeres.errors import InputError

            raise InputError(f"bundle {b.root} holds no compiled artifact; recompile it with `edgeres compile`")
        note = (f"no {b.backend} artifact in the bundle yet: checked the deployed ONNX ({b.deploy_onnx.name}) "
                f"on ONNX Runtime instead; build it on the device with `edgeres build-engine {b.root}`, "
                "which runs this self-test on the result")
        return reference_runner(b.deploy_onnx), f"ONNX Runtime on {b.deploy_onnx.name}, no engine yet", note
    runner = backend.load(art)  # BackendUnavailable (exit 2) when it cannot run here
    return runner, f"{art.backend} artifact {art.path.relative_to(b.root).as_posix()}", ""


def run_selftest(bundle: str | os.PathLike | Bundle, *, verify: bool = True, device: Any = None) -> SelftestResult:
    """Run the bundle's golden self-test here, or with ``device`` (an :class:`edgeres.devices.DeviceSpec`)
    on that board through the backend's ``open_device``; the caller decides what a FAIL means (the CLI
    exits 1)."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=verify)
    golden = read_golden(b.root, b.manifest.get("golden"))
    if device is None:
        runner, what, note = selftest_runner(b)
        return SelftestResult(b.root, what, check(runner(golden.inputs), golden), note)
    from edgeres.backends import get_backend
    from edgeres.errors import UsageError

    art = b.artifact()
    if art is None:
        raise UsageError(f"bundle {b.root} holds no compiled artifact to run on {device.label}; build it first")
    backend = get_backend(b.backend)
    with backend.open_device(device) as board:
        runner = board.load(art)  # refuses an artifact the board cannot run, before uploading it
        what = f"{art.backend} artifact {art.path.relative_to(b.root).as_posix()} on {device.label}"
        return SelftestResult(b.root, what, check(runner(golden.inputs), golden), "")


__all__ = ["SelftestResult", "run_selftest", "selftest_runner"]
