"""More like this: variations of a generated image the person likes, by img2img from it with the person's
adapter (the tiny SDXL pipeline, a real trained LoRA), then judged by the same scoring as every image."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headshots.errors import ConfigError, HeadshotsError
from headshots.workspace import Workspace
from tests.conftest import held_elsewhere, tiny_config

SETTINGS = ("train.max_steps=2", "infer.styles=[linkedin]", "infer.images_per_style=2", "infer.steps=2", "infer.more.count=2",
            "infer.more.strength=0.5")


@pytest.fixture(scope="module")
def generated_once(tmp_path_factory, tiny_model, prepared_once) -> Path:
    """alice's adapter (2 steps) and two linkedin images, made once for this module's tests (3 s each time). Only
    its config.yaml records name this folder: the settings a run had, never read back for a path."""
    from infer.generate import generate
    from train.recipe import train

    root = tmp_path_factory.mktemp("generated")
    shutil.copytree(prepared_once, root / "data")
    cfg = tiny_config(root, tiny_model, "alice", *SETTINGS)
    train(cfg)
    generate(cfg)
    return root


@pytest.fixture
def generated(generated_once, make_config, tmp_path):
    """A copy of `generated_once` of the test's own (tests delete, add and damage images)."""
    for folder in ("data", "outputs", "cache"):
        if (generated_once / folder).exists():
            shutil.copytree(generated_once / folder, tmp_path / folder)
    cfg = make_config("alice", *SETTINGS)
    return cfg, Workspace.from_config(cfg).samples_dir(cfg.run)


def liking(cfg, image: str, **more):
    return replace(cfg, infer=replace(cfg.infer, more=replace(cfg.infer.more, image=image, **more)))


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_variations_are_named_after_the_image_and_numbered_on():
    from infer.variations import find_source, variation_numbers

    entries = [{"file": "linkedin-00.png", "detail": {"file": "linkedin-00.detail.png"}}, {"file": "linkedin-00-more-00.png"},
               {"file": "linkedin-00-more-03.png"}, {"file": "linkedin-01.png", "detail": {"skipped": "no usable face"}}]
    alice = Workspace("alice", Path("d"), Path("o"))
    assert find_source(entries, "linkedin-00.detail.png", Path("samples"), alice) is entries[0]  # the face-detailed version shown
    with pytest.raises(HeadshotsError, match="No generated images in samples") as refused:  # all deleted: not "pick one of: "
        find_source([], "linkedin-00.png", Path("samples"), alice)
    assert refused.value.hint == "Generate some first: make infer USER=alice"
    for name in ("linkedin-02.png", "linkedin-02"):  # deleted from the review: said so, not "not one of the images"
        with pytest.raises(HeadshotsError, match=r"^linkedin-02.png was deleted from samples \(discarded\)") as refused:
            find_source(entries, name, Path("samples"), alice, discarded=["linkedin-02.png"])
        assert refused.value.hint.startswith("Pick one of the images kept: linkedin-00.png, "), refused.value.hint
    taken = [e["file"] for e in entries]
    assert variation_numbers(entries[0], taken, 2) == [(4, "linkedin-00-more-04.png"), (5, "linkedin-00-more-05.png")]
    assert variation_numbers(entries[2], taken, 1) == [(4, "linkedin-00-more-04.png")]  # more of a variation: same stem
    assert variation_numbers(entries[3], taken, 1) == [(0, "linkedin-01-more-00.png")]
    assert variation_numbers(entries[3], [*taken, "linkedin-01-more-00.png"], 1) == [(1, "linkedin-01-more-01.png")]  # deleted


