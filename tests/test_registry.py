"""Registry: name resolution, suggestions, cards, plugins."""

import pytest
import torch

from glocal import zoo
from glocal.zoo.registry import ModelCard, Preprocessing, UnknownModelError, Variant, normalize


@pytest.mark.parametrize("name", ["gcvit", "GC-ViT", "gc_vit", "GCViT"])
def test_family_resolves_to_default_variant(name):
    card, variant = zoo.resolve(name)
    assert card.family == "gcvit" and variant.name == card.default_variant == "gcvit_tiny"


@pytest.mark.parametrize("name", ["gcvit_tiny", "GCVIT-Tiny", "gcvit tiny"])
def test_variant_names_are_case_and_separator_insensitive(name):
    assert zoo.resolve(name)[1].name == "gcvit_tiny"


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownModelError) as e:
        zoo.resolve("gcvit_tinyy")
    msg = str(e.value)
    assert "unknown model 'gcvit_tinyy'" in msg and "gcvit_tiny" in msg


def test_every_card_is_complete():
    for card in zoo.cards():
        d = card.to_dict()
        for key in ("family", "display_name", "task", "paper_title", "arxiv_id", "official_repo", "license"):
            assert d[key], (card.family, key)
        assert card.default_variant in [v.name for v in card.variants]
        for v in card.variants:
            for m in v.paper_metrics:
                assert isinstance(m.value, float | int)


def test_gcvit_params_equal_card_and_timm():
    for name in zoo.list_models(family="gcvit"):
        _, variant = zoo.resolve(name)
        with torch.device("meta"):
            model = variant.build()
        assert sum(p.numel() for p in model.parameters()) == variant.params


def test_duplicate_names_across_families_are_refused():
    dummy = ModelCard(family="dummyfam", display_name="Dummy", task="classification", paper_title="t",
                      arxiv_id="0", official_repo="r", license="l",
                      variants=(Variant(name="gcvit_tiny", builder=torch.nn.Identity),))
    with pytest.raises(ValueError, match="already registered"):
        zoo.register(dummy)


def test_normalize():
    assert normalize("GC-ViT_Tiny 2") == "gcvittiny2"


def test_any_timm_model_resolves_through_timm_prefix():
    card, variant = zoo.resolve("timm:resnet18")
    assert card.task == "classification" and variant.preprocessing.crop_pct == 0.95
    with torch.device("meta"):
        assert sum(p.numel() for p in variant.build().parameters()) == 11_689_512
    assert "timm:resnet18" not in zoo.list_models()
    with pytest.raises(UnknownModelError, match="did you mean timm:resnet18"):
        zoo.resolve("timm:resnet1888")


def test_dataset_spec_parsing():
    from glocal.benchmarks.tasks import DatasetSpec, TaskError

    spec = DatasetSpec.parse("8KDehaze=/data/8k,level=2,size=1024")
    assert spec.name == "8kdehaze" and str(spec.path) == "/data/8k" and spec.options == {"level": "2", "size": "1024"}
    assert DatasetSpec.parse("builtin-sr,limit=2") == DatasetSpec("builtin-sr", None, {"limit": "2"})
    with pytest.raises(TaskError, match="expected key=value"):
        DatasetSpec.parse("set5=/x,oops")


def test_classification_preprocessing_is_derived_from_timms_pretrained_cfg():
    import timm

    cfg = timm.models.get_pretrained_cfg("gcvit_xtiny")
    pp = Preprocessing.from_timm("gcvit_xtiny")
    assert pp == zoo.resolve("gcvit_xtiny")[1].preprocessing == zoo.resolve("timm:gcvit_xtiny")[1].preprocessing
    assert (pp.input_size, pp.mean, pp.std, pp.crop_pct, pp.interpolation) == (
        tuple(cfg.input_size), tuple(cfg.mean), tuple(cfg.std), cfg.crop_pct, cfg.interpolation)
    assert Preprocessing.from_timm("no_such_model_anywhere") == Preprocessing()
