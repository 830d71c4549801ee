"""More like this: variations of one generated image the person likes.

The image is the starting point of SDXL's img2img pipeline, made from the loaded base pipeline's own modules
(the person's adapter included), with the image's own prompts and a fresh seed per variation. Only
`infer.more.strength` of the denoising is redone, so what the person liked (framing, clothes, background,
light) stays while expression, pose and detail move: 0.3 is subtle, 0.7 keeps little more than the idea. The
image the person saw is the one used: its face-detailed version where scoring kept that one.

Reads   samples/manifest.json + the chosen image, the adapter (as generate)
Writes  samples/<stem>-more-<k>.png, numbered on past any earlier variations of the same image, each
        appended to samples/manifest.json (batch by batch, as generate) as a generate entry plus "source"
        (the file it started from) and "strength": the entry alone redoes it (generate.draw). Scoring then
        judges them with the rest.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.logs import get_logger, plural
from headshots.workspace import Workspace
from infer.generate import PipelinesOrLoader, Sample, draw, pipelines_for, sample_settings, write_batch
from infer.manifest import DISCARDED, changes_images, closest_image, forget_missing, names_taken, no_images, require_manifest

log = get_logger(__name__)
SEED_STRIDE = 100_003  # variation k of an image with seed s gets seed s + (k + 1) x this: apart from generate's


def find_source(entries: list[dict], name: str | None, samples_dir: Path, workspace: Workspace,
                discarded: Collection[str] = ()) -> dict:
    """The manifest entry of the image the person named: by its file, or by its face-detailed version's. `discarded`:
    the names of images deleted from the review, which are said to be deleted, not unknown."""
    if not entries:  # every image deleted
        raise no_images(workspace, samples_dir, "to make more like")
    if not name:
        raise HeadshotsError("No image named to make more like.", f"Pick one from {samples_dir / 'gallery.html'}: "
                             f"{workspace.make_command('more', IMAGE=entries[0]['file'])}")
    for entry in entries:
        if name in (entry["file"], (entry.get("detail") or {}).get("file")):
            return entry
    shown = ", ".join(e["file"] for e in entries[:6]) + (", ..." if len(entries) > 6 else "")
    if (deleted := closest_image(name, discarded)) is not None:
        raise HeadshotsError(f"{deleted} was deleted from {samples_dir} (discarded), so there is nothing to draw more like it from.",
                             f"Pick one of the images kept: {shown}")
    close = closest_image(name, (e["file"] for e in entries))
    raise HeadshotsError(f"{name!r} is not one of the images generated in {samples_dir}.",
                         f"Did you mean {close}? ({workspace.make_command('more', IMAGE=close)})" if close else f"Pick one of: {shown}")


def variation_numbers(source: dict, taken: list[str], count: int) -> list[tuple[int, str]]:
    """(k, `<stem>-more-<k>.png`): the stem without any earlier `-more-<k>` (a variation of a variation is one
    more variation of the same image), k numbered on past the variations made, deleted ones too (`taken`)."""
    stem = re.sub(r"(-more-\d+)+$", "", Path(source["file"]).stem)
    numbers = [int(m.group(1)) for name in taken if (m := re.fullmatch(re.escape(stem) + r"-more-(\d+)\.png", name))]
    first = max(numbers, default=-1) + 1
    return [(k, f"{stem}-more-{k:02d}.png") for k in range(first, first + count)]


@changes_images
def more_like(cfg: Config, pipes: PipelinesOrLoader = None) -> list[Sample]:
    """Draw `infer.more.count` variations of `infer.more.image`; returns their manifest entries."""
    cfg.infer.check_more()
    samples_dir, manifest = require_manifest(cfg, "to make more like")
    forget_missing(samples_dir, manifest)
    entries, more = list(manifest["images"]), cfg.infer.more
    source = find_source(entries, more.image, samples_dir, Workspace.from_config(cfg), manifest.get(DISCARDED, []))
    pipes = pipelines_for(cfg, pipes)
    settings = {**sample_settings(cfg, pipes), "source": more.image, "strength": more.strength}
    planned = [Sample(file=name, style=source["style"], seed=source["seed"] + (k + 1) * SEED_STRIDE, prompt=source["prompt"],
                      prompt_2=source["prompt_2"], negative_prompt=source["negative_prompt"],
                      style_file=source.get("style_file"), **settings)
               for k, name in variation_numbers(source, names_taken(manifest), more.count)]
    for first in tqdm(range(0, len(planned), cfg.infer.batch_size), desc=f"more like {more.image}", unit="batch"):
        batch = planned[first : first + cfg.infer.batch_size]
        write_batch(draw(pipes, cfg, [asdict(e) for e in batch], samples_dir), batch, samples_dir, manifest)
    log.info("%s like %s written to %s", plural(len(planned), "image"), more.image, samples_dir)
    return planned
