"""Whether the disk holds a first `make setup`: run by it before anything is installed (standard library only).

A fresh clone's `make setup`, `make demo` and `make test` took at most 6.2 GiB of the disk, nearly all of it the
environment and nearly all of that torch's CUDA build (free space read every 3 s through a CI run, 2026-12-07, with
uv's cache already holding the packages it hard-links into .venv: with an empty cache, up to 0.7 GiB more, as `du`
counts .venv at 6.9 GiB). make setup asks for 6.5 GiB. Without this check, pip stopped half-way with "No space left
on device", having uninstalled and replaced part of the environment already (seen in CI). Where torch is installed
already, setup adds little, and nothing is asked.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def shortfall(venv: Path, needed_gib: float) -> str | None:
    """What to tell the person when `venv`'s disk has less than `needed_gib` free for a first setup; else None."""
    if any(venv.glob("lib/python*/site-packages/torch/__init__.py")):
        return None
    free_gib = shutil.disk_usage(next(p for p in (venv, *venv.parents) if p.exists())).free / 2**30
    if free_gib >= needed_gib:
        return None
    return (f"error: make setup needs about {needed_gib:g} GiB free for {venv} (torch with its CUDA libraries is most of it); "
            f"the disk has {free_gib:.1f} GiB free.\n"
            "Free some space (or put the project on a larger disk), then run make setup again; SETUP_GIB=0 skips this check.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--needed-gib", type=float, required=True, help="(make setup: SETUP_GIB)")
    args = parser.parse_args(argv)
    message = shortfall(args.venv, args.needed_gib)
    if message:
        print(message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
