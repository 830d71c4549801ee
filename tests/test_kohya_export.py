"""The kohya file (A1111, ComfyUI, sd-scripts) checked against names the exporter did not make:

- full-size SDXL on the meta device, LoRA attached by the project's own code (UNet, both text encoders,
  ranks and alphas that differ): every exported UNet module is mapped back by diffusers' own SGM ->
  diffusers conversion to exactly the modules peft trained, and every text module is a module path of
  the HF CLIP text model with its `text_model.` level (the single-file checkpoint's and the tools' form);
- the tiny model: the kohya file loaded through diffusers draws the same image as the diffusers file,
  text-encoder LoRA included."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from headshots.config import TrainConfig
from tests.conftest import SHARED, need
from train.lora import ADAPTER_FILE, KOHYA_FILE, attach_lora, kohya_metadata, kohya_state_dict
from train.text import TEXT_LORA_TARGETS, layers_read, setup_text_side

SDXL_CONFIG = SHARED / "models" / "sdxl-base-1.0-config"


def materialize_lora(model: torch.nn.Module) -> None:
    """Give the LoRA layers of a meta-device model real (small, random) weights, leaving the base on meta."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (".lora_A." in name or ".lora_B." in name):
            module.weight = torch.nn.Parameter(torch.randn(module.weight.shape) * 0.01)


def trained_modules(model: torch.nn.Module) -> set[str]:
    """Module paths peft put a LoRA on (its own structure: <path>.lora_A.<adapter>)."""
    return {name.split(".lora_A")[0] for name, _ in model.named_modules() if name.endswith(".lora_A")}


@pytest.fixture(scope="module")
def full_size():
    """Full-size SDXL UNet and text encoders on the meta device, from the published configs."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = need(SDXL_CONFIG)

    def config(name: str) -> dict:
        return json.loads((folder / name / "config.json").read_text())

    def build():
        with torch.device("meta"):
            return SimpleNamespace(
                unet=UNet2DConditionModel.from_config(config("unet")),
                text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))),
                tokenizer=None, tokenizer_2=None)

    with torch.device("meta"):
        canonical_te1 = CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder")))  # keeps text_model.
    return build, canonical_te1


def sgm_to_diffusers_modules(kohya: dict, unet_config) -> set[str]:
    """diffusers' own reading of kohya UNet keys: SGM block names -> diffusers module paths."""
    from diffusers.loaders.lora_conversion_utils import (
        _convert_non_diffusers_lora_to_diffusers,
        _maybe_map_sgm_blocks_to_diffusers,
    )
    from diffusers.utils import convert_unet_state_dict_to_peft

    unet_keys = {k: v for k, v in kohya.items() if k.startswith("lora_unet_")}
    mapped = _maybe_map_sgm_blocks_to_diffusers(dict(unet_keys), unet_config)
    converted, _ = _convert_non_diffusers_lora_to_diffusers(mapped)
    peft_keys = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in converted.items() if k.startswith("unet.")})
    return {k.split(".lora_A")[0] for k in peft_keys if ".lora_A" in k}


