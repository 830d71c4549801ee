"""One person's chain of stages, run once, resumed, or skipped when nothing changed:

    intake -> prepare -> fit -> infer (generate [+ face detail] + score + gallery) -> export

The stages are the public functions of train/ and infer/; this module only decides whether each must
run. A stage is skipped when its record says it finished with the same fingerprint and its outputs are
all there. The fingerprint hashes what the stage reads: the config sections it uses, the selfies' bytes
(intake, prepare), the favourites ticked in the web app (export) and the fingerprint of the stage before
it, so a change upstream re-runs everything below it and a change of, say, `infer.steps` re-runs only infer
and export. Records (JSON) sit beside each stage's outputs:

    data/users/<u>/stages/{intake,prepare}.json
    outputs/<u>/<run>/stages/{fit,infer,export}.json
        {stage, fingerprint, finished (ISO time), seconds, details}

A stage interrupted part-way leaves no record, so it runs again; training then resumes from its last
checkpoint if that checkpoint was trained on the same photos and settings, and starts afresh otherwise
(train.recipe decides, for every caller). The web app and the batch runner both run people through this module.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from omegaconf import OmegaConf

from headshots.config import Config, model_source
from headshots.errors import HeadshotsError
from headshots.logs import get_logger
from headshots.workspace import ADAPTER_WEIGHTS, DATASET_INFO, Workspace, add_files_to_digest, file_digest, write_json_atomic

log = get_logger(__name__)


# -- the stages ------------------------------------------------------------------------------------

def _intake(cfg: Config, fingerprint: str) -> dict:
    from train.intake import intake

    result = intake(cfg)
    return {"usable": result.set.usable, "total": result.set.total, "verdict": result.set.verdict}


def _prepare(cfg: Config, fingerprint: str) -> dict:
    from train.prepare import prepare

    result = prepare(cfg)
    return {"kept": len(result.kept)}


def _fit(cfg: Config, fingerprint: str) -> dict:
    from train.recipe import train

    train(cfg)
    return {"steps": cfg.train.max_steps}


def _infer(cfg: Config, fingerprint: str) -> dict:
    """Generate a round named after the stage's fingerprint (unless infer.round names it): a retry after a
    crash completes that round instead of adding another. Then the face-detail pass, scores and gallery."""
    from infer.gallery import make_and_review

    scores, _ = make_and_review(cfg if cfg.infer.round else replace(cfg, infer=replace(cfg.infer, round=f"chain-{fingerprint[:12]}")))
    kept = [s for s in scores if s.kept]
    return {"images": len(scores), "kept": len(kept),
            "best_likeness": max((s.similarity for s in scores if s.similarity is not None), default=None)}


def _kept_images(ws: Workspace, run: str) -> int:
    scores = ws.scores(run)
    return json.loads(scores.read_text())["kept"] if scores.is_file() else 0


def _export(cfg: Config, fingerprint: str) -> dict:
    """Platform crops of what the person picked (infer.export_files, else their favourites), else of the kept
    images. With none of these there is nothing to crop: the person's status then says 0 kept, which is the news
    (the CLI's export refuses instead, asking for files to pick)."""
    from infer.export import chosen_files, export

    if not chosen_files(cfg) and not _kept_images(Workspace.from_config(cfg), cfg.run):
        return {"exported": 0, "note": "no image was kept, so there is nothing to export"}
    manifest = export(cfg)
    return {"exported": len(json.loads(manifest.read_text())["images"])}


def _export_outputs(ws: Workspace, run: str) -> list[Path]:
    from infer.export import read_favourites

    exported = _kept_images(ws, run) or read_favourites(ws, run)
    return [ws.export_manifest(run)] if exported else []


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Config, str], dict]  # does the work, given its fingerprint; returns a few figures for the status table
    config_keys: tuple[str, ...]  # config sections whose change re-runs the stage
    reads_selfies: bool  # the photos' bytes are part of the fingerprint
    uses_gpu: bool  # asks the scheduler for a GPU when there is one
    outputs: Callable[[Workspace, str], list[Path]]  # all must exist for the stage to count as done
    in_user_data: bool  # its record lives in data/users/<u>/stages/ (else outputs/<u>/<run>/stages/)
    also_reads: Callable[[Workspace, str], list[Path]] | None = None  # files whose bytes are part of the fingerprint
    ignores: tuple[str, ...] = ()  # keys inside config_keys that do not change the stage's outputs


