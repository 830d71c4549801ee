"""The whole pipeline through the CLIs a user runs, on the tiny profile."""

import json
import os
import shutil
import subprocess
import sys

from tests.conftest import REPO, copy_photos


def _run(*args, env):
    result = subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_selfies_to_gallery_then_purge(tmp_path, tiny_model, faces_dir, face_weights):
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    copy_photos(sorted((faces_dir / "georgia-tech" / "s23").glob("*.jpg"))[:4], data / "dana" / "selfies")
    shutil.copy(faces_dir / "azure-samples" / "_unlabelled_or_multiface" / "detection5.jpg", data / "dana" / "selfies")
    env = {**os.environ, "HEADSHOTS_FACE_WEIGHTS": str(face_weights), "WANDB_MODE": "offline"}
    common = ["--user", "dana", "--profile", "tiny", f"paths.data_root={data}", f"paths.outputs_root={outputs}",
              f"model.pretrained={tiny_model}"]

    trained = _run("-m", "train", "all", *common, "train.max_steps=4", "wandb.mode=offline", "intake.min_photos=4", env=env)
    assert f"every photo, with its face box and advice: {data / 'dana' / 'intake.html'}" in trained.stdout  # where to look
    _run("-m", "infer", "all", *common, "infer.styles=[linkedin,executive]", env=env)

    run_dir = outputs / "dana" / "default"
    assert (run_dir / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    scores = json.loads((run_dir / "samples" / "scores.json").read_text())
    assert len(scores["images"]) == 4
    for item in scores["images"]:
        assert (run_dir / "samples" / item["file"]).is_file()
        assert {"style", "seed", "face_found", "similarity", "kept", "reason"} <= set(item)
    assert (run_dir / "samples" / "gallery.html").is_file()
    report = json.loads((data / "dana" / "prepare_report.json").read_text())
    assert report["kept"] == 4 and report["rejected"] == 1
    # what the stages made is the person's login's alone: face crops, embeddings, adapter, images (the photos are theirs)
    made = [p for p in [*outputs.rglob("*"), *(data / "dana").rglob("*")] if "selfies" not in p.parts]
    assert len(made) > 30 and not [p for p in made if p.stat().st_mode & 0o077], [p for p in made if p.stat().st_mode & 0o077][:5]

    purge = _run("-m", "service.purge", "--user", "dana", f"paths.data_root={data}", f"paths.outputs_root={outputs}", env=env)
    assert "removed" in purge.stdout
    assert not (outputs / "dana").exists()
    # originals kept by default, with intake's and prepare's locks (empty: held while the deletion ran, they stay with
    # the photos)
    assert sorted(p.name for p in (data / "dana").iterdir()) == [".intake.lock", ".prepare.lock", "selfies"]
    assert (data / "dana" / ".intake.lock").stat().st_size == (data / "dana" / ".prepare.lock").stat().st_size == 0
    _run("-m", "service.purge", "--user", "dana", "--include-selfies", f"paths.data_root={data}",
         f"paths.outputs_root={outputs}", env=env)
    assert not (data / "dana").exists()
