"""Face analysis, the one place that knows about faces: MTCNN detection, subject choice, bystanders,
FaceNet embeddings, similarity and the calibrated similarity threshold of each FaceNet weights.
Used by intake, prepare and validation (train side), the filter, the face-detail pass and export's face-centred
crops (infer side) and the web app alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from headshots.config import WEIGHTS_ENV, Config, FaceConfig, FilterConfig, weights_source
from headshots.errors import ConfigError, HeadshotsError, WeightsError, first_line

NAMED_WEIGHTS = ("casia-webface", "vggface2")
EMBED_SIZE = 160  # FaceNet input side
DETECT_BATCH = 8  # images per MTCNN batch
# The smallest face MTCNN looks for, px. An image narrower than this holds none, and MTCNN fails on it (its image
# pyramid comes out empty: "torch.cat(): expected a non-empty list"), so it is not asked.
MTCNN_MIN_FACE = 20
DOUBT_THRESHOLDS = (0.5, 0.5, 0.5)  # MTCNN's three stage thresholds for `doubted_faces` (its defaults: 0.6, 0.7, 0.7)
# Subject score: how much distance from the photo's centre discounts a face's size (`subject_score`);
# 0.5-0.7 made no error on the labelled in-the-wild photos of docs/face_similarity.md, 0.6 is their middle.
CENTER_WEIGHT = 0.6
CALIBRATION = Path(__file__).with_name("face_calibration.json")  # similarity thresholds per weights


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the full-size image."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    confidence: float
    landmarks: tuple[tuple[float, float], ...]  # eyes, nose, mouth corners (MTCNN order)

    @property
    def side(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(min(x2 - x1, y2 - y1))

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    def box_fractions(self, size: tuple[int, int]) -> list[float]:
        """The box as x1, y1, x2, y2 in 0..1 of an image of `size` (width, height): how the person's files give a
        face's place in a photo, valid whatever size the photo is decoded at to show it."""
        width, height = size
        return [round(float(v) / s, 4) for v, s in zip(self.box, (width, height, width, height))]


def subject_score(face: Face, size: tuple[int, int]) -> float:
    """How much a face looks like the photo's subject: its side, discounted by its distance from the photo's
    centre, side x (1 - CENTER_WEIGHT x distance / half the diagonal): a face in a corner counts 40% of its size.

    Size and centrality are weighed together in face units. Size first (centrality only breaking ties) lets a
    larger face at the edge (a friend's shoulder, a poster) replace the centred person; facenet-pytorch's
    `center_weighted_size` (area - 2 x squared offset, in pixels²) goes wrong the other way: in full- or
    half-body photos a tiny face (a bystander, a picture, a printed face) near the centre beats the person at
    the top. Measured on labelled in-the-wild photos: docs/face_similarity.md."""
    distance = float(np.hypot(face.center[0] - size[0] / 2, face.center[1] - size[1] / 2))
    return face.side * (1.0 - CENTER_WEIGHT * distance / (float(np.hypot(*size)) / 2))


def by_subject(faces: list[Face], size: tuple[int, int]) -> list[Face]:
    """Most likely subject first (`subject_score`)."""
    return sorted(faces, key=lambda f: -subject_score(f, size))


def face_detail(image: Image.Image, face: Face) -> float:
    """Coarse sharpness of a face (headshots.quality), to tell a blurred background bystander from a rival."""
    from headshots.quality import coarse_detail, face_crop  # quality builds on Face: imported here, not at the top

    return coarse_detail(face_crop(image, face))


def competes(subject: Face, other: Face, image: Image.Image, cfg: FaceConfig) -> bool:
    """Whether another face competes with the subject: comparable size (`face.rival_size`), close enough to
    share the subject's training crop (`face.rival_distance`, centre to centre in subject face sides) and
    about as sharp (`face.rival_detail`). Small, far or blurred bystanders do not make a photo "several
    faces"; a comparable face beside the subject does (it would be cropped, captioned and learnt with it)."""
    if other.side < cfg.rival_size * subject.side:
        return False
    distance = float(np.hypot(other.center[0] - subject.center[0], other.center[1] - subject.center[1]))
    if distance > cfg.rival_distance * subject.side:
        return False
    return face_detail(image, other) >= cfg.rival_detail * face_detail(image, subject)


