"""Prepare on real photos: one person's set plus a group photo, a non-image and a truncated JPEG."""

import hashlib
import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from headshots.errors import HeadshotsError
from headshots.faces import Face
from headshots.workspace import Workspace
from tests.conftest import copy_photos
from train.framing import eye_line_degrees, frame_face
from train.prepare import keep_rejected_setting, prepare


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_prepare_keeps_good_photos_and_explains_the_rest(make_config, faces_dir, analyzer):
    cfg = make_config("alice", "prepare.class_noun=man")
    ws = Workspace.from_config(cfg)
    good = copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:6], ws.selfies)
    copy_photos([faces_dir / "azure-samples" / "_unlabelled_or_multiface" / "test-image-person-group.jpg"], ws.selfies)
    (ws.selfies / "notes.txt").write_text("my selfies are below")
    (ws.selfies / "cut.jpg").write_bytes(good[0].read_bytes()[:2000])
    Image.new("RGB", (1, 1)).save(ws.selfies / "dot.png")  # an icon: said as intake says it, not "no face found"
    before = _digest(ws.selfies)

    result = prepare(cfg, analyzer)

    assert _digest(ws.selfies) == before  # nothing modified, nothing lost
    report = json.loads(ws.prepare_report.read_text())
    verdicts = {p["file"]: p for p in report["photos"]}
    assert set(verdicts) == set(before)  # every file has a verdict
    assert {f for f, p in verdicts.items() if p["kept"]} == {p.name for p in good}
    assert verdicts["test-image-person-group.jpg"]["reason"].startswith("intake: more than one face")
    assert "not an image" in verdicts["notes.txt"]["reason"]
    assert "truncated" in verdicts["cut.jpg"]["reason"]
    assert verdicts["dot.png"]["reason"] == "intake: image too small (1 x 1 px)" and "thumbnail" in verdicts["dot.png"]["advice"]
    assert all(p["advice"] for p in report["photos"] if not p["kept"])
    assert len(result.kept) == 6
    # The face's place in the photo as intake gives it (0..1 of the photo): the web app crops "You, in your photos" by it
    for photo in good:
        face = analyzer.detect(Image.open(photo).convert("RGB")).subject
        scaled = [v * s for v, s in zip(verdicts[photo.name]["face_box"], Image.open(photo).size * 2)]
        assert _iou(scaled, list(face.box)) > 0.95, photo.name

    dataset = datasets.load_from_disk(str(ws.prepared))
    assert len(dataset) == 6
    assert set(dataset["caption"]) == {"a photo of ohwx man"}
    assert dataset[0]["image"].size == (cfg.model.resolution,) * 2
    x1, y1, x2, y2 = dataset[0]["face_box"]
    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1  # the face is inside its crop
    embeddings = load_file(str(ws.reference_embeddings))["embeddings"]
    assert embeddings.shape == (6, 512)
    # which embedder made them, so that scoring never compares them with another's (a scoring review)
    from dataclasses import replace

    from headshots.errors import ConfigError
    from headshots.faces import load_references

    assert torch.equal(load_references(ws.reference_embeddings, cfg.face, "make prepare"), embeddings)
    with pytest.raises(ConfigError, match="made with other face settings") as refused:
        load_references(ws.reference_embeddings, replace(cfg.face, crop_margin=20), "make prepare USER=dana")
    assert '"crop_margin": 14' in refused.value.message and refused.value.hint.endswith("make prepare USER=dana")


