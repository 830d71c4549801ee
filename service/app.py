"""The local web app: a person's whole flow in one page, over the stages (docs/app.md).

    python -m service.app [--host 127.0.0.1] [--port 7860] [--profile tiny] [--config my.yaml]
                          [--password-file FILE] [key=value ...]
    python -m service.app --password-file FILE --add-account NAME        # asks for NAME's password, stores its hash

Upload (intake at once: verdict, reason, advice, face box per photo; what the set lacks) -> Train (a
queued background job, live step, loss, ETA) -> Styles -> Review (your own face, then the ranked images at
400x400 and avatar sizes a page at a time, dropped ones with their reasons when asked; favourites, more like
one and delete from its card) -> Download (platform crops, shown and zipped) -> Delete my data.

A thin layer: intake, export, discard and purge are called in the request (seconds); training and generation run
as jobs (service/jobs.py) through service.chain, and more like this as a job of its own. Every path comes
from the session's user through Workspace, never from the client. Loopback only unless --host says
otherwise, and then only with a password file (service/accounts.py: one `name:hash` per line; each person logs in
as themselves); never a share link.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import errno
import functools
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import unicodedata
import warnings
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import gradio as gr
import gradio.routes
from filelock import FileLock, Timeout
from gradio.utils import get_upload_folder
from PIL import Image
from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from headshots.cli import add_config_args, parse, print_error, shielded_from_interrupts
from headshots.config import PROMPT_WORDS, SIMPLE_NAME_RULE, AppConfig, Config, load_config, validate_user_name
from headshots.errors import ConfigError, HeadshotsError, ImageError, storage_error
from headshots.faces import FaceAnalyzer
from headshots.images import MAX_PIXELS, list_photos, load_rgb
from headshots.logs import get_logger, plural
from headshots.stages import done_now, run_recorded, stages_to_run
from headshots.workspace import ADAPTER_WEIGHTS, Workspace, case_twin, held_alone, read_favourites, save_favourites, write_atomic
from infer.discard import discard
from infer.export import EXPORT, SIZES, export
from infer.generate import new_round_name
from infer.styles import available_styles, load_style
from service import views
from service.accounts import Accounts, password_matches, set_password
from service.jobs import IMAGE_KINDS, JOBS_FOLDER, JobBusy, JobQueue, devices, job_command
from service.purge import nothing_running, purge, refuse_while_a_batch_runs
from train.checkpoint import training_now
from train.intake import REJECT, run_intake

log = get_logger(__name__)
LOOPBACK_NAMES = ("localhost",)
SETTINGS_USER = "app"  # the config is per user; the app's own settings are read with this placeholder name (no settings.yaml)
# What the browser keeps of who signed in (a dict: Gradio's BrowserState does not store an empty value, so a
# plain None would leave the last name there)
SIGNED_OUT = {"name": None}
# With a password file, Sign out ends with Gradio's /logout, relative to the page (a proxy may serve it under a path):
# this browser's sign-in only, where the route's default forgets that person's sign-ins in every browser
SIGN_OUT_JS = "() => { window.location.assign('logout?all_session=false'); }"
# What of the person's the page holds, emptied by Sign out: text, and pickers listing their files
SIGNED_OUT_TEXT = ("photos", "notes", "review", "yours", "crops", "status")
SIGNED_OUT_PICKERS = ("remove_pick", "favourites", "more_pick", "discard_pick")
# An app's folders in the system's temporary folder (`held_app_folder`): its download folder, and Gradio's folder of
# uploads and served copies when `main` started it (`own_gradio_folder`)
DOWNLOADS_PREFIX, GRADIO_PREFIX = "headshots-downloads-", "headshots-gradio-"
IN_USE = ".in-use"  # beside each, <folder>.in-use: a lock held while its app runs
SERVED = ".served"  # in it: Gradio's cache folder of each download the app served, a line each (forget_downloads)
ZIP_NAME = "headshots.zip"  # in a person's download folder (HeadshotsApp.download_folder): every crop of the last export
# More like this: how much of the picked image is re-drawn (infer.more.strength)
NAME_RULE = f"A name is {SIMPLE_NAME_RULE}, with no spaces, e.g. alice_smith."
MORE_STRENGTHS = (("Close: same framing, clothes and light", 0.35), ("Looser: new pose and expression", 0.6))


@dataclass
class Settings:
    """How the app was started: the config layers every person's config is built from."""

    profile: str | None = None
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)

    def config(self, user: str, with_person_settings: bool = True) -> Config:
        return load_config(user, self.profile, self.config_file, self.overrides, with_person_settings)

    def cli_args(self) -> list[str]:
        """The same layers for a job's command line."""
        return ([f"--profile={self.profile}"] if self.profile else []) + \
            ([f"--config={self.config_file}"] if self.config_file else []) + list(self.overrides)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_address(host: str) -> str:
    """--host as Gradio takes it: an IPv6 address in brackets, which it binds without them and builds its URLs with
    (a bare ::1 ended in httpx's "Invalid port" traceback once the models had loaded)."""
    bare = host.strip("[]")
    try:
        return f"[{bare}]" if ipaddress.ip_address(bare).version == 6 else host
    except ValueError:
        return host  # a name, e.g. localhost


def same_bytes(stored: Path, upload: Path) -> bool:
    """Whether a file among the photos holds the upload's very bytes; anything else there (a folder, a broken link,
    one unreadable) is not it. A folder of the upload's size was read as a file, and the upload ended in a traceback,
    taking the rest of the uploaded photos with it unsaid (a bad-input probe)."""
    try:
        return stored.is_file() and stored.stat().st_size == upload.stat().st_size and stored.read_bytes() == upload.read_bytes()
    except OSError:
        return False


def safe_file_name(name: str) -> str:
    """The uploaded file's own name reduced to a plain file name (no folders, no hidden files): letters and digits of
    any script (composed, as macOS may send them decomposed: "Jürgen.jpg" stays, it was "J_rgen.jpg"), '.', '-' and
    '_'; anything else (spaces, emoji, control and direction marks) becomes '_'."""
    cleaned = re.sub(r"[^\w.-]", "_", unicodedata.normalize("NFC", Path(name).name))
    cleaned = cleaned.encode()[-150:].decode(errors="ignore").lstrip(".")  # the end (its extension) kept; 255 bytes is a name's limit
    return cleaned or "photo"


def own_style_words(**fields: str | None) -> dict[str, str]:
    """The style fields a person typed (blank ones left to the style), each plain words (PROMPT_WORDS): the text
    goes to the job as a config override, and must stay text."""
    own = {key: " ".join((text or "").split()) for key, text in fields.items()}
    for key, text in own.items():
        if text and not PROMPT_WORDS.fullmatch(text):
            raise HeadshotsError(f"Your {key} text can hold words and , . ' & / - only, 100 characters at most.",
                                 f"Describe the {key} in plain words, e.g. 'plain light grey studio wall'.")
    return {key: text for key, text in own.items() if text}


