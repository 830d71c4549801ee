"""Where each stage reads and writes, for one user. The one place that knows the layout.

    data/users/<user>/selfies/                  input photos, never modified
    data/users/<user>/intake.json               quality gate: per-photo checks, verdicts, advice; set verdict
    data/users/<user>/intake.html               the same as a page with thumbnails
    data/users/<user>/prepared/                 Hugging Face dataset (crops, captions, face boxes)
    data/users/<user>/captions.json             {photo file: caption}; the person's edits win on re-prepare
    data/users/<user>/prepare_report.json       kept / rejected per photo, with reasons
    data/users/<user>/reference.safetensors     FaceNet embeddings of the kept photos
    outputs/<user>/<run>/adapter/               LoRA weights + resolved config
    outputs/<user>/<run>/checkpoints/step-N/    resumable training state
    outputs/<user>/<run>/samples/               images, scores.json, gallery.html, favourites.json
    outputs/<user>/<run>/wandb/                 local W&B files
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout

from headshots.config import PERSON_SETTINGS, Config, validate_user_name
from headshots.errors import HeadshotsError, first_line
from headshots.images import FORMATS, list_photos, named_as_image
from headshots.logs import get_logger, plural

log = get_logger(__name__)

# What an adapter folder holds (written by train/lora.py, read by infer/generate.py).
ADAPTER_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers / peft: pipe.load_lora_weights(folder)
ADAPTER_EMBEDDINGS = "embeddings.safetensors"  # pivotal tuning only: {"clip_l": (k, 768), "clip_g": (k, 1280)}
ADAPTER_INFO = "adapter.json"  # the adapter's metadata as JSON: trigger, class, rank, base model
ADAPTER_KOHYA = "lora_kohya.safetensors"  # the same weights in lora_unet_* keys: AUTOMATIC1111, ComfyUI, kohya sd-scripts

# Files one module writes and others (another stage, the web app, the batch) read; formats in docs/ARCHITECTURE.md.
DATASET_INFO = "dataset_info.json"  # written last by datasets' save_to_disk: the prepared dataset is complete
PROGRESS_FILE = "progress.json"  # train/recipe.py: the training loop's position, for watchers
VALIDATION_FILE = "validation.json"  # train/validation.py: likeness per validation step, and the best
SCORES = "scores.json"  # infer/score.py: every image's likeness and verdict, in samples/
GALLERY = "gallery.html"  # infer/gallery.py: the review page, in samples/
EXPORT_MANIFEST = "export.json"  # infer/export.py: the crops made, in export/


def case_twin(user: str, *roots: Path) -> Path | None:
    """The folder in `roots` whose name differs from `user` only in case ("alice" for "Alice"), when `user` has none
    of its own in any of them. On Linux the two would be two people's folders, on macOS and Windows one: either way
    one person could reach the other's photos, or have two accounts without knowing. A folder of the exact name, in
    either root, is the person's own (two made on Linux before this check each stay reachable, and deletable),
    unless the other root would open the twin's folder for that name (a case-insensitive disk there)."""
    listed = []
    for root in roots:
        try:
            listed.append((root, [p.name for p in root.iterdir()]))  # listed: on macOS `(root / "Alice").exists()` finds alice
        except OSError:  # no folder yet: nobody to be confused with
            continue
    own = any(user in names for _, names in listed)
    for root, names in listed:
        twin = next((name for name in names if name.casefold() == user.casefold() and name != user), None)
        # the person's own folder elsewhere: refused only where this root would give them the twin's (macOS, Windows)
        if twin is not None and user not in names and (not own or (root / user).exists()):
            return root / twin
    return None


def private_files() -> None:
    """Every file and folder this process makes from now on is its login's alone (umask 077: files 0600, folders
    0700), and so are those of the processes it starts (Ray's workers, `accelerate launch`): the stages write face
    crops, embeddings, adapters and images of a face, which are biometric data. Before, a file written through a
    temporary one was 0600 while crops, images and configs were 0644, readable by every account of a shared machine
    (a batch walk). Every command line (`headshots.cli.parse`) sets it first."""
    os.umask(0o077)


def batch_root(outputs_root: Path) -> Path:
    """<id>/status.json per batch run (service/batch.py): every person in it, their stages, reasons and likeness.
    No one's: the batch finds it without a person's name, whose folder might refuse it (`case_twin`)."""
    return outputs_root / "batch"


