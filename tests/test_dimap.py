"""DIMAP pruning: scores, module thresholds, auxiliary parts, accounting, the uniform baseline, bad input,
and DIMAP/official Swin checkpoints through timm's filter. Tiny configs of every family with a module rule."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn as nn
from timm.models.gcvit import GlobalContextVit
from torch.nn.utils import prune

from glocal import zoo
from glocal.zoo.methods import dimap as D

TINY = {
    "swin": lambda: zoo.resolve("swin_tiny")[1].build(img_size=64, embed_dim=16, depths=(2, 2, 2, 2),
                                                       num_heads=(1, 1, 2, 2), window_size=4, num_classes=10),
    "gcvit": lambda: GlobalContextVit(img_size=64, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                                      num_classes=10),
    "dinat": lambda: zoo.resolve("dinat_mini")[1].build(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2),
                                                        kernel_size=3, dilations=[[1], [1], [1, 2], [1]],
                                                        num_classes=10),
    "svit": lambda: zoo.resolve("svit_small")[1].build(embed_dim=(16, 16, 32, 32), depths=(1, 1, 2, 1),
                                                       num_heads=(1, 1, 2, 2), projection=64, num_classes=10),
}
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def tiny(family: str) -> nn.Module:
    torch.manual_seed(0)
    model = TINY[family]().eval()
    with torch.no_grad():  # no exact zeros anywhere (timm initialises biases to 0): zeros then mean "pruned"
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    return model


@pytest.fixture(autouse=True)
def _eager_flex(eager_flex_one_thread):
    """DiNAT's FlexAttention runs eagerly (no compile) in these tests."""


def module_weight_names(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for layers in D.module_groups(model).values() for name, _ in layers}


