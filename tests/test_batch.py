"""Many people at once on embedded Ray, tiny profile, CPU: real intake, prepare, training, sampling and
scoring in Ray workers. One batch of three people (one unusable set, one whose training worker is
killed with SIGKILL, one identical twin of that one trained without interruption), then the same
batch again, which must do no work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from headshots.config import load_config
from headshots.errors import HeadshotsError
from headshots.stages import STAGE_NAMES, read_record, stage_named, stages_to_run
from headshots.workspace import ADAPTER_WEIGHTS, Workspace, save_favourites
from service import batch as batch_module
from service.batch import Batch, close_abandoned, format_table, load_configs, print_notes, run_batch, start_ray, stop_ray
from tests.conftest import copy_photos

STEPS = 12
OVERRIDES = [f"train.max_steps={STEPS}", "train.checkpoint_every=3", "infer.styles=[linkedin]",
             "infer.images_per_style=1", "infer.steps=2", "batch.max_retries=2", "batch.status_every_s=0.5"]


@pytest.fixture(scope="module")
def people(tmp_path_factory, faces_dir, face_weights):
    """alice and twin: the same six photos of one person (Georgia Tech s23), twin with a background of their own
    (their settings.yaml); carol: two photos and a text file, too few; dora: a settings.yaml asking for "many" images."""
    from headshots.tiny_sdxl import build_tiny_sdxl

    root = tmp_path_factory.mktemp("batch")
    build_tiny_sdxl().save_pretrained(root / "tiny-sdxl")
    data = root / "data"
    six = sorted((faces_dir / "georgia-tech" / "s23").glob("*.jpg"))[:6]
    copy_photos(six, data / "alice" / "selfies")
    copy_photos(six, data / "twin" / "selfies")
    (data / "twin" / "settings.yaml").write_text("infer:\n  style_overrides:\n    background: plain light grey studio wall\n")
    copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:2], data / "carol" / "selfies")
    (data / "carol" / "selfies" / "notes.txt").write_text("my photos")  # named with its reason in the batch's hint
    copy_photos(six, data / "dora" / "selfies")
    (data / "dora" / "settings.yaml").write_text("infer:\n  images_per_style: many\n")
    overrides = [f"paths.data_root={data}", f"paths.outputs_root={root / 'outputs'}", f"paths.cache_root={root / 'cache'}",
                 f"model.pretrained={root / 'tiny-sdxl'}", "wandb.mode=disabled", *OVERRIDES]
    start_ray()
    import ray

    session, tmp = Path(ray._private.worker._global_node.get_session_dir_path()), batch_module._embedded_tmp
    yield overrides
    stop_ray()
    assert not session.exists(), "Ray's session logs (they name everyone in the batch) were left behind"
    assert not tmp.exists(), "the embedded Ray's temporary folder was left behind"


def fit_worker_pid(number: int, timeout: float = 300) -> int:
    """The PID of the Ray worker running the training of the batch's `number`th person, from Ray's state API (tasks
    are named by place in the batch: Ray publishes their names)."""
    from ray.util.state import list_tasks

    deadline = time.time() + timeout
    while time.time() < deadline:
        running = list_tasks(filters=[("name", "=", f"fit:person-{number}"), ("state", "=", "RUNNING")], detail=True)
        if running and running[0].worker_pid:
            return running[0].worker_pid
        time.sleep(0.5)
    raise AssertionError(f"fit:person-{number} never ran")


def wait_for(path_glob: Path, pattern: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not list(path_glob.glob(pattern)):
        assert time.time() < deadline, f"nothing matched {path_glob / pattern} in {timeout}s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def first_batch(people):
    """The batch, with alice's training worker killed (kill -9) once it has written a checkpoint."""
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_batch(["alice", "twin", "carol", "dora"], "tiny",
                                                                    people, batch_id="first")))
    runner.start()
    cfg = load_config("alice", "tiny", overrides=people)
    pid = fit_worker_pid(1)  # alice, the first person named
    from ray.util.state import list_tasks

    assert not [t.name for t in list_tasks(limit=1000) if "alice" in t.name or "twin" in t.name], "task names name people"
    fit_seen = time.perf_counter()
    wait_for(Workspace.from_config(cfg).checkpoints_dir(cfg.run), "step-*")
    os.kill(pid, signal.SIGKILL)
    result["fit_seconds_before_kill"] = time.perf_counter() - fit_seen  # the attempt the kill threw away
    runner.join(timeout=900)
    assert not runner.is_alive(), "the batch did not finish"
    return result, pid


def test_an_embedded_ray_publishes_no_metrics_and_sends_no_usage_report(people):
    """Its metrics agent served every task's name (then the person's) on every interface, without a login (privacy
    walk: curl of the agent's /metrics during a batch). The module's Ray is started as a batch starts it. A Ray
    cluster's dashboard also reports usage to Anyscale a minute after it starts, unless turned off; `ray.init` turns
    it off for a cluster of its own (in release wheels: a Ray upgrade could change that)."""
    import ray

    assert ray.is_initialized()
    assert ray._private.worker._global_node.metrics_export_port in (None, -1)
    log = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "dashboard.log"
    deadline = time.time() + 60
    while "Usage reporting is" not in (said := log.read_text() if log.is_file() else ""):
        assert time.time() < deadline, f"the dashboard never said whether it reports usage: {log}"
        time.sleep(0.5)
    assert "Usage reporting is disabled." in said


