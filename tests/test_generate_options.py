"""Generation options: scheduler by name, the SDXL refiner, the fused adapter.

The adapter here is made, not trained: the real exporter (train.lora.save_adapter) writes a LoRA
with random, clearly non-zero weights on the tiny UNet and text encoders, so its effect on the images is large (two
training steps barely move a fresh LoRA) and no face models are needed. Tiny model, 2-4 steps.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from headshots.config import save_config
from headshots.errors import ConfigError, WeightsError
from headshots.workspace import ADAPTER_WEIGHTS, Workspace


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory, tiny_model) -> Path:
    """A LoRA adapter folder as training leaves it (weights + config.yaml), with random weights, on the
    UNet and on both text encoders (as with train.text_encoder_lora)."""
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig

    from headshots.config import load_config
    from train.lora import attach_lora, save_adapter
    from train.recipe import adapter_metadata

    cfg = load_config("alice", "tiny", overrides=[f"model.pretrained={tiny_model}"])
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model)
    attach_lora(pipe.unet, cfg.train)
    text_encoders = [pipe.text_encoder, pipe.text_encoder_2]
    for encoder in text_encoders:
        encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
    torch.manual_seed(0)
    for model in (pipe.unet, *text_encoders):
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.2)  # peft starts B at zero: the adapter would do nothing
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    save_adapter(pipe.unet, out, adapter_metadata(cfg), text_encoders=text_encoders)
    save_config(cfg, out / "config.yaml")
    return out


@pytest.fixture(scope="module")
def tiny_refiner(tmp_path_factory) -> Path:
    from headshots.tiny_sdxl import build_tiny_refiner

    path = tmp_path_factory.mktemp("models") / "tiny-refiner"
    build_tiny_refiner().save_pretrained(path)
    return path


@pytest.fixture
def user_config(make_config, random_adapter):
    """make_config for alice, whose run `default` holds the random adapter; one image, 2 steps."""

    def _make(*overrides: str):
        cfg = make_config("alice", "infer.styles=[linkedin]", "infer.images_per_style=1", "infer.steps=2", *overrides)
        adapter = Workspace.from_config(cfg).adapter_dir(cfg.run)
        if not adapter.exists():
            shutil.copytree(random_adapter, adapter)
        return cfg

    return _make


def _manifest(cfg) -> dict:
    return json.loads((Workspace.from_config(cfg).samples_dir(cfg.run) / "manifest.json").read_text())


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_scheduler_by_name_is_used_and_recorded(user_config, tiny_model):
    from diffusers import EulerDiscreteScheduler

    from headshots.schedulers import make_scheduler
    from infer.generate import generate

    own = EulerDiscreteScheduler.from_pretrained(tiny_model, subfolder="scheduler")
    karras = make_scheduler("dpmpp_2m_karras", own)
    assert type(karras).__name__ == "DPMSolverMultistepScheduler" and karras.config.use_karras_sigmas
    assert (karras.config.beta_schedule, karras.config.beta_end) == ("scaled_linear", 0.012)  # the model's noise schedule

    cfg = user_config("infer.scheduler=dpmpp_2m_karras")
    generate(cfg)
    entry = _manifest(cfg)["images"][0]
    assert entry["scheduler"] == "dpmpp_2m_karras" and entry["scheduler_class"] == "DPMSolverMultistepScheduler"
    assert entry["refiner"] is None and entry["refiner_start"] is None


@pytest.mark.parametrize("override, message", [
    ("infer.scheduler=karras", "'euler', 'euler_a', 'dpmpp_2m'"),
    ("infer.refiner_start=1.0", "between 0 and 1"),
    ("infer.round=../r1", "letters, digits, '.', '_' or '-'"),
    # an inference review: a strength that left no denoising step ended deep in diffusers (a reshape of 0 elements);
    # a crop smaller than the pasted face cut it with a straight seam
    (["infer.detail.strength=0.1", "infer.detail.steps=9"], r"`infer.detail.strength` is 0.1, which with infer.detail.steps=9"),
    ("infer.detail.crop_scale=1.1", r"at least 1 \+ infer.detail.dilate \(1.15\)"),
])
def test_bad_generation_options_fail_at_load(make_config, override, message):
    with pytest.raises(ConfigError, match=message):
        make_config("alice", *([override] if isinstance(override, str) else override))


@pytest.mark.parametrize("overrides, message", [
    (["infer.more.strength=0.02", "infer.steps=30"], r"infer.steps=30 leaves no denoising step .* at least 0.034"),
    (["infer.refiner=x", "infer.refiner_start=0.8", "infer.more.strength=0.15", "infer.steps=30"],
     r"leaves the person's adapter no step .* use more than 0.2"),
])
def test_a_more_like_this_strength_that_draws_nothing_with_the_adapter_is_refused_before_any_model_loads(
        make_config, monkeypatch, overrides, message):
    """An inference review: a strength leaving img2img no step ended deep in diffusers after the model loaded; one at or
    below the refiner's share drew the variation without the person's adapter. Checked when variations are asked for:
    refused at load, the default strength beside infer.refiner_start=0.5 stopped every generation."""
    from infer.variations import more_like

    monkeypatch.setattr("infer.variations.pipelines_for", lambda *args: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match=message):
        more_like(make_config("alice", "infer.more.image=linkedin-00.png", *overrides))
    make_config("alice", "infer.refiner=x", "infer.refiner_start=0.5")  # a generation's settings load


def test_refiner_finishes_the_base_image(user_config, tiny_refiner):
    from infer.generate import Pipelines, generate, load_pipelines, sample, trains_text_encoders
    from infer.styles import load_style

    cfg = user_config(f"infer.refiner={tiny_refiner}", "infer.refiner_start=0.5", "infer.steps=4")
    adapter = Workspace.from_config(cfg).require_adapter(cfg.run)
    pipes = load_pipelines(cfg, adapter)
    assert pipes.refiner.vae is pipes.base.vae
    # this adapter trained the text encoders too: the refiner keeps its own second one, as its UNet knows it (an ML
    # review: it shared the base's, changed by the person's LoRA); an adapter of the UNet alone shares it
    stock = type(pipes.refiner.text_encoder_2).from_pretrained(tiny_refiner, subfolder="text_encoder_2")
    assert pipes.refiner.text_encoder_2 is not pipes.base.text_encoder_2
    assert all(torch.equal(a, b) for a, b in zip(pipes.refiner.text_encoder_2.state_dict().values(), stock.state_dict().values()))
    unet_only = adapter.parent / "unet-only"
    unet_only.mkdir()
    weights = load_file(str(adapter / ADAPTER_WEIGHTS))
    save_file({k: v for k, v in weights.items() if k.startswith("unet.")}, str(unet_only / ADAPTER_WEIGHTS))
    assert trains_text_encoders(adapter) and not trains_text_encoders(unet_only)
    prompts = load_style("linkedin").prompts("ohwx", "person")
    refined = sample(pipes, cfg, prompts, [7])[0]
    base_only = sample(Pipelines(pipes.base), cfg, prompts, [7])[0]
    assert refined.size == base_only.size == (cfg.model.resolution,) * 2
    assert np.abs(_pixels(refined) - _pixels(base_only)).mean() > 1.0
    # More like this (infer/variations.py) draws from an image the same way: img2img, then the refiner finishes.
    varied = sample(pipes, cfg, prompts, [8], (base_only, 0.6))[0]
    varied_base_only = sample(Pipelines(pipes.base), cfg, prompts, [8], (base_only, 0.6))[0]
    assert varied.size == base_only.size and np.abs(_pixels(varied) - _pixels(varied_base_only)).mean() > 1.0

    generate(cfg)
    entry = _manifest(cfg)["images"][0]
    assert entry["refiner"] == str(tiny_refiner) and entry["refiner_start"] == 0.5
    assert entry["scheduler"] is None and entry["scheduler_class"] == "EulerDiscreteScheduler"  # the model's own


def test_more_like_this_and_the_face_detail_pass_keep_the_half_precision_the_base_draws_in(user_config, tiny_refiner,
                                                                                          monkeypatch):
    """An inference review: diffusers' `from_pipe` casts the pipeline it makes to fp32 unless told a dtype, and so the
    base's own shared modules: on a GPU (fp16; bf16 stands in for it on this CPU) the rest of the process drew in fp32,
    and more like this with a refiner, whose own UNet stays in half precision, failed on the shared text encoder."""
    import headshots.sdxl
    from infer.detail import inpainting_pipeline
    from infer.generate import load_pipelines, sample
    from infer.styles import load_style

    monkeypatch.setattr(headshots.sdxl, "sampling_dtype", lambda device: torch.bfloat16)
    cfg = user_config(f"infer.refiner={tiny_refiner}", "infer.refiner_start=0.5", "infer.steps=4")
    pipes = load_pipelines(cfg, Workspace.from_config(cfg).require_adapter(cfg.run))
    prompts = load_style("linkedin").prompts("ohwx", "person")
    drawn = sample(pipes, cfg, prompts, [3])[0]
    varied = sample(pipes, cfg, prompts, [4], (drawn, 0.6))[0]  # img2img over the base's modules, then the refiner
    inpainting_pipeline(pipes)
    assert varied.size == drawn.size
    modules = [pipes.base.unet, pipes.base.vae, pipes.base.text_encoder, pipes.base.text_encoder_2, pipes.refiner.unet,
               pipes.refiner.text_encoder_2]
    assert {module.dtype for module in modules} == {torch.bfloat16}


@pytest.mark.parametrize("source, hint", [
    ("{tmp}/no-such-refiner", "tiny_sdxl --refiner"),
    ("someone/no-such-refiner", "infer.refiner=/path/to/a/local/copy"),
])
def test_missing_refiner_is_a_weights_error_with_hint(user_config, tmp_path, source, hint):
    from infer.generate import generate

    with pytest.raises(WeightsError, match="SDXL refiner") as error:
        generate(user_config(f"infer.refiner={source.format(tmp=tmp_path)}"))
    assert hint in error.value.hint


def _draw(user_config, *overrides: str):
    """The generate stage's pipelines for `overrides`, and the pixels of one linkedin image (seed 3) they draw."""
    from infer.generate import load_pipelines, sample
    from infer.styles import load_style

    cfg = user_config(*overrides)
    pipes = load_pipelines(cfg, Workspace.from_config(cfg).require_adapter(cfg.run))
    draw = lambda: _pixels(sample(pipes, cfg, load_style("linkedin").prompts("ohwx", "person"), [3])[0])
    return pipes, draw


