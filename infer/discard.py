"""Discard: take generated images out of the person's review for good.

Generating again adds rounds and variations, so a review grows; the person prunes it. For each named image (by either
name the review may show: the file, or its face-detailed version `<stem>.detail.png`, which the review shows where
it won) both files are deleted and the manifest entry removed, its name kept among those never given again (a new
round would otherwise draw the very same image under it). Then the filter stage runs again over what is left (ranks,
duplicates, gallery), so the review reads as if the image had never been made. Variations drawn from a discarded image
stay; their `source` names a file that is gone. Its crops leave the last export (export/), which is then due to be
made again, and its favourite tick goes. Copies logged to W&B (only with `wandb.log_images`, off by default) stay in
those runs: `make purge` removes the local ones, the W&B account the synced ones.

The manifest is written first, so an interrupted discard leaves files, never entries naming deleted ones; the same
command again (the names are among those discarded by then) deletes what is left and scores.

Reads   samples/manifest.json, `infer.discard_files`, export/export.json, samples/favourites.json
Writes  samples/manifest.json without the images, samples/scores.json and gallery.html again; deletes the PNGs
        and their crops in export/ (export.json rewritten without them)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.faces import FaceAnalyzer
from headshots.logs import get_logger, plural
from headshots.stages import forget, stage_named
from headshots.workspace import EXPORT_MANIFEST, GALLERY, SCORES, Workspace, read_favourites, save_favourites, write_json_atomic
from infer.export import export_dir, exports_alone
from infer.gallery import score_and_show
from infer.manifest import DISCARDED, changes_images, detail_file, did_you_mean, forget_images, require_manifest, write_manifest
from infer.score import FACES

log = get_logger(__name__)


def names_of(entry: dict) -> list[str]:
    """The files one manifest entry owns: as generated, and face-detailed when the pass made one."""
    return [entry["file"], *([entry["detail"]["file"]] if "file" in (entry.get("detail") or {}) else [])]


def drop_exported(export_dir: Path, deleted: set[str]) -> list[str]:
    """The crops of deleted images out of the last export, and their records out of export.json; the whole export
    when none is left or export.json cannot be read. Returns the deleted images it held."""
    path = export_dir / EXPORT_MANIFEST
    try:
        manifest = json.loads(path.read_text())
        held = {record["file"]: record for record in manifest["images"]}
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(export_dir, ignore_errors=True)
        return sorted(deleted)
    dropped = sorted(held.keys() & deleted)
    if dropped and len(dropped) == len(held):
        shutil.rmtree(export_dir, ignore_errors=True)
    elif dropped:
        for name in dropped:
            for crop in held[name]["exports"]:
                (export_dir / crop["path"]).unlink(missing_ok=True)
        manifest["images"] = [record for name, record in held.items() if name not in deleted]
        write_json_atomic(path, manifest)
    return dropped


@changes_images
def discard(cfg: Config, analyzer: FaceAnalyzer | None = None) -> list[str]:
    """Delete `infer.discard_files` and their entries, then score what is left; returns the files deleted. Every
    name is checked before anything is deleted: one unknown name deletes nothing."""
    samples_dir, manifest = require_manifest(cfg, "to discard")
    workspace = Workspace.from_config(cfg)
    wanted = set(cfg.infer.discard_files)
    owner = {name: entry["file"] for entry in manifest["images"] for name in names_of(entry)}
    owner |= {name: file for file in manifest.get(DISCARDED, []) for name in (file, detail_file(file))}  # run again
    example = next(iter(owner), "linkedin-01.png")
    if not wanted:
        raise HeadshotsError("No images named to discard.", f"Name them: {workspace.make_command('discard', IMAGES=example)}")
    unknown = sorted(wanted - owner.keys())
    if unknown:
        raise HeadshotsError(f"Not among the images generated in {samples_dir}: {', '.join(unknown)}.",
                             did_you_mean(unknown, owner) +
                             f"Name files as the gallery shows them, comma-separated, e.g. {example}; nothing was deleted.")
    gone = {owner[name] for name in wanted}
    with exports_alone(cfg):  # first: refused by an export under way, a discard has deleted nothing yet (a re-walk)
        removed = [entry["file"] for entry in forget_images(manifest, gone)]
        write_manifest(samples_dir, manifest)  # first: an interrupted discard leaves files, not dangling entries
        in_order = removed + sorted(gone - set(removed))  # as generated; then those of an interrupted discard
        deleted = [name for file in in_order for name in (file, detail_file(file)) if (samples_dir / name).is_file()]
        for name in deleted:
            (samples_dir / name).unlink()
        # the export names each image by the version that won the review: the face-detailed one's name, where it won
        exported = drop_exported(export_dir(cfg), {name for file in gone for name in (file, detail_file(file))})
    if exported:
        forget(stage_named("export"), cfg)  # what is kept may change with the scores: the chain exports again
        log.info("their crops are out of the last export (%s): %s", export_dir(cfg), ", ".join(exported))
    if workspace.favourites(cfg.run).is_file():  # the ticks of what is left: a deleted image's tick goes
        save_favourites(workspace, cfg.run, read_favourites(workspace, cfg.run))
    # what lost its entry or a file now; named again after a discard that ended, an image has neither left
    deleted_now = set(deleted)
    now = [file for file in in_order if file in removed or {file, detail_file(file)} & deleted_now]
    log.info("%s discarded from %s", plural(len(now), "image"), samples_dir)
    if len(now) < len(in_order):
        log.info("discarded before: %s", ", ".join(file for file in in_order if file not in now))
    if manifest["images"]:
        score_and_show(cfg, analyzer)
    else:  # nothing left to review, nor measurements of what was there
        for name in (SCORES, FACES, GALLERY):
            (samples_dir / name).unlink(missing_ok=True)
    return deleted
