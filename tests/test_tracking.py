"""Scored outputs as a W&B table, written offline under the run's folder (no network)."""

import json

from PIL import Image

from headshots.workspace import Workspace
from infer.score import Score
from infer.tracking import image_logging_mode, log_scores_table


def test_scores_table_is_logged_offline(make_config, faces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    cfg = make_config("alice", "wandb.mode=auto", "wandb.log_images=true")
    assert image_logging_mode(cfg) == "offline"  # auto never sends faces online
    samples = Workspace.from_config(cfg).samples_dir(cfg.run)
    samples.mkdir(parents=True)
    for name, src in (("a.png", "s01/08.jpg"), ("b.png", "s02/08.jpg")):
        Image.open(faces_dir / "georgia-tech" / src).convert("RGB").save(samples / name)
    scores = [Score("a.png", "linkedin", 1, True, 0.83, 0.87, True, "looks like you (similarity 0.83)", rank=1),
              Score("b.png", "actor", 2, True, 0.12, 0.2, False, "does not look like you (similarity 0.12 < 0.60)")]

    run_dir = log_scores_table(cfg, samples, scores)
    assert run_dir is not None and str(Workspace.from_config(cfg).wandb_dir(cfg.run)) in str(run_dir)
    tables = list(run_dir.glob("media/table/scores_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["image", "style", "seed", "similarity", "verdict"]
    assert [row[1:] for row in table["data"]] == [["linkedin", 1, 0.83, "kept #1"],
                                                 ["actor", 2, 0.12, "dropped: does not look like you (similarity 0.12 < 0.60)"]]
    # The images themselves are staged for syncing inside the run's wandb/ folder (purge deletes it),
    # not in the home directory.
    staged = list((Workspace.from_config(cfg).wandb_dir(cfg.run) / "artifacts" / "staging").iterdir())
    assert sum(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in staged) == 2


def test_no_logging_unless_images_are_allowed(make_config, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the suite's default, disabled, would win over the config
    assert image_logging_mode(make_config("alice", "wandb.mode=offline")) is None  # log_images defaults to false
    assert image_logging_mode(make_config("alice", "wandb.mode=disabled", "wandb.log_images=true")) is None
    assert image_logging_mode(make_config("alice", "wandb.mode=online", "wandb.log_images=true")) == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # W&B's own switch: the stricter wins
    assert image_logging_mode(make_config("alice", "wandb.mode=online", "wandb.log_images=true")) == "offline"
