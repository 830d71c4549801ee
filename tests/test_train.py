"""The training recipe on the tiny profile: finite loss, a loadable adapter that changes the
output, checkpoints that resume to exactly the same result."""

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from headshots.errors import HeadshotsError, WeightsError
from headshots.workspace import Workspace
from tests.conftest import held_elsewhere, wandb_records
from train.checkpoint import list_checkpoints
from train.lora import ADAPTER_FILE
from train.recipe import resolve_wandb_mode, train


def _sample(pipeline_dir, adapter_dir=None):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    if adapter_dir is not None:
        pipe.load_lora_weights(str(adapter_dir))
    return pipe(
        "a photo of ohwx person", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images


def test_train_saves_adapter_that_loads_and_changes_output(prepared_user, make_config, tiny_model):
    cfg = make_config("alice", "train.max_steps=6", "train.checkpoint_every=3")
    adapter = train(cfg)
    weights = load_file(str(adapter / ADAPTER_FILE))
    assert weights and all(k.startswith("unet.") for k in weights)
    assert all(torch.isfinite(v).all() for v in weights.values())
    meta = json.loads((adapter / "adapter.json").read_text())
    assert meta["headshots.trigger"] == "ohwx" and meta["headshots.rank"] == str(cfg.train.rank)
    assert (adapter / "config.yaml").is_file()

    base, tuned = _sample(tiny_model), _sample(tiny_model, adapter)
    assert abs(base - tuned).max() > 1e-4  # the adapter does something

    steps = [s for s, _ in list_checkpoints(Workspace.from_config(cfg).checkpoints_dir(cfg.run))]
    assert steps == [3, 6]


def test_resume_continues_from_checkpoint_to_the_same_weights(prepared_user, make_config):
    # Uninterrupted: 6 steps in one go.
    straight = make_config("alice", "run=straight", "train.max_steps=6", "train.checkpoint_every=2")
    reference = load_file(str(train(straight) / ADAPTER_FILE))

    # Interrupted after step 4, then the same command with the real target: it must pick up at 4.
    resumed = make_config("alice", "run=resumed", "train.max_steps=4", "train.checkpoint_every=2")
    train(resumed)
    resumed_full = make_config("alice", "run=resumed", "train.max_steps=6", "train.checkpoint_every=2")
    checkpoints = Workspace.from_config(resumed_full).checkpoints_dir("resumed")
    (checkpoints / "step-000006.tmp").mkdir()  # debris of a save killed half-way: must be ignored
    result = load_file(str(train(resumed_full) / ADAPTER_FILE))

    assert [s for s, _ in list_checkpoints(checkpoints)] == [4, 6]
    assert not (checkpoints / "step-000006.tmp").exists()
    for key, value in reference.items():
        torch.testing.assert_close(result[key], value, rtol=0, atol=1e-6)


def test_a_damaged_checkpoint_is_set_aside_and_training_goes_on_from_the_one_before(prepared_user, make_config, caplog):
    """A checkpoint cut short after it was saved (a full disk, a copy between machines) ended in a traceback from
    safetensors, json or torch's zip reader on every resume (new-user walk)."""
    reference = load_file(str(train(make_config("alice", "run=straight", "train.max_steps=6", "train.checkpoint_every=2")) / ADAPTER_FILE))
    checkpoints = Workspace.from_config(make_config("alice")).checkpoints_dir("damaged")
    for damaged in ("lora.safetensors", "optimizer.bin", "state.json"):
        train(make_config("alice", "run=damaged", "train.max_steps=4", "train.checkpoint_every=2"))
        file = checkpoints / "step-000004" / damaged
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        with caplog.at_level(logging.WARNING):
            result = load_file(str(train(make_config("alice", "run=damaged", "train.max_steps=6", "train.checkpoint_every=2")) / ADAPTER_FILE))
        assert f"cannot be read ({damaged}: " in caplog.text and "step-000004.unreadable" in caplog.text, caplog.text
        progress = json.loads((Workspace.from_config(make_config("alice")).run_dir("damaged") / "progress.json").read_text())
        assert progress["resumed_from"] == 2, damaged
        for key, value in reference.items():  # from step 2, to the uninterrupted run's weights
            torch.testing.assert_close(result[key], value, rtol=0, atol=1e-6)
        assert [s for s, _ in list_checkpoints(checkpoints)] == [4, 6] and not (checkpoints / "step-000004.unreadable").exists()
        shutil.rmtree(checkpoints.parent)  # the next damage starts from a new run
        caplog.clear()


def test_a_second_training_of_the_same_run_is_refused_while_one_runs(prepared_user, make_config, analyzer):
    """A web app restarted while its training job still ran offered Train again, and both trained the same folder
    (the step count went backwards). Whoever starts the second one is told instead; and a `make train` beside a
    batch's training, of this run or another of hers, must not prepare the photos again under it."""
    from train.checkpoint import TRAIN_LOCK
    from train.prepare import prepare

    cfg = make_config("alice", "train.max_steps=1")
    run_dir = Workspace.from_config(cfg).run_dir(cfg.run)
    run_dir.mkdir(parents=True, exist_ok=True)
    with held_elsewhere(run_dir / TRAIN_LOCK):
        for work, said in ((train, "alice is being trained already"),
                           (lambda cfg: prepare(cfg, analyzer), "alice's photos cannot be prepared again while run 'default' trains")):
            with pytest.raises(HeadshotsError, match=said) as refused:
                work(cfg)
            assert "Wait for that training to finish" in refused.value.hint
    # the prepared photos are the person's, for every run: another run training on them refuses a prepare too
    long_run = Workspace.from_config(make_config("alice", "run=long")).run_dir("long")
    long_run.mkdir(parents=True)
    with held_elsewhere(long_run / TRAIN_LOCK), pytest.raises(HeadshotsError, match="prepared again while run 'long' trains"):
        prepare(cfg, analyzer)
    # and a training starting while they are prepared is refused (it would fingerprint one dataset, train on another)
    with held_elsewhere(Workspace.from_config(cfg).prepare_lock), pytest.raises(HeadshotsError, match="photos are being prepared"):
        train(cfg)
    assert not Workspace.from_config(cfg).checkpoints_dir(cfg.run).exists()
    assert (train(cfg) / ADAPTER_FILE).is_file()  # the holders gone, training goes ahead


def test_fewer_steps_than_a_run_has_trained_are_refused_not_mislabelled(prepared_user, make_config):
    """A batch run without the ARGS that trained to 300 steps asked for the profile's 30: the run resumed from step 300,
    did "no more steps" and exported the 300-step weights labelled 30."""
    train(make_config("alice", "train.max_steps=2", "train.checkpoint_every=1"))
    with pytest.raises(HeadshotsError, match="has trained 2 steps already: train.max_steps=1 cannot take them back") as refused:
        train(make_config("alice", "train.max_steps=1"))
    assert "RUN=default-1" in refused.value.hint and "make train USER=alice PROFILE=tiny ARGS=train.max_steps=2" in refused.value.hint


def test_the_same_training_exported_again_writes_the_same_metadata(make_config, tmp_path):
    """`make train` after a batch trained the person exports the adapter again: with the batch's W&B group and
    absolute paths in its metadata, the file's digest changed, and the batch drew a whole round of images again."""
    from train.recipe import adapter_metadata

    cli = make_config("alice", "infer.styles=[actor]")
    batch = make_config("alice", "wandb.group=batch-20261205", f"paths.cache_root={tmp_path / 'elsewhere'}")
    assert adapter_metadata(cli) == adapter_metadata(batch)
    assert adapter_metadata(cli) != adapter_metadata(make_config("alice", "train.rank=8"))
    # a run resumed at its last step for another checkpoint or validation setting exports the same weights
    assert adapter_metadata(cli) == adapter_metadata(make_config("alice", "train.keep_checkpoints=3", "train.validation.every=5"))
    assert adapter_metadata(cli) != adapter_metadata(make_config("alice", "train.max_steps=7"))


def test_an_adapter_exported_again_unchanged_keeps_its_digest(prepared_user, make_config):
    """The safetensors library writes a header's metadata in another order at each save, so a run resumed at its last
    step (a new checkpoint setting) exported an adapter with another file digest, and the chain, which names its
    rounds after that digest, drew a whole round of images again. The digest reads the header as JSON."""
    from headshots.workspace import file_digest

    cfg = make_config("alice", "train.max_steps=2", "train.checkpoint_every=1")
    adapter = train(cfg) / ADAPTER_FILE
    trained = file_digest(adapter)
    again = train(make_config("alice", "train.max_steps=2", "train.checkpoint_every=1", "train.keep_checkpoints=3")) / ADAPTER_FILE
    assert file_digest(again) == trained
    weights = load_file(str(again))
    weights[next(iter(weights))] += 0.01
    save_file(weights, str(again), metadata=safe_open(str(again), "pt").metadata())
    assert file_digest(again) != trained


def test_a_fresh_start_forgets_the_best_adapter_of_a_run_stopped_before_its_first_checkpoint(prepared_user, make_config):
    """A training review: a run stopped before its first checkpoint kept its best adapter and validation history, and a
    later run on other settings without validation (which would have replaced them) left them beside its own adapter,
    for infer.adapter=best to draw with."""
    cfg = make_config("alice", "train.max_steps=1", "train.learning_rate=5e-4")
    ws = Workspace.from_config(cfg)
    ws.best_adapter_dir(cfg.run).mkdir(parents=True)
    (ws.best_adapter_dir(cfg.run) / "pytorch_lora_weights.safetensors").write_bytes(b"the stopped run's best")
    ws.validation(cfg.run).write_text('{"best": {"step": 100}}')
    train(cfg)
    assert not ws.best_adapter_dir(cfg.run).exists() and not ws.validation(cfg.run).exists()


def test_photos_prepared_smaller_than_the_profile_trains_at_are_refused_before_any_model_loads(prepared_user, make_config,
                                                                                                monkeypatch):
    """A training review: photos prepared on the tiny profile (128 px), then `train fit` alone at a larger resolution,
    trained on every crop enlarged, without a word."""
    monkeypatch.setattr("train.recipe.load_components", lambda *args: pytest.fail("a model was loaded"))
    with pytest.raises(HeadshotsError, match="alice's photos were prepared at 128 px, and this profile trains at 256 px") as refused:
        train(make_config("alice", "model.resolution=256"))
    assert "make prepare USER=alice" in refused.value.hint


def test_a_warm_up_under_a_constant_schedule_is_said_to_do_nothing(prepared_user, make_config, caplog):
    """A training review: train.lr_warmup_steps was ignored without a word under the default constant schedule. A warning,
    not a refusal: adapters trained with it load as before. (Stopped early by a resolution the photos were not prepared at.)"""
    with pytest.raises(HeadshotsError, match="prepared at 128 px"):
        train(make_config("alice", "train.lr_warmup_steps=50", "model.resolution=256"))
    assert "train.lr_warmup_steps=50 does nothing under train.lr_scheduler=constant" in caplog.text


def test_nan_loss_stops_with_a_clear_message(prepared_user, make_config):
    from headshots.errors import HeadshotsError

    cfg = make_config("alice", "run=nan", "train.max_steps=3", "train.learning_rate=1e30")
    with pytest.raises(HeadshotsError, match="loss became"):
        train(cfg)
    assert not Workspace.from_config(cfg).adapter_dir("nan").exists()


@pytest.mark.parametrize("optimizer", ["adamw8bit", "prodigy"])
def test_other_optimizers_train(prepared_user, make_config, optimizer):
    lr = "1.0" if optimizer == "prodigy" else "1e-3"
    cfg = make_config("alice", f"run={optimizer}", "train.max_steps=2", f"train.optimizer={optimizer}",
                      f"train.learning_rate={lr}", "train.min_snr_gamma=5.0", "train.noise_offset=0.05")
    assert (train(cfg) / ADAPTER_FILE).is_file()


def test_wandb_offline_writes_local_run_files(prepared_user, make_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the suite's default, disabled, would win over the config
    cfg = make_config("alice", "run=logged", "train.max_steps=2", "wandb.mode=offline")
    train(cfg)
    runs = list(Workspace.from_config(cfg).wandb_dir("logged").rglob("offline-run-*"))
    assert runs, "wandb offline run folder expected"
    assert b"train/loss" in wandb_records(runs[0], b"train/loss")  # the steps' records written: what is sent is all there
    recorded = b"".join(f.read_bytes() for f in runs[0].rglob("*") if f.is_file())
    assert b"learning_rate" in recorded and cfg.paths.data_root.encode() not in recorded  # settings, not where photos are
    # nor anything W&B records by default in what a sync sends (the run's record and files/; logs/ stay here): the
    # console (log lines with the person's folders), the interpreter's path, the command line, the git remote
    sent = b"".join(f.read_bytes() for f in [*runs[0].glob("*.wandb"), *runs[0].rglob("files/**/*")] if f.is_file())
    assert not list(runs[0].rglob("output.log")) and not list(runs[0].rglob("wandb-metadata.json"))
    for said in (str(cfg.paths.outputs_root), sys.executable, "adapter saved", str(Path.cwd()), "--user"):
        assert said.encode() not in sent, said


def test_pictures_of_the_person_go_online_only_when_asked_in_so_many_words(make_config):
    """A W&B key kept for other work turns `auto` online for metrics; training sent its validation images there."""
    from headshots.config import images_to_wandb

    for mode, run_mode, sent in (("auto", "online", False), ("auto", "offline", True), ("online", "online", True),
                                 ("offline", "offline", True), ("online", None, False)):
        assert images_to_wandb(make_config("alice", f"wandb.mode={mode}", "wandb.log_images=true"), run_mode) is sent
    assert not images_to_wandb(make_config("alice", "wandb.mode=online"), "online")  # log_images defaults to false


def test_kohya_export_loads_in_diffusers_like_the_diffusers_file(prepared_user, make_config, tiny_model):
    """The lora_unet_* file goes through diffusers' own kohya conversion and gives the same image,
    with alpha != rank so a wrong scale would show; both files carry the metadata."""
    from train.lora import KOHYA_FILE

    cfg = make_config("alice", "run=kohya", "train.max_steps=2", "train.rank=4", "train.alpha=2")
    adapter = train(cfg)
    kohya_keys = load_file(str(adapter / KOHYA_FILE))
    assert all(k.startswith("lora_unet_") for k in kohya_keys)
    assert {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in kohya_keys} >= {"lora_down.weight", "lora_up.weight"}
    assert all(float(v) == 2.0 for k, v in kohya_keys.items() if k.endswith(".alpha"))
    for name in (ADAPTER_FILE, KOHYA_FILE):
        with safe_open(str(adapter / name), framework="pt") as handle:
            meta = handle.metadata()
        assert meta["headshots.trigger"] == "ohwx" and meta["headshots.base_model"] == str(tiny_model)
        assert len(meta["headshots.config_sha256"]) == 64

    from diffusers import StableDiffusionXLPipeline

    def sample(weights_file):
        pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(str(adapter), weight_name=weights_file)
        return pipe("a photo of ohwx person", num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    base = _sample(tiny_model)
    from_diffusers, from_kohya = sample(ADAPTER_FILE), sample(KOHYA_FILE)
    assert abs(base - from_diffusers).max() > 1e-4
    assert abs(from_diffusers - from_kohya).max() < 1e-4


def test_caching_changes_speed_not_result(prepared_user, make_config):
    cached = load_file(str(train(make_config("alice", "run=cached", "train.max_steps=3")) / ADAPTER_FILE))
    live = load_file(str(train(make_config("alice", "run=live", "train.max_steps=3", "train.cache_encodings=false")) / ADAPTER_FILE))
    for key, value in cached.items():
        torch.testing.assert_close(live[key], value, rtol=1e-4, atol=1e-6)


def test_face_weight_map_emphasises_the_face_and_keeps_the_loss_scale():
    from train.cache import face_weight_map

    weights = face_weight_map(torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]]), 8, 8, face_weight=3.0)
    assert weights.shape == (2, 1, 8, 8)
    torch.testing.assert_close(weights.mean(dim=(1, 2, 3)), torch.ones(2))
    assert weights[0, 0, 4, 4] == 3 * weights[0, 0, 0, 0]  # face 3x the background
    torch.testing.assert_close(weights[1], torch.ones(1, 8, 8))  # face fills the crop: plain MSE


