"""LoRA on the SDXL UNet with peft: attach, count, export in the format diffusers loads."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from headshots.config import TrainConfig
from headshots.workspace import ADAPTER_EMBEDDINGS as EMBEDDINGS_FILE
from headshots.workspace import ADAPTER_WEIGHTS as ADAPTER_FILE

KOHYA_FILE = "lora_kohya.safetensors"  # lora_unet_* keys: AUTOMATIC1111, ComfyUI, kohya sd-scripts, InvokeAI


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
        init_lora_weights="gaussian",
        target_modules=list(cfg.target_modules),
    )


def attach_lora(unet: torch.nn.Module, cfg: TrainConfig) -> int:
    """Add a trainable LoRA adapter to the (frozen) UNet; returns the number of trainable parameters."""
    unet.requires_grad_(False)
    unet.add_adapter(lora_config(cfg))
    return trainable_parameters(unet)


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def targeted_linears(unet: torch.nn.Module, target_modules: list[str]) -> list[torch.nn.Linear]:
    """The Linear layers peft's suffix matching picks for `target_modules` (before LoRA is added)."""
    return [
        module
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules)
    ]


def expected_lora_parameters(unet: torch.nn.Module, cfg: TrainConfig) -> int:
    """LoRA adds A (r x in) and B (out x r) per targeted Linear: r * (in + out) each."""
    return sum(cfg.rank * (m.in_features + m.out_features) for m in targeted_linears(unet, list(cfg.target_modules)))


def peft_lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights peft holds on `model`, with peft's key names. Our LoRA never targets an
    embedding table (new tokens are saved on their own), and peft's default ("auto") would ask the
    Hub for the base model's config at every export to find out."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, save_embedding_layers=False)


def unet_lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights of `unet` with diffusers' key names, as `load_lora_weights` expects."""
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(peft_lora_state_dict(unet))


def set_unet_lora_state_dict(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(state), adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"checkpoint holds LoRA keys this UNet does not have: {unexpected[:3]}...")


def _cpu_fp32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def text_encoder_lora_layers(text_encoders: list[torch.nn.Module]) -> dict:
    """save_lora_weights keyword arguments for the text encoders that carry a LoRA adapter."""
    from diffusers.utils import convert_state_dict_to_diffusers

    layers = {}
    for name, encoder in zip(("text_encoder", "text_encoder_2"), text_encoders):
        if getattr(encoder, "peft_config", None):
            layers[f"{name}_lora_layers"] = _cpu_fp32(convert_state_dict_to_diffusers(peft_lora_state_dict(encoder)))
            layers[f"{name}_lora_adapter_metadata"] = encoder.peft_config["default"].to_dict()
    return layers


def save_adapter(unet: torch.nn.Module, out_dir: Path, metadata: dict[str, str],
                 text_encoders: list[torch.nn.Module] = (), embeddings: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter in both formats people load LoRAs with, each file carrying `metadata`
    (trigger, base model, resolution, rank, config hash) in its safetensors header, plus `adapter.json`.
    Text-encoder LoRA (when trained) goes into the same files; pivotal-tuning vectors into
    `embeddings.safetensors` (clip_l / clip_g, as `load_textual_inversion` takes them)."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = _cpu_fp32(unet_lora_state_dict(unet))
    lora = unet.peft_config["default"]
    encoder_layers = text_encoder_lora_layers(list(text_encoders))
    StableDiffusionXLPipeline.save_lora_weights(
        out_dir, unet_lora_layers=state, safe_serialization=True, unet_lora_adapter_metadata=lora.to_dict(),
        **encoder_layers,
    )
    diffusers_file = out_dir / ADAPTER_FILE
    _add_metadata(diffusers_file, metadata)
    if embeddings:
        save_file(embeddings, str(out_dir / EMBEDDINGS_FILE), metadata=metadata)

    # The same prefixed keys save_lora_weights wrote ("unet.", "text_encoder.", "text_encoder_2."), from memory.
    packed = {f"unet.{k}": v for k, v in state.items()}
    for name in ("text_encoder", "text_encoder_2"):
        packed.update({f"{name}.{k}": v for k, v in encoder_layers.get(f"{name}_lora_layers", {}).items()})
    kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(packed))
    for key in [k for k in kohya if k.startswith("lora_unet") and k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(lora.lora_alpha))  # the converter assumes alpha == rank
    save_file(kohya, str(out_dir / KOHYA_FILE), metadata={
        **metadata,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(lora.r),
        "ss_network_alpha": str(lora.lora_alpha),
        "ss_base_model_version": "sdxl_base_v1-0",
    })
    (out_dir / "adapter.json").write_text(json.dumps(metadata, indent=2))
    return diffusers_file


def _add_metadata(path: Path, extra: dict[str, str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    save_file(load_file(str(path)), str(path), metadata={**header, **extra})
