"""Generate stage: base model + the user's adapter (+ optional SDXL refiner) -> N images per style.

Reads   outputs/<user>/<run>/adapter/              (from training)
Writes  outputs/<user>/<run>/samples/<style>-<k>.png
        outputs/<user>/<run>/samples/manifest.json  per image: style, seed, prompts, settings (scheduler, refiner)
Any image can be redrawn from its manifest entry alone (`draw`: same seed, prompts, settings).

Generating again adds a round of images, it never replaces one: each style's files and seeds are
numbered on past the ones already there, so a new round gives new pictures and the earlier rounds'
files, manifest entries, variations and scores stay. Every entry names its round (`infer.round`, or a
new name from the time). The manifest is rewritten (atomically) after every written batch, so an
interrupted round keeps the images it finished, and generating under its name again completes it.
Deleting samples/ starts over.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from headshots.config import Config, InferConfig, config_from_yaml
from headshots.errors import ConfigError, HeadshotsError
from headshots.faces import resolve_device
from headshots.images import load_rgb
from headshots.logs import get_logger, plural
from headshots.schedulers import make_scheduler
from headshots.sdxl import load_pipeline, load_refiner, pool_at_end_token, warn_without_gpu
from headshots.workspace import ADAPTER_EMBEDDINGS, ADAPTER_INFO, ADAPTER_WEIGHTS, Workspace, safetensors_unreadable
from infer.manifest import changes_images, names_taken, read_manifest, save_png, write_manifest
from infer.styles import Style, check_prompt_lengths, load_style

log = get_logger(__name__)


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
    round: str | None = None  # generate: the round it was made in (infer.round); None for variations
    style_file: str | None = None  # the person's own style YAML it was drawn with; None: a shipped style (configs/styles/)

    @classmethod
    def from_entry(cls, entry: dict) -> Sample:
        """A manifest entry's own fields (an entry also carries what later passes add, such as "detail")."""
        return cls(**{f.name: entry[f.name] for f in fields(cls) if f.name in entry})


@dataclass
class Pipelines:
    """The base pipeline carrying the person's adapter, and the optional refiner."""

    base: Any
    refiner: Any = None
    _img2img: Any = field(default=None, repr=False)

    def img2img(self):
        """SDXL's img2img pipeline over the base pipeline's very modules (the UNet with the person's adapter, VAE,
        text encoders and scheduler are shared, not loaded again)."""
        if self._img2img is None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            self._img2img = over_the_same_modules(StableDiffusionXLImg2ImgPipeline, self.base)
        return self._img2img


def over_the_same_modules(pipeline_class, base):
    """`pipeline_class` (img2img, inpainting) over `base`'s very modules, in their own dtype. diffusers' `from_pipe`
    casts the pipeline it makes to fp32 unless told a dtype, and so the shared modules in place: after the first
    more-like-this or face-detail pass on a GPU, the base drew in fp32 (about 7 GB more, slower steps), and a refiner,
    whose own UNet stays fp16, failed on the fp32 text encoder it shares."""
    return pipeline_class.from_pipe(base, dtype=base.unet.dtype)


def seeds_for(cfg: Config, style: str, numbers: range) -> list[int]:
    """Distinct, reproducible seeds per (style, image number): a style's later rounds, numbered on, get new ones. Each
    style's series starts at a place of its own, from its name: by its place in `infer.styles` (10 000 x index), styles
    generated one at a time all drew from seed 0, the same starting noise, so their pictures shared composition and pose."""
    start = int.from_bytes(hashlib.sha256(style.encode()).digest()[:4], "little")
    return [cfg.infer.seed + start + k for k in numbers]


def next_numbers(style: str, taken: list[str], samples_dir: Path, count: int) -> range:
    """The numbers k of this round's `<style>-<k>.png`: past every name the manifest gives or gave (`taken`: a
    deleted image's number is not drawn again) and every one on disk (a file an interrupted round wrote after its
    last manifest update is not overwritten either)."""
    pattern = re.compile(re.escape(style) + r"-(\d+)\.png")
    names = taken + [p.name for p in samples_dir.glob(f"{style}-*.png")]
    first = max((int(m.group(1)) for name in names if (m := pattern.fullmatch(name))), default=-1) + 1
    return range(first, first + count)


