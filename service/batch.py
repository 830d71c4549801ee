"""Many people at once: each person's chain (service.chain) as a chain of Ray tasks.

    python -m service.batch --users alice,bob,carol [--address auto|ray://head:10001] [--profile tiny] [--config my.yaml]
                            [--id NAME] [key=value ...]

Every stage of every person is one Ray task that declares what it needs: fit and infer one GPU each
when the cluster has GPUs, the CPU stages (intake, prepare, export) CPUs only, so one person's CPU
work runs beside another's training. A stage takes the previous stage's result as its argument, so
Ray starts it when that one has finished. Without --address Ray starts embedded on this machine; with
one, the same code runs on a cluster (docs/batch.md: the stages talk through files, so data and
outputs must be on storage every worker sees).

A crash or a killed worker is retried by Ray (`batch.max_retries`); training then resumes from its
last checkpoint. A problem the person must fix (e.g. photos that fail intake) stops that person only,
with the advice recorded. Stages whose outputs are complete and whose inputs are unchanged are
skipped, so running the same batch again does no work. The status table is printed while it runs and
written to outputs/batch/<id>/status.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

from headshots.cli import add_config_args, environment_set, parse, print_error, shielded_from_interrupts, terminate_as_interrupt
from headshots.config import SIMPLE_NAME_RULE, BatchConfig, Config, is_simple_name, load_config, model_source
from headshots.errors import ConfigError, HeadshotsError
from headshots.logs import get_logger, setup_logging
from headshots.stages import STAGES, stage_named
from headshots.workspace import Workspace, batch_root, held_alone, private_files, process_running, write_json_atomic
from infer.styles import load_style
from service.chain import FAILED, NOT_RUN, StageResult, chain_done, run_stage

log = get_logger(__name__)

# Environment a worker needs to behave like this process: face weights, W&B mode, hub settings.
PASSED_ENV_PREFIXES = ("HEADSHOTS_", "WANDB_", "HF_", "TRANSFORMERS_", "DIFFUSERS_")
# Never passed: a job's runtime_env is stored with it, and Ray's dashboard and `ray list jobs` show it to anyone
# with the cluster's token (an embedded Ray's workers inherit them as this process's children anyway)
SECRET_ENV = ("TOKEN", "KEY", "SECRET", "PASSWORD")
CRASHED = "crashed"  # raised after every retry (not something the person can fix)
INTERRUPTED = "interrupted"  # the batch was stopped (Ctrl-C) before the stage finished
BOARD_TIMEOUT_S = 30.0  # a call to the status board unanswered this long: the board is taken as lost for now
BATCH_LOCK = ".batch.lock"  # in the person's run folder: held by the batch's driver while their stages run
NOTE_WIDTH = 80  # the table's note column; the whole reason and hint are printed under the table


# -- what runs on the workers -------------------------------------------------------------------------

def _remote_api():
    """Ray's task and actor definitions, made on first use so that importing this module stays cheap."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1)  # lost with its node, it starts again, empty (`Batch.started_so_far`)
    class StatusBoard:
        """Which stage started where, and how many times (a retried stage starts again)."""

        def __init__(self) -> None:
            self.started: dict[tuple[str, str], dict] = {}

        def start(self, user: str, stage: str, pid: int) -> int:
            """Counts an attempt starting; returns its number (1 for the first)."""
            now = time.time()
            entry = self.started.setdefault((user, stage), {"attempts": 0, "first": now})
            entry.update(attempts=entry["attempts"] + 1, pid=pid, since=now)
            return entry["attempts"]

        def snapshot(self) -> dict[tuple[str, str], dict]:
            return self.started

    @ray.remote
    def stage_task(stage_name: str, user: str, profile: str, config_file: str | None, overrides: list[str], threads: int,
                   upstream: StageResult | None, board) -> StageResult:
        import torch

        setup_logging()  # the CLIs' log lines (and their quiet third parties) in the worker's log too
        private_files()  # a cluster's workers are not the driver's children, whose umask they would have
        torch.set_num_threads(threads)
        attempt = _count_start(board, user, stage_name)
        try:
            cfg = load_config(user, profile, config_file, overrides)
        except HeadshotsError as exc:  # the driver composed the same config: their settings.yaml, or this worker's code, differs
            return StageResult(user, stage_name, FAILED, reason=exc.message,
                               hint=exc.hint + " (it loaded when the batch started: their settings.yaml changed since, or "
                                               "this worker runs another version of this project)")
        return past_retries(user, stage_name, attempt, cfg.batch.max_retries) or run_stage(stage_named(stage_name), cfg, upstream)

    return StatusBoard, stage_task


