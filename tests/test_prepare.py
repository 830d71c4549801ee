"""Prepare on real photos: one person's set plus a group photo, a non-image and a truncated JPEG."""

import hashlib
import json
from pathlib import Path

import datasets
import pytest
from safetensors.torch import load_file

from headshots.errors import HeadshotsError
from headshots.workspace import Workspace
from tests.conftest import copy_photos
from train.prepare import prepare


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_prepare_keeps_good_photos_and_explains_the_rest(make_config, faces_dir, analyzer):
    cfg = make_config("alice", "prepare.class_noun=man")
    ws = Workspace.from_config(cfg)
    good = copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:6], ws.selfies)
    copy_photos([faces_dir / "azure-samples" / "_unlabelled_or_multiface" / "test-image-person-group.jpg"], ws.selfies)
    (ws.selfies / "notes.txt").write_text("my selfies are below")
    (ws.selfies / "cut.jpg").write_bytes(good[0].read_bytes()[:2000])
    before = _digest(ws.selfies)

    result = prepare(cfg, analyzer)

    assert _digest(ws.selfies) == before  # nothing modified, nothing lost
    report = json.loads(ws.prepare_report.read_text())
    verdicts = {p["file"]: p for p in report["photos"]}
    assert set(verdicts) == set(before)  # every file has a verdict
    assert {f for f, p in verdicts.items() if p["kept"]} == {p.name for p in good}
    assert verdicts["test-image-person-group.jpg"]["reason"].endswith("faces")
    assert "not an image" in verdicts["notes.txt"]["reason"]
    assert "truncated" in verdicts["cut.jpg"]["reason"]
    assert all(p["advice"] for p in report["photos"] if not p["kept"])
    assert len(result.kept) == 6

    dataset = datasets.load_from_disk(str(ws.prepared))
    assert len(dataset) == 6
    assert set(dataset["caption"]) == {"a photo of ohwx man"}
    assert dataset[0]["image"].size == (cfg.model.resolution,) * 2
    x1, y1, x2, y2 = dataset[0]["face_box"]
    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1  # the face is inside its crop
    embeddings = load_file(str(ws.reference_embeddings))["embeddings"]
    assert embeddings.shape == (6, 512)


def test_too_few_usable_photos_says_how_many_more(make_config, faces_dir, analyzer):
    cfg = make_config("carol", "prepare.min_photos=3")
    ws = Workspace.from_config(cfg)
    copy_photos([faces_dir / "georgia-tech" / "s02" / "01.jpg"], ws.selfies)
    with pytest.raises(HeadshotsError, match="Only 1 of 1") as err:
        prepare(cfg, analyzer)
    assert "Add 2 more" in err.value.hint
    assert ws.prepare_report.is_file()  # the per-photo report is still written
