"""Prepare stage: selfies -> face crops + captions (a Hugging Face dataset) + reference embeddings.

Reads   data/users/<user>/selfies/*            (never modified)
Writes  data/users/<user>/prepared/             datasets.Dataset: image, caption, generated_caption, file, face_box,
                                                original_size
        data/users/<user>/captions.json         {file: caption}, editable: edits win on the next prepare (train/captions.py)
        data/users/<user>/prepare_report.json   every photo, kept or rejected, with reason and advice
        data/users/<user>/reference.safetensors FaceNet embeddings of the kept photos (key "embeddings")
"""

from __future__ import annotations

import difflib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from headshots.caption_edits import read_captions_file, write_captions_file
from headshots.config import Config
from headshots.errors import HeadshotsError, ImageError
from headshots.faces import REFERENCE_EMBEDDER, Detection, FaceAnalyzer, embedder_identity
from headshots.images import load_rgb
from headshots.logs import get_logger, plural, printable
from headshots.workspace import Workspace, replace_folder, write_json_atomic
from train.captions import caption_photos
from train.checkpoint import preparing_alone
from train.framing import frame_face

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
    face_box: list[float] | None = None  # x1, y1, x2, y2 in 0..1 of the upright (EXIF-rotated) photo, as intake's
    crop_box: list[int] | None = None  # the square before turning, in the photo
    level_degrees: float = 0.0  # the crop is turned this much (counter-clockwise) about its centre: eyes level
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
        result.face_box = detection.subject.box_fractions(image.size)
    if not detection.ok:
        reason, advice = ADVICE[detection.problem]
        if detection.problem == "several_faces":
            reason = f"{len(detection.faces)} faces"
        elif detection.problem == "face_too_small":
            reason = f"face too small ({detection.subject.side:.0f} px, need {analyzer.cfg.min_face_px})"
        result.reason, result.advice = reason, advice
    return result, image, detection


def rejected_by_intake(cfg: Config, analyzer: FaceAnalyzer) -> dict[str, tuple[str, str]]:
    """(reason, advice) of each photo intake rejects with these settings: someone else, a re-saved copy, a blurred,
    dark or covered face must not be learnt as the person, though the set as a whole passed (`make train` stops
    only on an unusable set) or prepare runs alone. Judged here, not read from intake.json, so that prepare
    depends on the photos and settings only. Those in `prepare.keep_rejected` the caller keeps: the person's call."""
    from train.intake import REJECT, judge_photos

    workspace = Workspace.from_config(cfg)
    photos = judge_photos(cfg, analyzer, progress="prepare: intake's checks").photos
    files = [photo.file for photo in photos]
    for name in sorted(set(cfg.prepare.keep_rejected) - set(files)):
        alike = difflib.get_close_matches(name.lower(), [f.lower() for f in files], n=1, cutoff=0.75)
        meant = next((f for f in files if alike and f.lower() == alike[0]), None)
        log.warning("prepare.keep_rejected names %s, not among the photos in %s%s", name, workspace.selfies,
                    f" (did you mean {meant}?)" if meant else "")
    return {photo.file: (f"intake: {photo.reason}", " ".join(photo.advice)) for photo in photos if photo.verdict == REJECT}


def keep_rejected_setting(file: str) -> str:
    """The settings.yaml line that trains on `file` although intake rejects it. The name is quoted (a JSON string is
    a YAML one): "me, at home [2].jpg" or "#1 selfie.jpg" pasted bare is a syntax error or a comment."""
    return f"prepare: {{keep_rejected: [{json.dumps(file, ensure_ascii=False)}]}}"


def _keep_rejected_advice(advice: str, file: str, workspace: Workspace) -> str:
    return f"{advice} If intake is wrong about it, add `{keep_rejected_setting(file)}` to {workspace.person_settings}."


def prepare(cfg: Config, analyzer: FaceAnalyzer | None = None) -> PrepareResult:
    """Run the prepare stage for `cfg.user` and write its three outputs; refused while any run of theirs trains on them."""
    workspace = Workspace.from_config(cfg)
    photos = workspace.require_selfies()  # first: a person without photos is told so, and no run folder is made
    with preparing_alone(workspace):
        return _prepare(cfg, workspace, photos, analyzer)