def test_more_like_one_image_draws_from_it_appends_to_the_manifest_and_is_scored(generated, analyzer):
    from infer.gallery import write_gallery
    from infer.generate import draw, load_pipelines, person_context
    from infer.score import score
    from infer.variations import more_like

    cfg, samples = generated
    made = more_like(liking(cfg, "linkedin-00.png"))
    assert [s.file for s in made] == ["linkedin-00-more-00.png", "linkedin-00-more-01.png"]
    manifest = json.loads((samples / "manifest.json").read_text())["images"]
    source, *_ = manifest
    assert [e["file"] for e in manifest] == ["linkedin-00.png", "linkedin-01.png", *(s.file for s in made)]
    for entry in manifest[2:]:
        assert (entry["source"], entry["strength"], entry["style"]) == ("linkedin-00.png", 0.5, "linkedin")
        assert (entry["prompt"], entry["negative_prompt"]) == (source["prompt"], source["negative_prompt"])
        assert Image.open(samples / entry["file"]).size == Image.open(samples / "linkedin-00.png").size
    assert len({e["seed"] for e in manifest}) == 4  # fresh seeds, none of generate's
    assert manifest[0]["source"] is None and manifest[0]["strength"] is None  # generated from noise

    # The manifest entry alone draws the same image again; drawn from the other image instead, it differs.
    pipes = load_pipelines(cfg, person_context(cfg).adapter)
    entry = manifest[2]
    again = draw(pipes, cfg, [entry], samples)[0]
    assert np.abs(np.asarray(again, dtype=np.int16) - pixels(samples / entry["file"])).max() <= 1
    elsewhere = draw(pipes, cfg, [{**entry, "source": "linkedin-01.png"}], samples)[0]
    assert np.abs(np.asarray(elsewhere, dtype=np.int16) - pixels(samples / entry["file"])).mean() > 1

    # More like a variation: more of the same image, numbered on, started from the variation itself.
    (third,) = more_like(liking(cfg, "linkedin-00-more-01.png", count=1), pipes)
    assert (third.file, third.source) == ("linkedin-00-more-02.png", "linkedin-00-more-01.png")

    scores = score(cfg, analyzer)
    assert sorted(s.file for s in scores) == sorted([*(e["file"] for e in manifest), "linkedin-00-more-02.png"])
    assert {s.file: s.source for s in scores if s.source} == {**{s.file: "linkedin-00.png" for s in made},
                                                              "linkedin-00-more-02.png": "linkedin-00-more-01.png"}
    assert "more like linkedin-00-more-01.png" in write_gallery(cfg).read_text()


def test_a_mistyped_request_is_refused_before_the_model_loads(generated, tmp_path):
    """`make more IMAGE=typo` or `make infer STYLES=typo` says so at once, not after loading SDXL (~30 s): with the
    model's folder gone, loading first would fail on the model instead."""
    from infer.detail import with_detail
    from infer.variations import more_like

    cfg, _ = generated
    unloadable = replace(cfg, model=replace(cfg.model, pretrained=str(tmp_path / "no-model-here")))
    with pytest.raises(HeadshotsError, match="not one of the images"):
        with_detail(liking(unloadable, "linkedin-09.png"), more_like)
    with pytest.raises(HeadshotsError, match="Unknown style 'lnkedin'"):
        with_detail(replace(unloadable, infer=replace(unloadable.infer, styles=["lnkedin"])))
    with pytest.raises(HeadshotsError, match="no-model-here"):  # a good request does load it
        with_detail(liking(unloadable, "linkedin-00.png"), more_like)


