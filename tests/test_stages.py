"""Stage records (headshots/stages.py): what the CLI did, the web app and the batch runner do not do again."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from headshots.cli import build_parser, run
from headshots.config import load_config
from headshots.stages import (
    STAGE_NAMES,
    _plain_config,
    figures,
    fingerprints,
    read_record,
    record_path,
    run_recorded,
    stage_named,
    stages_to_run,
    write_record,
)
from headshots.workspace import ADAPTER_WEIGHTS, DATASET_INFO, Workspace
from tests.conftest import copy_photos, everything_done


def cli(package: str, command: str, overrides: list[str]) -> int:
    if package == "train":
        from train.__main__ import COMMANDS, HELP
    else:
        from infer.__main__ import COMMANDS, HELP
    return run(build_parser(f"python -m {package}", "", HELP), COMMANDS, [command, "--user", "alice", "--profile", "tiny", *overrides])


def test_train_all_asks_for_the_base_model_before_preparing_the_photos(tmp_path, faces_dir, capsys):
    """Without PROFILE=tiny on a machine without network, `make train` checked and prepared every photo at full size,
    then could not load SDXL (a new-user walk): the model is asked for first."""
    overrides = [f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}",
                 f"paths.cache_root={tmp_path / 'cache'}", f"model.pretrained={tmp_path / 'no-such-model'}"]
    ws = Workspace.from_config(load_config("alice", "tiny", overrides=overrides))
    copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:5], ws.selfies)
    assert cli("train", "all", overrides) == 2
    assert "Could not load the base model from" in capsys.readouterr().err
    assert not ws.intake_report.exists() and not ws.prepared.exists()


def test_a_person_trained_and_generated_on_the_cli_is_not_done_again_by_the_chain(tmp_path, tiny_model, faces_dir, face_weights,
                                                                                   caplog):
    from service.chain import run_person

    overrides = [f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}",
                 f"paths.cache_root={tmp_path / 'cache'}", f"model.pretrained={tiny_model}", "wandb.mode=disabled",
                 "train.max_steps=2", "infer.styles=[linkedin]", "infer.images_per_style=1", "infer.steps=2"]
    cfg = load_config("alice", "tiny", overrides=overrides)
    ws = Workspace.from_config(cfg)
    copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:5], ws.selfies)

    assert cli("train", "all", overrides) == 0  # make train
    adapter = ws.adapter_dir(cfg.run) / ADAPTER_WEIGHTS
    made = {path: path.stat().st_mtime_ns for path in (ws.intake_report, ws.prepared / DATASET_INFO, adapter)}
    with caplog.at_level(logging.INFO, logger="train"):
        assert cli("train", "all", overrides) == 0  # make train again, nothing changed: nothing done again
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "train"] == [
        "intake skipped", "prepare skipped", "fit skipped", "next, headshots in the styles you choose"]
    assert caplog.records[-1].getMessage().endswith(": make infer USER=alice PROFILE=tiny")  # what to do next, last
    fit_skipped = caplog.records[-2].getMessage()  # how to train longer, and that it must be asked for again
    assert "make train USER=alice PROFILE=tiny ARGS=train.max_steps=4" in fit_skipped and "needs the raised value" in fit_skipped
    assert {path: path.stat().st_mtime_ns for path in made} == made
    assert cli("infer", "all", overrides) == 0  # make infer
    assert stages_to_run(cfg) == ["export"]  # nothing picked for export yet
    results = run_person(cfg)  # what the web app's jobs and the batch's workers run
    assert [r.state for r in results] == ["skipped"] * 4 + ["done"]
    infer = next(r for r in results if r.stage == "infer")
    assert infer.details["images"] == 1 and "best_likeness" in infer.details  # a skipped stage's figures, read from its outputs
    assert stages_to_run(cfg) == []

    # A caption edited by hand (README: edit captions.json, prepare again): the chain must not train on the old one
    written = ws.captions.read_text()
    ws.captions.write_text(json.dumps({file: f"{caption}, in a red scarf" for file, caption in json.loads(written).items()}))
    assert stages_to_run(cfg) == ["prepare", "fit", "infer", "export"]
    ws.captions.write_text(written)  # edited back: nothing to redo
    assert stages_to_run(cfg) == []
    # `make prepare` refused before it touched the prepared photos (a setting asks for more than there are)
    assert cli("train", "prepare", [*overrides, "prepare.min_photos=9", "intake.min_photos=9"]) == 2
    assert stages_to_run(cfg) == []  # what was prepared, trained and generated before still is
    # `make train` after a setting that changes none of the rows prepare makes: prepared again, not trained again
    same_rows = [*overrides, f"prepare.keep_rejected=[{min(p.name for p in ws.selfies.iterdir())}]"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train"):
        assert cli("train", "all", same_rows) == 0
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "train"] == [
        "intake skipped", "fit skipped", "next, headshots in the styles you choose"]
    assert "prepare made the same photos, crops and captions" in caplog.records[-2].getMessage()
    assert stages_to_run(load_config("alice", "tiny", overrides=same_rows)) == []
    assert {path: path.stat().st_mtime_ns for path in made if path != ws.prepared / DATASET_INFO} == {
        path: mtime for path, mtime in made.items() if path != ws.prepared / DATASET_INFO}

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


def test_an_intake_setting_makes_prepare_due(make_config):
    """prepare leaves out what intake rejects, judged with the intake settings: a stricter limit changes what it trains
    on, so `make train` (which skips what is done) must prepare again (intake's fingerprint is prepare's upstream)."""
    everything_done(make_config("alice"))
    assert stages_to_run(make_config("alice", "intake.max_roll=10")) == ["intake", "prepare", "fit", "infer", "export"]


def test_face_settings_retrain_only_an_adapter_that_validates_with_them(make_config):
    """Training reads the face settings only to score likeness while it validates: a new detection setting redid
    intake, prepare and training for everyone (their records hashed them), where prepare's rows decide by themselves.
    Records written before, when the settings were hashed always, stay true for anyone who left them as they are."""
    everything_done(make_config("alice"))
    stricter = make_config("alice", "face.min_confidence=0.99")
    assert fingerprints(stricter)["fit"] == fingerprints(make_config("alice"))["fit"]
    validating = ("train.validation.every=5",)
    assert fingerprints(make_config("alice", *validating, "face.min_confidence=0.99"))["fit"] != \
        fingerprints(make_config("alice", *validating))["fit"]


def test_settings_of_how_training_computes_leave_the_adapter_done(make_config):
    """Gradient checkpointing turned on to fit a smaller GPU, encodings cached or not, checkpoints kept more often:
    the same adapter. Each made training due again, and train.recipe then started it afresh: a whole retraining."""
    everything_done(make_config("alice"))
    for setting in ("train.gradient_checkpointing=true", "train.cache_encodings=false", "train.checkpoint_every=7",
                    "train.keep_checkpoints=5"):
        assert stages_to_run(make_config("alice", setting)) == [], setting
    assert stages_to_run(make_config("alice", "train.rank=8")) == ["fit", "infer", "export"]


def test_a_stage_run_again_makes_the_stages_after_it_due(make_config):
    """Another round of images (a second `make infer`, same settings: same fingerprint) is not what the last export
    cropped, so export is due again; the stages before are not touched."""
    cfg = make_config("alice")
    everything_done(cfg)
    run_recorded("infer", cfg, lambda: None)
    assert stages_to_run(cfg) == ["export"]
    assert read_record(stage_named("fit"), cfg) is not None


def test_an_edit_to_the_persons_own_style_file_draws_again_and_a_new_scoring_exports_again(make_config, tmp_path):
    """A stage-logic review: the chain kept images drawn from a style file's old text (only its path was hashed), and
    an export of every kept image after a scoring changed which are kept (scores.json was not read)."""
    own = tmp_path / "garden.yaml"
    own.write_text(Path("configs/styles/linkedin.yaml").read_text())
    cfg = make_config("alice", f"infer.styles=[{own}]")
    everything_done(cfg)
    own.write_text(own.read_text().replace("background:", "background: a walled garden,", 1))
    assert stages_to_run(cfg) == ["infer", "export"]
    assert _plain_config(make_config("alice"))["infer"]["styles"] == list(make_config("alice").infer.styles)  # shipped: by name
    scores = Workspace.from_config(cfg).scores(cfg.run)
    run_recorded("infer", cfg, lambda: None)
    run_recorded("export", cfg, lambda: None)
    assert stages_to_run(cfg) == []
    scores.write_text(json.dumps({"kept": 2, "images": [{"file": "linkedin-00.png"}, {"file": "linkedin-01.png"}]}))
    assert stages_to_run(cfg) == ["export"]


def test_a_hidden_file_beside_the_photos_makes_nothing_due(make_config):
    """Finder's .DS_Store (or a sync tool's marker) is read by no stage, so it must not make the chain judge, crop,
    train and draw again; a photo or a folder (intake names it) does."""
    cfg = make_config("alice")
    everything_done(cfg)
    selfies = Workspace.from_config(cfg).selfies
    (selfies / ".DS_Store").write_bytes(b"\0Bud1")
    assert stages_to_run(cfg) == []
    (selfies / "holiday").mkdir()
    assert stages_to_run(cfg) == list(STAGE_NAMES)


def test_a_prepare_that_makes_the_same_rows_leaves_training_and_images_done(make_config):
    """A setting that changes none of the photos, crops and captions training reads (keeping a photo intake accepts
    anyway) makes prepare run again, but no model is loaded and no round drawn again for it; other rows are trained on
    again."""
    import datasets

    everything_done(make_config("alice"))
    cfg = make_config("alice", "prepare.keep_rejected=[01.jpg]")
    ws = Workspace.from_config(cfg)
    assert stages_to_run(cfg) == ["prepare", "fit", "infer", "export"]  # known only once prepare has run

    def prepare_rows(caption: str):
        rows = {"file": ["01.jpg"], "caption": [caption], "generated_caption": [caption]}
        return lambda: datasets.Dataset.from_dict(rows).save_to_disk(str(ws.prepared))

    run_recorded("prepare", cfg, prepare_rows("a photo of ohwx person"))  # the rows everything_done trained on
    assert stages_to_run(cfg) == []
    run_recorded("prepare", cfg, prepare_rows("a photo of ohwx person, smiling"))
    assert stages_to_run(cfg) == ["fit", "infer", "export"]
    assert stages_to_run(make_config("alice", "prepare.class_noun=woman"))[:2] == ["prepare", "fit"]


def test_a_stage_that_fails_after_replacing_an_output_leaves_no_record_and_invalidates_what_follows(make_config):
    cfg = make_config("alice")
    everything_done(cfg)
    adapter = Workspace.from_config(cfg).adapter_dir(cfg.run) / ADAPTER_WEIGHTS

    def train_then_crash():
        adapter.with_suffix(".new").write_text("{}")
        adapter.with_suffix(".new").replace(adapter)  # as the trainer saves it: a new file renamed over the old
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_recorded("fit", cfg, train_then_crash)
    assert [read_record(stage_named(name), cfg) is None for name in STAGE_NAMES] == [False, False, True, True, True]
    assert stages_to_run(cfg) == ["fit", "infer", "export"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_stage_stopped_before_it_replaced_an_output_leaves_what_was_done_done(make_config, stop):
    """`make prepare` stopped while it crops (Ctrl-C, the app's Stop, an error), its dataset not swapped in yet: the
    photos prepared before and the adapter trained on them are what they were, so the chain must not train again."""
    cfg = make_config("alice")
    everything_done(cfg)
    before = [read_record(stage_named(name), cfg) for name in STAGE_NAMES]
    with pytest.raises(stop):
        run_recorded("prepare", cfg, lambda: (_ for _ in ()).throw(stop()))
    assert [read_record(stage_named(name), cfg) for name in STAGE_NAMES] == before
    assert stages_to_run(cfg) == []


def test_a_generation_stopped_after_drawing_images_leaves_its_round_to_be_scored(make_config):
    """Infer draws its images before it scores them: stopped in between, its scores no longer cover the round, so its
    record (and export's) stays gone and the chain scores again."""
    cfg = make_config("alice")
    everything_done(cfg)
    samples = Workspace.from_config(cfg).samples_dir(cfg.run)

    def draw_then_stop():
        (samples / "linkedin-01.png").write_bytes(b"an image")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recorded("infer", cfg, draw_then_stop)
    assert stages_to_run(cfg) == ["infer", "export"]


def test_records_are_not_put_back_into_a_folder_deleted_meanwhile(make_config):
    """A deletion of the person's data (make purge) while their stage ran: the stage, stopped unchanged, must not
    bring its records, or their folders, back."""
    cfg = make_config("alice")
    everything_done(cfg)
    folder = record_path(stage_named("fit"), cfg).parent

    def purged_meanwhile():
        shutil.rmtree(folder)
        raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        run_recorded("fit", cfg, purged_meanwhile)
    assert not folder.exists()


def test_only_the_main_process_of_a_multi_gpu_run_touches_records(make_config, monkeypatch):
    cfg = make_config("alice")
    everything_done(cfg)
    before = read_record(stage_named("fit"), cfg)
    monkeypatch.setenv("RANK", "1")  # accelerate launch's second process
    run_recorded("fit", cfg, lambda: None)
    assert read_record(stage_named("fit"), cfg) == before and stages_to_run(cfg) == []


def test_images_picked_for_export_make_it_due_even_with_none_kept(make_config):
    cfg = make_config("alice", "infer.export_files=[linkedin-00.png]")
    everything_done(cfg)
    ws = Workspace.from_config(cfg)
    ws.scores(cfg.run).write_text(json.dumps({"kept": 0, "images": [{"file": "linkedin-00.png", "similarity": 0.2}]}))
    assert figures(stage_named("export"), cfg) == {"exported": 1}
    ws.export_manifest(cfg.run).unlink()
    assert stages_to_run(cfg) == ["export"]  # picked, so the crops must be there
    assert stages_to_run(make_config("alice")) == ["export"]  # another pick (none): crops again
    nothing = make_config("alice")
    write_record(stage_named("export"), nothing, fingerprints(nothing)["export"], 1.0)
    assert stages_to_run(nothing) == []  # nothing kept or picked: done without crops
    assert figures(stage_named("export"), nothing)["exported"] == 0


def test_intake_judged_again_with_other_settings_keeps_what_was_trained(make_config):
    """The web app opened with other intake settings judges the photos again (and may refuse them): that must not
    throw away the person's prepared photos and adapter, which intake's report never fed."""
    cfg = make_config("alice")
    everything_done(cfg)
    stricter = make_config("alice", "intake.min_photos=10")
    run_recorded("intake", stricter, lambda: "refused", lambda result: False)
    assert [read_record(stage_named(name), cfg) is None for name in STAGE_NAMES] == [True, False, False, False, False]
    run_recorded("intake", cfg, lambda: "usable")  # back with the settings it was trained with
    assert stages_to_run(cfg) == []


def test_intake_judged_under_one_profile_is_due_again_under_another(make_config):
    """Intake's resolution check measures the training crop against the profile's resolution: a set judged usable at
    128 px is not judged at 1024 px. Its record covers those settings; prepare's fingerprint, which hashes them
    itself, does not change for them, so adding them redid no one's training."""
    cfg = make_config("alice")
    everything_done(cfg)
    for other in ("model.resolution=1024", "prepare.crop_margin=0.5", "prepare.level_eyes=false"):
        assert stages_to_run(make_config("alice", other))[0] == "intake", other
    before = fingerprints(cfg)
    run_recorded("intake", make_config("alice", "model.resolution=1024"), lambda: "usable")
    assert fingerprints(cfg) == before and stages_to_run(cfg) == ["intake"]  # prepare and training still done
    assert [read_record(stage_named(name), cfg) is None for name in STAGE_NAMES] == [False] * 5
    run_recorded("prepare", cfg, lambda: None)  # `make prepare` meanwhile: recorded, though intake is due (it does
    assert read_record(stage_named("prepare"), cfg) is not None  # not feed prepare), so the chain does not redo it


def test_a_chain_is_known_done_without_a_worker_and_a_failed_check_leaves_it_to_the_task(make_config):
    """The batch asks `chain_done` in its driver, to give a person whose whole chain is done no Ray task. A check that
    fails (an output cut short, a photo that cannot be read) must not stop the batch: that person's own task meets
    it, and says so."""
    from service.chain import chain_done

    cfg = make_config("alice")
    everything_done(cfg)
    assert [(result.stage, result.state) for result in chain_done(cfg)] == [(name, "skipped") for name in STAGE_NAMES]
    Workspace.from_config(cfg).scores(cfg.run).write_text('{"kept": ')  # what export's check reads, cut short
    assert chain_done(cfg) is None


def test_a_deletion_as_a_stage_ends_is_not_undone_by_its_record(tmp_path, tiny_model, faces_dir):
    """The record is written after the stage let go of its lock: a `make purge ALL=1` that took the lock in that
    moment deleted the person's folder, and the record wrote it back (a concurrency review)."""
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, tiny_model, "alice")
    workspace = Workspace.from_config(cfg)
    copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:2], workspace.selfies)
    run_recorded("intake", cfg, lambda: shutil.rmtree(workspace.user_dir))  # deleted as the stage ends
    assert not workspace.user_dir.exists()