PipelinesOrLoader = Pipelines | Callable[[], Pipelines] | None


def on_demand(cfg: Config) -> Callable[[], Pipelines]:
    """The person's pipelines, loaded at the first call and kept: a maker given this checks the request first
    (styles, the image named, the manifest), so a typo is refused before the ~30 s of loading SDXL."""
    return functools.cache(lambda: load_pipelines(cfg, person_context(cfg).adapter))


def pipelines_for(cfg: Config, pipes: PipelinesOrLoader) -> Pipelines:
    """`pipes` as given, from its loader (`on_demand`), or loaded now."""
    if pipes is None:
        return load_pipelines(cfg, person_context(cfg).adapter)
    return pipes() if callable(pipes) else pipes


def load_pipelines(cfg: Config, adapter: Path) -> Pipelines:
    """Base + adapter (+ refiner), with the configured scheduler: everything sampling needs, loaded once."""
    device = resolve_device(cfg.device)
    warn_without_gpu(device, cfg.model)
    base = load_pipeline(cfg.model, device)
    apply_adapter(base, adapter, cfg.infer)
    if cfg.infer.compile:
        compile_unet(base)
    refiner = (load_refiner(cfg.infer.refiner, base, cfg.model, device, own_text_encoder=trains_text_encoders(adapter))
               if cfg.infer.refiner else None)
    if cfg.infer.scheduler:
        for pipe in filter(None, (base, refiner)):
            pipe.scheduler = make_scheduler(cfg.infer.scheduler, pipe.scheduler)
    return Pipelines(base, refiner)