def _count_start(board, user: str, stage: str) -> int | None:
    """This attempt's number, counted on the status board; None when the board does not answer (the attempt then
    runs uncounted: the board is the batch's record of attempts, not a reason to stop the person's work)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        return ray.get(board.start.remote(user, stage, os.getpid()), timeout=BOARD_TIMEOUT_S)
    except (RayActorError, GetTimeoutError) as exc:
        log.warning("%s: the batch's status board did not answer (%s); this attempt is not counted", stage, _first_line(exc))
        return None


def past_retries(user: str, stage: str, attempt: int | None, max_retries: int) -> StageResult | None:
    """The crashed result of an attempt past `batch.max_retries`, which is then not run. Ray retries a task whose worker
    its memory monitor killed on a budget of its own (`task_oom_retries`, unlimited in Ray 2.60 unless set: the
    embedded Ray sets it, `start_ray`, a cluster may not), so a stage out of memory every time ran again for ever,
    holding its GPU or CPUs, and the batch never ended (a service review). Only such a retry gets this far."""
    if attempt is None or attempt <= max_retries + 1:
        return None
    return StageResult(user, stage, CRASHED, reason=f"its worker was killed in each of {attempt - 1} attempt(s), most "
                       "likely by Ray's memory monitor (out of memory); not started again (batch.max_retries)")


# -- the driver -------------------------------------------------------------------------------------

@dataclass
class StageRow:
    stage: str
    state: str = "waiting"  # waiting | queued | running | done | skipped | failed | not run | crashed | interrupted
    seconds: float = 0.0
    attempts: int = 0
    reason: str = ""
    hint: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class PersonRow:
    user: str
    stages: list[StageRow]

    @property
    def state(self) -> str:
        """complete | stopped (the person must fix something) | crashed | interrupted | running."""
        states = [s.state for s in self.stages]
        if all(s in ("done", "skipped") for s in states):
            return "complete"
        if FAILED in states:
            return "stopped"
        if CRASHED in states:
            return CRASHED
        if INTERRUPTED in states:
            return INTERRUPTED
        return "running"

    def refuse(self, exc: HeadshotsError) -> None:
        """Stopped before their first stage, with the reason (no photos, their settings.yaml, their folder in use or unwritable)."""
        first, *rest = self.stages
        first.state, first.reason, first.hint = FAILED, exc.message, exc.hint
        for row in rest:
            row.state, row.reason = NOT_RUN, f"{first.stage} did not start"

    def interrupt(self, reason: str) -> None:
        """The first stage not finished (running, or the next to start) is marked interrupted, with `reason` and
        what to do; the stages after it never started, and say so. A person whose chain had stopped already (a
        stage failed: their photos or settings) keeps that as the news: the rest would not have run anyway."""
        unfinished = [stage for stage in self.stages if stage.state in ("waiting", "queued", "running")]
        stopped = next((stage for stage in self.stages if stage.state in (FAILED, CRASHED)), None)
        if stopped is not None:
            for stage in unfinished:
                stage.state, stage.reason = NOT_RUN, (f"{stopped.stage} stopped (see its reason)" if stopped.state == FAILED
                                                      else f"{stopped.stage} did not finish")
            return
        for stage in unfinished[:1]:
            stage.state, stage.reason = INTERRUPTED, reason
            stage.hint = "Run the same batch again: finished stages are skipped, and training goes on from its last checkpoint if it saved one."
        for stage in unfinished[1:]:
            stage.state, stage.reason = NOT_RUN, f"{unfinished[0].stage} did not finish"

    @property
    def current(self) -> StageRow:
        """The stage that decides the person's state: the first not finished well, else the last."""
        return next((s for s in self.stages if s.state not in ("done", "skipped")), self.stages[-1])

    def to_json(self) -> dict:
        infer = next(s for s in self.stages if s.stage == "infer").details
        current = self.current
        return {"user": self.user, "state": self.state, "stage": current.stage, "stage_state": current.state,
                "reason": current.reason, "hint": current.hint,
                "seconds": round(sum(s.seconds for s in self.stages), 2),
                "kept": infer.get("kept"), "best_likeness": infer.get("best_likeness"),
                "stages": [{**vars(s), "seconds": round(s.seconds, 2)} for s in self.stages]}


_embedded_session: Path | None = None  # the session folder of the Ray this process started (its logs), if any
# The temporary folder (TMPDIR) of the Ray this process started, if any: its processes' temporary files. Its dashboard
# runs a multiprocessing forkserver, which Ray's shutdown kills before it removes its folder, so every batch left an
# empty pymp-* folder in the system's temporary folder; made here, it goes with the batch (`stop_ray`).
_embedded_tmp: Path | None = None
RAY_TMP_PREFIX = "headshots-ray-"  # that folder's name: the only kind close_abandoned deletes


def worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's settings the workers get (`PASSED_ENV_PREFIXES`), secrets left out (`SECRET_ENV`)."""
    return {k: v for k, v in environ.items() if k.startswith(PASSED_ENV_PREFIXES) and not any(w in k for w in SECRET_ENV)}


