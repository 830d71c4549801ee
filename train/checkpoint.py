"""Crash-safe checkpoints: `checkpoints/step-000250/` is complete or does not exist.

Accelerate writes the state (LoRA weights through our hooks, optimizer, LR scheduler, RNG)
into `step-N.tmp/`; a `state.json` is added last and the folder is renamed in one step. A run
killed at any moment leaves either the previous checkpoints or the new one, never a torn "latest".
`state.json` also records the digest of what the run trains on (`inputs`), so that a checkpoint is
resumed only by a run on the same photos and settings. A checkpoint damaged afterwards (a full disk, a
copy between machines cut short: `unreadable`) is set aside when training starts, and the one before it resumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from headshots.config import Config
from headshots.errors import HeadshotsError, first_line
from headshots.workspace import Workspace, held_alone, lock_held, safetensors_unreadable

_STEP_DIR = re.compile(r"^step-(\d+)$")
UNREADABLE = ".unreadable"  # suffix of a damaged checkpoint's folder, set aside
TRAIN_LOCK = ".train.lock"  # in the run's folder, held while it trains (`training_alone`) and while prepare runs


def _training_busy(workspace: Workspace, run: str) -> HeadshotsError:
    return HeadshotsError(f"{workspace.user} is being trained already (run {run!r}: in a terminal, the web app or a batch).",
                          "Wait for that training to finish, then run this again.")


def training_now(workspace: Workspace, run: str) -> bool:
    """Whether a training of the run holds its lock now (`training_alone`), started anywhere: a terminal, a batch, an
    earlier copy of the web app."""
    return lock_held(workspace.run_dir(run) / TRAIN_LOCK)


@contextmanager
def training_alone(workspace: Workspace, run: str) -> Iterator[None]:
    """Held while a person's run trains, whoever starts it (a terminal, the web app, a batch, or a web app restarted
    while its last job still ran): a second training would write the same checkpoints and adapter, and is refused.
    So is a training that starts while prepare rewrites the person's photos (`preparing_alone`): it would fingerprint
    one dataset and train on another."""
    run_dir = workspace.run_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    with held_alone(run_dir / TRAIN_LOCK, _training_busy(workspace, run)):
        with held_alone(workspace.prepare_lock, HeadshotsError(
                f"{workspace.user}'s photos are being prepared (in a terminal, the web app or a batch).",
                "Wait for that to finish, then run this again: training reads what it writes.")):
            pass  # only asked: runs of one person may train at once, each on the prepared photos
        yield


@contextmanager
def preparing_alone(workspace: Workspace) -> Iterator[None]:
    """Held while prepare rewrites the person's prepared photos, which every run of theirs trains on: the person's
    prepare lock (a training starting meanwhile is refused, `training_alone`), then the training lock of each of
    their runs (a prepare while any of them trains is refused, not only while the run it was given trains)."""
    with ExitStack() as held:
        held.enter_context(held_alone(workspace.prepare_lock, HeadshotsError(
            f"{workspace.user}'s photos are being prepared already (in a terminal, the web app or a batch).",
            "Wait for that to finish, then run this again.")))
        # listed once the prepare lock is held: a training that took its run's lock before then is found here, and
        # one that takes it later finds the prepare lock held
        outputs = workspace.user_outputs
        for run_dir in sorted(p for p in outputs.iterdir() if (p / TRAIN_LOCK).exists()) if outputs.is_dir() else []:
            held.enter_context(held_alone(run_dir / TRAIN_LOCK, HeadshotsError(
                f"{workspace.user}'s photos cannot be prepared again while run {run_dir.name!r} trains on them (in a "
                "terminal, the web app or a batch).", "Wait for that training to finish, then run this again.")))
        yield


def checkpoint_path(root: Path, step: int) -> Path:
    return root / f"step-{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and (entry / "state.json").is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(root: Path) -> tuple[int, Path] | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def unreadable(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None: its state.json, the LoRA weights' safetensors header (the
    tensors it names must fit in the file) and the optimizer's and scheduler's zip archives (torch.save's format,
    each member's CRC) are read before Accelerate loads them, whose errors for a file cut short were tracebacks."""
    for path in [checkpoint / "state.json", *sorted(checkpoint.glob("*.safetensors")), *sorted(checkpoint.glob("*.bin"))]:
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                if why := safetensors_unreadable(path):
                    return f"{path.name}: {why}"
            else:
                with zipfile.ZipFile(path) as archive:
                    if (damaged := archive.testzip()) is not None:
                        return f"{path.name}: {damaged} is damaged"
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return f"{path.name}: {first_line(exc)}"
    return None


def training_stopped(cfg: Config) -> str:
    """What Ctrl-C (or the web app's Stop) during a training kept: the step the same command goes on from (a person
    on a rented GPU wants to know the hour spent is not lost)."""
    latest = latest_checkpoint(Workspace.from_config(cfg).checkpoints_dir(cfg.run))
    where = (f"training goes on from step {latest[0]}, its last checkpoint" if latest else
             "training had saved no checkpoint yet: it starts from the beginning")  # also said when stopped before fit
    return f"what was finished is kept; run the same command again ({where})"


def recorded_inputs(checkpoint: Path) -> str | None:
    """The inputs digest a checkpoint was saved with (None: saved before checkpoints recorded it)."""
    return json.loads((checkpoint / "state.json").read_text()).get("inputs")


def save_checkpoint(accelerator, root: Path, step: int, keep: int, inputs: str) -> Path:
    """Every process calls this (Accelerate needs all ranks); the main process publishes and prunes."""
    final = checkpoint_path(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({"step": step, "inputs": inputs}))
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(final.with_name(final.name + UNREADABLE), ignore_errors=True)  # this step, damaged before
        os.replace(tmp, final)
        for _, old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def set_aside_unreadable(root: Path) -> list[tuple[Path, str]]:
    """Move each complete checkpoint that cannot be read (`unreadable`) to `step-N.unreadable`, where it is never
    resumed from nor counted among the kept ones (those newer than the last good one would otherwise stay "newest"
    and have the new good checkpoints rotated away), and which a save of that step replaces. Returns (where, why)."""
    moved = []
    for _, path in list_checkpoints(root):
        if (why := unreadable(path)) is not None:
            aside = path.with_name(path.name + UNREADABLE)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            moved.append((aside, why))
    return moved


def remove_partial(root: Path) -> None:
    """Leftovers of a save that was interrupted: never resumed from, safe to delete."""
    if root.is_dir():
        for entry in root.glob("*.tmp"):
            shutil.rmtree(entry, ignore_errors=True)
