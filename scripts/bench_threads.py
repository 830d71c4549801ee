"""The web app's own face work with torch on 2 threads per operation and on 1, idle and beside a busy process.

The app never trains in its own process (jobs are subprocesses), but it checks uploaded photos, crops exports and
scores again in requests, sharing the cores with whatever job runs. torch's thread pool waits for every thread of
an operation; beside a process that keeps a core busy, one of them is often not scheduled, and on 2 cores an
operation then takes several times as long. Each setting runs in a process of its own (torch sets its threads once
per process): intake of 12 phone-size photos (as scripts/bench_intake.py makes them) and detection plus embedding
of 6 images at 1024x768 (what scoring and export crops do), best of `--repeats`, idle and beside a process running
`while True: pass`: whether the app should run torch on one thread. Writes "## Web app: torch threads beside a
running job" in docs/benchmarks.md.

    .venv/bin/python scripts/bench_threads.py [--faces ../shared/faces] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script
from bench_intake import face_bench_parser, make_photos

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SECTION = "## Web app: torch threads beside a running job"
PHOTOS, IMAGES = 12, 6


def measure(threads: int, busy: bool, data: Path, repeats: int) -> dict:
    """In this process: torch on `threads`, optionally beside a busy process; the best time of each task."""
    import torch

    torch.set_num_threads(threads)
    from headshots.config import load_config
    from headshots.faces import FaceAnalyzer
    from headshots.images import load_rgb
    from train.intake import judge_photos

    cfg = load_config("bench", overrides=[f"paths.data_root={data}"])
    analyzer = FaceAnalyzer.for_config(cfg)
    images = [load_rgb(p).resize((1024, 768)) for p in sorted((data / "bench" / "selfies").glob("*.jpg"))[:IMAGES]]
    with contextlib.redirect_stdout(io.StringIO()):
        judge_photos(cfg, analyzer)  # first calls: not part of the cost
    analyzer.embed(images[:1], [analyzer.detect(images[0]).subject])
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    times: dict[str, list[float]] = {"intake": [], "score": []}
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            judge_photos(cfg, analyzer)
            times["intake"].append(time.perf_counter() - start)
            start = time.perf_counter()
            detections = analyzer.detect_many(images)
            analyzer.embed(images, [d.subject for d in detections])
            times["score"].append(time.perf_counter() - start)
    finally:
        if hog is not None:
            hog.kill()
    return {task: min(seconds) for task, seconds in times.items()}


def main() -> None:
    parser = face_bench_parser(__doc__.splitlines()[0], repeats=2)
    parser.add_argument("--child", nargs=3, metavar=("THREADS", "BUSY", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = args.weights
    if args.child:
        threads, busy, data = args.child
        print(json.dumps(measure(int(threads), busy == "busy", Path(data), args.repeats)))
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        selfies = Path(tmp) / "bench" / "selfies"
        selfies.mkdir(parents=True)
        make_photos(args.faces, selfies, PHOTOS)
        for busy in ("idle", "busy"):
            for threads in (2, 1):
                child = subprocess.run([sys.executable, __file__, "--child", str(threads), busy, tmp, "--repeats", str(args.repeats)],
                                       capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                results[(threads, busy)] = json.loads(child.stdout.strip().splitlines()[-1])
                print(threads, busy, results[(threads, busy)], flush=True)

    def row(task: str, title: str) -> str:
        two, one = (results[(threads, "idle")][task] for threads in (2, 1))
        two_busy, one_busy = (results[(threads, "busy")][task] for threads in (2, 1))
        return (f"| {title} | {two:.2f} s | {one:.2f} s ({one / two:.2f}x as long) | {two_busy:.2f} s | {one_busy:.2f} s "
                f"({two_busy / one_busy:.2f}x faster) |")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import torch

    lines = [
        (f"`scripts/bench_threads.py` on {time.strftime('%Y-%m-%d')}: each setting in a process of its own, best of "
        f"{args.repeats}; {os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"load average {load:.1f} after the runs. Beside: a process running `while True: pass` (one core busy, as a job "
         "beside the app keeps it)."),
        "",
        "| the app's own work | idle, 2 threads | idle, 1 thread | beside a busy process, 2 threads | beside it, 1 thread |",
        "|---|---|---|---|---|",
        row("intake", f"intake of {PHOTOS} photos of 4000x3000 (2 photo-checking threads)"),
        row("score", f"detect and embed {IMAGES} images of 1024x768 (scoring, export crops)"),
        "",
        ("One thread per operation is the trade: about as fast for intake idle (it checks photos on threads of its "
        "own), slower for detection idle, and never several times slower beside a busy core. The app keeps torch's "
        "default: a person's own job refuses changes to their photos and the review's deletions while it runs, so the "
        "app's face work mostly runs idle; it is another person's upload beside a CPU job that slows down (the CPU-only "
         "demo; a GPU job keeps about one core busy of many)."),
    ]
    write_section(args.out, SECTION, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