def start_ray(address: str | None = None, max_retries: int = BatchConfig.max_retries) -> None:
    """Connect to the cluster at `address`, or start Ray embedded on this machine (address None: always a new
    one, never a cluster that RAY_ADDRESS or an earlier `ray start` names). Workers get this process's
    HEADSHOTS_/WANDB_/HF_ settings; the dashboard listens on loopback, and an embedded Ray collects no metrics (its
    agent serves them on every interface), and retries a task its memory monitor killed at most `max_retries` times
    (`batch.max_retries`; unlimited by default: `past_retries` stops it on a cluster); tasks are named by stage and
    place in the batch, not by person."""
    import ray

    global _embedded_session, _embedded_tmp
    if ray.is_initialized():
        return
    env = worker_env(os.environ)
    if address is None:  # Ray's own folder (its sessions, their logs) stays where Ray puts it
        ray_folder, _embedded_tmp = ray._common.utils.get_default_ray_temp_dir(), Path(tempfile.mkdtemp(prefix=RAY_TMP_PREFIX))
    try:
        # TMPDIR for the processes an embedded Ray starts here (its node's, and through them its workers); this
        # process's own temporary files stay where they were
        with environment_set({"TMPDIR": str(_embedded_tmp)} if address is None else {}):
            ray.init(address=address or "local", runtime_env={"env_vars": env}, log_to_driver=False,
                     dashboard_host="127.0.0.1", configure_logging=False,
                     **({} if address else {
                         "_temp_dir": ray_folder,
                         # an embedded Ray's metrics agent listens on every interface, without a login
                         "_system_config": {"enable_metrics_collection": False, "task_oom_retries": max_retries}}))
    except ConnectionError as exc:
        raise HeadshotsError(f"Could not reach a Ray cluster at {address}: {_first_line(exc)}",
                             "Start it first (`ray start --head` on its head node), check the address, or leave "
                             "--address (ADDRESS=) out to run on this machine.") from exc
    if address is None:
        _embedded_session = Path(ray._private.worker._global_node.get_session_dir_path())


def stop_ray(keep_logs: bool = False) -> None:
    """Shut down Ray, and delete the embedded session's folder (in Ray's temp folder) unless `keep_logs`: its worker
    logs name the people in the batch and the paths to their files, which `make purge` cannot reach there. The
    embedded Ray's temporary folder (`_embedded_tmp`) goes in any case: nothing in it is read after."""
    if "ray" not in sys.modules:  # never started here (a batch of people all done): importing it alone takes seconds
        return
    import ray

    global _embedded_session, _embedded_tmp
    ray.shutdown()
    session, _embedded_session = _embedded_session, None
    if session is not None and not keep_logs:
        delete_session(session)
    tmp, _embedded_tmp = _embedded_tmp, None
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def delete_session(session: Path) -> None:
    shutil.rmtree(session, ignore_errors=True)
    latest = session.parent / "session_latest"
    if latest.is_symlink() and not latest.exists():  # it pointed at the folder just deleted
        latest.unlink()


ABANDONED_AFTER_S = 30.0  # a killed batch's status file, not rewritten for this long, is closed (`close_abandoned`)


def driver_gone(status: dict) -> bool:
    """A batch started on this machine whose process is gone. A batch on another machine sharing the outputs
    folder is never judged from here, nor one whose file predates `driver_pid`."""
    pid = status.get("driver_pid")
    return status.get("host") == socket.gethostname() and isinstance(pid, int) and not process_running(pid)


def _abandoned(status: dict, path: Path, quiet_s: float) -> bool:
    """Not finished, its process gone, and its file not rewritten for `quiet_s` (a running batch rewrites it every
    `batch.status_every_s`)."""
    return not status.get("finished") and driver_gone(status) and time.time() - path.stat().st_mtime > quiet_s


def is_ray_session(folder: Path) -> bool:
    """A folder Ray made for a session (the only kind close_abandoned deletes, whatever a status file says)."""
    return folder.name.startswith("session_") and folder.is_dir() and (folder / "logs").is_dir()


def end_processes_of(ray_tmp: Path, grace_s: float = 5.0) -> None:
    """End what is left of a killed batch's embedded Ray: its dashboard's processes and its workers end by
    themselves within seconds, but until then write logs into the session folder (deleted at once, it came back),
    and a worker stuck in a GPU call may not notice at all. Each has the batch's own TMPDIR (`start_ray`: a folder
    made for that batch alone), so they are found by it, asked to stop, and killed if still there after `grace_s`.
    Another login's processes cannot be read, and are not touched."""
    import psutil  # accelerate's dependency too

    left = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("TMPDIR") == str(ray_tmp):
                process.terminate()
                left.append(process)
        except psutil.Error:  # gone meanwhile, a zombie, or another login's
            continue
    _, still_there = psutil.wait_procs(left, timeout=grace_s)
    for process in still_there:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(still_there, timeout=grace_s)


