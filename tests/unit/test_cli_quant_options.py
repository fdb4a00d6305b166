"""The quantization options of the CLI: one QuantOptions record, CLI values None = the default."""

from __future__ import annotations

import pytest

from edgeres.cli_quantize import options_from_cli
from edgeres.errors import UsageError
from edgeres.targets import get_target


def test_bias_correction_takes_auto_on_off_and_the_no_flag():
    assert options_from_cli().bias_correction == "auto"
    assert options_from_cli(bias_correction="on").bias_correction == "on"
    assert options_from_cli(no_bias_correction=True).bias_correction == "off"
    assert options_from_cli(bias_correction="off", no_bias_correction=True).bias_correction == "off"
    with pytest.raises(UsageError, match="contradicts --bias-correction on"):
        options_from_cli(bias_correction="on", no_bias_correction=True)
    with pytest.raises(UsageError, match="--bias-correction takes auto, on or off, not 'yes'"):
        options_from_cli(bias_correction="yes")


def test_target_supplies_form_and_weight_width():
    tgt = get_target("jetson-agx-orin")
    opts = options_from_cli(tgt, method="minmax", num_calib=64)
    assert (opts.form, opts.method, opts.num_calib) == (tgt.qdq_form, "minmax", 64)
    assert options_from_cli(tgt).method == "auto"


def test_compile_cli_accepts_no_bias_correction(cli_main, tmp_path):
    r = cli_main("compile", "resnet20", "--weights", "random", "--target", "onnxruntime-cpu", "--precision", "int8",
                 "--calib", "builtin", "--num-calib", "32", "--no-bias-correction", "--method", "minmax",
                 "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    q = json.loads((tmp_path / "b" / "manifest.json").read_text())["quantization"]
    assert q["bias_correction"] is False and q["requested_method"] == "minmax"
