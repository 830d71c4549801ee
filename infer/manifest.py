"""samples/manifest.json, the record every stage after generate reads: the one place that reads and writes it.

Format (docs/ARCHITECTURE.md): {user, run, base_model, resolution, images: [entry], discarded: [file]}, one entry
per image, enough to redraw it, and the names of the images deleted since, which are never given again. Every PNG
also carries its own entry in a `headshots` text chunk (`save_png`): a lone file is reproducible, and a lost or
broken manifest is rebuilt from the images themselves (`recover`).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.logs import get_logger
from headshots.workspace import Workspace, held_alone, write_atomic, write_json_atomic

log = get_logger(__name__)
MANIFEST = "manifest.json"
IMAGES_LOCK = ".images.lock"  # in the run's folder, held by a command that changes its images (`changes_images`)
T = TypeVar("T")
DISCARDED = "discarded"  # the manifest's list of deleted images' names (`names_taken`)
PNG_KEY = "headshots"  # the PNG text chunk holding the image's manifest entry


def save_png(image: Image.Image, entry: dict, path: Path) -> None:
    """Save with the image's manifest entry inside, whole or not at all (`write_atomic`)."""
    info = PngInfo()
    info.add_text(PNG_KEY, json.dumps(entry))
    write_atomic(path, lambda temporary: image.save(temporary, format="PNG", pnginfo=info))


def png_entry(path: Path) -> dict | None:
    """The manifest entry a PNG carries; None when it has none or cannot be read."""
    try:
        with Image.open(path) as image:
            text = image.text.get(PNG_KEY) if hasattr(image, "text") else None
        entry = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) else None


def read_manifest(workspace: Workspace, run: str) -> dict | None:
    """samples/manifest.json, or None before the first image. A file that cannot be read is an error that says
    so and how to rebuild it (the make command for this person, run and profile), not a traceback."""
    path = workspace.samples_dir(run) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest["images"], list):
            raise TypeError("images is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeadshotsError(f"{path} cannot be read ({type(exc).__name__}: {exc}).",
                             "Rebuild it from the images themselves (each carries its own entry): "
                             f"{workspace.make_command('recover')}") from exc
    return manifest


def closest_image(given: str, files: Iterable[str]) -> str | None:
    """The generated image a name that is not one most likely means: a path to it (typed or tab-completed), or its
    name without `.png`. Not a name a letter or a number off: linkedin-07 is not linkedin-00."""
    name = Path(given).name
    return next((file for file in files if file in (name, f"{name}.png")), None)


def did_you_mean(names: Iterable[str], files: Iterable[str]) -> str:
    """The start of a hint naming, for each of `names` that is not an image, the image it most likely means
    (`closest_image`): "Did you mean: a -> a.png? ", or "" when none is close."""
    files = list(files)
    meant = [f"{name} -> {close}" for name in names if (close := closest_image(name, files))]
    return f"Did you mean: {'; '.join(meant)}? " if meant else ""


def no_images(workspace: Workspace, samples_dir: Path, doing: str) -> HeadshotsError:
    """The error of a command that needs generated images and finds none (none made, or every one deleted)."""
    return HeadshotsError(f"No generated images in {samples_dir} {doing}.", f"Generate some first: {workspace.make_command('infer')}")


def require_manifest(cfg: Config, doing: str) -> tuple[Path, dict]:
    """(samples folder, manifest) for a stage that works on generated images; `doing` says what, for the error."""
    workspace = Workspace.from_config(cfg)
    samples_dir = workspace.samples_dir(cfg.run)
    manifest = read_manifest(workspace, cfg.run)
    if manifest is None:
        raise no_images(workspace, samples_dir, doing)
    return samples_dir, manifest


def changes_images(work: Callable[..., T]) -> Callable[..., T]:
    """For a command of (cfg, ...) that reads the manifest and writes it back: one at a time per person and run,
    across processes (the CLI, the web app and its jobs, a batch). Two at once would each write back the manifest
    as they read it: a `more` drawing while a `discard` ran put back the entry of the image discarded meanwhile.
    The second command is refused, saying why; one command calling another (infer all: generate, detail, then score,
    all under `make_and_review`'s hold; discard, then score) holds the lock once."""

    @functools.wraps(work)
    def locked(cfg: Config, *args, **kwargs) -> T:
        run_dir = Workspace.from_config(cfg).run_dir(cfg.run)
        if not run_dir.is_dir():  # nothing trained or generated: the command itself says what is missing
            return work(cfg, *args, **kwargs)
        busy = HeadshotsError(f"Another command is working on the images in {run_dir} (generating, scoring or deleting: "
                              "in a terminal, the web app or a batch).", "Wait for it to finish, then run this again.")
        with held_alone(run_dir / IMAGES_LOCK, busy):
            return work(cfg, *args, **kwargs)

    return locked


def write_manifest(samples_dir: Path, manifest: dict) -> None:
    """Atomically: a reader (the app, the next stage) never sees half a manifest."""
    write_json_atomic(samples_dir / MANIFEST, manifest)