def close_abandoned(batch_root: Path, quiet_s: float = ABANDONED_AFTER_S, taking_over: str | None = None) -> list[str]:
    """Batches whose process was killed (kill -9, a lost terminal, a reboot) before they finished: their status
    still says running. Each is marked interrupted, as Ctrl-C would have, so nothing polling it waits, what is left
    of its embedded Ray is ended (`end_processes_of`), and its session folder is deleted (its worker logs name the
    people), unless a stage crashed, whose hint names those logs; its temporary folder (`ray_tmp`) in any case. A
    status file that cannot be read, or was written before these fields, is left as it is. `taking_over`: the id
    the calling batch runs under. A killed batch of that id is closed however fresh its file, since the caller is
    about to write over that file, and with it the only record of where the killed batch's Ray logs are (a killed
    batch started again at once, by a person or a supervisor, left them behind for good). Returns the batches
    closed."""
    closed = []
    for path in sorted(batch_root.glob("*/status.json")):
        try:
            status = json.loads(path.read_text())
            if not _abandoned(status, path, 0.0 if path.parent.name == taking_over else quiet_s):
                continue
            rows = [PersonRow(p["user"], [StageRow(**stage) for stage in p["stages"]]) for p in status["people"]]
            session = Path(status["ray_session"]) if status.get("ray_session") else None
            tmp = Path(status["ray_tmp"]) if status.get("ray_tmp") else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for row in rows:
            row.interrupt("the batch stopped without finishing (its process was killed)")
        ours = tmp is not None and tmp.name.startswith(RAY_TMP_PREFIX)  # the only kind of folder this deletes
        if ours:
            end_processes_of(tmp)
        if session is not None and is_ray_session(session) and not any(stage.state == CRASHED for row in rows for stage in row.stages):
            delete_session(session)
        if ours:
            shutil.rmtree(tmp, ignore_errors=True)
        write_json_atomic(path, {**status, "finished": True, "interrupted": True, "people": [r.to_json() for r in rows]})
        closed.append(path.parent.name)
    return closed


def worker_logs() -> str:
    """Where a crashed stage's worker logs are, in words."""
    if _embedded_session is not None:
        return f"worker logs are in {_embedded_session / 'logs'} (kept for this; delete the folder when done: they name the people in the batch)"
    return "worker logs are on the cluster's Ray dashboard"


def new_batch_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def absolute_path_overrides(cfg: Config) -> list[str]:
    """Workers may start elsewhere (a cluster node, another folder): give them absolute paths, and a
    local model folder as an absolute path too (a hub id stays as it is)."""
    overrides = [f"paths.{key}={Path(getattr(cfg.paths, key)).resolve()}" for key in ("data_root", "outputs_root", "cache_root")]
    return [*overrides, f"model.pretrained={model_source(cfg.model.pretrained)}"]


@dataclass
class BatchConfigs:
    shared: Config  # the batch's own settings (Ray, paths), without anyone's settings.yaml
    people: dict[str, Config]  # each person's, with their own settings
    refused: dict[str, HeadshotsError]  # people with no photos, or whose own settings.yaml cannot be used, and why
    users: list[str]  # everyone, in the order given (the status table's)
    config_file: str | None  # what every worker composes its person's config from: this file (absolute) ...
    overrides: list[str]  # ... and these


def load_configs(users: Sequence[str], profile: str | None, config_file: str | None, overrides: Sequence[str],
                 batch_id: str) -> BatchConfigs:
    """Every person's config, composed and validated before any work starts. A bad shared setting (a key, a
    user name) stops the batch here; a person with no photos, or whose own settings.yaml cannot be used, is set
    aside with the reason (their problem stays theirs)."""
    if not users:
        raise ConfigError("No users given.", "Name them: make batch USERS=alice,bob (python -m service.batch --users alice,bob)")
    for k, user in enumerate(users):
        same = next((other for other in users[:k] if other.casefold() == user.casefold()), None)
        if same == user:
            raise ConfigError(f"{user!r} is named twice in {', '.join(users)}.", "Name each person once.")
        if same is not None:  # Alice and alice share a folder on macOS and Windows
            raise ConfigError(f"{same!r} and {user!r} are one person: user names ignore case.", "Name each person once.")
    group = [] if any(o.startswith("wandb.group=") for o in overrides) else [f"wandb.group=batch-{batch_id}"]
    config_file = str(Path(config_file).resolve()) if config_file else None  # workers may start elsewhere
    first = load_config(users[0], profile, config_file, [*overrides, *group], with_person_settings=False)
    final = [*overrides, *group, *absolute_path_overrides(first)]
    shared = load_config(users[0], profile, config_file, final, with_person_settings=False)
    for style in shared.infer.styles:  # a misspelt style would otherwise stop each person at infer, after training
        load_style(style, dict(shared.infer.style_overrides))
    configs, refused = {}, {}
    for user in users:
        try:
            configs[user] = load_config(user, profile, config_file, final)
        except ConfigError as exc:
            without = load_config(user, profile, config_file, final, with_person_settings=False)  # raises: not theirs alone
            try:
                refused[user] = own_settings_error(exc, Workspace.from_config(without).person_settings)
            except HeadshotsError as twin:  # a name refused beside its folder's twin (case_twin): that first
                refused[user] = twin
    for user, cfg in list(configs.items()):
        try:
            Workspace.from_config(cfg).require_selfies()
        except HeadshotsError as exc:  # found now, not after Ray has started
            refused[user] = exc
            del configs[user]
    return BatchConfigs(shared, configs, refused, list(users), config_file, final)