def test_an_embedded_rays_temporary_files_stay_in_a_folder_of_the_batchs_own(people):
    """Every batch left an empty pymp-* folder in the system's temporary folder: the multiprocessing forkserver of
    Ray's dashboard, killed by Ray's shutdown before it could remove it. The embedded Ray's processes, its workers
    too, keep their temporary files in the batch's own folder instead, which `stop_ray` deletes (the module's
    fixture checks it is gone)."""
    import ray

    tmp = batch_module._embedded_tmp
    assert tmp.name.startswith(batch_module.RAY_TMP_PREFIX) and tmp.is_dir()
    assert ray.get(ray.remote(tempfile.gettempdir).remote()) == str(tmp)
    deadline = time.time() + 60
    while not list(tmp.glob("pymp-*")):
        assert time.time() < deadline, f"the dashboard's forkserver never made its folder in {tmp}"
        time.sleep(0.5)
    assert tempfile.gettempdir() != str(tmp)  # this process's own are where they were


def test_the_kuberay_manifest_turns_off_usage_reports_and_asks_every_pod_for_the_token():
    """A cluster started by `ray start` (each KubeRay pod) reports usage to Anyscale from its head every hour unless
    RAY_USAGE_STATS_ENABLED=0, and anyone reaching it runs code without a token: the shipped manifest sets both."""
    import yaml

    manifest = Path(__file__).resolve().parents[1] / "configs" / "ray" / "kuberay-cluster.yaml"
    (cluster,) = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc["kind"] == "RayCluster"]
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    containers = [container for group in groups for container in group["template"]["spec"]["containers"]]
    assert len(containers) == 2
    for container in containers:
        env = {variable["name"]: variable.get("value") for variable in container["env"]}
        assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["RAY_AUTH_MODE"] == "token", container["name"]


def person(status: dict, user: str) -> dict:
    return next(p for p in status["people"] if p["user"] == user)


def test_usable_sets_complete_and_the_unusable_one_stops_at_intake(first_batch, people, capsys):
    status, _ = first_batch
    on_disk = json.loads(Path(status["status_file"]).read_text())
    assert on_disk["finished"] and on_disk["people"] == status["people"]
    for user in ("alice", "twin"):
        row = person(on_disk, user)
        assert row["state"] == "complete", row
        ws = Workspace.from_config(load_config(user, "tiny", overrides=people))
        assert (ws.adapter_dir("default") / ADAPTER_WEIGHTS).is_file()
        scores = json.loads((ws.samples_dir("default") / "scores.json").read_text())
        assert len(scores["images"]) == 1 and (ws.samples_dir("default") / scores["images"][0]["file"]).is_file()
        assert row["kept"] == scores["kept"]
        manifest = json.loads((ws.samples_dir("default") / "manifest.json").read_text())
        own = ", plain light grey studio wall, " in manifest["images"][0]["prompt_2"]
        assert own == (user == "twin")  # each person's own settings, in one batch
        assert manifest["images"][0]["round"].startswith("chain-")  # named by the stage: a retry completes it
        intake = next(s for s in row["stages"] if s["stage"] == "intake")["details"]
        report = json.loads(ws.intake_report.read_text())["set"]
        assert intake["verdict"] == report["verdict"] == "warn" and intake["note"] == f"intake: {report['reason']}"
        assert "intake: " in format_table([row])  # a usable set's warnings reach the table
        print_notes(on_disk)  # and the closing lines, in full
        assert f"{user}: intake: {report['reason']}\n" in capsys.readouterr().out
    carol = person(on_disk, "carol")
    assert (carol["state"], carol["stage"], carol["stage_state"]) == ("stopped", "intake", "failed")
    assert "only 2 usable photos" in carol["reason"]
    assert "Rejected: notes.txt - not an image file (or an unsupported format). Details: " in carol["hint"], carol["hint"]
    assert [(s["state"], s["attempts"]) for s in carol["stages"]] == [("failed", 1)] + [("not run", 0)] * 4
    assert carol["stages"][1]["reason"] == "intake stopped (see its reason)"  # it finished: it refused the set
    dora = person(on_disk, "dora")  # her own settings.yaml is refused; the batch went on without her
    assert (dora["state"], dora["stage"], dora["stage_state"]) == ("stopped", "intake", "failed")
    assert dora["reason"].startswith(str(Path(people[0].split("=", 1)[1]) / "dora" / "settings.yaml"))
    assert "images_per_style" in dora["reason"] and "Fix or remove the file" in dora["hint"]
    assert [s["state"] for s in dora["stages"]] == ["failed", "not run", "not run", "not run", "not run"]
    assert not Workspace.from_config(load_config("dora", "tiny", overrides=people, with_person_settings=False)).user_outputs.exists()


