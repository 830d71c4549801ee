"""The stages of one person's chain, what each reads and writes, and the records that say a stage is done:

    intake -> prepare -> fit -> infer (generate [+ face detail] + score + gallery) -> export

A stage is done when its record says it finished with the fingerprint its inputs have now, its outputs are
all there and the person has not edited them since (prepare's captions.json: headshots/caption_edits.py). The
fingerprint hashes what the stage reads: the config sections it uses, the selfies' bytes (intake, prepare), the
favourites ticked in the web app (export) and the fingerprint of the stage before it (so prepare's covers intake's
settings, which decide the photos it leaves out), so a change upstream makes everything below it due again and a
change of, say, `infer.steps` only infer and export. Training hashes prepare's rows themselves instead (the photos,
crops and captions it trains on: `reads_made`), so a prepare run again after a setting that changes none of them
(`prepare.keep_rejected` naming a photo intake accepts anyway) leaves the adapter and its images done. Intake's record also hashes the settings of prepare and the
model that its resolution and pose checks read (`judged_with`): prepare hashes them itself, so they stay out of the chain,
and a set judged under the tiny profile is judged again under SDXL without prepare and training being due again for
that alone. Records (JSON) sit beside each stage's outputs:

    data/users/<u>/stages/{intake,prepare}.json
    outputs/<u>/<run>/stages/{fit,infer,export}.json
        {stage, fingerprint, finished (ISO time), seconds}

Every way of running a stage writes its record: the CLI (`python -m train intake|prepare|fit|all`,
`python -m infer all|export`), and the web app and the batch runner through service/chain.py, which also skips
what is done (the app's intake and Download record theirs too; Download only when the images are those of the
app's settings: after the app's own Generate, whose styles and round are the person's choice, it is not recorded
and a batch exports again). A stage that runs removes its record and those of the stages after it first (prepare only its own:
training's fingerprint tells by itself), and puts them back if it stops before it replaced any of its outputs. So a person trained with `make train` is not trained again when the app or a
batch picks them up. The work itself lives in train/ and infer/; this module only knows the stages' inputs and
outputs, which is why it sits on the shared floor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf

from headshots.caption_edits import captions_edited_since_prepare
from headshots.config import TRAIN_COMPUTE_KEYS, Config, model_source, weights_source
from headshots.images import list_photos
from headshots.logs import get_logger
from headshots.workspace import (
    ADAPTER_WEIGHTS,
    DATASET_INFO,
    Workspace,
    add_files_to_digest,
    chosen_files,
    file_digest,
    write_json_atomic,
    write_text_atomic,
)

log = get_logger(__name__)
T = TypeVar("T")


def something_to_export(ws: Workspace, cfg: Config) -> bool:
    """Whether export has anything to crop: images picked (`infer.export_files`, else the favourites ticked in the
    web app) or, with none picked, a kept image."""
    if chosen_files(cfg):
        return True
    scores = ws.scores(cfg.run)
    try:
        return scores.is_file() and json.loads(scores.read_text())["kept"] > 0
    except (OSError, ValueError, KeyError, TypeError):  # unreadable: export runs, and says what to do
        return True


def _export_outputs(ws: Workspace, cfg: Config) -> list[Path]:
    return [ws.export_manifest(cfg.run)] if something_to_export(ws, cfg) else []


# -- what each stage made: a few figures for status tables, read from its outputs --------------------------

def _intake_figures(ws: Workspace, cfg: Config) -> dict:
    """The set's verdict; a usable set's warnings as a note too, which the batch's table shows (it said nothing of
    them: the person learnt of them only by opening intake.html)."""
    verdict = json.loads(ws.intake_report.read_text())["set"]
    figures = {key: verdict[key] for key in ("usable", "total", "verdict")}
    if verdict["verdict"] == "warn":
        figures["note"] = f"intake: {verdict['reason']}"
    return figures


def _prepare_figures(ws: Workspace, cfg: Config) -> dict:
    return {"kept": json.loads(ws.prepare_report.read_text())["kept"]}


def _fit_figures(ws: Workspace, cfg: Config) -> dict:
    return {"steps": cfg.train.max_steps}  # the adapter exists (the stage's output) only once they are all done


def _infer_figures(ws: Workspace, cfg: Config) -> dict:
    scores = json.loads(ws.scores(cfg.run).read_text())
    likeness = [image["similarity"] for image in scores["images"] if image.get("similarity") is not None]
    return {"images": len(scores["images"]), "kept": scores["kept"], "best_likeness": max(likeness, default=None)}


def _export_figures(ws: Workspace, cfg: Config) -> dict:
    if not something_to_export(ws, cfg):
        return {"exported": 0, "note": "no image was kept or picked, so there is nothing to export"}
    return {"exported": len(json.loads(ws.export_manifest(cfg.run).read_text())["images"])}


@dataclass(frozen=True)
class Stage:
    name: str
    config_keys: tuple[str, ...]  # config sections whose change makes the stage due again
    reads_selfies: bool  # the photos' bytes are part of the fingerprint
    uses_gpu: bool  # the batch asks its scheduler for a GPU when there is one
    outputs: Callable[[Workspace, Config], list[Path]]  # all must exist for the stage to count as done
    in_user_data: bool  # its record lives in data/users/<u>/stages/ (else outputs/<u>/<run>/stages/)
    figures: Callable[[Workspace, Config], dict]  # what its outputs hold, read from them
    also_reads: Callable[[Workspace, str], list[Path]] | None = None  # files whose bytes are part of the fingerprint
    # The next stage reads what this one makes (prepare does not read intake's report: it judges the photos itself)
    feeds_next: bool = True
    ignores: tuple[str, ...] = ()  # keys inside config_keys that do not change the stage's outputs
    # The person edited what it made since it ran (captions.json): done no longer, whatever its fingerprint says
    edited_since: Callable[[Workspace], bool] | None = None
    # Settings outside config_keys that its own verdict reads and that the stages after it hash themselves: they make
    # this stage due again and are kept out of the chain, so adding one does not redo the stages after it
    judged_with: tuple[str, ...] = ()
    # What else it changes on its way to its outputs that its records vouch for: infer's images, drawn before they are
    # scored (stopped after drawing some, its scores no longer cover the round: forgotten_while_running). Not prepare's
    # report, written before the dataset is swapped in: it describes the same photos as the dataset left in place
    also_changes: Callable[[Workspace, Config], list[Path]] | None = None
    # The files of the stage before it that it reads, hashed in place of that stage's fingerprint: a stage run again
    # that made the same files (prepare after a setting that leaves the same photos and captions) leaves this one, and
    # so the stages after it, done (early cutoff: no model loaded, no round of images drawn again)
    reads_made: Callable[[Workspace, Config], list[Path]] | None = None
    # Settings of config_keys (sections, or dotted keys inside one) that do not shape its outputs under `cfg`'s
    # settings (training reads the face settings only to score likeness while it validates; how often it saves, and
    # how it computes, change nothing it makes): hashed at their defaults, so that a change to them leaves it done,
    # and the records written when they always counted stay true for everyone who never changed them
    at_defaults: Callable[[Config], tuple[str, ...]] = lambda cfg: ()
    # Keys of config_keys read only after its images are drawn: scoring's (filter, face) and the face-detail pass's,
    # which re-draws only a face whose plan changed. A change makes the stage due, but the round it draws is the one
    # drawn already (`drawn_from`), so the chain scores that round again instead of drawing another
    read_after_drawing: tuple[str, ...] = ()

    def edited(self, ws: Workspace) -> bool:
        return self.edited_since is not None and self.edited_since(ws)


STAGES: tuple[Stage, ...] = (
    Stage("intake", config_keys=("intake", "face"), reads_selfies=True, uses_gpu=False, in_user_data=True,
          outputs=lambda ws, cfg: [ws.intake_report], figures=_intake_figures, feeds_next=False,
          # the resolution check (prepare's training crop, train/framing.py, against the profile's resolution)
          # and the pose check (a tilt prepare levels in that crop is not named)
          judged_with=("model.resolution", "prepare.crop_margin", "prepare.level_eyes")),
    Stage("prepare", config_keys=("prepare", "face", "model.resolution"), reads_selfies=True, uses_gpu=False,
          in_user_data=True, outputs=lambda ws, cfg: [ws.prepared / DATASET_INFO, ws.reference_embeddings],
          figures=_prepare_figures, edited_since=captions_edited_since_prepare),
    # What training reads: the prepared rows, the trigger and class its prompts name, and with validation the
    # reference faces and the face settings it scores likeness with
    Stage("fit", config_keys=("model", "train", "face", "prepare.trigger", "prepare.class_noun"), reads_selfies=False,
          uses_gpu=True, in_user_data=False, outputs=lambda ws, cfg: [ws.adapter_dir(cfg.run) / ADAPTER_WEIGHTS],
          figures=_fit_figures, at_defaults=lambda cfg: (*(() if cfg.train.validation.every else ("face",)),
                                                         "train.checkpoint_every", "train.keep_checkpoints",
                                                         *(f"train.{key}" for key in TRAIN_COMPUTE_KEYS)),
          reads_made=lambda ws, cfg: [*ws.prepared_rows, *([ws.reference_embeddings] if cfg.train.validation.every else [])]),
    Stage("infer", config_keys=("model", "infer", "filter", "face"), reads_selfies=False, uses_gpu=True, in_user_data=False,
          outputs=lambda ws, cfg: [ws.scores(cfg.run), ws.gallery(cfg.run)], figures=_infer_figures,
          # every image drawn, and the manifest replaced, changes the folder
          also_changes=lambda ws, cfg: [ws.samples_dir(cfg.run)],
          # what to export, discard or vary, and how fast: none of it changes the round's images
          ignores=("infer.export_files", "infer.discard_files", "infer.more", "infer.batch_size", "infer.compile"),
          read_after_drawing=("filter", "face", "infer.detail")),
    Stage("export", config_keys=("infer.export_files",), reads_selfies=False, uses_gpu=False, in_user_data=False,
          outputs=_export_outputs, figures=_export_figures,
          # ticked in the web app: a new tick exports again; with none ticked nor named, every kept image is exported,
          # and what is kept changes with each scoring (more like this, a face-detail pass): scores.json
          also_reads=lambda ws, run: [ws.favourites(run), ws.scores(run)]),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def stage_named(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


# -- fingerprints ------------------------------------------------------------------------------------

def selfies_digest(ws: Workspace) -> str:
    """Hash of what intake and prepare read of the photos folder (`list_photos`): each photo's name and bytes, and
    the names of folders in it (intake names them). A photo added, removed or replaced changes it; a hidden file
    (macOS's .DS_Store, a sync tool's marker), which no stage reads, does not make the whole chain due again."""
    digest = hashlib.sha256()
    if ws.selfies.is_dir():
        entries = list_photos(ws.selfies)
        add_files_to_digest(digest, ws.selfies, [p for p in entries if p.is_file()])
        if folders := [p.name for p in entries if not p.is_file()]:
            digest.update(json.dumps(folders).encode())
    return digest.hexdigest()


def _config_part(plain: dict, key: str) -> object:
    return functools.reduce(lambda node, part: node[part], key.split("."), plain)


def _plain_config(cfg: Config) -> dict:
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    plain["model"]["pretrained"] = model_source(cfg.model.pretrained)  # the CLI's relative path = the batch's absolute one
    # the face weights in use, HEADSHOTS_FACE_WEIGHTS's file when it stands in for the default: another file makes
    # other reference embeddings (prepare's), which scoring refuses to compare with (`faces.load_references`)
    plain["face"]["weights"] = weights_source(cfg.face.weights)
    plain["infer"]["styles"] = [_style_source(style) for style in cfg.infer.styles]
    return plain


def _style_source(style: str) -> str:
    """A style as the images depend on it: a shipped one by name; the person's own YAML file by its path and its
    bytes, so that an edit to it draws the round again (by path alone the chain kept images of the old text)."""
    path = Path(style).expanduser()
    return f"{style}#{file_digest(path)}" if path.suffix in (".yaml", ".yml") and path.is_file() else style


def _settings(stage: Stage, cfg: Config, leaving: tuple[str, ...] = ()) -> dict:
    """The config sections `stage` reads, as hashed: its `at_defaults` under `cfg` at their defaults, without the keys
    it `ignores` and the keys `leaving` (dotted: a section, or a key inside one)."""
    plain = _plain_config(_at_defaults(cfg, stage.at_defaults(cfg)))
    for key in (*stage.ignores, *leaving):
        parent, _, name = key.rpartition(".")
        del (_config_part(plain, parent) if parent else plain)[name]
    return {key: _config_part(plain, key) for key in stage.config_keys if key not in leaving}


def _at_defaults(cfg: Config, keys: tuple[str, ...]) -> Config:
    """`cfg` with these sections, or dotted keys inside a section, at their defaults."""
    for key in keys:
        section, _, name = key.partition(".")
        default = type(getattr(cfg, section))()
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: getattr(default, name)}) if name else default})
    return cfg


def fingerprint(stage: Stage, cfg: Config, upstream: str | None, selfies: str | None = None) -> str:
    """What `stage` would read now, hashed; `upstream` is the fingerprint of the stage before it, `selfies` the
    photos' digest when the caller has it already (they are read once for the whole chain)."""
    ws = Workspace.from_config(cfg)
    inputs = {
        "stage": stage.name,
        "config": _settings(stage, cfg),
        "upstream": json.dumps(_file_digests(stage.reads_made(ws, cfg))) if stage.reads_made else upstream,
        "selfies": (selfies or selfies_digest(ws)) if stage.reads_selfies else None,
    }
    if stage.also_reads:  # only then: every other stage's fingerprint stays what its record holds
        inputs["files"] = _file_digests(stage.also_reads(ws, cfg.run))
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def drawn_from(cfg: Config) -> str:
    """What infer's images are drawn from, hashed: its settings, less those it reads only after drawing. The chain
    names its round after this and the adapter file (service/chain.py), so a change of the likeness threshold or
    of the face-detail pass scores the round drawn already again (seconds, no model for scoring) instead of drawing
    a second one (minutes on a GPU), while a change of steps, styles or the model draws a round of its own."""
    stage = stage_named("infer")
    return hashlib.sha256(json.dumps(_settings(stage, cfg, stage.read_after_drawing), sort_keys=True,
                                     default=str).encode()).hexdigest()