def user_errors(fn: Callable) -> Callable:
    """A HeadshotsError becomes Gradio's error box: the message and what to do, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HeadshotsError as exc:
            raise gr.Error(f"{exc.message} {exc.hint}".strip(), title="Not done", print_exception=False) from exc

    return wrapper


IMAGES_LISTED = ("Not among your images now", "Reload the page to see your review as it is.")
PHOTOS_LISTED = ("Not one of your photos", "Tick photos from your own list.")


def _only_listed(chosen: list[str], listed: Collection[str], refusal: tuple[str, str] = IMAGES_LISTED) -> None:
    """Refuses names the page does not list now (a file deleted in another tab, or a forged request), naming them:
    `refusal` is (what they are not, what to do)."""
    unknown = [file for file in chosen if file not in listed]
    if unknown:
        raise HeadshotsError(f"{refusal[0]}: {', '.join(unknown)}.", refusal[1])


class HeadshotsApp:
    """The handlers, and the page wired to them."""

    def __init__(self, settings: Settings, analyzer: FaceAnalyzer | None = None, jobs: JobQueue | None = None,
                 accounts: Accounts | None = None) -> None:
        self.settings = settings
        probe = settings.config(SETTINGS_USER, with_person_settings=False)  # a bad key or value stops the app here
        self.limits: AppConfig = probe.app
        self.run = probe.run
        self.defaults = probe.infer
        self.photos_wanted = probe.intake.photos_wanted
        self.data_root = Path(probe.paths.data_root)
        self.accounts = accounts
        self.analyzer = analyzer or FaceAnalyzer.for_config(probe)
        self.jobs = jobs or JobQueue(devices())
        self.downloads_root: Path | None = None  # made at the first download, removed with the app
        self.download_owners: dict[str, str] = {}  # Gradio's cache folder of each download served -> whose it is
        self.downloads_lock: FileLock | None = None
        self.uploads = UploadsInHand()  # Gradio's copies of uploads that a handler has still to read
        self.turns: dict[str, threading.Lock] = {}  # whose photos change now (`photos_in_turn`)
        self.turns_lock = threading.Lock()
        for root in forget_abandoned_folders():
            log.info("removed %s, the folder of an app that stopped without closing", root)

    # -- who ---------------------------------------------------------------------------------------
    def user(self, state: str | None, request: gr.Request | None) -> str:
        """The signed-in name (with a password file), else the name this session gave; nothing else."""
        if request is not None and request.username:
            return validate_user_name(request.username)
        if not state:
            raise HeadshotsError("Tell us your name first.", "Type it at the top of the page and press Continue "
                                 "(no name box there? The app was restarted: reload the page).")
        return state

    def workspace(self, user: str) -> Workspace:
        """The person's folders. Their settings.yaml cannot move them, and is left out: whatever it says, the
        person can still see, remove and delete their data."""
        return Workspace.from_config(self.settings.config(user, with_person_settings=False))

    async def check_password(self, name: str, password: str) -> bool:
        """Gradio's sign-in check, in a worker thread: Gradio awaits it on the app's event loop, where a hash's
        0.4 s of scrypt would hold every page's updates still meanwhile."""
        secret = self.accounts.get(name) if self.accounts is not None else None
        return secret is not None and await asyncio.to_thread(password_matches, secret, password)

    # -- photos ------------------------------------------------------------------------------------
    def admit(self, source: Path, ws: Workspace, count: int) -> str:
        """Copy one upload into the person's selfies if it is within the limits; returns its stored name.
        The size in bytes was checked before: Gradio's upload route refuses a file over app.max_upload_bytes."""
        name = safe_file_name(source.name)
        pixels = image_pixels(source)
        if pixels is None or pixels > self.limits.max_pixels:
            size = f"{pixels / 1e6:.0f}" if pixels else f"more than {2 * MAX_PIXELS / 1e6:.0f}"
            raise ImageError(f"{name}: {size} megapixels is over the limit of {self.limits.max_pixels / 1e6:.0f}.",
                             "Resize it (a phone photo of 12-48 megapixels is plenty).")
        if count >= self.limits.max_photos:
            raise ImageError(f"{name}: you already have {self.limits.max_photos} photos, the most one person may keep.",
                             "Remove the weaker ones first (tick them below).")
        ws.selfies.mkdir(parents=True, exist_ok=True)
        same = next((p.name for p in list_photos(ws.selfies) if same_bytes(p, source)), None)
        if same is not None:  # the same file again: a second copy would only be refused as a duplicate shot
            raise ImageError(f"{name}: already here, as {same}.", "Nothing to do: each photo is kept once.")
        target = ws.selfies / name
        stem, suffix, n = target.stem, target.suffix, 1
        while target.exists():
            n += 1
            target = ws.selfies / f"{stem}-{n}{suffix}"
        try:  # through a temporary name: a full disk or a killed app left a cut-off "photo" under the real one
            write_atomic(target, lambda written: shutil.copyfile(source, written))
        except OSError as exc:
            raise storage_error(exc) or exc from exc
        return target.name

    def check_photos(self, ws: Workspace) -> dict[str, str]:
        """Intake over the photos there now (the set checks need all of them); no photos, no report.
        A usable set is recorded as the intake stage, as the chain would record it, so Train does not judge the
        photos again; a refused one is not, and a Train job stops at it. Returns intake's previews (file -> data
        URI), so the page need not decode every photo again."""
        if ws.selfies.is_dir() and list_photos(ws.selfies):
            cfg = self.settings.config(ws.user)
            return run_recorded("intake", cfg, lambda: run_intake(cfg, self.analyzer), lambda r: r.set.verdict != REJECT).previews
        ws.intake_report.unlink(missing_ok=True)
        ws.intake_page.unlink(missing_ok=True)
        return {}

    def judged_now(self, ws: Workspace) -> tuple[dict[str, str] | None, str]:
        """Intake again, when the photos' last verdict is not this app's on these photos: judged with other
        settings (the demo's, a batch's) or not recorded (a refused set). Its previews then, else None; and a note
        for the person when they could not be judged now: they are being judged elsewhere (another tab's upload, a
        batch, `make intake`), and the verdicts shown may be from before (the page would not open at all)."""
        try:
            due = ws.selfies.is_dir() and not done_now("intake", self.settings.config(ws.user))
            return (self.check_photos(ws) if due else None), ""
        except ConfigError:  # their settings.yaml cannot be used: the Styles tab says so
            return None, ""
        except HeadshotsError as exc:  # a busy intake
            log.info("%s: photos not judged again now: %s", ws.user, exc.message)
            return None, (f"- {views.plain(exc.message)} The verdicts below may be from before that: reload the page in "
                          "a moment to see them as they are now.")

    @user_errors
    def upload(self, files: list[str] | None, state: str | None, request: gr.Request) -> dict:
        """Each photo added, or why not, in the notes under the box, which is emptied for the next photos (an error
        raised instead would leave the uploaded files in it, to be offered again with the next ones). Gradio's cached
        copies are deleted whatever happens, a refused name too: the photos are faces, and Delete my data never
        finds a copy Gradio keeps."""
        notes, previews = [], None
        try:
            ws = self.workspace(self.user(state, request))  # a refused name: Gradio's error box, once cleaned up
            try:
                with self.photos_in_turn(ws.user):
                    with self.photos_changing(ws):
                        count = len(list_photos(ws.selfies)) if ws.selfies.is_dir() else 0
                        for path in map(Path, files or []):
                            try:
                                notes.append(f"added **{views.plain(self.admit(path, ws, count))}**")
                                count += 1
                            except ImageError as exc:
                                notes.append(f"**not added**: {views.plain(exc.message)} → {views.plain(exc.hint)}")
                    previews = self.check_photos(ws)
            except HeadshotsError as exc:  # refused, or the photos could not be judged (their settings.yaml, a busy intake)
                notes.append(f"**{'not judged' if notes else 'not added'}**: {views.plain(exc.message)} → {views.plain(exc.hint)}")
        finally:
            for path in map(Path, files or []):
                if not self.uploads.done(path):
                    continue  # the same photo, uploaded by someone else meanwhile, is the same file: theirs to delete
                path.unlink(missing_ok=True)  # the selfies folder holds the one copy (Delete my data removes it)
                # and the folder Gradio named by the photo's hash: left, it told anyone who can list the temporary
                # folder that a photo they know was uploaded here (a new-user walk)
                if path.parent != Path(get_upload_folder()):
                    with contextlib.suppress(OSError):  # not empty: the same photo under another name
                        path.parent.rmdir()
        return {**self.photos_view(ws, previews), **self.status_view(ws.user), self.c["upload"]: None,
                self.c["notes"]: "\n".join(f"- {n}" for n in notes)}

    @user_errors
    def remove(self, chosen: list[str] | None, state: str | None, request: gr.Request) -> dict:
        ws = self.workspace(self.user(state, request))
        with self.photos_in_turn(ws.user):
            with self.photos_changing(ws):
                mine = {p.name: p for p in list_photos(ws.selfies)} if ws.selfies.is_dir() else {}
                if not chosen:
                    raise HeadshotsError("Tick the photos to remove first.", "Or press Remove on a photo's own card.")
                _only_listed(chosen, mine, PHOTOS_LISTED)
                for name in chosen:
                    mine[name].unlink()
            previews = self.check_photos(ws)
        return {**self.photos_view(ws, previews), **self.status_view(ws.user),
                self.c["notes"]: f"- removed {plural(len(chosen), 'photo')}"}

    @contextmanager
    def photos_in_turn(self, user: str) -> Iterator[None]:
        """One change of a person's photos at a time, with the intake after it: a second tab's upload waits for the
        first's, which judges the set it made. Different people's uploads run side by side: Gradio queued everyone's
        behind one (a shared concurrency group of one), so a person waited out another's 30 photos."""
        with self.turns_lock:
            turn = self.turns.setdefault(user, threading.Lock())
        with turn:
            yield

    @contextmanager
    def photos_changing(self, ws: Workspace) -> Iterator[None]:
        """While photos are added or removed: refused under a job or training that reads them (`refuse_while_training`),
        and the person's prepare lock held, so a prepare (a terminal, a batch) is not under way, nor a training or a
        prepare starts meanwhile (a Train pressed in another tab during a long upload: it checked, then both ran)."""
        self.refuse_while_training(ws.user)
        with held_alone(ws.prepare_lock, HeadshotsError(
                "Your photos are being prepared for training (in a terminal, a batch or another tab).",
                "Add or remove photos when that is done.")):
            yield

    def refuse_while_training(self, user: str) -> None:
        """Photos stay as they are while a job that may train on them runs (Train, and Generate, which trains first when
        the photos changed since): a change would not reach this training, and the next one would start over instead
        of continuing from its checkpoint."""
        job = self.jobs.latest(user)
        if job is not None and job.kind in ("train", "generate") and job.active:
            then = ("training then starts over" if job.kind == "train" else
                    "the adapter is then trained again on the new photos before the next images")
            raise HeadshotsError("Your photos cannot change while your job runs on them.",
                                 f"Add or remove photos when it is done, or stop it first ({then}).")
        if training_now(self.workspace(user), self.run):  # started in a terminal or a batch
            raise HeadshotsError(f"Your photos cannot change while a training of yours runs ({views.ELSEWHERE}).",
                                 "Add or remove photos when it is done.")

    def refuse_while_trained_elsewhere(self, user: str, press: str) -> None:
        """A job would be refused by a training of the person's run running now outside this app (a terminal, a batch,
        an earlier copy of the app), after a start that showed that training's progress as its own, and its "failed"
        stayed on the status line (a cross-surface walk): refused here, before a job starts."""
        if training_now(self.workspace(user), self.run):
            raise HeadshotsError(f"A training of yours is running already ({views.ELSEWHERE}): the status line shows it.",
                                 f"Press {press} again once it ends.")

    def photos_view(self, ws: Workspace, previews: dict[str, str] | None = None) -> dict:
        shown = views.photos_on_disk(ws)
        return {self.c["photos"]: views.photos_html(ws, previews),
                self.c["remove_pick"]: gr.update(choices=[name for name, *_ in shown], value=[]), self.c["photos_shown"]: shown}

    # -- jobs --------------------------------------------------------------------------------------
    def submit(self, user: str, kind: str, extra: list[str], expected_images: int | None = None) -> None:
        """Start the person's job; one already queued or running (pressed in another tab: this one's status line, with
        Stop greyed, said nothing ran) is said in a box, and the caller's status line then shows that job."""
        ws = self.workspace(user)
        argv = job_command(kind, user, [*self.settings.cli_args(), *extra])
        try:
            self.jobs.submit(user, kind, argv, ws.run_dir(self.run) / JOBS_FOLDER / f"{kind}.log", expected_images)
        except JobBusy as busy:  # started in another tab: said in a box, and the status shown is that job's, with its Stop
            gr.Warning(f"{busy.message} {busy.hint}", title="Not done")

    @user_errors
    def train(self, state: str | None, request: gr.Request) -> dict:
        user = self.user(state, request)
        ws = self.workspace(user)
        if not views.set_usable(ws):
            report = json.loads(ws.intake_report.read_text())["set"] if ws.intake_report.is_file() else None
            if report is None:
                raise HeadshotsError("There are no photos to train on.", f"Add {ws.photos_wanted} recent photos of yourself first.")
            raise HeadshotsError(f"Your photo set is not usable yet: {report['reason']}.", " ".join(report["advice"]))
        self.refuse_while_trained_elsewhere(user, "Train")
        if not self.training_due(user):  # the job would skip every stage: say so instead
            gr.Info("Already trained on these photos and settings: there is nothing to train. Pick styles on 3. Styles "
                    "and press Generate (change your photos to train again).", title="Nothing to do")
            return self.status_view(user)
        self.submit(user, "train", [])
        return self.status_view(user)

    @user_errors
    def generate(self, styles: list[str] | None, count: float, background: str | None, clothing: str | None,
                 state: str | None, request: gr.Request) -> dict:
        user = self.user(state, request)
        own = own_style_words(background=background, clothing=clothing)
        known = available_styles()
        if not styles or any(s not in known for s in styles):
            raise HeadshotsError("Pick at least one of the styles listed.", f"Styles: {', '.join(known)}.")
        if not 1 <= int(count) <= self.limits.max_images_per_style:
            raise HeadshotsError(f"Ask for 1 to {self.limits.max_images_per_style} images per style.", "Move the slider.")
        if not (self.workspace(user).adapter_dir(self.run) / ADAPTER_WEIGHTS).is_file():
            raise HeadshotsError("Your adapter is not trained yet.", "Press Train first, and wait for it to finish.")
        self.refuse_while_trained_elsewhere(user, "Generate")  # its adapter is being replaced
        # Each press is a round of its own (so the chain runs infer again even for the same choices), added to the earlier ones.
        self.submit(user, "generate", [f"infer.styles=[{','.join(styles)}]", f"infer.images_per_style={int(count)}",
                                       f"infer.round={new_round_name('app-')}",
                                       *(f"infer.style_overrides.{key}={json.dumps(text)}" for key, text in own.items())],
                    expected_images=len(styles) * int(count))
        return self.status_view(user)

    @user_errors
    def more(self, chosen: str | None, strength: float | None, state: str | None, request: gr.Request) -> dict:
        """More like one of the person's generated images: a job of `infer.more.count` variations drawn from it."""
        user = self.user(state, request)
        if chosen not in {file for _, file in views.review_choices(self.workspace(user), self.run)}:
            raise HeadshotsError("Pick one of your generated images first.", "Choose it under 'More like this one'.")
        if strength not in dict(MORE_STRENGTHS).values():
            raise HeadshotsError("Pick how close to it the new images stay.", "Choose Close or Looser.")
        count = min(self.defaults.more.count, self.limits.max_images_per_style)
        self.submit(user, "more", [f"infer.more.image={chosen}", f"infer.more.strength={strength}", f"infer.more.count={count}"],
                    expected_images=count)
        return self.status_view(user)

    @user_errors
    def stop(self, state: str | None, request: gr.Request) -> dict:
        user = self.user(state, request)
        self.jobs.stop(user)
        return self.status_view(user)

    def status_view(self, user: str, ws: Workspace | None = None) -> dict:
        """The status line and the buttons it governs; `ws`: the person's, when the caller has it (it costs ~70 ms, and
        the status runs every second while a job does)."""
        ws, job = ws or self.workspace(user), self.jobs.latest(user)
        busy = job is not None and job.active
        trained = (ws.adapter_dir(self.run) / ADAPTER_WEIGHTS).is_file()
        usable = views.set_usable(ws)  # read once: this runs every second while a job does
        # a training this app did not start (a terminal, a batch, an earlier copy of the app): followed as a job is
        elsewhere = not busy and training_now(ws, self.run)
        # trained on other photos or settings than today's, Generate would train first: said before it is pressed. Not
        # asked while a training runs (the status says that instead): it hashes the photos and the prepared rows, and
        # a training elsewhere is followed every second
        try:
            outdated = self.training_due(user) if trained and not busy and not elsewhere else ""
        except ConfigError:  # their settings.yaml cannot be used: the Styles tab says so
            outdated = ""
        return {
            self.c["status"]: views.job_markdown(ws, self.run, job, self.jobs.position(job) if job else 0, outdated,
                                                 elsewhere),
            self.c["train"]: gr.update(interactive=usable and not busy and not elsewhere),
            self.c["generate"]: gr.update(interactive=trained and usable and not busy and not elsewhere),  # a job starts at intake
            self.c["more"]: gr.update(interactive=trained and not busy),
            self.c["stop"]: gr.update(interactive=busy),
            self.c["timer"]: gr.Timer(active=busy or elsewhere),
        }

    def training_due(self, user: str) -> str:
        """What a job would do before drawing images (a ConfigError when the person's own settings file cannot be
        used): views.RETRAIN, train again (the photos, or the training's own settings, changed since); views.RECHECK,
        check and prepare the photos again and train only if the prepared photos then differ (only settings that
        judge or prepare them changed: a batch with other intake settings made the app say "trains it again" of an
        adapter the job left as it was); "" when nothing is due."""
        cfg = self.settings.config(user)
        if "fit" not in stages_to_run(cfg):
            return ""
        ws = self.workspace(user)
        prepared = views.read_json(ws.prepare_report) or {}
        same_photos = ({p["file"] for p in prepared.get("photos", [])} ==
                       {p.name for p in list_photos(ws.selfies)} if ws.selfies.is_dir() else False)
        return views.RECHECK if same_photos and done_now("fit", cfg) else views.RETRAIN

    def tick(self, state: str | None, seen: list | None, shown: int, dropped_open: bool, favourites: list[str] | None,
             photos_shown: list | None, request: gr.Request) -> dict:
        """Every second while a job of this person is queued or running, and once when they come back to the tab: its
        progress; the review once a generation ends, or when their jobs are gone (their data deleted in another tab);
        the photos when they changed since this tab drew them (another tab, the CLI): a tab left open showed photos
        deleted elsewhere, and refused their removal as "Not one of your photos" (a walk).

        The job's state is read after its status: the worker thread can end the job between the two readings, and
        a status that already says "Done" also stops the timer, so the state read must be "done" too, or the review
        would never come (states only move forward, so the later reading is never behind the status)."""
        if not state and not (request is not None and request.username):
            return {self.c["status"]: gr.skip()}  # no one signed in yet in this session
        user = self.user(state, request)
        ws = self.workspace(user)
        out = self.status_view(user, ws)
        job = self.jobs.latest(user)
        key = [job.id, job.state] if job else None
        if key != seen:
            out[self.c["seen"]] = key
            if job is None or (job.kind in IMAGE_KINDS and not job.active):
                out.update(self.review_view(ws, shown, dropped_open, favourites))
        if photos_shown is not None and [tuple(p) for p in photos_shown] != views.photos_on_disk(ws):
            out.update(self.photos_view(ws))
        return out

    def come_back(self, state: str | None, seen: list | None, shown: int, dropped_open: bool, favourites: list[str] | None,
                  photos_shown: list | None, request: gr.Request) -> dict:
        """A tab the person comes back to: `tick`'s, and the review as it is now, whatever this tab last saw of their
        jobs (images deleted or made elsewhere: another tab, the CLI, an app restarted since)."""
        out = self.tick(state, seen, shown, dropped_open, favourites, photos_shown, request)
        if self.c["review"] not in out and (state or (request is not None and request.username)):
            out.update(self.review_view(self.workspace(self.user(state, request)), shown, dropped_open, favourites))
        return out

    # -- review and download -----------------------------------------------------------------------
    def review_view(self, ws: Workspace, shown: int = views.REVIEW_PAGE, dropped_open: bool = False,
                    favourites: list[str] | None = None) -> dict:
        """The review and the pickers over its images, as they are now: the favourites ticked before (`favourites`, or
        favourites.json when the page is opened) stay ticked while their images exist (a new round, a deletion or
        closing the page does not lose them); the other pickers start afresh."""
        choices = views.review_choices(ws, self.run)
        files = {file for _, file in choices}
        kept = [file for file in (read_favourites(ws, self.run) if favourites is None else favourites) if file in files]
        return {**self.review_cards(ws, shown, dropped_open, kept), self.c["yours"]: views.your_faces(ws),
                self.c["favourites"]: gr.update(choices=choices, value=kept),
                self.c["more_pick"]: gr.update(choices=choices, value=None),
                self.c["discard_pick"]: gr.update(choices=views.discard_choices(ws, self.run, choices), value=[])}

    def review_cards(self, ws: Workspace, shown: int, dropped_open: bool, favourites: list[str] | None = None) -> dict:
        """The review's cards and the buttons under them, leaving the pickers (and the person's ticks) alone;
        `favourites`: the ticks, shown on the cards."""
        drawn = views.review(ws, self.run, shown, dropped_open, frozenset(favourites or ()))
        toggle = "Hide the dropped images" if dropped_open else f"Show the {plural(drawn.dropped, 'dropped image')} and why"
        return {self.c["review"]: drawn.html,
                self.c["review_more"]: gr.update(visible=drawn.more > 0, value=f"Show more ({drawn.more} not shown)"),
                self.c["dropped_toggle"]: gr.update(visible=drawn.dropped > 0, value=toggle)}

    @user_errors
    def show_more(self, shown: int, dropped_open: bool, favourites: list[str] | None, state: str | None,
                  request: gr.Request) -> dict:
        """One more page of cards in each list on view."""
        shown += views.REVIEW_PAGE
        ws = self.workspace(self.user(state, request))
        return {self.c["shown"]: shown, **self.review_cards(ws, shown, dropped_open, favourites)}

    @user_errors
    def toggle_dropped(self, shown: int, dropped_open: bool, favourites: list[str] | None, state: str | None,
                       request: gr.Request) -> dict:
        """Unfold the dropped images (drawn only now: most people never open them), or fold them away."""
        ws = self.workspace(self.user(state, request))
        return {self.c["dropped_open"]: not dropped_open, **self.review_cards(ws, shown, not dropped_open, favourites)}

    @user_errors
    def discard(self, chosen: list[str] | None, shown: int, dropped_open: bool, favourites: list[str] | None,
                state: str | None, request: gr.Request) -> dict:
        """Delete the ticked images for good (infer/discard.py), then show the review scored again without them."""
        user = self.user(state, request)
        ws = self.workspace(user)
        job = self.jobs.latest(user)
        if job is not None and job.active:  # a generate or more job writes the same manifest
            raise HeadshotsError("Wait for your job to finish first.", "Images can be removed once it is done (or stopped).")
        if not chosen:
            raise HeadshotsError("Tick the images to delete first.", "Tick them in the list above the button, or press "
                                 "Delete on an image's card.")
        _only_listed(chosen, {file for _, file in views.discard_choices(ws, self.run)})
        cfg = self.settings.config(user)
        cfg.infer.discard_files = list(chosen)
        self.forget_cached_downloads(ws)  # the last export may hold one of them: its crops and the downloads go
        discard(cfg, self.analyzer)
        # the status line counts the review's images too ("Your review holds 6 images"): said again, not left stale
        return {**self.review_view(ws, shown, dropped_open, favourites), self.c["files"]: None, self.c["crops"]: "",
                **self.status_view(user)}

    def discard_one(self, file: str | None, shown: int, dropped_open: bool, favourites: list[str] | None,
                    state: str | None, request: gr.Request) -> dict:
        """A review card's Delete: the same as ticking only that image and pressing Delete ticked images."""
        return self.discard([file] if file else [], shown, dropped_open, favourites, state, request)

    @user_errors
    def keep_favourites(self, favourites: list[str] | None, state: str | None, request: gr.Request) -> None:
        """Each tick of a favourite, saved for when the person comes back (the page forgets it when closed)."""
        ws = self.workspace(self.user(state, request))
        files = {file for _, file in views.review_choices(ws, self.run)}
        if files:  # nothing generated: nothing to tick, and no folder to make
            save_favourites(ws, self.run, [f for f in favourites or () if f in files])

    @user_errors
    def download(self, favourites: list[str] | None, state: str | None, request: gr.Request) -> dict:
        """Export the favourites (infer/export.py): the files to download, and each crop as it will look. A refusal
        is said where the crops go, and stays there: as a message box it faded, leaving Gradio's bare "Error" on the
        downloads box."""
        user = self.user(state, request)
        try:
            return self._export(user, favourites)
        except HeadshotsError as exc:
            return {self.c["files"]: None, self.c["crops"]: views.refusal_html(exc)}

    def _export(self, user: str, favourites: list[str] | None) -> dict:
        ws = self.workspace(user)
        files = {file for _, file in views.review_choices(ws, self.run)}
        if not files:
            raise HeadshotsError("Nothing generated yet.", "Pick styles and press Generate first.")
        chosen = list(favourites or [])
        if not chosen:
            raise HeadshotsError("Tick your favourites under Review first.", "Press Favourite on an image's card, or tick "
                                 "it in the list under the review.")
        _only_listed(chosen, files)
        cfg = self.settings.config(user)
        cfg.infer.export_files = chosen
        manifest = run_recorded("export", cfg, lambda: export(cfg, self.analyzer))  # as `make export IMAGES=...`
        folder = self.download_folder(user)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files = downloads(manifest, folder)
        served = {cache_folder(p): user for p in files}
        self.download_owners.update(served)
        with (self.downloads_root / SERVED).open("a") as listing:  # before Gradio copies them: a kill leaves none unlisted
            listing.writelines(f"{key}\n" for key in served)
        return {self.c["files"]: [str(p) for p in files], self.c["crops"]: views.crops_html(manifest)}

    def download_folder(self, user: str) -> Path:
        """Where the person's last download is put together for the browser: in the system's temporary folder,
        the one place outside the working directory Gradio hands files from, so a download also works with
        `paths.outputs_root` on another disk. Gradio copies each file into its own cache (by content hash),
        which serves it to whoever was given its link only; adding the outputs to `allowed_paths` instead would
        serve everyone's files to anyone who asks for a path. With a password file, a link is served only to the
        account it was made for (`OwnDownloadsOnly`)."""
        if self.downloads_root is None:
            self.downloads_root, self.downloads_lock = held_app_folder(DOWNLOADS_PREFIX)
        return self.downloads_root / user

    # -- session -----------------------------------------------------------------------------------
    def page(self, user: str) -> dict:
        """Everything the page shows for `user`, e.g. when a closed tab is opened again: the photos' verdict as
        this app's settings judge them."""
        ws = self.workspace(user)
        job = self.jobs.latest(user)
        previews, note = (None, "") if job is not None and job.active else self.judged_now(ws)
        return {self.c["user"]: user, self.c["who"]: f"Signed in as **{user}**.", self.c["main"]: gr.update(visible=True),
                self.c["name_row"]: gr.update(visible=False), self.c["sign_out"]: gr.update(visible=True),
                # with a password file, the browser's own sign-in is what a reload keeps
                self.c["remembered"]: {"name": user} if self.accounts is None else SIGNED_OUT,
                self.c["notes"]: note, **self.photos_view(ws, previews), **self.status_view(user), **self.review_view(ws),
                **self.styles_view(user), self.c["seen"]: [job.id, job.state] if job else None, self.c["files"]: None, self.c["crops"]: "",
                self.c["shown"]: views.REVIEW_PAGE, self.c["dropped_open"]: False}

    def styles_view(self, user: str) -> dict:
        """The Styles tab as the person's own settings.yaml orders it (what a batch runs for them), else the app's
        defaults, with the reason when their file cannot be used."""
        note = ""
        try:
            infer = self.settings.config(user).infer
        except ConfigError as exc:
            infer, note = self.defaults, f"Your settings.yaml was left out: {exc.message} {exc.hint}"
        known, own = available_styles(), dict(infer.style_overrides)
        return {self.c["styles"]: [s for s in infer.styles if s in known],
                self.c["count"]: min(infer.images_per_style, self.limits.max_images_per_style),
                self.c["background"]: own.get("background", ""), self.c["clothing"]: own.get("clothing", ""),
                self.c["styles_note"]: note}

    @user_errors
    def start(self, name: str, request: gr.Request) -> dict:
        """Sign in by name. A name that cannot be a folder's is said under the box, which stays as it was to be
        corrected (an error would cover the form until the page is loaded again)."""
        if request is not None and request.username:
            return self.page(validate_user_name(request.username))
        name = (name or "").strip()
        try:
            user = self.typed_name(name)
        except ConfigError as exc:
            said = "Type your name first." if not name else exc.message
            return {self.c["sign_in_note"]: f"**{said}** {NAME_RULE}"}
        return {**self.page(user), self.c["sign_in_note"]: ""}

    def typed_name(self, name: str) -> str:
        """A name from the name box as the person's folder spells it: "Alice" signs in to alice's folder (names
        ignore case, `case_twin`). Password-file accounts are the file's names, mapped to no other folder."""
        user = validate_user_name(name)
        twin = case_twin(user, self.data_root)
        return twin.name if twin else user

    @user_errors
    def on_load(self, remembered: dict | None, request: gr.Request) -> dict:
        """The page as it was: the signed-in name (password file), else the name this browser last signed in
        with, so a reload does not ask again; else the name box."""
        if request is not None and request.username:
            return self.page(validate_user_name(request.username))
        name = remembered.get("name") if isinstance(remembered, dict) else None
        try:
            return self.page(self.typed_name(name)) if name else {self.c["who"]: gr.skip()}
        except ConfigError:  # not a name this app would have stored
            return {self.c["remembered"]: SIGNED_OUT}

    def sign_out(self) -> dict:
        """Back to the name box, the name forgotten by this browser and the person's photos, review and crops
        taken off the page (someone else may use it next). A job that is running goes on: signing in again shows
        it. Another tab open on the page stays signed in until it is reloaded. With a password file the page then
        goes to Gradio's /logout (`SIGN_OUT_JS`), which forgets this browser's sign-in and shows the sign-in form."""
        return {self.c["user"]: None, self.c["remembered"]: SIGNED_OUT, self.c["seen"]: None, self.c["who"]: "",
                self.c["main"]: gr.update(visible=False), self.c["name_row"]: gr.update(visible=self.accounts is None),
                self.c["sign_out"]: gr.update(visible=False), self.c["name"]: "", self.c["sign_in_note"]: "",
                self.c["timer"]: gr.Timer(active=False), self.c["files"]: None,
                **{self.c[k]: "" for k in SIGNED_OUT_TEXT}, **{self.c[k]: gr.update(choices=[], value=None) for k in SIGNED_OUT_PICKERS}}

    @user_errors
    def delete_everything(self, state: str | None, request: gr.Request) -> dict:
        user = self.user(state, request)
        ws = self.workspace(user)
        refuse_while_a_batch_runs(ws)  # before their own job is stopped: a refused deletion stops nothing
        self.jobs.forget(user)
        with nothing_running(ws):  # a command of theirs still running elsewhere: refused before anything goes
            self.forget_cached_downloads(ws)
            views.forget_previews()
            done = purge(ws, include_selfies=True)
        log.info("purged %s: %s", user, "; ".join(done) or "nothing stored")
        kept = [line for line in done if line.startswith("kept ")]  # photos linked in from elsewhere stay there
        return {**self.page(user), self.c["confirm"]: gr.update(visible=False),
                self.c["deleted"]: "All your photos, adapters and images were deleted." + "".join(f" {line}." for line in kept)}

    def forget_cached_downloads(self, ws: Workspace) -> None:
        """Gradio serves a download from a copy in its cache, in a folder named by the file's content hash
        (its own `hash_file`); delete-my-data removes those copies of the person's exports and downloads too,
        earlier downloads included (`download_owners` names them), instead of leaving them to the cache's hourly
        clean-up, and the download folder itself."""
        folder = self.download_folder(ws.user) if self.downloads_root is not None else None
        forget_served([*ws.user_outputs.glob(f"*/{EXPORT}/**/*"), *(folder.rglob("*") if folder else [])])
        cache = Path(get_upload_folder())
        for key in [key for key, owner in self.download_owners.items() if owner == ws.user]:
            shutil.rmtree(cache / key, ignore_errors=True)
            del self.download_owners[key]  # in place: the middleware holds this dict
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    # -- the page ----------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Headshots", analytics_enabled=False, delete_cache=(900, 3600)) as demo:
            self.c: dict[str, Any] = {}
            c = self.c
            c["user"], c["seen"] = gr.State(None), gr.State(None)
            c["photos_shown"] = gr.State(None)  # views.photos_on_disk when the photos panel was drawn
            # The name this browser signed in with (localStorage, encrypted with a key the app makes when it starts:
            # after a restart it is forgotten and the name box shows again).
            c["remembered"] = gr.BrowserState(SIGNED_OUT, storage_key="headshots-name")
            c["shown"], c["dropped_open"] = gr.State(views.REVIEW_PAGE), gr.State(False)  # how much of the review is drawn
            gr.Markdown("# Professional headshots\nFrom a handful of ordinary selfies: upload, train, pick styles, review, download.")
            with gr.Row(visible=self.accounts is None) as c["name_row"]:
                c["name"] = gr.Textbox(label="Your name", placeholder="e.g. alice", scale=3, elem_id="hs-name")
                c["go"] = gr.Button("Continue", variant="primary", scale=1, elem_id="hs-go")
            c["sign_in_note"] = gr.Markdown(elem_id="hs-sign-in-note")
            with gr.Row(equal_height=True):
                c["who"] = gr.Markdown()
                c["sign_out"] = gr.Button("Sign out", size="sm", scale=0, min_width=90, visible=False, elem_id="hs-sign-out")
            with gr.Column(visible=False) as c["main"]:
                # The job's status, and Stop, stay in view on every tab and however far down the page (views.CSS).
                with gr.Row(elem_id="hs-status-row"):
                    c["status"] = gr.Markdown(elem_id="hs-status")
                    c["stop"] = gr.Button("Stop", interactive=False, size="sm", scale=0, min_width=80, elem_id="hs-stop")
                with gr.Tabs() as c["tabs"]:
                    with gr.Tab("1. Photos", elem_id="hs-tab-photos"):
                        c["upload"] = gr.File(label=f"Drop {self.photos_wanted} photos of yourself here (JPEG, PNG, WebP, HEIC; "
                                                    f"{self.limits.max_photos} at most)",
                                              file_count="multiple", elem_id="hs-upload")
                        c["notes"] = gr.Markdown(elem_id="hs-notes")
                        c["photos"] = gr.HTML(elem_id="hs-photos")
                        c["remove_pick"] = gr.CheckboxGroup(label="Tick photos to remove", elem_id="hs-remove-pick")
                        c["remove"] = gr.Button("Remove ticked photos", elem_id="hs-remove")
                    with gr.Tab("2. Train", elem_id="hs-tab-train"):
                        gr.Markdown("Training runs in the background: you can close this page and come back.")
                        c["train"] = gr.Button("Train", variant="primary", interactive=False, elem_id="hs-train")
                    with gr.Tab("3. Styles", elem_id="hs-tab-styles"):
                        c["styles_note"] = gr.Markdown(elem_id="hs-styles-note")
                        styles = [(f"{name}: {load_style(name).description}", name) for name in available_styles()]
                        c["styles"] = gr.CheckboxGroup(styles, value=[s for s in self.defaults.styles if s in available_styles()],
                                                       label="Styles", elem_id="hs-styles")
                        c["count"] = gr.Slider(1, self.limits.max_images_per_style, step=1, label="Images per style",
                                               value=min(self.defaults.images_per_style, self.limits.max_images_per_style),
                                               elem_id="hs-count")
                        with gr.Accordion("Your own background and clothing (optional, for every style picked)", open=False), gr.Row():
                            c["background"] = gr.Textbox(label="Background", placeholder="e.g. plain light grey studio wall",
                                                         max_length=100, elem_id="hs-background")
                            c["clothing"] = gr.Textbox(label="Clothing", placeholder="e.g. dark green wool sweater",
                                                       max_length=100, elem_id="hs-clothing")
                        gr.Markdown("Each press makes new images with new seeds; your earlier ones stay in your review.")
                        c["generate"] = gr.Button("Generate", variant="primary", interactive=False, elem_id="hs-generate")
                    with gr.Tab("4. Review", id="review", elem_id="hs-tab-review"):
                        c["yours"] = gr.HTML(elem_id="hs-yours-box")
                        c["review"] = gr.HTML(elem_id="hs-review")
                        with gr.Row():
                            c["review_more"] = gr.Button("Show more", visible=False, size="sm", elem_id="hs-review-more")
                            c["dropped_toggle"] = gr.Button(visible=False, size="sm", elem_id="hs-dropped-toggle")
                        c["favourites"] = gr.CheckboxGroup(label="Your favourites (to download)", elem_id="hs-favourites")
                        gr.Markdown(f"**More like this:** {self.defaults.more.count} new images drawn from one you like, "
                                    "with its style, your adapter and new seeds; they join this review.")
                        with gr.Row():
                            c["more_pick"] = gr.Dropdown(label="More like this one", elem_id="hs-more-pick")
                            c["more_strength"] = gr.Radio(list(MORE_STRENGTHS), value=MORE_STRENGTHS[0][1],
                                                          label="How close", elem_id="hs-more-strength")
                        c["more"] = gr.Button("More like this", interactive=False, elem_id="hs-more")
                        with gr.Accordion("Remove images from your review", open=False):
                            c["discard_pick"] = gr.CheckboxGroup(label="Tick images to delete for good", elem_id="hs-discard-pick")
                            c["discard"] = gr.Button("Delete ticked images", variant="stop", elem_id="hs-discard")
                    with gr.Tab("5. Download", elem_id="hs-tab-download"):
                        gr.Markdown("Your favourites cropped for LinkedIn (400x400), a 4:5 portrait (1080x1350) and a CV "
                                    "(600x800), centred on your face and never enlarged: a smaller source gives smaller files, "
                                    "and each file's name says its size. All of them in one zip.")
                        c["export"] = gr.Button("Export my favourites", variant="primary", elem_id="hs-export")
                        c["files"] = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="hs-files")
                        c["crops"] = gr.HTML(elem_id="hs-crops")
                    with gr.Tab("Delete my data", elem_id="hs-tab-delete"):
                        gr.Markdown("Deletes your photos, what was made from them (crops, face data, adapters, images) "
                                    "and your jobs, from this computer, for good.")
                        c["ask"] = gr.Button("Delete all my data…", variant="stop", elem_id="hs-delete")
                        with gr.Group(visible=False) as c["confirm"]:
                            gr.Markdown("**This cannot be undone.** Delete everything of yours?")
                            with gr.Row():
                                c["yes"] = gr.Button("Yes, delete everything", variant="stop", elem_id="hs-delete-yes")
                                c["no"] = gr.Button("Cancel", elem_id="hs-delete-no")
                        c["deleted"] = gr.Markdown(elem_id="hs-deleted")
            # Ticks only while a job is queued or running: an idle tick a second costs the upload's intake ~1.5 s
            # of its 5 s on two cores (docs/app.md, Speed).
            c["timer"] = gr.Timer(1.0, active=False)
            # Clicked by views.PAGE_JS when the person comes back to this tab: a job started from another tab or
            # device shows here then, at no cost while nobody looks (no idle timer).
            c["resync"] = gr.Button("Refresh status", elem_id="hs-resync", elem_classes="hs-hidden")
            # A review card's More like this and Delete (views.card_action): its image goes in this box, then the
            # action's button is pressed.
            c["card_file"] = gr.Textbox(elem_id="hs-card-file", elem_classes="hs-hidden", show_label=False)
            c["card_more"] = gr.Button("More like this image", elem_id="hs-card-more", elem_classes="hs-hidden")
            c["card_delete"] = gr.Button("Delete this image", elem_id="hs-card-delete", elem_classes="hs-hidden")
            c["open_review"] = gr.Button("Open the review", elem_id="hs-open-review", elem_classes="hs-hidden")  # views.OPEN_REVIEW
            self._wire(demo)
        return demo

    def _wire(self, demo: gr.Blocks) -> None:
        c = self.c
        page = [c[k] for k in ("user", "who", "sign_in_note", "name_row", "main", "notes", "photos", "remove_pick", "status", "train", "generate", "more",
                               "stop", "timer", "review", "favourites", "seen", "files", "more_pick", "styles", "count",
                               "background", "clothing", "styles_note", "discard_pick", "review_more", "dropped_toggle",
                               "shown", "dropped_open", "yours", "crops", "remembered", "sign_out", "photos_shown")]
        status = [c[k] for k in ("status", "train", "generate", "more", "stop", "timer")]
        review = [c[k] for k in ("seen", "review", "review_more", "dropped_toggle", "favourites", "more_pick", "discard_pick",
                                 "yours")]
        drawn = [c["review"], c["review_more"], c["dropped_toggle"]]
        photos = [c["photos"], c["remove_pick"], c["photos_shown"], c["notes"]]
        c["go"].click(self.start, [c["name"]], page, api_name="start")
        c["name"].submit(self.start, [c["name"]], page, api_name=False)
        demo.load(self.on_load, [c["remembered"]], page, api_name=False)
        emptied = [c[k] for k in ("user", "remembered", "seen", "who", "main", "name_row", "sign_out", "name", "sign_in_note",
                                  "timer", "files", *SIGNED_OUT_TEXT, *SIGNED_OUT_PICKERS)]
        signed_out = c["sign_out"].click(self.sign_out, None, emptied, api_name=False)
        if self.accounts is not None:
            signed_out.then(None, js=SIGN_OUT_JS)
        # each person's photos change in turn (`photos_in_turn`), everyone's side by side
        c["upload"].upload(self.upload, [c["upload"], c["user"]], [*photos, *status, c["upload"]], api_name="upload",
                           concurrency_limit=None)
        # Work of seconds: a spinner, on what the person acts on alone, so that a refusal marks that with Gradio's
        # "Error" badge, not the status line of their job (or every output), where it stays until that changes
        c["remove"].click(self.remove, [c["remove_pick"], c["user"]], [*photos, *status], api_name="remove",
                          concurrency_limit=None, show_progress_on=[c["photos"]])
        # These only start a job, at once, and the status line then says where it is: no spinner is needed, and
        # a refusal is its message box alone (with a spinner, Gradio also marks the status line "Error" until it changes)
        instant = {"show_progress": "hidden"}
        c["train"].click(self.train, [c["user"]], status, api_name="train", **instant)
        c["stop"].click(self.stop, [c["user"]], status, api_name="stop")  # waits for the job to end (seconds)
        c["generate"].click(self.generate, [c["styles"], c["count"], c["background"], c["clothing"], c["user"]], status,
                            api_name="generate", **instant)
        c["more"].click(self.more, [c["more_pick"], c["more_strength"], c["user"]], status, api_name="more", **instant)
        c["card_more"].click(self.more, [c["card_file"], c["more_strength"], c["user"]], status, api_name=False, **instant)
        drawing = [c["shown"], c["dropped_open"], c["favourites"], c["user"]]
        discarded = [*review[1:], c["files"], c["crops"], *status]
        c["discard"].click(self.discard, [c["discard_pick"], *drawing], discarded, api_name="discard",
                           show_progress_on=[c["review"]])
        c["card_delete"].click(self.discard_one, [c["card_file"], *drawing], discarded, api_name=False,
                               show_progress_on=[c["review"]])
        c["open_review"].click(lambda: gr.Tabs(selected="review"), None, [c["tabs"]], api_name=False, show_progress="hidden")
        c["review_more"].click(self.show_more, drawing, [c["shown"], *drawn], api_name=False)
        c["dropped_toggle"].click(self.toggle_dropped, drawing, [c["dropped_open"], *drawn], api_name=False)
        c["favourites"].input(self.keep_favourites, [c["favourites"], c["user"]], None, api_name=False,
                              show_progress="hidden")
        c["export"].click(self.download, [c["favourites"], c["user"]], [c["files"], c["crops"]], api_name="export",
                          show_progress_on=[c["files"]])
        c["ask"].click(lambda: gr.update(visible=True), None, [c["confirm"]], api_name=False)
        c["no"].click(lambda: gr.update(visible=False), None, [c["confirm"]], api_name=False)
        # the spinner on its own message: a refusal (a training of theirs running elsewhere) marked the whole page "Error"
        c["yes"].click(self.delete_everything, [c["user"]], [*page, c["confirm"], c["deleted"]], api_name="delete_my_data",
                       show_progress_on=[c["deleted"]])
        watched = [c["user"], c["seen"], c["shown"], c["dropped_open"], c["favourites"], c["photos_shown"]]
        ticked = [*status, *review, c["photos"], c["remove_pick"], c["photos_shown"]]
        c["timer"].tick(self.tick, watched, ticked, api_name="status", show_progress="hidden")
        c["resync"].click(self.come_back, watched, ticked, api_name=False, show_progress="hidden")

    def launch(self, host: str, port: int | None, block: bool = True) -> str:
        """Serve the page; returns its URL. Loopback unless a password file was given (checked by main)."""
        demo = self.build()
        demo.queue()
        guard = [Middleware(NotFramed), *([Middleware(LoopbackNamesOnly)] if is_loopback(host) else []),
                 Middleware(CountUploads, uploads=self.uploads)]
        if self.accounts is not None:
            guard += [Middleware(FollowPasswordFile, accounts=self.accounts), Middleware(NamesIgnoreCase, accounts=self.accounts),
                      Middleware(SignInLimit, accounts=self.accounts, tries=self.limits.max_failed_sign_ins,
                                 window_s=self.limits.sign_in_lockout_s),
                      Middleware(ForgetIdleSignIns, idle_s=self.limits.sign_in_idle_s),
                      Middleware(OwnDownloadsOnly, owners=self.download_owners), Middleware(SafeSignOut)]
        lockout = self.limits.sign_in_lockout_s
        wait = f"{lockout / 60:g} minutes" if lockout >= 60 else f"{lockout:g} seconds"
        demo.launch(server_name=host, server_port=port, share=False, auth=self.check_password if self.accounts is not None else None,
                    auth_message=f"Sign in with your name and password. After {self.limits.max_failed_sign_ins} wrong "
                                 f"passwords within {wait}, for one name or from one address, sign-in waits until {wait} "
                                 "after the first of them.",
                    max_file_size=self.limits.max_upload_bytes,
                    app_kwargs={"middleware": guard},
                    prevent_thread_lock=True, css=views.CSS, js=views.PAGE_JS, run_history=False, footer_links=["api"], quiet=True,
                    i18n=gr.I18n(en=views.GRADIO_WORDS))
        self.demo = demo
        atexit.register(self.close)
        if block:
            print(f"headshots app: {demo.local_url} (Ctrl-C to stop)", flush=True)
            demo.block_thread()
        return demo.local_url

    def close(self) -> None:
        """Jobs end with the app (training continues from its checkpoint next time); then the server, and the
        download folders with Gradio's cached copies of what they served."""
        self.jobs.close()
        if getattr(self, "demo", None) is not None:
            self.demo.close()
            self.demo = None
        if self.downloads_root is not None:
            forget_downloads(self.downloads_root)
            let_go(self.downloads_root, self.downloads_lock)
            self.downloads_root = None