def detail_file(name: str) -> str:
    """samples/<stem>.detail.png beside samples/<stem>.png: the face-detail pass's version of an image."""
    return f"{Path(name).stem}.detail.png"


def names_taken(manifest: dict) -> list[str]:
    """Every image name the manifest gives or gave. A deleted image's name is never given again: generating again
    would number on into it and draw the very image the person threw away (same name, same seed)."""
    return [entry["file"] for entry in manifest["images"]] + list(manifest.get(DISCARDED, []))


def forget_images(manifest: dict, files: set[str]) -> list[dict]:
    """Take the entries of `files` out of `manifest`, their names kept among the names taken; returns the entries."""
    removed = [entry for entry in manifest["images"] if entry["file"] in files]
    manifest["images"] = [entry for entry in manifest["images"] if entry["file"] not in files]
    manifest[DISCARDED] = sorted({*manifest.get(DISCARDED, []), *(entry["file"] for entry in removed)})
    return removed


def forget_missing(samples_dir: Path, manifest: dict) -> list[str]:
    """The entries whose image is gone (deleted by hand) out of the manifest, written back, as a discard would have
    left it; returns their names. Every command that reads the images calls it first, so a file deleted by hand is
    not a traceback in the next one."""
    missing = {entry["file"] for entry in manifest["images"] if not (samples_dir / entry["file"]).is_file()}
    if missing:
        forget_images(manifest, missing)
        write_manifest(samples_dir, manifest)
        log.warning("%s deleted from %s by hand: taken out of the review", ", ".join(sorted(missing)), samples_dir)
    return sorted(missing)


_IMAGE_NAME = re.compile(r'"([\w.+-]+\.png)"')


def names_mentioned(broken: Path) -> set[str]:
    """The image names an unreadable manifest's text still gives (a hand edit's stray comma leaves every one of them
    readable as text): its deleted images' among them, which must stay taken (`names_taken`), or generating again would
    number into them and draw the very images the person threw away. Detailed versions' names are not image names."""
    text = broken.read_text(encoding="utf-8", errors="replace")
    return {name for name in _IMAGE_NAME.findall(text) if not name.endswith(".detail.png") and "/" not in name}


@dataclass
class Recovery:
    adopted: list[str] = field(default_factory=list)  # images on disk the manifest did not name, now in it
    missing: list[str] = field(default_factory=list)  # entries whose image is gone, now out of it
    foreign: list[str] = field(default_factory=list)  # PNGs without an entry of their own: left alone
    broken: Path | None = None  # the unreadable manifest, kept under this name
    remembered: list[str] = field(default_factory=list)  # names it gave, images not on disk: never given again
    images: int = 0  # in the manifest now


@changes_images
def recover(cfg: Config) -> Recovery:
    """Make the manifest name exactly the images on disk: an unreadable one is set aside and rebuilt, images it
    does not name (an interrupted write, an older version's round) are added from their own entries, oldest
    first, and entries whose image is gone are dropped. A face-detailed version's entry, which holds the
    pass's record, is preferred to the original's; a skipped pass's reason lives only in the manifest."""
    workspace = Workspace.from_config(cfg)
    samples_dir = workspace.samples_dir(cfg.run)
    if not samples_dir.is_dir():
        raise no_images(workspace, samples_dir, "to recover")
    result = Recovery()
    try:
        manifest = read_manifest(workspace, cfg.run)
    except HeadshotsError:
        result.broken = samples_dir / f"manifest.broken-{time.strftime('%Y%m%d-%H%M%S')}.json"
        (samples_dir / MANIFEST).rename(result.broken)
        result.remembered = sorted(name for name in names_mentioned(result.broken) if not (samples_dir / name).exists())
        manifest = None
    manifest = manifest or {"user": cfg.user, "run": cfg.run, "base_model": cfg.model.pretrained,
                            "resolution": cfg.model.resolution, "images": []}
    present = [e for e in manifest["images"] if (samples_dir / str(e.get("file"))).is_file()]
    result.missing = [str(e.get("file")) for e in manifest["images"] if e not in present]
    manifest[DISCARDED] = sorted({*manifest.get(DISCARDED, []), *result.missing, *result.remembered})
    named = {e["file"] for e in present}
    for png in sorted(samples_dir.glob("*.png"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        if png.name in named or png.name.endswith(".detail.png"):
            continue
        carried = (png_entry(png.with_name(f"{png.stem}.detail.png")), png_entry(png))  # the detailed one knows more
        entry = next((e for e in carried if e is not None and e.get("file") == png.name), None)
        if entry is None:
            result.foreign.append(png.name)
            continue
        present.append(entry)
        result.adopted.append(png.name)
    manifest["images"], result.images = present, len(present)
    manifest[DISCARDED] = sorted(set(manifest[DISCARDED]) - set(result.adopted))  # on disk again: deletable again
    write_manifest(samples_dir, manifest)
    log.info("manifest of %s: %d images (%d added from their own entries, %d gone)", samples_dir, len(present),
             len(result.adopted), len(result.missing))
    return result
