"""The stages of one person's chain, what each reads and writes, and the records that say a stage is done:

    intake -> prepare -> fit -> infer (generate [+ face detail] + score + gallery) -> export

A stage is done when its record says it finished with the fingerprint its inputs have now and its outputs are
all there. The fingerprint hashes what the stage reads: the config sections it uses, the selfies' bytes
(intake, prepare), the favourites ticked in the web app (export) and the fingerprint of the stage before it,
so a change upstream makes everything below it due again and a change of, say, `infer.steps` only infer and
export. Records (JSON) sit beside each stage's outputs:

    data/users/<u>/stages/{intake,prepare}.json
    outputs/<u>/<run>/stages/{fit,infer,export}.json
        {stage, fingerprint, finished (ISO time), seconds}

Every way of running a stage writes its record: the CLI (`python -m train`, `python -m infer`), and the web
app and the batch runner through service/chain.py, which also skips what is done. So a person trained with
`make train` is not trained again when the app or a batch picks them up. The work itself lives in train/ and
infer/; this module only knows the stages' inputs and outputs, which is why it sits on the shared floor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf

from headshots.config import Config, model_source
from headshots.logs import get_logger
from headshots.workspace import (
    ADAPTER_WEIGHTS,
    DATASET_INFO,
    Workspace,
    add_files_to_digest,
    file_digest,
    read_favourites,
    write_json_atomic,
)

log = get_logger(__name__)
T = TypeVar("T")


def _kept_images(ws: Workspace, run: str) -> int:
    scores = ws.scores(run)
    return json.loads(scores.read_text())["kept"] if scores.is_file() else 0


def _export_outputs(ws: Workspace, run: str) -> list[Path]:
    """export.json, when there was anything to export: a kept image or a favourite."""
    return [ws.export_manifest(run)] if _kept_images(ws, run) or read_favourites(ws, run) else []


# -- what each stage made: a few figures for status tables, read from its outputs --------------------------

def _intake_figures(ws: Workspace, cfg: Config) -> dict:
    verdict = json.loads(ws.intake_report.read_text())["set"]
    return {key: verdict[key] for key in ("usable", "total", "verdict")}


def _prepare_figures(ws: Workspace, cfg: Config) -> dict:
    return {"kept": json.loads(ws.prepare_report.read_text())["kept"]}


def _fit_figures(ws: Workspace, cfg: Config) -> dict:
    return {"steps": cfg.train.max_steps}


def _infer_figures(ws: Workspace, cfg: Config) -> dict:
    scores = json.loads(ws.scores(cfg.run).read_text())
    likeness = [image["similarity"] for image in scores["images"] if image.get("similarity") is not None]
    return {"images": len(scores["images"]), "kept": scores["kept"], "best_likeness": max(likeness, default=None)}


def _export_figures(ws: Workspace, cfg: Config) -> dict:
    if not _export_outputs(ws, cfg.run):
        return {"exported": 0, "note": "no image was kept, so there is nothing to export"}
    return {"exported": len(json.loads(ws.export_manifest(cfg.run).read_text())["images"])}


@dataclass(frozen=True)
class Stage:
    name: str
    config_keys: tuple[str, ...]  # config sections whose change makes the stage due again
    reads_selfies: bool  # the photos' bytes are part of the fingerprint
    uses_gpu: bool  # the batch asks its scheduler for a GPU when there is one
    outputs: Callable[[Workspace, str], list[Path]]  # all must exist for the stage to count as done
    in_user_data: bool  # its record lives in data/users/<u>/stages/ (else outputs/<u>/<run>/stages/)
    figures: Callable[[Workspace, Config], dict]  # what its outputs hold, read from them
    also_reads: Callable[[Workspace, str], list[Path]] | None = None  # files whose bytes are part of the fingerprint
    ignores: tuple[str, ...] = ()  # keys inside config_keys that do not change the stage's outputs


STAGES: tuple[Stage, ...] = (
    Stage("intake", ("intake", "face"), True, False, lambda ws, run: [ws.intake_report], True, _intake_figures),
    Stage("prepare", ("prepare", "face", "model.resolution"), True, False,
          lambda ws, run: [ws.prepared / DATASET_INFO, ws.reference_embeddings], True, _prepare_figures),
    Stage("fit", ("model", "train"), False, True, lambda ws, run: [ws.adapter_dir(run) / ADAPTER_WEIGHTS], False,
          _fit_figures),
    Stage("infer", ("model", "infer", "filter", "face"), False, True, lambda ws, run: [ws.scores(run), ws.gallery(run)], False,
          _infer_figures,
          # what to export, discard or vary, and how fast: none of it changes the round's images
          ignores=("infer.export_files", "infer.discard_files", "infer.more", "infer.batch_size", "infer.compile")),
    Stage("export", ("infer.export_files",), False, False, _export_outputs, False, _export_figures,
          lambda ws, run: [ws.favourites(run)]),  # ticked in the web app: a new tick exports again
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


# -- fingerprints ------------------------------------------------------------------------------------

def selfies_digest(ws: Workspace) -> str:
    """Hash of every photo's name and bytes: a photo added, removed or replaced changes it."""
    digest = hashlib.sha256()
    if ws.selfies.is_dir():
        add_files_to_digest(digest, ws.selfies, sorted(p for p in ws.selfies.rglob("*") if p.is_file()))
    return digest.hexdigest()


