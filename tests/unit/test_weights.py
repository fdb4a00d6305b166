"""Loading weights: file formats, key/shape checks and their messages, head replacement."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeres.checkpoint import load_checkpoint, save_checkpoint
from edgeres.errors import InputError, ModelNotFound
from edgeres.models import create_model, get_model_info
from edgeres.models.weights import (
    LoadReport,
    apply_state_dict,
    describe_state_dict,
    load_pretrained,
    load_state_dict_file,
)


def trained_like(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A zoo model whose every tensor is random (so a failed load cannot go unnoticed)."""
    torch.manual_seed(seed)
    model = create_model(name, **kwargs)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in key else torch.randn_like(t) * 0.1)
    return model.eval()


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def test_round_trip_through_pth_with_ddp_prefix(tmp_path: Path) -> None:
    src = trained_like("resnet20", num_classes=7)
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)

    state = load_state_dict_file(path)
    assert "conv1.weight" in state and not any(k.startswith("module.") for k in state)
    dst = create_model("resnet20", num_classes=7).eval()
    report = apply_state_dict(dst, state, source=str(path))
    assert isinstance(report, LoadReport)
    assert report.loaded == len(src.state_dict()) and report.replaced == () and report.file_num_classes == 7
    assert same_tensors(dst.state_dict(), src.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict"])
def test_wrapped_state_dicts(tmp_path: Path, wrapper: str) -> None:
    sd = trained_like("resnet20").state_dict()
    path = tmp_path / "w.pth"
    torch.save({wrapper: sd, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    assert same_tensors(load_state_dict_file(path), sd)


def test_edgeres_checkpoint_state_dict_is_used(tmp_path: Path) -> None:
    model = trained_like("resnet20", shortcut="C")
    pre = get_model_info("resnet20").default_preprocessing([str(i) for i in range(10)])
    path = save_checkpoint(tmp_path / "c.pt", model, "resnet20", pre, model_kwargs={"shortcut": "C"})
    assert same_tensors(load_state_dict_file(path), model.state_dict())
    # load_pretrained takes the model options from the checkpoint
    loaded = load_pretrained("resnet20", path)
    assert same_tensors(loaded.state_dict(), model.state_dict()) and not loaded.training
    # and edgeres.checkpoint.load_checkpoint rebuilds it through the zoo
    assert same_tensors(load_checkpoint(path).model.state_dict(), model.state_dict())
    with pytest.raises(InputError, match="checkpoint of 'resnet20', not 'resnet32'; pass resnet20"):
        load_pretrained("resnet32", path)


def test_non_tensor_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "note": "hello", "step": 3}, path)
    with pytest.raises(InputError, match=r"2 entries are not named tensors \(e.g. note, step\)"):
        load_state_dict_file(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(InputError, match="holds no state dict"):
        load_state_dict_file(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="bad.pth"):
        load_state_dict_file(path)
    with pytest.raises(InputError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pth")


def test_wrong_architecture_gives_one_line_hint() -> None:
    state = create_model("resnet34").state_dict()
    with pytest.raises(InputError) as e:
        apply_state_dict(create_model("resnet18"), state, source="r34.pth")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("weights in r34.pth do not fit resnet18: ")
    assert "96 unexpected keys (e.g. layer1.2.conv1.weight" in msg
    assert msg.endswith("is this a resnet34 checkpoint? pass the matching zoo name (`edgeres models` lists them)")


def test_missing_and_shape_mismatch_counts() -> None:
    state = create_model("resnet18").state_dict()
    with pytest.raises(InputError) as e:
        apply_state_dict(create_model("resnet50"), state, source="r18.pth")
    msg = str(e.value)
    # resnet50 has 320 keys, all 122 of resnet18's among them; of the other 198, 33 are BN
    # num_batches_tracked counters, which old torchvision files lack and are not required
    assert "165 missing keys (e.g. layer1.0.conv3.weight, layer1.0.bn3.weight, layer1.0.bn3.bias, ...)" in msg
    assert "unexpected" not in msg
    assert "24 keys with another shape (file vs model: layer1.0.conv1.weight [64, 64, 3, 3] vs [64, 64, 1, 1]" in msg
    assert "is this a resnet18 checkpoint?" in msg


def test_shortcut_mismatch_is_named() -> None:
    state = create_model("resnet20", shortcut="C").state_dict()
    with pytest.raises(InputError, match="has option-C shortcuts, the model option-A: use resnet20 with shortcut='C'"):
        apply_state_dict(create_model("resnet20"), state, source="c.pth")
    with pytest.raises(InputError, match="file has option-A shortcuts, the model option-B"):
        apply_state_dict(create_model("resnet20", shortcut="B"), create_model("plain20").state_dict(), source="p.pth")
    r32c = create_model("resnet32", shortcut="C").state_dict()
    with pytest.raises(InputError, match=r"is this a resnet32 \(shortcut C\) checkpoint"):
        apply_state_dict(create_model("resnet20", shortcut="C"), r32c, source="x")


def test_head_mismatch_suggests_num_classes_and_replace_head_fine_tunes() -> None:
    src = trained_like("resnet20", num_classes=100)
    dst = create_model("resnet20", num_classes=10)
    fresh_fc = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("fc.")}
    with pytest.raises(InputError, match=r"fc.weight \[100, 64\] vs \[10, 64\].*pass num_classes=100"):
        apply_state_dict(dst, src.state_dict(), source="c100.pth")

    report = apply_state_dict(dst, src.state_dict(), source="c100.pth", replace_head=True)
    assert report.head_replaced and report.replaced == ("fc.weight", "fc.bias")
    assert report.file_num_classes == 100
    after = dst.state_dict()
    assert all(torch.equal(after[k], fresh_fc[k]) for k in fresh_fc)  # head kept at its fresh init
    assert all(torch.equal(after[k], v) for k, v in src.state_dict().items() if not k.startswith("fc."))

    # a same-shape head is loaded, not replaced
    same = create_model("resnet20", num_classes=100)
    assert apply_state_dict(same, src.state_dict(), source="x", replace_head=True).replaced == ()
    assert torch.equal(same.fc.weight, src.fc.weight)

    # replace_head does not hide backbone mismatches
    with pytest.raises(InputError, match="do not fit resnet32"):
        apply_state_dict(create_model("resnet32"), src.state_dict(), source="x", replace_head=True)


def test_headless_backbone_with_replace_head() -> None:
    state = {k: v for k, v in trained_like("resnet20").state_dict().items() if not k.startswith("fc.")}
    with pytest.raises(InputError, match="2 missing"):
        apply_state_dict(create_model("resnet20"), state, source="x")
    report = apply_state_dict(create_model("resnet20"), state, source="x", replace_head=True)
    assert report.replaced == ("fc.weight", "fc.bias") and report.file_num_classes is None


def test_non_strict_tolerates_missing_keys_not_shapes() -> None:
    src = trained_like("resnet20")
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("layer3.2.")}
    state["extra.weight"] = torch.zeros(1)
    dst = create_model("resnet20")
    report = apply_state_dict(dst, state, source="x", strict=False)
    assert "layer3.2.conv2.weight" in report.missing and report.unexpected == ("extra.weight",)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    with pytest.raises(InputError, match="another shape"):
        apply_state_dict(create_model("resnet20", num_classes=3), src.state_dict(), source="x", strict=False)


def test_old_torchvision_file_without_num_batches_tracked_loads() -> None:
    src = trained_like("resnet18", num_classes=5)
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    dst = create_model("resnet18", num_classes=5)
    apply_state_dict(dst, state, source="tv.pth")
    assert torch.equal(dst.layer4[1].bn2.running_var, src.layer4[1].bn2.running_var)


def test_load_pretrained_takes_class_count_from_file(tmp_path: Path) -> None:
    src = trained_like("resnet18", num_classes=7)
    path = tmp_path / "tv.pth"
    torch.save(src.state_dict(), path)  # torchvision format: a bare state dict

    model = load_pretrained("resnet18", path)
    assert model.fc.out_features == 7 and same_tensors(model.state_dict(), src.state_dict())

    tuned = load_pretrained("resnet18", path, num_classes=3)  # fine-tuning: new head, same backbone
    assert tuned.fc.out_features == 3
    assert torch.equal(tuned.layer4[1].conv2.weight, src.layer4[1].conv2.weight)

    with pytest.raises(InputError, match="is this a resnet18 checkpoint"):
        load_pretrained("resnet34", path)
    with pytest.raises(ModelNotFound):
        load_pretrained("resnet19", path)


def test_describe_state_dict() -> None:
    assert describe_state_dict(create_model("resnet50").state_dict()) == "resnet50"
    r18a = create_model("resnet18", shortcut="A").state_dict()
    assert describe_state_dict(r18a) == "resnet18 (shortcut A) or plain18"
    assert describe_state_dict(create_model("resnet20").state_dict()) == "resnet20 or plain20"
    assert describe_state_dict(create_model("resnet32", shortcut="B").state_dict()) == "resnet32 (shortcut B)"
    assert describe_state_dict({"weight": torch.zeros(1)}) is None
