"""Delete everything derived from one person: prepared crops, captions, face embeddings, reports, adapters,
checkpoints, generated images and local W&B files (in a folder linked in from another disk too), their rows in
batch status files and the Ray logs a batch that named them kept after a crash. With
--include-selfies, the photos (and the person's own settings.yaml) too.

    python -m service.purge --user alice [--include-selfies] [--config my.yaml] [-v] [paths.outputs_root=...]

Selfies and embeddings are biometric data; this is the one command that removes them. It sits on the top floor
because it knows every floor's files, the batch's status records included.
Runs on W&B's servers (only if you turned W&B online) must be deleted in your W&B account.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from headshots.cli import add_config_args, parse, print_error
from headshots.config import load_config
from headshots.errors import HeadshotsError
from headshots.workspace import Workspace, held_alone, lock_held, write_json_atomic
from infer.export import EXPORT_LOCK
from infer.manifest import IMAGES_LOCK
from service.batch import ABANDONED_AFTER_S, BATCH_LOCK, close_abandoned, delete_session, driver_gone, is_ray_session
from service.jobs import JOB_LOCK, JOBS_FOLDER
from train.checkpoint import TRAIN_LOCK

# the locks a running command of the person's holds in each run's folder, and what it is doing then
RUNNING = {TRAIN_LOCK: "training", IMAGES_LOCK: "generating, scoring or deleting images", EXPORT_LOCK: "exporting crops",
           f"{JOBS_FOLDER}/{JOB_LOCK}": "a job of the web app", BATCH_LOCK: "a batch"}


def derived_paths(workspace: Workspace, include_selfies: bool) -> list[Path]:
    """What purge deletes: without `include_selfies`, what the stages made in the person's data folder
    (`Workspace.made_from_photos`), never a file of their own beside selfies/ (`own_files`); with it, the whole
    folder. Intake's and prepare's locks stay with the photos they guard (they name no one): deleted while held, one
    would let a command starting meanwhile lock a new file of that name."""
    user_dir = [p for p in workspace.user_dir.iterdir()] if workspace.user_dir.is_dir() else []
    targets = [p for p in user_dir if workspace.made_from_photos(p)]
    if include_selfies and workspace.user_dir.is_dir():
        targets = [workspace.user_dir]
    if workspace.user_outputs.exists():
        targets.append(workspace.user_outputs)
    return targets


@contextmanager
def nothing_running(workspace: Workspace) -> Iterator[None]:
    """Hold, while the person's files are deleted, every lock their commands take (intake's in their data folder,
    training's and generation's in each run's folder): one still running (in a terminal, a web app that was killed,
    a batch) would otherwise write its reports, adapter, checkpoints or images back after the deletion said it was
    done. One that is running: refused, with nothing deleted."""
    runs = run_dirs(workspace)
    # Each lock is taken even where no command made it yet: one starting now (a run's first generation or export)
    # would make and take it, and write its images or crops after the deletion. A run made meanwhile is no gap: its
    # training asks the prepare lock, held here, and nothing else of a run starts before it has trained.
    locks = ([(workspace.intake_lock, "checking their photos"), (workspace.prepare_lock, "preparing their photos")]
             if workspace.user_dir.is_dir() else [])
    locks += [(run_dir / lock, f"run {run_dir.name!r}: {doing}") for run_dir in runs for lock, doing in RUNNING.items()
              if (run_dir / lock).parent.is_dir()]  # the web app's jobs folder: once it ran a job there
    with ExitStack() as held:
        for lock, doing in locks:
            try:
                held.enter_context(held_alone(lock, in_use(workspace, doing)))
            except OSError as exc:  # not a file we can lock (a folder, someone else's file)
                raise HeadshotsError(f"Could not check whether {workspace.user}'s data is in use: {lock} cannot be "
                                     f"locked ({exc.strerror}); nothing was deleted.",
                                     "Remove that file (no command of the person's may be running), then delete again.") from exc
        yield


def run_dirs(workspace: Workspace) -> list[Path]:
    return sorted(p for p in workspace.user_outputs.iterdir() if p.is_dir()) if workspace.user_outputs.is_dir() else []


def in_use(workspace: Workspace, doing: str) -> HeadshotsError:
    return HeadshotsError(f"{workspace.user}'s data is in use ({doing}) in a terminal, the web app or a batch: nothing "
                          "was deleted.", "Stop it, or let it finish, then delete again.")


def refuse_while_a_batch_runs(workspace: Workspace) -> None:
    """Refused when a batch holds one of the person's runs: asked before the web app stops the person's own job
    for a deletion (`nothing_running` would refuse the deletion anyway, after their training had been stopped
    for nothing). A web-app job never takes a batch's lock, so a held one is always someone else's."""
    for run_dir in run_dirs(workspace):
        if lock_held(run_dir / BATCH_LOCK):
            raise in_use(workspace, f"run {run_dir.name!r}: {RUNNING[BATCH_LOCK]}")


def purge(workspace: Workspace, include_selfies: bool = False) -> list[str]:
    """Everything derived from the person (and their photos with `include_selfies`), then their rows in batch
    records; refused while one of their commands runs (`nothing_running`). Returns what was done, one line each
    ("removed <path>", ...)."""
    done = []
    with nothing_running(workspace):
        for path in derived_paths(workspace, include_selfies):
            # the person's photos may be linked in from elsewhere; in outputs, a folder linked in (a run moved to a
            # bigger disk) holds only what was made from them, and goes too (`delete_linked_folders`)
            linked = links_in(path) if path != workspace.user_outputs else []
            if path == workspace.user_outputs:
                done += delete_linked_folders(workspace)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            done.append(f"removed {path}")
            done += [f"kept {target}: only the link {link} to it was removed (it is stored elsewhere; delete it there "
                     "if it is theirs)" for link, target in linked]
    return done + scrub_batch_records(workspace)


def own_files(workspace: Workspace) -> list[Path]:
    """What is in the person's data folder that no stage made, besides their photos and settings: files of their
    own (a photo put beside selfies/), which purge keeps without ALL=1 and names."""
    if not workspace.user_dir.is_dir():
        return []
    kept = (workspace.selfies, workspace.person_settings, workspace.intake_lock, workspace.prepare_lock)
    return sorted(p for p in workspace.user_dir.iterdir()  # hidden ones (a .DS_Store) are the system's: not named
                  if p not in kept and not p.name.startswith(".") and not workspace.made_from_photos(p))


def links_in(path: Path) -> list[tuple[Path, Path]]:
    """(link, what it points to) for `path` and every symbolic link inside it that points outside it to something
    there: deleting removes the link, never what it points to, and the person is told where that is (a photo folder
    linked in from elsewhere keeps its photos). Links within the folder (W&B's latest-run) go with it; a broken or
    looping link keeps nothing."""
    found = [path] if path.is_symlink() else []
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):  # does not follow links
            found += [Path(folder) / name for name in dirs + files if (Path(folder) / name).is_symlink()]
    inside = path.resolve() if not path.is_symlink() else None
    kept = []
    for link in found:
        try:
            target = link.resolve(strict=True)
        except (OSError, RuntimeError):  # broken, or a loop
            continue
        if inside is None or not target.is_relative_to(inside):
            kept.append((link, target))
    return kept


def delete_linked_folders(workspace: Workspace) -> list[str]:
    """Delete the folders that the person's outputs folder, or a folder in it, links to elsewhere (a run moved to
    another disk, `outputs/<user>` itself a link): everything in outputs is made from the person's photos, and
    removing only the link left their adapters and images there while purge said "removed". A link to a file is
    the tools' own (W&B links its debug-core.log into its cache in the home folder; it names no one) and is only
    unlinked. A folder that holds the project's own roots or the home folder is never deleted: it is named as kept.
    Returns what was done, one line each."""
    done = []
    for link, target in links_in(workspace.user_outputs):
        if not target.is_dir():
            continue
        holds = [root for root in (workspace.outputs_root, workspace.data_root, Path.home(), Path.cwd())
                 if root.resolve().is_relative_to(target)]
        if holds:
            done.append(f"kept {target}: {link} links to it, and it holds {holds[0]}; delete the person's files there by hand")
            continue
        shutil.rmtree(target)
        done.append(f"removed {target} (linked from {link})")
    return done


def scrub_batch_records(workspace: Workspace) -> list[str]:
    """Take the person out of every batch status file (their name, stage reasons with paths, likeness); a batch
    with no one else in it goes entirely. A file that cannot be read is left as it is and named, so that nothing
    is lost and the person's row can be removed by hand. A batch whose process was killed is closed first, as the
    next batch would (its Ray logs, which name the person, deleted), before its status file can go. Returns what
    was done, one line each."""
    done = [f"closed batch {batch}, which had been killed (its Ray logs deleted unless a stage had crashed)"
            for batch in close_abandoned(workspace.batch_root)]
    for status in sorted(workspace.batch_root.glob("*/status.json")):
        try:
            record = json.loads(status.read_text())
            people = [p for p in record["people"] if p.get("user") != workspace.user]
            found = len(people) < len(record["people"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            done.append(f"could not read {status} ({type(exc).__name__}): left as it is; remove {workspace.user!r} from it by hand")
            continue
        if found:
            done += drop_kept_ray_logs(record, status, workspace.user)
        if found and people:
            write_json_atomic(status, {**record, "people": people})
            done.append(f"removed {workspace.user} from {status}")
        elif found:
            shutil.rmtree(status.parent)
            done.append(f"removed {status.parent}")
    return done


def drop_kept_ray_logs(record: dict, status: Path, user: str) -> list[str]:
    """The Ray session folder a batch that named the person kept (a stage crashed, and its hint points there): its
    worker logs name the people and their files, and purge took the status file, the one pointer to them, away.
    A finished batch's is deleted; a running batch's is in use, and is named, as is one killed so recently that
    `close_abandoned` waits for its file to settle. Returns what was done."""
    session = Path(record["ray_session"]) if record.get("ray_session") else None
    if session is None or record.get("host") != socket.gethostname() or not is_ray_session(session):
        return []
    if not record.get("finished"):
        if driver_gone(record):
            return [(f"kept {session} for now: batch {status.parent.name} was killed moments ago and its Ray logs name "
                     f"{user}; run this again in {ABANDONED_AFTER_S:.0f} s to close that batch and delete them")]
        return [(f"kept {session}: batch {status.parent.name} is still running and its Ray logs name {user}; it "
                 "deletes them when it ends, unless a stage crashes: then delete that folder")]
    delete_session(session)
    return [f"removed {session} (Ray logs of batch {status.parent.name}, kept after a crash; they name {user})"]


DELETE_THEM_TOO = "{} or --include-selfies here deletes them too"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.purge",
                                     description="Delete everything stored about one person (with --include-selfies, their photos too).")
    parser.add_argument("--user", required=True, help="whose data: data/users/<user>/ and outputs/<user>/")
    parser.add_argument("--include-selfies", action="store_true", help="also delete the original photos")
    add_config_args(parser, profile_help="the profile used for training, when it moved paths.*",
                    config_help="the YAML file used for training, when it moved paths.*",
                    overrides_help="e.g. paths.data_root=... (as used for training)")
    args = parse(parser, argv)
    try:
        cfg = load_config(args.user, args.profile, args.config, args.overrides, with_person_settings=False)
        workspace = Workspace.from_config(cfg)
    except HeadshotsError as exc:
        return print_error(exc, args.verbose)
    try:
        done = purge(workspace, args.include_selfies)
    except HeadshotsError as exc:
        return print_error(exc, args.verbose)
    for line in done:
        print(line)
    if not done:
        print(f"nothing made from the photos of {args.user!r} is stored" if workspace.selfies.exists() else f"nothing stored for {args.user!r}")
    if not args.include_selfies and workspace.selfies.exists():
        print(f"kept the original photos in {workspace.selfies} ({DELETE_THEM_TOO.format(workspace.make_command('purge', ALL='1'))})")
    if not args.include_selfies and workspace.person_settings.exists():
        print(f"kept the person's own settings in {workspace.person_settings} "
              f"({DELETE_THEM_TOO.format(workspace.make_command('purge', ALL='1'))})")
    for path in [] if args.include_selfies else own_files(workspace):
        print(f"kept {path}: not made by this project, so perhaps the person's own "
              f"({DELETE_THEM_TOO.format(workspace.make_command('purge', ALL='1'))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
