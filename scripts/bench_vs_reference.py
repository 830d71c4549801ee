"""ms/step and peak memory of our trainer against diffusers' reference DreamBooth-LoRA SDXL script.

Side by side: same machine, same random-weight checkpoint, same face crops, same settings. Writes the
ratios ours/reference to docs/benchmarks.md ("## Training vs diffusers' reference script (...)").

    # CPU, tiny profile (128 px, LoRA rank 4, fp32)
    .venv/bin/python scripts/bench_vs_reference.py
    # GPU: full-size SDXL from its published config with random weights, 1024 px, rank 16, bf16
    .venv/bin/python scripts/bench_vs_reference.py --sdxl-config ../shared/models/sdxl-base-1.0-config

The reference script is Apache-2.0 code from the diffusers repository and is never committed here:
fetch the copy matching the installed diffusers into the git-ignored third_party/ folder first,

    mkdir -p third_party/diffusers_examples
    curl -fL -o third_party/diffusers_examples/train_dreambooth_lora_sdxl.py \\
        https://raw.githubusercontent.com/huggingface/diffusers/v0.42.1/examples/dreambooth/train_dreambooth_lora_sdxl.py

(or `git show HEAD:examples/dreambooth/train_dreambooth_lora_sdxl.py` from any clone of the diffusers repository
whose script's check_min_version the installed diffusers passes; scripts/gpu_bundle.sh carries it to the GPU).

Both trainers run unmodified, each run in a fresh process started through a small wrapper that
records, without touching either trainer's code, the time of every optimizer step (a global
torch.optim step hook) and the process's peak memory (RSS; on CUDA, allocated GPU memory) both up
to the last optimizer step and over the whole run. ms/step is the median interval between
consecutive optimizer steps after --warmup steps: one whole loop iteration (data, encoding, forward,
backward, update, logging), with loading and saving outside it. Memory ratios use the peak up to the
last step, so what a trainer does after training (the reference reloads a whole pipeline) is shown
but not compared.
The trainers alternate (the order rotating from round to round) for --repeats rounds, and each
figure is the median over rounds, so load from other jobs on the machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from _docs import write_section  # scripts/, first on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REFERENCE = REPO / "third_party" / "diffusers_examples" / "train_dreambooth_lora_sdxl.py"
REFERENCE_URL = (
    "https://raw.githubusercontent.com/huggingface/diffusers/v0.42.1/examples/dreambooth/train_dreambooth_lora_sdxl.py"
)
USER = "bench"
PHOTOS = 5
WEIGHT_DECAY = 1e-4  # the reference's default for the UNet LoRA, and ours

# Runs the target (`module NAME` or `script PATH`, then its arguments) in this process, timing every
# optimizer step, and at exit writes what only the process itself can measure to $BENCH_RESULT.
WRAPPER = """
import atexit, json, os, resource, runpy, sys, time
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

steps = []
result = {"steps": steps}

