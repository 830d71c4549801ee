"""Build the `tiny` model profile: an SDXL-architecture pipeline (two CLIP text encoders, pooled
embeddings, `text_time` conditioning, 8x VAE) with random weights, saved with `save_pretrained`.

It exercises exactly the code real SDXL goes through, in about a second on a CPU; it draws noise,
not faces. Sizes follow diffusers' own SDXL test components. The CLIP tokenizer ships in
headshots/assets (MIT, OpenAI CLIP) so no hub access is needed.

    python -m headshots.tiny_sdxl models/tiny-sdxl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip_tokenizer"
RESOLUTION = 128


def build_tiny_sdxl(seed: int = 0):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids + pooled text embedding
        cross_attention_dim=64,  # hidden sizes of both text encoders, concatenated
    )
    vae = AutoencoderKL(
        sample_size=RESOLUTION,
        block_out_channels=(32, 32, 32, 32),  # four blocks: 8x downsampling, as in SDXL
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        scaling_factor=0.13025,
    )
    text_config = dict(
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=5, vocab_size=49408, projection_dim=32, hidden_act="gelu",
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
        tokenizer_2=CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!"),
        unet=unet,
        scheduler=scheduler,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build_tiny_sdxl(args.seed).save_pretrained(args.out_dir)
    print(f"tiny SDXL-architecture pipeline saved to {args.out_dir}")


if __name__ == "__main__":
    main()
