"""Generate stage: base model + the user's adapter (+ optional SDXL refiner) -> N images per style.

Reads   outputs/<user>/<run>/adapter/              (from training)
Writes  outputs/<user>/<run>/samples/<style>-<k>.png
        outputs/<user>/<run>/samples/manifest.json  per image: style, seed, prompts, settings (scheduler, refiner)
Any image can be regenerated from its manifest entry (same seed, prompts, settings).
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from headshots.config import Config, InferConfig, config_from_yaml
from headshots.faces import resolve_device
from headshots.logs import get_logger
from headshots.schedulers import make_scheduler
from headshots.sdxl import load_pipeline, load_refiner
from headshots.workspace import ADAPTER_EMBEDDINGS, Workspace
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
    scheduler: str | None  # infer.scheduler; None: the model's own, named in scheduler_class
    scheduler_class: str
    refiner: str | None  # infer.refiner; None: the base model made the whole image
    refiner_start: float | None
    source: str | None = None  # more like this (infer/variations.py): the image img2img started from
    strength: float | None = None  # ... and the share of the denoising it redid


@dataclass
class Pipelines:
    """The base pipeline carrying the person's adapter, and the optional refiner."""

    base: Any
    refiner: Any = None
    _img2img: Any = field(default=None, repr=False)

    def img2img(self):
        """SDXL's img2img pipeline over the base pipeline's very modules (`from_pipe`: the UNet with the
        person's adapter, VAE, text encoders and scheduler are shared, not loaded again)."""
        if self._img2img is None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            self._img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(self.base)
        return self._img2img


def seeds_for(cfg: Config, style_index: int) -> list[int]:
    """Distinct, reproducible seeds per (style, image)."""
    return [cfg.infer.seed + 10_000 * style_index + k for k in range(cfg.infer.images_per_style)]


def load_pipelines(cfg: Config, adapter: Path) -> Pipelines:
    """Base + adapter (+ refiner), with the configured scheduler: everything sampling needs, loaded once."""
    device = resolve_device(cfg.device)
    base = load_pipeline(cfg.model, device)
    apply_adapter(base, adapter, cfg.infer)
    if cfg.infer.compile:
        compile_unet(base)
    refiner = load_refiner(cfg.infer.refiner, base, cfg.model, device) if cfg.infer.refiner else None
    if cfg.infer.scheduler:
        for pipe in filter(None, (base, refiner)):
            pipe.scheduler = make_scheduler(cfg.infer.scheduler, pipe.scheduler)
    return Pipelines(base, refiner)


def apply_adapter(pipe, adapter: Path, infer: InferConfig) -> None:
    """Load the person's LoRA at `infer.lora_scale` (and the pivotal-tuning token vectors, when the
    adapter has them). With `infer.fuse_lora` the adapter is merged into the weights and its layers
    removed: the scale is fixed for the whole run, so sampling can run the plain UNet instead of two
    extra small matmuls (and a Python wrapper) in every targeted layer."""
    load_person_tokens(pipe, adapter)
    pipe.load_lora_weights(str(adapter), adapter_name="person")
    pipe.set_adapters(["person"], adapter_weights=[infer.lora_scale])
    if infer.fuse_lora:
        # Every component that may carry the adapter (the UNet, and the text encoders when they were
        # trained too): unloading drops all LoRA layers, so an unfused one would silently be lost.
        pipe.fuse_lora(components=["unet", "text_encoder", "text_encoder_2"], adapter_names=["person"])
        pipe.unload_lora_weights()  # keeps the merged weights, drops the LoRA layers


def compile_unet(pipe) -> None:
    """torch.compile the UNet, the part that runs every denoising step, after the adapter is in place (fused
    weights are plain weights to the compiler). The face-detail pass shares this module (from_pipe) and
    its same-size crops reuse the compiled graph."""
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet)


def adapter_trigger(adapter: Path) -> str:
    """What stands for the person in prompts: the trained trigger word, or the pivotal tokens."""
    return json.loads((adapter / "adapter.json").read_text())["headshots.trigger"]


def load_person_tokens(pipe, adapter: Path) -> None:
    """Pivotal tuning: add the learnt tokens (<s0><s1>...), named in the file's own header, to both
    tokenizers and text encoders."""
    path = adapter / ADAPTER_EMBEDDINGS
    if not path.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        tokens = json.loads(handle.metadata()["headshots.pivotal_tokens"])
        vectors = {key: handle.get_tensor(key) for key in ("clip_l", "clip_g")}
    for key, encoder, tokenizer in (("clip_l", pipe.text_encoder, pipe.tokenizer), ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2)):
        pipe.load_textual_inversion(vectors[key], token=tokens, text_encoder=encoder, tokenizer=tokenizer)


