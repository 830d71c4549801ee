import subprocess
import sys
from pathlib import Path

import pytest

from headshots.config import load_config
from headshots.errors import ConfigError, HeadshotsError
from headshots.workspace import ADAPTER_WEIGHTS, Workspace
from tests.conftest import REPO


def test_defaults_compose_base_profile_and_overrides():
    cfg = load_config("alice", "tiny", overrides=["train.max_steps=7", "infer.styles=[actor,linkedin]"])
    assert cfg.model.pretrained == "models/tiny-sdxl"
    assert cfg.train.max_steps == 7
    assert cfg.infer.styles == ["actor", "linkedin"]
    assert load_config("alice").model.pretrained == "stabilityai/stable-diffusion-xl-base-1.0"


def test_base_yaml_says_the_schemas_defaults():
    """configs/base.yaml is what people read for the common settings; headshots/config.py declares every key with its
    default. Where both give a value they must agree, or the YAML would quietly win over what the code documents."""
    from omegaconf import OmegaConf

    from headshots.config import CONFIG_DIR, Config

    def differences(yaml: dict, schema: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in yaml.items():
            if isinstance(value, dict):
                found += differences(value, schema[key], f"{prefix}{key}.")
            elif value != schema[key]:
                found.append(f"{prefix}{key}: base.yaml {value!r}, config.py {schema[key]!r}")
        return found

    schema = OmegaConf.to_container(OmegaConf.structured(Config))
    assert differences(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "base.yaml")), schema) == []


def test_mixed_precision_no_survives_yaml_booleans():
    assert load_config("alice", overrides=["train.mixed_precision=no"]).train.mixed_precision == "no"


def test_user_yaml_is_layered(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("prepare:\n  class_noun: woman\ntrain:\n  rank: 8\n")
    cfg = load_config("alice", "tiny", extra, ["train.rank=32"])
    assert (cfg.prepare.class_noun, cfg.train.rank) == ("woman", 32)


def test_an_edited_profile_is_read_again_and_no_loaded_config_changes_the_remembered_one(tmp_path, monkeypatch):
    """The project's own YAML files are parsed once per version (config._our_yaml): a long-running web app must
    still see an edit made while it runs, and a config one caller changes must not reach the next caller."""
    import os
    import shutil

    from headshots import config

    shutil.copytree(config.CONFIG_DIR, tmp_path / "configs")
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path / "configs")
    profile = tmp_path / "configs" / "model" / "tiny.yaml"
    first = load_config("alice", "tiny")
    assert first.train.max_steps == 30
    first.train.max_steps = 99  # a caller's own copy
    assert load_config("alice", "tiny").train.max_steps == 30

    mtime = profile.stat().st_mtime_ns
    profile.write_text(profile.read_text().replace("max_steps: 30", "max_steps: 40"))  # same size: only the time differs
    os.utime(profile, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))  # a coarse clock may not have moved yet
    assert load_config("alice", "tiny").train.max_steps == 40


