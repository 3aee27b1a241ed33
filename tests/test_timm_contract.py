"""timm's own generic model checks (``tests/test_models.py`` of pytorch-image-models, the 1.0.29 tree that
matches the installed 1.0.x API; timm does not ship its tests), re-stated for SViT and DiNAT with GC ViT
(timm's implementation) as the control. The logic of each timm test is unchanged; only the model list is
ours and the sizes are timm's constants. Network-only tests (pretrained downloads) are re-stated with a
local file through timm's own pretrained path, and the offline case is checked to fail in one line.

The smallest variant of each family runs by default; the larger ones, and the fx backward and fx +
TorchScript checks (about 15 s each), are ``slow``.
"""

from __future__ import annotations

import fnmatch
import math

import pytest
import timm
import torch
from timm import create_model, get_pretrained_cfg_value, set_scriptable
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

import glocal.zoo  # noqa: F401 - registers svit_* and dinat_* in timm

FAST = ["gcvit_xxtiny", "svit_small", "dinat_mini"]
SLOW = ["svit_base", "svit_large", "dinat_tiny", "dinat_small", "dinat_base", "dinat_large"]
MODELS = FAST + [pytest.param(name, marks=pytest.mark.slow) for name in SLOW]
OURS = [m for m in MODELS if not (isinstance(m, str) and m.startswith("gcvit"))]

# timm's constants (tests/test_models.py)
NON_STD_FILTERS = ["vit_*", "gcvit*", "swin_*", "deit*"]  # the part of timm's list that matters here
TARGET_FWD_SIZE = MAX_FWD_SIZE = 384
TARGET_BWD_SIZE = 128
MAX_BWD_SIZE = 320
MAX_FWD_OUT_SIZE = 448
TARGET_JIT_SIZE = 128
MAX_JIT_SIZE = 320
TARGET_FFEAT_SIZE = 96
MAX_FFEAT_SIZE = 256
TARGET_FWD_FX_SIZE = 128
MAX_FWD_FX_SIZE = 256
TARGET_BWD_FX_SIZE = 128
MAX_BWD_FX_SIZE = 224


pytestmark = pytest.mark.usefixtures("eager_flex_one_thread")  # one thread (tests/conftest.py)


def _non_std(name: str) -> bool:
    return any(fnmatch.fnmatch(name, f) for f in NON_STD_FILTERS)


def _get_input_size(model=None, model_name: str = "", target: int | None = None) -> tuple[int, ...]:
    """timm's helper: the default input size, capped at ``target`` unless the model has a fixed size."""
    if model is None:
        input_size = get_pretrained_cfg_value(model_name, "input_size")
        fixed_input_size = get_pretrained_cfg_value(model_name, "fixed_input_size")
        min_input_size = get_pretrained_cfg_value(model_name, "min_input_size")
    else:
        input_size = model.default_cfg["input_size"]
        fixed_input_size = model.default_cfg.get("fixed_input_size", None)
        min_input_size = model.default_cfg.get("min_input_size", None)
    assert input_size is not None
    if fixed_input_size:
        return input_size
    if min_input_size:
        if target and max(input_size) > target:
            input_size = min_input_size
    elif target and max(input_size) > target:
        input_size = tuple(min(x, target) for x in input_size)
    return input_size


# ------------------------------------------------------------------------------------------------ construction

@pytest.mark.parametrize("model_name", MODELS)
def test_model_factory_kwargs(model_name):
    """timm passes ``device=`` / ``dtype=`` to every constructor: all tensors are created there, in that dtype."""
    model = create_model(model_name, device="meta", dtype=torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}
    floats = {(b.device.type, b.dtype) for b in model.buffers() if b.is_floating_point()}
    assert floats <= {("meta", torch.bfloat16)}
    assert {b.device.type for b in model.buffers()} <= {"meta"}


@pytest.mark.parametrize("model_name", MODELS)
def test_model_forward(model_name, batch_size=1):
    model = create_model(model_name, pretrained=False)
    model.eval()
    input_size = _get_input_size(model=model, target=TARGET_FWD_SIZE)
    if max(input_size) > MAX_FWD_SIZE:
        pytest.skip("Fixed input size model > limit.")
    inputs = torch.randn((batch_size, *input_size))
    outputs = model(inputs)
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"
    try:
        model.set_grad_checkpointing()
    except Exception:  # noqa: BLE001 - timm: unsupported is fine
        pass
    else:
        outputs2 = model(inputs)
        assert torch.allclose(outputs, outputs2, rtol=1e-4, atol=1e-5), "Output does not match"