@dataclass
class Detection:
    """What a photo holds: the subject's face (if usable) and why not otherwise."""

    faces: list[Face] = field(default_factory=list)  # confident faces, subject first
    subject: Face | None = None
    problem: str | None = None  # "no_face" | "several_faces" | "face_too_small"
    # Found by MTCNN but below `face.min_confidence`, most likely subject first. Never used as a face; they let
    # the intake say why a face went unseen (sunglasses or a hand over the eyes make MTCNN doubt a real face).
    unsure: list[Face] = field(default_factory=list)
    rivals: list[Face] = field(default_factory=list)  # "several_faces": the faces that compete with the subject

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict:
        """Plain data (floats kept exactly), for results stored on disk (infer/score.py's measurements)."""
        faces = [[list(f.box), f.confidence, [list(p) for p in f.landmarks]] for f in self.faces]
        unsure = [[list(f.box), f.confidence, [list(p) for p in f.landmarks]] for f in self.unsure]
        return {"faces": faces, "subject": None if self.subject is None else self.faces.index(self.subject),
                "problem": self.problem, "unsure": unsure, "rivals": [self.faces.index(f) for f in self.rivals]}

    @classmethod
    def from_json(cls, data: dict) -> Detection:
        def face(row: list) -> Face:
            box, confidence, landmarks = row
            return Face(tuple(box), confidence, tuple(tuple(p) for p in landmarks))

        faces = [face(row) for row in data["faces"]]
        subject = None if data["subject"] is None else faces[data["subject"]]
        return cls(faces, subject, data["problem"], [face(row) for row in data["unsure"]],
                   [faces[i] for i in data.get("rivals", [])])  # stored before rivals were: none


