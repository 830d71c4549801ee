"""Platform crops of chosen headshots (infer/export.py), on real photos."""

import json

import pytest
from PIL import Image, ImageOps

from headshots.errors import HeadshotsError
from headshots.workspace import Workspace, save_favourites
from infer.export import SIZES, crop_box, export


@pytest.fixture
def samples(make_config, faces_dir):
    """A run's samples/ with a 1024 px and a 480 px real photo, and the config pointing at it."""
    cfg = make_config("alice")
    out = Workspace.from_config(cfg).samples_dir(cfg.run)
    out.mkdir(parents=True)
    photo = Image.open(faces_dir / "face-recognition-examples" / "obama" / "obama.jpg").convert("RGB")
    ImageOps.fit(photo, (1024, 1024)).save(out / "big.png")
    Image.open(faces_dir / "georgia-tech" / "s01" / "08.jpg").convert("RGB").save(out / "small.png")
    return cfg, out


def test_kept_images_are_cropped_around_the_face_and_never_upscaled(samples, make_config, analyzer):
    cfg, out = samples
    boxes = {name: list(analyzer.detect(Image.open(out / name).convert("RGB")).subject.box) for name in ("big.png", "small.png")}
    scores = {"images": [{"file": n, "kept": True, "face_box": b} for n, b in boxes.items()]}
    (out / "scores.json").write_text(json.dumps(scores))

    manifest = json.loads(export(cfg).read_text())
    export_dir = out.parent / "export"
    records = {r["file"]: r for r in manifest["images"]}
    assert set(records) == {"big.png", "small.png"}
    for name, record in records.items():
        with Image.open(out / name) as source:  # MTCNN boxes may reach past the picture's edge
            x1, y1 = max(boxes[name][0], 0), max(boxes[name][1], 0)
            x2, y2 = min(boxes[name][2], source.width), min(boxes[name][3], source.height)
        for item, size in zip(record["exports"], SIZES):
            path = export_dir / item["path"]
            assert path.parent.name == size.folder and path.suffix == ".jpg"
            with Image.open(path) as image:
                assert image.size == (item["width"], item["height"])
            left, top, right, bottom = item["crop_box"]
            assert left <= x1 and right >= x2 and top <= y1 and bottom >= y2  # the whole face is in the crop
            assert image.width <= right - left + 1  # scaled down or kept, never up
            assert abs(image.width / image.height - size.width / size.height) < 0.01
    big = {e["size"]: e for e in records["big.png"]["exports"]}
    assert (big["linkedin-400x400"]["width"], big["linkedin-400x400"]["height"]) == (400, 400)
    assert (big["cv-600x800"]["width"], big["cv-600x800"]["height"]) == (600, 800)
    portrait = big["portrait-1080x1350"]  # 1024 px of source cannot honestly give 1080x1350
    assert portrait["height"] == 1024 and "source too small" in portrait["note"]
    small = {e["size"]: e for e in records["small.png"]["exports"]}  # 640x480 source
    assert small["linkedin-400x400"]["width"] == 400 and small["linkedin-400x400"]["note"] == ""
    assert small["cv-600x800"]["height"] == 480 and "exported at 360x480" in small["cv-600x800"]["note"]


def test_chosen_files_are_detected_without_scores_and_a_new_export_replaces_the_last(samples, make_config, analyzer, caplog):
    _, out = samples
    export(make_config("alice", "infer.export_files=[big.png]"), analyzer)
    cfg = make_config("alice", "infer.export_files=[small.png]")
    manifest = json.loads(export(cfg, analyzer).read_text())
    assert "the crops of big.png from the last export are gone" in caplog.text  # said, not silent
    assert [r["file"] for r in manifest["images"]] == ["small.png"] and manifest["images"][0]["face_box"] is not None
    crops = sorted(p.relative_to(out.parent / "export").as_posix() for p in (out.parent / "export").rglob("*.jpg"))
    assert crops == sorted(f"{size.folder}/small.jpg" for size in SIZES)  # nothing of the last export's big.png
    assert sorted(p.name for p in out.parent.iterdir()) == [".export.lock", "export", "samples"]  # no building or retired folder left