@pytest.mark.parametrize("model_name", MODELS)
def test_model_backward(model_name, batch_size=2):
    input_size = _get_input_size(model_name=model_name, target=TARGET_BWD_SIZE)
    if max(input_size) > MAX_BWD_SIZE:
        pytest.skip("Fixed input size model > limit.")
    model = create_model(model_name, pretrained=False, num_classes=42)
    encoder_only = model.num_classes == 0
    num_params = sum(x.numel() for x in model.parameters())
    model.train()
    outputs = model(torch.randn((batch_size, *input_size)))
    outputs.mean().backward()
    for n, x in model.named_parameters():
        assert x.grad is not None, f"No gradient for {n}"
    num_grad = sum(x.grad.numel() for x in model.parameters() if x.grad is not None)
    if encoder_only:
        feat_axis = get_channel_dim(getattr(model, "output_fmt", "NCHW"))
        assert outputs.shape[feat_axis] == model.num_features
    else:
        assert outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@pytest.mark.parametrize("model_name", MODELS)
def test_model_default_cfgs(model_name, batch_size=1):
    """timm's ``test_model_default_cfgs`` (standard models) or ``..._non_std`` (GC ViT is in NON_STD_FILTERS)."""
    model = create_model(model_name, pretrained=False).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.default_cfg
    if _non_std(model_name):
        _default_cfgs_non_std(model_name, model, batch_size)
    else:
        _default_cfgs_std(model_name, model, batch_size)
    if cfg.get("num_classes", None):
        classifier = cfg["classifier"]
        for c in (classifier,) if not isinstance(classifier, (tuple, list)) else classifier:
            assert c + ".weight" in state_dict, f"{c} not in model params"
    first_conv = cfg["first_conv"]
    for fc in (first_conv,) if isinstance(first_conv, str) else first_conv:
        assert fc + ".weight" in state_dict, f"{fc} not in model params"


def _default_cfgs_std(model_name, model, batch_size):
    cfg = model.default_cfg
    pool_size = cfg["pool_size"]
    input_size = tuple(min(x, MAX_FWD_OUT_SIZE) for x in cfg["input_size"])
    output_fmt = getattr(model, "output_fmt", "NCHW")
    spatial_axis = get_spatial_dim(output_fmt)
    feat_axis = get_channel_dim(output_fmt)
    x = torch.randn((batch_size, *input_size))
    outputs = model.forward_features(x)
    outputs_pre = model.forward_head(outputs, pre_logits=True)
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]
    assert outputs.shape[feat_axis] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size
    model.reset_classifier(0)
    assert model.num_classes == 0
    outputs = model.forward(x)
    assert len(outputs.shape) == 2 and outputs.shape[1] == model.head_hidden_size
    assert outputs.shape == outputs_pre.shape
    model.reset_classifier(0, "")  # reset classifier and disable global pooling
    outputs = model.forward(x)
    assert len(outputs.shape) == 4
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]
    model = create_model(model_name, pretrained=False, num_classes=0, global_pool="").eval()
    outputs = model.forward(x)
    assert len(outputs.shape) == 4
    assert outputs.shape[spatial_axis[0]] == pool_size[0] and outputs.shape[spatial_axis[1]] == pool_size[1]


def _default_cfgs_non_std(model_name, model, batch_size):
    input_size = _get_input_size(model=model)
    x = torch.randn((batch_size, *input_size))
    outputs = model.forward_features(x)
    outputs_pre = model.forward_head(outputs, pre_logits=True)
    feat_dim = -1 if outputs.ndim == 3 else 1
    assert outputs.shape[feat_dim] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size
    model.reset_classifier(0)
    assert model.num_classes == 0
    outputs = model.forward(x)
    assert outputs.shape[feat_dim] == model.head_hidden_size and outputs.shape == outputs_pre.shape
    model = create_model(model_name, pretrained=False, num_classes=0).eval()
    assert model.forward(x).shape[feat_dim] == model.num_features