def _file_digests(paths: list[Path]) -> dict[str, str | None]:
    """Each file's name and the digest of its bytes (None: missing), for a fingerprint."""
    return {path.name: file_digest(path) if path.is_file() else None for path in paths}


def fingerprints(cfg: Config) -> dict[str, str]:
    """Every stage's fingerprint for `cfg` as things are now, in chain order."""
    chain: dict[str, str] = {}
    upstream: str | None = None
    selfies = selfies_digest(Workspace.from_config(cfg))
    for stage in STAGES:
        upstream = chain[stage.name] = fingerprint(stage, cfg, upstream, selfies)
    return chain


def _recorded_as(stage: Stage, cfg: Config, expected: str) -> str:
    """What `stage`'s record holds for its chain fingerprint `expected`: that, and the settings it is `judged_with`."""
    if not stage.judged_with:
        return expected
    plain = _plain_config(cfg)
    inputs = {"chain": expected, "judged_with": {key: _config_part(plain, key) for key in stage.judged_with}}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


# -- records -----------------------------------------------------------------------------------------

def record_path(stage: Stage, cfg: Config) -> Path:
    ws = Workspace.from_config(cfg)
    folder = ws.user_stage_records if stage.in_user_data else ws.run_dir(cfg.run) / "stages"
    return folder / f"{stage.name}.json"


