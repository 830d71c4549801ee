"""Scoring again as a person's images pile up: the whole filter stage (infer.score.score) over a review of N
generated images at 1024x1024, cold, then after a round of 8 more joined, then after 4 were deleted.

Scoring judges the whole set every time (ranks and near-duplicates are relative to it) but measures (decodes,
detects, embeds) only images it has not measured before (samples/faces.json). For the comparison, the same two later
scorings are also timed with that file removed first, as every scoring ran before it existed. The "generated"
images are real photos of the person (Georgia Tech s01) and of others, fitted to 1024x1024; the person is
prepared from 5 of their photos first, at SDXL's 1024 px (not timed: the glasses check reads those crops). Writes "## Scoring again: a new round, a deletion" in
docs/benchmarks.md.

    .venv/bin/python scripts/bench_rescore.py [--faces ../shared/faces] [--images 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script
from bench_review import write_images

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Scoring again: a new round, a deletion"
NEW_ROUND, DELETED = 8, 4


def manifest_entries(faces: Path, samples: Path, first: int, count: int) -> list[dict]:
    """bench_review's "generated" images, with the manifest entries scoring reads."""
    names = write_images(faces, samples, first, count)
    return [{"file": name, "style": "linkedin", "seed": k} for k, name in enumerate(names, start=first)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    os.environ.setdefault("HEADSHOTS_FACE_WEIGHTS", str(REPO.parent / "shared/models/facenet/casia-webface-features.pt"))

    import torch

    from headshots.config import load_config
    from headshots.faces import FaceAnalyzer
    from headshots.workspace import Workspace
    from infer.score import FACES, score
    from train.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("bench", "tiny", overrides=[f"paths.data_root={tmp}/data", f"paths.outputs_root={tmp}/out",
                                                      "wandb.mode=disabled", "model.resolution=1024"])
        ws = Workspace.from_config(cfg)
        ws.selfies.mkdir(parents=True)
        for photo in sorted((args.faces / "georgia-tech" / "s01").glob("*.jpg"))[:5]:
            shutil.copy(photo, ws.selfies)
        analyzer = FaceAnalyzer(cfg.face)
        prepare(cfg, analyzer)
        samples = ws.samples_dir(cfg.run)
        samples.mkdir(parents=True)

        def scored(entries: list[dict], fresh: bool) -> tuple[float, dict]:
            """Seconds, and scores.json."""
            (samples / "manifest.json").write_text(json.dumps({"images": entries}))
            if fresh:
                (samples / FACES).unlink(missing_ok=True)
            started = time.perf_counter()
            score(cfg, analyzer)
            return time.perf_counter() - started, json.loads((samples / "scores.json").read_text())

        def kept_then_fresh(entries: list[dict]) -> tuple[float, float]:
            """Scored with the measurements kept, then from scratch: the same verdicts, or this is no speed-up."""
            (kept, from_store), (fresh, from_scratch) = scored(entries, fresh=False), scored(entries, fresh=True)
            if from_store != from_scratch:
                raise SystemExit("scoring with kept measurements judged otherwise than from scratch")
            return kept, fresh

        entries = manifest_entries(args.faces, samples, 0, args.images)
        cold, _ = scored(entries, fresh=True)
        grown = entries + manifest_entries(args.faces, samples, args.images, NEW_ROUND)
        round_kept, round_fresh = kept_then_fresh(grown)
        pruned = grown[DELETED:]
        for entry in grown[:DELETED]:
            (samples / entry["file"]).unlink()
        delete_kept, delete_fresh = kept_then_fresh(pruned)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        f"`scripts/bench_rescore.py` on {time.strftime('%Y-%m-%d')}: the filter stage (`infer.score.score`: measure, every",
        f"check, duplicates, ranks, scores.json) over {args.images} images at 1024x1024 (real photos), the person's 5 selfies",
        f"prepared at 1024 px; {os.cpu_count()} CPU cores,",
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {platform.processor() or platform.machine()},",
        f"load average {load:.1f} when measured; one run each.",
        "",
        "| scoring | measurements kept (s) | everything measured again (s) | ratio |",
        "|---|---|---|---|",
        f"| first, {args.images} images | - | {cold:.2f} | |",
        f"| after a round of {NEW_ROUND} more ({args.images + NEW_ROUND}) | {round_kept:.2f} | {round_fresh:.2f} | {round_fresh / round_kept:.1f}x |",
        f"| after {DELETED} were deleted ({args.images + NEW_ROUND - DELETED}) | {delete_kept:.2f} | {delete_fresh:.2f} | {delete_fresh / delete_kept:.1f}x |",
        "",
        "Measurements (detection, similarities, size, glasses score, duplicate thumbnail) are kept per file version in",
        "`samples/faces.json`, and the selfie crops' glasses scores while the prepared rows are the same (until",
        "2026-12-06 each scoring detected the faces in every crop again: about 0.2 s a crop here), so an image measured",
        "before is not even decoded; what remains each time is judging the",
        "checks, duplicates and ranks over the whole set. Each kept-measurement scoring gave the very scores.json of",
        "scoring from scratch (the script stops otherwise).",
        "",
    ])
    write_section(args.out, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