def cache_folder(path: Path) -> str:
    """The folder of Gradio's cache that serves a copy of `path`: named by the file's content hash (its own
    `hash_file`), so the same bytes are served from the same folder whoever sent them."""
    from gradio.processing_utils import hash_file

    return hash_file(path)


def forget_served(files: list[Path]) -> None:
    """Gradio serves a download from a copy in its cache (`cache_folder`) to whoever has the link: remove those
    copies of `files` (the originals stay)."""
    cache = Path(get_upload_folder())
    for path in files:
        if path.is_file():
            shutil.rmtree(cache / cache_folder(path), ignore_errors=True)


class NotFramed:
    """Every answer tells the browser not to show it inside another site's page (X-Frame-Options: DENY, and CSP's
    frame-ancestors 'none'): framed under a decoy, the page's buttons (Delete my data among them) could be clicked
    by someone who thinks they click the decoy. Gradio sent neither header."""

    HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"))

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class LoopbackNamesOnly:
    """Any web site can make the browser of someone who visits it send requests to 127.0.0.1 under the site's own
    name (DNS rebinding: the name resolves to the site's server first, then to 127.0.0.1), and the browser then takes
    the app for part of that site: the site's script could type any name (on loopback there is no password), read
    that person's photos and headshots, and delete them. Measured before this guard: the page, its config and a
    queued request of the API all answered a request whose Host header named another site. Such requests carry the
    site's name in Host, so this ASGI middleware, in front of an app listening on loopback, refuses any whose Host is
    not a loopback name or address (localhost or a name under it, 127.x.x.x, [::1]): 400 over HTTP, a closed
    handshake for a WebSocket."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket") and not self.allowed(Request(scope).headers.get("host")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            port = (scope.get("server") or ("", 7860))[1]
            await PlainTextResponse(f"This app answers on this machine alone: open http://127.0.0.1:{port}/ "
                                    f"(or http://localhost:{port}/).", status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def allowed(host: str | None) -> bool:
        if host is None:  # HTTP/1.0: no name to check, and no browser sends one without it
            return True
        try:
            name = urlsplit(f"//{host}").hostname or ""
        except ValueError:
            return False
        return is_loopback(name) or name.endswith(".localhost")  # *.localhost is loopback in browsers (RFC 6761)


def client_network(address: str) -> str:
    """Whom sign-in tries are counted against: an IPv4 address, or an IPv6 address's /64 (one machine or network
    is handed a whole /64, so counting its addresses one by one would let it try 2^64 times as often)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