def _config_part(plain: dict, key: str) -> object:
    return functools.reduce(lambda node, part: node[part], key.split("."), plain)


def fingerprint(stage: Stage, cfg: Config, upstream: str | None) -> str:
    """What `stage` would read now, hashed; `upstream` is the fingerprint of the stage before it."""
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


def fingerprints(cfg: Config) -> dict[str, str]:
    """Every stage's fingerprint for `cfg` as things are now, in chain order."""
    chain: dict[str, str] = {}
    upstream: str | None = None
    for stage in STAGES:
        upstream = chain[stage.name] = fingerprint(stage, cfg, upstream)
    return chain


# -- records -----------------------------------------------------------------------------------------

def record_path(stage: Stage, cfg: Config) -> Path:
    ws = Workspace.from_config(cfg)
    folder = ws.user_dir / "stages" if stage.in_user_data else ws.run_dir(cfg.run) / "stages"
    return folder / f"{stage.name}.json"


def read_record(stage: Stage, cfg: Config) -> dict | None:
    try:
        return json.loads(record_path(stage, cfg).read_text())
    except (OSError, ValueError):
        return None


def is_done(stage: Stage, cfg: Config, expected: str) -> bool:
    """Finished before with fingerprint `expected`, and every output still there."""
    record = read_record(stage, cfg)
    ws = Workspace.from_config(cfg)
    return bool(record and record.get("fingerprint") == expected and all(p.exists() for p in stage.outputs(ws, cfg.run)))


def forget(stage: Stage, cfg: Config) -> None:
    """Before a stage runs: a run stopped part-way must leave no record, not the last run's one (which would call
    half-rewritten outputs done if the settings went back to the last run's)."""
    record_path(stage, cfg).unlink(missing_ok=True)


def write_record(stage: Stage, cfg: Config, expected: str, seconds: float) -> None:
    write_json_atomic(record_path(stage, cfg), {"stage": stage.name, "fingerprint": expected, "seconds": round(seconds, 3),
                                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def stages_to_run(cfg: Config) -> list[str]:
    """The stages a run of `cfg` would do work in (the rest would be skipped), without running any.
    A stage that must run changes what comes after it, so everything below it is listed too."""
    for index, (name, expected) in enumerate(fingerprints(cfg).items()):
        if not is_done(STAGES[index], cfg, expected):
            return list(STAGE_NAMES[index:])
    return []


def run_recorded(name: str, cfg: Config, work: Callable[[], T]) -> T:
    """Run stage `name`'s `work` as the CLI does (always: the person asked for it) and, when it ends well, write
    the stage's record, so that the web app and the batch skip it until something it reads changes.

    Recorded only when the stage before it is done with today's inputs, since that stage's outputs are what
    this one read: a `train fit` on photos changed since `train prepare` leaves no record, and the chain
    prepares and trains again. Under `accelerate launch` only the main process writes."""
    stage = stage_named(name)
    index = STAGE_NAMES.index(name)
    chain = fingerprints(cfg)  # before the work: a photo added meanwhile makes the stage due again
    before = STAGES[index - 1] if index else None
    forget(stage, cfg)
    started = time.perf_counter()
    result = work()
    upstream_done = before is None or is_done(before, cfg, chain[before.name])
    if upstream_done and os.environ.get("RANK", "0") == "0":
        write_record(stage, cfg, chain[name], time.perf_counter() - started)
    elif not upstream_done:
        log.info("%s not recorded as done: %s has not run on these photos and settings", name, before.name)
    return result


def figures(stage: Stage, cfg: Config) -> dict:
    """A few figures about what the stage's outputs hold now (read from them, so a skipped stage, or images
    discarded or added since, show as they are); none where they are missing or unreadable."""
    try:
        return stage.figures(Workspace.from_config(cfg), cfg)
    except (OSError, ValueError, KeyError, TypeError):  # not there (yet), or from another version of the project
        return {}