def test_killed_training_is_retried_and_resumes_to_the_uninterrupted_weights(first_batch, people):
    status, killed_pid = first_batch
    fit = next(s for s in person(status, "alice")["stages"] if s["stage"] == "fit")
    assert fit["state"] == "done" and fit["attempts"] == 2, fit
    cfg = load_config("alice", "tiny", overrides=people)
    last_attempt = read_record(stage_named("fit"), cfg)["seconds"]  # the attempt that finished, alone
    assert fit["seconds"] >= status["fit_seconds_before_kill"] + last_attempt, "the killed attempt's time counts too"
    twin_fit = next(s for s in person(status, "twin")["stages"] if s["stage"] == "fit")
    assert twin_fit["attempts"] == 1
    with pytest.raises(ProcessLookupError):
        os.kill(killed_pid, 0)

    def adapter(user: str) -> dict:
        ws = Workspace.from_config(load_config(user, "tiny", overrides=people))
        return load_file(ws.adapter_dir("default") / ADAPTER_WEIGHTS)

    resumed, uninterrupted = adapter("alice"), adapter("twin")
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert (resumed[key] - uninterrupted[key]).abs().max() <= 1e-6, key


def test_a_stage_ray_starts_past_batch_max_retries_stops_as_crashed(people):
    """Ray retries a worker its memory monitor killed on a budget of its own, unlimited on a cluster by default: a
    stage out of memory every time ran again for ever (a service review). The task counts its attempts on the status
    board and, past batch.max_retries (2 here), runs nothing and reports a crash."""
    import ray

    from service.batch import _remote_api

    status_board, stage_task = _remote_api()
    board = status_board.remote()
    for _ in range(3):  # the first attempt and two retries, each killed
        ray.get(board.start.remote("alice", "intake", 0))
    result = ray.get(stage_task.remote("intake", "alice", "tiny", None, people, 1, None, board))
    assert (result.state, result.seconds) == ("crashed", 0.0)
    assert result.reason.startswith("its worker was killed in each of 3 attempt(s), most likely by Ray's memory monitor")
    assert ray.get(board.snapshot.remote())[("alice", "intake")]["attempts"] == 4


def test_the_driver_carries_on_with_the_last_known_attempts_when_the_status_board_is_lost(people):
    """The board is one actor; lost with its node, the driver's snapshot raised and the whole batch ended in a
    traceback while everyone's tasks were healthy (a service review)."""
    import ray

    from service.batch import _remote_api

    batch = Batch(load_configs(["alice"], "tiny", None, people, "board-lost"), "board-lost")
    status_board, _ = _remote_api()
    batch.board = status_board.remote()
    ray.get(batch.board.start.remote("alice", "fit", 0))
    assert batch.started_so_far()[("alice", "fit")]["attempts"] == 1
    ray.kill(batch.board, no_restart=True)  # gone for good: what a board Ray cannot restart answers
    assert batch.started_so_far()[("alice", "fit")]["attempts"] == 1


def test_a_stage_running_again_after_its_worker_died_says_so_in_the_table():
    """After kill -9 of alice's fit worker the row stayed "fit running", and only Ray's own log lines said a worker had
    died (a batch walk). The retry is in the table; the first attempt is not news."""
    from service.batch import PersonRow, StageRow

    row = PersonRow("alice", [StageRow(stage) for stage in STAGE_NAMES])
    fit = next(stage for stage in row.stages if stage.stage == "fit")
    for stage in row.stages[: row.stages.index(fit)]:
        stage.state = "done"
    fit.state, fit.attempts = "running", 1
    assert "attempt" not in format_table([row.to_json()])
    fit.attempts = 2
    line = format_table([row.to_json()]).splitlines()[1]
    assert line.startswith("alice") and "fit      running" in line and "attempt 2: the last one crashed or its worker died" in line, line


def test_the_same_batch_again_does_no_work(first_batch, people, capsys):
    started = time.perf_counter()
    again = run_batch(["alice", "twin", "carol"], "tiny", people, batch_id="again")
    seconds = time.perf_counter() - started
    for user in ("alice", "twin"):
        assert [s["state"] for s in person(again, user)["stages"]] == ["skipped"] * len(STAGE_NAMES)
        assert [s["attempts"] for s in person(again, user)["stages"]] == [0] * len(STAGE_NAMES)  # found in the driver: no task
    assert person(again, "carol")["reason"] == person(first_batch[0], "carol")["reason"]
    assert person(again, "alice")["kept"] == person(first_batch[0], "alice")["kept"]  # the skipped stages' figures too
    capsys.readouterr()
    # no one with work: no Ray task at all; the command closes with each person's notes in full
    assert batch_module.main(["--users", "alice,twin", "--profile", "tiny", "--id", "again-done", *people]) == 0
    out = capsys.readouterr().out
    done = json.loads(Path(out.rpartition("status: ")[2].strip()).read_text())
    assert [p["state"] for p in done["people"]] == ["complete", "complete"]
    assert not [s for p in done["people"] for s in p["stages"] if s["attempts"]]
    for user in ("alice", "twin"):
        warned = json.loads(Workspace.from_config(load_config(user, "tiny", overrides=people)).intake_report.read_text())["set"]
        assert f"\n{user}: intake: {warned['reason']}\n" in out, out
    print(f"\nre-run of a finished batch: {seconds:.1f} s")


