"""Stage records (headshots/stages.py): what the CLI did, the web app and the batch runner do not do again."""

from pathlib import Path

from headshots.cli import build_parser, run
from headshots.config import load_config
from headshots.stages import STAGE_NAMES, read_record, stage_named, stages_to_run
from headshots.workspace import Workspace
from tests.conftest import copy_photos


def cli(package: str, command: str, overrides: list[str]) -> int:
    if package == "train":
        from train.__main__ import COMMANDS, HELP
    else:
        from infer.__main__ import COMMANDS, HELP
    return run(build_parser(f"python -m {package}", "", HELP), COMMANDS, [command, "--user", "alice", "--profile", "tiny", *overrides])


def test_a_person_trained_and_generated_on_the_cli_is_not_done_again_by_the_chain(tmp_path, tiny_model, faces_dir, face_weights):
    from service.chain import run_person

    overrides = [f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}",
                 f"paths.cache_root={tmp_path / 'cache'}", f"model.pretrained={tiny_model}", "wandb.mode=disabled",
                 "train.max_steps=2", "infer.styles=[linkedin]", "infer.images_per_style=1", "infer.steps=2"]
    cfg = load_config("alice", "tiny", overrides=overrides)
    ws = Workspace.from_config(cfg)
    copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:5], ws.selfies)

    assert cli("train", "all", overrides) == 0  # make train
    assert cli("infer", "all", overrides) == 0  # make infer
    assert stages_to_run(cfg) == ["export"]  # nothing picked for export yet
    results = run_person(cfg)  # what the web app's jobs and the batch's workers run
    assert [r.state for r in results] == ["skipped"] * 4 + ["done"]
    infer = next(r for r in results if r.stage == "infer")
    assert infer.details["images"] == 1 and "best_likeness" in infer.details  # a skipped stage's figures, read from its outputs
    assert stages_to_run(cfg) == []

    # A photo added since: `train fit` alone trains on the photos prepared before, so it must not call itself
    # done for the new set; the chain then prepares and trains again.
    copy_photos([sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[5]], ws.selfies)
    assert cli("train", "fit", overrides) == 0
    assert read_record(stage_named("fit"), cfg) is None
    assert stages_to_run(cfg) == list(STAGE_NAMES)


def test_a_failed_command_leaves_no_record(tmp_path, tiny_model, faces_dir, face_weights):
    overrides = [f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}"]
    cfg = load_config("alice", "tiny", overrides=overrides)
    copy_photos([faces_dir / "georgia-tech" / "s01" / "03.jpg"], Workspace.from_config(cfg).selfies)
    assert cli("train", "intake", overrides) == 2  # one photo: not a usable set
    assert read_record(stage_named("intake"), cfg) is None
    assert Path(Workspace.from_config(cfg).intake_report).is_file()  # the advice is written all the same
