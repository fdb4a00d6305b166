"""``edgeres quickstart``: train a CIFAR ResNet-20 on the built-in data, compile it
INT8 with TVM for this CPU, validate it against FP32, and time it against ONNX Runtime.
It also writes one sample image per class (``WORKDIR/samples/``) to try ``edgeres run`` on."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeres.evaluate import AccuracyReport

QUICKSTART_MODEL = "resnet20"
QUICKSTART_DATA = "builtin"


@dataclass
class QuickstartResult:
    checkpoint: Path
    bundle: Path
    report: AccuracyReport
    timings: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    samples: list[Path] = field(default_factory=list)


def sample_paths(workdir: Path) -> list[Path]:
    """Where the quickstart's sample images go: ``WORKDIR/samples/<class>.png``, one per built-in class."""
    from edgeres.data.builtin import BUILTIN_CLASSES

    return [workdir / "samples" / f"{name}.png" for name in BUILTIN_CLASSES]


def write_samples(workdir: Path) -> list[Path]:
    """One validation image of each built-in class as a PNG (marked as written by edgeres)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from edgeres import __version__
    from edgeres.data.builtin import generate_readonly
    from edgeres.fileio import atomic_path

    images, labels = generate_readonly("val", 1, 0)
    info = PngInfo()
    info.add_text("Software", f"edgeres {__version__}")
    paths = sample_paths(workdir)
    for img, label in zip(images, labels):
        with atomic_path(paths[int(label)]) as tmp:
            Image.fromarray(img).save(tmp, format="PNG", pnginfo=info)
    return paths


def run_quickstart(
    workdir: str | Path = "edgeres-quickstart",
    *,
    epochs: int | None = None,
    target: str = "x86-64-host",
    precision: str = "int8",
    progress: bool = True,
    log: Callable[[str], None] = print,
    force: bool = False,
) -> QuickstartResult:
    """Run the quickstart in ``workdir``; its outputs are checked before any work (files there that
    edgeres did not write are replaced only with ``force``, see :mod:`edgeres.outputs`)."""
    from edgeres.latency import measure_latency
    from edgeres.outputs import check_dir_output, check_file_outputs
    from edgeres.pipeline import compile_bundle, preflight
    from edgeres.training import train
    from edgeres.training.state import output_paths

    preflight(target, precision)  # an unknown target or a missing backend fails before training
    workdir = Path(workdir)
    ckpt = workdir / f"{QUICKSTART_MODEL}.pt"
    bundle = workdir / f"bundle-{QUICKSTART_MODEL}-{target}-{precision}"
    check_file_outputs([*vars(output_paths(ckpt)).values(), *sample_paths(workdir)], "--workdir", force=force)
    check_dir_output(bundle, "--workdir", kind="bundle", force=force)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    log(f"[1/3] training {QUICKSTART_MODEL} on the built-in data set -> {ckpt}")
    train(QUICKSTART_MODEL, QUICKSTART_DATA, ckpt, recipe="quick", epochs=epochs, progress=progress)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[2/3] compiling {precision.upper()} for {target} -> {bundle}")
    res = compile_bundle(
        str(ckpt), target, bundle, precision=precision, calib=QUICKSTART_DATA, val=QUICKSTART_DATA,
        log=lambda s: log(f"      {s}"), force=force, progress=progress,
    )
    timings.update({f"compile.{k}": v for k, v in res.timings.items()})
    timings["compile"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[3/3] measuring batch-1 latency (median) against ONNX Runtime")
    latency = measure_latency(bundle, ("artifact", "onnxruntime-fp32", "onnxruntime-int8"), repeats=30)
    timings["bench"] = time.perf_counter() - t
    assert res.report is not None  # val was given
    return QuickstartResult(ckpt, bundle, res.report, timings, latency, write_samples(workdir))