def test_a_changed_setting_reruns_only_the_stages_that_read_it(first_batch, people, faces_dir):
    def plan(*extra: str, user: str = "alice") -> list[str]:
        return stages_to_run(load_config(user, "tiny", overrides=[*people, *extra]))

    assert plan() == []
    assert plan("infer.steps=3") == ["infer", "export"]
    assert plan("train.learning_rate=0.002") == ["fit", "infer", "export"]
    assert plan("wandb.mode=offline") == []
    assert plan("infer.export_files=[linkedin-00.png]") == ["export"]  # another pick: crops again, no new images
    assert plan("infer.batch_size=1", "infer.more.count=2", "infer.discard_files=[x.png]") == []
    model = next(o.split("=", 1)[1] for o in people if o.startswith("model.pretrained="))
    relative = f"model.pretrained={os.path.relpath(model)}"  # as the CLI and the app spell a local folder
    assert plan(relative) == []
    from train.recipe import training_inputs

    def inputs(*extra: str) -> str:
        cfg = load_config("alice", "tiny", overrides=[*people, *extra])
        return training_inputs(cfg, Workspace.from_config(cfg))

    assert inputs(relative) == inputs(), "a relative spelling of the model would start training afresh"
    alice = Workspace.from_config(load_config("alice", "tiny", overrides=people))
    save_favourites(alice, "default", ["linkedin-00.png"])  # ticked in the web app: what export crops
    assert plan() == ["export"]
    alice.favourites("default").unlink()
    assert plan() == []
    ws = Workspace.from_config(load_config("twin", "tiny", overrides=people))
    copy_photos([faces_dir / "georgia-tech" / "s23" / "07.jpg"], ws.selfies)
    assert plan(user="twin") == list(STAGE_NAMES)


def test_new_training_inputs_start_training_afresh_instead_of_resuming_the_old_run(first_batch, people):
    from service.chain import run_person

    cfg = load_config("alice", "tiny", overrides=[*people, "train.learning_rate=0.003"])
    ws = Workspace.from_config(cfg)
    before = load_file(ws.adapter_dir("default") / ADAPTER_WEIGHTS)
    states = [r.state for r in run_person(cfg)]
    assert states == ["skipped", "skipped", "done", "done", "done"]
    progress = json.loads((ws.run_dir("default") / "progress.json").read_text())
    assert progress["resumed_from"] == 0 and progress["step"] == STEPS, progress
    after = load_file(ws.adapter_dir("default") / ADAPTER_WEIGHTS)
    assert any((after[k] - before[k]).abs().max() > 1e-6 for k in before), "the old adapter was exported again"


def test_a_batch_of_refused_people_alone_runs_nothing_and_says_why(people):
    status = run_batch(["dora", "nobody"], "tiny", people, batch_id="refused-alone")
    on_disk = json.loads(Path(status["status_file"]).read_text())
    assert on_disk["finished"] and on_disk["people"] == status["people"]
    assert person(status, "dora")["state"] == "stopped" and "settings.yaml" in person(status, "dora")["reason"]
    assert person(status, "nobody")["state"] == "stopped" and "No selfie folder" in person(status, "nobody")["reason"]
    assert "photos of nobody" in person(status, "nobody")["hint"]


def test_a_name_beside_its_folders_twin_stops_that_person_alone(people):
    """`--users Alice,carol` where alice's folder is: Alice is refused with the reason, and the batch, whose shared
    config is the first name's, still starts for carol (its status folder is no one's)."""
    configs = load_configs(["Alice", "carol"], "tiny", None, people, "twin-name")
    assert list(configs.people) == ["carol"] and "differs from 'alice' only in case" in configs.refused["Alice"].message
    batch = Batch(configs, "twin-name")
    assert batch.status_dir.name == "twin-name"
    assert list(batch.rows) == ["Alice", "carol"]  # the table in the order given, the refused in their place


def test_a_stopped_batch_says_so_in_its_status(people):
    """Ctrl-C: the stages not finished are marked interrupted and the status ends, so nothing polling it waits."""
    batch = Batch(load_configs(["alice", "carol"], "tiny", None, people, "stopped"), "stopped")
    stopped = batch.rows["carol"].stages[0]  # carol's intake had refused her photos before the Ctrl-C
    stopped.state, stopped.reason = "failed", "only 3 usable photos"
    batch.interrupt()
    status = json.loads((batch.status_dir / "status.json").read_text())
    assert status["finished"] and status["interrupted"]
    assert {p["user"]: p["state"] for p in status["people"]} == {"alice": "interrupted", "carol": "stopped"}
    assert [s["state"] for s in person(status, "carol")["stages"]] == ["failed"] + ["not run"] * 4  # her news stays
    assert person(status, "carol")["reason"] == "only 3 usable photos"
    assert person(status, "carol")["stages"][1]["reason"] == "intake stopped (see its reason)"
    # none had started: the first stage is the one interrupted, the rest never ran
    assert [s["state"] for s in person(status, "alice")["stages"]] == ["interrupted"] + ["not run"] * 4
    assert "Run the same batch again" in person(status, "alice")["hint"]