def test_scores_match_a_hand_computation():
    w = torch.tensor([[0.5, -2.0], [1.0, 0.0]])
    # |w| descending: 2 (4), 1 (1), 0.5 (0.25), 0 -> 4/4, 1/5, 0.25/5.25, 0
    expected = torch.tensor([[0.25 / 5.25, 1.0], [1.0 / 5.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(D.lamp_scores(w), expected, rtol=0, atol=1e-15)
    assert torch.equal(D.lamp_scores(torch.zeros(3)), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("family", sorted(TINY))
def test_module_thresholds_give_the_requested_ratios(family):
    model = tiny(family)
    groups = D.module_groups(model)
    before = {m: torch.cat([D.lamp_scores(layer.weight).flatten() for _, layer in layers])
              for m, layers in groups.items()}
    ratios = {"qkv": 0.2, "proj": 0.5, "mlp": 0.35}
    info = D.dimap(model, ratios=ratios)
    for module, layers in groups.items():
        pruned = torch.cat([(layer.weight == 0).flatten() for _, layer in layers])
        assert abs(int(pruned.sum()) - ratios[module] * pruned.numel()) <= 1, module
        threshold = info["thresholds"][module]
        assert before[module][pruned].max() <= threshold <= before[module][~pruned].min(), module
    per_layer = [float((layer.weight == 0).float().mean()) for _, layer in groups["mlp"]]
    assert max(per_layer) - min(per_layer) > 0.01  # one module threshold, not one fraction per layer


def test_scores_computed_once_prune_copies_identically():
    model = tiny("dinat")
    scores = D.module_scores(model)
    for ratio in (0.15, 0.55):
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        assert D.dimap(a, ratio=ratio) == D.dimap(b, ratio=ratio, scores=scores)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("family", sorted(TINY))
def test_auxiliary_parts_are_untouched(family):
    model = tiny(family)
    before = copy.deepcopy(model.state_dict())
    D.dimap(model, ratio=0.5)
    prunable = module_weight_names(model)
    after = model.state_dict()
    assert list(after) == list(before)  # prune.remove left no weight_orig / weight_mask behind
    for key, value in after.items():
        if key in prunable:
            assert not torch.equal(value, before[key]) and bool(((value == before[key]) | (value == 0)).all())
        else:
            assert torch.equal(value, before[key]), key
    assert not any(re.search(r"patch_embed|downsample|norm|head|stem|relative_position", k) for k in prunable)


def _direct_counts(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int], dict[str, int]]:
    """Non-zero parameters by counting, and each module layer's dense / non-zero MACs from its output shape."""
    positions: dict[str, int] = {}
    handles = []
    for layers in D.module_groups(model).values():
        for name, layer in layers:
            def hook(mod, inputs, out, name=name):
                per_weight = out.numel() // out.shape[1 if isinstance(mod, nn.Conv2d) else -1]
                positions[name] = positions.get(name, 0) + per_weight
            handles.append(layer.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    weights = dict(model.named_modules())
    dense = {n: positions[n] * weights[n].weight.numel() for n in positions}
    nonzero = {n: positions[n] * int(weights[n].weight.count_nonzero()) for n in positions}
    return sum(int(p.count_nonzero()) for p in model.parameters()), dense, nonzero


@pytest.mark.parametrize("family", ["swin", "svit"])
def test_nonzero_params_and_macs_match_a_direct_count(family):
    model = tiny(family)
    x = X[:1]
    macs = D.layer_macs(model, x)
    D.dimap(model, ratio=0.4)
    nonzero_params, dense, nonzero = _direct_counts(model, x)
    assert macs == dense
    report = D.sparsity_report(model, macs, dense_gmacs=10.0)
    assert report["nonzero_params"] == nonzero_params
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["nonzero_gmacs"] == pytest.approx(10.0 - (sum(dense.values()) - sum(nonzero.values())) / 1e9,
                                                    rel=0, abs=1e-12)
    for module, layers in D.module_groups(model).items():
        n = sum(layer.weight.numel() for _, layer in layers)
        assert report["modules"][module]["zeros"] == round(0.4 * n)


@pytest.mark.parametrize("family", sorted(TINY))
def test_ratio_zero_leaves_outputs_bit_equal(family):
    model = tiny(family)
    with torch.no_grad():
        before = model(X)
    D.dimap(model, ratio=0.0)
    D.magnitude(model, 0.0)
    with torch.no_grad():
        assert torch.equal(model(X), before)


@pytest.mark.parametrize("family", ["swin", "gcvit"])
def test_uniform_baseline_equals_l1_unstructured_per_layer(family):
    model = tiny(family)
    reference = copy.deepcopy(model)
    D.magnitude(model, 0.3)
    ref_layers = dict(reference.named_modules())
    for layers in D.module_groups(model).values():
        for name, layer in layers:
            ref = ref_layers[name]
            prune.l1_unstructured(ref, "weight", amount=0.3)
            prune.remove(ref, "weight")
            assert torch.equal(layer.weight, ref.weight), name
            w = ref_layers[name].weight  # the kept weights are exactly those above the k-th smallest |w|
            assert int((layer.weight == 0).sum()) == round(0.3 * w.numel())


def test_dimap_of_a_single_layer_module_is_magnitude_pruning():
    """LAMP scores are monotone in |w| inside a layer, so with one layer per module DIMAP == magnitude."""
    torch.manual_seed(1)
    layer = nn.Linear(32, 48)
    a, b = copy.deepcopy(layer), copy.deepcopy(layer)
    D._mask_group([("a", a)], 0.45)
    prune.l1_unstructured(b, "weight", amount=0.45)
    assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "half", None])
def test_ratio_outside_unit_interval_is_refused_in_one_line(bad):
    model = tiny("swin")
    with pytest.raises(D.PruningError) as e:
        if bad is None:
            D.dimap(model)
        else:
            D.dimap(model, ratio=bad)
    assert "\n" not in str(e.value) and "ratio" in str(e.value)
    with pytest.raises(D.PruningError):
        D.magnitude(model, 1.0)


def test_bad_module_pattern_and_family_are_refused_in_one_line():
    model = tiny("swin")
    with pytest.raises(D.PruningError, match="unknown module"):
        D.dimap(model, ratios={"ffn": 0.3})
    with pytest.raises(D.PruningError, match="unknown sparsity pattern"):
        D.dimap(model, ratio=0.3, pattern="4:8")
    with pytest.raises(D.PruningError, match=r"needs a CUDA GPU with compute capability 8\.0\+"):
        D.dimap(model, pattern="2:4")
    plain = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(D.PruningError) as e:
        D.dimap(plain, ratio=0.3)
    assert str(e.value) == ("DIMAP has no module rule for 'Sequential'; rules exist for swin, gcvit, dinat, svit "
                            "(hierarchical ViTs with qkv, proj and MLP linears)")


def test_two_of_four_mask_keeps_the_two_largest_of_every_four():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, -0.2, 0.0]])
    assert D.mask_2to4(w).tolist() == [[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]]
    with pytest.raises(D.PruningError, match="multiple of 4"):
        D.mask_2to4(torch.ones(2, 6))