def test_face_weighted_loss_trains(prepared_user, make_config):
    cfg = make_config("alice", "run=face", "train.max_steps=2", "train.face_loss_weight=3.0")
    assert (train(cfg) / ADAPTER_FILE).is_file()


def test_new_training_settings_start_afresh_instead_of_resuming_the_finished_run(prepared_user, make_config, caplog):
    first = make_config("alice", "run=changed", "train.max_steps=2", "train.checkpoint_every=2")
    old = load_file(str(train(first) / ADAPTER_FILE))
    ws = Workspace.from_config(first)
    progress = ws.run_dir("changed") / "progress.json"
    progress.unlink()  # written only by steps that ran: gone unless the second run trains again

    # A mistyped setting changes the inputs too, but fails before anything of the finished run is deleted
    checkpoints = sorted(ws.checkpoints_dir("changed").iterdir())
    settings = (ws.run_dir("changed") / "config.yaml").read_text()
    with pytest.raises(WeightsError, match="there is no such folder"):  # said plainly, not the hub's repo-id rules
        train(make_config("alice", "run=changed", "train.max_steps=2", "model.pretrained=/no/such/model"))
    assert sorted(ws.checkpoints_dir("changed").iterdir()) == checkpoints
    assert (ws.adapter_dir("changed") / ADAPTER_FILE).is_file()
    assert (ws.run_dir("changed") / "config.yaml").read_text() == settings

    changed = make_config("alice", "run=changed", "train.max_steps=2", "train.checkpoint_every=2", "train.learning_rate=0.003")
    new = load_file(str(train(changed) / ADAPTER_FILE))
    assert "starting run 'changed' afresh (its adapter stays until this run's replaces it)" in caplog.text
    assert json.loads(progress.read_text())["resumed_from"] == 0
    assert any((new[k] - old[k]).abs().max() > 1e-6 for k in old), "the old run's adapter was exported again"