def resolve_device(name: str) -> torch.device:
    """The torch device `device=` names (auto: a CUDA GPU when there is one); a GPU this machine does not have is
    refused in words, not by torch's driver error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        found = torch.cuda.device_count()
        raise ConfigError(f"device={name}, but torch finds {found or 'no'} CUDA GPU{'s' if found != 1 else ''} here.",
                          "Use device=auto (a GPU when there is one, else the CPU) or device=cpu, or a GPU this "
                          "machine has (check nvidia-smi and that torch was installed with CUDA).")
    return device


class FaceAnalyzer:
    """MTCNN + FaceNet, loaded once and reused for every photo."""

    def __init__(self, cfg: FaceConfig, device: str | torch.device = "cpu", with_embedder: bool = True) -> None:
        from facenet_pytorch import MTCNN  # imported lazily: heavy, and only this module needs it

        self.cfg = cfg
        self.device = torch.device(device) if isinstance(device, str) else device
        self.detector = MTCNN(keep_all=True, device=self.device, min_face_size=MTCNN_MIN_FACE, post_process=True)
        # a second, more credulous detector, asked only when the first found no face (see `doubted_faces`)
        self.doubting_detector = MTCNN(keep_all=True, device=self.device, min_face_size=MTCNN_MIN_FACE,
                                       thresholds=list(DOUBT_THRESHOLDS))
        self.embedder = load_embedder(cfg.weights, self.device) if with_embedder else None

    @classmethod
    def for_config(cls, cfg: Config, with_embedder: bool = True) -> FaceAnalyzer:
        """The analyzer a command's settings ask for: `face` settings, on `device` ("auto": the GPU if there is one)."""
        return cls(cfg.face, resolve_device(cfg.device), with_embedder)

    # -- detection ----------------------------------------------------------------------------
    def detect(self, image: Image.Image, max_side: int | None = None) -> Detection:
        """Find faces, choose the subject deliberately (`subject_score`), judge usability (`judge`).

        Detection runs on a copy at most `max_side` (default `face.detect_max_side`) pixels long:
        MTCNN's cost grows with the pixel count, and a selfie's face is large.
        """
        return self._judge(image, self._run(self.detector, image, max_side))

    def doubted_faces(self, image: Image.Image, detection: Detection, max_side: int | None = None) -> list[Face]:
        """For a photo where `detect` found no face: the faces MTCNN would not vouch for, most likely subject
        first: `detection.unsure`, else those of a second pass at DOUBT_THRESHOLDS. Never a face to train on;
        they let the intake say what hid a face that was there (sunglasses or a hand over the eyes cost MTCNN's
        later stages their confidence). The second pass is paid only by photos without a face."""
        if detection.unsure or detection.faces:
            return detection.unsure
        return by_subject(self._run(self.doubting_detector, image, max_side), image.size)

    def detect_batch(self, images: Sequence[Image.Image], max_side: int | None = None) -> list[Detection]:
        """`detect` for many photos: same-size images go through MTCNN as one batch, 1.9x the throughput
        on a CPU for 1024 px outputs (docs/benchmarks.md, Scoring). Same subject choice and verdicts."""
        detections: list[Detection | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.size, []).append(index)
        for (width, height), indices in by_size.items():
            scale = min(1.0, (max_side or self.cfg.detect_max_side) / max(width, height))
            size = (round(width * scale), round(height * scale))
            if min(size) < MTCNN_MIN_FACE:
                for i in indices:
                    detections[i] = self._judge(images[i], [])
                continue
            small = [images[i] if scale == 1.0 else images[i].resize(size, Image.BILINEAR) for i in indices]
            boxes, probs, points = self.detector.detect(small, landmarks=True)
            for i, b, p, lm in zip(indices, boxes, probs, points):
                detections[i] = self._judge(images[i], self._faces(b, p, lm, scale))
        return detections  # type: ignore[return-value]

    def _run(self, detector, image: Image.Image, max_side: int | None) -> list[Face]:
        """Every face `detector` (one of this analyzer's MTCNNs) finds on a copy at most `max_side` (default
        `face.detect_max_side`) px long."""
        scale = min(1.0, (max_side or self.cfg.detect_max_side) / max(image.size))
        small = image if scale == 1.0 else image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        if min(small.size) < MTCNN_MIN_FACE:
            return []
        boxes, probs, points = detector.detect(small, landmarks=True)
        return self._faces(boxes, probs, points, scale)

    def _faces(self, boxes, probs, points, scale: float) -> list[Face]:
        """MTCNN output of one image (detection-size coordinates) -> every face at full size."""
        if boxes is None:
            return []
        return [
            Face(tuple(float(v) / scale for v in b), float(p), tuple((float(x) / scale, float(y) / scale) for x, y in lm))
            for b, p, lm in zip(np.asarray(boxes, dtype=float), np.asarray(probs, dtype=float), np.asarray(points, dtype=float))
        ]

    def _judge(self, image: Image.Image, faces: list[Face]) -> Detection:
        """`judge` on the confident faces; the doubtful ones ride along as `unsure`."""
        detection = judge(image, [f for f in faces if f.confidence >= self.cfg.min_confidence], self.cfg)
        unsure = [f for f in faces if f.confidence < self.cfg.min_confidence]
        detection.unsure = by_subject(unsure, image.size)
        return detection

    # -- embeddings ---------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image], faces: Sequence[Face]) -> torch.Tensor:
        """L2-normalised 512-d FaceNet embeddings, one per (image, face) pair, batched. Crops keep
        `face.crop_margin` pixels (of the 160 px crop) of context around the box, as FaceNet was trained."""
        if self.embedder is None:
            raise RuntimeError("FaceAnalyzer was built without an embedder")
        if not faces:
            return torch.empty(0, 512)
        from facenet_pytorch import fixed_image_standardization
        from facenet_pytorch.models.utils.detect_face import extract_face

        margin = self.cfg.crop_margin
        crops = torch.stack(
            [fixed_image_standardization(extract_face(img, np.asarray(f.box), EMBED_SIZE, margin)) for img, f in zip(images, faces)]
        )
        return self.embedder(crops.to(self.device)).float().cpu()

    # -- many images at once (generated outputs, validation samples) ---------------------------
    def detect_many(self, images: Sequence[Image.Image]) -> list[Detection]:
        """Detection in batches of DETECT_BATCH: ~2x faster than one by one on a CPU, bounded memory."""
        batches = (images[start : start + DETECT_BATCH] for start in range(0, len(images), DETECT_BATCH))
        return [detection for batch in batches for detection in self.detect_batch(batch)]

    def similarity_rows(self, images: Sequence[Image.Image], detections: Sequence[Detection],
                        references: torch.Tensor) -> list[torch.Tensor | None]:
        """Similarities of each image's subject to every reference (None without a face), one embed batch."""
        found = [i for i, d in enumerate(detections) if d.subject is not None]
        embeddings = self.embed([images[i] for i in found], [detections[i].subject for i in found])
        rows: list[torch.Tensor | None] = [None] * len(images)
        for i, row in zip(found, cosine_similarity(embeddings, references) if found else []):
            rows[i] = row
        return rows

    # -- the similarity bar ---------------------------------------------------------------------
    def similarity_threshold(self, cfg: FilterConfig) -> float:
        """The global similarity floor: `filter.threshold` when set, else the calibrated threshold of the
        weights in use at `face.crop_margin` (headshots/face_calibration.json). A threshold is a fact about
        one network and one crop: an unmeasured pairing is an error, not a guess."""
        if cfg.threshold is not None:
            return cfg.threshold
        return calibration_for(weights_source(self.cfg.weights), self.cfg.crop_margin).threshold


