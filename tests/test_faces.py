"""Real MTCNN and real FaceNet weights on real photos."""

import itertools

import pytest
import torch

from headshots.config import FaceConfig, load_config
from headshots.errors import WeightsError
from headshots.faces import cosine_similarity, load_embedder
from headshots.images import load_rgb

THRESHOLD = load_config("alice").filter.threshold


def test_single_face_and_group_photo(analyzer, faces_dir):
    single = analyzer.detect(load_rgb(faces_dir / "georgia-tech" / "s01" / "01.jpg"))
    assert single.ok and single.subject is not None and single.subject.confidence > 0.95
    group = analyzer.detect(load_rgb(faces_dir / "azure-samples" / "_unlabelled_or_multiface" / "test-image-person-group.jpg"))
    assert group.problem == "several_faces" and len(group.faces) >= 2


def test_subject_is_the_prominent_face_not_a_background_one(analyzer, faces_dir):
    # A portrait with small faces far behind the subject: one usable face, the large one.
    photo = load_rgb(faces_dir / "azure-samples" / "_unlabelled_or_multiface" / "detection4.jpg")
    detection = analyzer.detect(photo)
    assert detection.ok
    assert detection.subject.side == max(f.side for f in detection.faces)


def test_blank_image_has_no_face(analyzer):
    from PIL import Image

    assert analyzer.detect(Image.new("RGB", (300, 300), (128, 128, 128))).problem == "no_face"


def _embeddings(analyzer, paths):
    imgs = [load_rgb(p) for p in paths]
    return analyzer.embed(imgs, [analyzer.detect(i).subject for i in imgs])


def test_same_person_above_threshold_different_person_below(analyzer, faces_dir):
    people = {f"gt-{p}": sorted((faces_dir / "georgia-tech" / p).glob("*.jpg"))[:5] for p in ("s01", "s02", "s23", "s29", "s50")}
    people["obama"] = sorted((faces_dir / "face-recognition-examples" / "obama").iterdir())
    people["biden"] = sorted((faces_dir / "face-recognition-examples" / "biden").iterdir())
    labels = [name for name, paths in people.items() for _ in paths]
    sims = cosine_similarity(*(2 * [_embeddings(analyzer, [p for paths in people.values() for p in paths])]))
    pairs = list(itertools.combinations(range(len(labels)), 2))
    same = torch.tensor([sims[a, b] for a, b in pairs if labels[a] == labels[b]])
    different = torch.tensor([sims[a, b] for a, b in pairs if labels[a] != labels[b]])
    assert same.min() >= THRESHOLD, f"a same-person pair scored {same.min():.3f}"
    assert different.max() < THRESHOLD, f"a different-person pair scored {different.max():.3f}"
    assert same.mean() - different.mean() > 0.5


def test_missing_weights_error_names_config_key_and_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("HEADSHOTS_FACE_WEIGHTS", str(tmp_path / "nope.pt"))
    with pytest.raises(WeightsError) as err:
        load_embedder(FaceConfig().weights)
    assert "face.weights" in err.value.hint and "HEADSHOTS_FACE_WEIGHTS" in err.value.hint


def test_corrupt_weights_file_is_a_clear_error(monkeypatch, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("HEADSHOTS_FACE_WEIGHTS", str(bad))
    with pytest.raises(WeightsError, match="could not be loaded"):
        load_embedder("vggface2")
