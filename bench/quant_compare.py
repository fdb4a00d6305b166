#!/usr/bin/env python
"""INT8 calibration methods compared: edgeres's four methods vs ONNX Runtime's ``quantize_static``.

    python bench/quant_compare.py                                   # train both models here (a few minutes)
    python bench/quant_compare.py --r20-checkpoint runs/r20.pt --r18-checkpoint runs/r18.pt
    python bench/quant_compare.py --models r20 --json quant.json

Models: (a) ResNet-20 trained on the built-in data (32 px), (b) ResNet-18 (ImageNet
layout) on the built-in data upsampled to ``--r18-size`` px (default 64), trained
briefly from scratch. For each: edgeres minmax / entropy / percentile / mse (cpu
form, per-channel), and ONNX Runtime's ``quantize_static`` with its defaults (QDQ,
int8 activations and weights, per-tensor, MinMax), with its Entropy method, and with
its CPU recommendation (uint8 activations, per-channel int8 weights). Every variant
calibrates from scratch on the same images; "quantize s" is the wall time of the
whole quantize call (calibration + ranges + Q/DQ + write). Accuracy: FP32 vs INT8 in
ONNX Runtime on the built-in val split: top-1 drop (points), top-1 agreement.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

EDGERES_METHODS = ("minmax", "entropy", "percentile", "mse")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_r20(out: Path, epochs: int, per_class: int) -> Path:
    from edgeres.train import train

    res = train("resnet20", f"builtin:{per_class}", out, recipe="quick", epochs=epochs, progress=False, log=log)
    log(f"resnet20: val top-1 {res.best_val_top1:.3f} after {res.epochs_run} epochs ({res.seconds:.0f} s)")
    return res.best_checkpoint


def train_r18(out: Path, epochs: int, per_class: int, size: int, batch: int = 32) -> Path:
    """ResNet-18 from scratch on the built-in data upsampled to ``size`` px: a plain loop, no per-epoch val.

    The images go through edgeres's own preprocessing (bilinear resize 32 -> ``size``)
    once and stay in memory; Adam with a cosine schedule, random horizontal flips. The
    recipe trainer's per-item resizing and per-epoch validation cost ~2 min per epoch
    here, too slow for a bench on 2 cores.
    """
    import torch
    from torch.nn import functional as F

    from edgeres.checkpoint import save_checkpoint
    from edgeres.data import BUILTIN_CLASSES, iter_batches, open_dataset
    from edgeres.models import create_model
    from edgeres.preprocessing import CIFAR_MEAN, CIFAR_STD, Preprocessing

    t0 = time.perf_counter()
    torch.manual_seed(0)
    pre = Preprocessing(input_size=(size, size), resize=size, mean=CIFAR_MEAN, std=CIFAR_STD,
                        class_names=BUILTIN_CLASSES)
    pairs = list(iter_batches(open_dataset(f"builtin:{per_class}", "train", pre), 256))
    x = torch.from_numpy(np.concatenate([p[0] for p in pairs])).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(np.concatenate([p[1] for p in pairs]))
    model = create_model("resnet18", num_classes=len(BUILTIN_CLASSES)).to(memory_format=torch.channels_last)
    steps = epochs * (len(x) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for epoch in range(epochs):
        order, seen, correct, total_loss = torch.randperm(len(x)), 0, 0, 0.0
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i: i + batch]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total_loss += float(loss.detach()) * len(idx)
        log(f"resnet18@{size} epoch {epoch + 1}/{epochs}: train loss {total_loss / seen:.3f}, "
            f"acc {correct / seen:.3f} ({time.perf_counter() - t0:.0f} s)")
    save_checkpoint(out, model.eval(), "resnet18", pre, meta={"trained_by": "bench/quant_compare.py"})
    return out


class _Reader:
    """ONNX Runtime CalibrationDataReader over the calibration batches."""

    def __init__(self, input_name: str, batches) -> None:
        self.input_name, self.it = input_name, iter(batches)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {self.input_name: x}

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax/Entropy
        raise NotImplementedError


def ort_quantize(fp32: Path, out: Path, batches, config: str) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from edgeres.backends.onnxruntime import make_runner

    name = make_runner(fp32).input_name
    kw: dict = {}
    if config == "ort-entropy":
        kw = {"calibrate_method": CalibrationMethod.Entropy}
    elif config == "ort-cpu-recommended":
        kw = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "per_channel": True}
    with contextlib.redirect_stdout(sys.stderr):  # its Entropy calibrator prints progress on stdout
        quantize_static(str(fp32), str(out), _Reader(name, batches), quant_format=QuantFormat.QDQ, **kw)


def bench_model(label: str, checkpoint: Path, work: Path, num_calib: int, val_limit: int | None) -> list[dict]:
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.data import iter_batches, open_dataset
    from edgeres.evaluate import compare
    from edgeres.export import export_onnx
    from edgeres.quantize import quantize

    loaded = load_checkpoint(checkpoint)
    pre = loaded.preprocessing
    fp32 = work / f"{label}.fp32.onnx"
    export_onnx(loaded, fp32)
    cal = open_dataset("builtin", "calib", pre, limit=num_calib, allow_unlabelled=True)
    val = open_dataset("builtin", "val", pre, limit=val_limit)
    # Decoded once, so every variant sees the same arrays; equal batch sizes (ORT's Entropy
    # calibrator stacks batches and fails on a short last one).
    bs = max(d for d in range(1, 33) if len(cal) % d == 0)
    calib_x = [x for x, _ in iter_batches(cal, bs)]
    val_b = list(iter_batches(val, 100))
    reference = make_runner(fp32)
    rows = []

    def evaluate(method: str, tool: str, path: Path, seconds: float) -> None:
        rep = compare(reference, make_runner(path), val_b)
        row = {"model": label, "input": "x".join(map(str, pre.input_size)), "tool": tool, "method": method,
               "fp32_top1": rep.reference.top1, "int8_top1": rep.artifact.top1, "drop_top1": rep.drop_top1,
               "agreement": rep.agreement_top1, "quantize_s": seconds, "num_calib": len(cal),
               "num_val": rep.num_images}
        rows.append(row)
        log(f"  {label:9s} {tool:8s} {method:22s} drop {rep.drop_top1:+6.2f}  agree {rep.agreement_top1:.4f}  "
            f"{seconds:6.1f} s")

    for method in EDGERES_METHODS:
        out = work / f"{label}.{method}.onnx"
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            quantize(fp32, out, lambda: iter(calib_x), data_fingerprint=cal.fingerprint(), method=method,
                     form="cpu", per_channel=True)
        evaluate(method, "edgeres", out, time.perf_counter() - t)
    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" warning
    for config in ("ort-default", "ort-entropy", "ort-cpu-recommended"):
        out = work / f"{label}.{config}.onnx"
        t = time.perf_counter()
        ort_quantize(fp32, out, calib_x, config)
        evaluate(config.removeprefix("ort-"), "ort", out, time.perf_counter() - t)
    return rows


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="INT8 calibration: edgeres vs ONNX Runtime quantize_static (FP32 vs INT8 in ONNX Runtime)")
    for col in ("model", "input", "tool", "method", "FP32 top-1", "INT8 top-1", "top-1 drop (pts)", "agreement",
                "quantize s"):
        t.add_column(col, justify="left" if col in ("model", "input", "tool", "method") else "right")
    for r in rows:
        t.add_row(r["model"], r["input"], r["tool"], r["method"], f"{100 * r['fp32_top1']:.1f}",
                  f"{100 * r['int8_top1']:.1f}", f"{r['drop_top1']:+.2f}", f"{100 * r['agreement']:.2f}%",
                  f"{r['quantize_s']:.1f}")
    Console(width=160).print(t)
    n = {r["model"]: (r["num_calib"], r["num_val"]) for r in rows}
    print("; ".join(f"{m}: {c} calibration / {v} val images" for m, (c, v) in n.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="r20,r18", help="comma list of r20, r18")
    ap.add_argument("--r20-checkpoint", type=Path, help="edgeres checkpoint of a ResNet-20 on the built-in data")
    ap.add_argument("--r18-checkpoint", type=Path, help="edgeres checkpoint of a ResNet-18 on the built-in data")
    ap.add_argument("--r20-epochs", type=int, default=3)
    ap.add_argument("--r18-epochs", type=int, default=2)
    ap.add_argument("--r20-per-class", type=int, default=200, help="training images per class for ResNet-20")
    ap.add_argument("--r18-per-class", type=int, default=100, help="training images per class for ResNet-18")
    ap.add_argument("--r18-size", type=int, default=64, help="ResNet-18 input size (the 32 px data is upsampled)")
    ap.add_argument("--num-calib", type=int, default=512, help="calibration images (the built-in calib split has 500)")
    ap.add_argument("--val-limit", type=int, default=None, help="validation images (default: all 1000)")
    ap.add_argument("--work", type=Path, help="keep models here (default: a temporary directory)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument("--force", action="store_true", help="replace a --json file edgeres did not write")
    args = ap.parse_args(argv)
    if args.json:
        from edgeres.outputs import check_file_output

        check_file_output(args.json, "--json", force=args.force)  # before minutes of training
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not set(models) <= {"r20", "r18"}:
        ap.error(f"unknown model in --models {args.models!r}; use r20 and/or r18")
    with tempfile.TemporaryDirectory(prefix="edgeres-quant-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows: list[dict] = []
        t0 = time.perf_counter()
        if "r20" in models:
            ck = args.r20_checkpoint or train_r20(work / "r20.pt", args.r20_epochs, args.r20_per_class)
            rows += bench_model("resnet20", ck, work, args.num_calib, args.val_limit)
        if "r18" in models:
            ck = args.r18_checkpoint or train_r18(work / "r18.pt", args.r18_epochs, args.r18_per_class,
                                                  args.r18_size)
            rows += bench_model("resnet18", ck, work, args.num_calib, args.val_limit)
        print_table(rows)
        log(f"total {time.perf_counter() - t0:.0f} s")
        if args.json:
            from edgeres.fileio import write_json

            write_json(args.json, {"format": "edgeres.bench-quant/1", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
