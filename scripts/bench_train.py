"""Training speed and memory, written to docs/benchmarks.md ("## Training").

Runs the real recipe (train.recipe.train) in a fresh subprocess per variant, on a synthetic
prepared dataset (random crops: speed does not depend on faces). Per-step time is measured as
(time for N steps - time for M steps) / (N - M), so model loading and encoding are excluded.

    # CPU, tiny profile: steps/s with and without caching, as a ratio, in one run
    .venv/bin/python scripts/bench_train.py
    # GPU: full-size SDXL from its published config with random weights, 1024 px, rank 16, bf16
    .venv/bin/python scripts/bench_train.py --sdxl-config ../shared/models/sdxl-base-1.0-config
    # the same full-size path anywhere (a CPU: checks it runs, and its host memory), small and short
    .venv/bin/python scripts/bench_train.py --sdxl-config ../shared/models/sdxl-base-1.0-config --resolution 64 --steps 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_VARIANTS = {
    "cached encodings": ["train.cache_encodings=true"],
    "no caching (VAE + text encoders every step)": ["train.cache_encodings=false"],
}
CPU_NOTE = ("The GPU benchmark's full-size path run on a CPU: it shows that path works anywhere (the hub's fp16 "
            "variant files, LoRA rank 16 on all 70 transformer blocks, 8-bit AdamW, gradient checkpointing, uncached "
            "encoding), not how fast it is: one-step differences, on a CPU where bf16 matrix products are slow. "
            "Peak host RSS is set by loading the model: what the machine's RAM must hold.")
GPU_VARIANTS = {
    "bf16, AdamW": [],
    "bf16, 8-bit AdamW": ["train.optimizer=adamw8bit"],
    "bf16, gradient checkpointing, 8-bit AdamW": ["train.optimizer=adamw8bit", "train.gradient_checkpointing=true"],
    "bf16, no caching, AdamW": ["train.cache_encodings=false"],
}
COMPILE_VARIANT = {"bf16, 8-bit AdamW, train.compile": ["train.optimizer=adamw8bit", "train.compile=true"]}  # --compile
# Both runs of a compiled variant compile from scratch, so the compile cancels out of ms/step and shows in the
# short run's seconds; with inductor's caches on, the second run would reuse the first one's work.
COLD_COMPILE = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}


def write_dataset(data_root: Path, user: str, resolution: int, n: int = 8) -> None:
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)) for _ in range(n)]
    datasets.Dataset.from_dict({
        "image": images, "caption": ["a photo of ohwx person"] * n, "file": [f"{i}.jpg" for i in range(n)],
        "face_box": [[0.3, 0.25, 0.7, 0.7]] * n, "original_size": [[resolution, resolution]] * n,
    }, features=datasets.Features({
        "image": datasets.Image(), "caption": datasets.Value("string"), "file": datasets.Value("string"),
        "face_box": datasets.List(datasets.Value("float32"), length=4), "original_size": datasets.List(datasets.Value("int32"), length=2),
    })).save_to_disk(str(data_root / user / "prepared"))


def run_variant(overrides: list[str], steps: int) -> dict:
    """One training run in a fresh process: wall seconds, peak accelerator memory and peak host RSS
    (loading included: what the rented machine's RAM must hold)."""
    code = (
        "import json, resource, sys, time, torch\n"
        "from headshots.config import load_config\nfrom train.recipe import train\n"
        "cfg = load_config('bench', None, None, sys.argv[1:])\n"
        "t = time.perf_counter(); train(cfg); seconds = time.perf_counter() - t\n"
        "peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None\n"
        "host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20\n"
        "print('RESULT', json.dumps({'seconds': seconds, 'peak_gib': peak, 'host_gib': host}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *overrides, f"train.max_steps={steps}"], check=False, cwd=REPO,
                         capture_output=True, text=True, env={"WANDB_MODE": "disabled", **os.environ, **COLD_COMPILE})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.split("RESULT", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdxl-config", type=Path, help="full-size SDXL config folder (GPU benchmark)")
    parser.add_argument("--steps", type=int, nargs=2, default=None, help="short and long run lengths")
    parser.add_argument("--compile", action="store_true", help="add a train.compile variant (last; GPU runs)")
    parser.add_argument("--resolution", type=int, default=None, help="default: 1024 full-size, 128 tiny")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    from headshots.tiny_sdxl import full_size_sdxl

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.sdxl_config:
            model = full_size_sdxl(args.sdxl_config, tmp / "sdxl")
            resolution, variants, profile = args.resolution or 1024, GPU_VARIANTS, "sdxl"
            base = ["model.vae=null", "model.variant=fp16", "train.rank=16", "train.mixed_precision=bf16"]
            short, long = args.steps or (10, 40)
        else:
            from headshots.tiny_sdxl import build_tiny_sdxl

            build_tiny_sdxl().save_pretrained(tmp / "tiny")
            model, resolution, variants, profile = tmp / "tiny", args.resolution or 128, TINY_VARIANTS, "tiny"
            base = ["train.mixed_precision=no"]
            short, long = args.steps or (10, 60)
        write_dataset(tmp / "data", "bench", resolution)
        common = [f"profile={profile}", f"model.pretrained={model}", f"model.resolution={resolution}",
                  f"paths.data_root={tmp / 'data'}", f"paths.outputs_root={tmp / 'out'}", "wandb.mode=disabled",
                  "train.checkpoint_every=100000", *base]
        if args.compile:
            variants = {**variants, **COMPILE_VARIANT}
        rows: list[tuple[str, float, float | None, float, float]] = []
        for name, overrides in variants.items():
            first = run_variant([*common, *overrides, f"run=a{len(rows)}"], short)
            second = run_variant([*common, *overrides, f"run=b{len(rows)}"], long)
            ms = (second["seconds"] - first["seconds"]) / (long - short) * 1000
            rows.append((name, ms, second["peak_gib"], second["host_gib"], first["seconds"]))
            print(f"{name}: {ms:.1f} ms/step ({1000 / ms:.3g} steps/s), peak {second['peak_gib']}, host {second['host_gib']:.1f} GiB")
            write_table(args, rows, resolution, short, long)  # after every variant: a run stopped early keeps these


def write_table(args: argparse.Namespace, rows: list, resolution: int, short: int, long: int) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    what = f"full-size SDXL, random weights, {resolution} px, LoRA rank 16" if args.sdxl_config else f"tiny profile, {resolution} px, LoRA rank 4"
    on_cpu = args.sdxl_config and not torch.cuda.is_available()  # a run-anywhere check, not the GPU figure
    lines = [f"## Training ({what}{', CPU' if on_cpu else ''})",
             "", (f"`{' '.join(['scripts/bench_train.py', *sys.argv[1:]])}` "
             f"on {device}, {time.strftime('%Y-%m-%d')}; steps {short}->{long}, batch 1. ms/step is the difference "
             f"between a {long}- and a {short}-step run, so loading (and a compile) cancels out; the {short}-step run's "
             "seconds show what they cost."), "",
             f"| variant | ms/step | steps/s | peak GPU memory (GiB) | peak host RSS (GiB) | vs first row | {short}-step run (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, ms, peak, host, short_s in rows:
        lines.append(f"| {name} | {ms:.1f} | {1000 / ms:.3g} | {'-' if peak is None else f'{peak:.1f}'} | {host:.1f} | "
                     f"{ms / rows[0][1]:.2f}x time | {short_s:.1f} |")
    if on_cpu:
        lines += ["", CPU_NOTE]
    write_section(args.out, lines[0], "\n".join(lines[2:]))
    print("\n".join(lines))

if __name__ == "__main__":
    main()