@pytest.mark.parametrize("model_name", MODELS)
def test_new_head_keeps_device_and_dtype(model_name):
    """``reset_classifier`` builds the new head where the model lives, in its dtype (timm's layers do)."""
    model = create_model(model_name, device="meta", dtype=torch.bfloat16)
    model.reset_classifier(7)
    head = model.get_classifier()
    assert (head.weight.device.type, head.weight.dtype, head.out_features) == ("meta", torch.bfloat16, 7)


# ------------------------------------------------------------------------------------------------ pretrained

def _official_like_file(model_name, tmp_path):
    """A random state dict in the model's own (= official) layout, saved as timm would find a local file."""
    torch.manual_seed(0)
    model = create_model(model_name)
    path = tmp_path / f"{model_name}.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("model_name", ["dinat_mini", pytest.param("dinat_tiny", marks=pytest.mark.slow)])
def test_model_load_pretrained(model_name, tmp_path, batch_size=1):
    """timm's test (in_chans 1, num_classes 5 and 0) through timm's pretrained path, with a local file."""
    assert model_name in timm.list_pretrained("dinat*")
    overlay = dict(file=str(_official_like_file(model_name, tmp_path)))
    model = create_model(model_name, pretrained=True, in_chans=1, num_classes=5, pretrained_cfg_overlay=overlay)
    assert model.patch_embed.proj[0].weight.shape[1] == 1 and model.num_classes == 5
    create_model(model_name, pretrained=True, in_chans=1, num_classes=0, pretrained_cfg_overlay=overlay)
    model = create_model(model_name, pretrained=True, features_only=True, pretrained_cfg_overlay=overlay)
    assert len(model.feature_info.channels()) == 4


def test_pretrained_without_network_fails_in_one_line(monkeypatch, tmp_path):
    """Offline, ``pretrained=True`` fails as timm's own models do: one line from the URL fetch."""
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    for name in ("gcvit_xxtiny", "dinat_mini"):
        with pytest.raises(OSError, match="Name or service not known") as err:
            create_model(name, pretrained=True)
        assert "\n" not in str(err.value)
    assert timm.list_pretrained("svit*") == []  # no hub weights exist: the error says where to get them
    with pytest.raises(ValueError, match="no timm/hub weights"):
        create_model("svit_small", pretrained=True)


# ------------------------------------------------------------------------------------------------ torchscript

@pytest.mark.parametrize("model_name", MODELS)
def test_model_forward_torchscript(model_name, batch_size=1):
    input_size = _get_input_size(model_name=model_name, target=TARGET_JIT_SIZE)
    if max(input_size) > MAX_JIT_SIZE:
        pytest.skip("Fixed input size model > limit.")
    with set_scriptable(True):
        model = create_model(model_name, pretrained=False)
    model.eval()
    model = torch.jit.script(model)
    outputs = model(torch.randn((batch_size, *input_size)))
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"


# ------------------------------------------------------------------------------------------------ features

def _check_feature_maps(model, outputs, input_size, batch_size, output_fmt):
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()
    feat_axis = get_channel_dim(output_fmt)
    spatial_axis = get_spatial_dim(output_fmt)
    assert len(expected_channels) == len(outputs)
    spatial_size = input_size[-2:]
    for e, r, o in zip(expected_channels, expected_reduction, outputs, strict=True):
        assert e == o.shape[feat_axis]
        assert o.shape[spatial_axis[0]] <= math.ceil(spatial_size[0] / r) + 1
        assert o.shape[spatial_axis[1]] <= math.ceil(spatial_size[1] / r) + 1
        assert o.shape[0] == batch_size
        assert not torch.isnan(o).any()


@pytest.mark.parametrize("model_name", OURS)
def test_model_forward_features(model_name, batch_size=1):
    """features_only with the model's default feature class (GC ViT is excluded here by timm: non-std)."""
    model = create_model(model_name, pretrained=False, features_only=True).eval()
    assert len(model.feature_info.channels()) >= 3
    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    outputs = model(torch.randn((batch_size, *input_size)))
    _check_feature_maps(model, outputs, input_size, batch_size, getattr(model, "output_fmt", "NCHW"))