@dataclass(frozen=True)
class Workspace:
    user: str
    data_root: Path
    outputs_root: Path
    make_flags: str = ""  # what a `make` command in a hint needs besides USER= to reach these files (RUN=, PROFILE=)
    photos_wanted: str = "5-20"  # how many photos a hint asks for (IntakeConfig.photos_wanted)

    @classmethod
    def from_config(cls, cfg: Config) -> Workspace:
        flags = "".join(f" {name}={value}" for name, value, default in (("RUN", cfg.run, "default"), ("PROFILE", cfg.profile, "sdxl"))
                        if value != default)
        user, roots = validate_user_name(cfg.user), (Path(cfg.paths.data_root), Path(cfg.paths.outputs_root))
        twin = case_twin(user, *roots)
        if twin is not None:
            raise HeadshotsError(f"User name {user!r} differs from {twin.name!r} only in case, and {twin} is that "
                                 "person's folder: user names ignore case (macOS and Windows keep one folder for both).",
                                 f"Use the name {twin.name!r} if that is you; otherwise pick another.")
        return cls(user, *roots, flags, cfg.intake.photos_wanted)

    def make_command(self, target: str, **variables: str) -> str:
        """The `make` command a hint tells the person to run, for this person, run and profile:
        make_command("discard", IMAGES="a.png") -> "make discard USER=alice RUN=second IMAGES=a.png"."""
        return " ".join([f"make {target} USER={self.user}{self.make_flags}", *(f"{k}={v}" for k, v in variables.items())])

    # -- per-user data (biometric: never leaves the machine) --------------------------------
    @property
    def user_dir(self) -> Path:
        return self.data_root / self.user

    @property
    def selfies(self) -> Path:
        return self.user_dir / "selfies"

    @property
    def person_settings(self) -> Path:
        """What the person chose (headshots.config.person_settings): their input, like the photos."""
        return self.user_dir / PERSON_SETTINGS

    @property
    def intake_report(self) -> Path:
        return self.user_dir / "intake.json"

    @property
    def intake_page(self) -> Path:
        return self.user_dir / "intake.html"

    @property
    def intake_lock(self) -> Path:
        """Held while intake runs (train.intake.intake_alone) and while the person's data is deleted (service.purge)."""
        return self.user_dir / ".intake.lock"

    @property
    def prepare_lock(self) -> Path:
        """Held while prepare rewrites the prepared photos, which every run of the person trains on
        (train.checkpoint.preparing_alone); a training of any run checks it as it starts."""
        return self.user_dir / ".prepare.lock"

    @property
    def prepared(self) -> Path:
        return self.user_dir / "prepared"

    @property
    def captions(self) -> Path:
        return self.user_dir / "captions.json"

    @property
    def prepared_rows(self) -> list[Path]:
        """The prepared dataset's Arrow files, which hold its rows (photos, crops, captions): prepare writes them byte
        for byte the same when it makes the same rows, so their bytes tell whether what training reads changed."""
        return sorted(self.prepared.glob("*.arrow"))

    @property
    def is_prepared(self) -> bool:
        return (self.prepared / DATASET_INFO).is_file()

    @property
    def prepare_report(self) -> Path:
        return self.user_dir / "prepare_report.json"

    @property
    def reference_embeddings(self) -> Path:
        return self.user_dir / "reference.safetensors"

    @property
    def user_stage_records(self) -> Path:
        """The intake and prepare stages' records (headshots/stages.py)."""
        return self.user_dir / "stages"

    def made_from_photos(self, path: Path) -> bool:
        """Whether `path`, in the person's data folder, is one of the files the stages make there from the photos,
        or a stage's unfinished copy of one (`prepared.tmp`, `prepared.old`, `.intake.json.<random>.tmp`): what
        `make purge` deletes without ALL=1. Anything else there (a photo put beside selfies/) is the person's own."""
        made = (self.intake_report, self.intake_page, self.prepared, self.captions, self.prepare_report,
                self.reference_embeddings, self.user_stage_records)
        return any(path.parent == ours.parent and (path.name in (ours.name, f"{ours.name}.tmp", f"{ours.name}.old")
                                                   or (path.name.startswith(f".{ours.name}.") and path.name.endswith(".tmp")))
                   for ours in made)

    # -- per-run outputs ----------------------------------------------------------------------
    @property
    def user_outputs(self) -> Path:
        return self.outputs_root / self.user

    def run_dir(self, run: str) -> Path:
        return self.user_outputs / run

    def adapter_dir(self, run: str) -> Path:
        return self.run_dir(run) / "adapter"

    def best_adapter_dir(self, run: str) -> Path:
        """The adapter from the validation with the highest face similarity (train.validation)."""
        return self.run_dir(run) / "adapter-best"

    def checkpoints_dir(self, run: str) -> Path:
        return self.run_dir(run) / "checkpoints"

    def samples_dir(self, run: str) -> Path:
        return self.run_dir(run) / "samples"

    def scores(self, run: str) -> Path:
        return self.samples_dir(run) / SCORES

    def gallery(self, run: str) -> Path:
        return self.samples_dir(run) / GALLERY

    def progress(self, run: str) -> Path:
        return self.run_dir(run) / PROGRESS_FILE

    def validation(self, run: str) -> Path:
        return self.run_dir(run) / VALIDATION_FILE

    def validation_images(self, run: str) -> Path:
        """The images each validation step sampled (train/validation.py)."""
        return self.run_dir(run) / "validation"

    def export_manifest(self, run: str) -> Path:
        return self.run_dir(run) / "export" / EXPORT_MANIFEST

    def favourites(self, run: str) -> Path:
        """The images the person ticked as favourites in the web app, kept for when they come back."""
        return self.samples_dir(run) / "favourites.json"

    def wandb_dir(self, run: str) -> Path:
        return self.run_dir(run) / "wandb"

    # -- records that name several people ----------------------------------------------------
    @property
    def batch_root(self) -> Path:
        return batch_root(self.outputs_root)

    # -- checks with advice ------------------------------------------------------------------
    def _alike(self) -> str | None:
        """For a name mistyped: a person with a photos folder here whose name is spelt alike."""
        people = [p.name for p in self.data_root.iterdir() if (p / "selfies").is_dir()] if self.data_root.is_dir() else []
        return next(iter(difflib.get_close_matches(self.user, people, n=1, cutoff=0.75)), None)

    def require_selfies(self) -> list[Path]:
        """Every file in the selfie folder (each stage judges what it can read), refusing a missing or empty one."""
        if self.selfies.exists() and not self.selfies.is_dir():
            raise HeadshotsError(f"{self.selfies} is a file, not a folder of photos.",
                                 f"Rename or move that file, then make {self.selfies} a folder and put {self.photos_wanted} "
                                 f"photos of {self.user} in it ({FORMATS}).")
        if not self.selfies.is_dir():
            create = f"Create it and put {self.photos_wanted} photos of {self.user} in it ({FORMATS})."
            beside = [p.name for p in list_photos(self.user_dir) if p.is_file() and named_as_image(p)] \
                if self.user_dir.is_dir() else []
            if beside:  # put in the person's folder itself, one level up
                create = f"Create it and move the {plural(len(beside), 'file')} in {self.user_dir} into it ({', '.join(beside[:3])}{' ...' if len(beside) > 3 else ''})."
            alike = self._alike()
            raise HeadshotsError(f"No selfie folder for user {self.user!r}: {self.selfies} does not exist.",
                                 f"Did you mean {alike}? If not: {create}" if alike else create)
        photos = list_photos(self.selfies)
        if not photos:
            raise HeadshotsError(f"{self.selfies} is empty.", f"Add {self.photos_wanted} recent photos of yourself, alone, face visible.")
        return photos

    def require_prepared(self) -> Path:
        if not self.is_prepared:
            raise HeadshotsError(
                f"User {self.user!r} has no prepared dataset at {self.prepared}.",
                f"Run the prepare stage first: {self.make_command('prepare')}",
            )
        return self.prepared

    def load_prepared(self):
        """The prepared dataset (a `datasets.Dataset`), refused with how to make it again when its files cannot be read
        (an Arrow file cut short, dataset_info.json edited): datasets' OSError or JSONDecodeError was a traceback."""
        import datasets

        prepared = self.require_prepared()
        try:
            return datasets.load_from_disk(str(prepared))
        except (OSError, ValueError) as exc:
            raise HeadshotsError(f"The prepared photos at {prepared} cannot be read ({first_line(exc)}): "
                                 "a file of them is cut short or damaged.",
                                 f"Prepare the photos again: {self.make_command('prepare')}") from exc

    def require_adapter(self, run: str, which: str = "last") -> Path:
        """The adapter to generate with: the last one trained, or the best by validation likeness."""
        adapter = self.best_adapter_dir(run) if which == "best" else self.adapter_dir(run)
        if not (adapter / ADAPTER_WEIGHTS).is_file():
            hint = ("Train with validation on (train.validation.every=100) to get one, or use infer.adapter=last"
                    if which == "best" else f"Train one first: {self.make_command('train')}")
            trained = sorted(weights.parent.parent.name for weights in self.user_outputs.glob(f"*/adapter/{ADAPTER_WEIGHTS}"))
            if trained and run not in trained:  # a mistyped or forgotten RUN=
                hint += f" (runs of {self.user} with an adapter: {', '.join(trained)}; choose one with RUN=)"
            what = "trained adapter" if which == "last" else "best adapter"
            raise HeadshotsError(f"No {what} for user {self.user!r}, run {run!r} at {adapter}.", hint)
        return adapter

    def require_reference(self) -> Path:
        if not self.reference_embeddings.is_file():
            raise HeadshotsError(
                f"No reference face embeddings for user {self.user!r} at {self.reference_embeddings}.",
                f"Run the prepare stage first: {self.make_command('prepare')}",
            )
        return self.reference_embeddings