def test_photos_intake_rejects_are_not_trained_on_unless_the_person_keeps_them(make_config, faces_dir, analyzer, caplog):
    """A usable set (`make train` goes on) can still hold photos intake rejects: someone else's face must not be
    learnt as the person's. One detected face each, so prepare's own detection keeps them all."""
    cfg = make_config("carol")
    ws = Workspace.from_config(cfg)
    mine = copy_photos(sorted((faces_dir / "georgia-tech" / "s23").glob("*.jpg"))[:5], ws.selfies)
    copy_photos([faces_dir / "georgia-tech" / "s50" / "04.jpg"], ws.selfies / "x")
    (ws.selfies / "x" / "04.jpg").rename(ws.selfies / "zz-someone.jpg")
    (ws.selfies / "x").rmdir()

    prepare(cfg, analyzer)
    verdicts = {p["file"]: p for p in json.loads(ws.prepare_report.read_text())["photos"]}
    assert {f for f, p in verdicts.items() if p["kept"]} == {p.name for p in mine}
    assert verdicts["zz-someone.jpg"]["reason"].startswith("intake: this photo may be someone else")
    assert "`prepare: {keep_rejected: [\"zz-someone.jpg\"]}` to" in verdicts["zz-someone.jpg"]["advice"]
    assert "zz-someone.jpg" not in datasets.load_from_disk(str(ws.prepared))["file"]

    ws.person_settings.write_text("prepare:\n  keep_rejected: [zz-someone.jpg, ZZ-Someone.JPG, notes.jpg]\n")  # it is them
    (ws.selfies / "notes.jpg").write_text("not a photo")  # kept by no setting: said so, not silently left out
    with caplog.at_level(logging.WARNING, logger="train"):
        prepare(make_config("carol"), analyzer)
    assert "names ZZ-Someone.JPG, not among the photos in" in caplog.text and "(did you mean zz-someone.jpg?)" in caplog.text
    assert "zz-someone.jpg" in datasets.load_from_disk(str(ws.prepared))["file"]
    kept = next(p for p in json.loads(ws.prepare_report.read_text())["photos"] if p["file"] == "zz-someone.jpg")
    assert kept["kept"] and any("kept as prepare.keep_rejected asks" in w for w in kept["warnings"])  # not silently
    notes = next(p for p in json.loads(ws.prepare_report.read_text())["photos"] if p["file"] == "notes.jpg")
    assert not notes["kept"] and "(prepare.keep_rejected names it, but no setting can train on it: " in notes["advice"], notes


def test_too_few_usable_photos_says_how_many_more(make_config, faces_dir, analyzer):
    cfg = make_config("carol", "prepare.min_photos=3")
    ws = Workspace.from_config(cfg)
    copy_photos([faces_dir / "georgia-tech" / "s02" / "01.jpg"], ws.selfies)
    with pytest.raises(HeadshotsError, match="Only 1 of 1") as err:
        prepare(cfg, analyzer)
    assert "Add 2 more photos of you alone" in err.value.hint  # plural() says "1 more photo" (a docs walk: "1 more photos")
    assert ws.prepare_report.is_file()  # the per-photo report is still written


def _iou(a: list[float], b: list[float]) -> float:
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_tilted_heads_are_levelled_in_their_crops(make_config, faces_dir, analyzer):
    """Georgia Tech s29/07 and 04 are real head tilts (MTCNN: -26 and +15 degrees). MTCNN run again on each
    training crop finds the eyes level, and the stored face box where it finds the face (the face loss reads it)."""
    photos = [faces_dir / "georgia-tech" / "s29" / name for name in ("07.jpg", "04.jpg", "01.jpg")]
    tilt, turned = {}, {}
    for level in (False, True):
        cfg = make_config(f"tilt{int(level)}", f"prepare.level_eyes={str(level).lower()}", "model.resolution=512")
        ws = Workspace.from_config(cfg)
        copy_photos(photos, ws.selfies)
        prepare(cfg, analyzer)
        turned[level] = {p["file"]: p["level_degrees"] for p in json.loads(ws.prepare_report.read_text())["photos"]}
        for row in datasets.load_from_disk(str(ws.prepared)):
            face = analyzer.detect(row["image"]).subject
            tilt[level, row["file"]] = eye_line_degrees(face)
            assert _iou([v * 512 for v in row["face_box"]], list(face.box)) > 0.7, row["file"]
    assert abs(tilt[False, "07.jpg"]) > 20 and abs(tilt[False, "04.jpg"]) > 12
    assert abs(tilt[True, "07.jpg"]) < 3 and abs(tilt[True, "04.jpg"]) < 3
    assert turned[False] == {"07.jpg": 0.0, "04.jpg": 0.0, "01.jpg": 0.0}
    assert turned[True]["07.jpg"] < -20 and turned[True]["04.jpg"] > 12