def test_a_run_resumes_with_checkpointing_turned_on_and_encodings_no_longer_cached(prepared_user, make_config):
    """How a run computes is not what it learns: turned on to fit a smaller GPU after a run was stopped, gradient
    checkpointing started the run afresh (its inputs' digest held every training setting)."""
    train(make_config("alice", "run=recompute", "train.max_steps=2", "train.checkpoint_every=2"))
    progress = Workspace.from_config(make_config("alice")).run_dir("recompute") / "progress.json"
    train(make_config("alice", "run=recompute", "train.max_steps=3", "train.checkpoint_every=2",
                      "train.gradient_checkpointing=true", "train.cache_encodings=false"))
    assert json.loads(progress.read_text())["resumed_from"] == 2


@pytest.mark.slow  # inductor compiles the tiny UNet's forward and backward on the CPU: one to five minutes on 2 cores
def test_compiled_training_reaches_the_eager_weights_and_saves_plain_keys_and_resumes_without_compile(prepared_user, make_config):
    """Compiled for two steps, then stopped and resumed without torch.compile for the third (train.compile is how
    it computes, TRAIN_COMPUTE_KEYS): the run continues from its compiled checkpoint, to the eager run's weights."""
    eager = {steps: load_file(str(train(make_config("alice", f"run=eager{steps}", f"train.max_steps={steps}")) / ADAPTER_FILE))
             for steps in (2, 3)}
    adapter = train(make_config("alice", "run=compiled", "train.max_steps=2", "train.checkpoint_every=2", "train.compile=true"))
    compiled = load_file(str(adapter / ADAPTER_FILE))
    assert compiled.keys() == eager[2].keys()  # no "_orig_mod." from the compile wrapper
    for key, value in eager[2].items():
        torch.testing.assert_close(compiled[key], value, rtol=0, atol=1e-4)
    assert (adapter / "lora_kohya.safetensors").is_file()
    resumed = load_file(str(train(make_config("alice", "run=compiled", "train.max_steps=3", "train.checkpoint_every=2")) / ADAPTER_FILE))
    progress = Workspace.from_config(make_config("alice")).run_dir("compiled") / "progress.json"
    assert json.loads(progress.read_text())["resumed_from"] == 2
    for key, value in eager[3].items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-4)