WRONG_PASSWORD = "Incorrect credentials."  # Gradio's answer to a wrong password (gradio/routes.py, login)


class SignInLimit:
    """Gradio's sign-in (POST /login) checks every guess it is sent, at full speed: a password file's passwords
    guard people's selfies. This ASGI middleware, in front of the app when it has a password file, counts the failed
    sign-ins (Gradio answers 400) of each account name and of each client address; once either has `tries` within
    `window_s`, its sign-ins are refused, before the password is checked (so a right guess then tells nothing), until
    the oldest of them is `window_s` old. A try counts as failed from the moment it arrives until it succeeds, so
    tries sent all at once are held to the limit too. The refusal is the very answer Gradio gives a wrong password,
    which tells no one whether a name is an account (the page's sign-in text states the rule; the log says which
    name or address waits). A name that is no account counts against its address only (every name sent would
    otherwise be kept)."""

    def __init__(self, app: Callable, accounts: Accounts, tries: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.accounts, self.tries, self.window_s, self.clock = app, accounts, tries, window_s, clock
        self.failures: dict[str, deque[float]] = {}  # "name alice" / "address 10.0.0.5" -> times of failed sign-ins

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if not is_sign_in(scope):
            await self.app(scope, receive, send)
            return
        body, form = await read_form(scope, receive)
        name = str(form.get("username") or "").strip().lower() if form else ""  # no form: refused, counted by address
        keys = [f"address {client_network(scope['client'][0] if scope.get('client') else 'unknown')}",
                *([f"name {name}"] if self.accounts.spelling(name) else [])]
        self.forget_old()
        if any(len(self.failures.get(key, ())) >= self.tries for key in keys):
            await JSONResponse({"detail": WRONG_PASSWORD}, status_code=400)(scope, receive, send)
            return
        now = self.clock()
        for key in keys:  # failed until it succeeds
            self.failures.setdefault(key, deque()).append(now)
        status: list[int] = []

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, replaying(body, receive), watch)
        for key in keys:
            if status == [200]:
                with contextlib.suppress(KeyError, ValueError):  # forgotten meanwhile, as old as the window
                    self.failures[key].remove(now)
            elif len(self.failures.get(key, ())) == self.tries:
                log.warning("sign-in refused for %s: %d failed sign-ins within %g s", key, self.tries, self.window_s)

    def forget_old(self) -> None:
        oldest = self.clock() - self.window_s
        for key, times in list(self.failures.items()):
            while times and times[0] <= oldest:
                times.popleft()
            if not times:
                del self.failures[key]


