"""``edgeres debug``: per-layer INT8 error of a bundle, suspects and bisection (registered on the app in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeres.cli_format import Force


def _db(v: float) -> str:
    return f"{v:.1f}" if v == v and abs(v) != float("inf") else ("inf" if v > 0 else "-inf")


def register(app: typer.Typer, console) -> None:  # noqa: ANN001
    @app.command(name="debug")
    def debug_cmd(
        bundle: Path = typer.Argument(..., help="An INT8 bundle from `edgeres compile`."),
        data: str = typer.Option(..., "--data", help="Images (DIR/<class>/*, DIR/*, 'builtin'); labelled for --bisect."),
        images: Optional[int] = typer.Option(None, "--images", help="Images for the per-layer comparison (default 128)."),
        top: int = typer.Option(15, "--top", help="Layers to print (worst first)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole report as JSON."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="PNG: SNR per layer along the network."),
        bisect: bool = typer.Option(False, "--bisect", help="Find the smallest set of layers to keep float for --max-drop."),
        max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Top-1 points allowed (default: the target's)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="With --bisect: labelled images to measure drops on."),
        force: bool = Force,
    ):
        """Which layer lost the accuracy: per-layer SNR/cosine/max error of the INT8 model vs FP32, worst first."""
        from edgeres.bundle import load_bundle
        from edgeres.debug import DEFAULT_IMAGES, debug_bundle, reproduce_command
        from edgeres.outputs import check_option_outputs

        check_option_outputs([(json_out, "--json"), (plot, "--plot")], force=force)

        rep = debug_bundle(bundle, data, images=images or DEFAULT_IMAGES, bisect=bisect, max_drop=max_drop,
                           limit=limit)
        console.print(rep.source, markup=False, soft_wrap=True)
        c = rep.artifact_check
        if c["checked"]:
            console.print(f"artifact ({c['runner']}) vs the Q/DQ model on ONNX Runtime: top-1 agreement "
                          f"{100 * c['agreement_top1']:.1f} %, max |delta logit| {c['max_abs_logit_diff']:.3g} "
                          f"(logit range {c['logit_range']:.3g}), mean cosine {c['mean_cosine']:.5f}", markup=False, soft_wrap=True)
        else:
            console.print(f"artifact not checked: {c['why']}", markup=False, soft_wrap=True)
        console.print(f"INT8 error per layer, worst first ({rep.method}; {rep.num_images} images; SNR in dB, "
                      "higher is better; 'alone': the layer's own error on FP32 inputs)", markup=False, soft_wrap=True)
        console.print(f"{'#':>3} {'SNR alone':>9} {'in model':>9} {'cosine':>8} {'max|err|':>9} {'clipped':>8} "
                      f"{'op':<8} {'input range':<22} layer", markup=False, soft_wrap=True)
        for i, r in enumerate(rep.layers[:top], 1):
            rng = f"[{r.input_range[0]:.3g}, {r.input_range[1]:.3g}]" if r.input_range else "-"
            console.print(f"{i:>3} {_db(r.alone_snr_db):>9} {_db(r.snr_db):>9} {r.cosine:>8.5f} {r.max_abs:>9.3g} "
                          f"{100 * r.clipped:>7.2f}% {r.op_type:<8} {rng:<22} {r.name}", markup=False,
                          soft_wrap=True)
        for s in rep.suspects:
            console.print(f"suspect {s['name']} ({s['op_type']}): {s['why']}", markup=False, soft_wrap=True)
            for f in s["fixes"]:
                console.print(f"  try: {f}", markup=False, soft_wrap=True)
        if rep.bisect is not None:
            bs = rep.bisect
            console.print(f"bisect (top-1 drop limit {bs.max_drop}, {bs.num_images} labelled images, ONNX Runtime "
                          f"on the Q/DQ model): plain INT8 drop {bs.baseline_drop:.2f} points", markup=False, soft_wrap=True)
            for st in bs.steps:
                console.print(f"  {st.phase:9s} {len(st.layers):3d} float -> drop {st.drop_top1:+.2f} "
                              f"{'PASS' if st.passed else 'fail'}", markup=False, soft_wrap=True)
            console.print(f"result: {bs.note}; keep float: {', '.join(bs.layers) or 'nothing'} "
                          f"(drop {bs.drop_top1:.2f})", markup=False, soft_wrap=True)
            if bs.layers and bs.passed:
                console.print("reproduce: " + reproduce_command(rep, load_bundle(bundle, verify=False).manifest),
                              markup=False, soft_wrap=True)
        if json_out:
            rep.write_json(json_out)
        if plot:
            rep.plot(plot)
            console.print(f"plot: {plot}")
