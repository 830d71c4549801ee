"""Web app: time from dropping 12 phone-size photos on the page to every verdict on screen.

The app (service.app, default sdxl profile: nothing of SDXL is loaded for intake) runs in this process on
a free loopback port over a temporary workspace; headless Chromium (Playwright, Debian's /usr/bin/chromium)
signs in as a new person each round, sets the 12 files on the upload input, and the clock stops when the
12th photo's verdict card is in the page. The files are 4000x3000 JPEGs made as scripts/bench_intake.py
makes them (real faces from ../shared, upscaled, with sensor-like noise). For the split, intake alone is
then timed on the same photos. Writes "## Web app: upload to verdicts" in docs/benchmarks.md.

    .venv/bin/python scripts/bench_app.py [--faces ../shared/faces] [--repeats 3]
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script
from bench_intake import SIZE, face_bench_parser, make_photos

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.browser import CHROMIUM, FLAGS

SECTION = "## Web app: upload to verdicts"
PHOTOS = 12


def upload_round(browser, url: str, user: str, files: list[Path]) -> float:
    """Seconds from handing the files to the page to the last verdict card shown."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(url)
    page.locator("#hs-name textarea, #hs-name input").first.fill(user)
    page.locator("#hs-go").click()
    page.get_by_text(f"Signed in as {user}").wait_for()
    start = time.perf_counter()
    page.locator("#hs-upload input[type=file]").set_input_files([str(f) for f in files])
    page.locator(".hs-photo").nth(len(files) - 1).wait_for(timeout=120_000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def main() -> None:
    parser = face_bench_parser(__doc__.splitlines()[0], repeats=3)
    args = parser.parse_args()
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = args.weights
    os.environ.setdefault("WANDB_MODE", "disabled")

    import torch
    from playwright.sync_api import sync_playwright

    from service.app import HeadshotsApp, Settings
    from train.intake import run_intake

    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        make_photos(args.faces, photos, PHOTOS)
        files = sorted(photos.iterdir())
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        settings = Settings(None, None, [f"paths.data_root={Path(tmp) / 'data'}", f"paths.outputs_root={Path(tmp) / 'outputs'}"])
        app = HeadshotsApp(settings)
        url = app.launch("127.0.0.1", None, block=False)  # the first free port from 7860
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
                upload_round(browser, url, "warmup", files[:1])  # first-call costs (page, models) are not an upload's
                rounds = [upload_round(browser, url, f"bench{i}", files) for i in range(args.repeats)]
                browser.close()
            intake = []
            for i in range(args.repeats):
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    run_intake(settings.config(f"bench{i}"), app.analyzer)
                intake.append(time.perf_counter() - started)
        finally:
            app.close()

    median, intake_median = statistics.median(rounds), statistics.median(intake)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        f"`scripts/bench_app.py` on {time.strftime('%Y-%m-%d')}: {PHOTOS} JPEGs of {SIZE[0]}x{SIZE[1]} ({megabytes:.0f} MB, upscaled real",
        "faces + noise) set on the page's upload input in headless Chromium, until the last verdict card is shown;",
        f"a new person each round, median of {args.repeats}; app and browser on the same machine: {os.cpu_count()} CPU cores,",
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {platform.processor() or platform.machine()},",
        f"load average {load:.1f} when measured (other jobs share these cores).",
        "",
        f"**{median:.2f} s from upload to {PHOTOS} verdicts on screen** (target: < 5 s); rounds: {', '.join(f'{r:.2f} s' for r in rounds)}.",
        f"Of that, intake itself (every check, the reports) takes {intake_median:.2f} s; the rest ({median - intake_median:.2f} s) is",
        "the transfer to the server, the copy into the selfies folder and drawing the page.",
        "",
    ])
    write_section(args.out, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