class UploadsInHand:
    """How many uploads each of Gradio's upload files stands for, until the handlers given them are done. Gradio files
    an upload under a hash of its bytes, so two people uploading one photo at once are handed one file: the first
    handler deleting it once done (the photos are faces: no copy is left in the temporary folder) took it away from
    the second, who was told "not a regular file"."""

    def __init__(self) -> None:
        self.counts: Counter[Path] = Counter()
        self.lock = threading.Lock()

    def received(self, paths: list[str]) -> None:
        with self.lock:
            self.counts.update(Path(p) for p in paths)

    def done(self, path: Path) -> bool:
        """One upload of `path` handled; whether it was the last, so the file can go (a file never counted, too)."""
        with self.lock:
            self.counts[path] -= 1
            if self.counts[path] > 0:
                return False
            del self.counts[path]
            return True


class CountUploads:
    """Tells `UploadsInHand` of each file Gradio's upload route (POST .../upload) answers with, before a handler can
    be given it."""

    def __init__(self, app: Callable, uploads: UploadsInHand) -> None:
        self.app, self.uploads = app, uploads

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        status, body = [], bytearray()

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and status == [200]:
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    with contextlib.suppress(ValueError):  # not the list of files: nothing to count
                        if isinstance(paths := json.loads(body), list):
                            self.uploads.received([p for p in paths if isinstance(p, str)])
            await send(message)

        await self.app(scope, receive, watch)