def test_a_person_another_batch_runs_is_stopped_not_run_twice(people):
    """The driver holds each person's batch lock while their stages run (and between them: purge waits for it,
    tests/test_purge.py); a second batch naming them meanwhile stops them, saying why, and starts no Ray for them."""
    from service.batch import BATCH_LOCK
    from tests.conftest import held_elsewhere

    run_dir = Workspace.from_config(load_config("alice", "tiny", overrides=[*people, "run=held"])).run_dir("held")
    run_dir.mkdir(parents=True, exist_ok=True)
    with held_elsewhere(run_dir / BATCH_LOCK):
        status = run_batch(["alice"], "tiny", [*people, "run=held"], None, "held-twice")
    alice = person(status, "alice")
    assert alice["state"] == "stopped"
    assert alice["reason"] == "Another batch, or a deletion of their data, is using this person's folder now."


def test_a_person_whose_run_folder_cannot_be_made_is_stopped_with_the_reason(tmp_path):
    """An OSError making their run folder (not writable, a file in the way) ended the whole batch in a traceback
    before Ray started; it is that person's refusal, saying what to do, and everyone else runs."""
    from service.batch import BATCH_LOCK

    batch, _ = little_batch(tmp_path, "unwritable", "erin", "gus")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "erin").write_text("a file where her outputs folder goes")
    batch.hold_people()
    try:
        erin = batch.status(finished=False)["people"][0]
        assert (erin["user"], erin["state"], erin["stage_state"]) == ("erin", "stopped", "failed")
        assert erin["reason"].startswith(f"Could not make or lock {tmp_path / 'outputs' / 'erin' / 'default' / BATCH_LOCK}")
        assert "writable" in erin["hint"] and list(batch.configs) == ["gus"] and list(batch.holds) == ["gus"]
    finally:
        batch.release()


def little_batch(root: Path, batch_id: str, *users: str) -> tuple[Batch, list[str]]:
    """A batch of `users`, one grey photo each, under `root`, with its overrides: its methods run without Ray."""
    from PIL import Image

    overrides = [f"paths.data_root={root / 'data'}", f"paths.outputs_root={root / 'outputs'}",
                 f"paths.cache_root={root / 'cache'}", "wandb.mode=disabled"]
    for user in users:
        (root / "data" / user / "selfies").mkdir(parents=True)
        Image.new("RGB", (64, 64), "grey").save(root / "data" / user / "selfies" / "a.jpg")
    return Batch(load_configs(list(users), "tiny", None, overrides, batch_id), batch_id), overrides


def purge_of(user: str, overrides: list[str], include_selfies: bool) -> list[str]:
    """`make purge USER=<user>` (ALL=1 with `include_selfies`), as the web app's Delete my data runs it."""
    from service.purge import purge

    return purge(Workspace.from_config(load_config(user, "tiny", overrides=overrides, with_person_settings=False)),
                 include_selfies=include_selfies)


def users_in(batch: Batch) -> list[str]:
    return [p["user"] for p in json.loads((batch.status_dir / "status.json").read_text())["people"]]


def test_a_person_deleted_while_the_batch_runs_is_not_written_back_into_its_status(tmp_path):
    """The driver lets go of a person's batch lock once their last stage ends (and one skipped as done never held it),
    so a deletion may run while others still train: it took their row out of status.json, and the next write put it
    back for good (a service review). erin's last stage has ended, fay was done before, gus still trains."""
    batch, overrides = little_batch(tmp_path, "deleted", "erin", "fay", "gus")
    (tmp_path / "outputs" / "fay" / "default").mkdir(parents=True)  # what her earlier runs left
    del batch.configs["fay"]  # as skip_those_done does: no lock, no task
    batch.hold_people()
    for stage in batch.rows["erin"].stages:
        stage.state = "done"
    batch.release("erin")  # as follow does after her last stage
    batch.write_status(finished=False)
    assert users_in(batch) == ["erin", "fay", "gus"]
    assert f"removed erin from {batch.status_dir / 'status.json'}" in purge_of("erin", overrides, include_selfies=True)
    assert f"removed fay from {batch.status_dir / 'status.json'}" in purge_of("fay", overrides, include_selfies=False)
    batch.write_status(finished=False)  # the next tick
    assert users_in(batch) == ["gus"]
    batch.release()
    final = batch.write_status(finished=True)
    assert users_in(batch) == ["gus"] and "erin" not in final.read_text() and "fay" not in final.read_text()
    assert [p["user"] for p in batch.status(finished=True)["people"]] == ["gus"]  # what main prints from


def test_a_person_refused_before_their_first_stage_stays_out_once_deleted(tmp_path):
    """Refused at once (here: their settings.yaml), hana has no folder a purge without ALL=1 removes, so only her row
    going out of status.json tells the driver; it wrote her name and reason back (the batch helper's open case)."""
    batch, overrides = little_batch(tmp_path, "refused", "hana", "gus")
    batch.rows["hana"].refuse(HeadshotsError("Her settings.yaml cannot be used.", "Fix it."))
    del batch.configs["hana"]
    batch.hold_people()
    batch.write_status(finished=False)
    assert users_in(batch) == ["hana", "gus"]
    assert f"removed hana from {batch.status_dir / 'status.json'}" in purge_of("hana", overrides, include_selfies=False)
    assert (tmp_path / "data" / "hana" / "selfies").is_dir()  # her photos stay: no folder of hers went
    batch.write_status(finished=False)
    assert users_in(batch) == ["gus"]
    batch.release()
    assert "hana" not in batch.write_status(finished=True).read_text()


