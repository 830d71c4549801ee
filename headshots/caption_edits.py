"""captions.json, the person's say over the captions, and whether prepare has used what it says:

    data/users/<user>/captions.json   {photo file: caption}, written by prepare, editable by hand

An entry counts as edited when it differs from what the captioner produced last time, which the prepared
dataset keeps in its `generated_caption` column; prepare uses an edited entry as written (train/captions.py).
The file lives on the shared floor because the stage records (headshots/stages.py) must see an edit made since
prepare ran: the web app and the batch would otherwise skip prepare and train on the old captions.
"""

from __future__ import annotations

import json
from pathlib import Path

from headshots.errors import HeadshotsError, first_line
from headshots.logs import get_logger
from headshots.workspace import DATASET_INFO, Workspace, write_json_atomic

log = get_logger(__name__)

HINT = ('It must map photo file names to captions, e.g. {"01.jpg": "a photo of ohwx person, wearing a blue shirt"}. '
        "Fix it, or delete it to caption every photo afresh.")


def read_captions_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        captions = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HeadshotsError(f"{path} is not valid JSON: {exc}", HINT) from exc
    if not isinstance(captions, dict):
        raise HeadshotsError(f"{path} must be an object of non-empty caption strings.", HINT)
    if empty := [file for file, caption in captions.items() if not (isinstance(caption, str) and caption.strip())]:
        raise HeadshotsError(f"{path} must hold a caption for each photo: none for {', '.join(map(repr, empty))}.", HINT)
    return {file: caption.strip() for file, caption in captions.items()}


def write_captions_file(path: Path, captions: dict[str, str]) -> None:
    """Written whole or not at all: a crash never leaves half a file for the person to edit."""
    write_json_atomic(path, captions)


def prepared_captions(prepared: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The prepared dataset's captions by photo: those training uses, and the captioner's (both empty without a
    dataset; the captioner's empty for a dataset from before the column existed)."""
    import datasets

    if not (prepared / DATASET_INFO).is_file():
        return {}, {}
    dataset = datasets.load_from_disk(str(prepared))
    used = dict(zip(dataset["file"], dataset["caption"]))
    generated = dict(zip(dataset["file"], dataset["generated_caption"])) if "generated_caption" in dataset.column_names else {}
    return used, generated


def edited_captions(workspace: Workspace) -> dict[str, str]:
    """Entries of captions.json that differ from what the captioner produced for the dataset they were written
    with. Without that dataset, or where it cannot be read (cut short: prepare, which asks, makes it anew), every
    entry counts as the person's."""
    written = read_captions_file(workspace.captions)
    try:
        _, generated = prepared_captions(workspace.prepared)
    except (OSError, ValueError) as exc:  # datasets' errors for an Arrow file cut short, a dataset_info.json edited
        log.warning("the prepared photos at %s cannot be read (%s): every line of %s counts as yours",
                    workspace.prepared, first_line(exc), workspace.captions.name)
        generated = {}
    return {file: caption for file, caption in written.items() if caption != generated.get(file)}


def captions_edited_since_prepare(workspace: Workspace) -> bool:
    """Whether prepare, run now, would give a prepared photo another caption than the dataset holds: a line of
    captions.json edited (used as written) or deleted (captioned afresh), or the file deleted or broken since
    prepare wrote it (a broken file is then reported by prepare), or a dataset that cannot be read (prepare makes
    it anew). Photos prepare dropped are not asked about."""
    try:
        used, generated = prepared_captions(workspace.prepared)
    except (OSError, ValueError):
        return True
    try:
        written = read_captions_file(workspace.captions)
    except HeadshotsError:
        return bool(used)
    return any(written.get(file, generated.get(file, caption)).strip() != caption.strip() for file, caption in used.items())