STAGES: tuple[Stage, ...] = (
    Stage("intake", _intake, ("intake", "face"), True, False,
          lambda ws, run: [ws.intake_report], True),
    Stage("prepare", _prepare, ("prepare", "face", "model.resolution"), True, False,
          lambda ws, run: [ws.prepared / DATASET_INFO, ws.reference_embeddings], True),
    Stage("fit", _fit, ("model", "train"), False, True,
          lambda ws, run: [ws.adapter_dir(run) / ADAPTER_WEIGHTS], False),
    Stage("infer", _infer, ("model", "infer", "filter", "face"), False, True,
          lambda ws, run: [ws.scores(run), ws.gallery(run)], False,
          # what to export, discard or vary, and how fast: none of it changes the round's images
          ignores=("infer.export_files", "infer.discard_files", "infer.more", "infer.batch_size", "infer.compile")),
    Stage("export", _export, ("infer.export_files",), False, False, _export_outputs, False,
          lambda ws, run: [ws.favourites(run)]),  # ticked in the web app: a new tick exports again
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


# -- fingerprints and records ------------------------------------------------------------------------

def record_path(stage: Stage, cfg: Config) -> Path:
    ws = Workspace.from_config(cfg)
    folder = ws.user_dir / "stages" if stage.in_user_data else ws.run_dir(cfg.run) / "stages"
    return folder / f"{stage.name}.json"


def selfies_digest(ws: Workspace) -> str:
    """Hash of every photo's name and bytes: a photo added, removed or replaced changes it."""
    digest = hashlib.sha256()
    if ws.selfies.is_dir():
        add_files_to_digest(digest, ws.selfies, sorted(p for p in ws.selfies.rglob("*") if p.is_file()))
    return digest.hexdigest()


def _config_part(plain: dict, key: str) -> object:
    return functools.reduce(lambda node, part: node[part], key.split("."), plain)


def fingerprint(stage: Stage, cfg: Config, upstream: str | None) -> str:
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    plain["model"]["pretrained"] = model_source(cfg.model.pretrained)  # the CLI's relative path = the batch's absolute one
    for key in stage.ignores:
        parent, _, name = key.rpartition(".")
        del _config_part(plain, parent)[name]
    inputs = {
        "stage": stage.name,
        "config": {key: _config_part(plain, key) for key in stage.config_keys},
        "upstream": upstream,
        "selfies": selfies_digest(Workspace.from_config(cfg)) if stage.reads_selfies else None,
    }
    if stage.also_reads:  # only then: every other stage's fingerprint stays what its record holds
        inputs["files"] = {path.name: file_digest(path) if path.is_file() else None for path in stage.also_reads(Workspace.from_config(cfg), cfg.run)}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def read_record(stage: Stage, cfg: Config) -> dict | None:
    path = record_path(stage, cfg)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_done(stage: Stage, cfg: Config, expected: str) -> bool:
    """Finished before with fingerprint `expected`, and every output still there."""
    record = read_record(stage, cfg)
    ws = Workspace.from_config(cfg)
    return bool(record and record.get("fingerprint") == expected and all(p.exists() for p in stage.outputs(ws, cfg.run)))


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
        return StageResult(cfg.user, stage.name, NOT_RUN, reason=f"{upstream.stage} did not finish")
    expected = fingerprint(stage, cfg, upstream.fingerprint if upstream else None)
    if is_done(stage, cfg, expected):
        details = (read_record(stage, cfg) or {}).get("details", {})
        log.info("%s: %s skipped (done before, nothing it reads has changed)", cfg.user, stage.name)
        return StageResult(cfg.user, stage.name, SKIPPED, expected, details=details)
    started = time.perf_counter()
    try:
        details = stage.run(cfg, expected)
    except HeadshotsError as exc:
        return StageResult(cfg.user, stage.name, FAILED, expected, time.perf_counter() - started, exc.message, exc.hint)
    seconds = time.perf_counter() - started
    write_json_atomic(record_path(stage, cfg), {"stage": stage.name, "fingerprint": expected, "seconds": round(seconds, 3),
                                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "details": details})
    return StageResult(cfg.user, stage.name, DONE, expected, seconds, details=details)


def stages_to_run(cfg: Config) -> list[str]:
    """The stages a run of `cfg` would do work in (the rest would be skipped), without running any.
    A stage that must run changes what comes after it, so everything below it is listed too."""
    upstream: str | None = None
    for index, stage in enumerate(STAGES):
        upstream = fingerprint(stage, cfg, upstream)
        if not is_done(stage, cfg, upstream):
            return [s.name for s in STAGES[index:]]
    return []


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
