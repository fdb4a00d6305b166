"""edgeres' packed-weight NHWC convolution for TVM (edgeres.backends.tvm.conv), layer by layer.

Each case builds a one-convolution Relax module (NCHW, as the ONNX importer emits it, with
a bias, ReLU and optionally a residual add), compiles it exactly as the TVM backend does
(NHWC conversion, the packed legalization, the builtin schedule) and compares it with
PyTorch's convolution. Shapes cover what ResNets and hostile user models bring: strides,
asymmetric padding, dilation, 1x1 and 7x7 kernels, 3 input channels, output-channel
counts that are not multiples of 16, pixel counts that no register tile divides, batch 2.
"""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="TVM is not installed: pip install 'edgeres[tvm]'")
torch = pytest.importorskip("torch")

from edgeres.backends import tvm as tb  # noqa: E402
from edgeres.backends.tvm import conv as tvm_conv  # noqa: E402
from edgeres.backends.tvm.primitives import MAX_PIXEL_WASTE  # noqa: E402
from edgeres.backends.tvm import options as tt  # noqa: E402
from edgeres.targets import get_target  # noqa: E402


def _build(n, c, h, w, k, kh, stride, pad, dilation, groups, residual, options=None, target="x86-64-host"):
    from tvm import relax

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((k, c // groups, kh, kh)).astype("float32") * 0.1
    bias = rng.standard_normal((k,)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, c, h, w), "float32"))
    params = [x]
    oh = (h + pad[0] + pad[2] - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + pad[1] + pad[3] - dilation * (kh - 1) - 1) // stride + 1
    if residual:
        r = relax.Var("r", relax.TensorType((n, k, oh, ow), "float32"))
        params.append(r)
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=stride, padding=pad, dilation=dilation,
                                           groups=groups))
            y = bb.emit(relax.op.add(y, relax.const(bias.reshape(1, k, 1, 1))))
            if residual:
                y = bb.emit(relax.op.add(y, r))
            y = bb.emit(relax.op.nn.relu(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    opts = tt.parse_options(get_target(target), options)
    tvm_target = tt.make_target(tt.resolve_target_dict(opts.target, cross=False))
    mod, _ = tb.apply_schedules(tb.lower(bb.get(), tvm_target, opts), tvm_target, opts)
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm_target), tvm.cpu())
    return mod, vm, weight, bias, (oh, ow)


CASES = [  # n, c, h, w, k, kernel, stride, (top, left, bottom, right), dilation, groups, residual
    (1, 16, 12, 12, 32, 3, 1, (1, 1, 1, 1), 1, 1, True),     # 3x3 same, residual
    (1, 16, 13, 11, 32, 3, 2, (1, 1, 1, 1), 1, 1, False),    # stride 2, odd sizes
    (2, 32, 7, 7, 64, 1, 1, (0, 0, 0, 0), 1, 1, True),       # 1x1, batch 2, 49 pixels
    (1, 3, 30, 30, 16, 7, 2, (3, 3, 3, 3), 1, 1, False),     # stem: 7x7 over 3 channels
    (1, 8, 9, 9, 24, 3, 1, (0, 1, 2, 1), 1, 1, False),       # asymmetric padding, K = 24 (8-blocks)
    (1, 16, 10, 10, 16, 3, 1, (2, 2, 2, 2), 2, 1, False),    # dilation 2
    (1, 16, 5, 5, 8, 3, 1, (1, 1, 1, 1), 1, 1, True),        # K = 8, 25 pixels
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}c{}_{}x{}k{}f{}s{}p{}d{}".format(*c[:8], c[8]))
def test_packed_convolution_matches_pytorch(case):
    n, c, h, w, k, kh, stride, pad, dilation, groups, residual = case
    mod, vm, weight, bias, (oh, ow) = _build(*case)
    names = [gv.name_hint for gv, _ in mod.functions_items()]
    assert any("conv2d_nhwc_packed" in nm for nm in names), names
    funcs = [f for gv, f in mod.functions_items() if "conv2d_nhwc_packed" in gv.name_hint]
    assert all("tirx.is_scheduled" in f.attrs for f in funcs), "the packed schedule was not applied"
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype("float32")
    args = [x]
    ref = torch.nn.functional.pad(torch.from_numpy(x), (pad[1], pad[3], pad[0], pad[2]))
    ref = torch.nn.functional.conv2d(ref, torch.from_numpy(weight), torch.from_numpy(bias), stride=stride,
                                     dilation=dilation, groups=groups)
    if residual:
        r = rng.standard_normal((n, k, oh, ow)).astype("float32")
        args.append(r)
        ref = ref + torch.from_numpy(r)
    ref = torch.relu(ref).numpy()
    got = vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_grouped_convolution_falls_back_to_tvm_and_stays_correct():
    case = (1, 16, 8, 8, 16, 3, 1, (1, 1, 1, 1), 1, 4, False)
    mod, vm, weight, bias, _ = _build(*case)
    assert not any("conv2d_nhwc_packed" in gv.name_hint for gv, _ in mod.functions_items())
    x = np.random.default_rng(2).standard_normal((1, 16, 8, 8)).astype("float32")
    ref = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
                                                padding=1, groups=4)).numpy()
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), ref, rtol=1e-4, atol=1e-4)