def is_sign_in(scope: dict) -> bool:
    """Gradio's sign-in: the form the sign-in page posts to /login."""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/") == "/login"


async def read_form(scope: dict, receive: Callable) -> tuple[bytes, FormData | None]:
    """A request's body, read by a middleware (to hand on with `replaying`), and its form; None when it is no form
    (Gradio then refuses it)."""
    request = Request(scope, receive)
    body = await request.body()  # kept by the request, which reads the form from it
    try:
        return body, await request.form()
    except (HTTPException, MultiPartException):
        return body, None


def replaying(body: bytes, receive: Callable) -> Callable:
    """An ASGI receive that hands on `body`, which a middleware read already, once; then the client's own messages
    (a disconnect)."""
    handed_on = False

    async def replay() -> dict:
        nonlocal handed_on
        if handed_on:
            return await receive()
        handed_on = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class NamesIgnoreCase:
    """A name signs in whatever its case. Phones capitalise the first letter typed into a box, and "Alice" was refused
    for the account alice (names are folders, in the file's spelling: a sign-in kept as "Alice" would open another,
    empty folder on Linux). Before Gradio's sign-in reads the form, a name that is an account's in another case is
    replaced by the account's own spelling, so the sign-in, and every request it makes, is that account's."""

    def __init__(self, app: Callable, accounts: Accounts) -> None:
        self.app, self.accounts = app, accounts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if not is_sign_in(scope):
            await self.app(scope, receive, send)
            return
        body, form = await read_form(scope, receive)
        typed = str(form.get("username") or "") if form else ""
        account = self.accounts.spelling(typed.strip())
        if form is not None and account is not None and account != typed:
            body = urlencode([(key, account if key == "username" else value) for key, value in form.multi_items()
                              if isinstance(value, str)]).encode()
            headers = [(key, value) for key, value in scope["headers"] if key not in (b"content-type", b"content-length")]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/x-www-form-urlencoded"),
                                          (b"content-length", str(len(body)).encode())]}
        await self.app(scope, replaying(body, receive), send)


