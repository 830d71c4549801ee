"""The GPU figures in one call: training, ours against diffusers' reference, sampling, the face-detail
pass, and the whole personal path, on full-size SDXL with random weights.

    # on the GPU machine, through scripts/gpu_check.sh (it installs the carried wheels first)
    python3 scripts/gpu_check.py --sdxl-config .gpu/sdxl-base-1.0-config --photos .gpu/photos --out $OUT
    # anywhere, tiny profile on the CPU: what tests/test_gpu_check.py runs, so the driver cannot rot
    .venv/bin/python scripts/gpu_check.py --tiny --out outputs/gpu-check

On the GPU the random full-size SDXL is built once (part `build`) and every part loads that copy. Every
part runs in its own process with its own time budget; a part that overruns is stopped and
recorded as such, and after every part gpu_check.json and gpu_check.md in --out are rewritten, so a
run that breaks part-way keeps what it had. The benchmark scripts write their own Markdown sections
(into --out/parts/, never into docs/ from here); their tables are also parsed into the JSON.

    train      scripts/bench_train.py: ms/step, peak GPU memory (AdamW, 8-bit AdamW, checkpointing + 8-bit, uncached,
               train.compile with its compile time)
    reference  scripts/bench_vs_reference.py: ours / diffusers' DreamBooth-LoRA script, same GPU and settings
               (skipped, with the reason, when third_party/ has no copy of the reference script)
    sample     scripts/bench_generate.py: s/image, plain diffusers call vs ours (fused LoRA), batch 1 and 4,
               infer.compile (its first call includes the compile)
    detail     scripts/bench_detail.py: seconds per image the face-detail pass adds
    path       this script: the whole personal path (prepare, train, generate 16, score), seconds per stage,
               through service.chain (the stages users run); training runs PATH_STEPS steps (the default's 1000
               would not fit the part's budget) and the default is estimated from that run's own rate; then,
               apart, 4 more like the first image and the review scored again
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headshots.config import Config

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
# Targets from the GPU-figures issue, printed beside the measured figures.
TARGETS = {
    "train": "<= 90 ms/step (then 45); peak <= 12 GB with checkpointing + 8-bit",
    "reference": "ours no slower and no larger than the reference",
    "sample": "<= 1.5 s/image at 1024 px, 30 steps (floor ~0.4 s on H100-class)",
    "detail": "a fraction of one generation",
    "path": "<= 60 s for 16 images, prepare to scores",
    "build": "(setup, not a product figure) random full-size SDXL built once for every part",
}
PATH_STEPS = 100  # training steps the path runs on the GPU: 1000 (the default) at the 90 ms/step target alone is 90 s


def parts(args: argparse.Namespace, built: Path | None) -> dict[str, tuple[list[str], int]]:
    """name -> (command, time budget in seconds). The budgets sum to under 8 minutes on the GPU. On the GPU
    the random full-size SDXL is built once, into `built`, and every part loads it from there
    (headshots.tiny_sdxl.full_size_sdxl) instead of building its own (the build costs most of a minute);
    without `built`, each part builds its own from --sdxl-config."""
    py = sys.executable
    full = [] if args.tiny else ["--sdxl-config", str(built or args.sdxl_config)]
    tiny = args.tiny
    build = {"build": ([py, str(Path(__file__).resolve()), "--build-only", str(built), "--sdxl-config", str(args.sdxl_config),
                        "--out", str(args.out)], 80)} if built else {}

    def out(name: str) -> list[str]:
        return ["--out", str(args.out / "parts" / f"{name}.md")]

    return {
        **build,
        "train": ([py, str(SCRIPTS / "bench_train.py"), *full, *(["--steps", "2", "4"] if tiny else ["--compile"]), *out("train")],
                  100),
        "reference": ([py, str(SCRIPTS / "bench_vs_reference.py"), *full,
                       *(["--steps", "4", "--warmup", "1", "--repeats", "1"] if tiny else ["--steps", "25", "--repeats", "1"]),
                       *out("reference")], 70),
        "sample": ([py, str(SCRIPTS / "bench_generate.py"), *full, "--batch", "4",
                    *(["--steps", "2", "--repeats", "1"] if tiny else ["--repeats", "2", "--compile"]), *out("sample")], 75),
        "detail": ([py, str(SCRIPTS / "bench_detail.py"), *full, "--repeats", "1" if tiny else "2",
                    "--json", str(args.out / "parts" / "detail.json"), *out("detail")], 30),
        "path": ([py, str(Path(__file__).resolve()), "--path-only", *(["--tiny"] if tiny else full),
                  "--photos", str(args.photos), "--out", str(args.out)], 100),
    }


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table in a Markdown text, as lists of {column: cell}."""
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(rows) > 2:
            header = rows[0]
            tables.append([dict(zip(header, row)) for row in rows[2:]])
        rows = []
    return tables