def test_conv_topi_option_keeps_tvms_convolution():
    mod, vm, *_ = _build(*CASES[0], options={"conv": "topi"})
    assert not any("conv2d_nhwc_packed" in gv.name_hint for gv, _ in mod.functions_items())


def test_register_tiles_follow_the_register_file():
    from tvm.target import Target

    from edgeres.backends.tvm import tiles

    sse = Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v2"})
    avx2 = Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3"})
    avx512 = Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v4"})
    arm = Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"})
    assert tiles.float_tiles(sse, 64, 64)[0] == 8
    assert tiles.float_tiles(avx2, 64, 64)[0] == tiles.float_tiles(arm, 64, 64)[0] == 16
    block, rows = tiles.float_tiles(avx512, 64, 64)  # 32 zmm: 14 pixels x 2 zmm of accumulators
    assert block == 32 and rows[0] * block // 16 <= 28
    assert tiles.float_tiles(avx512, 64, 3)[0] == 64  # the RGB stem: a wider, shorter tile
    assert tiles.float_tiles(avx512, 16, 16)[0] == 16  # K = 16 (CIFAR ResNets)
    # 1x1 convolutions (a short reduction): one zmm per pixel, 14 accumulator chains
    assert tiles.float_tiles(avx512, 256, 64, pointwise=True) == (16, tiles.POINTWISE_FLOAT_TILES["avx512"][0][1])
    assert tiles.float_tiles(avx2, 256, 64, pointwise=True) == tiles.float_tiles(avx2, 256, 64)  # AVX2: as 3x3
    assert tiles.int8_tiles("vnni", 256, pointwise=True)[0] == 16 and tiles.int8_tiles("vnni", 256)[0] == 32
    _, vm, _, bias, _ = _build(*CASES[0], target="x86-64")  # generic x86-64-v2 (SSE): still correct
    x = np.zeros((1, 16, 12, 12), "float32")
    r = np.ones((1, 32, 12, 12), "float32")
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(r)).numpy()
    np.testing.assert_allclose(got, np.broadcast_to(np.maximum(bias + 1, 0).reshape(1, 32, 1, 1), got.shape),
                               rtol=1e-5)


@pytest.mark.parametrize("pixels,tile", [(3136, 6), (784, 6), (196, 6), (49, 4), (1024, 6), (64, 6), (16, 4), (25, 5), (1, 1)])
def test_pixel_tile_wastes_little(pixels, tile):
    from edgeres.backends.tvm import tiles

    assert tiles.pixel_tile(pixels, tiles.FLOAT_TILES["avx2"][0][1]) == tile
    padded = -(-pixels // tile) * tile
    assert padded - pixels <= MAX_PIXEL_WASTE * pixels or tile == 1