def test_fused_adapter_gives_the_unfused_images(user_config):
    """Fusing merges the LoRA into the UNet and text-encoder weights: same pictures, plain layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    images = {}
    for fuse in (True, False):
        pipes, draw = _draw(user_config, f"infer.fuse_lora={str(fuse).lower()}")
        for model in (pipes.base.unet, pipes.base.text_encoder, pipes.base.text_encoder_2):
            lora_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
            assert (len(lora_layers) == 0) == fuse
        images[fuse] = draw()
    pipes.base.set_adapters(["person"], adapter_weights=[0.0])  # the unfused pipeline, adapter off
    without = draw()
    assert np.abs(images[True] - images[False]).max() <= 2  # float rounding of W + BA
    assert np.abs(images[True] - without).mean() > 1.0  # and the adapter does change the picture


@pytest.mark.slow  # inductor compiles the tiny UNet on the CPU: one to three minutes on 2 cores
def test_compiled_unet_draws_the_same_images(user_config):
    """infer.compile: the UNet runs as a torch.compile module, with the same pictures within rounding."""
    images = {}
    for compile_ in (True, False):
        pipes, draw = _draw(user_config, f"infer.compile={str(compile_).lower()}")
        assert isinstance(pipes.base.unet, torch._dynamo.eval_frame.OptimizedModule) == compile_
        images[compile_] = draw()
    assert np.abs(images[True] - images[False]).max() <= 2