def own_settings_error(exc: ConfigError, path: Path) -> ConfigError:
    """The error as the person's to fix: it names their settings.yaml and says what happens next."""
    message = exc.message if str(path) in exc.message else f"{path}: {exc.message}"
    then = "Fix or remove the file, then run the batch again (the others' finished stages are skipped)."
    return ConfigError(message, f"{exc.hint} {then}" if exc.hint else then)


class Batch:
    """Submits every person's chain to Ray, follows it, and keeps status.json up to date."""

    def __init__(self, configs: BatchConfigs, batch_id: str, address: str | None = None) -> None:
        self.configs = configs.people
        self.config_file, self.overrides = configs.config_file, configs.overrides  # what every worker composes its config from
        self.batch_id = batch_id
        self.address = address
        self.settings = configs.shared.batch
        self.status_dir = batch_root(Path(configs.shared.paths.outputs_root)) / batch_id
        self.rows = {user: PersonRow(user, [StageRow(s.name) for s in STAGES]) for user in configs.users}
        for user, exc in configs.refused.items():  # stopped before their first stage, with the reason
            self.rows[user].refuse(exc)
        self.holds: dict[str, ExitStack] = {}  # each person's batch lock, while their stages run (`hold_people`)
        roots = (Path(configs.shared.paths.data_root), Path(configs.shared.paths.outputs_root))
        self.folders = {user: [root / user for root in roots] for user in configs.users}  # what a deletion removes
        self.seen: set[Path] = set()  # those of `folders` this batch has seen (`deleted`)
        self.forgotten: set[str] = set()  # people whose data was deleted during the batch: left out of its status
        self.written: set[str] = set()  # the people in status.json as this batch last wrote it (`scrubbed`)
        self.deleted()  # the folders there are now
        self.started = time.time()
        self.interrupted = False
        self._last_states: list[tuple[str, str, str]] = []
        self._started: dict[tuple[str, str], dict] = {}  # the status board's last answer (`started_so_far`)

    # -- Ray ------------------------------------------------------------------------------------------

    def use_gpus(self) -> bool:
        """`batch.gpu`; auto: whether the cluster has a GPU now. Ray counts only nodes that are up, so a cluster whose
        GPU nodes an autoscaler starts on demand (the shipped KubeRay one: none until asked) has none now, no task
        asks for one, and none is ever started: every training runs on CPUs (a service review). auto stays a look,
        since yes on a cluster with no GPU at all leaves the tasks waiting for ever; on a cluster it says so."""
        import ray

        if self.settings.gpu != "auto":
            return self.settings.gpu == "yes"
        found = ray.cluster_resources().get("GPU", 0) > 0
        if not found and self.address:
            log.warning("batch.gpu=auto: the cluster has no GPU now, so fit and infer run on CPUs. A cluster whose GPU "
                        "nodes are started on demand (autoscaled, such as configs/ray/kuberay-cluster.yaml) starts them "
                        "only for tasks that ask for a GPU: pass batch.gpu=yes there (batch.gpu=no keeps this quiet).")
        return found

    def submit(self) -> dict[tuple[str, str], object]:
        status_board, stage_task = _remote_api()
        self.board = status_board.remote()
        gpus = self.use_gpus()
        threads = max(1, int(self.settings.cpus_per_stage))
        refs = {}
        for number, (user, cfg) in enumerate(self.configs.items(), start=1):
            upstream = None
            for stage in STAGES:
                upstream = stage_task.options(
                    name=f"{stage.name}:person-{number}",  # Ray publishes task names (dashboard, metrics): not the person's
                    num_cpus=self.settings.cpus_per_stage,
                    num_gpus=1 if (gpus and stage.uses_gpu) else 0,
                    max_retries=self.settings.max_retries,
                    retry_exceptions=True,
                ).remote(stage.name, user, cfg.profile, self.config_file, self.overrides, threads, upstream, self.board)
                refs[(user, stage.name)] = upstream
        return refs

    def follow(self, refs: dict[tuple[str, str], object]) -> None:
        import ray

        pending = dict(refs)
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=self.settings.status_every_s)
            ready_ids = set(ready)
            started = self.started_so_far()
            for key in [k for k, ref in pending.items() if ref in ready_ids]:
                self._finish(key, pending.pop(key), started.get(key))
                if not any(user == key[0] for user, _ in pending):  # their last stage: purge may delete them now
                    self.release(key[0])
            self._mark_running(started, pending)
            self.write_status(finished=not pending)

    def hold_people(self) -> None:
        """Hold each person's batch lock (BATCH_LOCK, in their run's folder) from now until their last stage ends
        (`follow`), so `make purge` and the web app's Delete my data are refused meanwhile: between two of their
        stages no stage lock is held, and a deletion there saw nothing running, then the batch wrote their row back
        and drew their images again (a service review). A person whose lock is held elsewhere (another batch, or a
        deletion of their data, which takes it too) is stopped here, and so is one whose run folder cannot be made."""
        for user, cfg in list(self.configs.items()):
            try:
                self.holds[user] = self._hold(cfg)
            except HeadshotsError as exc:
                self.rows[user].refuse(exc)
                del self.configs[user]
        self.deleted()  # their run folders, made just now

    @staticmethod
    def _hold(cfg: Config) -> ExitStack:
        """`cfg`'s person's batch lock, held until the stack is closed; a refusal says why, as their own news."""
        run_dir = Workspace.from_config(cfg).run_dir(cfg.run)
        busy = HeadshotsError("Another batch, or a deletion of their data, is using this person's folder now.",
                              "Run them again once it has finished.")
        hold = ExitStack()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            hold.enter_context(held_alone(run_dir / BATCH_LOCK, busy))
        except OSError as exc:  # not writable, a file in the way, a full disk
            raise HeadshotsError(f"Could not make or lock {run_dir / BATCH_LOCK}: {exc.strerror or exc}.",
                                 "Make that folder writable for this login (or free space), then run them again.") from exc
        return hold

    def release(self, user: str | None = None) -> None:
        """Let go of `user`'s batch lock (everyone's: None)."""
        for name in [user] if user else list(self.holds):
            if name in self.holds:
                self.holds.pop(name).close()

    def skip_those_done(self) -> None:
        """People whose whole chain is done (nothing any stage reads changed) are marked skipped here, in the driver,
        and get no tasks: a batch of them alone starts no Ray."""
        for user, cfg in list(self.configs.items()):
            results = chain_done(cfg)
            if results is not None:
                for result, row in zip(results, self.rows[user].stages):
                    row.state, row.details = result.state, result.details
                del self.configs[user]

    def deleted(self) -> set[str]:
        """People whose data a deletion removed during the batch (`make purge`, the web app's Delete my data): a folder
        of theirs that the batch saw is gone, while the batch does not hold their lock (a person whose last stage has
        ended, or who had none to run: skipped, refused). The deletion took their row out of status.json, and the next
        write put it back, reasons, likeness and all, for good (a service review). They are forgotten from then on
        (`forgotten`), so status.json never names them again. Returns those found just now."""
        gone = set()
        for user, folders in self.folders.items():
            self.seen.update(folder for folder in folders if folder.exists())
            if user not in self.holds and user not in self.forgotten and any(f in self.seen and not f.exists() for f in folders):
                gone.add(user)
        self.forgotten |= gone
        return gone

    def scrubbed(self, path: Path) -> None:
        """People a deletion took out of status.json since this batch last wrote it are forgotten too: `deleted` sees
        only folders going, and a person refused before their first stage (no photos, their settings.yaml) may have
        none that a purge without ALL=1 removes, so their name and reason came back. A file gone altogether went with
        a deletion of its only person. (A deletion landing between this look and the write is caught by `deleted`
        alone.)"""
        try:
            on_disk = {person.get("user") for person in json.loads(path.read_text())["people"]}
        except FileNotFoundError:
            on_disk = set()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # being replaced, or broken by hand: no news
            return
        self.forgotten |= {user for user in self.written - on_disk if user not in self.holds}

    def started_so_far(self) -> dict[tuple[str, str], dict]:
        """The status board's starts, over the last ones known. The board is one actor: lost with its node (a spot or
        autoscaled cluster, a kill), the snapshot raised, and the driver ended in a traceback while everyone's tasks
        were healthy (a service review). Ray starts it again, empty, so a stage's attempts and time count from then
        on; while it cannot answer, the last known starts stand."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        try:
            self._started.update(ray.get(self.board.snapshot.remote(), timeout=BOARD_TIMEOUT_S))
        except (RayActorError, GetTimeoutError) as exc:
            log.warning("the batch's status board did not answer (%s): the attempts shown are the last known", _first_line(exc))
        return self._started

    def _finish(self, key: tuple[str, str], ref, started: dict | None) -> None:
        """The stage's final row. A stage that ran more than once counts from its first start: the attempts that
        crashed took the person's time (and the GPU's) too."""
        import ray
        from ray.exceptions import RayError

        user, stage = key
        row = self._stage_row(user, stage)
        earlier_attempts = started["since"] - started["first"] if started else 0.0  # on one clock: the board's
        if started is not None:
            row.attempts = started["attempts"]
        try:
            result: StageResult = ray.get(ref)
            row.state, row.seconds, row.reason, row.hint, row.details = (
                result.state, earlier_attempts + result.seconds, result.reason, result.hint, result.details)
            if result.state == NOT_RUN:  # its task only found the stage before it failed
                row.attempts = 0
            if result.state == CRASHED:  # its last start found it past batch.max_retries (`past_retries`) and ran nothing
                row.attempts = max(0, row.attempts - 1)
                row.hint = f"Give it more memory (or lighter settings), then run the same batch again; {worker_logs()}."
        except RayError as exc:  # raised (or its worker died) after every retry, or an upstream stage did
            earlier_crashed = any(s.state in (CRASHED, NOT_RUN) for s in self.rows[user].stages if s.stage != stage)
            row.state = NOT_RUN if earlier_crashed else CRASHED
            row.reason = ("an earlier stage crashed" if earlier_crashed
                          else f"crashed after {self.settings.max_retries + 1} attempt(s): {_first_line(exc)}")
            row.hint = "" if earlier_crashed else f"Run the same batch again (finished stages are skipped); {worker_logs()}."

    def _mark_running(self, started: dict, pending: dict) -> None:
        for (user, stage), info in started.items():
            if (user, stage) in pending:  # a finished stage's row is _finish's
                row = self._stage_row(user, stage)
                row.attempts = info["attempts"]
                row.state = "running"
                row.seconds = time.time() - info["first"]  # as when it finishes: every attempt counts

    def _stage_row(self, user: str, stage: str) -> StageRow:
        return next(s for s in self.rows[user].stages if s.stage == stage)

    def interrupt(self, reason: str = "the batch was stopped") -> None:
        """Stopped (Ctrl-C, or the driver's own error: `reason`): each person's stage not finished is marked interrupted
        (those after it not run), and the status says the batch has ended, so nothing polling status.json waits for it."""
        for row in self.rows.values():
            row.interrupt(reason)
        self.interrupted = True
        self.write_status(finished=True)

    # -- reporting ------------------------------------------------------------------------------------
    def status(self, finished: bool) -> dict:
        return {"batch": self.batch_id, "address": self.address or "embedded",
                # so that the next batch can tell this one was killed, and delete its Ray logs (close_abandoned)
                "host": socket.gethostname(), "driver_pid": os.getpid(),
                "ray_session": str(_embedded_session) if _embedded_session else None,
                "ray_tmp": str(_embedded_tmp) if _embedded_tmp else None,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
                "seconds": round(time.time() - self.started, 2), "finished": finished, "interrupted": self.interrupted,
                "status_file": str(self.status_dir / "status.json"),
                "people": [row.to_json() for user, row in self.rows.items() if user not in self.forgotten]}

    def write_status(self, finished: bool) -> Path:
        """status.json, without anyone whose data was deleted (`deleted`). The deletion takes their row out after it has
        removed their folders, and this write may have read the rows just before: so their folders are looked at again
        once it is written, and it is written again without them if they went meanwhile. With no one left, the batch's
        folder goes, as the deletion does with a batch of theirs alone."""
        path = self.status_dir / "status.json"
        self.deleted()
        self.scrubbed(path)
        while True:
            status = self.status(finished)
            if not status["people"]:
                shutil.rmtree(self.status_dir, ignore_errors=True)
                return path
            write_json_atomic(path, status)
            self.written = {person["user"] for person in status["people"]}
            if not self.deleted():
                break
        people = status["people"]
        states = [(p["user"], p["stage"], p["stage_state"], _retry(p)) for p in people]
        if states != self._last_states or finished:  # the table again only when something moved
            print(format_table(people), flush=True)
            self._last_states = states
        return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return next((line for line in reversed(text) if line.strip()), type(exc).__name__)[:300]


def _retry(person: dict) -> str:
    """The note of a stage running again after a crash or its worker's death (killed, out of memory): before, the
    row stayed "fit running" while only Ray's own log lines said a worker had died (a batch walk)."""
    current = next(s for s in person["stages"] if s["stage"] == person["stage"])
    if current["state"] != "running" or current["attempts"] < 2:
        return ""
    return f"attempt {current['attempts']}: the last one crashed or its worker died"


def format_table(people: list[dict]) -> str:
    header = f"{'person':<16} {'stage':<8} {'state':<11} {'time':>8} {'kept':>5} {'likeness':>8}  note"
    lines = [header]
    for p in people:
        likeness = f"{p['best_likeness']:.2f}" if p["best_likeness"] is not None else "-"
        kept = str(p["kept"]) if p["kept"] is not None else "-"
        skipped = [s["stage"] for s in p["stages"] if s["state"] == "skipped"]
        said = [s["details"]["note"] for s in p["stages"] if s["state"] in ("done", "skipped") and s["details"].get("note")]
        note = p["reason"] or _retry(p) or "; ".join([*([f"skipped (done before): {', '.join(skipped)}"] if skipped else []), *said])
        lines.append(f"{p['user']:<16} {p['stage']:<8} {p['stage_state']:<11} {p['seconds']:>7.1f}s {kept:>5} "
                     f"{likeness:>8}  {textwrap.shorten(note, NOTE_WIDTH, placeholder=' ...')}")
    return "\n".join(lines)


def run_batch(users: Sequence[str], profile: str | None = None, overrides: Sequence[str] = (),
              address: str | None = None, batch_id: str | None = None, config_file: str | None = None) -> dict:
    """Run every person's chain on Ray; returns the final status (also in outputs/batch/<id>/status.json)."""
    if batch_id is not None and not is_simple_name(batch_id):
        raise ConfigError(f"Batch id {batch_id!r} is not allowed: it names the folder outputs/batch/<id>/.",
                          f"Use {SIMPLE_NAME_RULE}, e.g. --id nightly-3.")
    batch_id = batch_id or new_batch_id()
    batch = Batch(load_configs(users, profile, config_file, overrides, batch_id), batch_id, address)
    for abandoned in close_abandoned(batch.status_dir.parent, taking_over=batch_id):
        log.info("batch %s had stopped without finishing (killed): marked interrupted, and its Ray logs deleted unless a "
                 "stage had crashed", abandoned)
    batch.skip_those_done()
    batch.hold_people()
    if not batch.configs:  # everyone refused (no photos, their settings.yaml, another batch) or done before: nothing to run
        batch.write_status(finished=True)
        return batch.status(finished=True)
    try:
        start_ray(address, batch.settings.max_retries)
        batch.write_status(finished=False)
        try:
            # SIGTERM (`kill`, `timeout`, `ray job stop`) as Ctrl-C: Ray's own handler exits, and status.json stayed "running"
            with terminate_as_interrupt():
                batch.follow(batch.submit())
        except KeyboardInterrupt:
            with shielded_from_interrupts():
                batch.interrupt()
            raise BatchInterrupted(batch.status(finished=True)) from None
        except Exception as exc:  # the driver's own fault: its status said "running" until the next batch called it killed
            batch.interrupt(f"the batch stopped on an error of its own: {_first_line(exc)}")
            print(f"The batch stopped on an error of its own (below); {worker_logs()}.", file=sys.stderr)
            raise
        return batch.status(finished=True)
    finally:
        batch.release()


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch, with the status it left: a person already stopped keeps their advice."""

    def __init__(self, status: dict) -> None:
        super().__init__()
        self.status = status


def print_what_to_do(status: dict, states: Sequence[str]) -> None:
    """Each person in one of `states`: the reason and what to do, in full (the table cuts the reason short)."""
    for person in status["people"]:
        if person["state"] in states:
            print(f"{person['user']}: {person['reason']}" + (f"\n  -> {person['hint']}" if person["hint"] else ""))


def print_notes(status: dict) -> None:
    """Each complete person's notes in full: a usable set's intake warnings ("face dark ..."), an export with nothing
    kept. The table cuts them short, and they are the person's to act on before their next photos."""
    for person in status["people"]:
        if person["state"] == "complete":
            for stage in person["stages"]:
                if stage["details"].get("note"):
                    print(f"{person['user']}: {stage['details']['note']}")


def exit_status(status: dict) -> int:
    """0: everyone complete; 2: someone must fix their photos or settings; 1: a stage crashed."""
    states = {p["state"] for p in status["people"]}
    return 1 if CRASHED in states else 2 if "stopped" in states else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--users", required=True, help="comma-separated names: data/users/<name>/selfies/ each")
    parser.add_argument("--address", default=None,
                        help="Ray cluster: auto (a running one) or ray://head:10001; default: start Ray on this machine")
    parser.add_argument("--id", dest="batch_id", default=None, help="batch name (default: the start time)")
    add_config_args(parser, config_help="extra YAML file layered over the defaults, for everyone",
                    overrides_help="config overrides for everyone, e.g. train.max_steps=500")
    args = parse(parser, argv)
    users = [u.strip() for u in args.users.split(",") if u.strip()]
    # Ray's worker logs are kept when a stage crashed (its hint names them), however the batch ended, and when the
    # batch itself ended in a traceback (they are what is left to read); otherwise they go (they name the people)
    keep_logs = True
    try:
        status = run_batch(users, args.profile, args.overrides, args.address, args.batch_id, args.config)
        keep_logs = exit_status(status) == 1
    except HeadshotsError as exc:
        keep_logs = False
        return print_error(exc, args.verbose)
    except KeyboardInterrupt as exc:
        keep_logs = isinstance(exc, BatchInterrupted) and exit_status(exc.status) == 1
        if isinstance(exc, BatchInterrupted):  # those already stopped: their news is theirs to act on
            print_what_to_do(exc.status, ("stopped", CRASHED))
        print("\ninterrupted: run the same command again; finished stages are skipped, and training goes on from its last "
              "checkpoint, if it saved one", file=sys.stderr)
        return 130
    finally:
        with shielded_from_interrupts():
            stop_ray(keep_logs=keep_logs)
    print_notes(status)
    print_what_to_do(status, ("stopped", CRASHED, INTERRUPTED, "running"))
    print(f"status: {status['status_file']}")
    return exit_status(status)


if __name__ == "__main__":
    sys.exit(main())
