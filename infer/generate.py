"""Generate stage: base model + the user's adapter -> N images per style.

Reads   outputs/<user>/<run>/adapter/              (from training)
Writes  outputs/<user>/<run>/samples/<style>-<k>.png
        outputs/<user>/<run>/samples/manifest.json  per image: style, seed, prompts, settings
Any image can be regenerated from its manifest entry (same seed, prompts, settings).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from headshots.config import Config, config_from_yaml
from headshots.faces import resolve_device
from headshots.logs import get_logger
from headshots.sdxl import load_pipeline
from headshots.workspace import Workspace
from infer.styles import Style, check_prompt_lengths, load_style

log = get_logger(__name__)
MANIFEST = "manifest.json"


@dataclass
class Sample:
    file: str
    style: str
    seed: int
    prompt: str
    prompt_2: str
    negative_prompt: str
    steps: int
    guidance_scale: float
    lora_scale: float


def seeds_for(cfg: Config, style_index: int) -> list[int]:
    """Distinct, reproducible seeds per (style, image)."""
    return [cfg.infer.seed + 10_000 * style_index + k for k in range(cfg.infer.images_per_style)]


def generate(cfg: Config) -> list[Sample]:
    workspace = Workspace.from_config(cfg)
    adapter = workspace.require_adapter(cfg.run)
    trained = config_from_yaml(adapter / "config.yaml")  # the trigger and class the adapter was trained with
    styles = [load_style(name, dict(cfg.infer.style_overrides)) for name in cfg.infer.styles]

    device = resolve_device(cfg.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = load_pipeline(cfg.model, dtype, device)
    pipe.load_lora_weights(str(adapter), adapter_name="person")
    pipe.set_adapters(["person"], adapter_weights=[cfg.infer.lora_scale])
    tokenizers = {"tokenizer": pipe.tokenizer, "tokenizer_2": pipe.tokenizer_2}
    for style in styles:
        check_prompt_lengths(style.prompts(trained.prepare.trigger, trained.prepare.class_noun), tokenizers, style.name)

    out_dir = workspace.samples_dir(cfg.run)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    total = len(styles) * cfg.infer.images_per_style
    with tqdm(total=total, desc="generate", unit="image") as progress:
        for index, style in enumerate(styles):
            prompts = style.prompts(trained.prepare.trigger, trained.prepare.class_noun)
            seeds = seeds_for(cfg, index)
            for start in range(0, len(seeds), cfg.infer.batch_size):
                batch = seeds[start : start + cfg.infer.batch_size]
                samples += _sample_batch(pipe, cfg, style, prompts, batch, start, out_dir)
                progress.update(len(batch))
    manifest = {
        "user": cfg.user,
        "run": cfg.run,
        "base_model": cfg.model.pretrained,
        "resolution": cfg.model.resolution,
        "images": [asdict(s) for s in samples],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log.info("%d images written to %s", len(samples), out_dir)
    return samples


def _sample_batch(pipe, cfg: Config, style: Style, prompts: dict, seeds: list[int], offset: int, out_dir: Path) -> list[Sample]:
    n = len(seeds)
    images = pipe(
        **{k: [v] * n for k, v in prompts.items()},
        num_inference_steps=cfg.infer.steps,
        guidance_scale=cfg.infer.guidance_scale,
        height=cfg.model.resolution,
        width=cfg.model.resolution,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],  # CPU: same image on any device
    ).images
    samples = []
    for k, (image, seed) in enumerate(zip(images, seeds)):
        sample = Sample(
            file=f"{style.name}-{offset + k:02d}.png", style=style.name, seed=seed, prompt=prompts["prompt"],
            prompt_2=prompts["prompt_2"], negative_prompt=prompts["negative_prompt"], steps=cfg.infer.steps,
            guidance_scale=cfg.infer.guidance_scale, lora_scale=cfg.infer.lora_scale,
        )
        info = PngInfo()
        info.add_text("headshots", json.dumps(asdict(sample)))
        image.save(out_dir / sample.file, pnginfo=info)
        samples.append(sample)
    return samples
