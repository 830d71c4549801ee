"""Filter stage: keep only outputs that look like the person, ranked by face similarity.

Reads   outputs/<user>/<run>/samples/manifest.json + images, data/users/<user>/reference.safetensors
Writes  outputs/<user>/<run>/samples/scores.json   per image: style, seed, face_found, similarity
        (mean cosine similarity to all reference photos), similarity_max, kept, reason, rank
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from safetensors.torch import load_file

from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.faces import FaceAnalyzer, cosine_similarity, resolve_device
from headshots.images import load_rgb
from headshots.logs import get_logger
from headshots.workspace import Workspace
from infer.generate import MANIFEST

log = get_logger(__name__)
SCORES = "scores.json"


@dataclass
class Score:
    file: str
    style: str
    seed: int
    face_found: bool
    similarity: Optional[float]  # mean over the reference photos
    similarity_max: Optional[float]
    kept: bool
    reason: str
    rank: Optional[int] = None  # 1 = best; None when dropped


def load_references(workspace: Workspace) -> torch.Tensor:
    return load_file(str(workspace.require_reference()))["embeddings"]


def score(cfg: Config, analyzer: Optional[FaceAnalyzer] = None) -> list[Score]:
    workspace = Workspace.from_config(cfg)
    samples_dir = workspace.samples_dir(cfg.run)
    manifest_path = samples_dir / MANIFEST
    if not manifest_path.is_file():
        raise HeadshotsError(f"No generated images to score in {samples_dir}.", f"Generate some first: make infer USER={cfg.user}")
    manifest = json.loads(manifest_path.read_text())
    references = load_references(workspace)
    analyzer = analyzer or FaceAnalyzer(cfg.face, resolve_device(cfg.device))
    threshold = cfg.filter.threshold

    scores = []
    for item in manifest["images"]:
        image = load_rgb(samples_dir / item["file"])
        detection = analyzer.detect(image)
        base = dict(file=item["file"], style=item["style"], seed=item["seed"])
        if detection.subject is None:
            scores.append(Score(**base, face_found=False, similarity=None, similarity_max=None, kept=False, reason="no face found"))
            continue
        sims = cosine_similarity(analyzer.embed([image], [detection.subject]), references)[0]
        mean, best = round(sims.mean().item(), 4), round(sims.max().item(), 4)
        if detection.problem == "several_faces":
            kept, reason = False, f"{len(detection.faces)} faces in the picture"
        elif mean < threshold:
            kept, reason = False, f"does not look like you (similarity {mean:.2f} < {threshold:.2f})"
        else:
            kept, reason = True, f"looks like you (similarity {mean:.2f})"
        scores.append(Score(**base, face_found=True, similarity=mean, similarity_max=best, kept=kept, reason=reason))

    ranked = sorted((s for s in scores if s.kept), key=lambda s: -s.similarity)
    for position, s in enumerate(ranked, start=1):
        s.rank = position
    scores.sort(key=lambda s: (s.rank is None, s.rank or 0, -(s.similarity or -2)))
    (samples_dir / SCORES).write_text(json.dumps(
        {"threshold": threshold, "references": int(references.shape[0]), "kept": len(ranked), "images": [asdict(s) for s in scores]},
        indent=2,
    ))
    log.info("%d of %d images kept (threshold %.2f) -> %s", len(ranked), len(scores), threshold, samples_dir / SCORES)
    return scores
