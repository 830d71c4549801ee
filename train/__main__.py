"""python -m train {intake,prepare,fit,all} --user NAME [--profile tiny] [key=value ...]   (all: intake, prepare, fit)

Also: accelerate launch -m train fit --user NAME   (same job on one or more GPUs)

Each command that ends well records its stage as done (headshots/stages.py), so the web app and the batch
runner do not do it again.
"""

from __future__ import annotations

import sys

from headshots.cli import build_parser, run
from headshots.config import Config
from headshots.logs import get_logger
from headshots.stages import run_recorded, stages_to_run
from headshots.workspace import Workspace
from train.checkpoint import training_stopped

log = get_logger("train")


def _intake(cfg: Config) -> None:
    from train.intake import intake

    run_recorded("intake", cfg, lambda: intake(cfg))


def _prepare(cfg: Config) -> None:
    from train.prepare import prepare

    run_recorded("prepare", cfg, lambda: prepare(cfg))


def _fit(cfg: Config) -> None:
    from train.recipe import train

    run_recorded("fit", cfg, lambda: train(cfg))


def _all(cfg: Config) -> None:
    """The photos checked first, as the web app and the batch do: a set intake refuses stops here, before any
    GPU time is spent on it (prepare and fit still run alone, for a set you mean to train on anyway). A stage done
    before with today's photos and settings (its record, headshots/stages.py) is skipped, as the web app and the
    batch skip it: `make train` run again would otherwise judge and crop every photo again and load SDXL, only to
    find every step trained. What is due is asked again after each stage: a prepare that made the same rows as
    before (a setting that changed none of them) leaves the adapter trained on them done."""
    ws, ran, due = Workspace.from_config(cfg), [], stages_to_run(cfg)
    if "fit" in due:  # what training needs, asked before the photos are checked and prepared for it
        from headshots.faces import resolve_device
        from headshots.sdxl import require_model, warn_without_gpu

        warn_without_gpu(resolve_device(cfg.device), cfg.model)
        require_model(cfg.model)
    for name, work in (("intake", _intake), ("prepare", _prepare), ("fit", _fit)):
        if name in due:
            work(cfg)
            ran.append(name)
            due = stages_to_run(cfg)  # a stage that ran may leave the next done (the same prepared rows)
        else:
            log.info("%s skipped: %s", name, _already_done(name, ws, cfg.train.max_steps, prepared_now="prepare" in ran))
    log.info("next, headshots in the styles you choose: %s", ws.make_command("infer"))  # after W&B's closing lines


def _already_done(stage: str, ws: Workspace, steps: int, prepared_now: bool = False) -> str:
    """Why `train all` skips a stage, and how to have it done anyway."""
    if stage == "fit" and prepared_now:
        return (f"prepare made the same photos, crops and captions as before, so the adapter trained {steps} steps on "
                "them stands")
    return {
        "intake": "these photos were judged before with these settings, and the set was usable "
                  f"(`{ws.make_command('intake')}` shows the verdicts again)",
        "prepare": f"these photos were prepared before with these settings (`{ws.make_command('prepare')}` prepares them again)",
        "fit": f"the adapter was trained {steps} steps on these photos with these settings (to train longer, raise "
               f"train.max_steps, e.g. `{ws.make_command('train', ARGS=f'train.max_steps={2 * steps}')}`: it goes on from its "
               "last checkpoint, and each `make train` of this run needs the raised value from then on)",
    }[stage]


COMMANDS = {"intake": _intake, "prepare": _prepare, "fit": _fit, "all": _all}
HELP = {
    "intake": "check the selfies (quality gate): intake.json, intake.html; fails if the set is not usable",
    "prepare": "selfies -> face crops, captions, reference embeddings",
    "fit": "train the LoRA adapter (resumes from the last checkpoint)",
    "all": "intake (stops if the set is not usable), prepare, then fit; each skipped when done before with the same photos and settings",
}

INTERRUPTED = {"intake": "nothing was written; run the same command again",
               "prepare": "the photos prepared before, if any, are kept as they were; run the same command again",
               "fit": training_stopped, "all": training_stopped}

if __name__ == "__main__":
    sys.exit(run(build_parser("python -m train", "Prepare a user's photos and train their LoRA adapter.", HELP), COMMANDS,
                 interrupted=INTERRUPTED))
