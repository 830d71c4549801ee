"""How long a new process takes to import what each command needs, with the bytecode `make setup` compiles and
without it, side by side in one run.

uv installs packages without compiling their bytecode unless asked (`--compile-bytecode`, as `make setup` does),
and where Python may not write `.pyc` files (PYTHONDONTWRITEBYTECODE, a read-only environment) every process then
compiles the source it imports, every time. Every command of this project is a new process: `make train`, each web
app job, each Ray worker. Each stack below is imported in a fresh process, `--repeats` times in each setting,
alternating, with PYTHONDONTWRITEBYTECODE=1 in both: "as setup leaves it" reads the bytecode installed, "as uv
left it" reads, through PYTHONPYCACHEPREFIX, a copy of the bytecode a setup without the flag had (the standard
library's and that of the packages pip installed: torch, torchvision, numpy, facenet-pytorch) and none of what uv
installed. Writes "## Starting a command: imports" in docs/benchmarks.md.

    .venv/bin/python scripts/bench_startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import date
from importlib.metadata import distributions
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Starting a command: imports"
STACKS = {  # what each kind of process imports before its own work starts
    "train or generate (make train, a web-app job, a batch stage)":
        "import train.recipe, infer.generate, infer.score; "
        "from diffusers import StableDiffusionXLPipeline, StableDiffusionXLInpaintPipeline, AutoencoderKL, UNet2DConditionModel; "
        "from headshots.versions import check_runtime_versions; check_runtime_versions()",
    "intake (make intake)": "import train.intake",
    "web app (make app)": "import service.app",
    "batch runner (make batch)": "import service.batch, ray",
}


def uv_left_it(prefix: Path) -> None:
    """Mirror under `prefix` (PYTHONPYCACHEPREFIX's layout: the source's path, the .pyc beside where it would be) the
    bytecode a setup without --compile-bytecode had: the standard library's and that of every package pip installed."""
    def mirror(pyc: Path) -> None:
        source_dir = pyc.parent.parent  # .../pkg/__pycache__/mod.cpython-311.pyc -> .../pkg
        target = prefix / source_dir.relative_to(source_dir.anchor) / pyc.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pyc, target)

    tag = sys.implementation.cache_tag
    stdlib, site = Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])
    for pyc in stdlib.rglob(f"__pycache__/*.{tag}.pyc"):
        if "site-packages" not in pyc.parts:
            mirror(pyc)
    for dist in distributions():
        if (dist.read_text("INSTALLER") or "").strip() == "pip":
            for file in dist.files or []:
                if file.suffix == ".pyc" and f".{tag}." in file.name:
                    mirror(site / file)


def seconds(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}
    rows = []
    with tempfile.TemporaryDirectory() as prefix:
        uv_left_it(Path(prefix))
        settings = {"as setup leaves it": base, "as uv left it": {**base, "PYTHONPYCACHEPREFIX": prefix}}
        for name, code in STACKS.items():
            times: dict[str, list[float]] = {setting: [] for setting in settings}
            for _ in range(args.repeats):
                for setting, env in settings.items():
                    times[setting].append(seconds(code, env))
            with_, without = (statistics.median(times[s]) for s in settings)
            rows.append((name, with_, without, times))
            print(f"{name}: {with_:.2f} s with bytecode, {without:.2f} s without ({without / with_:.2f}x)", flush=True)
    import torch

    lines = [(f"`scripts/bench_startup.py --repeats {args.repeats}` on {date.today()}: a fresh process importing what each "
             f"command needs, median of {args.repeats} (alternating), {os.cpu_count()} CPU cores, Python "
             f"{platform.python_version()}, torch {torch.__version__}, {platform.machine()}. With bytecode: as "
             "`make setup` leaves the environment (`uv pip install --compile-bytecode`). Without: the bytecode of "
             "the standard library and of the packages pip installs (torch, torchvision, numpy, facenet-pytorch), "
             "none of what uv installs, as before 2026-12-07; both with PYTHONDONTWRITEBYTECODE=1 (set on this "
             "machine, as in many containers), where a process compiles again each time what has none."), "",
             "| process | with bytecode (s) | without (s) | without / with | all runs with / without (s) |",
             "|---|---|---|---|---|"]
    for name, with_, without, times in rows:
        runs = " / ".join(", ".join(f"{t:.2f}" for t in values) for values in times.values())
        lines.append(f"| {name} | {with_:.2f} | {without:.2f} | {without / with_:.2f}x | {runs} |")
    write_section(REPO / "docs" / "benchmarks.md", SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
