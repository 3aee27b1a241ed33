"""UltraGen video quality through the generation task, on a tiny diffusers Wan pipeline built here (tiny Wan VAE,
one-layer umT5, a word-level tokenizer, UniPC): make_pipeline generates seeded videos of the requested size and
frames and equals WanPipeline's own call; the ``prompts`` evaluator on a video host writes the seeded frames and
returns the measures computed by video_quality's functions on the written videos; bad input is one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from glocal.benchmarks.metrics import video_quality as vq  # noqa: E402
from glocal.benchmarks.tasks import DatasetSpec, EvalContext, TaskError, get_evaluator  # noqa: E402
from glocal.benchmarks.tasks import generation as gen  # noqa: E402
from glocal.zoo import create_model  # noqa: E402
from glocal.zoo.models import ultragen as U  # noqa: E402

WORDS = ["<pad>", "</s>", "<unk>", *"a red cat dog runs in the park blue car".split()]
SIDE, FRAMES = 64, 5  # 64x64 frames: a 2x4x4 token grid; 2^5 downsampling still leaves 2x2 pixels


def _tokenizer():
    """A word-level umT5 stand-in (pad 0, eos appended), built offline from the tokenizers library."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _save_wan_folder(path, text_dim: int = 40) -> None:
    """A Wan2.1-style diffusers folder without a transformer (the model brings its own)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(WORDS), d_model=text_dim, d_kv=8, d_ff=32, num_layers=1,
                                          num_heads=2, relative_attention_num_buckets=8))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    WanPipeline(tokenizer=_tokenizer(), text_encoder=encoder, vae=vae, scheduler=scheduler).save_pretrained(path)


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("wan") / "Wan2.1-tiny"
    _save_wan_folder(path)
    return path


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """The tiny model's state dict as a weights file: a model loaded from it counts as real weights."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = create_model("ultragen_tiny", weights="random", quiet=True)
    path = tmp_path_factory.mktemp("weights") / "ultragen_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def _model(weights="random", frames: int = FRAMES) -> U.UltraGenVideo:
    model = create_model("ultragen_tiny", weights=weights, quiet=True)
    model.configure(SIDE, frames=frames)
    return model


def test_make_pipeline_generates_seeded_videos_as_wan_pipeline_does(wan_folder) -> None:
    from diffusers import WanPipeline

    model = _model()
    generate = model.make_pipeline(wan_folder, "cpu", torch.float32)
    assert generate.pipe.transformer is model.transformer and generate.pipe.scheduler.config.flow_shift == 5.0
    video = generate("a red cat", side=SIDE, seed=3, frames=FRAMES, steps=1)
    assert video.shape == (FRAMES, 3, SIDE, SIDE) and video.dtype == torch.float32
    assert 0 <= float(video.min()) and float(video.max()) <= 1 and float(video.std()) > 0.01
    assert float((generate("a red cat", side=SIDE, seed=4, frames=FRAMES, steps=1) - video).abs().max()) > 0.05
    # the same seed straight through diffusers (flow shift 5, the released negative prompt, a seeded CPU generator)
    pipe = WanPipeline.from_pretrained(wan_folder, transformer=model.transformer, local_files_only=True)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=5.0)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt="a red cat", negative_prompt=U.RELEASED_NEGATIVE, height=SIDE, width=SIDE, num_frames=FRAMES,
               num_inference_steps=1, guidance_scale=5.0, generator=torch.Generator().manual_seed(3),
               output_type="pt").frames[0]
    assert torch.equal(video, ref)
    # another frame count reconfigures the UltraGen attention (9 frames: a 3-frame latent grid)
    assert generate("a dog", side=SIDE, seed=0, frames=9, steps=1).shape == (9, 3, SIDE, SIDE)
    assert model.setting["grid"] == (3, 4, 4) and model.frames == 9
    # the attention the cell configured is kept: dense Wan on the same weights (--compare dense) is another video
    model.configure(SIDE, attention="dense-sdpa", frames=FRAMES)
    dense = generate("a red cat", side=SIDE, seed=3, frames=FRAMES, steps=1)
    assert model.setting["attention"] == "dense-sdpa" and float((dense - video).abs().max()) > 0.05


