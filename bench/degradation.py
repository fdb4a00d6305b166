"""The degradation experiment of He et al. (2015, fig. 6) in miniature.

Trains plain-20/plain-56 and ResNet-20/ResNet-56 on the same data with the same
budget (same images, batch, learning rate and number of optimizer steps; no
augmentation, so "training error" is the error on the images being fitted), then

* plots the training error against the iteration (running mean over each epoch, as
  measured during training; dashed = plain nets) to ``<out>/degradation.png``,
* prints a table of final train / val error and writes it to ``<out>/degradation.json``.

The paper's finding is that the deeper *plain* net has higher training error than the
shallower one, while the deeper *residual* net has lower. A budget of a few hundred
steps on the small built-in set may or may not show it; the script reports what it
measures. Example (about 5-10 minutes on 2 busy CPU cores)::

    python bench/degradation.py --data builtin:100 --epochs 3 --batch-size 32 --out bench_out/degradation
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MODELS = ("plain20", "plain56", "resnet20", "resnet56")


def run(models: list[str], data: str, epochs: int, batch_size: int, lr: float, out: Path, seed: int) -> dict:
    """Train each model with identical settings; returns per-model curves and final errors."""
    from edgeres.training import train

    results: dict[str, dict] = {}
    for name in models:
        curve: list[tuple[int, float]] = []
        t0 = time.perf_counter()
        res = train(
            name, data, out / name, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
            overrides={"schedule": "constant", "warmup": 0, "augment": False, "weight_decay": 1e-4,
                       "momentum": 0.9},
            progress=False, plot=False,
            on_step=lambda it, loss, top1, curve=curve: curve.append((it, 100.0 * (1.0 - top1))),
        )
        last = res.history[-1]
        results[name] = {
            "iterations": res.iterations,
            "train_error": 100.0 * (1.0 - last.train_top1),
            "train_loss": last.train_loss,
            "val_error": 100.0 * (1.0 - last.val_top1),
            "seconds": time.perf_counter() - t0,
            "epochs": [r.to_dict() for r in res.history],
            "curve": curve,
        }
        print(f"{name}: {res.iterations} steps, last-epoch train error {results[name]['train_error']:.1f}%, "
              f"val error {results[name]['val_error']:.1f}% ({results[name]['seconds']:.0f} s)", flush=True)
    return results


def table(results: dict) -> str:
    """Plain-text table of the final errors."""
    lines = [f"{'model':10s} {'steps':>6s} {'train err %':>12s} {'train loss':>11s} {'val err %':>10s} {'time s':>7s}"]
    for name, r in results.items():
        lines.append(f"{name:10s} {r['iterations']:6d} {r['train_error']:12.1f} {r['train_loss']:11.3f} "
                     f"{r['val_error']:10.1f} {r['seconds']:7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="builtin:100")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--out", type=Path, default=Path("bench_out/degradation"))
    p.add_argument("--force", action="store_true", help="replace output files edgeres did not write")
    args = p.parse_args(argv)

    from edgeres.outputs import check_file_outputs

    check_file_outputs([args.out / "degradation.json", args.out / "degradation.png"], "--out", force=args.force)

    import torch

    from edgeres.errors import UsageError
    from edgeres.fileio import write_json

    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results = run(models, args.data, args.epochs, args.batch_size, args.lr, args.out, args.seed)
    print(table(results))
    write_json(args.out / "degradation.json", {
        "format": "edgeres.bench-degradation/1", "data": args.data, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "threads": args.threads, "results": results})
    try:
        from edgeres.plots import error_curves

        png = error_curves(args.out / "degradation.png",
                           {n: ([x for x, _ in r["curve"]], [y for _, y in r["curve"]]) for n, r in results.items()},
                           title=f"training error, {args.data}, batch {args.batch_size}, lr {args.lr} "
                                 "(running mean per epoch)")
        print(f"plot -> {png}")
    except UsageError as e:
        print(f"note: no plot ({e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
