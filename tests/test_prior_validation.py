"""Prior preservation (class images) and validation during training, on the tiny profile."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from headshots.errors import HeadshotsError
from headshots.workspace import Workspace
from tests.conftest import wandb_records
from train.lora import ADAPTER_FILE
from train.recipe import train


def _weights(adapter: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter / ADAPTER_FILE))


def test_prior_preservation_generates_class_images_once_and_changes_training(prepared_user, make_config, monkeypatch):
    from train.prior import generated_dir

    plain = _weights(train(make_config("alice", "run=plain", "train.max_steps=2")))
    monkeypatch.setenv("WANDB_MODE", "offline")  # the suite's default, disabled, would win over the config
    cfg = make_config("alice", "run=prior", "train.max_steps=2", "train.prior.enabled=true", "train.prior.num_images=2",
                      "wandb.mode=offline")
    with_prior = _weights(train(cfg))
    # the dashboard shows the loss's two parts: the class loss climbing while the person's falls is the drift
    logged = wandb_records(Workspace.from_config(cfg).wandb_dir("prior"), b"train/person_loss", b"train/prior_loss")
    assert b"train/person_loss" in logged and b"train/prior_loss" in logged
    monkeypatch.setenv("WANDB_MODE", "disabled")
    folder = generated_dir(cfg)
    images = sorted(folder.glob("*.png"))
    assert [p.name for p in images] == ["00000.png", "00001.png"]
    assert json.loads((folder / "prompt.json").read_text())["prompt"] == "a photo of a person"
    assert any(not torch.equal(plain[k], with_prior[k]) for k in plain), "the class loss must change the update"

    # A second run with the same model and prompt reuses the cached images instead of generating them.
    stamps = [p.stat().st_mtime_ns for p in images]
    train(make_config("alice", "run=prior2", "train.max_steps=1", "train.prior.enabled=true", "train.prior.num_images=2"))
    assert [p.stat().st_mtime_ns for p in images] == stamps


def test_two_trainings_draw_the_shared_class_images_once(make_config):
    """Class images are shared by every user: a training that needs them while another draws them waits, then uses
    what it drew (two at once used one temporary name: one crashed with a bare FileNotFoundError, a code review)."""
    import threading
    import time

    from tests.conftest import held_elsewhere
    from train.prior import class_image_paths, generated_dir

    cfg = make_config("alice", "train.prior.enabled=true", "train.prior.num_images=1", "train.prior.sampling_steps=1")
    folder = generated_dir(cfg)
    folder.mkdir(parents=True)
    found: list = []
    with held_elsewhere(folder / ".lock"):  # another training, drawing them
        second = threading.Thread(target=lambda: found.append(class_image_paths(cfg, torch.device("cpu"))))
        second.start()
        time.sleep(1.0)
        assert second.is_alive() and not list(folder.glob("*.png"))  # waiting, not drawing over it
        Image.new("RGB", (8, 8)).save(folder / "00000.png")  # what the other training drew meanwhile
    second.join(timeout=60)
    assert found == [[folder / "00000.png"]] and Image.open(folder / "00000.png").size == (8, 8)  # used, not drawn again
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_model_folder_named_relative_or_absolute_is_one_model(make_config, tiny_model, tmp_path, monkeypatch):
    """The CLI names the tiny model `models/tiny-sdxl`, the batch's workers by its absolute path: the class images
    cached and the faces re-drawn for one are the other's too."""
    from infer.detail import weights_fingerprint
    from train.prior import generated_dir

    monkeypatch.chdir(tiny_model.parent)
    relative, absolute = make_config("alice", f"model.pretrained={tiny_model.name}"), make_config("alice")
    assert generated_dir(relative) == generated_dir(absolute)
    assert weights_fingerprint(relative, tmp_path) == weights_fingerprint(absolute, tmp_path)


def test_prior_preservation_with_a_folder_of_class_photos(prepared_user, make_config, faces_dir, tmp_path):
    folder = faces_dir / "georgia-tech" / "s02"
    cfg = make_config("alice", "run=folder", "train.max_steps=1", "train.prior.enabled=true",
                      f"train.prior.images={folder}", "train.prior.num_images=3")
    assert (train(cfg) / ADAPTER_FILE).is_file()
    assert not (tmp_path / "cache").exists(), "a given folder is used as is, nothing generated"

    (tmp_path / "empty").mkdir()
    bad = make_config("alice", "run=bad", "train.max_steps=1", "train.prior.enabled=true", f"train.prior.images={tmp_path / 'empty'}")
    with pytest.raises(HeadshotsError, match="not a folder of photos"):
        train(bad)