def test_the_favourites_ticked_in_the_app_are_exported_unless_files_are_named(samples, make_config, analyzer):
    cfg, _ = samples
    ws = Workspace.from_config(cfg)
    elsewhere = f"../../../{cfg.user}/{cfg.run}/samples/big.png"  # a path, even to an image that exists: ignored
    assert (ws.samples_dir(cfg.run) / elsewhere).is_file()
    save_favourites(ws, cfg.run, ["small.png", "deleted-since.png", elsewhere])  # a tick outlives its image: ignored
    manifest = json.loads(export(cfg, analyzer).read_text())  # no scores needed: the favourites are the pick
    assert [r["file"] for r in manifest["images"]] == ["small.png"]
    named = json.loads(export(make_config("alice", "infer.export_files=[big.png]"), analyzer).read_text())
    assert [r["file"] for r in named["images"]] == ["big.png"]
    ws.favourites(cfg.run).write_text("{not json")  # a damaged file is no ticks: every kept image, as before
    with pytest.raises(HeadshotsError, match="No scores"):
        export(cfg)


def test_export_errors_say_what_to_do(samples, make_config, caplog):
    cfg, out = samples
    with pytest.raises(HeadshotsError, match="No scores"):
        export(cfg)
    (out / "scores.json").write_text('{"images": [{"file": "sm')  # cut short: json's traceback (new-user walk)
    with pytest.raises(HeadshotsError, match="scores.json cannot be read") as err:
        export(cfg)
    assert err.value.hint.startswith("Score the images again: make recover USER=alice PROFILE=tiny")
    # None kept: the hint names an image that is there (the best first), not a made-up or deleted one
    (out / "scores.json").write_text(json.dumps({"images": [
        {"file": "deleted-since.png", "kept": False, "reason": "no face found", "face_box": None},
        {"file": "small.png", "kept": False, "reason": "does not look like you (0.31)", "face_box": None}]}))
    with pytest.raises(HeadshotsError, match="No kept images") as err:
        export(cfg)
    assert "IMAGES=small.png" in err.value.hint
    export(make_config("alice", "infer.export_files=[small.png]"))  # the person's pick wins, and is told what the review said
    from infer.export import EXPORT_LOCK
    from tests.conftest import held_elsewhere

    with held_elsewhere(out.parent / EXPORT_LOCK), pytest.raises(HeadshotsError, match="Another export of these images"):
        export(make_config("alice", "infer.export_files=[small.png]"))  # two at once built in one folder (a review)
    assert "small.png was dropped by the review (does not look like you (0.31)): exported as you asked" in caplog.text
    with pytest.raises(HeadshotsError, match="nope.png") as err:
        export(make_config("alice", "infer.export_files=[nope.png]"))
    assert "e.g. small.png" in err.value.hint  # a name that is there, as discard and more give one (a new-user walk)
    with pytest.raises(HeadshotsError, match="small: not in") as err:
        export(make_config("alice", "infer.export_files=[small]"))
    assert err.value.hint.startswith("Did you mean: small -> small.png?")
    caplog.clear()
    export(make_config("alice", "infer.export_files=[small.png]"))  # a source smaller than a size: said, not only recorded
    assert "small.png, cv-600x800: source too small for 600x800: exported at 360x480, not upscaled" in caplog.text
    for path in ("../../../../data/users/alice/selfies/01.jpg", "/etc/hostname"):  # never a file outside samples/
        with pytest.raises(HeadshotsError, match="only your generated images"):
            export(make_config("alice", f"infer.export_files=[{path}]"))


def test_crop_without_a_face_is_centred():
    box, too_small = crop_box((1000, 500), None, SIZES[0])
    assert box == [250, 0, 750, 500] and not too_small


def test_a_kept_image_deleted_by_hand_is_left_out_not_blamed_on_names_never_given(samples, analyzer, caplog):
    """`make export` (no IMAGES) after a kept image was deleted by hand said "Check the names you gave (IMAGES=...)"."""
    cfg, out = samples
    scores = {"images": [{"file": name, "kept": True, "face_box": None} for name in ("big.png", "gone.png")]}
    (out / "scores.json").write_text(json.dumps(scores))
    manifest = json.loads(export(cfg, analyzer).read_text())
    assert [r["file"] for r in manifest["images"]] == ["big.png"] and "gone.png: kept by the review but no longer" in caplog.text


def test_export_with_no_images_says_to_generate_first(make_config, analyzer):
    """Nothing generated, or every image deleted since: not "score the images first", which would score nothing."""
    cfg = make_config("alice")
    with pytest.raises(HeadshotsError, match="No generated images in .* to export") as refused:
        export(cfg, analyzer)
    assert refused.value.hint.startswith("Generate some first: make infer USER=alice")
    assert not Workspace.from_config(cfg).user_outputs.exists()  # a mistyped name leaves no folders of its own