def run_part(name: str, command: list[str], budget: int, out: Path) -> dict:
    started = time.perf_counter()
    log = out / "parts" / f"{name}.log"
    try:
        with log.open("w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=budget, cwd=REPO,
                                  check=False).returncode
        state = "done" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        state = f"stopped at its {budget} s budget"
    section = out / "parts" / f"{name}.md"
    text = section.read_text() if section.is_file() else ""
    tail = log.read_text().strip().splitlines()[-3:] if log.is_file() else []
    if "reference" in name and "third_party" in " ".join(tail) and state != "done":
        state = "skipped: no copy of diffusers' reference script in third_party/ (see scripts/bench_vs_reference.py)"
    return {"part": name, "state": state, "seconds": round(time.perf_counter() - started, 1), "budget_s": budget,
            "command": " ".join(command), "target": TARGETS[name], "tables": markdown_tables(text),
            "markdown": text, "log_tail": tail}


def write_report(results: list[dict], out: Path, environment: dict) -> None:
    (out / "gpu_check.json").write_text(json.dumps({"environment": environment, "parts": results}, indent=2))
    lines = ["# GPU check", "", " ".join(f"{k}: {v};" for k, v in environment.items()), "",
             "| part | state | seconds (budget) | target |", "|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['state']} | {r['seconds']} ({r['budget_s']}) | {r['target']} |" for r in results]
    for r in results:
        lines += ["", f"## {r['part']}", "", r["markdown"].strip() or "(no figures: " + r["state"] + ")"]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def environment() -> dict:
    import torch

    from headshots.versions import installed_version

    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "python": sys.version.split()[0], "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"}
    info.update({package: installed_version(package) or "missing"
                 for package in ("diffusers", "transformers", "peft", "accelerate", "bitsandbytes")})
    return info


# -- the whole personal path ----------------------------------------------------------------------------

def whole_path(args: argparse.Namespace) -> None:
    """prepare -> fit (default steps) -> generate 16 -> score, one person, timed by the chain's own results."""
    from headshots.config import load_config
    from headshots.stages import stage_named
    from headshots.tiny_sdxl import build_tiny_sdxl, full_size_sdxl
    from service.chain import run_stage

    with tempfile.TemporaryDirectory(prefix="gpu-check-path-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        model = tmp / "model"
        if args.tiny:
            build_tiny_sdxl().save_pretrained(model)
            profile, extra = "tiny", []
        else:
            model = full_size_sdxl(args.sdxl_config, model)
            profile, extra = "sdxl", ["model.variant=fp16", "model.vae=null"]
        build_s = time.perf_counter() - started
        ensure_face_weights(tmp)
        selfies = tmp / "data" / "person" / "selfies"
        selfies.mkdir(parents=True)
        photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:12]
        for photo in photos:
            (selfies / photo.name).write_bytes(photo.read_bytes())
        default_steps = load_config("person", profile).train.max_steps
        cfg = load_config("person", profile, overrides=[
            f"model.pretrained={model}", f"paths.data_root={tmp / 'data'}", f"paths.outputs_root={tmp / 'out'}",
            f"paths.cache_root={tmp / 'cache'}", "wandb.mode=disabled", "infer.styles=[linkedin,executive]",
            # at tiny size the figures mean nothing (it runs so that the script cannot rot): a few images do
            f"infer.images_per_style={2 if args.tiny else 8}", "infer.batch_size=4", *extra, *(["infer.steps=2"] if args.tiny else []),
            f"train.max_steps={4 if args.tiny else min(PATH_STEPS, default_steps)}", *uncalibrated_threshold()])
        images = len(cfg.infer.styles) * cfg.infer.images_per_style
        what = (f"{len(photos)} photos, {cfg.train.max_steps} training steps, {images} images at {cfg.model.resolution} px "
                f"({cfg.infer.steps} steps, batches of 4), scoring"
                + ("" if args.tiny else f"; random full-size weights (built in {build_s:.0f} s, not counted)"))
        rows, upstream, per_step = [], None, None
        for name in ("prepare", "fit", "infer"):
            upstream = run_stage(stage_named(name), cfg, upstream)
            rows.append((name, upstream.seconds, upstream.state))
            if name == "fit" and upstream.ok:
                per_step = seconds_per_step(cfg)
            estimate = at_default_steps(rows, cfg.train.max_steps, default_steps, per_step) if per_step else ""
            write_path_table(args, rows, what, estimate)
            if not upstream.ok:
                return
        write_path_table(args, rows, what, estimate, more_like_this(cfg))


def ensure_face_weights(folder: Path) -> None:
    """FaceNet weights for every part: HEADSHOTS_FACE_WEIGHTS when it names a file, else random ones. Timing only:
    FaceNet's speed does not depend on its weights, and the GPU machine has none (no download; the CASIA file is
    94 MB, over what the device tool carries)."""
    if os.environ.get("HEADSHOTS_FACE_WEIGHTS") and Path(os.environ["HEADSHOTS_FACE_WEIGHTS"]).is_file():
        return
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.save(InceptionResnetV1(pretrained=None).state_dict(), folder / "facenet-random.pt")
    os.environ["HEADSHOTS_FACE_WEIGHTS"] = str(folder / "facenet-random.pt")