def test_a_deletion_between_reading_the_rows_and_writing_them_is_not_undone(tmp_path, monkeypatch):
    """The write that read erin's row just before her deletion lands after it: her folders are looked at again once
    it is written. She was the batch's only person, so its folder goes, as the deletion had done."""
    batch, overrides = little_batch(tmp_path, "raced", "erin")
    batch.hold_people()
    batch.release("erin")
    written = batch_module.write_json_atomic
    deletions = []

    def deleted_meanwhile(path: Path, status: dict) -> None:
        if not deletions:
            deletions.append(purge_of("erin", overrides, include_selfies=False))
        written(path, status)

    monkeypatch.setattr(batch_module, "write_json_atomic", deleted_meanwhile)
    batch.write_status(finished=True)
    assert deletions and not batch.status_dir.exists()


def test_gpu_auto_on_a_cluster_with_no_gpu_up_says_to_ask_for_one(tmp_path, monkeypatch, caplog):
    """The shipped KubeRay cluster starts its GPU workers only for tasks that ask for a GPU; auto found none up, so no
    task asked and every training ran on the head's CPUs, silently (a service review). Embedded, no GPU is news to
    no one."""
    import ray

    batch, _ = little_batch(tmp_path, "gpu-auto", "erin")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    assert not batch.use_gpus() and "batch.gpu" not in caplog.text
    batch.address = "auto"
    assert not batch.use_gpus() and "pass batch.gpu=yes there" in caplog.text
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "GPU": 1.0})
    assert batch.use_gpus()


def test_sigterm_stops_a_batch_as_ctrl_c_does(people, monkeypatch):
    """`kill`, `timeout` and `ray job stop` send the driver SIGTERM, for which Ray installs a handler that exits: the
    batch's status then stayed "running" for whoever polls it (a service review). It is taken as Ctrl-C."""
    def ray_started(address=None, max_retries=0) -> None:  # the handler ray.init installs in the driver (ray/_private/worker.py)
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))

    def terminated(self, pending) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # where the signal lands

    monkeypatch.setattr(batch_module, "start_ray", ray_started)
    monkeypatch.setattr(batch_module.Batch, "submit", lambda self: {})
    monkeypatch.setattr(batch_module.Batch, "follow", terminated)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(batch_module.BatchInterrupted) as stopped:
            batch_module.run_batch(["alice"], "tiny", [*people, "run=terminated"], None, "terminated")
    finally:
        signal.signal(signal.SIGTERM, before)
    status = json.loads(Path(stopped.value.status["status_file"]).read_text())
    assert status["finished"] and status["interrupted"] and person(status, "alice")["state"] == "interrupted"


def test_after_ctrl_c_a_person_already_stopped_is_still_told_what_to_do(monkeypatch, capsys):
    """The closing lines after Ctrl-C said only "interrupted: run the same command again", though one person's
    photos had been refused before: running it again would not help them."""
    def stopped_midway(*args, **kwargs):
        raise batch_module.BatchInterrupted({"people": [
            {"user": "dan", "state": "stopped", "reason": "only 3 usable photos", "hint": "Add 2 more photos."},
            {"user": "ann", "state": "interrupted", "reason": "the batch was stopped", "hint": "Run the same batch again."}]})

    monkeypatch.setattr(batch_module, "run_batch", stopped_midway)
    assert batch_module.main(["--users", "ann,dan"]) == 130
    out, err = capsys.readouterr()
    assert "dan: only 3 usable photos\n  -> Add 2 more photos." in out and "ann:" not in out
    assert "interrupted: run the same command again" in err


@pytest.mark.parametrize("alice", ["crashed", "interrupted"])
def test_ctrl_c_keeps_the_worker_logs_a_crashed_stage_pointed_to(monkeypatch, capsys, alice):
    """Ctrl-C (or SIGTERM) after alice's fit crashed printed her hint naming Ray's worker logs, then deleted them:
    an interrupted batch deleted them whatever had crashed (a service review). Kept as a batch not stopped keeps
    them; an interrupted batch with no crash still deletes them (they name the people)."""
    def stopped(*args, **kwargs):
        raise batch_module.BatchInterrupted({"people": [
            {"user": "alice", "state": alice, "reason": "fit crashed after 3 attempt(s): ...", "hint": "worker logs are in ..."},
            {"user": "bob", "state": "interrupted", "reason": "the batch was stopped", "hint": "Run the same batch again."}]})

    asked = []
    monkeypatch.setattr(batch_module, "run_batch", stopped)
    monkeypatch.setattr(batch_module, "stop_ray", lambda keep_logs=False: asked.append(keep_logs))
    assert batch_module.main(["--users", "alice,bob"]) == 130
    assert asked == [alice == "crashed"]
    assert ("alice: fit crashed" in capsys.readouterr().out) == (alice == "crashed")