def _to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm Swin state dict -> the official Swin/DIMAP layout (downsample at the end of the previous stage,
    ``head.*``, plus the relative_position_index / attn_mask buffers the official files carry)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        key = key.replace("head.fc.", "head.")
        out[key] = value
        if key.endswith("relative_position_bias_table"):
            out[key.replace("bias_table", "index")] = torch.zeros(49, 49, dtype=torch.long)
    out["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    return out


def test_official_format_checkpoint_loads_through_timms_filter_with_its_sparsity(tmp_path):
    model = zoo.create_model("swin_tiny", weights="random")
    with torch.no_grad():
        for layers in D.module_groups(model).values():
            for _, layer in layers:
                layer.weight.copy_(layer.weight.abs() + 1e-3)  # no zeros from the initialisation
                layer.weight[:, ::4] = 0  # a known sparsity: a quarter of every module weight
    path = tmp_path / "swin_tiny_dimap.pth"
    torch.save({"model": _to_official(model.state_dict()), "epoch": 29}, path)
    loaded = zoo.create_model("swin_tiny", weights=path)
    assert loaded.glocal_weights.layout == "official"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    report = D.sparsity_report(loaded)
    assert {m: v["sparsity"] for m, v in report["modules"].items()} == {"qkv": 0.25, "proj": 0.25, "mlp": 0.25}
    assert report["nonzero_params"] == report["params"] - report["prunable_params"] // 4
    from glocal.zoo.methods import apply_method, describe_method, parse_method

    spec = parse_method("dimap:ratio=0")  # what `bench run --weights FILE --method dimap:ratio=0` records
    measured = describe_method(apply_method(loaded, *zoo.resolve("swin_tiny"), spec), spec)
    assert measured["modules"] == report["modules"] and measured["nonzero_params"] == report["nonzero_params"]


# ---- the harness: --method dimap / magnitude -------------------------------------------------------------------

def test_method_parameters_are_parsed_and_checked_in_one_line():
    from glocal.zoo.methods import MethodError, parse_method

    assert parse_method("dimap:ratio=0.35") == {"name": "dimap", "params": {"ratio": 0.35,
                                                                            "pattern": "unstructured"}}
    assert parse_method("dimap:ratio=0.2,mlp=0.5")["params"]["mlp"] == 0.5
    assert parse_method("magnitude:ratio=0.1") == {"name": "magnitude", "params": {"ratio": 0.1}}
    for text, message in [("dimap:ratio=1", "ratio=1: must be in [0, 1)"), ("dimap:ratio=x", "bad value 'x'"),
                          ("dimap:pattern=1:2", "must be one of unstructured, 2:4"),
                          ("dimap:pattern=2:4", "bench microbench dimap --pattern 2:4 --device cuda"),
                          ("dimap:depth=3", "has no parameter depth")]:
        with pytest.raises(MethodError, match=re.escape(message)) as e:
            parse_method(text)
        assert "\n" not in str(e.value)
    assert issubclass(D.PruningError, MethodError)  # the CLI's one error path covers pruning errors


def test_methods_apply_to_rule_families_and_their_classes_only():
    from glocal.zoo.methods import get_method

    method = get_method("dimap")
    for name in ("swin_base", "gcvit_tiny", "dinat_mini", "svit_small", "timm:swin_tiny_patch4_window7_224"):
        assert method.applies_to(*zoo.resolve(name)), name
    for name in ("timm:resnet18", "deanet", "rgt_x2"):
        assert not method.applies_to(*zoo.resolve(name)), name


def test_apply_and_describe_give_the_records_workload():
    from glocal.zoo.methods import apply_method, describe_method, parse_method

    model = tiny("swin")
    card, variant = zoo.resolve("swin_tiny")
    spec = parse_method("dimap:ratio=0.35")
    model = apply_method(model, card, variant, spec)
    x = X[:1]
    with torch.no_grad():
        model(x)  # the harness's compute pass; describe counts at its input
    work = describe_method(model, spec)
    nonzero_params, dense, nonzero = _direct_counts(model, x)
    assert work["nonzero_params"] == nonzero_params and work["ratios"] == dict.fromkeys(D.MODULES, 0.35)
    assert work["removed_gmacs"] == pytest.approx((sum(dense.values()) - sum(nonzero.values())) / 1e9, abs=1e-12)
    assert work["module_gmacs"] == sum(dense.values()) / 1e9
    assert set(work["thresholds"]) == set(D.MODULES) and "no latency" not in work  # figures, not claims
    assert "compute.gmacs - removed_gmacs" in work["speedup_note"]


@pytest.fixture
def micro_swin(monkeypatch):
    import os
    import sys
    from pathlib import Path

    plugins = Path(__file__).parent / "plugins"
    monkeypatch.setenv("GLOCAL_PLUGINS", "glocal_test_dimap_models")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]))
    sys.path.insert(0, str(plugins))
    import glocal_test_dimap_models  # noqa: F401  (registers in this process too)

    yield
    sys.path.remove(str(plugins))


