"""Long work off the request: one queue of jobs, each run in a child process, one at a time per device.

A job is one person's `train` (intake -> prepare -> fit) or `generate` (the same, then infer: generate,
score, gallery: each press a new round, `infer.round`, added to the earlier ones), run through
service.chain (the chain the batch runner uses, which skips a stage already done with the same inputs), or
`more` (more like one generated image: infer/variations.py, then score and
gallery, over the images already there), in a child process:

    python -m service.jobs {train,generate,more} --user NAME [--profile tiny] [key=value ...]

Why a child process: the job outlives the browser tab and the request; it can be stopped (the process
ends, and training continues from its last checkpoint on the next start); its memory goes back to the
system when it ends; and a crash in it cannot take the app down. One worker thread per GPU (one on a
machine without) takes jobs first come, first served; the others wait, and know their place in line.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from headshots.cli import build_parser, run
from headshots.config import Config
from headshots.errors import HeadshotsError
from headshots.logs import get_logger
from headshots.workspace import held_alone
from train.checkpoint import training_stopped

log = get_logger(__name__)
REPO = Path(__file__).resolve().parents[1]
QUEUED, RUNNING, DONE, FAILED, STOPPED = "queued", "running", "done", "failed", "stopped"
LAST_STAGE = {"train": "fit", "generate": "infer"}  # each kind runs the chain up to and including this stage
KINDS = (*LAST_STAGE, "more")
IMAGE_KINDS = ("generate", "more")  # the kinds that make images: their end brings a new review
STOP_GRACE_S = 10.0  # after SIGTERM, how long a job may take to end before it is killed
JOBS_FOLDER = "jobs"  # in the run's folder: each kind's log (`{kind}.log`), and JOB_LOCK
# Held by the app from just before a job's process starts until it has ended, beside the job's log: a purge is
# refused meanwhile. The child's own locks come later (once its imports are done) and go between its stages.
JOB_LOCK = ".job.lock"


@dataclass
class Job:
    """One person's request for long work, and what became of it."""

    id: int
    user: str
    kind: str  # one of KINDS
    argv: list[str]
    log_path: Path
    state: str = QUEUED
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str = ""  # failed: what went wrong, in the person's words (the CLI's `error:` line)
    hint: str = ""  # failed: what to do (the CLI's `->` line)
    stop_requested: bool = False
    expected_images: int | None = None  # a generate or more job: how many it makes (its progress line says "k of n")
    images_made: int | None = None  # a generate or more job once done: what it made, counted when first shown done
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)


def job_command(kind: str, user: str, args: list[str]) -> list[str]:
    """The child's command line, in every stage's CLI style: `args` are --profile, --config, key=value."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return [sys.executable, "-m", "service.jobs", kind, "--user", user, *args]


def devices() -> list[str | None]:
    """One worker per GPU (its index, for CUDA_VISIBLE_DEVICES), or one for the CPU (None)."""
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] or [None]


class JobBusy(HeadshotsError):
    """A job asked for while the person's last one is still queued or running (one job per person at a time)."""


