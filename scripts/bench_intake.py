"""Speed of the intake quality gate on phone-size photos, models already loaded.

Makes 20 JPEGs of 4000x3000 (real Georgia Tech faces from ../shared, upscaled, with sensor-like
noise; 5 of them mirrored) in a temporary folder, runs the whole intake on them (decode, detect,
every per-photo check, duplicates, identity, reports) on the default photo-checking threads and on one
thread, alternated, and prints photos/s, the ratio, and the one-thread time per check.
Writes the figures to docs/benchmarks.md under "## Intake" (other sections are kept).

    .venv/bin/python scripts/bench_intake.py [--faces ../shared/faces] [--repeats 3] [key=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _docs import write_section  # scripts/, first on sys.path when run as a script
from PIL import Image, ImageOps

from headshots.config import load_config
from headshots.faces import FaceAnalyzer
from headshots.images import load_rgb

REPO = Path(__file__).resolve().parents[1]
SIZE = (4000, 3000)
SECTION = "## Intake"


def face_bench_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options of the benchmarks on ../shared's faces (this one, bench_app.py, bench_threads.py): the faces, the
    FaceNet weights, how many runs, and the page the figures go to."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--weights", default=os.environ.get("HEADSHOTS_FACE_WEIGHTS",
                                                            str(REPO.parent / "shared/models/facenet/casia-webface-features.pt")))
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    return parser


def make_photos(faces: Path, folder: Path, count: int = 20) -> None:
    """Phone-size JPEGs: upscaled real faces plus noise, so that the JPEG is as heavy as a real one."""
    rng = np.random.default_rng(0)
    sources = sorted((faces / "georgia-tech" / "s01").glob("*.jpg"))
    for i in range(count):
        image = load_rgb(sources[i % len(sources)]).resize(SIZE, Image.BICUBIC)
        if i >= len(sources):
            image = ImageOps.mirror(image)
        noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 4, (SIZE[1], SIZE[0], 1)).astype(np.int16)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"IMG_{i:04d}.jpg", quality=90)


def main() -> None:
    parser = face_bench_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. intake.detect_max_side=480")
    args = parser.parse_args()
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = args.weights

    from train.intake import MAX_WORKERS, run_intake

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        selfies = data / "bench" / "selfies"
        selfies.mkdir(parents=True)
        make_photos(args.faces, selfies)
        cfg = load_config("bench", overrides=[f"paths.data_root={data}", f"paths.outputs_root={Path(tmp) / 'outputs'}", *args.overrides])
        analyzer = FaceAnalyzer(cfg.face)
        analyzer.detect(Image.new("RGB", (320, 240)))  # first-call overhead is not part of a photo's cost
        runs: dict[int, list[tuple[float, dict[str, float]]]] = {1: [], 0: []}  # one thread; the default (0)
        for _ in range(args.repeats):  # alternated, so both see the same load
            for workers, times in runs.items():
                timings: dict[str, float] = {}
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    result = run_intake(cfg, analyzer, timings, workers=workers or None)
                times.append((time.perf_counter() - start, timings))
    n = len(result.photos)
    total, _ = sorted(runs[0], key=lambda r: r[0])[len(runs[0]) // 2]  # the median run
    serial, timings = sorted(runs[1], key=lambda r: r[0])[len(runs[1]) // 2]  # its steps add up to its time
    threads = min(MAX_WORKERS, os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"`scripts/bench_intake.py` on {time.strftime('%Y-%m-%d')}: {n} JPEGs of {SIZE[0]}x{SIZE[1]} (upscaled real faces + noise),",
        f"whole intake after the models are loaded, median of {args.repeats} runs; {os.cpu_count()} CPU cores,",
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {platform.processor() or platform.machine()},",
        f"load average {load:.1f} when measured (other jobs share these cores); overrides: {' '.join(args.overrides) or 'none'}.",
        "",
        (f"**{total:.2f} s for {n} photos = {n / total:.1f} photos/s** with {threads} photo-checking threads (target: {n} photos "
         f"in < 3 s); runs: {', '.join(f'{r[0]:.2f} s' for r in runs[0])}. One thread, alternated with those runs: "
         f"{serial:.2f} s ({serial / total:.2f}x as long); runs: {', '.join(f'{r[0]:.2f} s' for r in runs[1])}."),
        "",
        "Where the one-thread run spends its time:",
        "",
        "| step | total (s) | per photo (ms) |",
        "|---|---|---|",
    ]
    for name, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.3f} | {1000 * seconds / n:.1f} |")
    rest = serial - sum(timings.values())
    lines += [f"| reports (json, html, table) and bookkeeping | {rest:.3f} | {1000 * rest / n:.1f} |", ""]
    text = "\n".join(lines) + "\n"
    write_section(args.out, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
