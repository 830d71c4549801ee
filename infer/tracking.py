"""Scored outputs to Weights & Biases, as one table (image, style, seed, similarity, verdict).

Generated faces are biometric-looking data, so this runs only with `wandb.log_images=true`, and
writes local offline files (outputs/<user>/<run>/wandb/) unless `wandb.mode=online` is explicit:
`auto` means offline here even where a W&B key is configured. W&B copies a table's images into a
staging folder (default ~/.local/share/wandb) before syncing, and an uploaded one's into its artifact
cache (default ~/.cache/wandb); here both are the run's wandb/ too, so `make purge` finds every copy
of the faces.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from headshots.cli import environment_set
from headshots.config import Config, image_logging_mode, no_wandb_reports, wandb_run_settings
from headshots.logs import get_logger
from headshots.workspace import Workspace

if TYPE_CHECKING:
    from infer.score import Score

log = get_logger(__name__)
COLUMNS = ["image", "style", "seed", "similarity", "verdict"]


def verdict(score: Score) -> str:
    return f"kept #{score.rank}" if score.kept else f"dropped: {score.reason}"


@contextmanager
def staging_in(folder: Path) -> Iterator[None]:
    """Point W&B's staging (WANDB_DATA_DIR) and artifact cache (WANDB_CACHE_DIR: an uploaded table's images are
    cached there, by default under ~/.cache/wandb) at `folder` for the duration."""
    with environment_set(dict.fromkeys(("WANDB_DATA_DIR", "WANDB_CACHE_DIR"), str(folder))):
        yield


def log_scores_table(cfg: Config, samples_dir: Path, scores: Sequence[Score]) -> Path | None:
    """Log the table; returns the run's local folder, or None when image logging is off."""
    mode = image_logging_mode(cfg)
    if mode is None:
        return None
    import wandb

    out = Workspace.from_config(cfg).wandb_dir(cfg.run)
    out.mkdir(parents=True, exist_ok=True)
    no_wandb_reports()
    with staging_in(out):
        run = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, dir=str(out), mode=mode,
                         name=f"{cfg.user}-{cfg.run}-scores", job_type="score", group=cfg.wandb.group,
                         settings=wandb_run_settings())
        table = wandb.Table(columns=COLUMNS)
        for s in scores:
            table.add_data(wandb.Image(str(samples_dir / s.file)), s.style, s.seed, s.similarity, verdict(s))
        run.log({"scores": table})
        run.finish()
    log.info("scores table logged to W&B (%s): %s", mode, run.dir)
    return Path(run.dir)