@pytest.mark.slow  # two subprocess cells
def test_bench_run_puts_dimap_beside_the_dense_model_and_random_weights_never_score(micro_swin, tmp_path):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from glocal.benchmarks.cli import app

    folder = tmp_path / "val" / "n00000000"
    folder.mkdir(parents=True)
    Image.new("RGB", (80, 80), (120, 30, 200)).save(folder / "a.png")
    fast = ["--warmup-iters", "0", "--warmup-time", "0", "--min-iters", "1", "--min-time", "0"]
    res = CliRunner().invoke(app, ["run", "--model", "swin_micro", "--method", "dimap:ratio=0.35", "--method",
                                   "none", "--dataset", f"imagenet={tmp_path / 'val'}", *fast, "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    pruned, dense = json.loads(res.stdout)
    assert pruned["settings"]["method"] == {"name": "dimap", "params": {"ratio": 0.35, "pattern": "unstructured"}}
    assert dense["settings"]["method"] is None and dense["workload"] is None
    assert pruned["status"] == dense["status"] == "ok"
    assert pruned["metrics"] == dense["metrics"] == {}  # random weights: no accuracy, pruned or not
    work = pruned["workload"]
    assert {m: round(v["sparsity"], 3) for m, v in work["modules"].items()} == dict.fromkeys(D.MODULES, 0.35)
    assert work["nonzero_params"] < pruned["compute"]["params"] == dense["compute"]["params"]
    assert 0 < work["removed_gmacs"] < work["module_gmacs"] < pruned["compute"]["gmacs"] == dense["compute"]["gmacs"]


def _labelled_folder(root):
    from PIL import Image

    for c in range(2):
        folder = root / f"n0000000{c}"
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (80, 72), (120 * c, 60 * i, 200)).save(folder / f"{i}.png")
    return root


def _cells(weights, folder, methods):
    from glocal.benchmarks.runner import RunRequest, plan

    rule = {"warmup_iters": 0, "warmup_s": 0, "min_iters": 1, "min_s": 0, "max_iters": 10, "max_s": 10}
    cells, _ = plan(RunRequest(models=["swin_micro"], methods=methods, weights=weights,
                               datasets=[f"imagenet={folder}"], rule=rule, workers=0))
    return cells


def test_random_weights_never_produce_accuracy_with_a_method(micro_swin, tmp_path):
    from glocal.benchmarks.cell import run_cell

    (cell,) = _cells("random", _labelled_folder(tmp_path / "val"), ["dimap:ratio=0.35"])
    record = run_cell(cell)
    assert record["status"] == "ok" and record["metrics"] == {}
    assert record["workload"]["modules"]["mlp"]["sparsity"] == pytest.approx(0.35, abs=1e-3)


@pytest.mark.slow  # the classification evaluator on two cells, in this process
def test_accuracy_of_the_pruned_model_goes_through_the_imagenet_evaluator(micro_swin, tmp_path):
    from safetensors.torch import save_file

    from glocal.benchmarks.cell import run_cell
    from glocal.benchmarks.tasks.classification import eval_transform
    from glocal.datasets.imagenet import ImageFolderDataset

    folder = _labelled_folder(tmp_path / "val")
    model = zoo.create_model("swin_micro", weights="random")
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    pruned_rec, dense_rec = (run_cell(c) for c in _cells(str(tmp_path / "w.safetensors"), folder,
                                                           ["dimap:ratio=0.35", "none"]))
    D.dimap(model, ratio=0.35)
    ds = ImageFolderDataset(folder, eval_transform(zoo.resolve("swin_micro")[1], 64))
    with torch.inference_mode():
        logits = torch.stack([model(ds[i][0][None])[0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    assert pruned_rec["metrics"]["top1"] == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())
    assert "top1" in dense_rec["metrics"] and dense_rec["settings"]["method"] is None
