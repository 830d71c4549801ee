"""`python -m service.purge`: one command removes everything derived from a person, including their rows in the
batch status files that also name other people, and loses nothing it cannot read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from infer.export import EXPORT_LOCK
from infer.manifest import IMAGES_LOCK
from service.batch import BATCH_LOCK
from service.jobs import JOB_LOCK
from service.purge import main
from tests.conftest import held_elsewhere, run_make
from train.checkpoint import TRAIN_LOCK


def _batch(outputs, batch_id: str, *users: str) -> None:
    folder = outputs / "batch" / batch_id
    folder.mkdir(parents=True)
    people = [{"user": u, "stage": "export", "stage_state": "done", "best_likeness": 0.7,
               "hint": f"{outputs}/{u}/default/samples/gallery.html"} for u in users]
    (folder / "status.json").write_text(json.dumps({"batch": batch_id, "finished": True, "people": people}))


def test_purge_takes_the_person_out_of_batch_records_and_keeps_everyone_else(tmp_path, capsys):
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    (data / "dana" / "selfies").mkdir(parents=True)
    (data / "dana" / "intake.json").write_text("{}")
    (data / "dana" / "settings.yaml").write_text("paths:\n  data_root: /somewhere/else\n")  # refused by load_config: purge still runs
    (outputs / "dana" / "default").mkdir(parents=True)
    _batch(outputs, "shared", "dana", "erin")
    _batch(outputs, "alone", "dana")
    _batch(outputs, "others", "erin")
    (outputs / "batch" / "broken").mkdir()
    (outputs / "batch" / "broken" / "status.json").write_text("{not json")

    assert main(["--user", "dana", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0
    said = capsys.readouterr().out

    shared = json.loads((outputs / "batch" / "shared" / "status.json").read_text())
    assert [p["user"] for p in shared["people"]] == ["erin"] and shared["batch"] == "shared"
    assert not (outputs / "batch" / "alone").exists()
    assert [p["user"] for p in json.loads((outputs / "batch" / "others" / "status.json").read_text())["people"]] == ["erin"]
    assert (outputs / "batch" / "broken" / "status.json").read_text() == "{not json"  # unreadable: left, and named
    assert "could not read" in said and "broken" in said and "by hand" in said
    assert f"removed dana from {outputs / 'batch' / 'shared' / 'status.json'}" in said
    assert not (outputs / "dana").exists() and not (data / "dana" / "intake.json").exists()
    assert (data / "dana" / "selfies").is_dir()  # the originals stay without --include-selfies
    assert (data / "dana" / "settings.yaml").is_file() and "kept the person's own settings" in said  # their input too
    (outputs / "batch" / "broken" / "status.json").unlink()
    assert main(["--user", "dana", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0  # again
    said = capsys.readouterr().out
    assert "nothing made from the photos of 'dana' is stored" in said and "kept the original photos" in said
    assert main(["--user", "dana", "--include-selfies", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0
    assert not (data / "dana").exists()


def test_ray_logs_a_crashed_batch_kept_go_with_the_person(tmp_path, capsys):
    """A batch whose stage crashed keeps its Ray session folder (worker logs naming everyone in it); purge took the
    status file, the one pointer to it, away and left the logs (privacy review). A running batch's is named, and one
    killed moments ago (its file not yet settled for close_abandoned) is named as killed, not as running."""
    outputs = tmp_path / "outputs"
    sessions = {name: tmp_path / "ray" / f"session_{name}" for name in ("ended", "running", "killed", "elsewhere")}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for session in sessions.values():
        (session / "logs").mkdir(parents=True)
        (session / "logs" / "worker.err").write_text("training dana: outputs/dana/default")
    for name, finished, host, pid in (("ended", True, socket.gethostname(), os.getpid()),
                                      ("running", False, socket.gethostname(), os.getpid()),
                                      ("killed", False, socket.gethostname(), gone.pid),  # moments ago: its file is new
                                      ("elsewhere", True, "another-machine", os.getpid())):
        _batch(outputs, name, "dana", "erin")
        status = outputs / "batch" / name / "status.json"
        record = json.loads(status.read_text())
        status.write_text(json.dumps({**record, "finished": finished, "host": host, "ray_session": str(sessions[name]),
                                      "driver_pid": pid}))
    assert main(["--user", "dana", f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={outputs}"]) == 0
    said = capsys.readouterr().out
    assert not sessions["ended"].exists() and f"removed {sessions['ended']} (Ray logs of batch ended" in said, said
    assert sessions["running"].is_dir() and f"kept {sessions['running']}: batch running is still running" in said
    assert sessions["killed"].is_dir()  # closed by purge once its file is 30 s old, not called running meanwhile
    assert f"kept {sessions['killed']} for now: batch killed was killed moments ago" in said and "run this again in 30 s" in said
    assert sessions["elsewhere"].is_dir()  # a path on another machine names nothing here


@pytest.mark.parametrize("lock, doing", [("outputs/dana/default/" + TRAIN_LOCK, "run 'default': training"),
                                         ("outputs/dana/default/" + IMAGES_LOCK, "run 'default': generating"),
                                         ("outputs/dana/default/" + EXPORT_LOCK, "run 'default': exporting crops"),
                                         ("outputs/dana/default/" + BATCH_LOCK, "run 'default': a batch"),
                                         ("outputs/dana/default/jobs/" + JOB_LOCK, "run 'default': a job of the web app"),
                                         ("data/dana/.intake.lock", "checking their photos"),
                                         ("data/dana/.prepare.lock", "preparing their photos")])
def test_purge_is_refused_while_a_command_of_the_person_runs(tmp_path, capsys, lock, doing):
    """A training (or generation, or intake) still running would write its adapter and checkpoints (or images, or its
    reports naming the photos) back after the purge said it removed everything (found by running `make purge` during
    `make train`). Refused, nothing deleted; once it has ended, purged."""
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    (data / "dana" / "selfies").mkdir(parents=True)
    run_dir = outputs / "dana" / "default"
    (run_dir / "adapter").mkdir(parents=True)
    (outputs / "dana" / "older-run").mkdir()
    args = ["--user", "dana", "--include-selfies", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]
    with held_elsewhere(tmp_path / lock):
        assert main(args) == 2
    said = capsys.readouterr().err
    assert f"dana's data is in use ({doing}" in said and "nothing was deleted" in said, said
    assert (run_dir / "adapter").is_dir() and (data / "dana" / "selfies").is_dir()
    assert main(args) == 0 and not (outputs / "dana").exists() and not (data / "dana").exists()


def test_purge_holds_the_locks_of_commands_a_run_has_not_run_yet(tmp_path):
    """A run trained but never generated from has no images lock: purge took only the locks it found, so a first
    generation starting meanwhile took its own and wrote images after the deletion (a concurrency review)."""
    from headshots.config import load_config
    from headshots.workspace import Workspace, lock_held
    from service.purge import nothing_running

    cfg = load_config("dana", overrides=[f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}"])
    ws = Workspace.from_config(cfg)
    ws.selfies.mkdir(parents=True)
    run_dir = ws.run_dir("default")
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / TRAIN_LOCK).touch()
    with nothing_running(ws):
        assert all(lock_held(run_dir / lock) for lock in (TRAIN_LOCK, IMAGES_LOCK, EXPORT_LOCK, BATCH_LOCK))
        assert lock_held(ws.intake_lock) and lock_held(ws.prepare_lock)


def test_make_takes_whose_data_from_its_command_line_only(tmp_path):
    """The shell's USER is the login name: `make purge` with no USER= must not purge the login's namesake, and a
    name make would split (a space) or expand (a `$`) reaches the CLI whole, to be refused there with the rule."""
    import subprocess

    def make(*args: str) -> subprocess.CompletedProcess:
        return run_make(*args, env={"USER": "dana"}, check=False)

    refused = make("check-user")  # what purge, train and the rest run first
    assert refused.returncode == 2 and "say whose photos on the command line" in refused.stdout, refused
    assert "e.g. make intake USER=alice" in make("intake").stdout  # the command the person typed, not another
    assert make("check-user", "USER=erin").returncode == 0
    assert "-m service.purge --user='erin' " in make("-n", "purge", "USER=erin").stdout
    # The photos go only with ALL=1 on make's command line: ALL=0 keeps them, an ALL left in the shell is not read,
    # and any other value is refused before anything is deleted.
    assert "--include-selfies" in make("-n", "purge", "USER=erin", "ALL=1").stdout
    assert "--include-selfies" not in make("-n", "purge", "USER=erin", "ALL=0").stdout
    in_shell = run_make("-n", "purge", "USER=erin", env={"ALL": "1"}, check=False)
    assert "-m service.purge --user='erin'" in in_shell.stdout and "--include-selfies" not in in_shell.stdout
    unclear = make("purge", "USER=erin-nobody", "ALL=no")
    assert unclear.returncode == 2 and "not ALL=no" in unclear.stdout and "service.purge" not in unclear.stdout
    one_run = make("purge", "USER=erin-nobody", "RUN=second")  # purge deletes every run: RUN= would be a surprise
    assert one_run.returncode == 2 and "RUN=second is not used, nothing was deleted" in one_run.stdout
    assert "rm -r outputs/erin-nobody/second" in one_run.stdout and "service.purge" not in one_run.stdout
    assert "-m train intake --user='a b' " in make("-n", "intake", "USER=a b").stdout
    assert "--users='x;echo hi'" in make("-n", "batch", "USERS=x;echo hi").stdout  # a name, not a second command
    # make expanded a `$` in what was typed: USER='jo$hn' was jo, and $(shell ...) ran, with -n too
    assert "--user='jo$hn' " in make("-n", "intake", "USER=jo$hn").stdout
    ran = tmp_path / "ran"
    assert f"--user='$(shell touch {ran})' " in make("-n", "purge", f"USER=$(shell touch {ran})").stdout and not ran.exists()
    shown = make("purge", "USER=a$(id)", "RUN=r$(id)").stdout  # said as typed: the shell runs nothing either
    assert "every run of a$(id), not one (RUN=r$(id) is not used" in shown, shown
    assert "rm -r outputs/a\\$\\(id\\)/r\\$\\(id\\)" in shown  # the commands it offers paste safely
    like_an_option = make("intake", "USER=-x").stderr  # reaches the name rule, not argparse's "expected one argument"
    assert "Use 1-64 letters, digits" in like_an_option and "expected one argument" not in like_an_option
    # The commands see the login as USER, not the person: torch named its compile cache in the temp folder after the person,
    # which purge could not find (privacy walk).
    seen = make("--eval", "show-user: ; @echo $$USER", "show-user", "USER=erin").stdout.strip()
    assert seen == subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip() != "erin"


def test_photos_linked_in_from_elsewhere_are_named_as_kept(tmp_path, capsys):
    """A person's folder, or their photo folder, that is a link to photos stored elsewhere: purge removes the link
    and said "removed", while the photos stayed (bad-input walk). It now says which were kept, and where."""
    data, outputs, elsewhere = tmp_path / "data", tmp_path / "outputs", tmp_path / "elsewhere"
    (elsewhere / "selfies").mkdir(parents=True)
    (elsewhere / "selfies" / "01.jpg").write_bytes(b"a selfie")
    data.mkdir()
    (data / "dana").symlink_to(elsewhere)
    (data / "erin").mkdir()
    (data / "erin" / "selfies").symlink_to(elsewhere / "selfies")
    for user in ("dana", "erin"):
        assert main(["--user", user, "--include-selfies", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0
        said = capsys.readouterr().out
        assert f"kept {(elsewhere if user == 'dana' else elsewhere / 'selfies').resolve()}: only the link" in said, said
        assert not (data / user).exists() and (elsewhere / "selfies" / "01.jpg").read_bytes() == b"a selfie"
    # Links in outputs are the tools' own (W&B links latest-run within the run, its core log into its cache: both were
    # reported "kept"), and a broken or looping link keeps nothing (a link to itself stopped purge with a traceback).
    run = outputs / "fay" / "default" / "wandb"
    (run / "offline-run-1").mkdir(parents=True)
    (run / "latest-run").symlink_to(run / "offline-run-1")
    (run / "gone").symlink_to(tmp_path / "nowhere")
    (run / "loop").symlink_to(run / "loop")
    (tmp_path / "core-debug.log").write_text("W&B's own log, in its cache")
    (run / "debug-core.log").symlink_to(tmp_path / "core-debug.log")  # as W&B links its core log into each run
    assert main(["--user", "fay", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0
    said = capsys.readouterr().out
    assert "kept" not in said.replace("kept the", "") and not (outputs / "fay").exists(), said


def test_outputs_linked_in_from_another_disk_are_deleted_there(tmp_path, capsys):
    """A person's outputs folder, or one of their runs, linked to another disk: purge removed the link, said
    "removed", and their adapters and images stayed there (privacy review). Outputs are all made from the photos:
    the linked folder goes too, unless it holds the project's own folders, which are named as kept."""
    data, outputs, disk = tmp_path / "data", tmp_path / "outputs", tmp_path / "disk"
    for run in ("bob", "carol-default"):
        (disk / run / "samples").mkdir(parents=True)
        (disk / run / "samples" / "linkedin-00.png").write_bytes(b"a headshot")
    (outputs / "carol").mkdir(parents=True)
    (outputs / "bob").symlink_to(disk / "bob")
    (outputs / "carol" / "default").symlink_to(disk / "carol-default")
    (outputs / "dora").mkdir()
    (outputs / "dora" / "default").symlink_to(tmp_path)  # holds the outputs folder itself: never deleted
    for user, target in (("bob", disk / "bob"), ("carol", disk / "carol-default")):
        assert main(["--user", user, f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0
        said = capsys.readouterr().out
        assert f"removed {target.resolve()} (linked from" in said and not target.exists(), said
        assert not (outputs / user).exists() and not (outputs / user).is_symlink()
    assert main(["--user", "dora", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0
    said = capsys.readouterr().out
    assert f"kept {tmp_path.resolve()}:" in said and outputs.is_dir() and (disk / ".." / "outputs").is_dir(), said


def test_a_lock_that_cannot_be_taken_is_named_not_a_traceback(tmp_path, capsys):
    """A run's .train.lock that is a folder (or someone else's file) cannot be locked: purge says which, deletes
    nothing (review)."""
    outputs = tmp_path / "outputs"
    (outputs / "gus" / "default" / TRAIN_LOCK).mkdir(parents=True)
    assert main(["--user", "gus", f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={outputs}"]) == 2
    said = capsys.readouterr().err
    assert "cannot be locked" in said and "nothing was deleted" in said and (outputs / "gus").is_dir(), said


def test_a_file_of_the_persons_own_beside_selfies_is_kept_and_named(tmp_path, capsys):
    """Purge without ALL=1 deleted everything in the person's folder but selfies/ and settings.yaml: a photo put
    beside selfies/, or a folder of more photos, went with the reports (a new user's walk). It deletes what the
    stages make there, their unfinished copies too, and names what it keeps."""
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    person = data / "hank"
    (person / "selfies").mkdir(parents=True)
    (person / "more-photos").mkdir()
    for own in (person / "06.jpg", person / "more-photos" / "07.jpg", person / "selfies" / "01.jpg"):
        own.write_bytes(b"a photo of hank")
    made = ["intake.json", "intake.html", "captions.json", "prepare_report.json", "reference.safetensors",
            ".intake.json.k2j3.tmp", "prepared.tmp"]
    for name in made:
        (person / name).write_text("made from the photos")
    (person / ".DS_Store").write_bytes(b"the system's")  # kept, not named as the person's
    (person / "prepared").mkdir()
    (person / "stages").mkdir()
    assert main(["--user", "hank", f"paths.data_root={data}", f"paths.outputs_root={outputs}"]) == 0
    said = capsys.readouterr().out
    assert sorted(p.name for p in person.iterdir()) == [".DS_Store", ".intake.lock", ".prepare.lock", "06.jpg", "more-photos", "selfies"]
    assert ".DS_Store" not in said
    assert (person / "more-photos" / "07.jpg").is_file() and (person / "selfies" / "01.jpg").is_file()
    assert f"kept {person / '06.jpg'}: not made by this project" in said and f"kept {person / 'more-photos'}:" in said, said
    assert "make purge USER=hank ALL=1" in said
