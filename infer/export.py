"""Export stage: chosen headshots cropped for where they will be used, centred on the face.

Reads   outputs/<user>/<run>/samples/scores.json (kept images and their face boxes) + images;
        what to export: `infer.export_files` when given, else the favourites ticked in the web app
        (samples/favourites.json, those still there), else every kept image
Writes  outputs/<user>/<run>/export/<size>/<file>.jpg   one folder per platform size
        outputs/<user>/<run>/export/export.json          per image and size: crop box, output size, notes
export/ holds the last export only: it is written beside the old one and swapped in whole, so no crop of an
earlier pick (or of an image since deleted) lingers, and an interrupted export leaves the last one intact.

Never upscaled: a crop is taken at the source's own pixels and only ever scaled down. When the
source holds fewer pixels than a size asks for, the export is the largest crop of that shape the
source has, at its native size, and export.json says so.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.faces import FaceAnalyzer
from headshots.images import load_rgb
from headshots.logs import get_logger, plural
from headshots.workspace import EXPORT_MANIFEST, SCORES, Workspace, chosen_files, held_alone, replace_folder, ticked_files
from infer.manifest import did_you_mean, no_images

log = get_logger(__name__)
EXPORT = "export"


@dataclass(frozen=True)
class Size:
    name: str
    width: int
    height: int
    face_share: float  # face width / crop width: a headshot's framing on that platform

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.width}x{self.height}"


SIZES = (
    Size("linkedin", 400, 400, 0.42),  # LinkedIn's minimum profile photo, square, shown in a circle
    Size("portrait", 1080, 1350, 0.36),  # 4:5 portrait (Instagram and most feeds)
    Size("cv", 600, 800, 0.40),  # 3:4 passport-style CV photo
)
EYE_LINE = 0.42  # the face centre sits this far down the crop: more room above the head than below the chin


@dataclass
class Export:
    size: str
    path: str  # relative to export/
    width: int
    height: int
    crop_box: list[int]
    note: str = ""


def export_dir(cfg: Config) -> Path:
    return Workspace.from_config(cfg).run_dir(cfg.run) / EXPORT


EXPORT_LOCK = ".export.lock"  # in the run's folder: held by an export, and by a discard taking crops out of export/


@contextmanager
def exports_alone(cfg: Config) -> Iterator[None]:
    """One writer of export/ at a time per person and run, across processes (the CLI, the web app's Download, a
    batch): two exports built in one folder and published a list of crops half of which were gone, and an export
    beside a discard brought back the crops of an image deleted for good. Not the images lock: a Download of earlier
    favourites need not wait for a round of images being drawn."""
    busy = HeadshotsError("Another export of these images is being made, or crops taken out of it (in a terminal, the "
                          "web app or a batch).", "Try again once it is done: it takes seconds.")
    with held_alone(Workspace.from_config(cfg).run_dir(cfg.run) / EXPORT_LOCK, busy):
        yield


def export(cfg: Config, analyzer: FaceAnalyzer | None = None) -> Path:
    workspace = Workspace.from_config(cfg)
    if not workspace.samples_dir(cfg.run).is_dir():  # refused before the lock, which would make the folders of a typo
        raise no_images(workspace, workspace.samples_dir(cfg.run), "to export")
    with exports_alone(cfg):
        return _export(cfg, analyzer)


def _export(cfg: Config, analyzer: FaceAnalyzer | None) -> Path:
    workspace = Workspace.from_config(cfg)
    samples_dir = workspace.samples_dir(cfg.run)
    out_dir = export_dir(cfg)
    chosen = chosen_files(cfg)
    if chosen and not cfg.infer.export_files:
        log.info("exporting your %d favourites (%s)", len(chosen), workspace.favourites(cfg.run))
    elif not chosen and ticked_files(workspace, cfg.run):
        log.info("none of your favourites (%s) is there any more: exporting every kept image", workspace.favourites(cfg.run))
    elsewhere = [name for name in chosen if name != Path(name).name]
    if elsewhere:  # a path: maybe someone's selfies, or another person's images
        raise HeadshotsError(f"Cannot export {', '.join(elsewhere)}: only your generated images in {samples_dir} can be.",
                             "Name them as the gallery shows them, e.g. linkedin-00.png.")
    scored = read_scored(samples_dir, chosen, workspace)
    boxes = face_boxes(scored, chosen)
    missing = [name for name in boxes if not (samples_dir / name).is_file()]
    if missing and chosen:
        present = sorted(p.name for p in samples_dir.glob("*.png")) if samples_dir.is_dir() else []
        example = next((name for name in scored if (samples_dir / name).is_file()), present[0] if present else "linkedin-00.png")
        raise HeadshotsError(f"Cannot export {', '.join(missing)}: not in {samples_dir}.",
                             did_you_mean(missing, present) +
                             f"Name images as the gallery shows them (IMAGES= or infer.export_files), e.g. {example}.")
    if missing:  # kept in scores.json, since deleted by hand: the next scoring takes them out
        log.warning("%s: kept by the review but no longer in %s, left out", ", ".join(missing), samples_dir)
        boxes = {name: box for name, box in boxes.items() if name not in missing}
    if not boxes:
        example = next((name for name in scored if (samples_dir / name).is_file()), "linkedin-00.png")  # best first
        raise HeadshotsError("No kept images to export.", "Tick favourites in the web app's Review, or name images yourself: "
                             f"{workspace.make_command('export', IMAGES=example)}")
    for name in boxes:
        if name in scored and not scored[name]["kept"]:
            log.warning("%s was dropped by the review (%s): exported as you asked", name, scored[name]["reason"])
    building = out_dir.with_name(f"{EXPORT}.new")
    shutil.rmtree(building, ignore_errors=True)  # a leftover of an interrupted export
    records = []
    for name, box in boxes.items():
        image = load_rgb(samples_dir / name)
        if box is None:
            analyzer = analyzer or FaceAnalyzer.for_config(cfg, with_embedder=False)
            subject = analyzer.detect(image).subject
            box = list(subject.box) if subject else None
        exports = [asdict(write_size(image, box, size, building, Path(name).stem)) for size in SIZES]
        records.append({"file": name, "source_size": list(image.size), "face_box": box, "exports": exports})
    (building / EXPORT_MANIFEST).write_text(json.dumps({"sizes": [asdict(s) for s in SIZES], "images": records}, indent=2))
    replaced = _exported_files(out_dir)
    replace_folder(building, out_dir)
    log.info("%s exported at %d sizes -> %s", plural(len(records), "image"), len(SIZES), out_dir)
    for record in records:  # the folder names the size asked for: a smaller crop in it is said (export.json has it too)
        for made in record["exports"]:
            if made["note"]:
                log.warning("%s, %s: %s", record["file"], made["size"], made["note"])
    gone = [name for name in replaced if name not in boxes]
    if gone:
        log.warning("the crops of %s from the last export are gone: export/ holds the last export only, so name every "
                    "image you want in one export", ", ".join(gone))
    return out_dir / EXPORT_MANIFEST


def _exported_files(out_dir: Path) -> list[str]:
    try:
        return [image["file"] for image in json.loads((out_dir / EXPORT_MANIFEST).read_text())["images"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def read_scored(samples_dir: Path, chosen: list[str], workspace: Workspace) -> dict[str, dict]:
    """scores.json's images by file, best first; none without it, which only images named by the person can do."""
    scores_path = samples_dir / SCORES
    if scores_path.is_file():
        try:
            return {i["file"]: i for i in json.loads(scores_path.read_text())["images"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:  # cut short or edited: json's error was a traceback
            raise HeadshotsError(f"{scores_path} cannot be read ({type(exc).__name__}: {exc}).",
                                 f"Score the images again: {workspace.make_command('recover')} (it keeps every image "
                                 "and scores them anew).") from exc
    if not chosen and not any(samples_dir.glob("*.png")):  # none generated, or every one deleted since
        raise no_images(workspace, samples_dir, "to export")
    if not chosen:
        raise HeadshotsError(f"No scores in {samples_dir}.",
                             f"Score the images first ({workspace.make_command('infer')}) or name images (IMAGES=...).")
    return {}


def face_boxes(scored: dict[str, dict], chosen: list[str]) -> dict[str, list[float] | None]:
    """{file: face box or None (detect it)}: the chosen files, or every kept image in scores.json."""
    names = chosen or [name for name, item in scored.items() if item["kept"]]
    return {name: scored.get(name, {}).get("face_box") for name in names}


def crop_box(image_size: tuple[int, int], face_box: list[float] | None, size: Size) -> tuple[list[int], bool]:
    """The crop of `size`'s shape around the face, and whether the source is too small for the size.

    Framing asks for face width / face_share; a crop smaller than the target would need upscaling,
    so it grows to the target; a crop larger than the image shrinks to the largest that fits.
    """
    width, height = image_size
    aspect = size.width / size.height
    largest = min(width, height * aspect)  # widest crop of this shape inside the image
    if face_box is None:
        cx, cy, wanted = width / 2, height / 2, largest
    else:
        x1, y1, x2, y2 = face_box
        cx, cy, wanted = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / size.face_share
    crop_w = min(max(wanted, size.width), largest)
    crop_h = crop_w / aspect
    left = min(max(cx - crop_w / 2, 0), width - crop_w)
    top = min(max(cy - EYE_LINE * crop_h, 0), height - crop_h)
    box = [round(left), round(top), round(left + crop_w), round(top + crop_h)]
    return box, crop_w < size.width - 0.5


def write_size(image: Image.Image, face_box: list[float] | None, size: Size, out_dir: Path, stem: str) -> Export:
    box, too_small = crop_box(image.size, face_box, size)
    crop = image.crop(tuple(box))
    if not too_small:
        crop = crop.resize((size.width, size.height), Image.LANCZOS)
    path = out_dir / size.folder / f"{stem}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    crop.save(path, quality=92)
    notes = []
    if too_small:
        notes.append(f"source too small for {size.width}x{size.height}: exported at {crop.width}x{crop.height}, not upscaled")
    if face_box is None:
        notes.append("no face found: centred on the picture")
    return Export(size.folder, str(path.relative_to(out_dir)), crop.width, crop.height, box, "; ".join(notes))