def test_a_persons_own_settings_are_layered_and_kept_to_their_few_keys(tmp_path):
    """data/users/<u>/settings.yaml: each person's styles, count, class noun and own background or clothing (what a
    batch runs for each), over the run's config files, under the command line; nothing else, and only plain text."""
    data = tmp_path / "data"
    (data / "alice").mkdir(parents=True)
    mine = data / "alice" / "settings.yaml"
    where = [f"paths.data_root={data}"]
    mine.write_text("prepare:\n  class_noun: woman\ninfer:\n  styles: [doctor, actor]\n  images_per_style: 8\n"
                    "  style_overrides:\n    background: plain light grey studio wall\n")
    cfg = load_config("alice", "tiny", overrides=where)
    assert (cfg.prepare.class_noun, cfg.infer.styles, cfg.infer.images_per_style) == ("woman", ["doctor", "actor"], 8)
    assert dict(cfg.infer.style_overrides) == {"background": "plain light grey studio wall"}
    assert load_config("alice", "tiny", overrides=[*where, "infer.styles=[linkedin]"]).infer.styles == ["linkedin"]
    assert load_config("bob", "tiny", overrides=where).infer.styles == ["linkedin", "corporate", "executive"]

    for text, message in (("paths:\n  data_root: /etc\n", "`paths.data_root` is not something one person's settings may set"),
                          ("model:\n  pretrained: someone/else\n", "`model.pretrained` is not something"),
                          ("infer:\n  styles: [../../secrets.yaml]\n", "must name one of the styles"),
                          ("infer:\n  styles: [actr]\n", "is 'actr': it must name one of the styles in configs/styles/ \\(actor,"),
                          ("infer:\n  style_overrides: {background: '${oc.env:HOME}'}\n", "must be plain words"),
                          ("prepare:\n  class_noun: 'x: [y]'\n", "must be plain words"),
                          ("prepare:\n  keep_rejected: [../bob/selfies/01.jpg]\n", "must be the file name of one of your photos"),
                          ("infer:\n  styles: [doctor\n", "Your settings file .* is not valid YAML"),
                          ("infer:\n  styles: doctor\n", "`infer.styles` takes a list, even of one"),
                          # said as written, with the key meant; a value a section refuses names the file too
                          ("infer:\n  stylez: [linkedin]\n", "`infer.stylez` is not something .* \\(did you mean `infer.styles`\\?\\)"),
                          ("infer:\n  images_per_style: 0\n", "`infer.images_per_style` must be at least 1"),
                          ("42\n", "holds a single value, not settings"), ("- styles\n", "holds a list, not settings")):
        mine.write_text(text)
        with pytest.raises(ConfigError, match=message) as refused:
            load_config("alice", "tiny", overrides=where)
        assert str(mine) in refused.value.message
    mine.write_text("infer:\nprepare:\n  class_noun: woman\n")  # an empty section sets nothing
    assert load_config("alice", "tiny", overrides=where).prepare.class_noun == "woman"
    assert load_config("alice", "tiny", overrides=where, with_person_settings=False).paths.data_root == str(data)