def peaks(prefix):
    result[prefix + "rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        result[prefix + "gpu_bytes"] = torch.cuda.max_memory_allocated()

def on_step(optimizer, args, kwargs):
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    steps.append((time.perf_counter(), time.process_time()))
    peaks("loop_")
    if len(steps) == int(os.environ["BENCH_STEPS"]):  # kept even if what comes after training kills the process
        with open(os.environ["BENCH_RESULT"], "w") as f:
            json.dump(result, f)

def report():
    peaks("run_")
    with open(os.environ["BENCH_RESULT"], "w") as f:
        json.dump(result, f)

register_optimizer_step_post_hook(on_step)
atexit.register(report)
kind, target, *args = sys.argv[1:]
sys.argv = [target, *args]
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
"""


@dataclass(frozen=True)
class Setup:
    """Everything the two trainers must agree on."""

    model: Path
    profile: str  # our config profile (configs/model/<profile>.yaml)
    resolution: int
    rank: int
    learning_rate: float
    mixed_precision: str  # no | bf16
    variant: str | None  # fp16: the checkpoint is saved as *.fp16.safetensors, like the hub's
    gradient_checkpointing: bool
    threads: int | None  # CPU threads per process (OMP_NUM_THREADS); None: the libraries' default


@dataclass(frozen=True)
class Workspace:
    root: Path
    instance_dir: Path  # the prepared face crops as PNG files, for the reference
    prompt: str  # the prepared caption, the reference's instance prompt


# -- the shared inputs --------------------------------------------------------------------------


def require_reference() -> None:
    """The reference is fetched by hand (it is not ours to commit); say exactly how when it is missing."""
    if not REFERENCE.is_file():
        raise SystemExit(
            f"diffusers' reference script is missing: {REFERENCE.relative_to(REPO)}\n"
            f"Fetch the version matching the installed diffusers (it is git-ignored, never commit it):\n"
            f"    mkdir -p {REFERENCE.parent.relative_to(REPO)}\n"
            f"    curl -fL -o {REFERENCE.relative_to(REPO)} \\\n        {REFERENCE_URL}"
        )


def build_checkpoint(root: Path, sdxl_config: Path | None, gradient_checkpointing: bool, threads: int | None,
                     resolution: int | None) -> Setup:
    """One random-weight checkpoint on disk that both trainers load with their own from_pretrained calls."""
    if sdxl_config:
        from headshots.tiny_sdxl import full_size_sdxl

        return Setup(full_size_sdxl(sdxl_config, root / "sdxl"), "sdxl", resolution or 1024, 16, 1e-4, "bf16", "fp16", gradient_checkpointing, threads)
    from headshots.tiny_sdxl import RESOLUTION, build_tiny_sdxl

    build_tiny_sdxl().save_pretrained(root / "tiny")
    return Setup(root / "tiny", "tiny", resolution or RESOLUTION, 4, 1e-3, "no", None, gradient_checkpointing, threads)


def common_overrides(setup: Setup, root: Path) -> list[str]:
    return [f"model.pretrained={setup.model}", f"model.resolution={setup.resolution}", "model.vae=null",
            f"model.variant={setup.variant or 'null'}", f"paths.data_root={root / 'data'}",
            f"paths.outputs_root={root / 'out'}"]


def prepare_photos(setup: Setup, root: Path, photos: Path, face_weights: str) -> Workspace:
    """Our `prepare` turns the photos into face crops at the training resolution; the reference gets
    the very same crops as PNG files, so both trainers see identical pixels and the same prompt."""
    import datasets

    selfies = root / "data" / USER / "selfies"
    selfies.mkdir(parents=True)
    for photo in sorted(photos.glob("*.jpg"))[:PHOTOS]:
        shutil.copy(photo, selfies / photo.name)
    env = {**os.environ, "HEADSHOTS_FACE_WEIGHTS": face_weights}
    cmd = [sys.executable, "-m", "train", "prepare", "--user", USER, "--profile", setup.profile,
           *common_overrides(setup, root)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"prepare failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    rows = datasets.load_from_disk(str(root / "data" / USER / "prepared"))
    instance_dir = root / "instance"
    instance_dir.mkdir()
    for i, row in enumerate(rows):
        row["image"].save(instance_dir / f"{i:02d}.png")
    return Workspace(root, instance_dir, rows[0]["caption"])


# -- the trainers, with matched settings --------------------------------------------------------


def ours(setup: Setup, ws: Workspace, steps: int, tag: str, cache: bool) -> list[str]:
    """`python -m train fit` with every setting the reference also has spelled out."""
    return ["module", "train", "fit", "--user", USER, "--profile", setup.profile, f"run={tag}",
            *common_overrides(setup, ws.root), "wandb.mode=disabled",
            f"train.max_steps={steps}", "train.batch_size=1", "train.gradient_accumulation_steps=1",
            f"train.rank={setup.rank}", "train.target_modules=[to_q,to_k,to_v,to_out.0]",
            f"train.learning_rate={setup.learning_rate}", "train.lr_scheduler=constant", "train.lr_warmup_steps=0",
            "train.optimizer=adamw", f"train.weight_decay={WEIGHT_DECAY}", "train.max_grad_norm=1.0",
            f"train.mixed_precision={setup.mixed_precision}",
            f"train.gradient_checkpointing={str(setup.gradient_checkpointing).lower()}",
            f"train.cache_encodings={str(cache).lower()}", "train.seed=0", "train.checkpoint_every=100000"]


def reference(setup: Setup, ws: Workspace, steps: int, tag: str) -> list[str]:
    """diffusers' script; it targets to_k, to_q, to_v, to_out.0 (hard-coded) with alpha = rank, as ours.
    W&B is its only installed tracker, disabled through WANDB_MODE (it has no "none")."""
    return ["script", str(REFERENCE), "--pretrained_model_name_or_path", str(setup.model),
            *(["--variant", setup.variant] if setup.variant else []),
            "--instance_data_dir", str(ws.instance_dir), "--instance_prompt", ws.prompt,
            "--output_dir", str(ws.root / "ref" / tag), "--resolution", str(setup.resolution), "--center_crop",
            "--max_train_steps", str(steps), "--train_batch_size", "1", "--gradient_accumulation_steps", "1",
            "--rank", str(setup.rank), "--learning_rate", str(setup.learning_rate),
            "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
            "--optimizer", "AdamW", "--adam_weight_decay", str(WEIGHT_DECAY), "--max_grad_norm", "1.0",
            "--mixed_precision", setup.mixed_precision,
            *(["--gradient_checkpointing"] if setup.gradient_checkpointing else []),
            "--seed", "0", "--checkpointing_steps", "100000", "--report_to", "wandb"]


@dataclass(frozen=True)
class Trainer:
    label: str
    command: Callable[[Setup, Workspace, int, str], list[str]]


# The uncached run of ours encodes every step like the reference does (it also re-runs the text
# encoders, which the reference does not): it shows how much of the difference is the cache.
TRAINERS = {
    "ours": Trainer("ours (defaults: encodings cached)", partial(ours, cache=True)),
    "reference": Trainer("diffusers reference", reference),
    "ours-uncached": Trainer("ours, `train.cache_encodings=false`", partial(ours, cache=False)),
}


# -- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    step_ms: list[float]  # wall time between consecutive optimizer steps, warm-up dropped
    step_cpu_ms: list[float]  # the process's CPU time (all threads) over the same intervals
    peaks: dict[str, int]  # {loop_,run_}{rss,gpu}_bytes: up to the last optimizer step / the whole run


def run_once(argv: list[str], log: Path, steps: int, warmup: int, threads: int | None) -> Run:
    """One training run in a fresh process; its output goes to `log` (shown if it fails). A process that
    dies after its last optimizer step (the reference reloads a whole pipeline then, which can exhaust a
    small machine's RAM) still gives its training-loop figures; its whole-run peak is then unknown."""
    result = log.with_suffix(".json")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "BENCH_RESULT": str(result),
           "BENCH_STEPS": str(steps)}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with log.open("w") as out:
        code = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False).returncode
    if code != 0 and not result.is_file():
        raise SystemExit(f"{' '.join(argv[:2])} failed (exit {code}):\n{log.read_text()[-4000:]}")
    if code != 0:
        print(f"{log.name}: exit {code} after its {steps} training steps; whole-run peak unknown", flush=True)
    measured = json.loads(result.read_text())
    stamps = measured["steps"][warmup:]
    if len(stamps) < 2:
        raise SystemExit(f"{log.name}: {len(measured['steps'])} optimizer steps, need more than --warmup + 1")
    wall = [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(stamps)]
    cpu = [(b[1] - a[1]) * 1000 for a, b in itertools.pairwise(stamps)]
    return Run(wall, cpu, {key: value for key, value in measured.items() if key.endswith("_bytes")})