def read_record(stage: Stage, cfg: Config) -> dict | None:
    try:
        return json.loads(record_path(stage, cfg).read_text())
    except (OSError, ValueError):
        return None


def is_done(stage: Stage, cfg: Config, expected: str) -> bool:
    """Finished before with fingerprint `expected`, every output still there, and none edited by hand since."""
    record = read_record(stage, cfg)
    ws = Workspace.from_config(cfg)
    return bool(record and record.get("fingerprint") == _recorded_as(stage, cfg, expected) and all(p.exists() for p in stage.outputs(ws, cfg))
                and not stage.edited(ws))


def _records_to_forget(stage: Stage, cfg: Config) -> list[Path]:
    """The stage's record and, when the next stage reads what it makes by its fingerprint, those of every stage
    after it. A run stopped part-way must leave no record (the last run's would call half-rewritten outputs done if
    the settings went back to the last run's); and what it makes anew (another round of images, other crops) is not
    what the stages after it used, though their fingerprints, which hash settings, would still match. A next stage
    that hashes the files themselves (`reads_made`: training, of prepare's rows) tells that alone, so its record
    stays, and is true again if the same files come out. Intake judged again (the web app does it when it opens with
    other settings) leaves prepare and training done for the settings they were made with."""
    index = STAGES.index(stage)
    following = STAGES[index + 1:]
    forgets_following = stage.feeds_next and following and following[0].reads_made is None
    return [record_path(later, cfg) for later in (STAGES[index:] if forgets_following else STAGES[index:index + 1])]