def test_an_image_that_was_not_generated_is_refused_with_the_choices(generated, make_config, capsys):
    from headshots.cli import build_parser, run
    from infer.__main__ import COMMANDS, HELP
    from infer.variations import more_like

    cfg, samples = generated
    before = (samples / "manifest.json").read_text()
    for name, message in ((None, "No image named"), ("../../../data/users/alice/selfies/01.jpg", "not one of the images"),
                          ("linkedin-07.png", "not one of the images")):
        with pytest.raises(HeadshotsError, match=message) as refused:
            more_like(liking(cfg, name), pipes=object())  # refused before any model is touched
        assert "linkedin-00.png" in refused.value.hint
        if name is None:
            assert "make more USER=alice PROFILE=tiny IMAGE=linkedin-00.png" in refused.value.hint
    for name in ("outputs/alice/default/samples/linkedin-01.png", "linkedin-01"):  # tab-completed, or without .png
        with pytest.raises(HeadshotsError, match="not one of the images") as refused:
            more_like(liking(cfg, name), pipes=object())
        assert refused.value.hint == "Did you mean linkedin-01.png? (make more USER=alice PROFILE=tiny IMAGE=linkedin-01.png)"
    assert (samples / "manifest.json").read_text() == before

    nothing = make_config("nobody")
    with pytest.raises(HeadshotsError, match="No generated images") as refused:
        more_like(liking(nothing, "linkedin-00.png"))
    assert "make infer USER=nobody" in refused.value.hint

    for value, message in (("infer.more.strength=0", "infer.more.strength"), ("infer.more.count=0", "infer.more.count")):
        with pytest.raises(ConfigError, match=message):
            make_config("alice", value)
    argv = ["more", "--user", "alice", "--profile", "tiny", f"paths.data_root={cfg.paths.data_root}",
            f"paths.outputs_root={cfg.paths.outputs_root}", f"model.pretrained={cfg.model.pretrained}", "infer.more.image=x.png"]
    assert run(build_parser("python -m infer", "", HELP), COMMANDS, argv) == 2
    err = capsys.readouterr().err
    assert "error: 'x.png' is not one of the images generated" in err and "Traceback" not in err

    (samples / "manifest.json").write_text('{"images": [')  # cut short: every stage after generate says so
    for command in ("score", "more", "discard", "detail"):
        assert run(build_parser("python -m infer", "", HELP), COMMANDS, [command, *argv[1:]]) == 2
        err = capsys.readouterr().err
        assert "manifest.json cannot be read (JSONDecodeError" in err and "Traceback" not in err, err
        assert "make recover USER=alice PROFILE=tiny" in err  # runnable as printed, with the profile the images were made on

    # ... and the images rebuild it: each PNG carries its own entry. A PNG without one is left alone.
    Image.new("RGB", (8, 8)).save(samples / "not-ours.png")
    assert run(build_parser("python -m infer", "", HELP), COMMANDS, ["recover", *argv[1:-1]]) == 0
    out = capsys.readouterr().out
    assert "added from their own entries: linkedin-00.png, linkedin-01.png" in out and "left alone (no entry of their own): not-ours.png" in out
    assert json.loads((samples / "manifest.json").read_text())["images"] == json.loads(before)["images"]
    (broken,) = samples.glob("manifest.broken-*.json")
    assert broken.read_text() == '{"images": ['  # kept, not thrown away
    assert (samples / "scores.json").is_file()

    (samples / "linkedin-01.png").unlink()  # an image gone: its entry goes on the next recovery
    assert run(build_parser("python -m infer", "", HELP), COMMANDS, ["recover", *argv[1:-1]]) == 0
    assert "gone, taken out: linkedin-01.png" in capsys.readouterr().out
    recovered = json.loads((samples / "manifest.json").read_text())
    assert [e["file"] for e in recovered["images"]] == ["linkedin-00.png"] and recovered["discarded"] == ["linkedin-01.png"]


def test_a_hand_broken_manifest_keeps_the_names_of_deleted_images_taken(generated, analyzer, capsys):
    """A manifest broken by a hand edit (a stray comma) is rebuilt from the images on disk, which do not say which
    images were deleted: the names its text still gives stay taken, so generating again does not redraw them."""
    from headshots.cli import build_parser, run
    from infer.__main__ import COMMANDS, HELP
    from infer.discard import discard
    from infer.generate import next_numbers
    from infer.manifest import names_taken

    cfg, samples = generated
    discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-01.png"])), analyzer)  # the last one
    text = (samples / "manifest.json").read_text()
    (samples / "manifest.json").write_text(text.replace('"discarded": [', '"discarded": [,'))
    argv = ["recover", "--user", "alice", "--profile", "tiny", f"paths.data_root={cfg.paths.data_root}",
            f"paths.outputs_root={cfg.paths.outputs_root}", f"model.pretrained={cfg.model.pretrained}"]
    assert run(build_parser("python -m infer", "", HELP), COMMANDS, argv) == 0
    assert "not on disk, their names never given again: linkedin-01.png" in capsys.readouterr().out
    recovered = json.loads((samples / "manifest.json").read_text())
    assert [e["file"] for e in recovered["images"]] == ["linkedin-00.png"] and recovered["discarded"] == ["linkedin-01.png"]
    assert next_numbers("linkedin", names_taken(recovered), samples, 1) == range(2, 3)


