"""Face-detail pass: re-draw each generated face at the model's native size with the person's adapter.

SDXL gives a face that fills a fifth of a 1024 px frame about 25x25 latent pixels, and likeness drifts
there first (eyes, teeth, hairline). This pass, between generate and score, does for each image in
samples/manifest.json what A1111's ADetailer and ComfyUI's FaceDetailer do:

  1. find the subject's face (headshots.faces: the same subject choice as everywhere);
  2. crop a square around it (`infer.detail.crop_scale` x the face) and scale it up to the native size;
  3. re-draw it with SDXL's inpainting pipeline made from the loaded base pipeline's own modules (the
     person's adapter included, no second copy of any weights), a face prompt built from the image's
     style, a soft elliptical mask and `strength` of the denoising;
  4. scale it back and paste it through the same mask: outside the mask not one pixel changes.

Only SDXL and the person's own adapter are used: no GFPGAN, CodeFormer or InsightFace weights, whose
terms forbid commercial use.

Reads   samples/manifest.json + images, the adapter (as generate)
Writes  samples/<name>.detail.png, and per manifest entry "detail": every input of the re-draw (file,
        crop_box, face_box, prompts, seed, strength, steps, guidance_scale, dilate, feather, native), so the
        entry alone redoes it, and what its pixels came from (`weights`: the adapter and model, `original`: the
        image's bytes), so an image whose record would come out the same is not re-drawn; or {"skipped": reason}
        when the image has no usable face or its face is already at the native size. Scoring judges both
        versions and keeps the better.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from headshots.config import Config, model_source
from headshots.faces import Detection, FaceAnalyzer
from headshots.images import load_rgb
from headshots.logs import get_logger
from headshots.workspace import ADAPTER_EMBEDDINGS, ADAPTER_WEIGHTS, file_digest
from infer.generate import (
    Pipelines,
    PipelinesOrLoader,
    Sample,
    generate,
    on_demand,
    over_the_same_modules,
    person_context,
    pipelines_for,
)
from infer.manifest import changes_images, detail_file, forget_missing, require_manifest, save_png, write_manifest
from infer.styles import Style, check_prompt_lengths, load_style, subject

log = get_logger(__name__)
Box = tuple[int, int, int, int]


def crop_box(face_box: tuple[float, ...], image_size: tuple[int, int], crop_scale: float) -> Box:
    """A square of `crop_scale` x the face's longer side, centred on the face, shifted to stay inside
    the image (and no larger than its shorter side)."""
    x1, y1, x2, y2 = face_box
    width, height = image_size
    side = min(round(max(x2 - x1, y2 - y1) * crop_scale), width, height)
    left = min(max(round((x1 + x2 - side) / 2), 0), width - side)
    top = min(max(round((y1 + y2 - side) / 2), 0), height - side)
    return left, top, left + side, top + side


def ellipse_mask(size: int, face_box: tuple[float, ...], dilate: float, feather: float) -> np.ndarray:
    """(size, size) float mask in [0, 1] for a square region whose face box (in the region's pixels) is
    given: 1 inside the face's ellipse grown by `dilate`, fading to exactly 0 at its edge over `feather`
    of its radius. Pixels outside the grown ellipse are 0, so the paste leaves them untouched."""
    x1, y1, x2, y2 = face_box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = (x2 - x1) / 2 * (1 + dilate), (y2 - y1) / 2 * (1 + dilate)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    radius = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    return np.clip((1.0 - radius) / feather, 0.0, 1.0)


def face_prompts(style: Style, trigger: str, class_noun: str) -> dict[str, str]:
    """What the face re-draw is asked for: the person (trigger + class) with the style's expression and
    light, and the style's photographic treatment for the second encoder, both opening with the person (`subject`)."""
    face = f"{subject(trigger, class_noun)}, close-up of the face"
    return {
        "prompt": f"{face}, {style.expression}, detailed eyes, natural skin texture",
        "prompt_2": f"{face}, {style.lighting}, {style.tone}, sharp focus, high-end portrait photography",
        "negative_prompt": style.negative,
        "negative_prompt_2": style.negative,
    }


def weights_fingerprint(cfg: Config, adapter: Path) -> str:
    """What a re-draw's pixels depend on besides its record: the adapter's weights (and pivotal-token vectors), the
    base model and how the adapter is applied. A retrained adapter changes it, and every face is re-drawn."""
    files = [path for path in (adapter / ADAPTER_EMBEDDINGS, adapter / ADAPTER_WEIGHTS) if path.exists()]  # not the Kohya copy: the same weights
    settings = {"model": [model_source(cfg.model.pretrained), cfg.model.revision, cfg.model.variant, cfg.model.vae],
                "lora_scale": cfg.infer.lora_scale, "scheduler": cfg.infer.scheduler}
    return hashlib.sha256(f"{file_digest(*files)}{json.dumps(settings)}".encode()).hexdigest()[:16]


def plan(detection: Detection, image: Image.Image, entry: dict, prompts: dict[str, str], cfg: Config,
         drawn_from: dict[str, str]) -> dict:
    """The manifest's "detail" record for one image: every input of its re-draw and what its pixels come from
    (`drawn_from`: weights and original), or why it is skipped."""
    face = detection.subject
    if face is None or detection.problem:  # several faces, or one too small: the review drops it whatever its face
        return {"skipped": f"no usable face ({detection.problem or 'no_face'})"}
    native = cfg.model.resolution
    box = crop_box(face.box, image.size, cfg.infer.detail.crop_scale)
    side = box[2] - box[0]
    if side >= native:
        return {"skipped": f"the face's crop is already {side} px, at least the model's native {native} px"}
    detail = cfg.infer.detail
    return {
        "file": detail_file(entry["file"]), "crop_box": list(box), "face_box": [round(v, 2) for v in face.box],
        **prompts, "seed": entry["seed"], "strength": detail.strength, "steps": detail.steps,
        "guidance_scale": detail.guidance_scale if detail.guidance_scale is not None else cfg.infer.guidance_scale,
        "dilate": detail.dilate, "feather": detail.feather, "native": native, **drawn_from,
    }


def redraw(inpaint, image: Image.Image, record: dict) -> Image.Image:
    """The image with its face re-drawn as `record` says (deterministic for the same record and weights)."""
    left, top, right, _ = record["crop_box"]
    side, native = right - left, record["native"]
    crop = image.crop(tuple(record["crop_box"]))
    x1, y1, x2, y2 = record["face_box"]
    face_in_crop = (x1 - left, y1 - top, x2 - left, y2 - top)
    scale = native / side
    mask_native = ellipse_mask(native, tuple(v * scale for v in face_in_crop), record["dilate"], record["feather"])
    out = inpaint(
        prompt=record["prompt"], prompt_2=record["prompt_2"],
        negative_prompt=record["negative_prompt"], negative_prompt_2=record["negative_prompt_2"],
        image=crop.resize((native, native), Image.LANCZOS),
        mask_image=redrawn_region(mask_native),
        height=native, width=native, strength=record["strength"], num_inference_steps=record["steps"],
        guidance_scale=record["guidance_scale"], generator=torch.Generator("cpu").manual_seed(record["seed"]),
    ).images[0]
    return paste(image, out.resize((side, side), Image.LANCZOS), record["crop_box"],
                 ellipse_mask(side, face_in_crop, record["dilate"], record["feather"]))


def redrawn_region(soft: np.ndarray) -> Image.Image:
    """The inpainting mask (white: redraw): every pixel the soft paste mask takes any of, whole. The pipeline
    thresholds its mask at one half (and to its 8-px latent grid), so given the soft mask it redrew the inner ellipse
    alone, and the paste faded in a hard, blocky edge at half strength (an ML review); redrawn out to the soft mask's
    edge, the feather fades a coherent face into the original."""
    return Image.fromarray(np.where(soft > 0, 255, 0).astype(np.uint8), "L")


def paste(image: Image.Image, patch: Image.Image, box: tuple[int, ...] | list[int], mask: np.ndarray) -> Image.Image:
    """`image` with `patch` blended in at `box` through `mask` (same size as the patch); where the mask
    is 0 the result is the original pixel exactly."""
    result = np.asarray(image.convert("RGB")).copy()
    left, top, right, bottom = box
    original = result[top:bottom, left:right].astype(np.float32)
    weight = mask[..., None]
    blended = original + weight * (np.asarray(patch.convert("RGB")).astype(np.float32) - original)
    result[top:bottom, left:right] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return Image.fromarray(result).convert(image.mode)


def inpainting_pipeline(pipes: Pipelines):
    """SDXL's inpainting pipeline over the base pipeline's very modules: `from_pipe` shares the UNet
    (with the person's adapter, fused or not), VAE and text encoders instead of loading them again."""
    from diffusers import StableDiffusionXLInpaintPipeline

    inpaint = over_the_same_modules(StableDiffusionXLInpaintPipeline, pipes.base)
    inpaint.set_progress_bar_config(disable=True)
    return inpaint


@changes_images
def detail(cfg: Config, pipes: PipelinesOrLoader = None, files: Collection[str] | None = None) -> list[dict]:
    """Run the pass over every generated image, or over `files` only (a round just made); returns the
    manifest entries it re-drew, kept or skipped, each with its "detail". A face whose record would come out
    exactly as it is (same inputs, weights and original) keeps its re-drawn file: running the pass again after a
    new round re-draws that round only, and loads no model when nothing is new."""
    samples_dir, manifest = require_manifest(cfg, "to re-draw faces in")
    forget_missing(samples_dir, manifest)
    person = person_context(cfg)
    pipes = on_demand(cfg) if pipes is None else pipes
    weights = weights_fingerprint(cfg, person.adapter)

    entries = [e for e in manifest["images"] if files is None or e["file"] in files]
    images = [load_rgb(samples_dir / entry["file"]) for entry in entries]
    analyzer = FaceAnalyzer.for_config(cfg, with_embedder=False)
    detections = analyzer.detect_many(images)
    prompts: dict[str, dict[str, str]] = {}
    redraws: list[tuple[dict, Image.Image]] = []
    for entry, image, detection in zip(entries, images, detections):
        style = entry.get("style_file") or entry["style"]  # a person's own file by its path: its stem may be a shipped name
        if style not in prompts:
            prompts[style] = face_prompts(load_style(style, dict(cfg.infer.style_overrides)), person.trigger, person.class_noun)
        drawn_from = {"weights": weights, "original": file_digest(samples_dir / entry["file"])}
        record = plan(detection, image, entry, prompts[style], cfg, drawn_from)
        if "file" in record and not (record == entry.get("detail") and (samples_dir / record["file"]).is_file()):
            redraws.append((entry, image))
        entry["detail"] = record
    if redraws:
        redraw_faces(pipelines_for(cfg, pipes), redraws, prompts, samples_dir)
    write_manifest(samples_dir, manifest)
    redrawn = sum("file" in e["detail"] for e in entries)
    log.info("face detail: %d of %d images with a re-drawn face (%d drawn now, %d kept as they were; %d skipped) -> %s",
             redrawn, len(entries), len(redraws), redrawn - len(redraws), len(entries) - redrawn, samples_dir)
    return entries


def redraw_faces(pipes: Pipelines, redraws: list[tuple[dict, Image.Image]], prompts: dict[str, dict[str, str]],
                 samples_dir: Path) -> None:
    """Re-draw each entry's face as its "detail" record says, each PNG carrying its entry as every output."""
    inpaint = inpainting_pipeline(pipes)
    tokenizers = {"tokenizer": inpaint.tokenizer, "tokenizer_2": inpaint.tokenizer_2}
    for style, style_prompts in prompts.items():
        check_prompt_lengths(style_prompts, tokenizers, style)
    for entry, image in tqdm(redraws, desc="face detail", unit="image"):
        save_png(redraw(inpaint, image, entry["detail"]), entry, samples_dir / entry["detail"]["file"])


def with_detail(cfg: Config, make: Callable[[Config, PipelinesOrLoader], list[Sample]] = generate) -> None:
    """Make images (generate, or variations.more_like), then this pass over the new ones when
    `infer.detail.enabled`, both with one pipeline, loaded once `make` has checked its request: how `infer all`,
    `infer more` and the app run them."""
    pipes = on_demand(cfg)
    made = make(cfg, pipes)
    if cfg.infer.detail.enabled and made:
        detail(cfg, pipes, {sample.file for sample in made})
