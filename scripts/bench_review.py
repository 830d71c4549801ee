"""Web app: drawing a person's review (service.views.review_html) as rounds of images pile up.

The review is drawn again after every job, every deletion and every page load, with each image embedded as a
400 px JPEG (no file path ever reaches the page). Here a review of N generated images at SDXL's 1024x1024 (real
faces from ../shared, fitted to the square) is drawn cold, drawn again with nothing changed, and drawn after a
new round of 8 images joined it; each median of --repeats, the cold one with the preview cache emptied first.
Writes "## Web app: drawing the review" in docs/benchmarks.md.

    .venv/bin/python scripts/bench_review.py [--faces ../shared/faces] [--images 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SECTION = "## Web app: drawing the review"
NEW_ROUND = 8


def write_images(faces: Path, samples: Path, first: int, count: int) -> list[str]:
    """`count` "generated" images: real photos fitted to SDXL's 1024x1024, as linkedin-<k>.png from `first` on."""
    photos = sorted(faces.glob("georgia-tech/s*/*.jpg"))
    names = [f"linkedin-{k:02d}.png" for k in range(first, first + count)]
    for k, name in enumerate(names, start=first):
        ImageOps.fit(Image.open(photos[k % len(photos)]).convert("RGB"), (1024, 1024)).save(samples / name)
    return names


def score_rows(names: list[str], first: int) -> list[dict]:
    """scores.json rows for them (every other one kept)."""
    return [{"file": name, "style": "linkedin", "seed": k, "kept": k % 2 == 0, "rank": k // 2 + 1 if k % 2 == 0 else None,
             "similarity": 0.7, "similarity_max": 0.8, "reason": "looks like you", "reasons": [], "source": None,
             "detail": None} for k, name in enumerate(names, start=first)]


def timed(draw) -> tuple[float, int]:
    started = time.perf_counter()
    page = draw()
    return time.perf_counter() - started, len(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    from headshots.config import load_config
    from headshots.workspace import Workspace
    from service import views

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("bench", "tiny", overrides=[f"paths.data_root={tmp}/data", f"paths.outputs_root={tmp}/out"])
        ws = Workspace.from_config(cfg)
        samples = ws.samples_dir(cfg.run)
        samples.mkdir(parents=True)
        rows = score_rows(write_images(args.faces, samples, 0, args.images), 0)

        def review(rows: list[dict]):
            (samples / "scores.json").write_text(json.dumps({"images": rows, "kept": sum(r["kept"] for r in rows),
                                                             "references": 5, "threshold": 0.6}))
            return lambda: views.review_html(ws, cfg.run)

        cold, warm, grown = [], [], []
        for _ in range(args.repeats):
            views.forget_previews()
            cold.append(timed(review(rows))[0])
            warm.append(timed(review(rows))[0])
        size = timed(review(rows))[1]
        more = rows + score_rows(write_images(args.faces, samples, args.images, NEW_ROUND), args.images)
        for _ in range(args.repeats):
            views.forget_previews()
            timed(review(rows))  # the review before the round, cached
            grown.append(timed(review(more))[0])

    cold_s, warm_s, grown_s = (statistics.median(x) for x in (cold, warm, grown))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        f"`scripts/bench_review.py` on {time.strftime('%Y-%m-%d')}: a review of {args.images} generated images at 1024x1024",
        f"(real faces), each embedded as JPEG previews of 400, 100 and 40 px ({size / 1e6:.1f} MB of page); median of {args.repeats};",
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, load average {load:.1f} when measured.",
        "",
        "| drawn | seconds | vs cold |",
        "|---|---|---|",
        f"| cold (no preview made yet) | {cold_s:.3f} | 1.00x |",
        f"| again, nothing changed | {warm_s:.3f} | {warm_s / cold_s:.3f}x |",
        f"| after a new round of {NEW_ROUND} joined | {grown_s:.3f} | {grown_s / cold_s:.3f}x |",
        "",
        "Previews are made once per version of a file, all three sizes from one decoding (`service.views.previews`, an in-memory cache of",
        f"{views.PREVIEW_CACHE} files, emptied by Delete my data), so only new images cost an encoding.",
        "",
    ])
    write_section(args.out, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