def trains_text_encoders(adapter: Path) -> bool:
    """Whether the adapter holds text-encoder LoRA (train.text_encoder_lora), which changes the base's encoders."""
    from safetensors import safe_open

    with safe_open(str(adapter / ADAPTER_WEIGHTS), framework="pt") as weights:
        return any(key.startswith(("text_encoder.", "text_encoder_2.")) for key in weights.keys())  # noqa: SIM118


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
    weights are plain weights to the compiler). The face-detail pass shares this module (from_pipe). The graph is
    specialised on the batch: each new batch size (a style's shorter last batch, the face-detail pass's one image at
    a time) compiles once more (on 2 CPU cores, 185 s after a first 243 s, tiny UNet; not timed on a GPU here)."""
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet)


def adapter_trigger(adapter: Path) -> str:
    """What stands for the person in prompts: the trained trigger word, or the pivotal tokens."""
    return json.loads((adapter / ADAPTER_INFO).read_text())["headshots.trigger"]


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
        pool_at_end_token(encoder, tokenizer)


def sample(pipes: Pipelines, cfg: Config, prompts: dict[str, str], seeds: list[int],
           start: tuple[Image.Image, float] | None = None) -> list[Image.Image]:
    """One batch, one image per seed. Each image has its own CPU generator, so an image depends only on
    its seed and settings, not on its batch or device. With a refiner, the base stops at
    `refiner_start` and hands over its latents (SDXL's "ensemble of experts"); the refiner has only the
    second text encoder, so it gets the text that encoder saw in the base pass (the scene, light and lens guide its
    fine detail; the trigger word, unknown to its tokenizer and UNet, is one rare word among them).
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
    """The person's adapter, checked against this run's model before anything is loaded, and how prompts name them."""
    workspace = Workspace.from_config(cfg)
    adapter = workspace.require_adapter(cfg.run, cfg.infer.adapter)
    # for a file of the adapter edited or cut short: `make train` alone would skip the finished training
    again = (f"Delete the folder {adapter} and run `{workspace.make_command('train')}`: it exports the adapter again "
             "from the last checkpoint." if cfg.infer.adapter == "last" else "Generate from the last adapter "
             "(infer.adapter=last), or train again to choose the best one anew.")
    try:
        trained = config_from_yaml(adapter / "config.yaml")  # the class the adapter was trained with
    except ConfigError as exc:
        raise ConfigError(exc.message, again) from exc
    if trained.profile != cfg.profile:  # e.g. a tiny demo adapter sent to SDXL: refused before a 7 GB download
        raise HeadshotsError(
            f"This adapter was trained with the {trained.profile!r} profile (model {trained.model.pretrained}); this run "
            f"uses {cfg.profile!r} ({cfg.model.pretrained}), which it does not fit.",
            f"Use the profile it was trained with (PROFILE={trained.profile}, or --profile {trained.profile}), "
            f"or train one for {cfg.profile!r}.")
    check_adapter_weights(adapter, again)
    try:
        trigger = adapter_trigger(adapter)
    except (OSError, ValueError, KeyError) as exc:  # missing, not JSON, or without the trigger
        raise HeadshotsError(f"The adapter's {ADAPTER_INFO} in {adapter} cannot be read ({type(exc).__name__}: {exc}).",
                             again) from exc
    return Person(adapter, trigger, trained.prepare.class_noun)


def check_adapter_weights(adapter: Path, again: str) -> None:
    """The adapter's weight files open before any model loads: a file cut short (copied from the GPU machine, written
    to a full disk) ended in diffusers' OSError traceback once the base model had loaded."""
    for path in (adapter / ADAPTER_WEIGHTS, adapter / ADAPTER_EMBEDDINGS):  # the token vectors only with pivotal tuning
        if path.exists() and (why := safetensors_unreadable(path)):
            raise HeadshotsError(f"The adapter's {path.name} in {adapter} cannot be read ({why}): it is cut short or "
                                 "damaged.", again)


@changes_images
def generate(cfg: Config, pipes: PipelinesOrLoader = None) -> list[Sample]:
    """Sample a round of every style, added to the images already there, or complete the round `infer.round`
    names; returns the round's manifest entries. `pipes` (load_pipelines, or its `on_demand` loader) when the
    caller keeps them for the next pass."""
    workspace = Workspace.from_config(cfg)
    person = person_context(cfg)
    trigger, class_noun = person.trigger, person.class_noun
    if cfg.prepare.class_noun != class_noun:  # the prompts must say what training said: the adapter learnt that pairing
        log.warning("prepare.class_noun is %r, but this adapter was trained as %r, which the prompts keep saying: "
                    "train again for %r", cfg.prepare.class_noun, class_noun, cfg.prepare.class_noun)
    styles = [load_style(name, dict(cfg.infer.style_overrides)) for name in cfg.infer.styles]

    out_dir = workspace.samples_dir(cfg.run)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(workspace, cfg.run)
    if manifest is None and any(out_dir.glob("*.png")):  # lost: the images stay out of scoring and the review
        log.warning("%s has images but no manifest.json: they are left out of the review until `%s` lists them again",
                    out_dir, workspace.make_command("recover"))
    manifest = manifest or {"user": cfg.user, "run": cfg.run, "images": []}
    manifest.update(base_model=cfg.model.pretrained, resolution=cfg.model.resolution)
    round_name = cfg.infer.round or new_round_name()
    made = [Sample.from_entry(e) for e in manifest["images"] if e.get("round") == round_name]
    missing = [max(cfg.infer.images_per_style - sum(sample.style == style.name for sample in made), 0) for style in styles]
    if not any(missing):  # a round completed before (a retried job): said, without loading SDXL (~30 s) to draw nothing
        log.info("round %s has its %s already: nothing to draw", round_name, plural(len(made), "image"))
        return made

    pipes = pipelines_for(cfg, pipes)
    tokenizers = {"tokenizer": pipes.base.tokenizer, "tokenizer_2": pipes.base.tokenizer_2}
    for style in styles:
        check_prompt_lengths(style.prompts(trigger, class_noun), tokenizers, style.name)
    settings = sample_settings(cfg, pipes)
    plan = []  # (prompts, the entries still to draw) per style
    for style, count in zip(styles, missing):
        numbers = next_numbers(style.name, names_taken(manifest), out_dir, count)
        prompts = style.prompts(trigger, class_noun)
        plan.append((prompts, _entries(style, prompts, numbers, seeds_for(cfg, style.name, numbers), {**settings, "round": round_name})))

    samples: list[Sample] = []
    writes: list[Future] = []
    # PNG encoding is CPU work (about 0.1-0.3 s for 1024x1024) that releases the GIL: one writer
    # thread does it (and the manifest update after it) while the next batch samples.
    total = sum(len(entries) for _, entries in plan)
    try:
        with tqdm(total=total, desc="generate", unit="image") as progress, ThreadPoolExecutor(max_workers=1) as writer:
            for prompts, entries in plan:
                for start in range(0, len(entries), cfg.infer.batch_size):
                    batch = entries[start : start + cfg.infer.batch_size]
                    images = sample(pipes, cfg, prompts, [entry.seed for entry in batch])
                    writes.append(writer.submit(write_batch, images, batch, out_dir, manifest))
                    samples += batch
                    progress.update(len(batch))
    except KeyboardInterrupt:  # the same command again would start a round of its own, on top of this one's images
        # the ARGS given are not known here: a whole command alone would drop them (a re-walk), so it comes second
        log.warning("round %s stopped after %d of %d images, which are kept. To finish it rather than start another, run "
                    "the same command with infer.round=%s added to its ARGS (with no other ARGS: %s)", round_name, len(samples), total,
                    round_name, workspace.make_command(
                        "infer", STYLES=",".join(cfg.infer.styles), N=str(cfg.infer.images_per_style), ARGS=f"infer.round={round_name}"))
        raise
    for write in writes:
        write.result()  # a failed write (disk full...) raises here
    log.info("%s written to %s (%d in all)", plural(len(samples), "new image"), out_dir, len(manifest["images"]))
    return made + samples


def new_round_name(prefix: str = "") -> str:
    """A round named by the time (and 4 random hex digits, for two rounds in one second): sorts by age."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def write_batch(images: list[Image.Image], entries: list[Sample], out_dir: Path, manifest: dict) -> None:
    """Write a batch's PNGs, then add their entries to the manifest: it never names an unwritten file."""
    for image, entry in zip(images, entries):
        write_png(image, entry, out_dir)
    manifest["images"] += [asdict(entry) for entry in entries]
    write_manifest(out_dir, manifest)


def draw(pipes: Pipelines, cfg: Config, entries: list[dict], samples_dir: Path) -> list[Image.Image]:
    """The images these manifest entries describe, one per seed. They share their prompts and settings (a
    batch of one round, or of one `more` call, whose entries start from their `source` image). The entries give the
    prompts, seeds, steps and guidance; scheduler, refiner and LoRA scale are `pipes` and `cfg`'s, so the same
    weights and settings redo the same images."""
    first = entries[0]
    same = replace(cfg, infer=replace(cfg.infer, steps=first["steps"], guidance_scale=first["guidance_scale"]))
    prompts = {"prompt": first["prompt"], "prompt_2": first["prompt_2"],
               "negative_prompt": first["negative_prompt"], "negative_prompt_2": first["negative_prompt"]}
    start = (load_rgb(samples_dir / first["source"]), first["strength"]) if first.get("source") else None
    return sample(pipes, same, prompts, [e["seed"] for e in entries], start)


def sample_settings(cfg: Config, pipes: Pipelines) -> dict[str, Any]:
    """The Sample fields shared by every image of this run."""
    infer = cfg.infer
    return {
        "steps": infer.steps, "guidance_scale": infer.guidance_scale, "lora_scale": infer.lora_scale,
        "scheduler": infer.scheduler, "scheduler_class": type(pipes.base.scheduler).__name__,
        "refiner": infer.refiner, "refiner_start": infer.refiner_start if infer.refiner else None,
    }


def _entries(style: Style, prompts: dict[str, str], numbers: range, seeds: list[int], settings: dict[str, Any]) -> list[Sample]:
    return [
        Sample(file=f"{style.name}-{k:02d}.png", style=style.name, seed=seed, prompt=prompts["prompt"],
               prompt_2=prompts["prompt_2"], negative_prompt=prompts["negative_prompt"], style_file=style.file, **settings)
        for k, seed in zip(numbers, seeds)
    ]


def write_png(image: Image.Image, sample: Sample, out_dir: Path) -> None:
    """The PNG carries its manifest entry, so a lone file is reproducible too."""
    save_png(image, asdict(sample), out_dir / sample.file)
