"""Activation Q/DQ pairs rewritten into layout-transparent elementwise ops (edgeres.backends.tvm.qdq)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")
from tvm import relax  # noqa: E402

from edgeres.backends import tvm as tb  # noqa: E402
from edgeres.backends.tvm.qdq import fold_activation_qdq  # noqa: E402


def _qdq_module(dtype: str, scale: float, zp: int, per_channel: bool = False):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4, 5, 5), "float32"))
    s = relax.const(np.full((4,), scale, "float32") if per_channel else np.float32(scale))
    z = relax.const(np.full((4,), zp, dtype) if per_channel else np.array(zp, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            q = bb.emit(relax.op.quantize(x, s, z, axis=1, out_dtype=dtype))
            y = bb.emit(relax.op.dequantize(q, s, z, axis=1, out_dtype="float32"))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, x):
    ex = tvm.compile(relax.get_pipeline("zero")(mod), tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _ops(mod) -> set[str]:
    names: set[str] = set()
    relax.analysis.post_order_visit(mod["main"], lambda e: names.add(str(e.op.name))
                                    if isinstance(e, relax.Call) and hasattr(e.op, "name") else None)
    return names


@pytest.mark.parametrize("dtype,scale,zp", [("uint8", 0.05, 128), ("int8", 0.02, 0), ("uint8", 0.1, 3)])
def test_scalar_pair_becomes_elementwise_with_identical_numbers(dtype, scale, zp):
    mod = _qdq_module(dtype, scale, zp)
    folded = fold_activation_qdq(mod)
    assert not {"relax.quantize", "relax.dequantize"} & _ops(folded)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 5)).astype("float32") * 10  # saturates both ends
    x.flat[:20] = (np.arange(20) - 10 + 0.5) * scale  # values on rounding boundaries
    np.testing.assert_array_equal(_run(folded, x), _run(mod, x))


@pytest.mark.parametrize("dtype,scale,zp", [("uint8", 0.05, 128), ("int8", 0.02, -5)])
def test_integer_form_materializes_the_quantized_tensor(dtype, scale, zp):
    """integer=True: an astype to the quantized dtype sits between the halves (for the integer
    convolutions), quantizing multiplies by 1/s; results stay within one quantization step."""
    mod = _qdq_module(dtype, scale, zp)
    folded = fold_activation_qdq(mod, integer=True)
    assert not {"relax.quantize", "relax.dequantize"} & _ops(folded)
    assert f'dtype="{dtype}"' in folded["main"].script()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 5)).astype("float32") * 10
    got, ref = _run(folded, x), _run(mod, x)
    assert np.abs(got - ref).max() <= scale * 1.001
    assert (got == ref).mean() > 0.99


def test_per_channel_pair_is_left_alone():
    mod = _qdq_module("int8", 0.02, 0, per_channel=True)
    assert {"relax.quantize", "relax.dequantize"} <= _ops(fold_activation_qdq(mod))


def test_qdq_resnet_lowers_without_layout_transposes(r20_untrained_qdq):
    from edgeres.backends.tvm import options as tt
    from edgeres.targets import get_target

    opts = tt.parse_options(get_target("x86-64-host"), None)
    target = tt.make_target(tt.resolve_target_dict(opts.target, cross=False))
    mod = tb.lower(tb.import_onnx(r20_untrained_qdq, 1).mod, target, opts)
    names = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert sum("conv2d_nhwc_packed" in n for n in names) >= 19, names  # every convolution packed
    # only the model's input (NCHW->NHWC) and the pooled features may be transposed
    assert sum("transpose" in n for n in names) <= 2, names
