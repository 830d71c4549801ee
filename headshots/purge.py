"""Delete everything derived from one person: prepared crops, captions, face embeddings, reports, adapters,
checkpoints, generated images and local W&B files. With --include-selfies, the photos too.

    python -m headshots.purge --user alice [--include-selfies] [paths.outputs_root=...]

Selfies and embeddings are biometric data; this is the one command that removes them.
Runs on W&B's servers (only if you turned W&B online) must be deleted in your W&B account.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from headshots.config import load_config
from headshots.errors import HeadshotsError
from headshots.workspace import Workspace


def derived_paths(workspace: Workspace, include_selfies: bool) -> list[Path]:
    user_dir = [p for p in workspace.user_dir.iterdir()] if workspace.user_dir.is_dir() else []
    targets = [p for p in user_dir if include_selfies or p != workspace.selfies]
    if include_selfies and workspace.user_dir.is_dir():
        targets = [workspace.user_dir]
    if workspace.user_outputs.exists():
        targets.append(workspace.user_outputs)
    return targets


def purge(workspace: Workspace, include_selfies: bool = False) -> list[Path]:
    removed = []
    for path in derived_paths(workspace, include_selfies):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    return removed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headshots.purge", description=__doc__.splitlines()[0])
    parser.add_argument("--user", required=True)
    parser.add_argument("--include-selfies", action="store_true", help="also delete the original photos")
    parser.add_argument("overrides", nargs="*", help="e.g. paths.data_root=... (as used for training)")
    args = parser.parse_intermixed_args(argv)
    try:
        workspace = Workspace.from_config(load_config(args.user, "sdxl", None, args.overrides))
    except HeadshotsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    removed = purge(workspace, args.include_selfies)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print(f"nothing stored for {args.user!r}")
    elif not args.include_selfies and workspace.selfies.exists():
        print(f"kept the original photos in {workspace.selfies} (add --include-selfies to delete them too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