@pytest.mark.parametrize("variant", [
    {},                                                                        # UNet only, alpha = rank
    {"alpha": 8},                                                              # alpha != rank
    {"text_encoder_lora": True, "text_encoder_rank": 8},                       # text rank != UNet rank
    {"text_encoder_lora": True, "alpha": 4},                                   # text alpha (= its rank) != UNet alpha
])
def test_full_size_kohya_modules_are_the_checkpoints_and_cover_every_trained_module(full_size, variant):
    build, canonical_te1 = full_size
    parts = build()
    tc = TrainConfig(rank=16, **variant)
    attach_lora(parts.unet, tc)
    text = setup_text_side(parts, tc, "person")
    encoders = [parts.text_encoder, parts.text_encoder_2] if tc.text_encoder_lora else []
    for model in (parts.unet, *encoders):
        materialize_lora(model)

    kohya, shapes = kohya_state_dict(parts.unet, text.text_encoders)
    modules = {k.split(".")[0] for k in kohya}
    for module in modules:  # every module complete, alpha as configured
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= kohya.keys()
    unet_alpha = tc.alpha if tc.alpha is not None else tc.rank
    assert all(float(kohya[f"{m}.alpha"]) == unet_alpha for m in modules if m.startswith("lora_unet_"))

    trained_unet = trained_modules(parts.unet)
    assert len(trained_unet) == 560
    assert sgm_to_diffusers_modules(kohya, parts.unet.config) == trained_unet
    assert all("input_blocks" in m or "middle_block" in m or "output_blocks" in m for m in modules if m.startswith("lora_unet_"))

    if tc.text_encoder_lora:
        text_rank = tc.text_encoder_rank or tc.rank
        # CLIP-L's last layer does not reach SDXL's conditioning (train/text.py layers_read): no LoRA there
        checkpoint_te1 = {n for n, _ in canonical_te1.named_modules() if n.rsplit(".", 1)[-1] in TEXT_LORA_TARGETS
                          and ".layers.11." not in n}
        checkpoint_te2 = {n for n, _ in parts.text_encoder_2.named_modules()
                          if n.rsplit(".", 1)[-1] in TEXT_LORA_TARGETS and "lora" not in n}
        assert len(checkpoint_te1) == 44 and len(checkpoint_te2) == 128
        for prefix, names in (("lora_te1_", checkpoint_te1), ("lora_te2_", checkpoint_te2)):
            exported = {m.removeprefix(prefix) for m in modules if m.startswith(prefix)}
            assert exported == {n.replace(".", "_") for n in names}
            assert all(kohya[f"{prefix}{m}.lora_down.weight"].shape[0] == text_rank for m in exported)
            assert all(float(kohya[f"{prefix}{m}.alpha"]) == text_rank for m in exported)
        dynamic = text_rank != tc.rank or text_rank != unet_alpha
        assert (kohya_metadata(shapes)["ss_network_dim"] == "Dynamic") == (text_rank != tc.rank)
        assert (kohya_metadata(shapes)["ss_network_alpha"] == "Dynamic") == dynamic
    else:
        assert not any(m.startswith("lora_te") for m in modules)
        assert kohya_metadata(shapes) | {} == {**kohya_metadata(shapes), "ss_network_dim": "16",
                                               "ss_network_alpha": f"{unet_alpha:g}"}


def test_tiny_kohya_file_draws_what_the_diffusers_file_draws_text_lora_included(prepared_user, make_config, tiny_model):
    from diffusers import StableDiffusionXLPipeline

    from train.recipe import train

    cfg = make_config("alice", "run=kohya-text", "train.max_steps=3", "train.rank=4", "train.alpha=2",
                      "train.text_encoder_lora=true", "train.text_encoder_rank=2", "train.text_encoder_lr=1e-2")
    adapter = train(cfg)
    kohya = load_file(str(adapter / KOHYA_FILE))
    assert {k.split("_")[1] for k in kohya} == {"unet", "te1", "te2"}
    assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in kohya)
    assert all(k.startswith("text_encoder.text_model.") for k in load_file(str(adapter / ADAPTER_FILE))
               if k.startswith("text_encoder."))
    with safe_open(str(adapter / KOHYA_FILE), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_network_dim"] == "Dynamic" and meta["headshots.trigger"] == "ohwx"

    def image(weights_file: str | None):
        pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model)
        pipe.set_progress_bar_config(disable=True)
        if weights_file:
            pipe.load_lora_weights(str(adapter), weight_name=weights_file)
            for encoder, pooled_read in ((pipe.text_encoder, False), (pipe.text_encoder_2, True)):  # applied, not skipped
                trained = {n.split(".lora_A")[0] for n, _ in encoder.named_modules() if ".lora_A" in n}
                assert len(trained) == len(layers_read(encoder, pooled_read)) * len(TEXT_LORA_TARGETS)
        return pipe("a photo of ohwx person", num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    base, from_diffusers, from_kohya = image(None), image(ADAPTER_FILE), image(KOHYA_FILE)
    assert abs(base - from_diffusers).max() > 1e-4
    assert abs(from_diffusers - from_kohya).max() < 1e-4
