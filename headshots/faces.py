"""Face analysis, the one place that knows about faces: MTCNN detection, subject choice,
FaceNet embeddings and similarity. Used by prepare (train side) and the filter (infer side).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from headshots.config import FaceConfig
from headshots.errors import WeightsError

WEIGHTS_ENV = "HEADSHOTS_FACE_WEIGHTS"
NAMED_WEIGHTS = ("vggface2", "casia-webface")
EMBED_SIZE = 160  # FaceNet input side
DETECT_BATCH = 8  # images per MTCNN batch


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


@dataclass
class Detection:
    """What a photo holds: the subject's face (if usable) and why not otherwise."""

    faces: list[Face] = field(default_factory=list)  # confident faces, subject first
    subject: Optional[Face] = None
    problem: Optional[str] = None  # "no_face" | "several_faces" | "face_too_small"

    @property
    def ok(self) -> bool:
        return self.problem is None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class FaceAnalyzer:
    """MTCNN + FaceNet, loaded once and reused for every photo."""

    def __init__(self, cfg: FaceConfig, device: str | torch.device = "cpu", with_embedder: bool = True) -> None:
        from facenet_pytorch import MTCNN  # imported lazily: heavy, and only this module needs it

        self.cfg = cfg
        self.device = torch.device(device) if isinstance(device, str) else device
        self.detector = MTCNN(keep_all=True, device=self.device, min_face_size=20, post_process=True)
        self.embedder = load_embedder(cfg.weights, self.device) if with_embedder else None

    # -- detection ----------------------------------------------------------------------------
    def detect(self, image: Image.Image, max_side: Optional[int] = None) -> Detection:
        """Find faces, choose the subject deliberately (largest, then most central), judge usability.

        Detection runs on a copy at most `max_side` (default `face.detect_max_side`) pixels long:
        MTCNN's cost grows with the pixel count, and a selfie's face is large.
        """
        scale = min(1.0, (max_side or self.cfg.detect_max_side) / max(image.size))
        small = image if scale == 1.0 else image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        boxes, probs, points = self.detector.detect(small, landmarks=True)
        return self._judge(image.size, boxes, probs, points, scale)

    def detect_batch(self, images: Sequence[Image.Image], max_side: Optional[int] = None) -> list[Detection]:
        """`detect` for many photos: same-size images go through MTCNN as one batch, 1.9x the throughput
        on a CPU for 1024 px outputs (docs/benchmarks.md, Scoring). Same subject choice and verdicts."""
        detections: list[Optional[Detection]] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.size, []).append(index)
        for (width, height), indices in by_size.items():
            scale = min(1.0, (max_side or self.cfg.detect_max_side) / max(width, height))
            size = (round(width * scale), round(height * scale))
            small = [images[i] if scale == 1.0 else images[i].resize(size, Image.BILINEAR) for i in indices]
            boxes, probs, points = self.detector.detect(small, landmarks=True)
            for i, b, p, lm in zip(indices, boxes, probs, points):
                detections[i] = self._judge((width, height), b, p, lm, scale)
        return detections  # type: ignore[return-value]

    def _judge(self, size: tuple[int, int], boxes, probs, points, scale: float) -> Detection:
        """MTCNN output of one image (detection-size coordinates) -> confident faces, subject, verdict."""
        if boxes is None:
            return Detection(problem="no_face")
        faces = [
            Face(tuple(float(v) / scale for v in b), float(p), tuple((float(x) / scale, float(y) / scale) for x, y in lm))
            for b, p, lm in zip(np.asarray(boxes, dtype=float), np.asarray(probs, dtype=float), np.asarray(points, dtype=float))
            if p >= self.cfg.min_confidence
        ]
        if not faces:
            return Detection(problem="no_face")
        cx, cy = size[0] / 2, size[1] / 2
        diagonal = float(np.hypot(*size))
        faces.sort(key=lambda f: (-f.side, np.hypot(f.center[0] - cx, f.center[1] - cy) / diagonal))
        detection = Detection(faces=faces, subject=faces[0])
        if any(f.side >= self.cfg.second_face_ratio * faces[0].side for f in faces[1:]):
            detection.problem = "several_faces"
        elif faces[0].side < self.cfg.min_face_px:
            detection.problem = "face_too_small"
        return detection

    # -- embeddings ---------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image], faces: Sequence[Face]) -> torch.Tensor:
        """L2-normalised 512-d FaceNet embeddings, one per (image, face) pair, batched."""
        if self.embedder is None:
            raise RuntimeError("FaceAnalyzer was built without an embedder")
        if not faces:
            return torch.empty(0, 512)
        from facenet_pytorch import fixed_image_standardization
        from facenet_pytorch.models.utils.detect_face import extract_face

        crops = torch.stack(
            [fixed_image_standardization(extract_face(img, np.asarray(f.box), EMBED_SIZE, 0)) for img, f in zip(images, faces)]
        )
        return self.embedder(crops.to(self.device)).float().cpu()

    # -- many images at once (generated outputs, validation samples) ---------------------------
    def detect_many(self, images: Sequence[Image.Image]) -> list[Detection]:
        """Detection in batches of DETECT_BATCH: ~2x faster than one by one on a CPU, bounded memory."""
        batches = (images[start : start + DETECT_BATCH] for start in range(0, len(images), DETECT_BATCH))
        return [detection for batch in batches for detection in self.detect_batch(batch)]

    def similarity_rows(self, images: Sequence[Image.Image], detections: Sequence[Detection],
                        references: torch.Tensor) -> list[Optional[torch.Tensor]]:
        """Similarities of each image's subject to every reference (None without a face), one embed batch."""
        found = [i for i, d in enumerate(detections) if d.subject is not None]
        embeddings = self.embed([images[i] for i in found], [detections[i].subject for i in found])
        rows: list[Optional[torch.Tensor]] = [None] * len(images)
        for i, row in zip(found, cosine_similarity(embeddings, references) if found else []):
            rows[i] = row
        return rows


def cosine_similarity(embeddings: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) cosine similarities (inputs need not be normalised)."""
    a = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    b = torch.nn.functional.normalize(references.float(), dim=-1)
    return a @ b.T


def load_embedder(weights: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """FaceNet InceptionResnetV1 from a named pretrained set (downloaded at first use) or a local file.

    The HEADSHOTS_FACE_WEIGHTS environment variable, when set, wins over the config key `face.weights`.
    """
    from facenet_pytorch import InceptionResnetV1

    source = os.environ.get(WEIGHTS_ENV) or weights
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
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            model = InceptionResnetV1(pretrained=None)
            model.load_state_dict(state)
        except Exception as exc:
            raise WeightsError(f"FaceNet weights file {path} could not be loaded: {exc}", fix) from exc
    return model.eval().to(device)