def test_discarded_images_leave_the_review_for_good_and_a_wrong_name_deletes_nothing(generated, analyzer, capsys):
    from headshots.cli import build_parser, run
    from infer.__main__ import COMMANDS, HELP
    from infer.discard import discard
    from infer.gallery import score_and_show
    from infer.variations import more_like

    cfg, samples = generated
    more_like(liking(cfg, "linkedin-00.png"))
    score_and_show(cfg, analyzer)
    manifest = (samples / "manifest.json").read_text()
    with pytest.raises(HeadshotsError, match="linkedin-09.png") as refused:
        discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-01.png", "linkedin-09.png"])), analyzer)
    assert "nothing was deleted" in refused.value.hint
    assert (samples / "manifest.json").read_text() == manifest and (samples / "linkedin-01.png").is_file()

    from infer.export import export

    export(replace(cfg, infer=replace(cfg.infer, export_files=["linkedin-01.png"])), analyzer)  # a crop of one to delete
    assert (samples.parent / "export" / "export.json").is_file()
    argv = ["discard", "--user", "alice", "--profile", "tiny", f"paths.data_root={cfg.paths.data_root}",
            f"paths.outputs_root={cfg.paths.outputs_root}", f"model.pretrained={cfg.model.pretrained}",
            "infer.discard_files=[linkedin-01.png,linkedin-00-more-00.png]"]
    assert run(build_parser("python -m infer", "", HELP), COMMANDS, argv) == 0
    said = capsys.readouterr().out
    assert "deleted: linkedin-01.png, linkedin-00-more-00.png" in said and f"gallery: {samples / 'gallery.html'}" in said
    left = ["linkedin-00.png", "linkedin-00-more-01.png"]
    assert [e["file"] for e in json.loads((samples / "manifest.json").read_text())["images"]] == left
    assert not (samples / "linkedin-01.png").exists() and not (samples / "linkedin-00-more-00.png").exists()
    scores = json.loads((samples / "scores.json").read_text())
    assert sorted(s["file"] for s in scores["images"]) == sorted(left)  # scored again: the review reads as if they were never made
    assert "linkedin-01.png" not in (samples / "gallery.html").read_text()
    assert not (samples.parent / "export").exists()  # the last export held a crop of a deleted image
    with pytest.raises(HeadshotsError, match="linkedin-01.png was deleted from .* \\(discarded\\)"):
        more_like(liking(cfg, "linkedin-01.png"), pipes=object())  # refused before any model is touched

    assert discard(replace(cfg, infer=replace(cfg.infer, discard_files=left)), analyzer) == left
    assert not any((samples / name).exists() for name in ("scores.json", "faces.json", "gallery.html"))
    assert json.loads((samples / "manifest.json").read_text())["images"] == []


