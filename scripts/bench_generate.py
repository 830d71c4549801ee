"""Seconds per image: our inference path (infer.generate) against a plain diffusers call, same run.

    plain   StableDiffusionXLPipeline.from_pretrained(model) + load_lora_weights(adapter), then
            pipe(prompt, num_inference_steps=STEPS).images with every other setting at its default
    ours    infer.generate.load_pipelines (adapter fused unless infer.fuse_lora=false) and
            infer.generate.sample: one CPU generator per image, style prompts with negatives

Same model, same random LoRA adapter (rank 16, written by the real exporter), same step count
and size. Variants alternate call by call, after one warm-up call each; each figure is the median
over --repeats calls (a batch counts as one call, divided by its images). Writes the
"## Generation (...)" section of docs/benchmarks.md.

    # CPU, tiny profile (128 px)
    .venv/bin/python scripts/bench_generate.py
    # GPU: full-size SDXL from its published config with random weights, fp16, 1024 px, 30 steps
    .venv/bin/python scripts/bench_generate.py --sdxl-config ../shared/models/sdxl-base-1.0-config
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _docs import write_section  # scripts/, first on sys.path when run as a script

from headshots.tiny_sdxl import full_size_sdxl

PROMPT = "professional head and shoulders headshot photo of ohwx person, navy blazer, softly blurred office background"


def write_random_adapter(model_dir: Path, variant: str | None, out: Path, rank: int, dtype) -> None:
    """A LoRA on the model's UNet with random non-zero weights (a fresh one is all zeros), exported
    by the project's own code, so both paths load exactly what training would have written."""
    import torch
    from diffusers import UNet2DConditionModel

    from headshots.config import TrainConfig
    from train.lora import attach_lora, save_adapter

    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet", variant=variant, dtype=dtype)
    attach_lora(unet, TrainConfig(rank=rank))
    torch.manual_seed(0)
    for name, parameter in unet.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.01)
    save_adapter(unet, out, {"trigger": "ohwx"})


def plain_variant(model_dir: Path, variant: str | None, adapter: Path, steps: int, dtype, device) -> Callable[[], int]:
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(model_dir, variant=variant, dtype=dtype).to(device)
    pipe.load_lora_weights(str(adapter))
    pipe.set_progress_bar_config(disable=True)
    return lambda: len(pipe(PROMPT, num_inference_steps=steps).images)


def our_variant(pipes, cfg, batch: int) -> Callable[[], int]:
    from infer.generate import sample
    from infer.styles import load_style

    prompts = load_style("linkedin").prompts("ohwx", "person")
    return lambda: len(sample(pipes, cfg, prompts, list(range(batch))))


def png_seconds(pipes, cfg) -> float:
    """What our generate stage adds per image after sampling: writing it as PNG (median of 3)."""
    from infer.generate import sample
    from infer.styles import load_style

    image = sample(pipes, cfg, load_style("linkedin").prompts("ohwx", "person"), [0])[0]
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        image.save(io.BytesIO(), format="PNG")
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdxl-config", type=Path, help="full-size SDXL config folder (GPU benchmark)")
    parser.add_argument("--compile", action="store_true", help="also time infer.compile=true (its first call includes the compile)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="our batched variant's batch (default: infer.batch_size)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is steadier when other jobs share the cores")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()

    import torch

    from headshots.config import load_config
    from headshots.faces import resolve_device
    from headshots.sdxl import sampling_dtype
    from infer.generate import load_pipelines

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    dtype = sampling_dtype(device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.sdxl_config:
            model = full_size_sdxl(args.sdxl_config, tmp / "model")  # the fp16 variant files, like the hub's
            profile, variant, title = "sdxl", "fp16", "full-size SDXL, random weights, 1024 px"
        else:
            from headshots.tiny_sdxl import build_tiny_sdxl

            model = tmp / "model"
            build_tiny_sdxl().save_pretrained(model)
            profile, variant, title = "tiny", None, "tiny profile, 128 px"
        write_random_adapter(model, variant, tmp / "adapter", rank=16, dtype=dtype)
        common = [f"model.pretrained={model}", "model.vae=null", f"model.variant={variant or 'null'}", f"infer.steps={args.steps}"]
        cfg = load_config("bench", profile, overrides=common)
        unfused = load_config("bench", profile, overrides=[*common, "infer.fuse_lora=false"])
        batch = args.batch or cfg.infer.batch_size
        ours = load_pipelines(cfg, tmp / "adapter")
        variants = {
            "plain diffusers call + load_lora_weights, 1 image": plain_variant(model, variant, tmp / "adapter", args.steps, dtype, device),
            "ours (fused LoRA), 1 image": our_variant(ours, cfg, 1),
            f"ours (fused LoRA), batch of {batch}": our_variant(ours, cfg, batch),
            "ours, infer.fuse_lora=false, 1 image": our_variant(load_pipelines(unfused, tmp / "adapter"), unfused, 1),
        }
        if args.compile:  # last: the first call pays the compile, shown in the "first call" column
            compiled = load_config("bench", profile, overrides=[*common, "infer.compile=true"])
            variants[f"ours, infer.compile=true, batch of {batch}"] = our_variant(load_pipelines(compiled, tmp / "adapter"), compiled, batch)
        times = {name: [] for name in variants}
        first: dict[str, float] = {}
        for round_ in range(args.repeats + 1):  # round 0 warms up (kernel choice, allocator)
            for name, run in variants.items():
                start = time.perf_counter()
                images = run()
                if round_:
                    times[name].append((time.perf_counter() - start) / images)
                else:
                    first[name] = (time.perf_counter() - start) / images
        png = png_seconds(ours, cfg)

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    plain = statistics.median(times[next(iter(times))])
    heading = f"## Generation ({title})"
    lines = [
        (f"`{' '.join(['scripts/bench_generate.py', *sys.argv[1:]])}` "
         f"on {where}, {time.strftime('%Y-%m-%d')}; torch {torch.__version__}, {str(dtype).removeprefix('torch.')}, "
         f"{args.steps} steps, guidance 5, LoRA rank 16; median of {args.repeats} interleaved calls after a warm-up, "
         f"load average {os.getloadavg()[0]:.1f} at the end (other jobs share this machine)."), "",
        "| variant | s/image | vs plain | all calls (s/image) | first call (s/image) |", "|---|---|---|---|---|",
    ]
    for name, runs in times.items():
        median = statistics.median(runs)
        lines.append(f"| {name} | {median:.3f} | {median / plain:.2f}x | {', '.join(f'{t:.3f}' for t in runs)} | {first[name]:.3f} |")
    lines += [
        "",
        ("Ours merges the adapter into the weights once per run (`infer.fuse_lora`, on by default), so its UNet runs "
         "without LoRA layers; the plain call keeps diffusers' separate LoRA layers, as the `infer.fuse_lora=false` row does. "
         f"Writing one image as PNG, which our generate stage does in a writer thread while the next batch samples: {png * 1000:.0f} ms."),
    ]
    write_section(args.out, heading, "\n".join(lines))
    print(heading, "", *lines, sep="\n")


if __name__ == "__main__":
    main()