def measure(setup: Setup, ws: Workspace, steps: int, warmup: int, repeats: int) -> dict[str, list[Run]]:
    """One run per trainer per round; the order rotates so no trainer always follows the same one."""
    logs = ws.root / "logs"
    logs.mkdir()
    runs: dict[str, list[Run]] = {key: [] for key in TRAINERS}
    keys = list(TRAINERS)
    for round_ in range(repeats):
        for key in keys[round_ % len(keys):] + keys[:round_ % len(keys)]:
            tag = f"{key}-r{round_}"
            run = run_once(TRAINERS[key].command(setup, ws, steps, tag), logs / f"{tag}.log", steps, warmup, setup.threads)
            runs[key].append(run)
            print(f"round {round_ + 1}/{repeats}, {key}: {statistics.median(run.step_ms):.0f} ms/step", flush=True)
    return runs


# -- report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Medians over rounds. Memory is allocated GPU memory (GiB) where there is a GPU, else RSS (MiB)."""

    per_round: list[float]  # median ms/step of each round's run
    ms: float
    cpu_ms: float
    memory_loop: float  # peak up to the last optimizer step
    memory_run: float | None  # peak over the whole run; None when a run died after training


def summarise(runs: list[Run], on_gpu: bool) -> Summary:
    per_round = [statistics.median(run.step_ms) for run in runs]
    kind, unit = ("gpu", 2**30) if on_gpu else ("rss", 2**20)
    return Summary(per_round, statistics.median(per_round),
                   statistics.median(statistics.median(run.step_cpu_ms) for run in runs),
                   statistics.median(run.peaks[f"loop_{kind}_bytes"] / unit for run in runs),
                   None if any(f"run_{kind}_bytes" not in run.peaks for run in runs)
                   else statistics.median(run.peaks[f"run_{kind}_bytes"] / unit for run in runs))


