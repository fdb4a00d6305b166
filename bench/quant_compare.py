#!/usr/bin/env python
"""INT8 calibration compared: edgeres's methods, ``auto``, bias correction, and ONNX Runtime's ``quantize_static``.

    python bench/quant_compare.py                                   # train both models here (a few minutes)
    python bench/quant_compare.py --r20-checkpoint runs/r20.pt --r18-checkpoint runs/r18.pt
    python bench/quant_compare.py --models r20 --folder photos=data/realish/photos --json quant.json

Models: (a) ResNet-20 trained on the built-in data (32 px), (b) ResNet-18 (ImageNet
layout) on the built-in data upsampled to ``--r18-size`` px (default 64), trained
briefly from scratch, (c) per ``--folder NAME=DIR``: a ResNet-20 trained here on
``DIR/train`` (an ImageFolder with ``train``/``calib``/``val``; ``bench/realish_data.py``
writes two from real images), calibrated on ``DIR/calib``, validated on ``DIR/val``.

Rows per model and weight width (8-bit as the VNNI / ONNX Runtime targets, 7-bit as the x86
targets without VNNI quantize; cpu form, per-channel): edgeres minmax / entropy / percentile /
mse without bias correction (each calibrated on all the images: what edgeres did before
``auto``), ``auto`` (the default: held-out scoring, bias correction where it helps), ``auto``
with ``--bias-correction off``, and entropy with bias correction on; and ONNX Runtime's
``quantize_static`` (8-bit) with its defaults (QDQ, int8 activations and weights, per-tensor,
MinMax), its Entropy method and its CPU recommendation (uint8 activations, per-channel
weights). Accuracy: FP32 vs INT8 in ONNX Runtime on the val images (top-1 drop in points,
top-1 agreement). Cost: ``entropy`` and ``auto`` each calibrated from scratch ``--repeats``
times, alternating; the median wall time of the whole quantize call and their ratio.

ModelOpt's ONNX PTQ is not compared: its ``[onnx]`` extra pulls onnxruntime-gpu and cupy (a
2 GB environment) and it does not install CPU-only here.
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
    from edgeres.training import train

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


def train_folder_r20(out: Path, root: Path, epochs: int, batch: int = 64) -> Path:
    """ResNet-20 on ``root/train`` (an ImageFolder), in memory: Adam, cosine, flips and 4-px shifts."""
    import torch
    from torch.nn import functional as F

    from edgeres.checkpoint import save_checkpoint
    from edgeres.data import iter_batches, open_dataset
    from edgeres.data.folder import scan_folder
    from edgeres.models import create_model
    from edgeres.preprocessing import cifar_preprocessing

    t0 = time.perf_counter()
    torch.manual_seed(0)
    names = scan_folder(root / "train").class_names
    pre = cifar_preprocessing(32, names)
    pairs = list(iter_batches(open_dataset(root, "train", pre, class_names=names), 256))
    x = torch.from_numpy(np.concatenate([p[0] for p in pairs]))
    y = torch.from_numpy(np.concatenate([p[1] for p in pairs]))
    model = create_model("resnet20", num_classes=len(names))
    steps = epochs * (len(x) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for epoch in range(epochs):
        order, seen, correct = torch.randperm(len(x)), 0, 0
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i: i + batch]
            xb = torch.where((torch.rand(len(idx)) < 0.5)[:, None, None, None], x[idx].flip(3), x[idx])
            dy, dx = (int(v) for v in torch.randint(-4, 5, (2,)))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            logits = model(xb)
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        log(f"resnet20@{root.name} epoch {epoch + 1}/{epochs}: train acc {correct / seen:.3f} "
            f"({time.perf_counter() - t0:.0f} s)")
    save_checkpoint(out, model.eval(), "resnet20", pre, meta={"trained_by": "bench/quant_compare.py"})
    return out


def _median_seconds(fn, repeats: int) -> float:
    import statistics

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_model(label: str, checkpoint: Path, work: Path, num_calib: int, val_limit: int | None,
                data: str = "builtin", repeats: int = 2) -> tuple[list[dict], dict]:
    from edgeres.backends.onnxruntime import make_runner
    from edgeres.checkpoint import load_checkpoint
    from edgeres.data import iter_batches, open_dataset
    from edgeres.evaluate import compare
    from edgeres.export import export_onnx
    from edgeres.quantize import QuantOptions, quantize

    loaded = load_checkpoint(checkpoint)
    pre = loaded.preprocessing
    fp32 = work / f"{label}.fp32.onnx"
    export_onnx(loaded, fp32)
    names = pre.class_names or None
    cal = open_dataset(data, "calib", pre, limit=num_calib, allow_unlabelled=True)
    val = open_dataset(data, "val", pre, limit=val_limit, class_names=names)
    # Decoded once, so every variant sees the same arrays; equal batch sizes (ORT's Entropy
    # calibrator stacks batches and fails on a short last one).
    bs = max(d for d in range(1, 33) if len(cal) % d == 0)
    calib_x = [x for x, _ in iter_batches(cal, bs)]
    val_b = list(iter_batches(val, 100))
    reference = make_runner(fp32)
    rows = []

    def evaluate(method: str, tool: str, weights: str, path: Path, note: str = "") -> None:
        rep = compare(reference, make_runner(path), val_b)
        row = {"model": label, "input": "x".join(map(str, pre.input_size)), "tool": tool, "method": method,
               "weights": weights, "fp32_top1": rep.reference.top1, "int8_top1": rep.artifact.top1,
               "drop_top1": rep.drop_top1, "agreement": rep.agreement_top1, "num_calib": len(cal),
               "num_val": rep.num_images, "note": note}
        rows.append(row)
        log(f"  {label:9s} {tool:8s} {method:26s} {weights:6s} drop {rep.drop_top1:+6.2f}  "
            f"agree {rep.agreement_top1:.4f}  {note}")

    def q(out: Path, cache: Path | None, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return quantize(fp32, out, lambda: iter(calib_x), data_fingerprint=cal.fingerprint(),
                            options=QuantOptions(**kw), cache_path=cache)

    for rr, weights in ((False, "8-bit"), (True, "7-bit")):
        all_cache, auto_cache = work / f"{label}.all.calib.json", work / f"{label}.auto.calib.json"
        for method in EDGERES_METHODS:
            out = work / f"{label}.{method}.{weights}.onnx"
            q(out, all_cache, method=method, bias_correction="off", reduce_range=rr)
            evaluate(method, "edgeres", weights, out)
        for name, kw in (("auto (default)", {}), ("auto --bias-correction off", {"bias_correction": "off"}),
                         ("entropy --bias-correction on", {"method": "entropy", "bias_correction": "on"})):
            out = work / f"{label}.{name.split()[0]}.{weights}.onnx"
            res = q(out, auto_cache, reduce_range=rr, **kw)
            evaluate(name, "edgeres", weights, out, f"-> {res.method}{' + bias' if res.bias_correction else ''}")
    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" warning
    for config in ("ort-default", "ort-entropy", "ort-cpu-recommended"):
        out = work / f"{label}.{config}.onnx"
        ort_quantize(fp32, out, calib_x, config)
        evaluate(config.removeprefix("ort-"), "ort", "8-bit", out)
    cost = {
        "entropy_s": _median_seconds(lambda: q(work / "t.onnx", None, method="entropy", bias_correction="off"),
                                     repeats),
        "auto_s": _median_seconds(lambda: q(work / "t.onnx", None), repeats),
    }
    cost["ratio"] = cost["auto_s"] / cost["entropy_s"]
    log(f"  {label}: entropy calibration {cost['entropy_s']:.1f} s, auto {cost['auto_s']:.1f} s "
        f"({cost['ratio']:.2f}x), median of {repeats}")
    return rows, {"model": label, **cost}


def print_table(rows: list[dict], costs: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="INT8 calibration: edgeres vs ONNX Runtime quantize_static (FP32 vs INT8 in ONNX Runtime)")
    for col in ("model", "tool", "method", "weights", "FP32 top-1", "INT8 top-1", "top-1 drop (pts)", "agreement",
                "picked"):
        t.add_column(col, justify="left" if col in ("model", "tool", "method", "weights", "picked") else "right")
    for r in rows:
        t.add_row(f"{r['model']} {r['input']}", r["tool"], r["method"], r["weights"], f"{100 * r['fp32_top1']:.1f}",
                  f"{100 * r['int8_top1']:.1f}", f"{r['drop_top1']:+.2f}", f"{100 * r['agreement']:.2f}%",
                  r["note"].removeprefix("-> "))
    Console(width=200).print(t)
    n = {r["model"]: (r["num_calib"], r["num_val"]) for r in rows}
    print("; ".join(f"{m}: {c} calibration / {v} val images" for m, (c, v) in n.items()))
    for c in costs:
        print(f"{c['model']}: calibration cost entropy {c['entropy_s']:.1f} s, auto {c['auto_s']:.1f} s "
              f"= {c['ratio']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="r20,r18", help="comma list of r20, r18 (may be empty with --folder)")
    ap.add_argument("--folder", action="append", default=[], metavar="NAME=DIR",
                    help="also a ResNet-20 trained here on DIR/train (ImageFolder with train/calib/val)")
    ap.add_argument("--folder-epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="from-scratch calibrations timed per method")
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
        costs: list[dict] = []
        t0 = time.perf_counter()
        jobs = []
        if "r20" in models:
            ck = args.r20_checkpoint or train_r20(work / "r20.pt", args.r20_epochs, args.r20_per_class)
            jobs.append(("resnet20", ck, "builtin"))
        if "r18" in models:
            ck = args.r18_checkpoint or train_r18(work / "r18.pt", args.r18_epochs, args.r18_per_class,
                                                  args.r18_size)
            jobs.append(("resnet18", ck, "builtin"))
        for spec in args.folder:
            name, _, root = spec.partition("=")
            ck = work / f"r20-{name}.pt"
            if not ck.is_file():
                train_folder_r20(ck, Path(root), args.folder_epochs)
            jobs.append((f"r20-{name}", ck, root))
        for label, ck, data in jobs:
            r, c = bench_model(label, ck, work, args.num_calib, args.val_limit, data, args.repeats)
            rows += r
            costs.append(c)
        print_table(rows, costs)
        log(f"total {time.perf_counter() - t0:.0f} s")
        if args.json:
            from edgeres.fileio import write_json

            write_json(args.json, {"format": "edgeres.bench-quant/1", "rows": rows, "costs": costs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
