"""Filter stage: keep only outputs that look like the person and pass the automated review
(infer/review.py), ranked by face similarity.

Reads   outputs/<user>/<run>/samples/manifest.json + images, data/users/<user>/reference.safetensors,
        data/users/<user>/prepared/ (the selfie crops, for the glasses check)
Writes  outputs/<user>/<run>/samples/scores.json   per image: style, seed, face_found, similarity
        (mean cosine similarity to all reference photos), similarity_max, face_box, glasses, kept,
        reason (summary), reasons (every check), rank; plus the person's calibrated threshold
        outputs/<user>/<run>/samples/faces.json    per image version: everything scoring reads of it (`Measured`:
        detection, similarities to the references, size, glasses score, duplicate thumbnail), reused while the
        file, the face settings and the references are unchanged, so such an image is not even decoded again;
        and the selfie crops' glasses scores, reused while the prepared rows are unchanged
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headshots.config import Config
from headshots.errors import HeadshotsError, ImageError
from headshots.faces import Detection, FaceAnalyzer, load_references, weights_source
from headshots.images import load_rgb
from headshots.logs import get_logger, plural
from headshots.workspace import SCORES, Workspace, file_digest, write_json_atomic
from infer import review
from infer.manifest import changes_images, forget_missing, require_manifest
from infer.tracking import log_scores_table

log = get_logger(__name__)
FACES = "faces.json"  # scoring's measurements per image version (measure)
MEASURED_FIELDS = ("detection", "similarities", "size", "glasses", "thumbnail")  # a file made with other fields is remade


@dataclass
class Score:
    file: str
    style: str
    seed: int
    face_found: bool
    similarity: float | None  # mean over the reference photos
    similarity_max: float | None
    kept: bool
    reason: str  # the first failed check, or the likeness when kept
    rank: int | None = None  # 1 = best; None when dropped
    face_box: list[float] | None = None  # x1, y1, x2, y2 in pixels of the image
    glasses: bool | None = None
    reasons: list[dict] = field(default_factory=list)  # every check: {check, passed, detail}
    # face-detail pass: which version won and by how much, or why there was none (infer/detail.py)
    detail: dict | None = None
    source: str | None = None  # more like this: the image this one was drawn from (infer/variations.py)


def person_references(workspace: Workspace, cfg: Config) -> torch.Tensor:
    return load_references(workspace.require_reference(), cfg.face, workspace.make_command("prepare"))


@changes_images
def score(cfg: Config, analyzer: FaceAnalyzer | None = None) -> list[Score]:
    workspace = Workspace.from_config(cfg)
    samples_dir, manifest = require_manifest(cfg, "to score")
    forget_missing(samples_dir, manifest)
    items = manifest["images"]
    references = person_references(workspace, cfg)
    analyzer = analyzer or FaceAnalyzer.for_config(cfg)
    floor = analyzer.similarity_threshold(cfg.filter)
    threshold = review.person_threshold(references, floor, cfg.filter)
    faces_file, key = samples_dir / FACES, measurement_key(cfg, references)
    stored = _read_measurements(faces_file, key)
    selfies = selfie_glasses_scores(workspace, analyzer, stored.get("selfies")) if cfg.filter.check_glasses else None
    selfie_glasses = review.glasses_share(selfies["glasses"], cfg.filter) if selfies else None

    # Every version of every image (as generated, and face-detailed when the pass made one), measured in one batch.
    versions = [(index, name) for index, item in enumerate(items) for name in versions_of(item, samples_dir)]
    measured, records = measure([name for _, name in versions], samples_dir, analyzer, references, cfg, stored.get("images", {}))
    kept_selfies = selfies or stored.get("selfies")  # the glasses check off now: what it measured stays for later
    write_json_atomic(faces_file, {"key": key, "images": records, **({"selfies": kept_selfies} if kept_selfies else {})},
                      indent=None)
    judged = {name: judge({**items[index], "file": name}, measured[name], threshold, selfie_glasses, cfg) for index, name in versions}
    scores = [better_version(item, judged) for item in items]
    collapse_duplicates(scores, {name: m.thumbnail for name, m in measured.items()}, cfg.filter.duplicate_similarity)
    rank(scores)
    loo = review.leave_one_out(references)
    write_json_atomic(samples_dir / SCORES, {  # the web app's review reads it while a job writes it
        "threshold": threshold,
        "threshold_floor": floor,
        "loo_similarity": round(loo.mean().item(), 4) if loo.numel() else None,
        "references": int(references.shape[0]),
        "selfies_with_glasses": selfie_glasses,
        "kept": sum(s.kept for s in scores),
        "images": [asdict(s) for s in scores],
    })
    log.info("%d of %d images kept (threshold %.2f, floor %.2f) -> %s", sum(s.kept for s in scores), len(scores),
             threshold, floor, samples_dir / SCORES)
    log_scores_table(cfg, samples_dir, scores)
    return scores


@dataclass
class Measured:
    """What scoring reads of one image version: all it needs to judge it, so an image measured before is not
    even decoded again (kept in samples/faces.json by `measure`)."""

    detection: Detection
    similarities: torch.Tensor | None  # to each reference; None without a usable face
    size: tuple[int, int]
    glasses: float | None  # review.bridge_edge_score of the subject's face; None without one
    thumbnail: np.ndarray  # review.thumbnail_pixels, for near-duplicates

    @classmethod
    def of(cls, image: Image.Image, detection: Detection, similarities: torch.Tensor | None) -> Measured:
        face = detection.subject
        return cls(detection, similarities, image.size, None if face is None else review.bridge_edge_score(image, face),
                   review.thumbnail_pixels(image))

    def to_json(self, stamp: str) -> dict:
        return {"stamp": stamp, "detection": self.detection.to_json(), "size": list(self.size), "glasses": self.glasses,
                "similarities": None if self.similarities is None else self.similarities.tolist(),
                "thumbnail": base64.b64encode(self.thumbnail.tobytes()).decode()}

    @classmethod
    def from_json(cls, record: dict) -> Measured:
        sims = record["similarities"]
        return cls(Detection.from_json(record["detection"]), None if sims is None else torch.tensor(sims, dtype=torch.float32),
                   tuple(record["size"]), record["glasses"],
                   np.frombuffer(base64.b64decode(record["thumbnail"]), dtype=np.uint8).reshape(review.THUMBNAIL, review.THUMBNAIL))


def measure(names: list[str], samples_dir: Path, analyzer: FaceAnalyzer, references: torch.Tensor,
            cfg: Config, kept: dict) -> tuple[dict[str, Measured], dict[str, dict]]:
    """Each image's detection, similarities to the references, size, glasses score and thumbnail: the costly part
    of scoring (~0.25 s per 1024 px image on a CPU, decoding ~25 ms of it), and their records for samples/faces.json.
    Kept there per version of each file (its size and modification time), for the same face settings and
    references (`kept`: the records stored with them), so a new round, a variation or a deletion decodes and
    measures only the images it adds; the checks, ranks and duplicates are judged again every time."""
    stamps = {name: _stamp(samples_dir / name) for name in names}
    records = {name: kept[name] for name in names if isinstance(kept.get(name), dict) and kept[name].get("stamp") == stamps[name]}
    measured = {name: m for name, record in records.items() if (m := _read_record(record)) is not None}
    todo = [name for name in names if name not in measured]
    if todo:
        workspace = Workspace.from_config(cfg)
        images = [_generated_image(samples_dir, name, workspace) for name in todo]
        detections = analyzer.detect_many(images)
        rows = analyzer.similarity_rows(images, detections, references)
        for name, image, detection, row in zip(todo, images, detections, rows):
            records[name] = Measured.of(image, detection, row).to_json(stamps[name])
            measured[name] = Measured.from_json(records[name])  # read back as a kept one is: the same verdicts either way
    log.info("faces measured in %s; %d reused from the last scoring (unchanged since)", plural(len(todo), "image"), len(names) - len(todo))
    return measured, {name: records[name] for name in names}


def _generated_image(samples_dir: Path, name: str, workspace: Workspace) -> Image.Image:
    """A generated image to measure; a damaged one (a full disk, a copy cut short) is an error that says how
    to go on without it, since every other image can still be scored."""
    try:
        return load_rgb(samples_dir / name)
    except ImageError as exc:
        raise HeadshotsError(f"{samples_dir / name} cannot be read: {exc.message}",
                             f"Delete it and score the rest: {workspace.make_command('discard', IMAGES=name)} "
                             "(in the web app: Review, Remove images from your review)") from exc


def _read_record(record: dict) -> Measured | None:
    """A stored record, or None when it does not read back whole: the file is a cache, so a hand-edited or
    cut-short record costs a measurement, never a traceback."""
    try:
        return Measured.from_json(record)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, binascii.Error):
        return None


def measurement_key(cfg: Config, references: torch.Tensor) -> str:
    """What the measurements depend on: the face settings, the weights in use and the reference embeddings (and
    which measurements a record holds: MEASURED_FIELDS)."""
    source = weights_source(cfg.face.weights)
    weights = [source, _stamp(Path(source)) if Path(source).is_file() else None]  # a file replaced in place counts
    digest = hashlib.sha256(json.dumps([asdict(cfg.face), weights, MEASURED_FIELDS], sort_keys=True).encode())
    digest.update(references.float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def _read_measurements(path: Path, key: str) -> dict:
    """What faces.json holds (`images`, `selfies`) when it was made with `key`; nothing otherwise (or when
    unreadable, or a part of it is not what it should be)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict) or stored.get("key") != key:
        return {}
    return {part: stored[part] for part in ("images", "selfies") if isinstance(stored.get(part), dict)}


