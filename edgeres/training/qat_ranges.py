"""The activation ranges a QAT model learned, as ranges of the ONNX tensors edgeres quantizes.

PyTorch's FX QAT model holds one ``FakeQuantize`` module per quantized activation, with the
scale and zero point its observer learned during fine-tuning; the network's weights adapted to
*those* ranges. Recalibrating the exported model from scratch throws them away (measured: 4-5
top-1 points on a hostile ResNet-20). The FX graph and the ONNX graph name tensors differently,
so they are matched by value: one probe batch runs through the QAT model with fake quantization
off (each ``FakeQuantize``'s input recorded) and through the exported FP32 ONNX model (every
calibration tensor recorded); a tensor takes the range of the fake-quant input with the same
shape and the same values (relative max error <= :data:`MATCH_TOL`). Tensors without a match keep
their calibrated range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MATCH_TOL = 1e-3  # max |a - b| / max |b|: the same tensor computed by PyTorch and ONNX Runtime


def _range(fq: Any, form: str) -> tuple[float, float]:
    """(lo, hi) for which edgeres's activation_qparams gives back ``fq``'s scale and zero point."""
    scale, zp = float(fq.scale.reshape(-1)[0]), int(fq.zero_point.reshape(-1)[0])
    if form == "tensorrt":
        return -127.0 * scale, 127.0 * scale
    return -zp * scale, (255 - zp) * scale


def _fake_quant_inputs(qat_model: Any, x: np.ndarray) -> dict[str, tuple[Any, np.ndarray]]:
    """{module name: (FakeQuantize module, its input on ``x``)} for the activation fake-quants, fake quant off."""
    import torch
    from torch.ao.quantization import (
        FakeQuantizeBase,
        disable_fake_quant,
        disable_observer,
        enable_fake_quant,
        enable_observer,
    )

    modules = {n: m for n, m in qat_model.named_modules() if isinstance(m, FakeQuantizeBase)
               and "weight_fake_quant" not in n}
    seen: dict[str, tuple[Any, np.ndarray]] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: seen.__setitem__(n, (mod, args[0].detach().numpy())))
             for n, m in modules.items()]
    was_training = qat_model.training
    qat_model.eval()
    qat_model.apply(disable_fake_quant)
    qat_model.apply(disable_observer)
    try:
        with torch.no_grad():
            qat_model(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
        qat_model.apply(enable_fake_quant)
        qat_model.apply(enable_observer)
        qat_model.train(was_training)
    return seen


def learned_ranges(qat_model: Any, fp32_onnx: Path, x: np.ndarray, form: str) -> dict[str, tuple[float, float]]:
    """{ONNX tensor of the prepared graph: (lo, hi)} from ``qat_model``'s fake-quant modules, matched on ``x``.

    ``fp32_onnx``: the fine-tuned model exported (what edgeres then quantizes). Observers must
    have run (the model was trained); they are not updated here.
    """
    import onnx

    from edgeres.quantize.calibrated import prepared_graph
    from edgeres.quantize.collect import iter_tensors
    from edgeres.quantize.qdq import calibration_tensors

    model, _ = prepared_graph(onnx.load(str(fp32_onnx)), False)
    wanted = calibration_tensors(model)
    onnx_values: dict[str, np.ndarray] = {}
    for _, _, values in iter_tensors(model, wanted, [x], max_chunk=len(x)):
        onnx_values.update(values)
    torch_values = _fake_quant_inputs(qat_model, x)
    out: dict[str, tuple[float, float]] = {}
    for t, v in onnx_values.items():
        best, err = None, MATCH_TOL
        scale = float(np.abs(v).max()) or 1.0
        for fq, tv in torch_values.values():
            if tv.shape != v.shape:
                continue
            e = float(np.abs(tv - v).max()) / scale
            if e <= err:
                best, err = fq, e
        if best is not None:
            out[t] = _range(best, form)
    return out


__all__ = ["MATCH_TOL", "learned_ranges"]
