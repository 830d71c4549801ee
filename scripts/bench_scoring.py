"""CPU throughput of scoring (MTCNN detection + FaceNet embedding) on 1024x1024 images, one by one
and batched. Writes the "## Scoring" section of docs/benchmarks.md (other sections are kept).

    .venv/bin/python scripts/bench_scoring.py [--images 8] [--rounds 3] [--faces ../shared/faces] [--weights FILE]

The two modes alternate for --rounds rounds and each keeps its fastest round: on a shared machine
other jobs only ever add time, so the minimum is the least noisy estimate.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from _docs import write_section  # scripts/, first on sys.path when run as a script
from PIL import Image, ImageOps

from headshots.config import FaceConfig
from headshots.faces import FaceAnalyzer

REPO = Path(__file__).resolve().parents[1]
SIDE = 1024  # SDXL's output size


def headshot_like(faces: Path, count: int) -> list[Image.Image]:
    """Real photos of different people, cropped and resized to generated-image size."""
    paths = sorted(faces.glob("georgia-tech/s*/*.jpg"))[:: 15 // 3][:count]
    return [ImageOps.fit(Image.open(p).convert("RGB"), (SIDE, SIDE)) for p in paths]


def one_by_one(analyzer: FaceAnalyzer, images: list[Image.Image]) -> tuple[float, float]:
    start = time.perf_counter()
    faces = [analyzer.detect(image).subject for image in images]
    middle = time.perf_counter()
    for image, face in zip(images, faces):
        analyzer.embed([image], [face])
    return middle - start, time.perf_counter() - middle


def batched(analyzer: FaceAnalyzer, images: list[Image.Image]) -> tuple[float, float]:
    start = time.perf_counter()
    faces = [d.subject for d in analyzer.detect_batch(images)]
    middle = time.perf_counter()
    analyzer.embed(images, faces)
    return middle - start, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    shared_weights = REPO.parent / "shared/models/facenet/casia-webface-features.pt"
    parser.add_argument("--weights", default=os.environ.get("HEADSHOTS_FACE_WEIGHTS", str(shared_weights)))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    analyzer = FaceAnalyzer(FaceConfig(weights=args.weights))
    images = headshot_like(args.faces, args.images)
    batched(analyzer, images[:2])  # warm-up: first calls allocate and pick kernels
    modes = {"one by one": one_by_one, "batched": batched}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, mode in modes.items():
            timings[name].append(mode(analyzer, images))
    rows = {name: (min(t[0] for t in runs), min(t[1] for t in runs)) for name, runs in timings.items()}
    n = len(images)
    lines = [
        (f"`scripts/bench_scoring.py` on {time.strftime('%Y-%m-%d')}: {n} real photos fitted to {SIDE}x{SIDE}, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"({os.cpu_count()} cores, shared with other jobs), fastest of {args.rounds} alternating rounds."),
        "",
        "| mode | detect (ms/image) | embed (ms/image) | total (images/s) |",
        "|---|---|---|---|",
    ]
    for name, (detect, embed) in rows.items():
        lines.append(f"| {name} | {detect / n * 1000:.0f} | {embed / n * 1000:.0f} | {n / (detect + embed):.2f} |")
    speedup = sum(rows["one by one"]) / sum(rows["batched"])
    lines += ["", (f"Batched gives {speedup:.2f}x the throughput of one by one. `infer/score.py` detects in batches of "
              "`DETECT_BATCH` (headshots/faces.py) same-size images (`FaceAnalyzer.detect_batch`) and embeds all faces in one call.")]
    write_section(args.out, "## Scoring", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