def test_generating_again_after_a_discard_draws_new_images_not_the_deleted_ones(generated, analyzer, caplog):
    """A new round numbers on past the images deleted (same name and seed would draw the very image thrown away, and
    its favourite tick would come back); the crops of a deleted image leave the export, the others stay, and export
    is due again; a discard interrupted before its files went finishes when run again; the name the review shows for
    a face-detailed winner deletes the image."""
    from headshots.stages import read_record, stage_named, write_record
    from infer.discard import discard
    from infer.export import export
    from infer.gallery import score_and_show
    from infer.generate import generate

    cfg, samples = generated
    score_and_show(cfg, analyzer)
    Workspace.from_config(cfg).favourites(cfg.run).write_text(json.dumps({"files": ["linkedin-01.png", "linkedin-00.png"]}))
    export(replace(cfg, infer=replace(cfg.infer, export_files=["linkedin-00.png", "linkedin-01.png"])), analyzer)
    write_record(stage_named("export"), cfg, "as the chain wrote it", 1.0)
    seeds = {e["file"]: e["seed"] for e in json.loads((samples / "manifest.json").read_text())["images"]}
    assert discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-01.png"])), analyzer) == ["linkedin-01.png"]
    held = json.loads((samples.parent / "export" / "export.json").read_text())["images"]
    assert [r["file"] for r in held] == ["linkedin-00.png"] and all((samples.parent / "export" / c["path"]).is_file() for c in held[0]["exports"])
    assert not list((samples.parent / "export").rglob("linkedin-01*"))
    assert read_record(stage_named("export"), cfg) is None  # the kept images may differ now: exported again
    assert json.loads(Workspace.from_config(cfg).favourites(cfg.run).read_text())["files"] == ["linkedin-00.png"]

    made = generate(replace(cfg, infer=replace(cfg.infer, images_per_style=1), prepare=replace(cfg.prepare, class_noun="woman")))
    assert [s.file for s in made] == ["linkedin-02.png"] and made[0].seed not in seeds.values()
    assert "prepare.class_noun is 'woman', but this adapter was trained as 'person'" in caplog.text  # prompts say person
    assert "photo of ohwx person" in made[0].prompt

    # interrupted after the manifest was written, before the files went: the same command again finishes it
    manifest = json.loads((samples / "manifest.json").read_text())
    manifest["images"] = [e for e in manifest["images"] if e["file"] != "linkedin-02.png"]
    manifest["discarded"].append("linkedin-02.png")
    (samples / "manifest.json").write_text(json.dumps(manifest))
    assert discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-02.png"])), analyzer) == ["linkedin-02.png"]
    assert not (samples / "linkedin-02.png").exists()
    assert "linkedin-02.png" not in {s["file"] for s in json.loads((samples / "scores.json").read_text())["images"]}
    caplog.clear()  # and once more: nothing left to delete, and said so, not counted as discarded now
    with caplog.at_level(logging.INFO, logger="infer.discard"):
        assert discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-02.png"])), analyzer) == []
    assert "0 images discarded" in caplog.text and "discarded before: linkedin-02.png" in caplog.text

    # a face-detailed winner, shown by its .detail.png name (made here by hand; tests/test_detail.py runs the pass)
    manifest = json.loads((samples / "manifest.json").read_text())
    manifest["images"][0]["detail"] = {"file": "linkedin-00.detail.png"}
    (samples / "manifest.json").write_text(json.dumps(manifest))
    Image.open(samples / "linkedin-00.png").save(samples / "linkedin-00.detail.png")
    export(replace(cfg, infer=replace(cfg.infer, export_files=["linkedin-00.detail.png"])), analyzer)  # named as it won
    write_record(stage_named("export"), cfg, "as the chain wrote it", 1.0)
    assert discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-00.detail.png"])), analyzer) == [
        "linkedin-00.png", "linkedin-00.detail.png"]
    assert not (samples.parent / "export").exists() and read_record(stage_named("export"), cfg) is None  # its crops went


def test_an_image_deleted_by_hand_is_taken_out_not_a_traceback(generated, analyzer):
    from infer.discard import discard
    from infer.manifest import IMAGES_LOCK
    from infer.score import score

    cfg, samples = generated
    # another process changing the images (a `more` drawing): a discard meanwhile is refused, not interleaved
    with held_elsewhere(samples.parent / IMAGES_LOCK), pytest.raises(HeadshotsError, match="Another command is working on") as refused:
        discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-00.png"])), analyzer)
    assert "Wait for it to finish" in refused.value.hint and (samples / "linkedin-00.png").is_file()
    (samples / "linkedin-01.png").unlink()
    assert [s.file for s in score(cfg, analyzer)] == ["linkedin-00.png"]
    manifest = json.loads((samples / "manifest.json").read_text())
    assert [e["file"] for e in manifest["images"]] == ["linkedin-00.png"] and manifest["discarded"] == ["linkedin-01.png"]


def test_a_damaged_image_says_how_to_score_the_rest(generated, analyzer):
    """A generated PNG cut short (a full disk): scoring names it and the way on, and that way works."""
    from infer.discard import discard
    from infer.score import score

    cfg, samples = generated
    (samples / "linkedin-01.png").write_bytes((samples / "linkedin-01.png").read_bytes()[:3000])
    with pytest.raises(HeadshotsError, match="linkedin-01.png cannot be read") as refused:
        score(cfg, analyzer)
    # the command reaches this run's files: this profile's (and a RUN= when not the default run)
    assert refused.value.hint.startswith("Delete it and score the rest: make discard USER=alice PROFILE=tiny IMAGES=linkedin-01.png")
    discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-01.png"])), analyzer)
    assert [s["file"] for s in json.loads((samples / "scores.json").read_text())["images"]] == ["linkedin-00.png"]


