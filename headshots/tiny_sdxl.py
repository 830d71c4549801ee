"""Build the `tiny` model profile: an SDXL-architecture pipeline (two CLIP text encoders, pooled
embeddings, `text_time` conditioning, 8x VAE) with random weights, saved with `save_pretrained`.
Also full-size SDXL with random weights from its published configs, for benchmarks and the
full-size test (`build_full_size_sdxl`).

It exercises exactly the code real SDXL goes through, in about a second on a CPU; it draws noise,
not faces. Sizes follow diffusers' own SDXL test components. The CLIP tokenizer ships in
headshots/assets (MIT, OpenAI CLIP) so no hub access is needed.

    python -m headshots.tiny_sdxl models/tiny-sdxl
    python -m headshots.tiny_sdxl --refiner models/tiny-sdxl-refiner    # for infer.refiner
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from headshots.logs import setup_logging

TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip_tokenizer"
RESOLUTION = 128


TEXT_HIDDEN = 32  # hidden size of each tiny CLIP text encoder
TIME_EMBED = 8  # width of each micro-conditioning time id's embedding


def _unet(cross_attention_dim: int, time_ids: int):
    """SDXL-style UNet: `time_ids` micro-conditioning values (6 for the base: original size, crop, target
    size; 5 for the refiner: the target size becomes an aesthetic score) + the pooled text embedding."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids * TIME_EMBED + TEXT_HIDDEN,
        cross_attention_dim=cross_attention_dim,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=RESOLUTION,
        block_out_channels=(32, 32, 32, 32),  # four blocks: 8x downsampling, as in SDXL
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        scaling_factor=0.13025,
    )


def _text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(  # eos_token_id 2: the legacy value SDXL's own text encoders carry (sdxl.pool_at_end_token)
        bos_token_id=49406, eos_token_id=2, pad_token_id=49407, hidden_size=TEXT_HIDDEN, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=5, vocab_size=49408, projection_dim=32, hidden_act="gelu",
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )


def build_tiny_sdxl(seed: int = 0):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    unet = _unet(cross_attention_dim=2 * TEXT_HIDDEN, time_ids=6)  # both text encoders' hidden states, concatenated
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_text_config())
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
        tokenizer_2=CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!"),
        unet=unet,
        scheduler=_scheduler(),
    )


def build_tiny_refiner(seed: int = 0):
    """SDXL-refiner architecture (as stabilityai/stable-diffusion-xl-refiner-1.0): no first text encoder,
    a UNet conditioned on the second one only, aesthetic-score micro-conditioning. Its second text
    encoder and VAE have the tiny base's shapes, so they can be swapped for the base's at load time,
    as headshots.sdxl.load_refiner does. Sizes follow diffusers' refiner test components."""
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae(),
        text_encoder=None,
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer=None,
        tokenizer_2=CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!"),
        unet=_unet(cross_attention_dim=TEXT_HIDDEN, time_ids=5),
        scheduler=_scheduler(),
        requires_aesthetics_score=True,
    )


def full_size_sdxl(config_dir: Path, out: Path) -> Path:
    """The folder to load full-size random SDXL from: `config_dir` itself when it already holds a built model
    (scripts/gpu_check.py builds one and hands it to every benchmark, instead of each building its own),
    else a new build in `out`."""
    if (config_dir / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return config_dir
    build_full_size_sdxl(config_dir, out)
    return out


def build_full_size_sdxl(config_dir: Path, out: Path) -> None:
    """Full-size SDXL base with random weights from the published component configs (no download; about
    a minute and 13 GB of RAM on a CPU), saved as the hub's fp16 variant files (`*.fp16.safetensors`) so it
    loads with `model.variant=fp16` exactly like stabilityai/stable-diffusion-xl-base-1.0."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    def config(name: str) -> dict:
        return json.loads((config_dir / name / "config.json").read_text())

    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_config(config("vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))),
        tokenizer=CLIPTokenizer.from_pretrained(config_dir / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(config_dir / "tokenizer_2"),
        unet=UNet2DConditionModel.from_config(config("unet")),
        scheduler=EulerDiscreteScheduler.from_pretrained(config_dir / "scheduler"),
    )
    pipe.to(torch.float16).save_pretrained(out, variant="fp16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refiner", action="store_true", help="build the refiner architecture (for infer.refiner) instead of the base")
    args = parser.parse_args()
    setup_logging()  # quiet third parties, as every other command
    build, what = (build_tiny_refiner, "refiner") if args.refiner else (build_tiny_sdxl, "pipeline")
    build(args.seed).save_pretrained(args.out_dir)
    print(f"tiny SDXL-architecture {what} saved to {args.out_dir}")


if __name__ == "__main__":
    main()