def forget(stage: Stage, cfg: Config) -> None:
    """Remove the records that `stage` run again makes untrue (`_records_to_forget`)."""
    for path in _records_to_forget(stage, cfg):
        path.unlink(missing_ok=True)


def _outputs_as_they_are(stage: Stage, cfg: Config) -> dict[Path, tuple[int, int, int] | None]:
    """Each output's (and `also_changes` path's) file identity and last change (None: missing). Outputs are replaced
    whole (a new file renamed over the old, a dataset folder swapped in), and a folder's last change moves with every
    file added to it or renamed into it, so a stage that has changed any of them changed this."""
    ws = Workspace.from_config(cfg)
    state: dict[Path, tuple[int, int, int] | None] = {}
    for path in [*stage.outputs(ws, cfg), *(stage.also_changes(ws, cfg) if stage.also_changes else [])]:
        try:
            found = path.stat()
            state[path] = (found.st_ino, found.st_mtime_ns, found.st_size)
        except OSError:
            state[path] = None
    return state


@contextmanager
def forgotten_while_running(stage: Stage, cfg: Config) -> Iterator[None]:
    """The records `stage` makes untrue (`_records_to_forget`) removed while it runs, and put back as they were if
    it stops (Ctrl-C, the web app's Stop, an error) before it replaced any of its outputs: what was done then is
    still done. So a `prepare` interrupted while it crops, its dataset not yet swapped in, does not make the chain
    train and generate again; one stopped after the swap does."""
    records = {path: path.read_text() for path in _records_to_forget(stage, cfg) if path.is_file()}
    outputs = _outputs_as_they_are(stage, cfg)
    forget(stage, cfg)
    try:
        yield
    except BaseException:
        if records and _outputs_as_they_are(stage, cfg) == outputs:
            for path, record in records.items():
                if path.parent.is_dir() and not path.exists():  # not into a folder a deletion took meanwhile
                    write_text_atomic(path, record)
            log.debug("%s stopped before it changed what it makes: the records of what was done before stand", stage.name)
        raise


