"""Checkpoint reading (safe), unwrapping, strict loading, GC ViT official -> timm layout conversion."""

import argparse
import pickle
import sys

import pytest
import torch
from manifests import load_manifest, manifest_shapes, random_checkpoint
from safetensors.torch import save_file

from glocal import zoo
from glocal.zoo.models.gcvit import checkpoint_filter_fn, convert_official, detect_layout
from glocal.zoo.weights import CheckpointError, load_strict, read_checkpoint, unwrap_state_dict

GCVIT_SIZES = ["xxtiny", "xtiny", "tiny", "small", "base"]


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_unwrap_prefers_model_then_ema_and_strips_module_prefix():
    a, b = torch.ones(1), torch.zeros(1)
    assert unwrap_state_dict({"model": {"w": a}, "model_ema": {"w": b}})["w"] is a
    assert unwrap_state_dict({"model": {"w": a}, "model_ema": {"w": b}}, prefer_ema=True)["w"] is b
    assert list(unwrap_state_dict({"state_dict": {"module.x": a}})) == ["x"]
    assert list(unwrap_state_dict({"model": {"_orig_mod.module.x": a, "n": 3}})) == ["x"]  # timm's clean_state_dict
    assert unwrap_state_dict({"params": {"w": a}})["w"] is a  # BasicSR
    with pytest.raises(CheckpointError, match="no state dict|no tensors"):
        unwrap_state_dict({"epoch": 3})


def test_training_file_with_namespace_loads_but_arbitrary_objects_are_refused(tmp_path):
    good = tmp_path / "train.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1), "epoch": 9}, good)
    assert torch.equal(read_checkpoint(good)["w"], torch.ones(2))
    bad = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(2)}, "x": Evil()}, bad, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(bad)


def test_corrupt_and_missing_files(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(broken)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")


def test_strict_load_names_missing_unexpected_and_shapes():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError) as e:
        load_strict(model, {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)}, origin="ckpt")
    msg = str(e.value)
    assert "1 missing (e.g. bias)" in msg and "1 unexpected (e.g. extra)" in msg and "weight (2, 4) vs (2, 3)" in msg


@pytest.mark.parametrize("size", GCVIT_SIZES)
def test_gcvit_official_layout_converts_to_timm_layout_exactly(size):
    official = random_checkpoint(load_manifest("gcvit", size))
    assert detect_layout(official) == "official"
    converted = convert_official(official)
    assert {k: tuple(v.shape) for k, v in converted.items()} == manifest_shapes(load_manifest("gcvit_timm", size))
    _, variant = zoo.resolve(f"gcvit_{size}")
    with torch.device("meta"):
        model = variant.build()
    assert set(model.state_dict()) == set(converted)


def test_gcvit_both_layouts_load_strictly_and_agree(tmp_path):
    official = random_checkpoint(load_manifest("gcvit", "xxtiny"), seed=3)
    off_path = tmp_path / "gcvit_1k_xxtiny.pth.tar"
    torch.save({"state_dict": official, "args": argparse.Namespace(model="gc_vit_xxtiny")}, off_path)
    timm_path = tmp_path / "gcvit_xxtiny.safetensors"
    save_file({k: v.contiguous() for k, v in convert_official(official).items()}, str(timm_path))
    a = zoo.create_model("gcvit_xxtiny", weights=off_path)
    b = zoo.create_model("gcvit_xxtiny", weights=timm_path)
    assert a.glocal_weights.layout == "official" and b.glocal_weights.layout == "timm"
    assert a.glocal_weights.sha256 and len(a.glocal_weights.sha256) == 64
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    assert torch.isfinite(ya).all()
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    # the SE weights really moved: a model with other random weights gives other logits
    c = zoo.create_model("gcvit_xxtiny", weights="random")
    with torch.inference_mode():
        assert not torch.allclose(c(x), ya)


def test_gcvit_official_file_loads_through_timms_pretrained_filter_fn(tmp_path):
    """timm's own loader (pretrained_cfg_overlay file) converts NVIDIA's 2023 layout with the same filter."""
    official = random_checkpoint(load_manifest("gcvit", "xxtiny"), seed=4)
    path = tmp_path / "gcvit_1k_xxtiny.pth.tar"
    torch.save({"state_dict": official}, path)
    _, variant = zoo.resolve("gcvit_xxtiny")
    via_timm = variant.build(pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).state_dict()
    ours = zoo.create_model("gcvit_xxtiny", weights=path).state_dict()
    assert list(via_timm) == list(ours) and all(torch.equal(via_timm[k], ours[k]) for k in ours)
    se = next(k for k in ours if k.endswith("se.fc1.weight"))
    assert ours[se].ndim == 4  # the official Linear SE weights became 1x1 convs
    assert checkpoint_filter_fn(dict(ours)) == dict(ours)  # timm-layout files pass through


def test_mismatched_checkpoint_is_one_clear_error(tmp_path):
    sd = convert_official(random_checkpoint(load_manifest("gcvit", "xxtiny")))
    path = tmp_path / "xxtiny.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(CheckpointError, match="does not match the model"):
        zoo.create_model("gcvit_tiny", weights=path)


def test_hub_path_uses_timms_cache_offline_and_falls_back_to_random(tmp_path, monkeypatch):
    """With the file in timm's cache, timm's own pretrained path loads it without any network."""
    import timm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    model = zoo.create_model("gcvit_xxtiny", weights=None, quiet=True)
    assert model.glocal_weights.is_random  # nothing cached, offline: random, no hang

    from glocal.zoo.weights import timm_cached_file

    cached, host = timm_cached_file("gcvit_xxtiny.in1k")
    assert cached is None and host == "github.com"
    url = timm.models.get_pretrained_cfg("gcvit_xxtiny.in1k").url
    target = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    reference = timm.create_model("gcvit_xxtiny")
    torch.save(reference.state_dict(), target)
    loaded = zoo.create_model("gcvit_xxtiny", weights=None)
    assert loaded.glocal_weights.source == "hub" and loaded.glocal_weights.id == "gcvit_xxtiny.in1k"
    assert loaded.glocal_weights.sha256 and len(loaded.glocal_weights.sha256) == 64
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), reference.eval()(x))


def test_installed_weights_package_is_found_through_entry_points(tmp_path, monkeypatch):
    """A pip-installed weights package announces a variant in the `glocal.weights` entry-point group."""
    import timm

    site = tmp_path / "site"
    dist = site / "glocal_weights_gcvit_xxtiny-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: glocal-weights-gcvit-xxtiny\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[glocal.weights]\ngcvit_xxtiny = glocal_weights_gcvit_xxtiny:weights\n")
    ckpt = tmp_path / "gcvit_xxtiny.safetensors"
    reference = timm.create_model("gcvit_xxtiny").eval()
    save_file(reference.state_dict(), str(ckpt))
    (site / "glocal_weights_gcvit_xxtiny.py").write_text(
        f"def weights():\n    return {{'path': {str(ckpt)!r}, 'name': 'glocal-weights-gcvit-xxtiny==1.0'}}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "glocal_weights_gcvit_xxtiny", raising=False)
    model = zoo.create_model("gcvit_xxtiny")
    info = model.glocal_weights
    assert info.source == "package" and info.id == "glocal-weights-gcvit-xxtiny==1.0"
    assert info.sha256 == __import__("glocal.zoo.weights", fromlist=["sha256_file"]).sha256_file(ckpt)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x))
    sys.modules.pop("glocal_weights_gcvit_xxtiny", None)  # the stand-in must not answer for real packages later