def judge(image: Image.Image, faces: list[Face], cfg: FaceConfig) -> Detection:
    """Confident faces of one photo -> the subject (highest `subject_score`, first in `faces`) and the verdict:
    "several_faces" only when another face `competes` with the subject, else "face_too_small" when it is."""
    if not faces:
        return Detection(problem="no_face")
    faces = by_subject(faces, image.size)
    detection = Detection(faces=faces, subject=faces[0])
    detection.rivals = [other for other in faces[1:] if competes(faces[0], other, image, cfg)]
    if detection.rivals:
        detection.problem = "several_faces"
    elif faces[0].side < cfg.min_face_px:
        detection.problem = "face_too_small"
    return detection


def cosine_similarity(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) cosine similarities (inputs need not be normalised)."""
    a = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    b = torch.nn.functional.normalize(references.float(), dim=-1)
    return a @ b.T


def embedder_identity(cfg: FaceConfig) -> str:
    """Which embeddings these settings make: the weights (a file by its sha256, a facenet-pytorch name by name) and
    the crop margin. Prepare writes it beside the person's reference embeddings; a likeness is only a likeness
    between embeddings of one identity (another crop margin alone lowers a same-person similarity by ~0.03, other
    weights make it meaningless)."""
    source = weights_source(cfg.weights)
    path = Path(source)
    if path.is_file():
        stat = path.stat()
        source = f"sha256:{file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)}"
    return json.dumps({"weights": source, "crop_margin": cfg.crop_margin}, sort_keys=True)


REFERENCE_EMBEDDER = "embedder"  # reference.safetensors' metadata key for `embedder_identity`


def load_references(path: Path, cfg: FaceConfig, prepare_command: str) -> torch.Tensor:
    """The person's reference embeddings, refused when made by another embedder than `cfg` makes now (a file from
    before the identity was recorded is taken as it is)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as stored:
            made, references = (stored.metadata() or {}).get(REFERENCE_EMBEDDER), stored.get_tensor("embeddings")
    except (SafetensorError, OSError) as exc:  # cut short or damaged: safetensors' error was a traceback
        raise HeadshotsError(f"The reference faces of the photos ({path}) cannot be read ({exc}): the file is cut short "
                             "or damaged.", f"Prepare the photos again: {prepare_command}") from exc
    if made is not None and made != (now := embedder_identity(cfg)):
        raise ConfigError(f"The reference embeddings of the photos ({path}) were made with other face settings "
                          f"({made}) than are in use now ({now}): every likeness measured against them would be wrong.",
                          f"Prepare the photos again with the face weights and face.crop_margin you mean to use: {prepare_command}")
    return references