def versions_of(item: dict, samples_dir: Path) -> list[str]:
    """The image as generated, and its face-detailed version when there is one."""
    redrawn = (item.get("detail") or {}).get("file")
    return [item["file"]] + ([redrawn] if redrawn and (samples_dir / redrawn).is_file() else [])


def better_version(item: dict, judged: dict[str, Score]) -> Score:
    """The version the review would rather show: one that passes every check before one that fails any (a re-drawn
    face can gain a little likeness and lose its eyes' spacing or add glasses, and the image was then dropped with
    its passing original never shown), then a found face, then the higher similarity; with a note of the other's
    figures."""
    original = judged[item["file"]]
    record = item.get("detail")
    if not record or "file" not in record or record["file"] not in judged:
        original.detail = {"skipped": record["skipped"]} if record and "skipped" in record else None
        return original
    redrawn = judged[record["file"]]
    winner = redrawn if _preference(redrawn) > _preference(original) else original
    gain = (round(redrawn.similarity - original.similarity, 4)
            if redrawn.similarity is not None and original.similarity is not None else None)
    loser = original if winner is redrawn else redrawn
    winner.detail = {"original": original.file, "redrawn": redrawn.file,
                     "chosen": "redrawn" if winner is redrawn else "original",
                     "similarity_original": original.similarity, "similarity_redrawn": redrawn.similarity, "gain": gain,
                     **({"other_failed": loser.reason} if winner.kept and not loser.kept else {})}
    return winner