def test_make_pipeline_refuses_bad_folders_in_one_line(wan_folder, tmp_path) -> None:
    model = _model()
    with pytest.raises(U.UltraGenPipelineError, match=r"^Wan pipeline folder not found: .*nowhere \(a diffusers"):
        model.make_pipeline(tmp_path / "nowhere")
    (tmp_path / "flux").mkdir()
    (tmp_path / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(U.UltraGenPipelineError, match=r"model_index.json describes FluxPipeline, not a WanPipeline$"):
        model.make_pipeline(tmp_path / "flux")
    wide = create_model("ultragen_tiny", weights="random", quiet=True, text_dim=24)
    with pytest.raises(U.UltraGenPipelineError, match=r"does not fit UltraGenVideo: text width 40 and latent "
                                                      r"channels 16, the transformer takes 24 and 16$"):
        wide.make_pipeline(wan_folder, "cpu", torch.float32)


def _tiny_clip(tmp_path):
    """A registered one-layer open_clip architecture and its random weights file (OpenAI's BPE tokenizer is
    bundled with open_clip)."""
    import open_clip
    from safetensors.torch import save_file

    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "glocal-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "glocal-tiny-clip.json")
    torch.manual_seed(2)
    model = open_clip.create_model("glocal-tiny-clip")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "clip.safetensors")
    return "glocal-tiny-clip", tmp_path / "clip.safetensors"


class _L1(torch.nn.Module):  # an LPIPS stand-in: per-image mean absolute difference
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean(dim=(1, 2, 3))


class _ClipStats(torch.nn.Module):  # an I3D stand-in: (N, 3, T, S, S) -> per-channel mean and std
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


