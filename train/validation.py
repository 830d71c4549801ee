"""Validation during training: does the adapter make pictures that look like the person yet?

Every `train.validation.every` steps the main process samples the same prompts with the same seeds
from the base model + the adapter being trained, scores each image by FaceNet similarity to the
person's reference embeddings (the same scorer the filter uses), logs the figures (and the images,
only if `wandb.log_images` is on) and writes them to `validation.json`. Likeness usually rises, peaks
and then falls as the adapter overfits, so the adapter of the best validation is kept in
`adapter-best/` beside the last one in `adapter/`.

    outputs/<user>/<run>/validation.json              {"best": {step, face_similarity}, "history": [...], "settings"}
    outputs/<user>/<run>/validation/step-000200-0.png  the sampled images, per step
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

from headshots.config import Config, weights_source
from headshots.faces import FaceAnalyzer, load_references
from headshots.logs import get_logger
from headshots.sdxl import SDXLComponents
from headshots.workspace import Workspace, file_digest, write_json_atomic

log = get_logger(__name__)


@dataclass
class ValidationResult:
    step: int
    face_similarity: float  # mean over images of the mean cosine to the references; 0 when no face
    faces_found: float  # share of images with a usable face
    images: list[dict] = field(default_factory=list)  # file, prompt, seed, similarity (None: no face)


def face_similarity_score(analyzer: FaceAnalyzer, images: list[Image.Image], references: torch.Tensor) -> tuple[float, float, list[float | None]]:
    """(mean likeness, share of faces found, per-image likeness). An image without a usable face
    counts as 0, so an adapter that stops drawing faces cannot score well."""
    if not images:
        raise ValueError("no validation images to score")
    detections = analyzer.detect_many(images)
    rows = analyzer.similarity_rows(images, detections, references)
    per_image = [None if row is None else round(row.mean().item(), 4) for row in rows]
    mean = sum(s or 0.0 for s in per_image) / len(images)
    found = sum(s is not None for s in per_image) / len(images)
    return round(mean, 4), round(found, 4), per_image


def best_of(history: list[ValidationResult]) -> ValidationResult | None:
    """Highest likeness; the earliest step wins a tie (less training, less overfitting)."""
    best = None
    for result in history:
        if best is None or result.face_similarity > best.face_similarity:
            best = result
    return best


def scoring_settings(cfg: Config, references: Path) -> dict:
    """What two validations' likeness figures are comparable under: the prompts, seeds, steps and guidance they
    sample with (`train.validation` but how often), and the scorer (the face settings, the person's reference faces)."""
    sampling = OmegaConf.to_container(OmegaConf.structured(cfg.train.validation))
    del sampling["every"]
    face = {**OmegaConf.to_container(OmegaConf.structured(cfg.face)), "weights": weights_source(cfg.face.weights)}
    return {"sampling": sampling, "face": face, "references": file_digest(references)}


def decoded(pipe, latents: torch.Tensor) -> Image.Image:
    """The pipeline's latents as an image, decoded in the VAE's own dtype, outside autocast: under fp16 autocast
    SDXL's VAE overflows (NaN: black validation images, no face found, so no best adapter; diffusers issue 4398),
    even loaded in fp32 (`load_components`), since autocast computes its convolutions in fp16 all the same. Scaled
    back as training scaled them (`train.cache.encode_rows`)."""
    vae = pipe.vae
    with torch.autocast(latents.device.type, enabled=False):
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


class Validator:
    """Holds what validation needs between calls: the frozen encoders (off the GPU between uses),
    the face analyzer, the reference embeddings and the history so far."""

    def __init__(self, cfg: Config, parts: SDXLComponents, device: torch.device, weight_dtype: torch.dtype,
                 offload: bool, trigger: str) -> None:
        """`offload`: move the encoders to the CPU between validations (when training does not use them).
        `trigger`: what stands for the person in prompts (the pivotal tokens when those are trained)."""

        self.cfg, self.parts, self.device, self.weight_dtype, self.offload = cfg, parts, device, weight_dtype, offload
        if offload:
            self._park_encoders()
        workspace = Workspace.from_config(cfg)
        self.history_file, self.images_dir = workspace.validation(cfg.run), workspace.validation_images(cfg.run)
        reference = workspace.require_reference()
        self.references = load_references(reference, cfg.face, workspace.make_command("prepare"))
        self.settings = scoring_settings(cfg, reference)
        self.analyzer = FaceAnalyzer.for_config(cfg)
        self.history: list[ValidationResult] = []
        self.trigger = trigger

    def resume(self, step: int) -> None:
        """Keep the history up to the checkpoint resumed from (later entries will be redone identically), if it was
        scored as this run scores (`scoring_settings`): a likeness from other prompts, seeds or scorer is not
        comparable, and a resumed run whose settings changed kept the old run's best against its own. A history
        written before it recorded its settings is kept."""
        if not self.history_file.is_file():
            return
        saved = json.loads(self.history_file.read_text())
        if saved.get("settings", self.settings) != self.settings:
            log.info("validation settings changed since %s was written: its history starts again at this run's first "
                     "validation, which then replaces adapter-best/", self.history_file)
            return
        self.history = [ValidationResult(**entry) for entry in saved["history"] if entry["step"] <= step]

    @property
    def best(self) -> ValidationResult | None:
        return best_of(self.history)

    @torch.no_grad()
    def __call__(self, unet: torch.nn.Module, step: int) -> ValidationResult:
        images, prompts = self._sample(unet)
        mean, found, per_image = face_similarity_score(self.analyzer, [image for image, _ in images], self.references)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for k, ((image, seed), prompt, similarity) in enumerate(zip(images, prompts, per_image)):
            name = f"step-{step:06d}-{k}.png"
            image.save(self.images_dir / name)
            records.append({"file": name, "prompt": prompt, "seed": seed, "similarity": similarity})
        result = ValidationResult(step, mean, found, records)
        self.history.append(result)
        self._write()
        log.info("validation at step %d: face similarity %.3f, faces found %.0f%%", step, mean, 100 * found)
        return result

    def is_best(self, result: ValidationResult) -> bool:
        return self.best is result

    def _sample(self, unet: torch.nn.Module) -> tuple[list[tuple[Image.Image, int]], list[str]]:
        """Sample with the UNet being trained (LoRA active); encoders visit the GPU only for this."""
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

        vcfg, parts = self.cfg.train.validation, self.parts
        trained_mode = unet.training
        unet.eval()
        for module in (parts.vae, parts.text_encoder, parts.text_encoder_2):
            module.to(self.device)
        pipe = StableDiffusionXLPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
            tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(parts.noise_scheduler.config),
        )
        pipe.set_progress_bar_config(disable=True)
        prompts = [p.format(trigger=self.trigger, class_noun=self.cfg.prepare.class_noun) for p in vcfg.prompts]
        images, used_prompts = [], []
        autocast = torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32)
        for prompt in prompts:
            for seed in vcfg.seeds:
                with autocast:  # the UNet's frozen weights in weight_dtype beside its fp32 LoRA
                    latents = pipe(prompt, num_inference_steps=vcfg.sampling_steps, guidance_scale=vcfg.guidance_scale,
                                   height=self.cfg.model.resolution, width=self.cfg.model.resolution, output_type="latent",
                                   generator=torch.Generator("cpu").manual_seed(seed)).images
                images.append((decoded(pipe, latents), seed))
                used_prompts.append(prompt)
        if self.offload:
            self._park_encoders()
        unet.train(trained_mode)
        return images, used_prompts

    def _park_encoders(self) -> None:
        """Give the GPU memory of the frozen encoders back to training until the next validation."""
        if self.device.type == "cuda":
            for module in (self.parts.vae, self.parts.text_encoder, self.parts.text_encoder_2):
                module.to("cpu")
            torch.cuda.empty_cache()

    def _write(self) -> None:
        best = self.best
        payload = {
            "best": {"step": best.step, "face_similarity": best.face_similarity} if best else None,
            "history": [asdict(r) for r in self.history],
            "settings": self.settings,
        }
        write_json_atomic(self.history_file, payload)


def wandb_images(result: ValidationResult, images_dir: Path) -> list:
    """The step's images as W&B images with their likeness as caption (only when the user allows it)."""
    import wandb

    return [wandb.Image(str(images_dir / r["file"]), caption=f"{r['prompt']} | seed {r['seed']} | sim {r['similarity']}")
            for r in result.images]