def _preference(score: Score) -> tuple[bool, bool, float]:
    return score.kept, score.face_found, score.similarity if score.similarity is not None else -2.0


def judge(item: dict, measured: Measured, threshold: float, selfie_glasses: float | None, cfg: Config) -> Score:
    """Run every check that applies; the first failure is the summary reason."""
    checks = [review.face_check(measured.detection)]
    base = {"file": item["file"], "style": item["style"], "seed": item["seed"], "source": item.get("source")}
    face, sims, size = measured.detection.subject, measured.similarities, measured.size
    if face is None or sims is None:
        return Score(**base, face_found=False, similarity=None, similarity_max=None, kept=False,
                     reason=checks[0].detail, reasons=[c.as_dict() for c in checks])
    mean, best = round(sims.mean().item(), 4), round(sims.max().item(), 4)
    checks += [review.likeness_check(mean, threshold), review.eyes_check(face, size, cfg.filter),
               review.framing_check(face, size, cfg.filter)]
    glasses = review.wears_glasses(measured.glasses, cfg.filter) if selfie_glasses is not None else None
    if glasses is not None:
        checks.append(review.glasses_check(glasses, selfie_glasses))
    failed = [c for c in checks if not c.passed]
    return Score(**base, face_found=True, similarity=mean, similarity_max=best, kept=not failed,
                 reason=(failed or [checks[1]])[0].detail, face_box=[round(v, 1) for v in face.box], glasses=glasses,
                 reasons=[c.as_dict() for c in checks])


def collapse_duplicates(scores: list[Score], thumbnails: dict[str, np.ndarray], threshold: float) -> None:
    """Among the outputs that passed, keep the most similar of each group of near-identical pictures
    (`thumbnails`: review.thumbnail_pixels of each)."""
    passed = sorted((s for s in scores if s.kept), key=lambda s: -s.similarity)
    duplicates = review.find_duplicates([s.file for s in passed], [review.normalised(thumbnails[s.file]) for s in passed], threshold)
    for s in passed:
        check = review.duplicate_check(duplicates.get(s.file))
        s.reasons.append(check.as_dict())
        if not check.passed:
            s.kept, s.reason = False, check.detail


def rank(scores: list[Score]) -> None:
    """Number the kept outputs best first and sort: kept by rank, then dropped by similarity."""
    for position, s in enumerate(sorted((s for s in scores if s.kept), key=lambda s: -s.similarity), start=1):
        s.rank = position
    scores.sort(key=lambda s: (s.rank is None, s.rank or 0, -(s.similarity if s.similarity is not None else -2)))


def selfie_glasses_scores(workspace: Workspace, analyzer: FaceAnalyzer, stored: dict | None) -> dict | None:
    """The nose-bridge score of each prepared selfie crop (None: no face found), as `{rows, glasses}`; `stored`, the
    last scoring's, when the prepared rows (`rows`: their digest) are the same. Detecting the faces of 15 crops of
    1024 px takes 3.1-3.4 s on 2 CPU cores (24 s beside a test run): every score (a deletion, more like this) paid it. None (the check
    skipped) without a prepared set."""
    if not workspace.is_prepared:
        log.warning("no prepared selfies at %s: the glasses check is skipped", workspace.prepared)
        return None
    rows = file_digest(*workspace.prepared_rows)
    if stored and stored.get("rows") == rows and isinstance(stored.get("glasses"), list):
        return stored
    crops = [image.convert("RGB") for image in workspace.load_prepared()["image"]]
    faces = [d.subject for d in analyzer.detect_many(crops)]
    return {"rows": rows, "glasses": [None if face is None else review.bridge_edge_score(crop, face) for crop, face in zip(crops, faces)]}