def _prepare(cfg: Config, workspace: Workspace, photos: list[Path], analyzer: FaceAnalyzer | None) -> PrepareResult:
    import datasets

    read_captions_file(workspace.captions)  # a broken captions.json fails now, not after every photo is cropped
    analyzer = analyzer or FaceAnalyzer.for_config(cfg)
    resolution = cfg.model.resolution

    rejected = rejected_by_intake(cfg, analyzer)
    results, crops, boxes, sizes, embeddings = [], [], [], [], []
    for path in tqdm(photos, desc="prepare", unit="photo"):
        result, image, detection = judge_photo(path, analyzer)
        results.append(result)
        cannot_use = None if result.kept else result.reason  # prepare's own finding (no face, two faces, not an image)
        if path.name in rejected:
            reason, advice = rejected[path.name]
            if not result.kept:  # unusable here too: intake's reason is the more precise ("image too small", not "no face")
                result.reason, result.advice = reason, advice
            elif path.name in cfg.prepare.keep_rejected:  # the person's call: kept, and the report says so
                result.warnings.append(f"{reason}; kept as prepare.keep_rejected asks")
            else:
                result.kept, result.reason, result.advice = False, reason, _keep_rejected_advice(advice, path.name, workspace)
        if cannot_use and path.name in cfg.prepare.keep_rejected:  # said, not silently ignored
            result.advice += f" (prepare.keep_rejected names it, but no setting can train on it: {cannot_use.rstrip('.')})"
        if not result.kept:
            continue
        face = detection.subject
        framing = frame_face(face, image.size, cfg.prepare.crop_margin, cfg.prepare.level_eyes)
        result.crop_box, result.level_degrees = framing.box, round(framing.degrees, 1)
        side = round(framing.side)
        if side < resolution / 2:
            result.warnings.append(f"low resolution: the face crop is {side} px, upscaled to {resolution} px")
        boxes.append(framing.face_box(face))
        crops.append(framing.cut(image, resolution))
        sizes.append([side, side])
        embeddings.append(analyzer.embed([image], [face]))  # now, not the whole photo kept (a phone's is 100+ MB)

    prepared = PrepareResult(cfg.user, results)
    write_json_atomic(workspace.prepare_report, prepared.to_json())
    _print_table(prepared)
    if len(crops) < cfg.prepare.min_photos:
        raise HeadshotsError(
            f"Only {len(crops)} of {len(photos)} photos are usable; training needs at least {cfg.prepare.min_photos}.",
            f"Add {plural(cfg.prepare.min_photos - len(crops), 'more photo')} of you alone, face clearly visible "
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
    building = workspace.prepared.with_name(workspace.prepared.name + ".tmp")  # swapped in whole: never half a dataset
    shutil.rmtree(building, ignore_errors=True)
    dataset.save_to_disk(str(building))
    replace_folder(building, workspace.prepared)
    write_captions_file(workspace.captions, dict(zip(files, captions.captions)))
    save_file({"embeddings": torch.cat(embeddings).contiguous()}, str(workspace.reference_embeddings),
              metadata={"files": json.dumps([r.file for r in prepared.kept]), "model": "facenet-InceptionResnetV1",
                        REFERENCE_EMBEDDER: embedder_identity(cfg.face)})
    log.info("prepared %d photos for %s -> %s", len(crops), cfg.user, workspace.prepared)
    return prepared


def _print_table(result: PrepareResult) -> None:
    names = [printable(p.file) for p in result.photos]
    width = max([len(name) for name in names] + [4])
    print(f"\n{'photo':<{width}}  verdict   reason / advice")
    for p, name in zip(result.photos, names):
        verdict = "kept" if p.kept else "REJECTED"
        detail = "; ".join(p.warnings) if p.kept else f"{p.reason} -> {p.advice}"
        print(f"{name:<{width}}  {verdict:<8}  {printable(detail)}")
    print(f"{len(result.kept)} kept, {len(result.photos) - len(result.kept)} rejected\n")