def test_a_batch_ending_on_an_error_of_its_own_says_so_and_keeps_the_worker_logs(tmp_path, monkeypatch):
    """A bug in the driver ended it in a traceback: status.json stayed "running" (the next batch then called it
    killed) and Ray's worker logs, all there was left to read, were deleted."""
    def failed(self, refs) -> None:
        raise RuntimeError("the driver's own bug")

    asked = []
    monkeypatch.setattr(batch_module, "start_ray", lambda address=None, max_retries=0: None)
    monkeypatch.setattr(batch_module, "stop_ray", lambda keep_logs=False: asked.append(keep_logs))
    monkeypatch.setattr(batch_module.Batch, "submit", lambda self: {})
    monkeypatch.setattr(batch_module.Batch, "follow", failed)
    batch, overrides = little_batch(tmp_path, "own-error", "erin")
    with pytest.raises(RuntimeError, match="the driver's own bug"):
        batch_module.main(["--users", "erin", "--profile", "tiny", "--id", "own-error", *overrides])
    assert asked == [True]
    status = json.loads((batch.status_dir / "status.json").read_text())
    erin = person(status, "erin")
    assert status["finished"] and erin["state"] == "interrupted"
    assert erin["reason"] == "the batch stopped on an error of its own: the driver's own bug"


def test_a_second_ctrl_c_does_not_cut_the_cleanup_short(monkeypatch, tmp_path):
    """Ctrl-C twice, the second while Ray stops: the driver exited 1, and Ray's session folder (its logs name the
    people) stayed for good, since the batch's status said it had finished (a batch walk)."""
    import ray

    def stopped(*args, **kwargs):
        raise batch_module.BatchInterrupted({"people": []})

    def pressed_again_while_stopping() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # where the second KeyboardInterrupt landed

    session = tmp_path / "session_2026-12-06_02-25-04_665480_16108"
    (session / "logs").mkdir(parents=True)
    monkeypatch.setattr(batch_module, "run_batch", stopped)
    monkeypatch.setattr(batch_module, "_embedded_session", session)
    monkeypatch.setattr(ray, "shutdown", pressed_again_while_stopping)
    assert batch_module.main(["--users", "ann"]) == 130
    assert not session.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again afterwards