def machine(threads: int | None) -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    return (f"CPU {names[0] if names else platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
            f"torch {torch.__version__}, {threads or torch.get_num_threads()} thread(s) per process")


def versions() -> str:
    import diffusers

    git = ["git", "describe", "--always", "--dirty"]
    ours_rev = subprocess.run(git, cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    text = REFERENCE.read_bytes().replace(b"\r\n", b"\n")
    digest = hashlib.sha256(text).hexdigest()[:12]
    found = re.search(rb'check_min_version\("([^"]+)"\)', text)
    minimum = found.group(1).decode() if found else "unknown"
    return (f"ours at `{ours_rev or 'unknown'}`, diffusers {diffusers.__version__}, reference script sha256 `{digest}` "
            f"(LF line ends; it requires diffusers >= {minimum})")


DIFFERENCES = [
    "What the reference does differently (read from the script, the version named above):",
    "",
    ("- It runs the VAE encoder (kept in fp32, and resident for the whole run) on the image at every step; "
     "ours encodes each crop once, keeps the latent mean and std, samples a latent per step, and frees the VAE "
     "and text encoders before training (`train.cache_encodings`, on by default)."),
    ("- Both encode the one prompt once; the reference keeps both text encoders loaded afterwards "
     "(on the GPU, in the training dtype). Ours without the cache re-encodes the caption every step."),
    "- Under bf16 its LoRA weights and AdamW state are bf16 (it upcasts to fp32 only for fp16); ours keeps them in fp32.",
    ("- After training it casts the UNet to fp32 on the device to save the adapter, then loads a whole second "
     "pipeline from disk (on the CPU) and loads the adapter into it, even without a validation prompt: "
     "outside ms/step and the training-loop peak, inside the whole-run peak."),
    ("- Ours draws each step's noise, timestep and image from a generator seeded by the step (exact resume) and "
     "saves one checkpoint after the last step; the reference uses the global RNG and a shuffled DataLoader."),
]
TINY_MEMORY_NOTE = ("On the tiny model the peak RSS is mostly the Python libraries every process imports (the "
                    "weights are a few MB): the memory ratio only means something on the full-size run.")
FULL_SIZE_CPU_NOTE = ("Full-size SDXL on a CPU, small and short: a check that the GPU comparison runs, and of host "
                      "memory (RSS, not GPU memory). The step times are bf16 matrix products on a CPU, where the UNet "
                      "outweighs everything else; they say nothing about a GPU.")


def report(summaries: dict[str, Summary], setup: Setup, on_gpu: bool, command: str, steps: int, warmup: int,
           repeats: int, load: str) -> tuple[str, str]:
    """(heading, body) of the docs/benchmarks.md section."""
    what = (f"full-size SDXL, random weights, {setup.resolution} px, LoRA rank {setup.rank}, bf16" if setup.profile == "sdxl"
            else f"tiny profile, {setup.resolution} px, LoRA rank {setup.rank}, fp32")
    memory, digits = ("peak GPU memory allocated", 2) if on_gpu else ("peak RSS", 0)
    unit = "GiB" if on_gpu else "MiB"
    ref = summaries["reference"]
    settings = (
        f"Settings for all runs: the same random-weight checkpoint and the same {PHOTOS} face crops (our `prepare`, "
        f"saved as PNG for the reference) with the same prompt, {setup.resolution}x{setup.resolution}, batch 1, "
        f"LoRA rank {setup.rank} (alpha = rank) on to_q/to_k/to_v/to_out.0, AdamW lr {setup.learning_rate:g} "
        f"weight decay {WEIGHT_DECAY:g}, constant schedule, grad-norm clip 1.0, mixed precision "
        f"`{setup.mixed_precision}`, gradient checkpointing {'on' if setup.gradient_checkpointing else 'off'}, "
        "no text-encoder training, no prior preservation, no validation, no intermediate checkpoints, tracking off. "
        f"{steps} steps per run; ms/step is the median time between consecutive optimizer steps after the first "
        f"{warmup} (one whole loop iteration), CPU ms/step the process's CPU time over the same intervals; each figure "
        f"is the median of {repeats} rounds, the trainers alternating within each round."
    )
    lines = [
        f"`{command}` on {time.strftime('%Y-%m-%d')}: {machine(setup.threads)}; {versions()}; load average {load}.",
        "",
        settings,
        "",
        (f"| trainer | ms/step | CPU ms/step | ms/step per round | {memory}, training loop ({unit}) "
         f"| {memory}, whole run ({unit}) | time / reference | loop memory / reference |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, s in summaries.items():
        lines.append(f"| {TRAINERS[key].label} | {s.ms:.0f} | {s.cpu_ms:.0f} | {', '.join(f'{v:.0f}' for v in s.per_round)} "
                     f"| {s.memory_loop:.{digits}f} | {'died after training' if s.memory_run is None else f'{s.memory_run:.{digits}f}'} "
                     f"| {s.ms / ref.ms:.2f}x "
                     f"| {s.memory_loop / ref.memory_loop:.2f}x |")
    ours_ = summaries["ours"]
    whole_run = ("" if ours_.memory_run is None or ref.memory_run is None
                 else f" ({ours_.memory_run / ref.memory_run:.2f}x over the whole run)")
    headline = (f"**Ours / reference: {ours_.ms / ref.ms:.2f}x the time per step ({ours_.cpu_ms / ref.cpu_ms:.2f}x "
                f"in CPU time), {ours_.memory_loop / ref.memory_loop:.2f}x the {memory} in the training loop{whole_run}.**")
    lines += ["", headline, "", *DIFFERENCES]
    if setup.profile == "tiny":
        lines += ["", TINY_MEMORY_NOTE]
    elif not on_gpu:
        lines += ["", FULL_SIZE_CPU_NOTE]
    return f"## Training vs diffusers' reference script ({what})", "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdxl-config", type=Path, help="full-size SDXL config folder (GPU benchmark)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of one run per trainer")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on for all trainers")
    parser.add_argument("--resolution", type=int, help="default: 1024 full-size, 128 tiny (smaller: the full-size path on a CPU)")
    parser.add_argument("--threads", type=int, help="CPU threads per training process (default: torch's); 1 keeps "
                        "timings stable on a machine shared with other jobs, where OpenMP barriers stall")
    shared = REPO.parent / "shared"
    faces = shared / "faces" / "georgia-tech" / "s01"
    parser.add_argument("--photos", type=Path, default=faces if faces.is_dir() else REPO / "data" / "samples" / "demo",
                        help=f"folder of JPEG photos of one person (the first {PHOTOS} are used)")
    parser.add_argument("--face-weights", default=os.environ.get("HEADSHOTS_FACE_WEIGHTS", str(shared / "models/facenet/casia-webface-features.pt")),
                        help="FaceNet weights for prepare (default: $HEADSHOTS_FACE_WEIGHTS, else ../shared's)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    require_reference()

    with tempfile.TemporaryDirectory(prefix="bench-vs-reference-") as tmp:
        root = Path(tmp)
        setup = build_checkpoint(root, args.sdxl_config, args.gradient_checkpointing, args.threads, args.resolution)
        ws = prepare_photos(setup, root, args.photos, args.face_weights)
        load_before = os.getloadavg()[0]
        runs = measure(setup, ws, args.steps, args.warmup, args.repeats)
        load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"

    on_gpu = all("loop_gpu_bytes" in run.peaks for key_runs in runs.values() for run in key_runs)
    summaries = {key: summarise(key_runs, on_gpu) for key, key_runs in runs.items()}
    command = " ".join(["scripts/bench_vs_reference.py", *sys.argv[1:]])
    heading, body = report(summaries, setup, on_gpu, command, args.steps, args.warmup, args.repeats, load)
    write_section(args.out, heading, body)
    print(f"{heading}\n\n{body}")


if __name__ == "__main__":
    main()