@pytest.mark.parametrize(
    "override, names",
    [
        ("train.max_stpes=5", "train.max_stpes"),  # misspelt key
        ("train.max_steps=many", "train.max_steps"),  # wrong type
        ("train.optimizer=sgd", "train.optimizer"),  # value not allowed
        ("train.mixed_precision=fp8", "train.mixed_precision"),
        ("model.resolution=100", "model.resolution"),
        ("filter.threshold=3", "filter.threshold"),
        ("prepare.trigger=two words", "prepare.trigger"),
        ("infer.styles=linkedin", "`infer.styles` takes a list, even of one: infer.styles=[a,b]"),
        ("infer.discard_files=[*]", "The value of infer.discard_files cannot be read: '[*]'"),  # make discard IMAGES='*'
        ("infer.styles=[linkedin", "The value of infer.styles cannot be read"),
        ("infer.discard_files=[[linkedin-00.png]]", "`infer.discard_files` must be names separated by commas"),
        ("infer.export_files=[{a}]", "`infer.export_files` must be names separated by commas"),
        # bad-input walk: a traceback (a merge of a list into a section), a key named `None`, an inf that trained to nan
        ("train=[1]", "`train` is a section of settings, not one value"),
        ("intake=3", "`intake` is a section of settings, not one value"),
        ("train.learning_rate=inf", "`train.learning_rate` must be a positive number (inf trains to nan)"),
        ("intake.max_roll=nan", "Config key `intake.max_roll` is nan"),
        ("model=${train}", "Invalid type assigned"),  # an interpolation is resolved at load: an error, not a traceback
        ("intake.min_photos=-2", "is -2: it must be at least 1 and at most intake.good_photos (10)"),  # the values said
        ("max_roll=20", "Unknown config key `max_roll`: did you mean `intake.max_roll`?"),  # the section left out
        # a code review: values that loaded and trained silently wrong (a negative clip norm climbs the loss), or
        # reached torch as a traceback
        ("train.max_grad_norm=-1", "`train.max_grad_norm` is -1.0; it must be positive (inf: no clipping)"),
        ("train.max_grad_norm=0", "`train.max_grad_norm` is 0.0; it must be positive"),
        ("train.weight_decay=-5", "`train.weight_decay` must be a number >= 0"),
        ("train.embedding_lr=inf", "`train.embedding_lr` must be a positive number"),
        ("infer.guidance_scale=-3", "`infer.guidance_scale` must be a number >= 0"),
        ("infer.lora_scale=inf", "`infer.lora_scale` must be a number >= 0"),
        ("infer.detail.guidance_scale=-1", "`infer.detail.guidance_scale` must be a number >= 0"),
        ("train.validation.guidance_scale=-1", "`train.validation.guidance_scale` must be a number >= 0"),
        ("device=gpu", "`device` is 'gpu'; expected auto, cpu, cuda or cuda:N"),
        ("train.optimizer=prodigy", "`train.learning_rate` is 0.001, a multiplier of Prodigy's own step size"),
        ("prepare.min_photos=7", "`prepare.min_photos` is 7, more than intake.min_photos (5): intake would call a set usable"),
        # a privacy review: bare tracebacks (OmegaConf's TypeError, pathlib's RuntimeError), in purge too
        ("infer.styles[5]=x", "`infer.styles` is a list, set whole: 'infer.styles[5]=x'"),
        ("infer.styles.1=x", "`infer.styles` is a list, set whole"),
        ("paths.cache_root=~nosuchuser/x", "`paths.cache_root` (~nosuchuser/x) starts with a home folder this machine does not know"),
        # a training review: a text filled by str.format with a name it does not fill stopped with a bare KeyError (a
        # validation prompt's only after the steps before it trained); a min-SNR gamma of 0 trained nothing, "done"
        ("train.validation.prompts=['photo of {trigger} {class_noun} in {city}']", "names {city}; it may name only {trigger}, {class_noun}"),
        ("train.prior.prompt='a photo of a {classnoun}'", "`train.prior.prompt` ('a photo of a {classnoun}') names {classnoun}"),
        ("prepare.caption='a photo of {trigger'", "`prepare.caption` ('a photo of {trigger') cannot be filled in"),
        ("prepare.caption='a photo of {class_noun}'", "must contain {trigger}"),
        ("train.min_snr_gamma=0", "`train.min_snr_gamma` must be a positive number (5 is usual), or null"),
        ("train.min_snr_gamma=-5", "`train.min_snr_gamma` must be a positive number"),
        ("app.sign_in_lockout_s=0", "`app.sign_in_lockout_s` must be a number of seconds above 0"),
        ("app.sign_in_idle_s=inf", "`app.sign_in_idle_s` must be a number of seconds above 0"),
        ("app.max_failed_sign_ins=0", "`app.max_failed_sign_ins` must be at least 1"),
    ],
)
def test_bad_config_fails_at_load_naming_the_key(override, names):
    with pytest.raises(ConfigError) as err:
        load_config("alice", "tiny", overrides=[override])
    assert names in str(err.value)