def test_a_batch_whose_process_was_killed_is_closed_by_the_next_one(people, tmp_path):
    """kill -9 of the batch itself: its status said "running" for ever and Ray's logs of it (naming everyone)
    stayed in Ray's temp folder. The next batch marks it interrupted and deletes those logs."""
    people = [*people, f"paths.outputs_root={tmp_path}"]  # nothing done before, whichever tests ran first: Ray starts
    batch_root = Workspace.from_config(load_config("alice", "tiny", overrides=people)).batch_root
    status_file = batch_root / "killed" / "status.json"
    driver = subprocess.Popen([sys.executable, "-m", "service.batch", "--users", "alice", "--profile", "tiny", "--id", "killed",
                               *people], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(status_file.parent, status_file.name, timeout=120)
    finally:
        driver.kill()
        driver.wait()
    killed = json.loads(status_file.read_text())
    session, tmp = Path(killed["ray_session"]), Path(killed["ray_tmp"])
    assert not killed["finished"] and session.is_dir() and tmp.is_dir()
    assert close_abandoned(batch_root) == []  # a batch's file rewritten moments ago may be one that is still running
    assert close_abandoned(batch_root, quiet_s=0) == ["killed"]
    closed = json.loads(status_file.read_text())
    assert closed["finished"] and closed["interrupted"] and person(closed, "alice")["state"] == "interrupted"
    assert "Run the same batch again" in person(closed, "alice")["hint"]
    # its dashboard's processes outlived it by seconds, writing logs, and recreated the folder just deleted
    assert processes_with_tmpdir(tmp) == [], "the killed batch's Ray processes are still running"
    assert not session.exists(), "the killed batch's Ray logs are still there"
    assert not tmp.exists(), "the killed batch's Ray temporary folder is still there"
    assert close_abandoned(batch_root, quiet_s=0) == []  # once: a closed batch has finished


def processes_with_tmpdir(folder: Path) -> list[str]:
    """The command lines of this login's processes whose TMPDIR is `folder`."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("TMPDIR") == str(folder):
                found.append(" ".join(process.cmdline()))
        except psutil.Error:
            continue
    return found


def abandoned_status(root: Path, batch: str, **changes) -> Path:
    """A status.json as a batch killed while alice trained leaves it; `changes` replace its fields."""
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    session, tmp = root / "ray" / f"session_{batch}", root / "tmp" / f"{batch_module.RAY_TMP_PREFIX}{batch}"
    (session / "logs").mkdir(parents=True)
    tmp.mkdir(parents=True)
    stages = [{"stage": name, "state": state, "seconds": 0.0, "attempts": 1, "reason": "", "hint": "", "details": {}}
              for name, state in zip(STAGE_NAMES, ["done", "done", "running", "waiting", "waiting"])]
    status = {"batch": batch, "host": socket.gethostname(), "driver_pid": gone.pid, "ray_session": str(session), "ray_tmp": str(tmp),
              "finished": False, "interrupted": False, "people": [{"user": "alice", "stages": stages}], **changes}
    path = root / "batch" / batch / "status.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(status))
    return path


def test_closing_killed_batches_leaves_alone_what_may_still_run_or_is_not_rays(tmp_path):
    import socket

    killed = abandoned_status(tmp_path, "killed")
    abandoned_status(tmp_path, "running", driver_pid=os.getpid())  # its process is alive
    abandoned_status(tmp_path, "elsewhere", host=socket.gethostname() + "-other")  # another machine, same outputs
    abandoned_status(tmp_path, "old", driver_pid=None)  # from before driver_pid was written
    crashed = abandoned_status(tmp_path, "crashed")
    status = json.loads(crashed.read_text())
    status["people"][0]["stages"][1]["state"] = "crashed"  # its hint names the Ray logs: they stay
    crashed.write_text(json.dumps(status))
    broken = abandoned_status(tmp_path, "broken")
    broken.write_text(broken.read_text().replace('"stages"', '"stagez"'))
    abandoned_status(tmp_path, "not-ray", ray_session=str(tmp_path / "data"), ray_tmp=str(tmp_path / "data"))  # naming some other folder
    (tmp_path / "data" / "logs").mkdir(parents=True)

    assert close_abandoned(tmp_path / "batch", quiet_s=0) == ["crashed", "killed", "not-ray"]
    closed = json.loads(killed.read_text())
    assert closed["finished"] and closed["interrupted"]
    assert [s["state"] for s in closed["people"][0]["stages"]] == ["done", "done", "interrupted", "not run", "not run"]
    assert closed["people"][0]["stages"][3]["reason"] == "fit did not finish"
    assert not (tmp_path / "ray" / "session_killed").exists()
    assert not (tmp_path / "tmp" / "headshots-ray-killed").exists() and not (tmp_path / "tmp" / "headshots-ray-crashed").exists()
    assert (tmp_path / "ray" / "session_crashed").is_dir() and (tmp_path / "data").is_dir()
    for batch in ("running", "elsewhere", "old", "broken"):
        assert not json.loads((tmp_path / "batch" / batch / "status.json").read_text())["finished"]
        assert (tmp_path / "ray" / f"session_{batch}").is_dir()


def test_a_killed_batch_started_again_at_once_under_its_id_is_closed_first(people, tmp_path):
    """Run again under the same id within the quiet time (a person pressing up-arrow, a supervisor restarting the
    job): the new batch wrote its status.json over the killed one's, the only record of where that one's Ray logs
    (naming everyone) were, so they stayed for good. It closes that batch first, however fresh its file; a batch
    killed moments ago under another id waits out the quiet time as before."""
    again, other = abandoned_status(tmp_path, "nightly"), abandoned_status(tmp_path, "other")
    killed_session = json.loads(again.read_text())["ray_session"]
    status = run_batch(["nobody"], "tiny", [*people, f"paths.outputs_root={tmp_path}"], batch_id="nightly")
    assert [p["user"] for p in status["people"]] == ["nobody"]  # refused (no photos) before Ray: its own status
    assert not Path(killed_session).exists() and not (tmp_path / "tmp" / "headshots-ray-nightly").exists()
    assert not json.loads(other.read_text())["finished"] and (tmp_path / "ray" / "session_other").is_dir()


@pytest.mark.parametrize("args, message", [
    (["--users", "alice", "train.max_stepz=3"], "Unknown config key `train.max_stepz`"),
    (["train.max_stepz=3", "--users", "alice"], "Unknown config key `train.max_stepz`"),  # key=value between options
    (["--users", "alice", "infer.styles=[nosuchstyle]"], "Unknown style 'nosuchstyle'"),  # before anyone trains
    (["--users", "../etc"], "User name '../etc' is not allowed"),
    (["--users", "batch"], "User name 'batch' is reserved"),
    (["--users", "alice,bob,alice"], "'alice' is named twice in alice, bob, alice."),
    (["--users", "alice,Alice"], "'alice' and 'Alice' are one person: user names ignore case."),  # one folder on macOS, Windows
    (["--users", "Batch"], "User name 'Batch' is reserved"),
    (["--users", "alice", "--id", "../../escape"], "Batch id '../../escape' is not allowed"),
    (["--users", "alice", "--config", "{tmp}/my.yaml"], "Unknown config key `train.max_stepz`"),  # the file is read
])
def test_bad_input_stops_before_any_work_with_the_reason(args, message, tmp_path):
    (tmp_path / "my.yaml").write_text("train:\n  max_stepz: 3\n")
    args = [arg.format(tmp=tmp_path) for arg in args]
    result = subprocess.run([sys.executable, "-m", "service.batch", "--profile", "tiny", *args,
                             f"paths.outputs_root={tmp_path}"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "batch").exists()


def test_workers_get_the_drivers_settings_but_never_its_secrets():
    """A job's runtime_env is stored with it and shown on Ray's dashboard: HF_TOKEN and WANDB_API_KEY went there."""
    from service.batch import worker_env

    environ = {"HF_HOME": "/shared/hf", "HF_TOKEN": "hf_x", "WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline",
               "HEADSHOTS_FACE_WEIGHTS": "/w.pt", "PATH": "/bin", "HF_HUB_DISABLE_TELEMETRY": "1"}
    assert worker_env(environ) == {"HF_HOME": "/shared/hf", "WANDB_MODE": "offline", "HEADSHOTS_FACE_WEIGHTS": "/w.pt",
                                   "HF_HUB_DISABLE_TELEMETRY": "1"}