def _reference_videos(root, count: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    videos = [gen.quantise_video(torch.rand(FRAMES, 3, SIDE, SIDE, generator=g)) for _ in range(count)]
    for i, v in enumerate(videos):
        gen.write_video_frames(v, root / f"real{i}")
    return [v.float() / 255 for v in videos]


def test_video_evaluator_writes_seeded_videos_and_their_measures(wan_folder, weights_file, tmp_path) -> None:
    arch, clip_file = _tiny_clip(tmp_path)
    torch.jit.script(_L1()).save(str(tmp_path / "lpips.pt"))
    torch.jit.script(_ClipStats()).save(str(tmp_path / "i3d.pt"))
    refs = _reference_videos(tmp_path / "ref")
    prompts = [("a red cat runs", 7), ("a blue car in the park", 11)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": t, "seed": s}) + "\n" for t, s in prompts))
    spec = DatasetSpec.parse(f"prompts={tmp_path / 'p.jsonl'},pipeline={wan_folder},out={tmp_path / 'out'},"
                             f"clip={arch}:{clip_file},lpips=torchscript:{tmp_path / 'lpips.pt'},"
                             f"i3d=torchscript:{tmp_path / 'i3d.pt'},reference={tmp_path / 'ref'},patch=32,steps=1")
    model = _model(weights_file)
    assert not model.glocal_weights.is_random
    result = get_evaluator(spec, "generation").fn(model, None, None, spec, EvalContext(
        device=torch.device("cpu"), resolution=SIDE, progress=False))

    folders = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert folders == ["00000_seed7", "00001_seed11"]
    videos = [gen.read_video_frames(tmp_path / "out" / f) for f in folders]
    assert all(v.shape == (FRAMES, 3, SIDE, SIDE) for v in videos)
    again = model.make_pipeline(wan_folder, "cpu", torch.float32)(prompts[1][0], side=SIDE, seed=11, frames=FRAMES,
                                                                    steps=1)
    assert torch.equal(gen.quantise_video(again).float() / 255, videos[1])  # the file is what its seed generates

    clip = vq.open_clip_frames(arch, clip_file)
    per_video = [clip(v, t) for v, (t, _) in zip(videos, prompts, strict=True)]
    lpips = vq.lpips_distance("torchscript", tmp_path / "lpips.pt")
    i3d = vq.i3d_extractor("torchscript", tmp_path / "i3d.pt")
    want = {"clip_score": sum(float(s.mean()) for s, _ in per_video) / 2,
            "temporal_consistency": sum(vq.temporal_consistency(e) for _, e in per_video) / 2,
            "hd_mse": sum(vq.hd_mse(v) for v in videos) / 2,
            "hd_lpips": sum(vq.hd_lpips(v, lpips) for v in videos) / 2,
            "hd_fvd": vq.hd_fvd(refs, videos, i3d, size=32)}
    assert set(result.metrics) == set(want) and all(math.isfinite(v) for v in result.metrics.values())
    for key, value in want.items():
        assert result.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    d = result.dataset
    assert (d["num_samples"], d["frames"], d["size"], d["sampling"]) == (2, FRAMES, "64x64", {"steps": 1,
                                                                                             "guidance": 5.0})
    assert d["reference_videos"] == 3 and "reward noise" in d["hd_caveat"] and "PNG" in d["format"]


def test_video_evaluator_refuses_bad_input_before_writing(wan_folder, weights_file, tmp_path) -> None:
    (tmp_path / "p.txt").write_text("a cat\n")
    base = f"prompts={tmp_path / 'p.txt'},out={tmp_path / 'out'}"
    ctx = EvalContext(device=torch.device("cpu"), resolution=SIDE, progress=False)

    def run(options: str, model: U.UltraGenVideo) -> None:
        spec = DatasetSpec.parse(base + options)
        get_evaluator(spec, "generation").fn(model, None, None, spec, ctx)

    real = _model(weights_file)
    cases = [
        (f",pipeline={wan_folder}", _model(), r"^generation quality needs real weights \(got random weights\)"),
        (f",pipeline={tmp_path / 'none'}", real, r"^Wan pipeline folder not found: .*none \(a diffusers"),
        (f",pipeline={wan_folder},inception=torchmetrics:x.pth", real, r"^inception= is an image measure"),
        (f",pipeline={wan_folder},i3d=torchscript:{tmp_path / 'p.txt'}", real, r"^HD-FVD needs reference=DIR"),
        (f",pipeline={wan_folder},i3d=torchscript:{tmp_path / 'i3d.pt'},reference={tmp_path}", real,
         r"^I3D TorchScript file not found: .*i3d.pt \(give i3d=KIND:PATH\)$"),
        (f",pipeline={wan_folder},lpips=torchscript:{tmp_path / 'p.txt'}", real,
         r"^LPIPS .*p.txt is not a TorchScript file"),
        (f",pipeline={wan_folder}", _model(weights_file, frames=1), r"^video quality needs at least 2 frames"),
    ]
    for options, model, message in cases:
        with pytest.raises(TaskError, match=message):
            run(options, model)
        assert not (tmp_path / "out").exists()
    gen.write_video_frames(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), tmp_path / "odd")
    gen.write_video_frames(torch.zeros(1, 3, 8, 16, dtype=torch.uint8), tmp_path / "odd2")
    (tmp_path / "odd2" / "0000.png").rename(tmp_path / "odd" / "0002.png")
    with pytest.raises(TaskError, match=r"odd: frames of different sizes$"):
        gen.read_video_frames(tmp_path / "odd")
    (tmp_path / "odd" / "0003.png").write_bytes(b"not a png")
    with pytest.raises(TaskError, match=r"odd: unreadable frame \("):
        gen.read_video_frames(tmp_path / "odd")


def test_i3d_and_lpips_loaders(tmp_path) -> None:
    class StyleganvStandIn(torch.nn.Module):  # StyleGAN-V's call convention; features show what it was fed
        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                    return_features: bool = False) -> torch.Tensor:
            if rescale or resize or not return_features:
                raise RuntimeError("called without rescale=False, resize=False, return_features=True")
            return torch.stack([x.amin(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4)), x[:, 0, 1].mean(dim=(1, 2))], 1)

    torch.jit.script(StyleganvStandIn()).save(str(tmp_path / "i3d.pt"))
    clips = torch.rand(5, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # (P, T, 3, S, S) in [0, 1]
    feats = vq.i3d_extractor("styleganv", tmp_path / "i3d.pt", batch=2)(clips)
    want = torch.stack([clips.amin(dim=(1, 2, 3, 4)), clips.amax(dim=(1, 2, 3, 4)), clips[:, 1, 0].mean(dim=(1, 2))],
                       1) * 2 - 1  # frame 1, channel 0, on [-1, 1]
    torch.testing.assert_close(feats, want)
    with pytest.raises(vq.VideoQualityError, match="unknown I3D kind 'tf'; expected one of styleganv, torchscript"):
        vq.i3d_extractor("tf", tmp_path / "i3d.pt")
    with pytest.raises(vq.VideoQualityError, match=r"^unknown LPIPS kind 'resnet'"):
        vq.lpips_distance("resnet", tmp_path / "i3d.pt")
    with pytest.raises(vq.VideoQualityError, match=r"^LPIPS weights file not found: .*none.pt \(give lpips=KIND"):
        vq.lpips_distance("alex", tmp_path / "none.pt")


def test_lpips_package_kind_loads_a_torchvision_backbone(tmp_path) -> None:
    """``lpips=alex:FILE``: the lpips package's network with the backbone from a torchvision weights file equals
    lpips.LPIPS whose backbone layers were copied from the same torchvision model."""
    lpips = pytest.importorskip("lpips")
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    save_file({k: v.contiguous() for k, v in alex.state_dict().items()}, tmp_path / "alexnet.safetensors")
    ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    for part in ref.net.children():
        for index, layer in part.named_children():
            layer.load_state_dict(alex.features[int(index)].state_dict())
    a, b = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (1, 2))
    with torch.no_grad():
        torch.testing.assert_close(vq.lpips_distance("alex", tmp_path / "alexnet.safetensors")(a, b),
                                   ref(a, b).flatten())
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(vq.VideoQualityError, match=r"bad.pth is not a torchvision alex backbone"):
        vq.lpips_distance("alex", tmp_path / "bad.pth")
