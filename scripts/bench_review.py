"""Web app: drawing a person's review (service.views.review) as rounds of images pile up.

The review is drawn again after every job, every deletion and every page load, with each image embedded as JPEG
previews (no file path ever reaches the page). Here a review of N generated images at SDXL's 1024x1024 (real faces
from ../shared, fitted to the square; every other one kept) is drawn two ways side by side: everything at once
(every card, the dropped ones unfolded: how the tab drew it before paging) and as the tab draws it now (the first
page of kept cards, dropped ones folded). Each cold (the preview cache emptied first), again with nothing changed,
and after a new round of 8 images joined; medians of --repeats. Writes "## Web app: drawing the review" in
docs/benchmarks.md.

    .venv/bin/python scripts/bench_review.py [--faces ../shared/faces] [--images 192] [--repeats 3]
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
    parser.add_argument("--images", type=int, default=192)
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

        def drawer(rows: list[dict], everything: bool):
            (samples / "scores.json").write_text(json.dumps({"images": rows, "kept": sum(r["kept"] for r in rows),
                                                             "references": 5, "threshold": 0.6}))
            if everything:
                return lambda: views.review(ws, cfg.run, shown=len(rows), dropped_open=True).html
            return lambda: views.review(ws, cfg.run).html

        # the new round ranks first (the worst case for a first page: its images are all on it)
        more = score_rows(write_images(args.faces, samples, args.images, NEW_ROUND), args.images) + rows
        figures = {everything: measure(drawer, rows, more, everything, args.repeats) for everything in (True, False)}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    whole, paged = figures[True], figures[False]
    table = [f"| {label} | {whole[key]:.3f} | {paged[key]:.3f} | {whole[key] / paged[key]:.1f}x |"
             for label, key in (("cold (no preview made yet)", "cold"), ("again, nothing changed", "warm"),
                                (f"after a new round of {NEW_ROUND} joined, ranked first", "grown"))]
    text = "\n".join([
        f"`scripts/bench_review.py` on {time.strftime('%Y-%m-%d')}: a review of {args.images} generated images at 1024x1024",
        f"(real faces, every other one kept), each card embedding JPEG previews of 400, 100 and 40 px; median of {args.repeats};",
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, load average {load:.1f} when measured.",
        f"Everything: every card drawn, the dropped ones unfolded ({whole['size'] / 1e6:.1f} MB of page). First page: what",
        f"the Review tab draws now, the best {views.REVIEW_PAGE} kept cards and the dropped ones folded behind a button",
        f"({paged['size'] / 1e6:.2f} MB; Show more adds {views.REVIEW_PAGE} cards to each list on view).",
        "",
        "| drawn | everything (s) | first page (s) | ratio |",
        "|---|---|---|---|",
        *table,
        f"| page size (MB) | {whole['size'] / 1e6:.2f} | {paged['size'] / 1e6:.2f} | {whole['size'] / paged['size']:.1f}x |",
        "",
        "Previews are made once per version of a file, all three sizes from one decoding (`service.views.previews`, an in-memory cache of",
        f"{views.PREVIEW_CACHE} files, emptied by Delete my data), so only new images cost an encoding.",
        "",
    ])
    write_section(args.out, SECTION, text)
    print(text)


def measure(drawer, rows: list[dict], more: list[dict], everything: bool, repeats: int) -> dict[str, float]:
    """Median seconds to draw the review cold, again, and after a round joined; and the page's size in bytes."""
    from service import views

    cold, warm, grown = [], [], []
    for _ in range(repeats):
        views.forget_previews()
        cold.append(timed(drawer(rows, everything))[0])
        warm.append(timed(drawer(rows, everything))[0])
        views.forget_previews()
        timed(drawer(rows, everything))  # the review before the round, cached
        grown.append(timed(drawer(more, everything))[0])
    size = timed(drawer(rows, everything))[1]
    return {"cold": statistics.median(cold), "warm": statistics.median(warm), "grown": statistics.median(grown), "size": size}


if __name__ == "__main__":
    main()
