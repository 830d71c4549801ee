"""Discard: take generated images out of the person's review for good.

Generating again adds rounds and variations, so a review grows; the person prunes it. For each named image
(as the review names it: the file, or its face-detailed version) the PNG and its face-detailed version are
deleted and its manifest entry removed, then the filter stage runs again over what is left (ranks, duplicates,
gallery), so the review reads as if the image had never been made. Variations drawn from a discarded image
stay; their `source` names a file that is gone. A last export (export/) holding a crop of one goes too: export
again for a new one. Copies logged to W&B (only with `wandb.log_images`, off by default) stay in those runs:
`make purge` removes the local ones, the W&B account the synced ones.

Reads   samples/manifest.json, `infer.discard_files`, export/export.json
Writes  samples/manifest.json without the images, samples/scores.json and gallery.html again; deletes the PNGs
        (and export/ when it holds one of them)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.faces import FaceAnalyzer
from headshots.logs import get_logger, plural
from headshots.workspace import EXPORT_MANIFEST, GALLERY, SCORES, Workspace
from infer.export import export_dir
from infer.gallery import score_and_show
from infer.manifest import require_manifest, write_manifest
from infer.score import FACES

log = get_logger(__name__)


def names_of(entry: dict) -> list[str]:
    """The files one manifest entry owns: as generated, and face-detailed when the pass made one."""
    return [entry["file"], *([entry["detail"]["file"]] if "file" in (entry.get("detail") or {}) else [])]


def drop_export_holding(export_dir: Path, deleted: set[str]) -> None:
    """Remove the last export when it holds a crop of a deleted image (an unreadable export.json counts)."""
    try:
        held = {record["file"] for record in json.loads((export_dir / EXPORT_MANIFEST).read_text())["images"]}
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        held = deleted
    if held & deleted:
        shutil.rmtree(export_dir, ignore_errors=True)
        log.info("removed %s: it held a crop of a deleted image", export_dir)


def discard(cfg: Config, analyzer: FaceAnalyzer | None = None) -> list[str]:
    """Delete `infer.discard_files` and their entries, then score what is left; returns the files deleted.
    Every name is checked before anything is deleted: one unknown name deletes nothing."""
    samples_dir, manifest = require_manifest(cfg, "to discard")
    wanted = set(cfg.infer.discard_files)
    owner = {name: entry["file"] for entry in manifest["images"] for name in names_of(entry)}
    example = next(iter(owner), "linkedin-01.png")
    if not wanted:
        raise HeadshotsError("No images named to discard.",
                             f"Name them: {Workspace.from_config(cfg).make_command('discard', IMAGES=example)}")
    unknown = sorted(wanted - owner.keys())
    if unknown:
        raise HeadshotsError(f"Not among the images generated in {samples_dir}: {', '.join(unknown)}.",
                             f"Name files as the gallery shows them, e.g. {example}; nothing was deleted.")
    gone = {owner[name] for name in wanted}
    removed = [e for e in manifest["images"] if e["file"] in gone]
    manifest["images"] = [e for e in manifest["images"] if e["file"] not in gone]
    write_manifest(samples_dir, manifest)  # first: an interrupted discard leaves files, not dangling entries
    deleted = [name for entry in removed for name in names_of(entry)]
    for name in deleted:
        (samples_dir / name).unlink(missing_ok=True)
    drop_export_holding(export_dir(cfg), set(deleted))
    log.info("%s discarded from %s", plural(len(removed), "image"), samples_dir)
    if manifest["images"]:
        score_and_show(cfg, analyzer)
    else:  # nothing left to review, nor measurements of what was there
        for name in (SCORES, FACES, GALLERY):
            (samples_dir / name).unlink(missing_ok=True)
    return deleted
