"""The real SDXL UNet (from its published config, on the meta device: no memory, no weights)
goes through the project's LoRA-attach code."""

import json

import pytest
import torch

from headshots.config import TrainConfig
from tests.conftest import SHARED, need
from train.lora import attach_lora

SDXL_CONFIG = SHARED / "models" / "sdxl-base-1.0-config"


def targeted_linears(unet: torch.nn.Module, target_modules: list[str]) -> list[torch.nn.Linear]:
    """The Linear layers peft's suffix matching picks for `target_modules` (before LoRA is added)."""
    return [
        module
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules)
    ]


@pytest.fixture(scope="module")
def sdxl_unet_config():
    return json.loads((need(SDXL_CONFIG) / "unet" / "config.json").read_text())


@pytest.mark.parametrize("rank", [4, 16])
def test_lora_on_full_size_sdxl_unet(sdxl_unet_config, rank):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(sdxl_unet_config)
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # the real SDXL UNet
    cfg = TrainConfig(rank=rank)
    targets = targeted_linears(unet, cfg.target_modules)
    # 70 transformer blocks x 2 attention layers (self, cross) x 4 projections (q, k, v, out)
    assert len(targets) == 70 * 2 * 4
    trainable = attach_lora(unet, cfg)
    # Independent formula: LoRA adds A (r x in) and B (out x r) to each targeted layer of SDXL.
    assert trainable == rank * sum(m.in_features + m.out_features for m in targets)
    if rank == 16:
        assert trainable == 23_224_320


@pytest.mark.parametrize("targets, said", [
    (["to_q", "conv1"], "reaches 17 layers outside the attention blocks, e.g. down_blocks.0.resnets.0.conv1"),
    (["to_qq"], "names no layer of the UNet"),
])
def test_targets_the_adapter_cannot_carry_are_refused_before_training(sdxl_unet_config, targets, said):
    """A training review: a resnet's conv1 trained every step, then the kohya copy's export failed, in every resumed run
    too (no adapter ever); a misspelt layer name was peft's traceback."""
    from diffusers import UNet2DConditionModel

    from headshots.errors import ConfigError

    def unet():
        with torch.device("meta"):
            return UNet2DConditionModel.from_config(sdxl_unet_config)

    with pytest.raises(ConfigError, match=said) as refused:
        attach_lora(unet(), TrainConfig(target_modules=targets))
    assert "train.target_modules=[to_q,to_k,to_v,to_out.0]" in refused.value.hint
    assert attach_lora(unet(), TrainConfig(target_modules=["to_q", "ff.net.0.proj", "ff.net.2", "proj_in"])) > 0