@dataclass(frozen=True)
class Calibration:
    """One measured similarity threshold: for these weights and crop margin, pairs of different people
    score at or above `threshold` at rate `far`, pairs of the same person at rate `tar` (on `benchmark`)."""

    name: str
    sha256: str | None  # of the file measured; None when measured through the facenet-pytorch name only
    crop_margin: int
    threshold: float
    far: float
    tar: float
    benchmark: str
    command: str
    note: str  # what the record matches, and what it does not claim


def load_calibrations(path: Path = CALIBRATION) -> list[Calibration]:
    return [Calibration(**entry) for entry in json.loads(path.read_text())["calibrations"]]


@lru_cache(maxsize=8)
def file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file; size and mtime are part of the cache key so a replaced file is re-hashed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def calibration_for(source: str, crop_margin: int) -> Calibration:
    """The calibration record of a weights source at a crop margin. A facenet-pytorch name matches the
    record of that name; a file matches by its sha256 only (a file is not what its name says it is)."""
    if source in NAMED_WEIGHTS:
        found = [c for c in load_calibrations() if c.name == source]
        what = f"the facenet-pytorch weights {source!r}"
    else:
        path = Path(source).expanduser()
        stat = path.stat()
        sha = file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)
        found = [c for c in load_calibrations() if c.sha256 == sha]
        what = f"the FaceNet weights file {path} (sha256 {sha[:12]}...)"
    match = [c for c in found if c.crop_margin == crop_margin]
    if match:
        return match[0]
    measured = f" (measured only at face.crop_margin {', '.join(str(c.crop_margin) for c in found)})" if found else ""
    raise WeightsError(
        f"No calibrated similarity threshold for {what} at face.crop_margin={crop_margin}{measured}.",
        "Measure one: python scripts/face_measure.py ... then python scripts/face_similarity_eval.py --measured FILE "
        "--write-calibration NAME (docs/face_similarity.md), or set filter.threshold to a value you measured; "
        f"calibrated weights: {', '.join(sorted({c.name for c in load_calibrations()}))}.",
    )


def load_embedder(weights: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """FaceNet InceptionResnetV1 from a named pretrained set (downloaded at first use) or a local file.

    The HEADSHOTS_FACE_WEIGHTS environment variable, when set, replaces the default `face.weights` (weights_source).
    """
    from facenet_pytorch import InceptionResnetV1

    source = weights_source(weights)
    fix = (
        f"Set config key `face.weights` or the {WEIGHTS_ENV} environment variable to a local FaceNet "
        f"state_dict file (facenet-pytorch format), or to one of {', '.join(NAMED_WEIGHTS)} with internet access."
    )
    if source in NAMED_WEIGHTS:
        try:
            model = InceptionResnetV1(pretrained=source)
        except Exception as exc:  # network errors, partial downloads, HTTP errors
            raise WeightsError(f"Could not download the FaceNet weights {source!r}: {exc}", fix) from exc
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsError(f"FaceNet weights file {path} does not exist.", fix)
        try:  # tensors only: a pickle of anything else could run code when loaded
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's own message goes on to suggest weights_only=False: not for a file of unknown origin
            raise WeightsError(f"FaceNet weights file {path} could not be loaded: it is not a PyTorch file of tensors "
                               f"({first_line(exc).split('. ')[0]}).", fix) from exc
        try:
            model = InceptionResnetV1(pretrained=None)
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
        except (AttributeError, RuntimeError) as exc:  # not a dict, or other layers / shapes
            raise WeightsError(f"FaceNet weights file {path} could not be loaded: it does not hold FaceNet "
                               f"(InceptionResnetV1) weights ({first_line(exc)}).", fix) from exc
    return model.eval().to(device)
