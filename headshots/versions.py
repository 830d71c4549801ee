"""Is this environment one the project works in?

Two checks for two kinds of user:

- `lock_mismatches()`: a checkout set up by `make setup` must hold exactly what `requirements.lock`
  (and `requirements-nodeps.txt`) pin. `tests/test_versions.py` runs it in `make test`, so an
  environment that drifted fails the suite with the fix named, instead of failing somewhere else.
- `check_runtime_versions()`: someone who installed the package into an environment of their own gets
  a clear error before any model loads, for the pairings of transformers, peft and diffusers that
  otherwise break deep inside a run (a ValueError from transformers half-way through training).
  The floors are read from the libraries themselves, so the check stays right when they move.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from headshots.errors import HeadshotsError

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILES = (ROOT / "requirements.lock", ROOT / "requirements-nodeps.txt")
FIX_DRIFT = "make setup  (installs exactly requirements.lock; `make lock` first if you changed pyproject.toml on purpose)"

VersionOf = Callable[[str], "str | None"]


def installed_version(package: str) -> str | None:
    """The installed distribution's version, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    source: str  # the lock file that pins it


def read_pins(lock_text: str, source: str) -> list[Pin]:
    """`name==version [; marker]` lines of a pip/uv requirements file whose marker applies here."""
    pins = []
    for line in lock_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins.append(Pin(req.name, exact[0], source))
    return pins


def lock_mismatches(lock_files: Iterable[Path] = LOCK_FILES, version_of: VersionOf = installed_version) -> list[str]:
    """One line per pinned package whose installed version differs from its pin (or is missing)."""
    problems = []
    for lock in lock_files:
        for pin in read_pins(lock.read_text(), lock.name):
            found = version_of(pin.package)
            if found is None:
                problems.append(f"{pin.package}: not installed, {pin.source} pins {pin.version}")
            elif Version(found) != Version(pin.version):
                problems.append(f"{pin.package}: {found} installed, {pin.source} pins {pin.version}")
    return problems


@dataclass(frozen=True)
class Floor:
    """`needs` at version >= `minimum`, as `declared_by` (a library, at its installed version) requires."""

    needs: str
    minimum: str
    declared_by: str
    why: str


def _declared_floor(module: str, attribute: str) -> str | None:
    """A minimum version a library declares in its own code (None if this version declares none)."""
    try:
        return getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return None


def library_floors() -> list[Floor]:
    """The version floors transformers and diffusers enforce at run time, read from their own code."""
    floors = []
    if (peft_for_transformers := _declared_floor("transformers.integrations.peft", "MIN_PEFT_VERSION")):
        floors.append(Floor("peft", peft_for_transformers, "transformers",
                            "to put LoRA on the text encoders and to load adapters into them"))
    if (peft_for_diffusers := _declared_floor("diffusers.utils.constants", "MIN_PEFT_VERSION")):
        floors.append(Floor("peft", peft_for_diffusers, "diffusers", "for its LoRA support (load_lora_weights)"))
    if (tf_for_diffusers := _declared_floor("diffusers.utils.constants", "MIN_TRANSFORMERS_VERSION")):
        floors.append(Floor("transformers", tf_for_diffusers, "diffusers", "for its LoRA support (load_lora_weights)"))
    return floors


def runtime_version_problems(floors: Iterable[Floor], version_of: VersionOf = installed_version) -> list[str]:
    problems = []
    for floor in floors:
        found = version_of(floor.needs)
        if found is None or Version(found) < Version(floor.minimum):
            have = f"{floor.needs} {found} is installed" if found else f"{floor.needs} is not installed"
            problems.append(
                f"{have}, but {floor.declared_by} {version_of(floor.declared_by)} needs "
                f"{floor.needs} >= {floor.minimum} {floor.why}"
            )
    return problems


@functools.cache
def check_runtime_versions() -> None:
    """Stop with a clear error when transformers, peft and diffusers cannot work together.

    Called by the model loaders (headshots.sdxl) before anything loads; cached, so it costs once."""
    problems = runtime_version_problems(library_floors())
    if problems:
        raise HeadshotsError(
            "These library versions do not work together: " + "; ".join(problems) + ".",
            "Install the versions this project is tested with: `make setup` in a checkout, or "
            "`pip install -r requirements.lock`; in an environment of your own, upgrade the package named above "
            "or keep transformers within the range pyproject.toml gives.",
        )