class FollowPasswordFile:
    """The password file read again when it has changed, before a request is answered (`Accounts.reload`): an account
    added, or a password changed, with `make account` works without restarting the app, which would end everyone's
    jobs; and the sign-ins of an account taken out of the file, or given another password, end at once (Gradio would
    keep them until the app stops)."""

    def __init__(self, app: Callable, accounts: Accounts) -> None:
        self.app, self.accounts = app, accounts

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket") and (ended := self.accounts.reload()):
            tokens = scope["app"].tokens
            for token, name in list(tokens.items()):
                if name in ended:
                    del tokens[token]
        await self.app(scope, receive, send)


class OwnDownloadsOnly:
    """Gradio's file route serves anything in its cache to any signed-in account that has the link (a download's
    link holds a hash of its bytes: not guessable, but it can be shared, left in a browser's history or a proxy's
    log). This ASGI middleware, in front of the app when it has a password file, answers 404 to a request for a
    download (by its cache folder, `owners`) from any account but the one it was made for, as if it were gone.
    Who asks is read as Gradio's own `/user` route reads it: the session cookie, looked up in the app's tokens."""

    def __init__(self, app: Callable, owners: dict[str, str]) -> None:
        self.app, self.owners = app, owners

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and not self.allowed(scope):
            await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def allowed(self, scope: dict) -> bool:
        path = scope["path"]
        served = path.partition("/file=")[2] or path.partition("/file/")[2]
        owner = next((self.owners[part] for part in Path(served).parts if part in self.owners), None)
        if owner is None:
            return True
        server = scope["app"]
        return server.tokens.get(session_token(scope)) == owner