def test_photos_outputs_and_cache_each_need_their_own_folder(tmp_path, capsys):
    """With outputs_root = data_root, outputs/<user>/ is the person's photo folder, and `make purge` (which keeps
    the photos) would delete them: refused at load, before anything runs, so the photos stay."""
    from service.purge import main

    photo = tmp_path / "data" / "dana" / "selfies" / "01.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"a selfie")
    assert main(["--user", "dana", f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'data'}"]) != 0
    assert "paths.data_root" in capsys.readouterr().err and photo.read_bytes() == b"a selfie"
    for overrides, message in ((["paths.cache_root=outputs/cache"], "inside paths.outputs_root"),
                               ([f"paths.data_root={tmp_path}/o/users", f"paths.outputs_root={tmp_path}/o"], "inside paths.outputs_root")):
        with pytest.raises(ConfigError, match=message):
            load_config("alice", "tiny", overrides=overrides)
    load_config("alice", "tiny", overrides=[f"paths.data_root={tmp_path}/o-data", f"paths.outputs_root={tmp_path}/o"])  # siblings


def test_inf_is_no_limit_where_a_limit_may_be_off():
    """inf means "no limit" for a clipping norm or an intake limit; only where it is nonsense is it refused (review)."""
    cfg = load_config("alice", "tiny", overrides=["train.max_grad_norm=inf", "intake.max_backlight=inf"])
    assert cfg.train.max_grad_norm == float("inf") and cfg.intake.max_backlight == float("inf")


def test_a_config_file_that_is_not_settings_is_named(tmp_path):
    """A file whose top level is a list ended in a TypeError traceback; a folder or /dev/null was said not to exist."""
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    for path, message in ((listed, "holds a list, not settings"), (tmp_path, "is not a file"), (Path("/dev/null"), "is not a file")):
        with pytest.raises(ConfigError, match=message):
            load_config("alice", "tiny", config_file=str(path))


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("alice", overrides=["train.max_steps"])


def test_unknown_profile_lists_available():
    with pytest.raises(ConfigError, match="tiny"):
        load_config("alice", "huge")
    with pytest.raises(ConfigError, match="a profile is a name, not a path"):  # not any YAML file on the disk
        load_config("alice", "../model/tiny")


@pytest.mark.parametrize("user", ["../x", "a/b", "", ".hidden", "x" * 65, "al ice", "~root", "CON", "Nul", "com1"])
def test_unsafe_user_names_are_refused(user):
    with pytest.raises(ConfigError, match="not allowed"):
        load_config(user)


def test_a_missing_or_empty_selfie_folder_says_what_to_add(make_config):
    cfg = make_config("bob")
    with pytest.raises(HeadshotsError, match="No selfie folder") as err:
        Workspace.from_config(cfg).require_selfies()
    assert "photos of bob" in err.value.hint
    ws = Workspace.from_config(make_config("bob", "intake.min_photos=4", "intake.good_photos=8"))
    ws.selfies.mkdir(parents=True)
    with pytest.raises(HeadshotsError, match="is empty") as err:
        ws.require_selfies()
    assert "Add 4-16 recent photos" in err.value.hint  # the advice follows the limits intake judges by
    with pytest.raises(HeadshotsError, match="No selfie folder for user 'bobb'") as err:  # a name mistyped
        Workspace.from_config(make_config("bobb")).require_selfies()
    assert err.value.hint.startswith("Did you mean bob? If not: Create it and put")
    (ws.user_dir / "04.jpg").write_bytes(b"a photo put beside the folder it belongs in")
    (ws.user_dir / "settings.yaml").write_text("infer:\n  images_per_style: 2\n")  # not a photo to move (review)
    ws.selfies.rmdir()
    with pytest.raises(HeadshotsError, match="No selfie folder") as err:
        ws.require_selfies()
    assert err.value.hint == f"Create it and move the 1 file in {ws.user_dir} into it (04.jpg)."
    ws.selfies.write_bytes(b"not a folder")  # it was said not to exist
    with pytest.raises(HeadshotsError, match="selfies is a file, not a folder of photos"):
        ws.require_selfies()


def test_a_name_that_differs_from_a_persons_folder_only_in_case_is_refused(make_config):
    """"Alice" and "alice" were two people's folders on Linux and one on macOS and Windows: either one person with two
    accounts unawares, or two people sharing photos. A name is refused where a folder differs from it only in case."""
    alice = Workspace.from_config(make_config("alice"))
    alice.selfies.mkdir(parents=True)
    (alice.outputs_root / "alice").mkdir(parents=True)
    with pytest.raises(HeadshotsError, match="'Alice' differs from 'alice' only in case") as err:
        Workspace.from_config(make_config("Alice"))
    assert err.value.hint == "Use the name 'alice' if that is you; otherwise pick another."  # make, batch or web app alike
    assert Workspace.from_config(make_config("alice")).user == "alice"
    # two made on Linux before the check: each is its owner's, reachable (and deletable) by its exact name, in either
    # root (Alice's photos folder, beside alice's photos and outputs, was refused for the outputs one: a batch walk)
    (alice.data_root / "Alice").mkdir()
    assert Workspace.from_config(make_config("Alice")).user == "Alice"


def test_a_run_without_an_adapter_names_the_runs_that_have_one(make_config):
    """`make infer RUN=secnod` said only "Train one first", where the person has trained another run (a new user's walk)."""
    ws = Workspace.from_config(make_config("alice"))
    for run in ("default", "second"):
        (ws.adapter_dir(run)).mkdir(parents=True)
        (ws.adapter_dir(run) / ADAPTER_WEIGHTS).write_bytes(b"weights")
    with pytest.raises(HeadshotsError, match="No trained adapter for user 'alice', run 'secnod'") as err:
        ws.require_adapter("secnod")
    assert err.value.hint.endswith("(runs of alice with an adapter: default, second; choose one with RUN=)"), err.value.hint


def test_hints_name_the_run_and_profile_the_person_used():
    """A hint's `make` command must reach the same files: `make train USER=alice` alone would train the default run."""
    other = Workspace.from_config(load_config("alice", "tiny", overrides=["run=second"]))
    with pytest.raises(HeadshotsError) as err:
        other.require_adapter("second")
    assert err.value.hint == "Train one first: make train USER=alice RUN=second PROFILE=tiny"
    assert Workspace.from_config(load_config("alice")).make_command("discard", IMAGES="a.png") == "make discard USER=alice IMAGES=a.png"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["prepare", "--user", "../x"], "not allowed"),
        (["fit", "--user", "alice", "train.nope=1"], "Unknown config key `train.nope`."),
        (["fit", "--user", "alice", "train.max_step=5"], "Unknown config key `train.max_step`: did you mean `train.max_steps`?"),
        (["fit", "--user", "alice", "train.max_steps=five"], "Config key `train.max_steps` takes a whole number, not 'five'."),
        (["fit", "--user", "alice", "train.lr=1e-4"], "Unknown config key `train.lr`: did you mean `train.learning_rate`?"),
        (["fit", "--user", "alice", "prepare.class_noun="], "Config key `prepare.class_noun` was given no value: write one after the = sign"),
        (["fit", "--user", "alice", "wandb.log_images=maybe"], "Config key `wandb.log_images` takes true or false, not 'maybe'."),
        (["fit", "--user", "ghost", "--profile", "tiny", "paths.data_root=/nonexistent"], "no prepared dataset"),
    ],
)
def test_cli_prints_clear_error_without_traceback(args, expected):
    result = subprocess.run([sys.executable, "-m", "train", *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_retired_key_says_what_replaced_it_and_old_saved_configs_still_load(tmp_path):
    from headshots.config import config_from_yaml, save_config

    with pytest.raises(ConfigError, match="`face.second_face_ratio` was replaced by face.rival_size"):
        load_config("alice", overrides=["face.second_face_ratio=0.45"])
    saved = tmp_path / "config.yaml"  # an adapter's config.yaml written before the key was retired
    save_config(load_config("alice", overrides=["prepare.class_noun=woman"]), saved)
    saved.write_text(saved.read_text().replace("face:\n", "face:\n  second_face_ratio: 0.45\n", 1))
    assert "second_face_ratio" in saved.read_text()
    assert config_from_yaml(saved).prepare.class_noun == "woman"


def test_intake_keys_retired_by_the_new_measures_load_from_old_adapters(tmp_path):
    """Adapters trained before issue 17 saved intake.min_sharpness and friends; generate re-loads that config."""
    from headshots.config import config_from_yaml, save_config

    with pytest.raises(ConfigError, match="`intake.min_brightness` was replaced by intake.min_skin_light"):
        load_config("alice", overrides=["intake.min_brightness=50"])
    saved = tmp_path / "config.yaml"
    save_config(load_config("alice"), saved)
    old = "intake:\n  min_sharpness: 0.19\n  min_fine_detail: 0.08\n  max_motion_blur: 0.74\n  min_brightness: 50.0\n  max_brightness: 190.0\n"
    saved.write_text(saved.read_text().replace("intake:\n", old, 1))
    assert config_from_yaml(saved).intake.min_acuity == load_config("alice").intake.min_acuity


def test_only_a_write_the_disk_or_folder_refused_becomes_the_persons_error():
    """safetensors reports the OS error inside its message; a missing file (a bug or a race) stays a traceback."""
    import errno

    from safetensors import SafetensorError

    from headshots.errors import storage_error

    full = storage_error(SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left" })'))
    assert full is not None and "ENOSPC" in full.message and "Free some disk space" in full.hint
    read_only = storage_error(OSError(errno.EROFS, "Read-only file system", "/data/users/alice/intake.json"))
    assert read_only is not None and "/data/users/alice/intake.json" in read_only.message and "writable" in read_only.hint
    torch_save = storage_error(RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: file write failed"))
    assert torch_save is not None and "a checkpoint" in torch_save.message  # the optimizer state of a checkpoint
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file")) is None
    assert storage_error(RuntimeError("CUDA out of memory")) is None
    assert storage_error(SafetensorError("Error while deserializing header: HeaderTooLarge")) is None


def test_ctrl_c_says_what_the_stopped_command_kept(capsys, tmp_path):
    """A stopped intake or prepare was told that "training goes on from its last checkpoint" (bad-input walk); a
    stopped training says the step it goes on from (tests/test_train_processes.py stops a real one)."""
    from headshots.cli import build_parser, run
    from train.__main__ import HELP, INTERRUPTED

    def stopped(cfg) -> None:
        raise KeyboardInterrupt

    parser = build_parser("python -m train", "test", HELP)
    where = [f"paths.outputs_root={tmp_path}"]
    for command, said in (("prepare", INTERRUPTED["prepare"]), ("fit", "training had saved no checkpoint yet: it starts from the beginning")):
        assert run(parser, {command: stopped}, [command, "--user", "alice", *where], interrupted=INTERRUPTED) == 130
        assert said in capsys.readouterr().err
    assert "checkpoint" not in INTERRUPTED["prepare"] + INTERRUPTED["intake"]


def test_sigterm_stops_a_command_as_ctrl_c_does(capsys, tmp_path):
    """`kill`, `timeout` and a rented GPU's notice send SIGTERM, which ended a CLI on the spot: no "interrupted" line,
    the records of what was done not put back (a cross-surface walk). The handler is the caller's again afterwards."""
    import os
    import signal
    import time

    from headshots.cli import build_parser, run
    from train.__main__ import HELP, INTERRUPTED

    def terminated(cfg) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives first
        raise AssertionError("SIGTERM did not stop the command")

    before = signal.getsignal(signal.SIGTERM)
    argv = ["prepare", "--user", "alice", f"paths.outputs_root={tmp_path}"]
    assert run(build_parser("python -m train", "test", HELP), {"prepare": terminated}, argv, interrupted=INTERRUPTED) == 130
    assert f"interrupted: {INTERRUPTED['prepare']}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_every_stage_help_says_how_to_work_on_another_run():
    """A run is picked by an override, which --help did not name: a CLI walk found no way to a second run from it."""
    from headshots.cli import build_parser
    from infer.__main__ import HELP as INFER_HELP
    from train.__main__ import HELP as TRAIN_HELP

    for prog, commands in (("python -m train", TRAIN_HELP), ("python -m infer", INFER_HELP)):
        said = " ".join(build_parser(prog, "", commands).format_help().split())
        assert "run=NAME works on outputs/<user>/NAME/ (default: run=default)" in said, said


def test_a_gpu_the_machine_lacks_is_refused_in_words():
    """device=cuda on a machine without one (or cuda:N past its last GPU) reached torch's driver error as a traceback."""
    import torch

    from headshots.faces import resolve_device

    beyond = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match=f"device={beyond}, but torch finds") as err:
        resolve_device(beyond)
    assert "device=auto" in err.value.hint
    assert resolve_device("cpu") == torch.device("cpu")
