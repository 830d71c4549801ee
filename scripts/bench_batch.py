"""Four people on the tiny profile: one Ray batch against one person after another, on this machine.

    .venv/bin/python scripts/bench_batch.py [--people 4] [--steps 30] [--out docs/benchmarks.md]

Side by side in one run, each on fresh folders with the same photos and settings:
  sequential  service.chain.run_person for each person in turn, in this process (no Ray at all);
  batch       service.batch.run_batch on embedded Ray (the start of Ray timed apart);
  re-run      the same batch again: every person's chain is found done in the driver (service.chain.chain_done),
              so no Ray task runs; its wall time over the number of people is that check's cost.
Figures go to the "Batch runner" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HEADSHOTS_SHARED", REPO.parent / "shared"))
SUBJECTS = ("s01", "s02", "s23", "s29", "s50")


def set_up(root: Path, people: int) -> list[str]:
    users = []
    for subject in SUBJECTS[:people]:
        user = f"person-{subject}"
        selfies = root / "data" / user / "selfies"
        selfies.mkdir(parents=True)
        for photo in sorted((SHARED / "faces" / "georgia-tech" / subject).glob("*.jpg"))[:6]:
            shutil.copy(photo, selfies / photo.name)
        users.append(user)
    return users


def overrides(root: Path, model: Path, steps: int) -> list[str]:
    return [f"paths.data_root={root / 'data'}", f"paths.outputs_root={root / 'outputs'}", f"paths.cache_root={root / 'cache'}",
            f"model.pretrained={model}", "wandb.mode=disabled", f"train.max_steps={steps}", "infer.styles=[linkedin]"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=4, choices=range(1, len(SUBJECTS) + 1))
    parser.add_argument("--steps", type=int, default=30, help="training steps per person (tiny profile default: 30)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    weights = SHARED / "models" / "facenet" / "casia-webface-features.pt"
    if not weights.is_file():
        sys.exit(f"needs the ../shared test assets ({weights})")
    os.environ.setdefault("HEADSHOTS_FACE_WEIGHTS", str(weights))
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from headshots.config import load_config
    from headshots.stages import STAGES
    from headshots.tiny_sdxl import build_tiny_sdxl
    from service.batch import run_batch, start_ray, stop_ray
    from service.chain import run_person

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny-sdxl"
        build_tiny_sdxl().save_pretrained(model)

        sequential_root = Path(tmp) / "sequential"
        users = set_up(sequential_root, args.people)
        started = time.perf_counter()
        for user in users:
            results = run_person(load_config(user, "tiny", overrides=overrides(sequential_root, model, args.steps)))
            assert all(r.ok for r in results), [r for r in results if not r.ok]
        sequential = time.perf_counter() - started

        batch_root = Path(tmp) / "batch"
        users = set_up(batch_root, args.people)
        started = time.perf_counter()
        start_ray()
        ray_start = time.perf_counter() - started
        try:
            started = time.perf_counter()
            status = run_batch(users, "tiny", overrides(batch_root, model, args.steps), batch_id="bench")
            batch = time.perf_counter() - started
            assert all(p["state"] == "complete" for p in status["people"]), status
            started = time.perf_counter()
            run_batch(users, "tiny", overrides(batch_root, model, args.steps), batch_id="bench-again")
            rerun = time.perf_counter() - started
        finally:
            stop_ray()  # and its session folder, as the batch's own command does

    ratio = sequential / batch
    versus = f"{ratio:.2f}x as fast" if ratio >= 1 else f"{1 / ratio:.2f}x as slow"
    body = f"""`.venv/bin/python scripts/bench_batch.py --people {args.people} --steps {args.steps}` ({time.strftime('%Y-%m-%d')},
{os.cpu_count()} cores, {platform.machine()}, CPU only, tiny profile: intake, prepare, {args.steps} training steps, 2 images, scoring
and export per person; six Georgia Tech photos each; load average {os.getloadavg()[0]:.1f} at the end).

| | wall time | vs one after another |
|---|---|---|
| one after another (`run_person` in one process, no Ray) | {sequential:.1f} s | 1.00x |
| one Ray batch (embedded; Ray's own start not included) | {batch:.1f} s | {versus} |
| starting Ray embedded (dashboard included) | {ray_start:.1f} s | |
| the same batch again (every chain done: found in the driver, no Ray task) | {rerun:.1f} s | {rerun / args.people * 1000:.0f} ms per person |

What the figures say: on two cores a batch can overlap at most two stages, and each Ray worker imports the
libraries and loads the models for the stages it runs, which one process does once for everyone. A person whose
whole chain is done is found so in the driver (the fingerprint of each of their {len(STAGES)} stages) and gets no
task; until 2026-12-06 each of their stages was a Ray task that found itself done (with four people: 4.9 s, 244 ms
per task, Ray already started). The batch is there for machines with more cores and GPUs, and clusters, where the
stages of different people run side by side; that gain is not measured here."""
    write_section(args.out, "## Batch runner (Ray)", body)
    print(body)


if __name__ == "__main__":
    main()