class JobQueue:
    """First come, first served; at most one active job per person; jobs live as long as the app."""

    def __init__(self, worker_devices: list[str | None]) -> None:
        # Jobs run where the app runs, so a relative path in its config (paths.data_root=data/users, --config
        # mine.yaml) names the same folder for both; the project's packages stay importable from anywhere.
        self._cwd = Path.cwd()
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._latest: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(device,), daemon=True, name=f"jobs-{device or 'cpu'}")
                         for device in worker_devices]
        for thread in self._threads:
            thread.start()

    def submit(self, user: str, kind: str, argv: list[str], log_path: Path, expected_images: int | None = None) -> Job:
        with self._cond:
            current = self._latest.get(user)
            if current is not None and current.active:
                raise JobBusy(f"Your {current.kind} job is still {current.state}.", "Wait for it to finish, or stop it first.")
            job = Job(next(self._ids), user, kind, argv, log_path, expected_images=expected_images)
            self._waiting.append(job)
            self._latest[user] = job
            self._cond.notify()
            return job

    def latest(self, user: str) -> Job | None:
        with self._cond:
            return self._latest.get(user)

    def position(self, job: Job) -> int:
        """1 = next in line; 0 when not waiting."""
        with self._cond:
            return next((i for i, waiting in enumerate(self._waiting, start=1) if waiting is job), 0)

    def stop(self, user: str) -> Job | None:
        """Take the person's job out of the line, or end its process (the worker records it as stopped)."""
        with self._cond:
            job = self._latest.get(user)
            if job is None or not job.active:
                return job
            job.stop_requested = True
            if job in self._waiting:
                self._waiting.remove(job)
                job.state, job.finished = STOPPED, time.time()
            elif job.process is not None:
                job.process.terminate()
        if job.process is not None:
            _wait_or_kill(job.process)
            with self._cond:
                self._cond.wait_for(lambda: not job.active, timeout=STOP_GRACE_S)  # the worker records the end
        return job

    def forget(self, user: str) -> None:
        """After the person's data is deleted, nothing of theirs is kept here either."""
        self.stop(user)
        with self._cond:
            self._latest.pop(user, None)

    def close(self) -> None:
        """End every job (the app is shutting down): training continues from its checkpoint next time."""
        with self._cond:
            self._closed = True
            users = list(self._latest)
            self._cond.notify_all()
        for user in users:
            self.stop(user)

    def _work(self, device: str | None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        while True:
            with ExitStack() as running:  # JOB_LOCK, let go on every way out of here, before the job is marked ended
                with self._cond:
                    while not self._waiting and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    job = self._waiting.popleft()
                    job.state, job.started = RUNNING, time.time()
                    try:
                        running.enter_context(_in_use(job))
                        job.process = _start(job, self._cwd, env)
                    except (OSError, HeadshotsError) as exc:  # disk full, a folder not writable, data being deleted
                        running.close()
                        _not_started(job, exc)
                        self._cond.notify_all()
                        log.error("job %d (%s for %s) could not start: %s", job.id, job.kind, job.user, exc)
                        continue
                log.info("job %d (%s for %s) started on %s", job.id, job.kind, job.user, device or "cpu")
                code = job.process.wait()
            with self._cond:
                _finish(job, code)
                self._cond.notify_all()
            log.info("job %d (%s for %s) %s", job.id, job.kind, job.user, job.state)


def _in_use(job: Job) -> AbstractContextManager[None]:
    """JOB_LOCK, held while the job's process runs; refused while a purge of the person's data holds it. (A job
    starting in the instant the purge deletes the folder makes a new lock file there: the deletion itself is the
    window left.)"""
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    return held_alone(job.log_path.parent / JOB_LOCK, HeadshotsError(
        "Your data is being deleted, or used by another copy of the web app: this job did not start.",
        "Wait a moment, then press the button again."))


def _not_started(job: Job, exc: OSError | HeadshotsError) -> None:
    job.state, job.finished = FAILED, time.time()
    if isinstance(exc, HeadshotsError):
        job.error, job.hint = exc.message, exc.hint
    else:
        job.error = f"The {job.kind} job could not start: {exc.strerror or exc}."
        job.hint = f"Free disk space or fix the permissions of {job.log_path.parent}, then press the button again."


def _start(job: Job, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(job.log_path, "w") as log_file:  # the child holds its own descriptor
        return subprocess.Popen(job.argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _finish(job: Job, code: int) -> None:
    job.finished = time.time()
    if code == 0:
        job.state = DONE
        return
    if job.stop_requested:
        job.state = STOPPED
        return
    job.state = FAILED
    job.error, job.hint = error_lines(job.log_path)
    if not job.error:
        job.error = f"The {job.kind} job ended unexpectedly (exit status {code})."
        job.hint = f"Its log is {job.log_path}; press the button again to retry."


def error_lines(log_path: Path) -> tuple[str, str]:
    """The last `error: ...` / `  -> ...` pair a CLI printed (headshots.cli): the reason without a traceback."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "", ""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error: "):
            hint = lines[i + 1].strip()[3:] if i + 1 < len(lines) and lines[i + 1].startswith("  -> ") else ""
            return lines[i][len("error: "):], hint
    return "", ""


def _wait_or_kill(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- the child process --------------------------------------------------------------------------


def run_chain(cfg: Config, last: str) -> None:
    """The person's chain up to `last`; a stage that fails for a reason the person can fix stops it."""
    from service.chain import run_person

    def show(result) -> None:
        log.info("%s: %s%s", result.stage, result.state, f" ({result.seconds:.1f} s)" if result.seconds else "")

    failed = next((r for r in run_person(cfg, show, until=last) if not r.ok), None)
    if failed is not None:
        raise HeadshotsError(failed.reason, failed.hint)


def more_like_and_review(cfg: Config) -> None:
    """More like `infer.more.image` (and their faces re-drawn when `infer.detail.enabled`), then the whole
    review again (scores and gallery) with them in it."""
    from infer.gallery import make_and_review
    from infer.variations import more_like

    make_and_review(cfg, more_like)


COMMANDS = {**{kind: (lambda cfg, last=last: run_chain(cfg, last)) for kind, last in LAST_STAGE.items()},
            "more": more_like_and_review}
HELP = {"train": "intake, prepare and fit (resumes from the last checkpoint)",
        "generate": "as train (skipping what is done), then generate new images (added to the earlier ones), score and gallery",
        "more": "more like infer.more.image (a generated image), then score and gallery"}

if __name__ == "__main__":
    # The app's Stop ends a job with SIGTERM, which `run` takes as Ctrl-C: the stage stops as a person's Ctrl-C stops it
    # (the records of what was done put back if it had not changed its outputs yet, "interrupted" in the job's log)
    sys.exit(run(build_parser("python -m service.jobs", "One web-app job in its own process.", HELP), COMMANDS,
                 interrupted={"train": training_stopped}))
