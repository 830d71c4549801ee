"""Encode the prepared dataset once: VAE latents and SDXL text conditioning.

Text encoders and VAE are frozen, so running them every step is wasted work and memory. After
`encode_dataset`, the trainer frees them and each step touches only the UNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headshots.sdxl import SDXLComponents


@dataclass
class EncodedDataset:
    latent_mean: torch.Tensor  # (N, 4, h, w), already multiplied by the VAE scaling factor
    latent_std: torch.Tensor  # (N, 4, h, w): latents are sampled fresh each step, like the VAE would
    prompt_embeds: torch.Tensor  # (N, 77, D1 + D2): penultimate hidden states of both encoders
    pooled_embeds: torch.Tensor  # (N, D2): text_encoder_2's projected pooled output
    time_ids: torch.Tensor  # (N, 6): original size, crop top-left, target size (SDXL micro-conditioning)

    def __len__(self) -> int:
        return self.latent_mean.shape[0]

    def to(self, device: torch.device) -> "EncodedDataset":
        return EncodedDataset(*(t.to(device) for t in vars(self).values()))


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


@torch.no_grad()
def encode_prompts(parts: SDXLComponents, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL conditioning exactly as StableDiffusionXLPipeline.encode_prompt computes it."""
    hidden = []
    out2 = None
    for tokenizer, encoder in ((parts.tokenizer, parts.text_encoder), (parts.tokenizer_2, parts.text_encoder_2)):
        out = encoder(tokenize(tokenizer, prompts).to(device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        out2 = out
    return torch.cat(hidden, dim=-1).float(), out2.text_embeds.float()


@torch.no_grad()
def encode_dataset(parts: SDXLComponents, dataset, device: torch.device, resolution: int) -> EncodedDataset:
    vae = parts.vae.to(device)
    parts.text_encoder.to(device)
    parts.text_encoder_2.to(device)
    means, stds = [], []
    for row in dataset:
        image = row["image"].convert("RGB").resize((resolution, resolution))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        dist = vae.encode(pixels.to(device, vae.dtype)).latent_dist
        means.append(dist.mean.float() * vae.config.scaling_factor)
        stds.append(dist.std.float() * vae.config.scaling_factor)
    captions = list(dataset["caption"])
    unique = sorted(set(captions))
    embeds, pooled = encode_prompts(parts, unique, device)
    index = torch.tensor([unique.index(c) for c in captions], device=device)
    time_ids = torch.tensor(
        [[*row["original_size"], 0, 0, resolution, resolution] for row in dataset], dtype=torch.float32, device=device
    )
    return EncodedDataset(torch.cat(means), torch.cat(stds), embeds[index], pooled[index], time_ids)