def test_wandb_follows_its_own_switches_in_the_environment(monkeypatch):
    """A W&B key kept for other work turned `auto` online over WANDB_MODE=offline, and any mode ignored
    WANDB_DISABLED (privacy walk: a run posted to W&B's server with WANDB_MODE=offline set). The stricter wins."""
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    for env, auto, online in ((("WANDB_MODE", "offline"), "offline", "offline"), (("WANDB_MODE", "disabled"), None, None),
                              (("WANDB_DISABLED", "true"), None, None), (("WANDB_MODE", "online"), "online", "online")):
        for switch in ("WANDB_MODE", "WANDB_DISABLED"):
            monkeypatch.delenv(switch, raising=False)
        monkeypatch.setenv(*env)
        assert (resolve_wandb_mode("auto"), resolve_wandb_mode("online")) == (auto, online), env
        assert resolve_wandb_mode("disabled") is None


def test_a_wandb_key_is_found_where_wandb_itself_looks(monkeypatch, tmp_path):
    """`auto` looked for "api.wandb.ai" in ~/.netrc alone: a key in the file NETRC names, or one for a W&B server of
    the team's own (WANDB_BASE_URL), left runs offline with no word (a code review)."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_wandb_mode("auto") == "offline"  # no file
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'a1' * 20}\n")
    netrc.chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # the team's own server: no key for it
    assert resolve_wandb_mode("auto") == "offline"
    netrc.write_text(f"machine wandb.example.com\n  login user\n  password {'b2' * 20}\n")
    assert resolve_wandb_mode("auto") == "online"
    netrc.write_text("machine wandb.example.com\n  login user\n  password short\n")  # malformed: wandb refuses it
    assert resolve_wandb_mode("auto") == "offline"


def test_under_prodigy_every_parameter_group_takes_its_multiplier():
    """Prodigy multiplies its one step-size estimate by the groups' rate, which must be the same in every group: the
    token vectors' embedding_lr (1e-3) left them frozen there (an ML review), as diffusers' advanced DreamBooth script
    knows. Other optimizers take each group's own rate."""
    from headshots.config import load_config
    from train.recipe import make_optimizer, parameter_groups
    from train.text import TextSide

    unet, lora, tokens = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    text = TextSide(text_encoders=[], lora_params=[lora], embeddings=[tokens], tokens=["<s0>"])
    prodigy = load_config("alice", "tiny", overrides=["train.optimizer=prodigy", "train.learning_rate=1.0"]).train
    groups = parameter_groups([unet], text, prodigy)
    assert [group["lr"] for group in groups] == [1.0, 1.0, 1.0]
    assert make_optimizer(groups, prodigy).defaults["use_bias_correction"]  # as its authors advise for diffusion
    adamw = load_config("alice", "tiny").train
    assert [group["lr"] for group in parameter_groups([unet], text, adamw)] == [adamw.learning_rate, 5e-6, adamw.embedding_lr]
    same = load_config("alice", "tiny", overrides=["train.text_encoder_lr=null"]).train
    assert parameter_groups([unet], text, same)[1]["lr"] == same.learning_rate