@pytest.mark.parametrize("model_name", MODELS)
def test_model_forward_intermediates_features(model_name, batch_size=1):
    model = create_model(model_name, pretrained=False, features_only=True, feature_cls="getter").eval()
    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    outputs = model(torch.randn((batch_size, *input_size)))
    _check_feature_maps(model, outputs, input_size, batch_size, getattr(model, "output_fmt", "NCHW"))


@pytest.mark.parametrize("model_name", MODELS)
def test_model_forward_intermediates(model_name, batch_size=1):
    model = create_model(model_name, pretrained=False).eval()
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(feature_info.channels()) >= 3
    input_size = _get_input_size(model=model, target=TARGET_FFEAT_SIZE)
    inpt = torch.randn((batch_size, *input_size))
    output, intermediates = model.forward_intermediates(inpt, output_fmt="NCHW")

    class _Wrapped:  # timm reads channels/reductions from the FeatureInfo built above
        pass

    wrapped = _Wrapped()
    wrapped.feature_info = feature_info
    _check_feature_maps(wrapped, intermediates, input_size, batch_size, "NCHW")
    assert torch.allclose(output, model.forward_features(inpt))
    try:
        model.set_grad_checkpointing()
    except Exception:  # noqa: BLE001 - timm: unsupported is fine
        pass
    else:
        output3, _ = model.forward_intermediates(inpt, output_fmt="NCHW")
        assert torch.allclose(output, output3, rtol=1e-4, atol=1e-5), "Output does not match"


def test_dinat_mini_features_only_strides():
    """The issue's acceptance line: four maps at strides 4, 8, 16, 32 with the stage widths, NCHW."""
    model = create_model("dinat_mini", features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 128, 96))
    assert [tuple(m.shape) for m in maps] == [(1, c, 128 // r, 96 // r) for c, r in
                                              zip((64, 128, 256, 512), (4, 8, 16, 32), strict=True)]


# ------------------------------------------------------------------------------------------------ torch.fx

def _create_fx_model(model, train=False):
    """timm's helper: trace with timm's leaf modules and autowrapped functions, return the last node(s)."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes = [eval_nodes[-1]]
    train_return_nodes = [train_nodes[-1]]
    if train:
        tracer = NodePathTracer(**tracer_kwargs)
        graph = tracer.trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(node_name) for node_name in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]
    return create_feature_extractor(model, train_return_nodes=train_return_nodes,
                                    eval_return_nodes=eval_return_nodes, tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize("model_name", MODELS)
def test_model_forward_fx(model_name, batch_size=1):
    model = create_model(model_name, pretrained=False).eval()
    input_size = _get_input_size(model=model, target=TARGET_FWD_FX_SIZE)
    with torch.inference_mode():
        inputs = torch.randn((batch_size, *input_size))
        outputs = model(inputs)
        fx_outputs = torch.cat(tuple(_create_fx_model(model)(inputs).values()))
    assert torch.all(fx_outputs == outputs)
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@pytest.mark.slow  # ~15 s per model on a shared 2-core machine
@pytest.mark.parametrize("model_name", MODELS)
def test_model_backward_fx(model_name, batch_size=2):
    input_size = _get_input_size(model_name=model_name, target=TARGET_BWD_FX_SIZE)
    model = create_model(model_name, pretrained=False, num_classes=42).train()
    num_params = sum(x.numel() for x in model.parameters())
    model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(model(torch.randn((batch_size, *input_size))).values()))
    outputs.mean().backward()
    for n, x in model.named_parameters():
        assert x.grad is not None, f"No gradient for {n}"
    num_grad = sum(x.grad.numel() for x in model.parameters() if x.grad is not None)
    assert outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@pytest.mark.slow  # ~15 s per model on a shared 2-core machine
@pytest.mark.parametrize("model_name", MODELS)
def test_model_forward_fx_torchscript(model_name, batch_size=1):
    input_size = _get_input_size(model_name=model_name, target=TARGET_JIT_SIZE)
    with set_scriptable(True):
        model = create_model(model_name, pretrained=False)
    model.eval()
    model = torch.jit.script(_create_fx_model(model))
    with torch.inference_mode():
        outputs = torch.cat(tuple(model(torch.randn((batch_size, *input_size))).values()))
    assert outputs.shape[0] == batch_size
    assert not torch.isnan(outputs).any(), "Output included NaNs"
