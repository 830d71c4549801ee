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