def test_validation_without_reference_embeddings_fails_before_any_work(prepared_user, make_config, tmp_path):
    """Validation scores against the person's reference embeddings: when they are missing, say so before
    generating class images (minutes on a GPU) or encoding anything."""
    Workspace.from_config(prepared_user).reference_embeddings.unlink()
    cfg = make_config("alice", "run=noref", "train.max_steps=1", "train.validation.every=1", "train.prior.enabled=true")
    with pytest.raises(HeadshotsError, match="No reference face embeddings") as error:
        train(cfg)
    assert "make prepare USER=alice" in error.value.hint
    assert not (tmp_path / "cache").exists(), "no class images were generated"


def test_face_similarity_score_rewards_the_person_and_zeroes_non_faces(analyzer, faces_dir, prepared_user):
    from headshots.images import load_rgb
    from train.validation import face_similarity_score

    references = load_file(str(Workspace.from_config(prepared_user).reference_embeddings))["embeddings"]
    same = [load_rgb(p) for p in sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[5:7]]
    other = [load_rgb(p) for p in sorted((faces_dir / "georgia-tech" / "s23").glob("*.jpg"))[:2]]
    noise = [Image.fromarray(torch.randint(0, 255, (256, 256, 3), dtype=torch.uint8).numpy())]
    mean_same, found_same, _ = face_similarity_score(analyzer, same, references)
    mean_other, _, _ = face_similarity_score(analyzer, other, references)
    mean_noise, found_noise, per_image = face_similarity_score(analyzer, noise, references)
    assert found_same == 1.0 and mean_same > 0.6 > mean_other
    assert (mean_noise, found_noise, per_image) == (0.0, 0.0, [None])


def test_best_validation_is_the_highest_likeness_earliest_on_ties():
    from train.validation import ValidationResult, best_of

    history = [ValidationResult(10, 0.3, 1.0), ValidationResult(20, 0.5, 1.0), ValidationResult(30, 0.5, 1.0),
               ValidationResult(40, 0.2, 1.0)]
    assert best_of(history).step == 20 and best_of([]) is None


def test_validation_during_training_logs_scores_and_keeps_the_best_adapter(prepared_user, make_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the suite's default, disabled, would win over the config
    cfg = make_config("alice", "run=val", "train.max_steps=4", "train.validation.every=2", "train.validation.seeds=[0]",
                      "wandb.mode=offline")
    train(cfg)
    workspace = Workspace.from_config(cfg)
    report = json.loads((workspace.run_dir("val") / "validation.json").read_text())
    assert [entry["step"] for entry in report["history"]] == [2, 4]
    assert all(len(entry["images"]) == 2 for entry in report["history"])  # two prompts x one seed
    assert all((workspace.run_dir("val") / "validation" / image["file"]).is_file()
               for entry in report["history"] for image in entry["images"])
    best = workspace.best_adapter_dir("val")
    with safe_open(str(best / ADAPTER_FILE), framework="pt") as handle:
        assert handle.metadata()["headshots.step"] == str(report["best"]["step"])
    logged = wandb_records(workspace.wandb_dir("val"), b"val/face_similarity", b"train/step_seconds")
    assert b"val/face_similarity" in logged
    assert all(key in logged for key in (b"train/loss", b"train/lr", b"train/grad_norm", b"train/step_seconds"))
    assert b"train/prior_loss" not in logged  # no class images, no class loss

    # Resumed with other seeds, its likeness figures are not comparable with the history's: the history starts again
    # (the resumed run kept the old run's best against its own, whatever its own scored)
    train(make_config("alice", "run=val", "train.max_steps=6", "train.validation.every=2", "train.validation.seeds=[1]"))
    report = json.loads((workspace.run_dir("val") / "validation.json").read_text())
    assert [entry["step"] for entry in report["history"]] == [6] and report["best"]["step"] == 6
    with safe_open(str(best / ADAPTER_FILE), framework="pt") as handle:
        assert handle.metadata()["headshots.step"] == "6"
    assert b"val/images" not in logged, "images of the person are not logged unless wandb.log_images is on"


def test_validation_images_are_decoded_in_the_vae_s_dtype_outside_autocast(prepared_user, make_config):
    """Under fp16 autocast SDXL's VAE overflows even with fp32 weights (black validation images, then no face and no
    best adapter): sampling runs under autocast, decoding does not. bf16 stands in for fp16 (the CPU's autocast)."""
    from headshots.sdxl import load_components
    from train.validation import Validator

    cfg = make_config("alice", "train.validation.seeds=[0]")
    parts = load_components(cfg.model)  # fp32, as the VAE is loaded for fp16 training
    decoded_as = []
    parts.vae.decoder.register_forward_hook(lambda module, args, output: decoded_as.append(output.dtype))
    validator = Validator(cfg, parts, torch.device("cpu"), torch.bfloat16, offload=False, trigger="sks")
    images, prompts = validator._sample(parts.unet)
    assert len(images) == len(prompts) == 2 and decoded_as == [torch.float32] * 2
    assert images[0][0].size == (cfg.model.resolution, cfg.model.resolution)