class SafeSignOut:
    """Gradio's sign-out (a GET of /logout), made safe; in front of the app when it has a password file.
    - Only from the app's own page, or typed into the address bar (Sec-Fetch-Site: same-origin, none; a client that
      sends no such header, as browsers before 2020, is let through): it signs out every browser of that person by
      default, and any other site could do it with a link or an image pointing there (the session cookie Gradio
      sets for https goes along on such requests: SameSite=None).
    - It ends the sign-in of the browser it comes from. Gradio ends the one its https cookie names, which a browser
      keeps only for https or loopback: signed out over plain http on a home network, the browser dropped its
      cookies but the sign-in stayed valid, for anyone who had copied one."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].rstrip("/").endswith("/logout"):
            await self.app(scope, receive, send)
            return
        if Headers(scope=scope).get("sec-fetch-site", "none") not in ("same-origin", "none"):
            await PlainTextResponse("Sign out from the app's own page (its Sign out button).", status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)  # first: with all_session (the default), Gradio finds the person by it
        scope["app"].tokens.pop(session_token(scope), None)


def session_token(scope: dict) -> str | None:
    """The sign-in token a request carries, as Gradio reads it: its session cookie (the secure one, else the one it
    sets for plain http)."""
    server, cookies = scope["app"], Request(scope).cookies
    return cookies.get(f"access-token-{server.cookie_id}") or cookies.get(f"access-token-unsecure-{server.cookie_id}")


class ForgetIdleSignIns:
    """Gradio keeps every sign-in (a token in a cookie) until the app stops, and an app may run for weeks: a cookie
    left in a browser no one uses, or read from it, would open that person's photos all that while. This ASGI
    middleware, in front of the app when it has a password file, forgets a sign-in that no request has used for
    `idle_s`, before the request is answered, so its browser is asked for the password again. A page left open
    keeps its sign-in: it asks for the job's status every few seconds."""

    def __init__(self, app: Callable, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.app, self.idle_s, self.clock = app, idle_s, clock
        self.last_used: dict[str, float] = {}  # token -> when a request last carried it (or it was first seen)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket"):
            self.forget_idle(scope["app"].tokens, session_token(scope))
        await self.app(scope, receive, send)

    def forget_idle(self, tokens: dict[str, str], used: str | None) -> None:
        now = self.clock()
        for token in list(tokens):
            if now - self.last_used.setdefault(token, now) >= self.idle_s:
                log.info("sign-in of %s forgotten: unused for %g s", tokens.pop(token, "?"), self.idle_s)
        for token in set(self.last_used) - set(tokens):  # signed out, or forgotten
            del self.last_used[token]
        if used in tokens:
            self.last_used[used] = now


def forget_downloads(root: Path) -> None:
    """An app's download folder and Gradio's cached copies of every download it served: those `SERVED` lists (an
    export replaces the folder's files, and the copies of earlier exports stay served while the app runs: an app
    closed after two left the first one's headshots in the system's temporary folder for good) and those of the
    files in it."""
    listing = root / SERVED
    cache = Path(get_upload_folder())
    for key in listing.read_text().split() if listing.is_file() else []:
        shutil.rmtree(cache / key, ignore_errors=True)
    forget_served(list(root.rglob("*")))
    shutil.rmtree(root, ignore_errors=True)


def in_use(root: Path) -> Path:
    """The lock file beside a download folder, held while its app runs."""
    return root.with_name(root.name + IN_USE)


def held_app_folder(prefix: str) -> tuple[Path, FileLock]:
    """A new private (0700) folder of the app's in the system's temporary folder, and the lock that says its app runs.
    The lock is taken first and the folder made after, so an app starting meanwhile (`forget_abandoned_folders`)
    never finds this folder without its lock held: with the lock inside the folder, taken once the folder was made,
    a starting app could take a new folder for abandoned in between and remove it."""
    root = Path(tempfile.gettempdir()) / f"{prefix}{secrets.token_hex(8)}"
    lock = FileLock(in_use(root), timeout=0, mode=0o600)
    lock.acquire()
    root.mkdir(mode=0o700)
    return root, lock


def let_go(root: Path, lock: FileLock) -> None:
    """An app's folder (`held_app_folder`) removed with its lock, as the app closes."""
    shutil.rmtree(root, ignore_errors=True)
    lock.release()
    in_use(root).unlink(missing_ok=True)


@contextmanager
def own_gradio_folder() -> Iterator[Path | None]:
    """A private folder of this app's for Gradio's uploads (a person's selfies until the app reads them) and its
    copies of each download served, set as GRADIO_TEMP_DIR, and removed when the app closes, or by the next app to
    start when this one was killed (`forget_abandoned_folders`). Gradio's default, the system's temporary folder's
    `gradio`, is shared by every Gradio app on the machine: made by another login's app, this one could not write
    there, and made by this one (umask 077: 0700), theirs could not; two apps of one login handed each other's
    uploads away (Gradio files one by its bytes' hash, and `UploadsInHand` counts one app's); and a killed app's
    uploads and served headshots stayed there. A GRADIO_TEMP_DIR of your own is kept. Set before the page is built:
    Gradio reads it then, except for the folder its server makes at start (`vibe_edit_history`, for a feature this
    app does not use), which it names when it is imported: that name is set here too."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield None
        return
    try:
        root, lock = held_app_folder(GRADIO_PREFIX)
    except OSError as exc:  # a full disk, or a temporary folder that is not one
        raise storage_error(exc) or HeadshotsError(
            f"Could not make the app's folder for uploads in the system's temporary folder: {exc}",
            "Point TMPDIR at a folder you can write to (or GRADIO_TEMP_DIR at one for Gradio's files), then start the "
            "app again.") from exc
    os.environ["GRADIO_TEMP_DIR"] = str(root)
    named_at_import, gradio.routes.DEFAULT_TEMP_DIR = gradio.routes.DEFAULT_TEMP_DIR, str(root)
    try:
        yield root
    finally:
        os.environ.pop("GRADIO_TEMP_DIR", None)
        gradio.routes.DEFAULT_TEMP_DIR = named_at_import
        let_go(root, lock)


def forget_abandoned_folders() -> list[Path]:
    """The folders of apps that stopped without closing (killed, or the machine went down): their download folders,
    with Gradio's copies of them, and their own Gradio folders (`own_gradio_folder`): otherwise a person's selfies and
    headshots outlive "Delete my data" there, the headshots served to anyone with the link. Run when an app starts.
    A running app holds the lock beside its folder, which the operating system lets go of when it dies: a folder
    whose lock can be taken is abandoned (a pid would not tell, from another container sharing /tmp); so is a lock
    left without its folder. Returns the folders removed."""
    removed = []
    tmp = Path(tempfile.gettempdir())
    names = {path.name.removesuffix(IN_USE) for prefix in (DOWNLOADS_PREFIX, GRADIO_PREFIX)
             for path in tmp.glob(f"{prefix}*")}  # folders and locks
    for root in (tmp / name for name in sorted(names)):
        lock = FileLock(in_use(root), timeout=0, mode=0o600)
        try:
            lock.acquire()
        except (Timeout, OSError):  # held: its app runs (or not ours to touch)
            continue
        if root.is_dir():
            if root.name.startswith(DOWNLOADS_PREFIX):
                forget_downloads(root)  # with the copies it lists in Gradio's folder
            else:
                shutil.rmtree(root, ignore_errors=True)  # Gradio's folder itself
            removed.append(root)
        lock.release()
        in_use(root).unlink(missing_ok=True)
    return removed


def downloads(manifest: Path, folder: Path) -> list[Path]:
    """export.json's crops, put together in `folder` for the browser: one zip (a folder per size), and each crop
    under a name that says its size first (hard links where the file system allows: every crop is stored once),
    since a download keeps only the file name, and a phone's narrow list shows only its start. The size named is
    the crop's own: a source too small for a size is cropped smaller, not upscaled (SDXL's 1024 px square gives
    the 1080x1350 portrait at 819x1024), and a name saying 1080x1350 would promise what the file is not."""
    out_dir = manifest.parent
    names = {size.folder: size.name for size in SIZES}  # export.json names each crop's size by its folder
    crops = {out_dir / e["path"]: f"{names.get(e['size'], e['size'])}-{e['width']}x{e['height']}"  # cv-600x800
             for item in json.loads(manifest.read_text())["images"] for e in item["exports"]}
    archive = folder / ZIP_NAME
    with zipfile.ZipFile(archive, "w") as bundle:
        for crop, size in crops.items():
            bundle.write(crop, f"{size}/{crop.name}")
    named = []
    for crop, size in crops.items():
        named.append(folder / f"{size}-{crop.name}")  # cv-600x800-linkedin-00.jpg
        try:
            os.link(crop, named[-1])
        except OSError:  # a file system without hard links
            shutil.copyfile(crop, named[-1])
    return [archive, *named]


def image_pixels(path: Path) -> int | None:
    """Width x height from the file's header (no decoding); None for one Pillow refuses to open at all (over twice
    headshots.images.MAX_PIXELS); or the reason it is not a usable image. Between those two Pillow warns, and the
    warning is ignored here: the app's own limit is lower, and its message names it (the 120 MP one did)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.width * image.height
    except Image.DecompressionBombError:
        return None
    except Exception as exc:  # any failure to open means "not a usable image"; load_rgb says which
        load_rgb(path)  # raises ImageError with the reason in the person's words
        raise ImageError(f"{path.name}: not a readable image ({exc}).", "Upload a JPEG, PNG, WebP or HEIC photo.") from exc


def port_number(text: str) -> int:
    """--port's type: a bad port is argparse's error naming the option, not the server's traceback at the end."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number from 1 to 65535")
    return int(text)


def check_can_listen(host: str, port: int) -> None:
    """Bind (host, port) as the server will (with SO_REUSEADDR, as Gradio and uvicorn do), before the face models load:
    a second `make app` on 7860 ended in Gradio's traceback. Raises ConfigError saying what to do."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"Port {port} on {host} is taken: another program listens there, perhaps a headshots app "
                              f"started before (http://{host}:{port}/).", f"Stop it, or start this one on another port: "
                              f"make app PORT={port + 1} (python -m service.app --port {port + 1}).") from exc
        raise ConfigError(f"Cannot listen on {host}, port {port}: {exc.strerror or exc}.",
                          "Give --host an address of this machine (127.0.0.1: this machine only) and a port from 1024 "
                          "to 65535.") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=port_number, default=7860, help="(default: 7860)")
    parser.add_argument("--password-file", type=Path, default=None,
                        help="one `name:hash` per line (--add-account writes them); required when --host is not a loopback address")
    parser.add_argument("--add-account", metavar="NAME", default=None,
                        help="set NAME's password in --password-file (asked for; stored as a hash), then exit")
    add_config_args(parser, overrides_help="config overrides for every person, e.g. train.max_steps=500")
    args = parse(parser, argv)
    args.host = listen_address(args.host)
    if args.add_account is not None:
        return set_password(args.password_file, args.add_account, args.verbose)
    try:
        accounts = Accounts.from_file(args.password_file) if args.password_file else None
        if accounts is None and not is_loopback(args.host):
            raise ConfigError(f"Listening on {args.host} would let other machines reach everyone's photos without a password.",
                              "Add --password-file FILE (--add-account NAME adds each person to it), or leave --host at 127.0.0.1.")
        check_can_listen(args.host, args.port)
    except HeadshotsError as exc:
        return print_error(exc, args.verbose)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(own_gradio_folder())
        except HeadshotsError as exc:
            return print_error(exc, args.verbose)
        return serve_until_stopped(args, accounts)


def serve_until_stopped(args: argparse.Namespace, accounts: Accounts | None) -> int:
    """The app, from start to close: Ctrl-C, `kill` or a service manager's SIGTERM close it alike."""
    try:
        app = HeadshotsApp(Settings(args.profile, args.config, args.overrides), accounts=accounts)
    except HeadshotsError as exc:
        return print_error(exc, args.verbose)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        app.launch(args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        print("headshots app: closing (its jobs end first: a few seconds)", flush=True)
        with shielded_from_interrupts():  # a second Ctrl-C here left jobs running and served headshots on disk
            app.close()  # its jobs end too: a training left running would meet the next app's Train
    return 0


if __name__ == "__main__":
    sys.exit(main())