def test_scoring_measures_only_new_images_and_judges_exactly_as_from_scratch(generated, analyzer, monkeypatch):
    from dataclasses import asdict

    from infer.score import score
    from infer.variations import more_like

    cfg, samples = generated
    import infer.score

    measured: list[int] = []
    rows = analyzer.similarity_rows  # called by scoring's measurements only (the glasses check detects too)
    monkeypatch.setattr(analyzer, "similarity_rows", lambda images, *rest: measured.append(len(images)) or rows(images, *rest))
    detected: list[int] = []  # faces looked for: in the images, and in the selfie crops for the glasses check
    detect = analyzer.detect_many
    monkeypatch.setattr(analyzer, "detect_many", lambda images, *rest: detected.append(len(images)) or detect(images, *rest))
    decoded: list[str] = []
    load = infer.score.load_rgb
    monkeypatch.setattr(infer.score, "load_rgb", lambda path, *rest: decoded.append(path.name) or load(path, *rest))
    score(cfg, analyzer)
    more_like(liking(cfg, "linkedin-00.png"))
    decoded.clear()
    again = [asdict(s) for s in score(cfg, analyzer)]
    assert measured == [2, 2]  # the two generated, then only the two variations
    assert sorted(decoded) == ["linkedin-00-more-00.png", "linkedin-00-more-01.png"]  # the others are not even decoded
    assert detected == [5, 2, 2]  # the 5 selfie crops once: while the prepared rows are the same, not again
    (samples / "faces.json").unlink()
    assert [asdict(s) for s in score(cfg, analyzer)] == again and measured[-1] == 4  # from scratch: the same verdicts

    (samples / "linkedin-01.png").write_bytes((samples / "linkedin-00.png").read_bytes())  # a file changed: measured again
    score(cfg, analyzer)
    assert measured[-1] == 1
    other = replace(cfg, face=replace(cfg.face, min_confidence=0.9))  # other face settings: all again
    score(other, analyzer)
    assert measured[-1] == 4

    stored = json.loads((samples / "faces.json").read_text())  # a hand-broken cache costs a measurement, not a traceback
    stored["images"]["linkedin-00.png"]["thumbnail"] = "not base64!"
    stored["images"]["linkedin-01.png"] = "nonsense"
    (samples / "faces.json").write_text(json.dumps(stored))
    score(other, analyzer)
    assert measured[-1] == 2


def test_a_discard_of_names_not_generated_says_which_were_meant_and_deletes_nothing(generated, analyzer):
    from infer.discard import discard

    cfg, samples = generated
    tab_completed = "outputs/alice/default/samples/linkedin-01.png"
    for names, hint in (([tab_completed], f"Did you mean: {tab_completed} -> linkedin-01.png? "),
                        (["linkedin-00.png linkedin-01.png"], "comma-separated")):
        with pytest.raises(HeadshotsError, match="Not among the images generated") as refused:  # IMAGES="a b" reaches it as one name
            discard(replace(cfg, infer=replace(cfg.infer, discard_files=names)), analyzer)
        assert hint in refused.value.hint and "nothing was deleted" in refused.value.hint
    assert (samples / "linkedin-00.png").is_file() and (samples / "linkedin-01.png").is_file()
    from infer.export import EXPORT_LOCK
    from tests.conftest import held_elsewhere

    manifest = (samples / "manifest.json").read_text()
    with held_elsewhere(samples.parent / EXPORT_LOCK), pytest.raises(HeadshotsError, match="Another export"):
        discard(replace(cfg, infer=replace(cfg.infer, discard_files=["linkedin-01.png"])), analyzer)
    # refused under an export, it had deleted the image already (a re-walk): now nothing
    assert (samples / "linkedin-01.png").is_file() and (samples / "manifest.json").read_text() == manifest
