"""Structure-sensitivity evaluator: odd-one-out rule, bootstrap, Top-K, backbones, loaders, harness wrapper."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from glocal.benchmarks.embeddings import Backbone, EmbeddingError, find_stages, n_keep, topk_sparsify
from glocal.benchmarks.metrics.structure_sensitivity import (
    CHANCE,
    RandomWeightsError,
    StructureError,
    bootstrap_ci,
    evaluate_structure,
    odd_one_out_credit,
    pairwise_distances,
)
from glocal.benchmarks.metrics.texture_observers import local_patch_features, pixel_histogram_features
from glocal.datasets.registry import DatasetError
from glocal.datasets.triplets import load_official, load_triplets

pytestmark = pytest.mark.usefixtures("one_thread")


def _img(seed: int, size: int = 48) -> Image.Image:
    """A smooth random colour image (blurred noise), distinct per seed."""
    g = np.random.default_rng(seed)
    a = g.random((size // 8, size // 8, 3))
    return Image.fromarray((a * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def known_sets(tmp_path_factory):
    """Official-layout sets with known answers: 'easy' (a == b, original differs) and 'hard' (a == original)."""
    root = tmp_path_factory.mktemp("known")
    for name, pick in (("easy", lambda o, x: (x, x)), ("hard", lambda o, x: (o, x))):
        for i in range(4):
            folder = root / name / f"t{i}"
            folder.mkdir(parents=True)
            orig, other = _img(10 * i), _img(10 * i + 1)
            a, b = pick(orig, other)
            orig.save(folder / "original.png")
            a.save(folder / "a.png")
            b.save(folder / "b.png")
    return root


# ---------------------------------------------------------------------------------------------------------
# decision rule and statistics


def test_odd_one_out_known_answers():
    o, a, b = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([0.9, 0.1])
    emb = torch.stack([
        torch.stack([o, a, b]),  # a, b close: correct
        torch.stack([a, a * 1.01, b]),  # original ~ a: wrong
        torch.stack([a, a, a]),  # three-way tie: 1/3
        torch.stack([torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])]),  # d_ab = d_oa
    ])
    credit = odd_one_out_credit(pairwise_distances(emb, "euclidean"))
    assert credit.tolist() == pytest.approx([1.0, 0.0, 1 / 3, 0.5])
    cos = odd_one_out_credit(pairwise_distances(emb[:3], "cosine"))
    assert cos.tolist() == pytest.approx([1.0, 0.0, 1 / 3])
    # a case where the two distances disagree: a and b parallel but far apart in length
    e = torch.tensor([[[1.0, 0.3], [1.0, 0.0], [10.0, 0.0]]])
    assert odd_one_out_credit(pairwise_distances(e, "cosine")).item() == 1.0
    assert odd_one_out_credit(pairwise_distances(e, "euclidean")).item() == 0.0


def test_pairwise_distances_match_reference():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(5, 3, 7, generator=g)
    d = pairwise_distances(e, "cosine")
    ref = torch.stack([1 - torch.cosine_similarity(e[:, i], e[:, j], dim=-1) for i, j in ((1, 2), (0, 1), (0, 2))], 1)
    torch.testing.assert_close(d, ref.double(), atol=1e-6, rtol=0)
    d = pairwise_distances(e, "euclidean")
    ref = torch.stack([torch.cdist(e[:, i:i + 1], e[:, j:j + 1])[:, 0, 0] for i, j in ((1, 2), (0, 1), (0, 2))], 1)
    torch.testing.assert_close(d, ref.double(), atol=1e-5, rtol=0)
    with pytest.raises(StructureError, match="unknown distance 'l1'"):
        pairwise_distances(e, "l1")
    with pytest.raises(StructureError, match="shape"):
        pairwise_distances(e[:, :2], "cosine")


def test_bootstrap_ci_known_cases():
    assert bootstrap_ci([1.0] * 50) == (1.0, 1.0)
    assert bootstrap_ci([0.0] * 50) == (0.0, 0.0)
    x = np.array([0.0, 1.0] * 200)  # p = 0.5, n = 400: normal interval 0.5 +- 1.96 * 0.025 = [0.451, 0.549]
    lo, hi = bootstrap_ci(x, resamples=4000, seed=1)
    assert abs(lo - 0.451) < 0.008 and abs(hi - 0.549) < 0.008
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=0)
    ref = ref.confidence_interval
    assert abs(lo - ref.low) < 0.01 and abs(hi - ref.high) < 0.01
    with pytest.raises(StructureError, match="non-empty"):
        bootstrap_ci([])


# ---------------------------------------------------------------------------------------------------------
# Top-K sparsity


@pytest.mark.parametrize("k,positions,expect",
                         [(0.1, 63, 6), (0.29, 100, 29), (0.05, 10, 1), (1.0, 12, 12), (1e-4, 49, 1)])
def test_n_keep(k, positions, expect):
    assert n_keep(k, positions) == expect


def test_topk_sparsify_layouts():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 9, generator=g)
    y = topk_sparsify(x, 0.1, "NCHW")
    keep = n_keep(0.1, 63)
    assert (y != 0).flatten(2).sum(-1).eq(keep).all()
    # kept entries are exactly the largest |x| of each channel, unchanged
    thresh = x.abs().flatten(2).topk(keep, -1).values[..., -1:]
    torch.testing.assert_close(y.flatten(2), torch.where(x.abs().flatten(2) >= thresh, x.flatten(2), 0.0))
    # NHWC is the same operation on permuted axes
    torch.testing.assert_close(topk_sparsify(x.permute(0, 2, 3, 1), 0.1, "NHWC"), y.permute(0, 2, 3, 1))
    # tokens: per channel over tokens, prefix (class) token untouched
    t = torch.randn(2, 1 + 16, 5, generator=g)
    s = topk_sparsify(t, 0.25, "NLC", prefix_tokens=1)
    torch.testing.assert_close(s[:, 0], t[:, 0])
    assert (s[:, 1:] != 0).sum(1).eq(4).all()
    assert topk_sparsify(x, 1.0, "NCHW") is x


def _stage_io(bb: Backbone, x: torch.Tensor, k: float):
    """Raw and sparsified outputs of every stage in one Top-K forward pass."""
    raw, post, handles = {}, {}, []
    for s in bb.stages():
        handles.append(s.module.register_forward_hook(lambda m, i, o, n=s.name: raw.__setitem__(n, o.clone())))
    try:
        with bb.hooked(topk=k):
            for s in bb.stages():
                handles.append(s.module.register_forward_hook(lambda m, i, o, n=s.name: post.__setitem__(n, o.clone())))
            with torch.no_grad():
                bb.pooled(x)
    finally:
        for h in handles:
            h.remove()
    return raw, post


def test_topk_hooks_nchw_resnet():
    timm = pytest.importorskip("timm")
    bb = Backbone.from_module(timm.create_model("resnet18", pretrained=False), image_size=64)
    stages = bb.stages()
    assert [s.name for s in stages] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    raw, post = _stage_io(bb, x, 0.1)
    for s in stages:
        assert s.layout(raw[s.name]) == "NCHW"
        torch.testing.assert_close(post[s.name], topk_sparsify(raw[s.name], 0.1, "NCHW"))
        h, w = raw[s.name].shape[-2:]
        assert (post[s.name] != 0).flatten(2).sum(-1).le(n_keep(0.1, h * w)).all()  # ReLU zeros may tie


def test_topk_hooks_nhwc_swin():
    timm = pytest.importorskip("timm")
    m = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, embed_dim=16, depths=(1, 1, 1, 1),
                          num_heads=(1, 1, 1, 1), img_size=64, window_size=4)
    bb = Backbone.from_module(m, image_size=64)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    raw, post = _stage_io(bb, x, 0.25)
    for s in bb.stages():
        assert s.layout(raw[s.name]) == "NHWC"
        h, w = raw[s.name].shape[1:3]
        torch.testing.assert_close(post[s.name], topk_sparsify(raw[s.name], 0.25, "NHWC"))
        assert (post[s.name] != 0).sum(dim=(1, 2)).eq(n_keep(0.25, h * w)).all()  # exactly k per channel


def test_layer_feature_is_pooled_stage_output():
    timm = pytest.importorskip("timm")
    bb = Backbone.from_module(timm.create_model("resnet18", pretrained=False))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(bb.embed(x, layer=-1), bb.embed(x))  # resnet pre-logits = GAP(layer4)
        l1 = bb.model.layer1(bb.model.maxpool(bb.model.act1(bb.model.bn1(bb.model.conv1(x)))))
        torch.testing.assert_close(bb.embed(x, layer=1), l1.mean(dim=(2, 3)))
    with pytest.raises(EmbeddingError, match="out of range: timm:resnet18 has 5 stages"):
        bb.embed(x, layer=7)


# ---------------------------------------------------------------------------------------------------------
# backbones end to end


def test_known_answers_end_to_end(known_sets):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False)
    for name, expect in (("easy", 1.0), ("hard", 0.0)):
        r = evaluate_structure(model, known_sets / name, image_size=64, progress=False, batch_size=3)
        assert r["accuracy"] == expect and r["n_trials"] == 4 and r["ci95"] == [expect, expect]
        assert r["weights"] == "unknown" and r["chance"] == CHANCE
        for base in ("pixel_histogram", "local_patches"):
            assert r["baselines"][base]["accuracy"] == expect
        assert r["shortcut_flags"] == (["pixel_histogram", "local_patches"] if expect else [])
        assert r["dataset"] == {"name": "triplets", "path": str(known_sets / name), "num_samples": 4,
                                "source": "official"}


def test_timm_name_random_refused_then_allowed(known_sets):
    with pytest.raises(RandomWeightsError, match="timm:resnet18 has random weights"):
        evaluate_structure("timm:resnet18", known_sets / "easy", weights="random", progress=False)
    r = evaluate_structure("timm:resnet18", known_sets / "easy", weights="random", allow_random=True, image_size=64,
                           progress=False, layer=2, topk=0.2, distance="euclidean", return_trials=True)
    assert r["weights"] == "random" and r["backbone"]["kind"] == "timm"
    assert r["backbone"]["preprocessing"]["input_size"] == [3, 64, 64]
    assert (r["layer"], r["topk"], r["distance"], r["accuracy"]) == (2, 0.2, "euclidean", 1.0)
    assert [t["credit"] for t in r["trials"]] == [1.0] * 4 and all(t["d_ab"] == 0.0 for t in r["trials"])


def test_zoo_style_module(known_sets):
    """A module carrying the zoo's provenance (card, variant, weights) uses the card's preprocessing."""
    timm = pytest.importorskip("timm")
    from glocal.zoo import Preprocessing, Variant
    from glocal.zoo.weights import RANDOM, WeightsInfo

    model = timm.create_model("resnet18", pretrained=False)
    model.glocal_variant = Variant(name="toy_net", builder=lambda: model,
                                   preprocessing=Preprocessing(input_size=(3, 56, 56), crop_pct=1.0))
    model.glocal_weights = RANDOM
    with pytest.raises(RandomWeightsError, match="toy_net has random weights"):
        evaluate_structure(model, known_sets / "hard", progress=False)
    model.glocal_weights = WeightsInfo(source="file", id="/weights/toy.safetensors")
    bb = Backbone.create(model)
    assert (bb.kind, bb.weights, bb.weights_id) == ("zoo", "pretrained", "/weights/toy.safetensors")
    assert bb.preprocess(_img(0, 80)).shape == (3, 56, 56)
    compiled = Backbone.create(torch.compile(model))  # the harness may hand over a compiled module
    assert compiled.model is model and [s.name for s in compiled.stages()][-1] == "layer4"
    assert evaluate_structure(bb, known_sets / "hard", progress=False)["accuracy"] == 0.0


def test_zoo_registered_model(known_sets):
    from glocal import zoo

    try:
        zoo.resolve("gcvit_xxtiny")
    except zoo.UnknownModelError:
        pytest.skip("gcvit_xxtiny is not registered in this checkout")
    model = zoo.create_model("gcvit_xxtiny", weights="random")
    with pytest.raises(RandomWeightsError):
        evaluate_structure(model, known_sets / "easy", progress=False)
    r = evaluate_structure(model, known_sets / "easy", allow_random=True, progress=False, topk=0.1, batch_size=4)
    assert r["weights"] == "random" and r["backbone"]["kind"] == "zoo" and r["n_trials"] == 4
    assert r["accuracy"] == 1.0
    r = evaluate_structure(model, known_sets / "hard", allow_random=True, progress=False, layer=-1)
    assert r["accuracy"] == 0.0


def test_open_clip_encoder(known_sets):
    pytest.importorskip("open_clip")
    r = evaluate_structure("open_clip:ViT-S-32", known_sets / "easy", allow_random=True, image_size=64,
                           progress=False)
    assert (r["weights"], r["backbone"]["kind"], r["backbone"]["name"]) == ("random", "open_clip", "open_clip:ViT-S-32")
    assert r["accuracy"] == 1.0
    bb = Backbone.create("open_clip:ViT-S-32", image_size=64)
    stages = find_stages(bb.model)
    assert len(stages) == 12 and stages[0].name == "visual.transformer.resblocks.0"
    x = torch.randn(2, 3, 64, 64)
    raw, post = _stage_io(bb, x, 0.5)
    s = stages[3]
    assert raw[s.name].shape == (2, 5, 384) and s.layout(raw[s.name]) == "NLC" and s.prefix(raw[s.name]) == 1
    torch.testing.assert_close(post[s.name], topk_sparsify(raw[s.name], 0.5, "NLC", 1))
    with torch.no_grad():
        feats = bb.embed(x, layer=3)
    cap = {}
    h = s.module.register_forward_hook(lambda m, i, o: cap.__setitem__("o", o))
    with torch.no_grad():
        bb.pooled(x)
    h.remove()
    torch.testing.assert_close(feats, cap["o"][:, 1:].mean(1))


def test_bad_inputs(known_sets):
    with pytest.raises(StructureError, match="unknown timm model 'not_a_model'"):
        evaluate_structure("timm:not_a_model", known_sets / "easy", weights="random")
    with pytest.raises(StructureError, match="unknown model 'no-such-net'"):
        evaluate_structure("no-such-net", known_sets / "easy")
    with pytest.raises(StructureError, match="topk must be a fraction"):
        evaluate_structure("timm:resnet18", known_sets / "easy", topk=5)
    with pytest.raises(StructureError, match="layer must be 'pooled' or a stage index"):
        evaluate_structure("timm:resnet18", known_sets / "easy", layer="last")
    with pytest.raises(EmbeddingError, match="cannot tell the preprocessing"):
        Backbone.create(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------------------
# local-only observers


def test_local_observers_are_position_free_and_exact():
    img = _img(3, 64)
    a = np.asarray(img)
    rolled = Image.fromarray(np.ascontiguousarray(a[::-1]))  # same pixels, other places
    np.testing.assert_array_equal(pixel_histogram_features(img), pixel_histogram_features(rolled))
    assert np.linalg.norm(pixel_histogram_features(img)) == pytest.approx(1.0)  # unit-norm Hellinger embedding
    f = local_patch_features(img)
    assert f.shape == (5 * 14 + 2 * 10 + 2 * (16 + 14),)  # oriented responses, LBPs, chroma values/gradients
    assert np.linalg.norm(f) == pytest.approx(1.0)
    # swapping two 32 px halves keeps every 7 px patch except those that straddle the cut
    halves = Image.fromarray(np.concatenate([a[32:], a[:32]]))
    assert np.linalg.norm(local_patch_features(halves) - f) < np.linalg.norm(local_patch_features(_img(4, 64)) - f)


# ---------------------------------------------------------------------------------------------------------
# loaders


def test_official_folder_layout(tmp_path):
    for i in range(3):
        d = tmp_path / "cls" / f"trip{i}"
        d.mkdir(parents=True)
        _img(i).save(d / "orig.jpg")
        _img(i + 10).save(d / "synth_0.png")
        _img(i + 20).save(d / "synth_1.png")
    s = load_triplets(tmp_path, expect="dist")
    assert (s.name, s.source, len(s)) == ("dist", "official", 3)
    assert s.ids == ["cls/trip0", "cls/trip1", "cls/trip2"]
    assert [p.name for p in s.files[0]] == ["orig.jpg", "synth_0.png", "synth_1.png"]
    assert s.tensors(1).shape == (3, 3, 48, 48)
    (tmp_path / "cls" / "trip2" / "synth_1.png").unlink()
    with pytest.raises(DatasetError, match="trip2 has 1 disrupted images next to orig.jpg; expected 2"):
        load_official(tmp_path, "dist")


def test_official_csv_layout(tmp_path):
    for i in range(2):
        for role in ("o", "a", "b"):
            _img(i * 3 + ord(role)).save(tmp_path / f"{i}_{role}.png")
    with (tmp_path / "triplets.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["triplet_id", "orig_path", "synth_a_path", "synth_b_path"])
        w.writerows([[f"n{i}", f"{i}_o.png", f"{i}_a.png", f"{i}_b.png"] for i in range(2)])
    s = load_triplets(tmp_path, expect="disrt")
    assert (s.name, s.ids, len(s[0])) == ("disrt", ["n0", "n1"], 3)
    (tmp_path / "1_b.png").unlink()
    with pytest.raises(DatasetError, match="line 3: disrupted_b image not found"):
        load_triplets(tmp_path)
    (tmp_path / "triplets.csv").write_text("id,original,b\nx,0_o.png,0_b.png\n")
    with pytest.raises(DatasetError, match="no 'disrupted_a' column"):
        load_triplets(tmp_path)


def test_loader_errors(tmp_path):
    with pytest.raises(DatasetError, match="triplet set not found"):
        load_triplets(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no triplets in"):
        load_triplets(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "glocal-triplets/1", "generator": "disrt-style",
                                                        "status": "complete", "items": []}))
    with pytest.raises(DatasetError, match="is a disrt-style set, not a dist set; score it with --dataset disrt="):
        load_triplets(tmp_path, expect="dist")
    with pytest.raises(DatasetError, match="has no accepted triplets"):
        load_triplets(tmp_path, expect="disrt")


# ---------------------------------------------------------------------------------------------------------
# harness wrapper


def test_registered_evaluators(known_sets, tmp_path):
    timm = pytest.importorskip("timm")
    from glocal.benchmarks.tasks import DatasetSpec, EvalContext, TaskError, evaluators
    from glocal.datasets.disrt_style import make_disrt_style
    from glocal.zoo import Preprocessing, Variant
    from glocal.zoo.weights import RANDOM, WeightsInfo

    entries = evaluators()
    assert entries["dist"].tasks == ("classification",) and entries["disrt"].tasks == ("classification",)
    assert entries["dist"].needs_pretrained and entries["disrt"].needs_pretrained
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        _img(i, 64).save(src / f"im{i}.png")
    make_disrt_style(src, tmp_path / "set", size=64, grid=2, progress=False)
    model = timm.create_model("resnet18", pretrained=False)
    variant = Variant(name="toy_net", builder=lambda: model, preprocessing=Preprocessing(input_size=(3, 64, 64)))
    model.glocal_weights = WeightsInfo(source="file", id="toy")
    ctx = EvalContext(device=torch.device("cpu"), batch_size=2, progress=False, workers=0)
    spec = DatasetSpec("disrt", tmp_path / "set", {"topk": "0.5", "distance": "euclidean"})
    res = entries["disrt"].fn(model, None, variant, spec, ctx)
    m = res.metrics["structure_sensitivity"]
    assert set(m) >= {"accuracy", "n_trials", "ci95", "chance", "distance", "layer", "topk", "baselines", "weights"}
    assert (m["n_trials"], m["topk"], m["distance"], m["weights"]) == (3, 0.5, "euclidean", "pretrained")
    assert m["baselines"]["pixel_histogram"]["accuracy"] == CHANCE  # the lattice keeps histograms identical
    assert res.dataset["name"] == "disrt-style" and res.dataset["source"] == "generated"
    assert res.dataset["generator"] == "disrt-style" and res.dataset["num_samples"] == 3 and res.dataset["seed"] == 0
    with pytest.raises(TaskError, match="is a disrt-style set, not a dist set"):
        entries["dist"].fn(model, None, variant, DatasetSpec("dist", tmp_path / "set"), ctx)
    with pytest.raises(TaskError, match="--dataset dist needs a folder"):
        entries["dist"].fn(model, None, variant, DatasetSpec("dist"), ctx)
    with pytest.raises(TaskError, match="unknown option 'k'"):
        entries["dist"].fn(model, None, variant, DatasetSpec("dist", known_sets / "easy", {"k": "1"}), ctx)
    model.glocal_weights = RANDOM
    with pytest.raises(TaskError, match="random weights"):
        entries["dist"].fn(model, None, variant, DatasetSpec("dist", known_sets / "easy"), ctx)
