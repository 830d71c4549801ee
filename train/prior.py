"""Class images for prior preservation: a folder the person gives, or generated once by the base model.

Generated images depend only on the base model, the class prompt, the resolution and the seeds, never
on anyone's photos, so they are cached under `paths.cache_root/class-images/<key>/` and shared by every
user and run with the same settings. Generation is resumable: each image is written atomically and
existing ones are kept, so an interrupted run only generates what is missing; two trainings needing the same images
(a batch) draw them once, the second waiting for the first (the folder's `.lock`). Under `accelerate launch` every
process draws its share (every n-th image) rather than the main process all of them while the others wait at a
barrier: on a slower GPU 100 SDXL images take longer than the 10 minutes NCCL waits before it ends the run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image, ImageOps

from headshots.config import Config, model_source
from headshots.errors import HeadshotsError
from headshots.images import list_photos, load_rgb
from headshots.logs import get_logger
from headshots.workspace import held_in_turn, write_atomic, write_json_atomic

log = get_logger(__name__)


def class_prompt(cfg: Config) -> str:
    return cfg.train.prior.prompt.format(class_noun=cfg.prepare.class_noun)


def generated_dir(cfg: Config) -> Path:
    """Cache folder named by everything the images depend on."""
    model, prior = cfg.model, cfg.train.prior
    recipe = [model_source(model.pretrained), model.revision, model.variant, model.vae, class_prompt(cfg), model.resolution,
              prior.sampling_steps, cfg.train.seed]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    return Path(cfg.paths.cache_root) / "class-images" / key


def class_image_paths(cfg: Config, device: torch.device, share: tuple[int, int] = (0, 1)) -> list[Path]:
    """The class photos to train with; generates the missing ones first when no folder is given. `share`: (this
    process's index, the number of processes): each draws the missing images whose number is its index modulo
    the count, so the shares are the same whenever each process looks. Processes sharing the work take no lock: a
    batch's trainings run on one GPU each, and another training drawing the same folder at that moment repeats
    work only (same seeds, files written whole)."""
    prior = cfg.train.prior
    if prior.images:
        folder = Path(prior.images)
        if not folder.is_dir() or not list_photos(folder):
            raise HeadshotsError(f"train.prior.images={folder} is not a folder of photos.",
                                 "Point it at a folder of class photos, or leave it empty to generate them.")
        return list_photos(folder)[: prior.num_images]
    folder = generated_dir(cfg)
    wanted = [folder / f"{k:05d}.png" for k in range(prior.num_images)]
    if all(path.is_file() for path in wanted):
        return wanted
    folder.mkdir(parents=True, exist_ok=True)
    index, processes = share
    if processes > 1:
        _draw_missing(cfg, wanted[index::processes], device)
        return wanted
    with held_in_turn(folder / ".lock", f"waiting for another training to draw the class images in {folder}"):
        _draw_missing(cfg, wanted, device)  # what that training left to draw
    return wanted


def _draw_missing(cfg: Config, paths: list[Path], device: torch.device) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        generate_class_images(cfg, missing, device)


@torch.no_grad()
def generate_class_images(cfg: Config, paths: list[Path], device: torch.device) -> None:
    """Sample the class prompt with the base model (no adapter), one seed per file index."""
    from tqdm import tqdm

    from headshots.sdxl import load_pipeline

    pipe = load_pipeline(cfg.model, device)
    prompt = class_prompt(cfg)
    write_json_atomic(paths[0].parent / "prompt.json", {"prompt": prompt, "base_model": cfg.model.pretrained})
    log.info("generating %d of %d class images for prior preservation (%r) -> %s", len(paths), cfg.train.prior.num_images,
             prompt, paths[0].parent)
    for path in tqdm(paths, desc="class images", unit="image"):
        seed = cfg.train.seed * 1_000_003 + int(path.stem)
        image = pipe(prompt, num_inference_steps=cfg.train.prior.sampling_steps, height=cfg.model.resolution,
                     width=cfg.model.resolution, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        write_atomic(path, lambda temporary, image=image: image.save(temporary, "PNG"))
    del pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()


def class_rows(cfg: Config, paths: list[Path]) -> list[dict]:
    """Dataset rows in the prepared dataset's format: centre-cropped squares, the class prompt as
    caption, and the whole image as 'face box' so the face-weighted loss leaves them unweighted."""
    resolution = cfg.model.resolution
    rows = []
    for path in paths:
        image = load_rgb(path)
        side = min(image.size)
        rows.append({
            "image": ImageOps.fit(image, (resolution, resolution), Image.LANCZOS),
            "caption": class_prompt(cfg),
            "original_size": [side, side],
            "face_box": [0.0, 0.0, 1.0, 1.0],
        })
    return rows
