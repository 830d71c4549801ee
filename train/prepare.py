"""Prepare stage: selfies -> face crops + captions (a Hugging Face dataset) + reference embeddings.

Reads   data/users/<user>/selfies/*            (never modified)
Writes  data/users/<user>/prepared/             datasets.Dataset: image, caption, generated_caption, file, face_box,
                                                original_size
        data/users/<user>/captions.json         {file: caption}, editable: edits win on the next prepare (train/captions.py)
        data/users/<user>/prepare_report.json   every photo, kept or rejected, with reason and advice
        data/users/<user>/reference.safetensors FaceNet embeddings of the kept photos (key "embeddings")
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from headshots.config import Config
from headshots.errors import HeadshotsError, ImageError
from headshots.faces import Detection, Face, FaceAnalyzer, resolve_device
from headshots.images import list_photos, load_rgb
from headshots.logs import get_logger
from headshots.workspace import Workspace
from train.captions import caption_photos, write_captions_file

log = get_logger(__name__)

ADVICE = {
    "no_face": ("no face found", "Use a photo where your face is clearly visible and facing the camera."),
    "several_faces": ("several faces", "Use a photo of you alone, or crop the other people out."),
    "face_too_small": ("face too small", "Take a closer photo: your face should fill about a third of the frame."),
}


@dataclass
class PhotoResult:
    file: str
    kept: bool
    reason: str | None = None
    advice: str | None = None
    confidence: float | None = None
    face_box: list[float] | None = None  # in the original (EXIF-rotated) photo
    crop_box: list[int] | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class PrepareResult:
    user: str
    photos: list[PhotoResult]

    @property
    def kept(self) -> list[PhotoResult]:
        return [p for p in self.photos if p.kept]

    def to_json(self) -> dict:
        return {
            "user": self.user,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kept": len(self.kept),
            "rejected": len(self.photos) - len(self.kept),
            "photos": [asdict(p) for p in self.photos],
        }


def square_crop_box(face: Face, image_size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """A square around the face with `margin` x face size of context on each side, kept inside the
    photo (shifted, then shrunk if the photo is too small). Centred slightly below the face centre
    so the chin and neck are in, as in a headshot."""
    width, height = image_size
    side = min(face.side * (1 + 2 * margin), width, height)
    cx, cy = face.center
    cy += 0.1 * face.side
    left = min(max(cx - side / 2, 0), width - side)
    top = min(max(cy - side / 2, 0), height - side)
    return round(left), round(top), round(left + side), round(top + side)


def judge_photo(path: Path, analyzer: FaceAnalyzer) -> tuple[PhotoResult, Image.Image | None, Detection | None]:
    """Decode and detect; every file gets a verdict, none raises."""
    try:
        image = load_rgb(path)
    except ImageError as exc:
        return PhotoResult(path.name, False, exc.message.split(": ", 1)[-1], exc.hint), None, None
    detection = analyzer.detect(image)
    result = PhotoResult(path.name, detection.ok)
    if detection.subject is not None:
        result.confidence = round(detection.subject.confidence, 4)
        result.face_box = [round(v, 1) for v in detection.subject.box]
    if not detection.ok:
        reason, advice = ADVICE[detection.problem]
        if detection.problem == "several_faces":
            reason = f"{len(detection.faces)} faces"
        elif detection.problem == "face_too_small":
            reason = f"face too small ({detection.subject.side:.0f} px, need {analyzer.cfg.min_face_px})"
        result.reason, result.advice = reason, advice
    return result, image, detection


def prepare(cfg: Config, analyzer: FaceAnalyzer | None = None) -> PrepareResult:
    """Run the prepare stage for `cfg.user` and write its three outputs."""
    import datasets

    workspace = Workspace.from_config(cfg)
    photos = list_photos(workspace.require_selfies())
    if not photos:
        raise HeadshotsError(f"{workspace.selfies} is empty.", "Add 5-20 recent photos of yourself, alone, face visible.")
    analyzer = analyzer or FaceAnalyzer(cfg.face, resolve_device(cfg.device))
    resolution = cfg.model.resolution

    results, crops, boxes, sizes, kept_images, kept_faces = [], [], [], [], [], []
    for path in tqdm(photos, desc="prepare", unit="photo"):
        result, image, detection = judge_photo(path, analyzer)
        results.append(result)
        if not result.kept:
            continue
        face = detection.subject
        crop_box = square_crop_box(face, image.size, cfg.prepare.crop_margin)
        result.crop_box = list(crop_box)
        side = crop_box[2] - crop_box[0]
        if side < resolution / 2:
            result.warnings.append(f"low resolution: the face crop is {side} px, upscaled to {resolution} px")
        scale = resolution / side
        x1, y1, x2, y2 = face.box
        boxes.append([(x1 - crop_box[0]) * scale / resolution, (y1 - crop_box[1]) * scale / resolution,
                      (x2 - crop_box[0]) * scale / resolution, (y2 - crop_box[1]) * scale / resolution])
        crops.append(image.crop(crop_box).resize((resolution, resolution), Image.LANCZOS))
        sizes.append([side, side])
        kept_images.append(image)
        kept_faces.append(face)

    prepared = PrepareResult(cfg.user, results)
    workspace.user_dir.mkdir(parents=True, exist_ok=True)
    workspace.prepare_report.write_text(json.dumps(prepared.to_json(), indent=2))
    _print_table(prepared)
    if len(crops) < cfg.prepare.min_photos:
        raise HeadshotsError(
            f"Only {len(crops)} of {len(photos)} photos are usable; training needs at least {cfg.prepare.min_photos}.",
            f"Add {cfg.prepare.min_photos - len(crops)} more photos of you alone, face clearly visible "
            f"(see {workspace.prepare_report} for what was wrong with each).",
        )

    files = [r.file for r in prepared.kept]
    captions = caption_photos(cfg, workspace, files, crops)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),  # what training uses: captions.json as edited
            "generated_caption": datasets.Value("string"),  # the captioner's: tells the person's edits apart
            "file": datasets.Value("string"),
            "face_box": datasets.List(datasets.Value("float32"), length=4),  # crop coords, 0..1
            "original_size": datasets.List(datasets.Value("int32"), length=2),  # crop side before resize
        }
    )
    dataset = datasets.Dataset.from_dict(
        {
            "image": crops,
            "caption": captions.captions,
            "generated_caption": captions.generated,
            "file": files,
            "face_box": boxes,
            "original_size": sizes,
        },
        features=features,
    )
    _replace_dir(workspace.prepared, dataset.save_to_disk)
    write_captions_file(workspace.captions, dict(zip(files, captions.captions)))
    embeddings = analyzer.embed(kept_images, kept_faces)
    save_file({"embeddings": embeddings.contiguous()}, str(workspace.reference_embeddings),
              metadata={"files": json.dumps([r.file for r in prepared.kept]), "model": "facenet-InceptionResnetV1"})
    log.info("prepared %d photos for %s -> %s", len(crops), cfg.user, workspace.prepared)
    return prepared


def _replace_dir(target: Path, write) -> None:
    """Write a folder next to `target`, then swap it in, so a crash never leaves half a dataset."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(str(tmp))
    old = target.with_name(target.name + ".old")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _print_table(result: PrepareResult) -> None:
    width = max([len(p.file) for p in result.photos] + [4])
    print(f"\n{'photo':<{width}}  verdict   reason / advice")
    for p in result.photos:
        verdict = "kept" if p.kept else "REJECTED"
        detail = "; ".join(p.warnings) if p.kept else f"{p.reason} -> {p.advice}"
        print(f"{p.file:<{width}}  {verdict:<8}  {detail}")
    print(f"{len(result.kept)} kept, {len(result.photos) - len(result.kept)} rejected\n")
