"""LoRA on the SDXL UNet with peft: attach (targets checked), count, export for diffusers and as the kohya file
A1111, ComfyUI and kohya load (lora_kohya.safetensors)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from headshots.config import TrainConfig
from headshots.errors import ConfigError
from headshots.workspace import ADAPTER_EMBEDDINGS as EMBEDDINGS_FILE
from headshots.workspace import ADAPTER_INFO
from headshots.workspace import ADAPTER_KOHYA as KOHYA_FILE
from headshots.workspace import ADAPTER_WEIGHTS as ADAPTER_FILE


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
        init_lora_weights="gaussian",
        target_modules=list(cfg.target_modules),
    )


TARGETS_HINT = ("Name layers inside the UNet's attention blocks: train.target_modules=[to_q,to_k,to_v,to_out.0] (the "
                "default), with ff.net.0.proj,ff.net.2 for their feed-forward layers too.")


def attach_lora(unet: torch.nn.Module, cfg: TrainConfig) -> int:
    """Add a trainable LoRA adapter to the (frozen) UNet; returns the number of trainable parameters. Targets are
    checked here, before any step: peft's own refusal of a name that matches nothing is a traceback, and a layer
    outside the attention blocks (a resnet's conv1) trained every step, then failed the adapter's kohya copy at the
    export, in every run resumed after it too."""
    from peft.tuners.lora import LoraLayer

    unet.requires_grad_(False)
    targets = ", ".join(cfg.target_modules)
    try:
        unet.add_adapter(lora_config(cfg))
    except ValueError as exc:  # peft's NoMatchingPeftModuleError
        raise ConfigError(f"Config value `train.target_modules` ({targets}) names no layer of the UNet: {exc}", TARGETS_HINT) from None
    outside = [name for name, module in unet.named_modules()
               if isinstance(module, LoraLayer) and not in_attention_block(name)]
    if outside:
        raise ConfigError(f"Config value `train.target_modules` ({targets}) reaches {len(outside)} layers outside the "
                          f"attention blocks, e.g. {outside[0]}: the adapter's kohya copy (for A1111 and ComfyUI) has "
                          "names only for layers inside them.", TARGETS_HINT)
    return trainable_parameters(unet)


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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


def canonical_clip_key(key: str) -> str:
    """CLIP text-model keys as the original SDXL checkpoint and older transformers name them:
    transformers 5's CLIPTextModel dropped the `text_model.` level (CLIPTextModelWithProjection kept it).
    diffusers loads either form into either version; ComfyUI and A1111 expect this one."""
    return key if key.startswith("text_model.") else f"text_model.{key}"


def text_encoder_lora_layers(text_encoders: list[torch.nn.Module]) -> dict:
    """save_lora_weights keyword arguments for the text encoders that carry a LoRA adapter."""
    from diffusers.utils import convert_state_dict_to_diffusers

    layers = {}
    for name, encoder in zip(("text_encoder", "text_encoder_2"), text_encoders):
        if getattr(encoder, "peft_config", None):
            state = convert_state_dict_to_diffusers(peft_lora_state_dict(encoder))
            layers[f"{name}_lora_layers"] = _cpu_fp32({canonical_clip_key(k): v for k, v in state.items()})
            layers[f"{name}_lora_adapter_metadata"] = encoder.peft_config["default"].to_dict()
    return layers


# -- kohya / A1111 / ComfyUI --------------------------------------------------------------------------
# Those tools name a LoRA module by its path in the original single-file ("SGM") SDXL checkpoint, dots
# as underscores: lora_unet_<UNet path>, lora_te1_<CLIP-L path>, lora_te2_<CLIP-G path>, each with
# .lora_down.weight (peft's A), .lora_up.weight (B) and .alpha (the scale is alpha / rank).

_UNET_ATTENTION = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.(.+)$")


def in_attention_block(module: str) -> bool:
    """Whether a UNet module path has a kohya name (`sgm_unet_module`)."""
    return module.startswith("mid_block.attentions.0.") or _UNET_ATTENTION.match(module) is not None


def sgm_unet_module(module: str, layers_per_block: int) -> str:
    """A diffusers UNet module path inside an attention block, as the SGM checkpoint names it. Down block b
    holds layers_per_block + 1 SGM input blocks (the last downsamples), so its attention a sits in input
    block b * (L + 1) + a + 1 (input block 0 is the first convolution); up block b's in output block
    b * (L + 1) + a; the middle block's attention is middle_block.1."""
    if module.startswith("mid_block.attentions.0."):
        return "middle_block.1." + module.removeprefix("mid_block.attentions.0.")
    match = _UNET_ATTENTION.match(module)
    if not match:  # attach_lora refuses such targets before training
        raise ValueError(f"no kohya name for UNet module {module!r}: the kohya export covers LoRA on attention blocks")
    kind, block, attention, rest = match.groups()
    per_block = layers_per_block + 1
    if kind == "down_blocks":
        return f"input_blocks.{int(block) * per_block + int(attention) + 1}.1.{rest}"
    return f"output_blocks.{int(block) * per_block + int(attention)}.1.{rest}"


def kohya_modules(prefix: str, peft_state: dict[str, torch.Tensor], alpha: float, rename) -> dict[str, torch.Tensor]:
    """One trained part (UNet or a text encoder) in kohya keys: peft's lora_A/lora_B per module, renamed."""
    out = {}
    for module in sorted({key.split(".lora_")[0] for key in peft_state}):
        name = prefix + rename(module).replace(".", "_")
        out[f"{name}.lora_down.weight"] = peft_state[f"{module}.lora_A.weight"]
        out[f"{name}.lora_up.weight"] = peft_state[f"{module}.lora_B.weight"]
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def kohya_state_dict(unet: torch.nn.Module, text_encoders: list[torch.nn.Module] = ()) -> tuple[dict, list[tuple[int, float]]]:
    """Every trained part in kohya keys, and (rank, alpha) of each part."""
    layers_per_block = unet.config.layers_per_block
    parts = [("lora_unet_", unet, lambda m: sgm_unet_module(m, layers_per_block))]
    parts += [(prefix, encoder, canonical_clip_key) for prefix, encoder in zip(("lora_te1_", "lora_te2_"), text_encoders)
              if getattr(encoder, "peft_config", None)]
    state, shapes = {}, []
    for prefix, model, rename in parts:
        config = model.peft_config["default"]
        state.update(kohya_modules(prefix, _cpu_fp32(peft_lora_state_dict(model)), config.lora_alpha, rename))
        shapes.append((config.r, float(config.lora_alpha)))
    return state, shapes


def kohya_metadata(shapes: list[tuple[int, float]]) -> dict[str, str]:
    """sd-scripts' header keys; parts of different rank or alpha are "Dynamic", as its resize tool writes
    (the tools read each module's rank from its tensors and its scale from its .alpha)."""
    ranks, alphas = {r for r, _ in shapes}, {a for _, a in shapes}
    return {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0",
            "ss_network_dim": str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
            "ss_network_alpha": f"{alphas.pop():g}" if len(alphas) == 1 else "Dynamic"}


def save_adapter(unet: torch.nn.Module, out_dir: Path, metadata: dict[str, str],
                 text_encoders: list[torch.nn.Module] = (), embeddings: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter in both formats people load LoRAs with, each file carrying `metadata`
    (trigger, base model, resolution, rank, config hash) in its safetensors header, plus `adapter.json`.
    Text-encoder LoRA (when trained) goes into the same files; pivotal-tuning vectors into
    `embeddings.safetensors` (clip_l / clip_g: what `load_textual_inversion`, A1111 and ComfyUI take for SDXL)."""
    from diffusers import StableDiffusionXLPipeline
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
    kohya, shapes = kohya_state_dict(unet, list(text_encoders))
    save_file(kohya, str(out_dir / KOHYA_FILE), metadata={**metadata, **kohya_metadata(shapes)})
    (out_dir / ADAPTER_INFO).write_text(json.dumps(metadata, indent=2))
    return diffusers_file


def _add_metadata(path: Path, extra: dict[str, str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    save_file(load_file(str(path)), str(path), metadata={**header, **extra})
