"""The one model-loading path for SDXL: real weights (hub id or local folder) and the tiny
random-weight profile go through the same `from_pretrained` calls; only the config differs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from headshots.config import ModelConfig
from headshots.errors import WeightsError
from headshots.hub import cached_first
from headshots.logs import get_logger
from headshots.versions import check_runtime_versions

log = get_logger(__name__)


@dataclass
class SDXLComponents:
    """What the trainer needs; the pipeline is only assembled at inference time."""

    tokenizer: Any
    tokenizer_2: Any
    text_encoder: torch.nn.Module
    text_encoder_2: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: Any


# A model trained or drawn at this size or more (SDXL's own is 1024 px; the tiny profile's 128) on a CPU: minutes
# per image drawn, days for a training
FULL_SIZE = 512


def warn_without_gpu(device: torch.device, model: ModelConfig) -> None:
    """Said before the model loads (or downloads, ~7 GB): full-size SDXL on a CPU works, too slowly to be what the
    person meant; the tiny profile runs every stage here in seconds."""
    if device.type == "cpu" and model.resolution >= FULL_SIZE:
        _say_no_gpu()


@functools.cache  # once a process: `train all` says it before the photos are prepared, training again at its start
def _say_no_gpu() -> None:
    log.warning("No GPU here: full-size SDXL on a CPU takes days to train and minutes per image. To try the whole "
                "pipeline on this machine, use the tiny profile (PROFILE=tiny, or --profile tiny).")


def require_model(model: ModelConfig) -> None:
    """Refuse at once a base model that cannot be had: a folder that is not there, or a hub id neither in the local
    cache nor reachable. `train all` asks before it checks and prepares the photos: without it a new user on a
    machine without network (PROFILE=tiny left out) waited for both, at full size, to meet this error. A Hub that
    answers is left to the download, which says in its own words what is wrong (gated, not found)."""
    _load("base model", model.pretrained, lambda **options: None, revision=model.revision)


_TINY_HINTS = {
    "model.pretrained": "; for the tiny profile run `make tiny-model`.",
    "infer.refiner": "; a tiny test refiner: `python -m headshots.tiny_sdxl --refiner DIR`.",
}


def _fix_hint(source: str, key: str = "model.pretrained") -> str:
    if Path(source).exists() or source.startswith((".", "/", "models/")):
        return "Check the folder (it must hold model_index.json and the component folders)" + _TINY_HINTS.get(key, ".")
    return (
        "Check the hub id and your network (and `.venv/bin/hf auth login` for gated models), "
        f"or set {key}=/path/to/a/local/copy."
    )


def _load(what: str, source: str, loader, key: str = "model.pretrained", revision: str | None = None):
    """Run `loader` (`cached_first`); any failure becomes a WeightsError naming `source` (the config `key` it came
    from) and the fix."""
    if source.startswith((".", "/", "~")) and not Path(source).expanduser().exists():  # a path (a hub id never starts so)
        raise WeightsError(f"Could not load the {what} from {source!r}: there is no such folder.", _fix_hint(source, key))
    try:
        return cached_first(source, loader, revision)
    except Exception as exc:  # OSError (missing files, offline hub), ValueError (bad folder), HTTP errors
        raise WeightsError(f"Could not load the {what} from {source!r}: {exc}", _fix_hint(source, key)) from exc


def load_components(model: ModelConfig, weight_dtype: torch.dtype = torch.float32) -> SDXLComponents:
    """Load SDXL's parts for training, frozen, each straight into the dtype it trains in: loading
    fp32 and casting afterwards would hold a 10 GB fp32 UNet in host memory first. The trainer
    upcasts only the LoRA parameters it adds to fp32."""
    check_runtime_versions()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    src = model.pretrained

    def part(what: str, cls, subfolder: str, **options):
        """One part of the base model: its subfolder of `src`, at `model.revision`, from the cache first."""
        return _load(what, src, lambda **o: cls.from_pretrained(src, subfolder=subfolder, revision=model.revision, **options, **o),
                     revision=model.revision)

    # The SDXL VAE overflows in fp16 (NaN latents) unless it is the fp16-fix VAE: keep it fp32 then.
    vae_dtype = torch.float32 if weight_dtype == torch.float16 and not model.vae else weight_dtype
    weights = {"variant": model.variant, "dtype": weight_dtype}
    tokenizer = part("tokenizer", CLIPTokenizer, "tokenizer")
    tokenizer_2 = part("tokenizer_2", CLIPTokenizer, "tokenizer_2")
    text_encoder = part("text encoder", CLIPTextModel, "text_encoder", **weights)
    text_encoder_2 = part("second text encoder", CLIPTextModelWithProjection, "text_encoder_2", **weights)
    if model.vae:
        vae = _load("VAE", model.vae, lambda **o: AutoencoderKL.from_pretrained(model.vae, dtype=vae_dtype, **o), "model.vae")
    else:
        vae = part("VAE", AutoencoderKL, "vae", **{**weights, "dtype": vae_dtype})
    unet = part("UNet", UNet2DConditionModel, "unet", **weights)
    scheduler = part("noise scheduler", DDPMScheduler, "scheduler")
    for frozen in (text_encoder, text_encoder_2, vae, unet):
        frozen.requires_grad_(False)
    return SDXLComponents(tokenizer, tokenizer_2, text_encoder, text_encoder_2, vae, unet, scheduler)


def sampling_dtype(device: torch.device) -> torch.dtype:
    """fp16 on a GPU (half the memory, tensor cores); fp32 elsewhere, where half precision is slow or missing."""
    return torch.float16 if device.type == "cuda" else torch.float32


def load_pipeline(model: ModelConfig, device: torch.device, dtype: torch.dtype | None = None):
    """StableDiffusionXLPipeline for sampling, from the same source as training (`dtype`: default
    `sampling_dtype(device)`)."""
    check_runtime_versions()
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline

    dtype = dtype or sampling_dtype(device)

    extra: dict[str, Any] = {}
    if model.vae:
        extra["vae"] = _load("VAE", model.vae, lambda **o: AutoencoderKL.from_pretrained(model.vae, dtype=dtype, **o), "model.vae")
    pipe = _load(
        "SDXL pipeline",
        model.pretrained,
        lambda **o: StableDiffusionXLPipeline.from_pretrained(
            model.pretrained, revision=model.revision, variant=model.variant, dtype=dtype, **extra, **o
        ),
        revision=model.revision,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def pool_at_end_token(text_encoder: torch.nn.Module, tokenizer) -> None:
    """Make a CLIP text encoder pool each prompt at its end token after tokens were added to it (pivotal tuning's
    <s0><s1>). SDXL's encoders carry the legacy `eos_token_id` 2, for which transformers pools at the highest token id
    of each prompt: the end token until added ones (ids past it) appear, then the last added token, so every caption
    holding them got one and the same pooled embedding, blind to what followed the person's tokens."""
    for module in text_encoder.modules():
        if getattr(module, "eos_token_id", None) == 2:
            module.eos_token_id = tokenizer.eos_token_id


def load_refiner(source: str, base, model: ModelConfig, device: torch.device, own_text_encoder: bool = False):
    """SDXL refiner (StableDiffusionXLImg2ImgPipeline) from a hub id or local folder, sharing the base
    pipeline's second text encoder and VAE: they are the same networks in SDXL 1.0, so sharing saves
    their memory and load time, and the fp16-fix VAE (model.vae) then serves the refiner too. Not the text encoder
    when the person's adapter changed the base's (`own_text_encoder`: text-encoder LoRA): the refiner's UNet knows
    the stock one's embeddings only.

    The person's LoRA is not loaded here: it was trained on the base UNet, whose layers the refiner's
    UNet does not have (other widths and cross-attention size), and the refiner only runs the last,
    low-noise steps, where the face's identity is already fixed and only fine texture changes."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    refiner = _load(
        "SDXL refiner",
        source,
        lambda **o: StableDiffusionXLImg2ImgPipeline.from_pretrained(
            source, **({} if own_text_encoder else {"text_encoder_2": base.text_encoder_2}), vae=base.vae,
            variant=model.variant, dtype=base.unet.dtype, **o
        ),
        "infer.refiner",
    )
    refiner.set_progress_bar_config(disable=True)
    return refiner.to(device)