def uncalibrated_threshold() -> list[str]:
    """Random FaceNet weights have no calibrated similarity threshold (headshots/face_calibration.json): scoring
    then gets a fixed one, which changes which images are kept but not how long scoring takes."""
    from headshots.config import FaceConfig
    from headshots.errors import WeightsError
    from headshots.faces import calibration_for, weights_source

    face = FaceConfig()
    try:
        calibration_for(weights_source(face.weights), face.crop_margin)
        return []
    except WeightsError:
        return ["filter.threshold=0.5"]


def seconds_per_step(cfg: Config) -> float:
    """The training loop's own rate (its progress.json: steps over the time since its first, the first step's
    warm-up included, so a little high)."""
    from headshots.workspace import Workspace

    progress = json.loads(Workspace.from_config(cfg).progress(cfg.run).read_text())
    return (progress["updated"] - progress["started"]) / max(progress["step"] - progress["resumed_from"], 1)


def at_default_steps(rows: list[tuple[str, float, str]], trained: int, default_steps: int, per_step: float) -> str:
    """The path's figures at the default training steps, estimated from the steps it ran."""
    extra = (default_steps - trained) * per_step
    fit = {name: seconds for name, seconds, _ in rows}["fit"]
    return (f"At the default {default_steps} training steps (estimated from this run's {per_step * 1000:.0f} ms/step): "
            f"fit ~{fit + extra:.0f} s, the stages above ~{sum(seconds for _, seconds, _ in rows) + extra:.0f} s.")


def more_like_this(cfg: Config) -> str:
    """After the path: 4 variations of its first image, as the app's More like this runs them (then the whole review
    scored again), timed apart from the path."""
    from dataclasses import replace

    from infer.detail import with_detail
    from infer.gallery import score_and_show
    from infer.manifest import require_manifest
    from infer.variations import more_like

    _, manifest = require_manifest(cfg, "to make more like")
    first = manifest["images"][0]["file"]
    cfg = replace(cfg, infer=replace(cfg.infer, more=replace(cfg.infer.more, image=first, count=4)))
    started = time.perf_counter()
    with_detail(cfg, more_like)
    drawn = time.perf_counter() - started
    score_and_show(cfg)
    images = len(require_manifest(cfg, "to score")[1]["images"])
    return (f"More like this, after the path (not in it): 4 variations of {first} at strength {cfg.infer.more.strength} "
            f"in {drawn:.1f} s (pipeline load included), then the {images} images scored again: {time.perf_counter() - started:.1f} s.")


def write_path_table(args: argparse.Namespace, rows: list[tuple[str, float, str]], what: str, *notes: str) -> None:
    """Rewritten after every stage, so a run stopped at its budget keeps the stages it finished."""
    lines = [what + ".", "", "| stage | seconds | state |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.1f} | {state} |" for name, seconds, state in rows]
    lines.append(f"| **whole path** | **{sum(seconds for _, seconds, _ in rows):.1f}** | target <= 60 s |")
    for note in filter(None, notes):
        lines += ["", note]
    (args.out / "parts").mkdir(parents=True, exist_ok=True)
    (args.out / "parts" / "path.md").write_text("## Whole personal path\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdxl-config", type=Path, help="full-size SDXL configs (a copy of ../shared's, carried)")
    parser.add_argument("--tiny", action="store_true", help="tiny profile on the CPU (the driver's own test)")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "faces" / "georgia-tech" / "s01",
                        help="a folder of one person's photos (the first 12 are used)")
    parser.add_argument("--only", default=None, help="comma-separated parts to run (default: all)")
    parser.add_argument("--budget-scale", type=float, default=None,
                        help="multiply every part's time budget (default 1; 3 with --tiny, where a 2-core CPU does the work)")
    parser.add_argument("--path-only", action="store_true", help=argparse.SUPPRESS)  # the path part's own process
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)  # the build part's own process
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.tiny and not args.sdxl_config:
        parser.error("give --sdxl-config DIR (GPU run) or --tiny")
    if args.path_only:
        whole_path(args)
        return
    if args.build_only:
        from headshots.tiny_sdxl import build_full_size_sdxl

        build_full_size_sdxl(args.sdxl_config, args.build_only)
        return
    (args.out / "parts").mkdir(parents=True, exist_ok=True)
    env, results = environment(), []
    chosen = args.only.split(",") if args.only else None
    scale = args.budget_scale if args.budget_scale is not None else (3.0 if args.tiny else 1.0)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))  # the built model (~7 GB), never under --out (it travels back)
    ensure_face_weights(work)  # before any part: the parts inherit the environment
    try:
        built = None if args.tiny else work / "sdxl"
        for name in list(parts(args, built)):
            if chosen and name not in chosen and name != "build":
                continue
            command, budget = parts(args, built)[name]
            budget = max(1, round(budget * scale))
            print(f"[gpu_check] {name} (budget {budget} s)", flush=True)
            results.append(run_part(name, command, budget, args.out))
            write_report(results, args.out, env)
            print(f"[gpu_check] {name}: {results[-1]['state']} in {results[-1]['seconds']} s", flush=True)
            if name == "build" and results[-1]["state"] != "done":
                built = None  # then every part builds its own from the configs, as they can alone
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print((args.out / "gpu_check.md").read_text())


if __name__ == "__main__":
    main()