def ticked_files(workspace: Workspace, run: str) -> list[str]:
    """The images the person last ticked as favourites (favourites.json, saved by the web app at each tick), there
    or deleted since, or none: an unreadable file counts as no ticks, which loses no work. Only file names in
    samples/ count, never a path elsewhere."""
    try:
        files = json.loads(workspace.favourites(run).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and f == Path(f).name] if isinstance(files, list) else []  # no paths


def read_favourites(workspace: Workspace, run: str) -> list[str]:
    """The ticked images that are still there (a deleted image's tick is ignored)."""
    samples_dir = workspace.samples_dir(run)
    return [f for f in ticked_files(workspace, run) if (samples_dir / f).is_file()]


def chosen_files(cfg: Config) -> list[str]:
    """What the person picked to export: `infer.export_files`, else their favourites; [] when they picked nothing,
    which exports every kept image (infer/export.py, and the export stage's record in headshots/stages.py)."""
    return list(cfg.infer.export_files) or read_favourites(Workspace.from_config(cfg), cfg.run)


def save_favourites(workspace: Workspace, run: str, files: list[str]) -> None:
    """The web app, at each tick; read by export and by the export stage's record (headshots/stages.py)."""
    write_json_atomic(workspace.favourites(run), {"files": list(files)})


def file_digest(*paths: Path) -> str:
    """A short sha256 of the files' contents, in order: what a record keeps to tell whether its inputs changed (the
    face-detail pass, the batch's stage fingerprints)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(_content_digest(path))
    return digest.hexdigest()[:16]


def add_files_to_digest(digest: hashlib._Hash, root: Path, paths: list[Path]) -> None:
    """Feed each file's name (relative to `root`) and contents into `digest`: a file added, removed, renamed or
    changed changes it (the selfies behind a stage's fingerprint, the dataset rows behind a checkpoint)."""
    for path in paths:
        # the name's own bytes: a name of another system's encoding cannot be UTF-8 (same bytes for every other)
        digest.update(os.fsencode(path.relative_to(root)) + b"\0" + _content_digest(path))


def _content_digest(path: Path) -> bytes:
    """sha256 of a file's bytes; of a safetensors file, of its header with the keys in order and its tensors' bytes.
    The safetensors library writes the header's metadata in an order that changes from one save to the next (a Rust
    HashMap), so an adapter exported again unchanged had another digest, and the chain drew a round of images again
    and the face-detail pass re-drew every face."""
    with path.open("rb") as f:
        if path.suffix == ".safetensors" and (header := _safetensors_header(f)) is not None:
            return hashlib.sha256(json.dumps(header, sort_keys=True).encode() + hashlib.file_digest(f, "sha256").digest()).digest()
        f.seek(0)
        return hashlib.file_digest(f, "sha256").digest()


def _safetensors_header(f: BinaryIO) -> dict | None:
    """The JSON header of the safetensors file open at its start, leaving `f` at the tensors' bytes; None when the
    file is not one (it is then digested as bytes)."""
    size = int.from_bytes(f.read(8), "little")
    if not 0 < size <= 100_000_000:  # the format's own limit on a header
        return None
    try:
        header = json.loads(f.read(size))
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def safetensors_unreadable(path: Path) -> str | None:
    """Why a safetensors file cannot be loaded, in a line, or None: opening it checks that every tensor its header
    names fits in the file, so a file cut short (a full disk, an interrupted copy) is told here, in a second, rather
    than by a traceback once a model has loaded."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as exc:
        return first_line(exc)
    return None


def replace_folder(new: Path, old: Path) -> None:
    """Swap the finished folder `new` in for `old` by renames (the old one is removed after): a reader, or a crash,
    never meets half of one or a mix of the two."""
    retired = old.with_name(f"{old.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if old.exists():
        old.rename(retired)
    new.rename(old)
    shutil.rmtree(retired, ignore_errors=True)


# A temporary file of `write_atomic` whose writer is not running on this machine any more (kill -9, a killed Ray
# worker), or this old (a writer on another machine of a shared disk: a write takes well under a second), is deleted
# by the next write into its folder
ABANDONED_AFTER_S = 600


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a temporary file renamed over it (`write` fills the temporary file, by its path): a reader
    in another process (the web app, a status poller, the next run) sees the old file or the new one, never half of
    one; a write the disk refuses (full, read-only) leaves the old file and no temporary one; a writer killed midway
    leaves no empty or half file under the name (a killed batch worker left a 0-byte image, which the retry drew
    around), and its temporary file goes with the next write into the folder (`_abandoned`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # one temporary file per writer (two writers of one name would publish each other's half), named by its machine
    # and process, readable by the person's login only, as the biometric data in these folders should be
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer()}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(name))
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write's own error is the one to report
            os.unlink(name)
        raise
    for left in _abandoned(path.parent):
        with contextlib.suppress(OSError):  # deleted meanwhile by another writer
            left.unlink()


HOST = socket.gethostname().replace(".", "-")


def writer() -> str:
    """<host>-<pid>, in each temporary file's name: asked at each write, so a forked child names its own process."""
    return f"{HOST}-{os.getpid()}"


def _abandoned(folder: Path) -> list[Path]:
    """Temporary files of `write_atomic` in `folder` whose writer is gone: a process of this machine that has ended,
    or any writer's, once older than ABANDONED_AFTER_S."""
    old = time.time() - ABANDONED_AFTER_S
    found = []
    for temporary in folder.glob(".*.tmp"):
        tag = temporary.name.removesuffix(".tmp").split(".")[-2]  # .<name>.<host>-<pid>.<random>.tmp
        there, _, pid = tag.rpartition("-")
        try:
            if (there == HOST and pid.isdigit() and not process_running(int(pid))) or temporary.stat().st_mtime < old:
                found.append(temporary)
        except OSError:  # gone meanwhile
            continue
    return found


def process_running(pid: int) -> bool:
    """Whether a process of this machine has that number (a killed writer's, a killed batch's driver)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another login's process has that number now
        return True
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """`text` (UTF-8) into `path`, by `write_atomic`; a file name no UTF-8 can hold (bytes of another system's
    encoding) written as escapes, not a traceback."""
    write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8", errors="backslashreplace"))


def write_json_atomic(path: Path, data: object, indent: int | None = 2) -> None:
    """`data` as JSON (UTF-8: people read some of these files), by `write_text_atomic`; with \\u escapes only where a
    string no UTF-8 can hold (a Latin-1 file name) would otherwise be written, so it reads back the same."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, indent=indent)
    write_text_atomic(path, text + "\n")


# How long a command tries for a lock before it is refused: long enough that a look (`lock_held`)
# never refuses a command, far too short to be waiting for the work of another.
LOCK_GRACE_S = 0.25


@contextmanager
def held_alone(lock_path: Path, busy: HeadshotsError) -> Iterator[None]:
    """Hold `lock_path` while the block runs, across processes (the CLI, the web app and its jobs, a batch's workers):
    two commands writing one person's files at once each write back what they read, or train over each other.
    A second one gets `busy` (what is running, what to do) instead of waiting. Reentrant in one thread: a command
    calling another holds it once. The operating system lets go of a killed holder's lock."""
    lock = FileLock(lock_path, timeout=LOCK_GRACE_S, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        raise busy from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def held_in_turn(lock_path: Path, waiting: str) -> Iterator[None]:
    """Hold `lock_path` while the block runs, waiting for a holder in another process to finish first (logging
    `waiting` once): for work any command may do and the next one reuses (the class images every user shares), where
    refusing would only make the person run it again."""
    lock = FileLock(lock_path, is_singleton=True)
    try:
        lock.acquire(timeout=LOCK_GRACE_S)
    except Timeout:
        log.info("%s", waiting)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def lock_held(lock_path: Path) -> bool:
    """Whether a command holds `lock_path` now (`held_alone`), in any process, this one too: for saying what runs (a training started in a terminal,
    seen from the web app), not for deciding to write, which takes the lock itself. A lock file never made was never
    held, and is not made here."""
    if not lock_path.exists():
        return False
    look = FileLock(lock_path, timeout=0)  # an instance of its own: held in this process too, it is refused
    try:
        look.acquire()
    except Timeout:
        return True
    look.release()
    return False