def _tilted_face(centre: tuple[float, float], side: float, degrees: float) -> Face:
    (cx, cy), t = centre, np.radians(degrees)
    eye = 0.2 * side * np.array([np.cos(t), np.sin(t)])
    landmarks = ((cx, cy) - eye, (cx, cy) + eye, (cx, cy), (cx - 0.1 * side, cy + 0.2 * side), (cx + 0.1 * side, cy + 0.2 * side))
    return Face((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 0.99, tuple(tuple(float(v) for v in p) for p in landmarks))


@pytest.mark.parametrize("centre", [(300, 200), (150, 200), (300, 130)])
def test_a_turned_crop_uses_only_pixels_of_the_photo(centre):
    """Turning needs room: the square shrinks rather than reach past the edge (PIL fills outside with black), and
    a face so near the edge that it would lose over a fifth of its side keeps the upright crop."""
    photo = Image.new("RGB", (600, 400), "white")
    framing = frame_face(_tilted_face(centre, 100, 20), photo.size, margin=0.9)
    crop = np.asarray(framing.cut(photo, 256))
    assert crop.min() == 255  # no black from outside the photo
    if framing.degrees:
        assert framing.degrees == pytest.approx(20) and framing.side >= 0.8 * 280 - 1
    else:
        assert centre == (300, 130)  # 20 degrees at 70 px from the top edge: no room to turn


@pytest.mark.parametrize("name", ["05.jpg", "me, at home [2].jpg", "#1 selfie: best.jpg", 'say "cheese" \\ 😀.jpg'])
def test_the_keep_rejected_line_prepare_suggests_reads_back_as_the_name(name, make_config):
    """Pasted as prepare printed it, "me, at home [2].jpg" was a YAML syntax error and "#1 selfie: best.jpg" a comment."""
    ws = Workspace.from_config(make_config("alice"))
    ws.person_settings.parent.mkdir(parents=True, exist_ok=True)
    ws.person_settings.write_text(keep_rejected_setting(name) + "\n", encoding="utf-8")
    assert list(make_config("alice").prepare.keep_rejected) == [name]


def test_an_upright_crop_stays_inside_a_photo_of_odd_size():
    """The square's ends were rounded apart, so its side could come out 1 px longer across than down; the crop,
    re-centred on that side, took a row past the photo, which Pillow fills with black: a dark strip along the
    training crop's edge (a prepare review: 4 black rows in one of about 80 face placements on a 999 x 667 photo)."""
    from headshots.faces import Face
    from train.framing import frame_face

    for width, height in ((999, 667), (667, 999), (1001, 1001)):
        for side in (80.3, 150.5, 233.7, 351.1):
            for cx in np.linspace(0, width, 23):
                for cy in np.linspace(0, height, 23):
                    eyes = ((cx - side / 5, cy), (cx + side / 5, cy))  # level: the upright crop
                    face = Face((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 0.99, (*eyes, (cx, cy)))
                    x1, y1, x2, y2 = frame_face(face, (width, height), 0.9).box
                    assert 0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height and x2 - x1 == y2 - y1, (width, height, face.box)


def test_prepared_files_cut_short_are_said_and_prepare_makes_them_anew(prepared_user, analyzer, caplog):
    """An Arrow file or the reference faces cut short (a full disk, a copy between machines) ended in datasets' OSError
    or safetensors' error as a traceback, in `make train`, `make prepare` and scoring (new-user walk)."""
    from headshots.caption_edits import edited_captions
    from headshots.faces import load_references

    ws = Workspace.from_config(prepared_user)
    rows = ws.prepared_rows[0]
    whole = rows.read_bytes()
    rows.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(HeadshotsError, match="The prepared photos at .* cannot be read") as refused:
        ws.load_prepared()
    assert refused.value.hint == "Prepare the photos again: make prepare USER=alice PROFILE=tiny"
    written = json.loads(ws.captions.read_text())
    with caplog.at_level(logging.WARNING):  # which lines the captioner wrote is unknown: each counts as the person's
        assert edited_captions(ws) == written and written
    assert "cannot be read" in caplog.text
    prepare(prepared_user, analyzer=analyzer)  # makes the dataset anew
    assert rows.read_bytes() == whole and len(ws.load_prepared()) == 5
    reference = ws.reference_embeddings
    reference.write_bytes(reference.read_bytes()[:100])
    with pytest.raises(HeadshotsError, match="The reference faces of the photos .* cannot be read") as refused:
        load_references(reference, prepared_user.face, ws.make_command("prepare"))
    assert refused.value.hint == "Prepare the photos again: make prepare USER=alice PROFILE=tiny"
