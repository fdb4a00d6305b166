"""``edgeres debug``: which tensor of an INT8 bundle broke, and the smallest fix.

Per quantized layer, the bundle's Q/DQ model (``model.int8.onnx``, what every backend compiled)
is compared with its FP32 model on N images (:mod:`edgeres.quantize.layerwise`): SNR, cosine and
max |error| of the layer's output, in the whole model and for the layer alone, ranked by the
error each layer adds alone (worst first). Intermediates come from the Q/DQ model on ONNX
Runtime — the compiled artifacts expose no intermediate tensors — and the artifact's own final
outputs are checked against that model on the same images (top-1 agreement, max |delta logit|),
so the report says whether the per-layer picture is the artifact's. ``bisect=True`` adds the
smallest set of layers whose return to float restores the accuracy bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeres.errors import EdgeresError, UsageError
from edgeres.fileio import write_json
from edgeres.quantize.bisect import BisectResult
from edgeres.quantize.layerwise import LayerError

DEFAULT_IMAGES = 128
SUSPECTS = 3
CLIP_WARN = 1e-3  # a range that clips more than 0.1 % of the FP32 values
LEVELS_WARN = 3.0  # fewer quantization steps per standard deviation: the range is stretched by outliers
RECOMMENDED_CALIB = 500


@dataclass
class DebugReport:
    bundle: str
    target: str
    backend: str
    method: str
    num_calib: int
    num_images: int
    source: str  # where the intermediate tensors come from
    artifact_check: dict[str, Any]  # the artifact's final outputs vs the Q/DQ model, or why not checked
    layers: list[LayerError]  # worst first
    suspects: list[dict[str, Any]] = field(default_factory=list)
    bisect: BisectResult | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("layers", "bisect")}
        d["layers"] = [r.to_dict() for r in self.layers]
        d["bisect"] = self.bisect.to_dict() if self.bisect else None
        return d

    def write_json(self, path: str | os.PathLike) -> Path:
        return write_json(path, {"format": "edgeres.debug/1", **self.to_dict()})

    def plot(self, path: str | os.PathLike) -> Path:
        """SNR per layer along the network (graph order): in the model, and of the layer alone."""
        from edgeres.plots import error_curves

        rows = sorted(self.layers, key=lambda r: r.index)
        xs = [r.index for r in rows]
        finite = [v for r in rows for v in (r.snr_db, r.alone_snr_db) if np.isfinite(v)]
        cap = max(finite) + 10.0 if finite else 100.0
        return error_curves(path, {
            "in the model": (xs, [min(r.snr_db, cap) for r in rows]),
            "layer alone": (xs, [min(r.alone_snr_db, cap) for r in rows]),
        }, xlabel="quantized layer (graph order)", ylabel="SNR vs FP32 (dB, higher is better)",
            title=f"{Path(self.bundle).name}: INT8 error per layer ({self.method}, {self.num_images} images)")


def _artifact_check(bundle: Any, x: np.ndarray, qdq_logits: np.ndarray) -> dict[str, Any]:
    """The artifact's logits vs the Q/DQ model's on ONNX Runtime, or why the artifact cannot run here."""
    from edgeres.backends import get_backend

    art = bundle.artifact()
    if art is None:
        return {"checked": False, "why": f"the bundle holds no {bundle.backend} artifact (it is built on the device); "
                                         "its engine is built from this Q/DQ model"}
    try:
        runner = get_backend(bundle.backend).load(art)
        out = np.asarray(runner(x), dtype=np.float64)
    except EdgeresError as e:
        return {"checked": False, "why": f"the {bundle.backend} artifact cannot run here ({e})"}
    ref = qdq_logits.astype(np.float64)
    cos = np.sum(out * ref, 1) / np.maximum(np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return {"checked": True, "runner": bundle.backend, "agreement_top1": float(np.mean(out.argmax(1) == ref.argmax(1))),
            "max_abs_logit_diff": float(np.abs(out - ref).max()), "mean_cosine": float(cos.mean()),
            "logit_range": float(ref.max() - ref.min())}


def suspects(rows: list[LayerError], num_calib: int, method: str, top: int = SUSPECTS) -> list[dict[str, Any]]:
    """The ``top`` worst layers with why they look wrong and the fixes to try."""
    out = []
    for r in rows[:top]:
        why = f"alone it keeps {r.alone_snr_db:.1f} dB SNR (in the model {r.snr_db:.1f} dB)"
        fixes = [f"--exclude {r.name} (keep it in float)"]
        if r.clipped > CLIP_WARN:
            why += f"; its range clips {100 * r.clipped:.2f} % of the FP32 input values"
            fixes.append("--method minmax (no clipping)" if method != "minmax" else "--method mse")
        elif r.levels_per_std < LEVELS_WARN:
            why += (f"; its range spends only {r.levels_per_std:.2g} quantization steps per standard deviation "
                    "of the input (outliers stretch it)")
            fixes.append("--method percentile or --method mse (clip the outliers), or --equalize "
                         "(cross-layer equalization, for one channel far larger than the others)")
        if num_calib < RECOMMENDED_CALIB:
            fixes.append(f"more calibration images (--num-calib; {num_calib} were used, >= {RECOMMENDED_CALIB} "
                         "recommended)")
        out.append({"name": r.name, "op_type": r.op_type, "why": why, "fixes": fixes})
    return out


def debug_bundle(bundle: str | os.PathLike, data: str, *, images: int = DEFAULT_IMAGES, bisect: bool = False,
                 max_drop: float | None = None, limit: int | None = None, verify: bool = True) -> DebugReport:
    """Compare every quantized layer of an INT8 bundle with FP32 on ``images`` images of ``data``;
    with ``bisect``, also find the smallest set of float layers that meets ``max_drop`` (default: the
    bundle target's) on the labelled images of ``data`` (at most ``limit``)."""
    from edgeres.backends import reference_runner
    from edgeres.bundle import INT8_ONNX, load_bundle
    from edgeres.data import iter_batches
    from edgeres.onnx_io import load_model
    from edgeres.pipeline import open_data
    from edgeres.quantize import read_quantization_metadata
    from edgeres.quantize.calibrated import prepared_graph
    from edgeres.quantize.layerwise import compare_layers, worst_first

    if images < 1:
        raise UsageError(f"--images must be at least 1, got {images}")
    b = load_bundle(bundle, verify=verify)
    if b.precision != "int8" or b.file("int8") is None:
        raise UsageError(f"bundle {b.root} is {b.precision}, nothing is quantized to debug; "
                         "debug an INT8 bundle (edgeres compile ... --precision int8)")
    qmodel = load_model(b.file("int8"))
    meta = read_quantization_metadata(qmodel) or {}
    # A QAT bundle's Q/DQ model was built from its fine-tuned FP32 model: that is the layers' reference.
    qat_onnx = (meta.get("qat") or {}).get("onnx")
    ref_file = b.root / qat_onnx if qat_onnx and (b.root / qat_onnx).is_file() else b.file("fp32")
    reference, _ = prepared_graph(load_model(ref_file), bool(meta.get("equalize", False)))
    ds = open_data(data, "val", b.preprocessing, limit=images, allow_unlabelled=True)
    x = np.concatenate([xb for xb, _ in iter_batches(ds, 64)]) if len(ds) else np.zeros((0,))
    if x.shape[0] == 0:
        raise UsageError(f"no images in {data}; pass a folder of images (DIR/<class>/*.png or DIR/*.png)")
    rows = worst_first(compare_layers(reference, qmodel, x))
    check = _artifact_check(b, x, reference_runner(b.file("int8"))(x))
    source = (f"intermediates: ONNX Runtime on {INT8_ONNX} (the Q/DQ model the {b.backend} artifact was built "
              "from; compiled artifacts expose no intermediate tensors); "
              + ("artifact final outputs checked against it" if check["checked"] else "artifact not checked"))
    num_calib = int(meta.get("num_calib") or 0)
    rep = DebugReport(str(b.root), b.target_name, b.backend, str(meta.get("method", "?")), num_calib, int(x.shape[0]),
                      source, check, rows, suspects(rows, num_calib, str(meta.get("method", ""))))
    if bisect:
        from edgeres.quantize.bisect import bisect as run_bisect
        from edgeres.quantize.evaluator import Evaluator

        vds = open_data(data, "val", b.preprocessing, limit=limit)
        threshold = max_drop if max_drop is not None else b.manifest["target"].get("max_drop")
        if threshold is None:
            raise UsageError("pass --max-drop: the bundle's target has no accuracy threshold")
        ev = Evaluator(b.file("fp32"), lambda: iter_batches(vds, 64))
        rep.bisect = run_bisect(qmodel, reference, [r.name for r in rows], ev, float(threshold))
    return rep


def reproduce_command(report: DebugReport, manifest: dict[str, Any]) -> str:
    """The compile command that keeps the bisected layers float."""
    layers = report.bisect.layers if report.bisect else ()
    src = manifest.get("model", {}).get("source") or "MODEL"
    q = manifest.get("quantization") or {}
    parts = [f"edgeres compile {src} --target {report.target} --precision int8",
             f"--calib {q.get('calib_data') or 'DIR'}", f"--method {q.get('requested_method') or report.method}"]
    parts += [f"--exclude '{n}'" for n in layers]
    return " ".join(parts)
