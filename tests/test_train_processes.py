"""Training as separate processes, the way people run it: killed with SIGKILL and restarted,
and launched through `accelerate launch` on two CPU processes (gloo DDP)."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from headshots.stages import read_record, stage_named
from headshots.workspace import Workspace
from tests.conftest import REPO
from train.checkpoint import list_checkpoints
from train.lora import ADAPTER_FILE
from train.recipe import train


def _settings(cfg, *extra: str) -> list[str]:
    return ["--profile", "tiny", f"paths.data_root={cfg.paths.data_root}", f"paths.outputs_root={cfg.paths.outputs_root}",
            f"model.pretrained={cfg.model.pretrained}", "wandb.mode=disabled", *extra]


def _cli(cfg, *extra: str) -> list[str]:
    return ["--user", cfg.user, *_settings(cfg, *extra)]


def test_kill_9_then_same_command_finishes_with_identical_weights(prepared_user, make_config):
    steps = ["train.max_steps=24", "train.checkpoint_every=4"]  # killed at its first checkpoint, a step or two later
    reference = load_file(str(train(make_config("alice", "run=straight", *steps)) / ADAPTER_FILE))

    cfg = make_config("alice", "run=killed", *steps)
    command = [sys.executable, "-m", "train", "fit", *_cli(cfg, "run=killed", *steps)]
    checkpoints = Workspace.from_config(cfg).checkpoints_dir("killed")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list_checkpoints(checkpoints) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = list_checkpoints(checkpoints)[-1][0]
    assert 0 < killed_at < 24
    assert not Workspace.from_config(cfg).adapter_dir("killed").exists()

    rerun = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stderr and f"step {killed_at} of 24" in rerun.stderr
    result = load_file(str(Workspace.from_config(cfg).adapter_dir("killed") / ADAPTER_FILE))
    for key, value in reference.items():
        torch.testing.assert_close(result[key], value, rtol=0, atol=1e-6)


def test_two_process_ddp_ranks_end_identical(prepared_user, make_config, tmp_path):
    cfg = make_config("alice", "run=ddp")
    # torchrun-style launch of two processes; ACCELERATE_USE_CPU makes Accelerate use gloo DDP on CPUs.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train", "fit",
              *_cli(cfg, "run=ddp", "train.max_steps=4", "train.checkpoint_every=2", "train.lr_scheduler=linear",
                    "train.prior.enabled=true", "train.prior.num_images=4", "train.prior.sampling_steps=1")]
    # TMPDIR: torch's launcher makes a `torchelastic_*` folder in the temporary folder for every launch and leaves it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "TMPDIR": str(tmp_path)}
    result = subprocess.run(launch, check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("processes: 2") == 1  # said once, by the first process, not once per process
    assert "adapter weights identical on all 2 processes" in result.stderr
    # each process drew its share of the class images (2 of 4), rather than the first all 4 while the other waited at
    # a barrier, which NCCL ends after 10 minutes: 100 SDXL images on a slower GPU take longer
    assert re.findall(r"class images:\s+0%\|[^|]*\|\s+0/(\d+)", result.stderr) == ["2", "2"], result.stderr[-3000:]  # bars started
    assert (Workspace.from_config(cfg).adapter_dir("ddp") / ADAPTER_FILE).is_file()
    checkpoints = list_checkpoints(Workspace.from_config(cfg).checkpoints_dir("ddp"))
    assert [s for s, _ in checkpoints] == [2, 4]
    # the schedule counts training steps, not one per process: a training review resumed this run's step-2 checkpoint
    # on one process and found a linear schedule at its end (LR 0 for the remaining steps)
    schedule = torch.load(checkpoints[0][1] / "scheduler.bin", weights_only=False)
    assert schedule["last_epoch"] == 2 and schedule["_last_lr"][0] == pytest.approx(cfg.train.learning_rate / 2)


def test_the_web_apps_stop_ends_a_training_job_as_ctrl_c_does(prepared_user, make_config, tmp_path):
    """Stop sends the job's process SIGTERM: it ends the way Ctrl-C ends a command (the checkpoint kept, the records
    of what was done left true, "interrupted" in the job's log), not killed on the spot."""
    from service.jobs import STOPPED, JobQueue, job_command

    cfg = make_config("alice", "run=stopped")
    argv = job_command("train", "alice", _settings(cfg, "run=stopped", "train.max_steps=400", "train.checkpoint_every=2"))
    checkpoints = Workspace.from_config(cfg).checkpoints_dir("stopped")
    queue = JobQueue([None])
    try:
        job = queue.submit("alice", "train", argv, tmp_path / "train.log")
        deadline = time.time() + 300
        while not list_checkpoints(checkpoints) and time.time() < deadline and job.active:
            time.sleep(0.05)
        assert job.active, "training finished before it could be stopped"
        queue.stop("alice")
    finally:
        queue.close()
    log = (tmp_path / "train.log").read_text()
    assert job.state == STOPPED and "\ninterrupted: what was finished is kept" in log, log[-2000:]
    assert list_checkpoints(checkpoints) and not Workspace.from_config(cfg).adapter_dir("stopped").exists()
    assert f"(training goes on from step {list_checkpoints(checkpoints)[-1][0]}, its last checkpoint)" in log, log[-2000:]
    assert read_record(stage_named("prepare"), cfg) is not None and read_record(stage_named("fit"), cfg) is None