def sample(pipes: Pipelines, cfg: Config, prompts: dict[str, str], seeds: list[int],
           start: tuple[Image.Image, float] | None = None) -> list[Image.Image]:
    """One batch, one image per seed. Each image has its own CPU generator, so an image depends only on
    its seed and settings, not on its batch or device. With a refiner, the base stops at
    `refiner_start` and hands over its latents (SDXL's "ensemble of experts"); the refiner has only the
    second text encoder, so it gets the text that encoder saw in the base pass (scene, light, lens:
    no trigger word, which means nothing to a model that never saw the person).
    `start` (an image, a strength): draw from that image instead of from noise (img2img), redoing
    `strength` of the denoising."""
    n, infer = len(seeds), cfg.infer
    batch = {key: [text] * n for key, text in prompts.items()}
    common = {
        "num_inference_steps": infer.steps,
        "guidance_scale": infer.guidance_scale,
        "generator": [torch.Generator("cpu").manual_seed(s) for s in seeds],
    }
    pipe, inputs = pipes.base, {"height": cfg.model.resolution, "width": cfg.model.resolution}
    if start is not None:
        image, strength = start
        pipe, inputs = pipes.img2img(), {"image": [image] * n, "strength": strength}
    if pipes.refiner is None:
        return pipe(**batch, **common, **inputs).images
    latents = pipe(**batch, **common, **inputs, denoising_end=infer.refiner_start, output_type="latent").images
    return pipes.refiner(
        prompt=batch["prompt_2"], negative_prompt=batch["negative_prompt_2"], image=latents,
        denoising_start=infer.refiner_start, **common,
    ).images


@dataclass(frozen=True)
class Person:
    """Who the prompts are about: the adapter to sample with, what stands for the person in a prompt,
    and the class noun the adapter was trained with."""

    adapter: Path
    trigger: str
    class_noun: str


def person_context(cfg: Config) -> Person:
    adapter = Workspace.from_config(cfg).require_adapter(cfg.run, cfg.infer.adapter)
    trained = config_from_yaml(adapter / "config.yaml")  # the class the adapter was trained with
    return Person(adapter, adapter_trigger(adapter), trained.prepare.class_noun)


def generate(cfg: Config, pipes: Pipelines | None = None) -> list[Sample]:
    """Sample every style; `pipes` (from load_pipelines) when the caller keeps them for the next pass."""
    workspace = Workspace.from_config(cfg)
    person = person_context(cfg)
    trigger, class_noun = person.trigger, person.class_noun
    styles = [load_style(name, dict(cfg.infer.style_overrides)) for name in cfg.infer.styles]

    pipes = pipes or load_pipelines(cfg, person.adapter)
    tokenizers = {"tokenizer": pipes.base.tokenizer, "tokenizer_2": pipes.base.tokenizer_2}
    for style in styles:
        check_prompt_lengths(style.prompts(trigger, class_noun), tokenizers, style.name)
    settings = sample_settings(cfg, pipes)

    out_dir = workspace.samples_dir(cfg.run)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    writes: list[Future] = []
    total = len(styles) * cfg.infer.images_per_style
    # PNG encoding is CPU work (about 0.1-0.3 s for 1024x1024) that releases the GIL: one writer
    # thread does it while the next batch samples, instead of the GPU waiting for it.
    with tqdm(total=total, desc="generate", unit="image") as progress, ThreadPoolExecutor(max_workers=1) as writer:
        for index, style in enumerate(styles):
            prompts = style.prompts(trigger, class_noun)
            seeds = seeds_for(cfg, index)
            for start in range(0, len(seeds), cfg.infer.batch_size):
                batch = seeds[start : start + cfg.infer.batch_size]
                images = sample(pipes, cfg, prompts, batch)
                entries = _entries(style, prompts, batch, start, settings)
                writes += [writer.submit(write_png, image, entry, out_dir) for image, entry in zip(images, entries)]
                samples += entries
                progress.update(len(batch))
    for write in writes:
        write.result()  # a failed write (disk full...) raises here
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


def sample_settings(cfg: Config, pipes: Pipelines) -> dict[str, Any]:
    """The Sample fields shared by every image of this run."""
    infer = cfg.infer
    return {
        "steps": infer.steps, "guidance_scale": infer.guidance_scale, "lora_scale": infer.lora_scale,
        "scheduler": infer.scheduler, "scheduler_class": type(pipes.base.scheduler).__name__,
        "refiner": infer.refiner, "refiner_start": infer.refiner_start if infer.refiner else None,
    }


def _entries(style: Style, prompts: dict[str, str], seeds: list[int], offset: int, settings: dict[str, Any]) -> list[Sample]:
    return [
        Sample(file=f"{style.name}-{offset + k:02d}.png", style=style.name, seed=seed, prompt=prompts["prompt"],
               prompt_2=prompts["prompt_2"], negative_prompt=prompts["negative_prompt"], **settings)
        for k, seed in enumerate(seeds)
    ]


def write_png(image: Image.Image, sample: Sample, out_dir: Path) -> None:
    """The PNG carries its manifest entry, so a lone file is reproducible too."""
    info = PngInfo()
    info.add_text("headshots", json.dumps(asdict(sample)))
    image.save(out_dir / sample.file, pnginfo=info)