def write_record(stage: Stage, cfg: Config, expected: str, seconds: float) -> None:
    """The stage's record, unless the folder it belongs in (the person's, or the run's) is gone: the record is written
    after the stage let go of its lock, and a deletion (`make purge`, the app's Delete my data) that took the lock in
    that moment had the record write the person's folder back, for a stage whose work it had just deleted."""
    path = record_path(stage, cfg)
    if not path.parent.parent.is_dir():
        log.debug("%s not recorded: %s was deleted meanwhile", stage.name, path.parent.parent)
        return
    write_json_atomic(path, {"stage": stage.name, "fingerprint": _recorded_as(stage, cfg, expected),
                             "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def done_now(name: str, cfg: Config) -> bool:
    """Whether stage `name` is done for `cfg` as things are now (its own outputs only: cheaper than stages_to_run)."""
    return is_done(stage_named(name), cfg, fingerprints(cfg)[name])


def stages_to_run(cfg: Config) -> list[str]:
    """The stages a run of `cfg` would do work in (the rest would be skipped), without running any.
    A stage that must run may change what comes after it, so everything below it is listed too, unless the next
    stage does not read what it makes (intake). Whether it did is known once it has run: a prepare that made the same
    rows leaves training done (`reads_made`), so a caller running stage after stage asks again after each."""
    due: list[str] = []
    for index, (name, expected) in enumerate(fingerprints(cfg).items()):
        if not is_done(STAGES[index], cfg, expected):
            if STAGES[index].feeds_next:
                return due + list(STAGE_NAMES[index:])
            due.append(name)
    return due


def run_recorded(name: str, cfg: Config, work: Callable[[], T], done: Callable[[T], bool] = lambda result: True) -> T:
    """Run stage `name`'s `work` as the CLI and the web app do (always: the person asked for it) and, when it ends
    well (and `done` says its result is what the chain would call done: the app's intake of a refused set is not),
    write the stage's record, so that the web app and the batch skip it until something it reads changes.

    Recorded only when the stage before it is done with today's inputs, since that stage's outputs are what
    this one read: a `train fit` on photos changed since `train prepare` leaves no record, and the chain
    prepares and trains again (prepare reads nothing intake makes, so intake is not asked). Under `accelerate
    launch` (several processes, RANK set) only the main process touches records."""
    stage = stage_named(name)
    main_process = os.environ.get("RANK", "0") == "0"
    chain = fingerprints(cfg)  # before the work: a photo added meanwhile makes the stage due again
    started = time.perf_counter()
    with forgotten_while_running(stage, cfg) if main_process else nullcontext():
        result = work()
    index = STAGES.index(stage)
    before = STAGES[index - 1] if index and STAGES[index - 1].feeds_next else None
    if before is not None and not is_done(before, cfg, chain[before.name]):
        edited = before.edited(Workspace.from_config(cfg))
        elsewhere = " (other styles), or in the web app (its Generate is not recorded)," if before.name == "infer" else ""
        why = (f"what {before.name} made was edited since" if edited else
               f"{before.name} was last run with other settings or photos{elsewhere} or not at all")
        # debug, not info: a person who asked for this stage by hand (export after an infer of chosen styles) did
        # nothing wrong, and "will do it again" after every such export read as a failure (a new user's walk)
        log.debug("%s done, not recorded: the web app and the batch will do it again, as they cannot count it done: %s.", name, why)
    elif main_process and done(result):
        write_record(stage, cfg, chain[name], time.perf_counter() - started)
    return result


def figures(stage: Stage, cfg: Config) -> dict:
    """A few figures about what the stage's outputs hold now (read from them, so a skipped stage, or images
    discarded or added since, show as they are); none where they are missing or unreadable."""
    try:
        return stage.figures(Workspace.from_config(cfg), cfg)
    except (OSError, ValueError, KeyError, TypeError):  # not there (yet), or from another version of the project
        return {}
