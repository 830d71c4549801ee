"""The automated review checks (infer/review.py) on real photos from ../shared/faces."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from headshots.config import FilterConfig
from headshots.images import load_rgb
from infer import review

FLOOR = FilterConfig(threshold=0.55)  # a floor set by hand; the calibrated one is tested in test_faces.py


@pytest.fixture(scope="module")
def photo(faces_dir):
    """A Georgia Tech photo by name, e.g. photo("s01/08"), with its detection."""

    def _load(name: str):
        return load_rgb(faces_dir / "georgia-tech" / f"{name}.jpg")

    return _load


def test_calibrated_threshold_follows_the_persons_own_likeness(photo, analyzer):
    images = [photo(f"s01/{k:02d}") for k in range(1, 6)]
    references = analyzer.embed(images, [analyzer.detect(i).subject for i in images])
    loo = review.leave_one_out(references)
    assert loo.shape == (5,) and 0.6 < loo.mean().item() < 1.0  # one person's photos agree strongly
    threshold = review.person_threshold(references, 0.55, FLOOR)
    assert threshold == pytest.approx(0.75 * loo.mean().item(), abs=1e-4) and threshold > FLOOR.threshold
    assert review.person_threshold(references, 0.9, FLOOR) == 0.9  # never below the floor
    assert review.person_threshold(references[:1], 0.55, FLOOR) == 0.55  # one photo: no spread to learn from
    assert review.person_threshold(references, 0.55, FilterConfig(loo_fraction=0.0)) == 0.55


def test_a_good_photo_passes_face_eyes_and_framing(photo, analyzer):
    image = photo("s01/08")
    detection = analyzer.detect(image)
    checks = [review.face_check(detection), review.eyes_check(detection.subject, image.size, FLOOR),
              review.framing_check(detection.subject, image.size, FLOOR)]
    assert all(c.passed for c in checks), checks


def test_cut_off_head_and_far_away_face_are_caught(photo, analyzer):
    image = photo("s01/08")
    face = analyzer.detect(image).subject
    x1, y1, x2, y2 = face.box
    cut = image.crop((0, int(y1 + 0.05 * (y2 - y1)), image.width, image.height))  # forehead and hair gone
    cut_face = analyzer.detect(cut).subject
    assert cut_face is not None
    assert review.framing_check(cut_face, cut.size, FLOOR).detail == "head cut off at the top"

    side = image.crop((int(x1 + 0.05 * (x2 - x1)), 0, image.width, image.height))  # left cheek cut
    side_face = analyzer.detect(side).subject
    assert side_face is not None and review.framing_check(side_face, side.size, FLOOR).detail == "head cut off at the side"

    far = Image.new("RGB", (image.width * 3, image.height * 3), (128, 128, 128))
    far.paste(image, (image.width, image.height))  # the same shot, the face a small part of the frame
    far_face = analyzer.detect(far).subject
    check = review.framing_check(far_face, far.size, FLOOR)
    assert not check.passed and check.detail.startswith("face too small in the frame")


def test_eye_landmarks_outside_the_picture_or_implausible(photo, analyzer):
    image = photo("s01/08")
    face = analyzer.detect(image).subject
    (lx, ly), right, *rest = face.landmarks
    outside = replace(face, landmarks=((-5.0, ly), right, *rest))
    assert review.eyes_check(outside, image.size, FLOOR).detail == "an eye is outside the picture"
    squashed = replace(face, landmarks=((lx, ly), (lx + 2, ly), *rest))
    assert review.eyes_check(squashed, image.size, FLOOR).detail.startswith("eyes implausible")


def test_glasses_heuristic_tells_the_same_person_with_and_without(photo, analyzer):
    """s50 wears glasses in photos 02-07 and 09, not in the others."""
    for name, expected in [("s50/02", True), ("s50/05", True), ("s50/09", True), ("s50/01", False), ("s50/12", False),
                           ("s01/08", False), ("s23/04", False)]:
        image = photo(name)
        assert review.wears_glasses(review.bridge_edge_score(image, analyzer.detect(image).subject), FLOOR) is expected, name
    assert not review.glasses_check(True, 0.0).passed and not review.glasses_check(False, 1.0).passed
    assert review.glasses_check(True, 0.5).passed and review.glasses_check(False, 0.5).passed  # sometimes: both fine
    assert review.glasses_check(False, 0.0).passed and review.glasses_check(True, 0.9).passed


def test_the_glasses_score_levels_only_the_eyes_neighbourhood_and_reads_the_same_pixels(photo, analyzer):
    """bridge_edge_score rotates a square around the eyes instead of the whole photo: the very samples, so the
    very score, as levelling the whole photo (the first way, kept here as the reference), at any tilt."""
    def whole_photo(image, face) -> float:
        (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
        distance = max(float(np.hypot(rx - lx, ry - ly)), 1.0)
        cx, cy = (lx + rx) / 2, (ly + ry) / 2
        level = image.convert("L").rotate(float(np.degrees(np.arctan2(ry - ly, rx - lx))), center=(cx, cy), resample=Image.BILINEAR)
        patch = np.asarray(level.crop(tuple(round(v) for v in (cx - distance, cy - distance, cx + distance, cy + distance)))
                           .resize((128, 128), Image.BILINEAR), dtype=float)
        dy, dx = np.abs(np.diff(patch, axis=0))[:, :-1], np.abs(np.diff(patch, axis=1))[:-1, :]
        return float(dy[56:72, 56:72].mean() / ((dy + dx)[32:96, 16:112].mean() + 1e-6))

    for name, turn in [("s50/02", 0), ("s50/05", 25), ("s01/08", -40)]:
        image = photo(name).rotate(turn, expand=True)
        face = analyzer.detect(image).subject
        assert review.bridge_edge_score(image, face) == pytest.approx(whole_photo(image, face), abs=1e-9), name


def test_near_duplicates_collapse_to_the_first_and_different_shots_stay(photo):
    a, b = photo("s01/08"), photo("s01/12")
    copy = ImageEnhance.Brightness(a.crop((6, 0, a.width, a.height)).resize(a.size)).enhance(1.15)  # shifted, brighter
    files = ["a.png", "b.png", "copy.png"]
    duplicates = review.find_duplicates(files, [review.normalised(review.thumbnail_pixels(i)) for i in (a, b, copy)], 0.95)
    assert duplicates == {"copy.png": "a.png"}
    assert review.duplicate_check(duplicates.get("copy.png")).detail == "near-duplicate of a.png"


def test_likeness_check_wording():
    assert review.likeness_check(0.8, 0.6) == review.Check("likeness", True, "looks like you (similarity 0.80)")
    assert review.likeness_check(0.5, 0.6).detail == "does not look like you (similarity 0.50 < 0.60)"
    assert review.leave_one_out(torch.ones(1, 512)).numel() == 0


def test_the_face_detailed_version_wins_only_as_the_review_would_rank_it():
    """Passing every check comes before likeness: a re-drawn face a little more like the person but failing its
    eyes check used to win, and the image was dropped with its passing original never shown."""
    from infer.score import Score, better_version

    def version(file: str, similarity: float | None, kept: bool) -> Score:
        return Score(file, "linkedin", 1, similarity is not None, similarity, similarity, kept,
                     "looks like you" if kept else "eyes implausible")

    item = {"file": "a.png", "detail": {"file": "a.detail.png"}}
    chosen = better_version(item, {"a.png": version("a.png", 0.60, True), "a.detail.png": version("a.detail.png", 0.62, False)})
    assert (chosen.file, chosen.detail["chosen"]) == ("a.png", "original")
    assert chosen.detail["other_failed"] == "eyes implausible"  # the gallery says why the likelier face lost
    from infer.gallery import _detail_note

    assert "original kept (+0.02): re-drawn 0.62 vs original 0.60; the other failed: eyes implausible" in _detail_note(chosen.detail)
    chosen = better_version(item, {"a.png": version("a.png", 0.70, False), "a.detail.png": version("a.detail.png", 0.61, True)})
    assert chosen.file == "a.detail.png"
    chosen = better_version(item, {"a.png": version("a.png", 0.60, True), "a.detail.png": version("a.detail.png", 0.62, True)})
    assert chosen.file == "a.detail.png" and chosen.detail["gain"] == 0.02
    chosen = better_version(item, {"a.png": version("a.png", None, False), "a.detail.png": version("a.detail.png", 0.1, False)})
    assert chosen.file == "a.detail.png"  # a found face before none, both dropped
