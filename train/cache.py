"""Encoding the prepared dataset: VAE latents and SDXL text conditioning.

Text encoders and VAE are frozen, so running them every step is wasted work and memory. With
`train.cache_encodings` (default) the trainer encodes every photo once, frees them, and each step
touches only the UNet; without it, each step encodes its own batch (kept for comparison).
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
    face_boxes: torch.Tensor  # (N, 4): x1, y1, x2, y2 of the face in 0..1 of the crop (for the face-weighted loss)
    input_ids: torch.Tensor  # (N, 2, 77): the caption's tokens for each encoder (to re-encode when text is trained)

    def __len__(self) -> int:
        return self.latent_mean.shape[0]

    def to(self, device: torch.device) -> EncodedDataset:
        return EncodedDataset(*(t.to(device) for t in vars(self).values()))

    def select(self, idx: torch.Tensor) -> EncodedDataset:
        return EncodedDataset(*(t[idx.to(t.device)] for t in vars(self).values()))

    @staticmethod
    def concat(first: EncodedDataset, second: EncodedDataset) -> EncodedDataset:
        """One batch from two (the person's photos, then class photos): one UNet pass for both."""
        return EncodedDataset(*(torch.cat([a, b]) for a, b in zip(vars(first).values(), vars(second).values())))


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def text_conditioning(encoders: list[torch.nn.Module], input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL conditioning exactly as StableDiffusionXLPipeline.encode_prompt computes it: both encoders'
    penultimate hidden states side by side, and the second encoder's pooled projection.
    `input_ids` is (B, 2, 77), one row of tokens per encoder."""
    hidden = []
    out = None
    for k, encoder in enumerate(encoders):
        out = encoder(input_ids[:, k], output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1).float(), out.text_embeds.float()


def tokenize_both(parts: SDXLComponents, prompts: list[str]) -> torch.Tensor:
    return torch.stack([tokenize(parts.tokenizer, prompts), tokenize(parts.tokenizer_2, prompts)], dim=1)


def move_encoders(parts: SDXLComponents, device: torch.device) -> None:
    for module in (parts.vae, parts.text_encoder, parts.text_encoder_2):
        module.to(device)


@torch.no_grad()
def encode_rows(parts: SDXLComponents, rows: list[dict], device: torch.device, resolution: int) -> EncodedDataset:
    """Encode dataset rows (dicts with image, caption, original_size, face_box) with VAE and text encoders."""
    vae = parts.vae
    means, stds = [], []
    for row in rows:
        image = row["image"].convert("RGB").resize((resolution, resolution))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        dist = vae.encode(pixels.to(device, vae.dtype)).latent_dist
        means.append(dist.mean.float() * vae.config.scaling_factor)
        stds.append(dist.std.float() * vae.config.scaling_factor)
    captions = [row["caption"] for row in rows]
    unique = sorted(set(captions))
    unique_ids = tokenize_both(parts, unique).to(device)
    embeds, pooled = text_conditioning([parts.text_encoder, parts.text_encoder_2], unique_ids)
    index = torch.tensor([unique.index(c) for c in captions], device=device)
    time_ids = torch.tensor([[*row["original_size"], 0, 0, resolution, resolution] for row in rows], dtype=torch.float32, device=device)
    boxes = torch.tensor([row["face_box"] for row in rows], dtype=torch.float32, device=device)
    return EncodedDataset(torch.cat(means), torch.cat(stds), embeds[index], pooled[index], time_ids, boxes, unique_ids[index])


class BatchSource:
    """The encoded batch for given dataset indices: from the cache (encoded once, encoders then
    released) or, with caching off, encoded on the fly each step."""

    def __init__(self, parts: SDXLComponents, rows: list[dict], device: torch.device, resolution: int, cache: bool) -> None:
        self.rows, self.device, self.resolution = rows, device, resolution
        move_encoders(parts, device)
        self.cached = encode_rows(parts, rows, device, resolution) if cache else None
        self.parts = None if cache else parts  # the only reference left to VAE / text encoders

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, idx: torch.Tensor) -> EncodedDataset:
        if self.cached is not None:
            return self.cached.select(idx)
        return encode_rows(self.parts, [self.rows[i] for i in idx.tolist()], self.device, self.resolution)


def face_weight_map(boxes: torch.Tensor, height: int, width: int, face_weight: float) -> torch.Tensor:
    """(B, 1, H, W) loss weights: `face_weight` inside each face box, 1 elsewhere, normalised to mean 1
    so the loss keeps its scale (and the learning rate its meaning) whatever the face size."""
    ys = (torch.arange(height, device=boxes.device) + 0.5) / height
    xs = (torch.arange(width, device=boxes.device) + 0.5) / width
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    inside = (xs >= x1) & (xs <= x2) & (ys[:, None] >= y1) & (ys[:, None] <= y2)
    weights = 1.0 + (face_weight - 1.0) * inside.float()
    return (weights / weights.mean(dim=(1, 2), keepdim=True))[:, None]
