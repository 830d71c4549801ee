"""One person's chain of stages, run once, resumed, or skipped when nothing changed:

    intake -> prepare -> fit -> infer (generate [+ face detail] + score + gallery) -> export

The stages, their fingerprints and their records are headshots/stages.py's; the work is the public functions
of train/ and infer/. This module runs a stage unless its record says it is done, and writes the record when
it ends well. A stage interrupted part-way leaves no record, so it runs again (one stopped before it replaced any
of its outputs puts back the records it removed: stages.forgotten_while_running); training then resumes from its
last checkpoint if that checkpoint was trained on the same photos and settings, and starts afresh otherwise
(train.recipe decides, for every caller). The web app and the batch runner both run people through this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from headshots.config import Config
from headshots.errors import HeadshotsError, storage_error
from headshots.logs import get_logger
from headshots.stages import (
    STAGE_NAMES,
    STAGES,
    Stage,
    drawn_from,
    figures,
    fingerprint,
    fingerprints,
    forgotten_while_running,
    is_done,
    something_to_export,
    write_record,
)
from headshots.workspace import ADAPTER_WEIGHTS, Workspace, file_digest

log = get_logger(__name__)


# -- the work of each stage ----------------------------------------------------------------------------

def _intake(cfg: Config) -> None:
    from train.intake import require_usable, run_intake

    require_usable(run_intake(cfg), cfg)


def _prepare(cfg: Config) -> None:
    from train.prepare import prepare

    prepare(cfg)


def _fit(cfg: Config) -> None:
    from train.recipe import train

    train(cfg)


def _infer(cfg: Config) -> None:
    """Generate a round named after what it is drawn from (its settings and the adapter file, unless infer.round names
    it): a retry after a crash completes that round instead of adding another; a new likeness threshold, or another
    face-detail setting, scores (and re-draws faces in) that round instead of drawing another; and an adapter trained
    again with the same fingerprint (`train fit` run by hand: fingerprints hash settings and the rows trained on, not
    the adapter) draws a round of its own if it came out other. Then the face-detail pass, scores and gallery."""
    from infer.gallery import make_and_review

    if not cfg.infer.round:
        cfg = replace(cfg, infer=replace(cfg.infer, round=chain_round(cfg)))
    make_and_review(cfg)


def chain_round(cfg: Config) -> str:
    adapter = Workspace.from_config(cfg).require_adapter(cfg.run, cfg.infer.adapter) / ADAPTER_WEIGHTS
    return f"chain-{drawn_from(cfg)[:12]}-{file_digest(adapter)[:8]}"


def _export(cfg: Config) -> None:
    """Platform crops of what the person picked (infer.export_files, else their favourites), else of the kept
    images. With none of these there is nothing to crop: the person's status then says 0 kept, which is the news
    (the CLI's export refuses instead, asking for files to pick)."""
    from infer.export import export

    if something_to_export(Workspace.from_config(cfg), cfg):
        export(cfg)


WORK: dict[str, Callable[[Config], None]] = {"intake": _intake, "prepare": _prepare, "fit": _fit, "infer": _infer,
                                             "export": _export}


# -- running ----------------------------------------------------------------------------------------

DONE, SKIPPED, FAILED, NOT_RUN = "done", "skipped", "failed", "not run"


@dataclass
class StageResult:
    """What one stage did for one person (what the status table shows)."""

    user: str
    stage: str
    state: str  # done | skipped | failed | not run
    fingerprint: str | None = None
    seconds: float = 0.0
    reason: str = ""  # failed / not run: what went wrong, in words
    hint: str = ""  # failed: what to do
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state in (DONE, SKIPPED)

    def to_json(self) -> dict:
        return asdict(self)


def run_stage(stage: Stage, cfg: Config, upstream: StageResult | None = None) -> StageResult:
    """Run one stage unless it is already done. A problem the person must fix (HeadshotsError) comes
    back as a failed result; anything else (a crash, a killed process) propagates, so the caller's
    scheduler can retry it."""
    if upstream is not None and not upstream.ok:
        stopped = "stopped (see its reason)" if upstream.state == FAILED else "did not finish"  # a refused set finished
        return StageResult(cfg.user, stage.name, NOT_RUN, reason=f"{upstream.stage} {stopped}")
    expected = fingerprint(stage, cfg, upstream.fingerprint if upstream else None)
    if is_done(stage, cfg, expected):
        return _skipped(stage, cfg, expected)
    started = time.perf_counter()
    try:
        with forgotten_while_running(stage, cfg):
            WORK[stage.name](cfg)
    except Exception as exc:  # the person's to fix: their error, or a write the disk or folder refused
        refused = exc if isinstance(exc, HeadshotsError) else storage_error(exc)
        if refused is None:
            raise
        return StageResult(cfg.user, stage.name, FAILED, expected, time.perf_counter() - started, refused.message, refused.hint)
    seconds = time.perf_counter() - started
    write_record(stage, cfg, expected, seconds)
    return StageResult(cfg.user, stage.name, DONE, expected, seconds, details=figures(stage, cfg))


def _skipped(stage: Stage, cfg: Config, expected: str) -> StageResult:
    log.info("%s: %s skipped (done before, nothing it reads has changed)", cfg.user, stage.name)
    return StageResult(cfg.user, stage.name, SKIPPED, expected, details=figures(stage, cfg))


def chain_done(cfg: Config) -> list[StageResult] | None:
    """Every stage's skipped result when the whole chain is done for `cfg` (nothing any stage reads has changed),
    without running anything; None when a stage has work, or when the check itself fails (a photo that cannot be
    read, a broken output): the person's own task then meets it, and it stays theirs. What `run_person` would return
    when all is done, found without a worker: a batch of such people starts no Ray (24 s and 3.3 GB to do nothing,
    a batch walk)."""
    try:
        chain = fingerprints(cfg)
        if not all(is_done(stage, cfg, chain[stage.name]) for stage in STAGES):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure: not known to be done
        log.debug("%s: whether the chain is done is left to its tasks (%s)", cfg.user, exc)
        return None
    return [_skipped(stage, cfg, chain[stage.name]) for stage in STAGES]


def run_person(cfg: Config, on_result: Callable[[StageResult], None] = lambda r: None,
               until: str = STAGE_NAMES[-1]) -> list[StageResult]:
    """The chain for one person up to stage `until` (the whole chain by default), in this process. After a stage
    that fails, the rest come back "not run"."""
    results: list[StageResult] = []
    upstream = None
    for stage in STAGES[: STAGE_NAMES.index(until) + 1]:
        upstream = run_stage(stage, cfg, upstream)
        results.append(upstream)
        on_result(upstream)
    return results
