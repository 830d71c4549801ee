"""Heavy half of the face-verification evaluation: detect and embed every photo once, keep the raw results.

Subject rules, bystander rules, crop margins and thresholds are then compared on this file by
`scripts/face_similarity_eval.py` in seconds, so a rule change never re-runs FaceNet. Nothing here
depends on a rule: every face MTCNN finds above `MIN_PROBABILITY` is kept with its box, landmarks,
probability and detail (sharpness), and embedded at every margin of `--margins`.

Plain facenet-pytorch runs beside it on the verification photos, as its own examples use it:
`MTCNN(image_size=160, margin=14, selection_method='center_weighted_size')`, then the same FaceNet.

Datasets (public; fetch them yourself, they are not part of this repository):
- CFP, Celebrities in Frontal-Profile (Sengupta et al., WACV 2016; http://www.cfpw.io/): the
  `cfp-dataset/` folder as distributed (`Data/Images/<id>/frontal/<k>.jpg`, `Protocol/`). A copy is in the
  GitHub repository zhangjunh/DR-GAN-by-pytorch under `cfp-dataset/` (its `Data/Images` has an extra
  `train/` / `test/` level: move the identity folders up one level).
- In-the-wild photos: a folder of identity folders of uncropped photos, e.g. 299 CelebA identities
  (Liu et al., ICCV 2015) with their original photos, from the GitHub repository
  matush97/faceRecognition (`Celeb/*.jpg`, identities in `identity_CelebA.txt`): one folder per identity.

    OMP_NUM_THREADS=1 python scripts/face_measure.py --cfp DIR --wild DIR --out FILE.pt [--per-identity 6]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from headshots.config import FaceConfig
from headshots.faces import EMBED_SIZE, Face, FaceAnalyzer
from headshots.images import load_rgb
from headshots.quality import coarse_detail, face_crop

MIN_PROBABILITY = 0.5  # keep weak detections too, so min_confidence can be studied afterwards
EMBED_CONFIDENCE = 0.9  # ... but embed only faces a rule could ever choose
BATCH = 32


def cfp_frontal(root: Path) -> list[Path]:
    return sorted((root / "Data" / "Images").glob("*/frontal/*.jpg"))


def wild_photos(root: Path, per_identity: int) -> list[Path]:
    return [p for folder in sorted(d for d in root.iterdir() if d.is_dir())
            for p in sorted(q for q in folder.iterdir() if q.suffix.lower() in {".jpg", ".jpeg", ".png"})[:per_identity]]


class Embedder:
    """FaceNet on crops, batched, each distinct crop embedded once (plain and project crops often coincide)."""

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.pending: dict[str, torch.Tensor] = {}
        self.done: dict[str, torch.Tensor] = {}

    def add(self, crop: torch.Tensor) -> str:
        key = hashlib.sha1(crop.numpy().tobytes()).hexdigest()
        if key not in self.done:
            self.pending[key] = crop
        if len(self.pending) >= BATCH:
            self.flush()
        return key

    @torch.no_grad()
    def flush(self) -> None:
        if self.pending:
            keys = list(self.pending)
            out = self.analyzer.embedder(torch.stack([self.pending[k] for k in keys])).float()
            self.done.update(zip(keys, torch.nn.functional.normalize(out, dim=-1)))
            self.pending.clear()


def measure(paths: list[Path], root: Path, analyzer: FaceAnalyzer, embedder: Embedder, margins: list[int],
            plain=None, max_side: int | None = None) -> dict:
    """Faces of every photo, embedded at every margin. With `plain` (verification photos), the library's own
    detection, selection and extraction (`MTCNN.detect`, `select_boxes`, `extract`, as `MTCNN.forward` calls
    them) make the plain crop; for photos no larger than `face.detect_max_side` the project's MTCNN (same
    network and settings) would see the same pixels, so its faces come from the same detections.
    Otherwise `FaceAnalyzer.detect` runs at `max_side`."""
    from facenet_pytorch import fixed_image_standardization
    from facenet_pytorch.models.utils.detect_face import extract_face

    records, start = {}, time.perf_counter()
    for n, path in enumerate(paths):
        image = load_rgb(path)
        if plain is not None:
            boxes, probs, points = plain.detect(image, landmarks=True)
        if plain is not None and max(image.size) <= analyzer.cfg.detect_max_side:
            faces = [] if boxes is None else [
                Face(tuple(float(v) for v in b), float(p), tuple((float(x), float(y)) for x, y in lm))
                for b, p, lm in zip(boxes, probs, points) if p >= MIN_PROBABILITY]
        else:
            faces = analyzer.detect(image, max_side=max_side).faces
        measured = []
        for face in faces:
            coarse = coarse_detail(face_crop(image, face))
            keys = {m: embedder.add(fixed_image_standardization(extract_face(image, np.asarray(face.box), EMBED_SIZE, m)))
                    for m in margins} if face.confidence >= EMBED_CONFIDENCE else {}
            measured.append({"box": face.box, "confidence": face.confidence, "landmarks": face.landmarks, "detail": coarse, "keys": keys})
        record = {"size": image.size, "faces": measured}
        if plain is not None:
            box, _, _ = plain.select_boxes(boxes, probs, points, image, method=plain.selection_method)
            record["plain"] = embedder.add(plain.extract(image, box, None)) if box is not None else None
        records[str(path.relative_to(root))] = record
        if n % 250 == 0:
            print(f"{n}/{len(paths)} {time.perf_counter() - start:.0f} s", flush=True)
    embedder.flush()
    for record in records.values():
        for face in record["faces"]:
            face["embeddings"] = {m: embedder.done[k] for m, k in face.pop("keys").items()}
        if "plain" in record:
            record["plain"] = embedder.done[record["plain"]] if record["plain"] else None
    embedder.done.clear()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfp", type=Path, required=True, help="the cfp-dataset folder")
    parser.add_argument("--wild", type=Path, required=True, help="folder of identity folders of uncropped photos")
    parser.add_argument("--weights", required=True, help="FaceNet weights: a state_dict file or a facenet-pytorch name")
    parser.add_argument("--margins", default="0,14,32", help="embedding crop margins to measure, pixels of the 160 px crop")
    parser.add_argument("--wild-margins", default="14", help="the same for the in-the-wild photos (subject labels, bystanders)")
    parser.add_argument("--wild-max-side", type=int, default=480, help="detection size for them (intake's, where subject choice matters)")
    parser.add_argument("--per-identity", type=int, default=6, help="in-the-wild photos per identity (in name order)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from facenet_pytorch import MTCNN

    margins = [int(m) for m in args.margins.split(",")]
    analyzer = FaceAnalyzer(FaceConfig(weights=args.weights, min_confidence=MIN_PROBABILITY))
    embedder = Embedder(analyzer)
    plain = MTCNN(image_size=EMBED_SIZE, margin=14, selection_method="center_weighted_size", post_process=True)
    result = {"weights": args.weights, "margins": margins, "per_identity": args.per_identity}
    result["cfp"] = measure(cfp_frontal(args.cfp), args.cfp, analyzer, embedder, margins, plain)
    torch.save(result, args.out)
    result["wild"] = measure(wild_photos(args.wild, args.per_identity), args.wild, analyzer, embedder,
                             [int(m) for m in args.wild_margins.split(",")], max_side=args.wild_max_side)
    torch.save(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
