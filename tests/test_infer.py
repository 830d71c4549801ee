"""Styles, generation from base + adapter, the face-similarity filter and the gallery."""

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from safetensors.torch import load_file, save_file

from headshots.errors import ConfigError
from headshots.tiny_sdxl import TOKENIZER_DIR
from headshots.workspace import ADAPTER_WEIGHTS, Workspace
from infer.detail import face_prompts
from infer.styles import FIELDS, available_styles, check_prompt_lengths, load_style

REQUIRED_STYLES = {"linkedin", "corporate", "executive", "actor", "real-estate", "speaker"}


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import CLIPTokenizer

    return {"tokenizer": CLIPTokenizer.from_pretrained(TOKENIZER_DIR), "tokenizer_2": CLIPTokenizer.from_pretrained(TOKENIZER_DIR, pad_token="!")}


def test_style_library_is_complete_and_fits_clip(tokenizers):
    assert REQUIRED_STYLES <= set(available_styles())
    assert len(available_styles()) >= 10
    for name in available_styles():
        style = load_style(name)
        prompts = style.prompts("ohwx", "person")
        check_prompt_lengths(prompts, tokenizers, name)  # raises if CLIP would truncate
        assert style.clothing in prompts["prompt"] and style.background in prompts["prompt_2"]
        face = face_prompts(style, "ohwx", "person")
        check_prompt_lengths(face, tokenizers, name)
        # training gave each caption to both text encoders, the trigger at the same token in each: the second prompt
        # must name the person too (an ML review: it held the scene alone), and at the same token (an inference
        # review: the first opened with the framing, which put the trigger 5-8 tokens later there)
        for two in (prompts, face):
            assert trigger_tokens(two["prompt"], tokenizers["tokenizer"]) == trigger_tokens(two["prompt_2"], tokenizers["tokenizer_2"]) \
                == trigger_tokens("a photo of ohwx person", tokenizers["tokenizer"]), name
        # CLIP conditions on the words, not on a negation or a choice (an inference review: "no logos" asked for logos,
        # "tie or blouse" for both on one person): what to avoid goes in `negative`, one description per field
        for field in ("background", "clothing", "pose", "expression", "crop", "lighting", "tone"):
            assert not re.search(r"\b(no|not|without|or)\b", getattr(style, field)), (name, field)


def trigger_tokens(prompt: str, tokenizer) -> list[int]:
    """Where "ohwx" falls among the prompt's tokens."""
    ohwx = tokenizer("ohwx", add_special_tokens=False).input_ids
    ids = tokenizer(prompt).input_ids
    return [i for i in range(len(ids)) if ids[i:i + len(ohwx)] == ohwx]


def test_user_style_file_and_field_override(tmp_path):
    own = tmp_path / "garden.yaml"
    own.write_text("\n".join(f"{f}: my {f}" for f in FIELDS))
    style = load_style(str(own), {"background": "white wall"})
    assert style.name == "garden" and style.background == "white wall" and style.clothing == "my clothing"


@pytest.mark.parametrize(
    "name, overrides, message",
    [("nope", {}, r"Unknown style 'nope'\.\n"), ("LinkedIn", {}, "did you mean 'linkedin'"), ("actr", {}, "did you mean 'actor'"),
     ("linkedin", {"hat": "red"}, "unknown field")],
)
def test_style_errors(name, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_style(name, overrides)


def test_a_style_file_name_that_cannot_name_images_is_refused(tmp_path):
    """The name starts each image's file name: a `#` in it cut the gallery's image URLs short (a scoring review)."""
    own = tmp_path / "look#2.yaml"
    own.write_text("\n".join(f"{f}: my {f}" for f in FIELDS))
    with pytest.raises(ConfigError, match="its name 'look#2' names the images drawn in it") as refused:
        load_style(str(own))
    assert "Rename the file, e.g. to look-2.yaml" in refused.value.hint


def test_a_broken_style_file_is_named_not_a_traceback(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("description: x\nbackground: [unclosed\n")
    with pytest.raises(ConfigError, match=f"Style file {own} is not valid YAML"):
        load_style(str(own))
    own.write_text("- background\n- clothing\n")  # a list: the hint is a style's fields, not config sections
    with pytest.raises(ConfigError, match="holds a list") as refused:
        load_style(str(own))
    assert "field: words` line for each of description, background, clothing" in refused.value.hint


def test_overlong_prompt_is_refused(tokenizers):
    style = load_style("linkedin", {"clothing": "very " * 80 + "nice suit"})
    with pytest.raises(ConfigError, match="over CLIP's limit"):
        check_prompt_lengths(style.prompts("ohwx", "person"), tokenizers, "linkedin")


def test_an_adapter_is_refused_by_another_profile_before_any_model_loads(make_config, tmp_path):
    """A tiny demo adapter sent to SDXL would download ~7 GB first and then fail: the profile it was trained with
    is in its config, so the run stops at once, saying which profile fits."""
    from headshots.config import load_config, save_config
    from headshots.errors import HeadshotsError
    from headshots.workspace import ADAPTER_WEIGHTS
    from infer.generate import person_context

    tiny = make_config("alice")
    adapter = Workspace.from_config(tiny).adapter_dir(tiny.run)
    adapter.mkdir(parents=True)
    save_file({"unet.x.lora_A.weight": torch.zeros(2, 2)}, str(adapter / ADAPTER_WEIGHTS))
    (adapter / "adapter.json").write_text(json.dumps({"headshots.trigger": "ohwx"}))
    save_config(tiny, adapter / "config.yaml")
    assert person_context(tiny).trigger == "ohwx"
    paths = [f"paths.{key}={getattr(tiny.paths, key)}" for key in ("data_root", "outputs_root", "cache_root")]
    with pytest.raises(HeadshotsError, match="trained with the 'tiny' profile") as refused:
        person_context(load_config("alice", "sdxl", overrides=paths))
    assert "PROFILE=tiny" in refused.value.hint
    # a file of the adapter cut short (copied from the GPU machine, a full disk) ended in diffusers' OSError traceback
    # once the base model had loaded (new-user walk)
    weights = (adapter / ADAPTER_WEIGHTS).read_bytes()
    for name, cut in ((ADAPTER_WEIGHTS, weights[: len(weights) - 8]), ("adapter.json", b'{"headshots.trig')):
        good = (adapter / name).read_bytes()
        (adapter / name).write_bytes(cut)
        with pytest.raises(HeadshotsError, match=f"The adapter's {re.escape(name)} in .* cannot be read") as refused:
            person_context(tiny)
        assert refused.value.hint.startswith(f"Delete the folder {adapter} and run `make train USER=alice PROFILE=tiny`")
        (adapter / name).write_bytes(good)
    with (adapter / "config.yaml").open("a") as saved:  # edited by hand, or from another version
        saved.write("gone_section:\n  x: 1\n")
    with pytest.raises(HeadshotsError, match="Unknown config key `gone_section`") as refused:
        person_context(tiny)  # `make train` alone skips a finished training: the hint said "re-run training"
    assert refused.value.hint.startswith(f"Delete the folder {adapter} and run `make train USER=alice PROFILE=tiny`")


@pytest.fixture
def trained_user(prepared_user, make_config):
    from train.recipe import train

    cfg = make_config("alice", "train.max_steps=2")
    train(cfg)
    return cfg


def test_each_style_draws_from_seeds_of_its_own(make_config):
    """An inference review: seeds came from a style's place in `infer.styles`, so styles generated one at a time all
    started from seed 0, the same noise (similar composition and pose in every style), and a style's seeds changed
    with the styles listed beside it."""
    from infer.generate import seeds_for

    cfg = make_config("alice", "infer.seed=3")
    linkedin, actor = seeds_for(cfg, "linkedin", range(4)), seeds_for(cfg, "actor", range(4))
    assert not set(linkedin) & set(actor) and len(set(linkedin)) == 4
    assert seeds_for(cfg, "actor", range(2, 4)) == actor[2:]  # a later round numbered on draws on along the series
    assert seeds_for(make_config("alice", "infer.seed=4"), "actor", range(1)) == [actor[0] + 1]


def test_generate_records_seeds_redraws_from_an_entry_and_adds_rounds(trained_user, make_config, monkeypatch, caplog):
    import infer.generate
    from infer.generate import draw, generate, load_pipelines, person_context

    cfg = make_config("alice", "infer.styles=[linkedin,actor]", "infer.images_per_style=3", "infer.steps=2")
    pipes = load_pipelines(cfg, person_context(cfg).adapter)
    samples = generate(cfg, pipes)
    out = Workspace.from_config(cfg).samples_dir(cfg.run)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["style"] for i in manifest["images"]] == ["linkedin"] * 3 + ["actor"] * 3
    assert len({i["seed"] for i in manifest["images"]}) == 6
    first = {s.file: (out / s.file).read_bytes() for s in samples}

    # The 5th image's manifest entry alone draws it again (batch-of-one numerics may move a pixel value by
    # one level, nothing more).
    redrawn = draw(pipes, cfg, [manifest["images"][4]], out)[0]
    difference = np.abs(np.asarray(Image.open(out / samples[4].file)).astype(int) - np.asarray(redrawn).astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.05

    # Generating again adds a round: numbered on, new seeds, new pictures; the first round stays as it was.
    second = generate(cfg, pipes)
    assert [s.file for s in second] == [f"{style}-0{k}.png" for style in ("linkedin", "actor") for k in (3, 4, 5)]
    images = json.loads((out / "manifest.json").read_text())["images"]
    assert images[:6] == manifest["images"] and [i["file"] for i in images[6:]] == [s.file for s in second]
    assert len({i["seed"] for i in images}) == 12
    assert all((out / name).read_bytes() == data for name, data in first.items())
    newer, older = (np.asarray(Image.open(out / name)).astype(int) for name in ("linkedin-03.png", "linkedin-00.png"))
    assert np.abs(newer - older).mean() > 1

    # A round stopped part-way keeps what it finished: the manifest names each written batch, and only those.
    # Generating under its name again completes it (a retried job makes no more than it was asked for).
    real_sample, calls = infer.generate.sample, []

    def stopped_after_one_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_sample(*args, **kwargs)

    retry = make_config("alice", "infer.styles=[actor]", "infer.images_per_style=2", "infer.steps=2", "infer.batch_size=1",
                        "infer.round=r1")
    monkeypatch.setattr(infer.generate, "sample", stopped_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        generate(retry, pipes)
    images = json.loads((out / "manifest.json").read_text())["images"]
    assert [(i["file"], i["round"]) for i in images[12:]] == [("actor-06.png", "r1")] and (out / "actor-06.png").is_file()
    assert not (out / "actor-07.png").exists()
    monkeypatch.setattr(infer.generate, "sample", real_sample)
    assert [s.file for s in generate(retry, pipes)] == ["actor-06.png", "actor-07.png"]
    assert [i["file"] for i in json.loads((out / "manifest.json").read_text())["images"][12:]] == ["actor-06.png", "actor-07.png"]

    def not_loaded():
        raise AssertionError("the pipelines were loaded to complete a complete round")

    assert [s.file for s in generate(retry, not_loaded)] == ["actor-06.png", "actor-07.png"]  # complete: nothing drawn
    (out / "manifest.json").rename(out / "lost.json")  # lost: its images are said to be left out, before any drawing
    with caplog.at_level(logging.WARNING, logger="infer"), pytest.raises(AssertionError, match="were loaded"):
        generate(retry, not_loaded)
    assert "has images but no manifest.json" in caplog.text and "make recover USER=alice PROFILE=tiny" in caplog.text
    (out / "lost.json").rename(out / "manifest.json")
    assert len({i["round"] for i in images}) == 3  # two rounds named by the time, and r1


def test_filter_keeps_the_person_drops_others_and_ranks(prepared_user, make_config, faces_dir, analyzer):
    """Score real photos as if they were generated: alice's own photos must be kept and ranked,
    another person's and a blank frame dropped with their reasons."""
    from infer.gallery import write_gallery
    from infer.score import score

    cfg = make_config("alice")
    out = Workspace.from_config(cfg).samples_dir(cfg.run)
    out.mkdir(parents=True)
    sources = {
        "alice-a.png": faces_dir / "georgia-tech" / "s01" / "08.jpg",
        "alice-b.png": faces_dir / "georgia-tech" / "s01" / "12.jpg",
        "stranger.png": faces_dir / "georgia-tech" / "s02" / "08.jpg",
        "group.png": faces_dir / "azure-samples" / "_unlabelled_or_multiface" / "test-image-person-group.jpg",
    }
    for name, src in sources.items():
        Image.open(src).convert("RGB").save(out / name)
    Image.new("RGB", (128, 128), (90, 90, 90)).save(out / "blank.png")
    alice_a = Image.open(out / "alice-a.png")
    ImageEnhance.Brightness(alice_a.crop((4, 0, alice_a.width, alice_a.height))).enhance(1.1).save(out / "alice-a-again.png")
    names = [*sources, "blank.png", "alice-a-again.png"]
    manifest = {"images": [{"file": n, "style": "linkedin", "seed": i} for i, n in enumerate(names)]}
    (out / "manifest.json").write_text(json.dumps(manifest))

    scores = {s.file: s for s in score(cfg, analyzer)}
    # alice-a and its near-copy: the more similar one is kept, the other points at it.
    best, copy = sorted(["alice-a.png", "alice-a-again.png"], key=lambda f: -scores[f].similarity)
    assert not scores[copy].kept and scores[copy].reason == f"near-duplicate of {best}"
    assert all(c["passed"] for c in scores[copy].reasons[:-1]) and scores[copy].reasons[-1]["check"] == "duplicate"
    scores["alice-a.png"] = scores[best]
    assert scores["alice-a.png"].kept and scores["alice-b.png"].kept
    assert {scores["alice-a.png"].rank, scores["alice-b.png"].rank} == {1, 2}
    assert [c["check"] for c in scores["alice-a.png"].reasons] == ["face", "likeness", "eyes", "framing", "glasses", "duplicate"]
    assert scores["blank.png"].reasons == [{"check": "face", "passed": False, "detail": "no face found"}]
    assert not scores["stranger.png"].kept and "does not look like you" in scores["stranger.png"].reason
    assert not scores["group.png"].kept and "faces" in scores["group.png"].reason
    assert not scores["blank.png"].kept and scores["blank.png"].reason == "no face found"
    assert scores["alice-a.png"].similarity_max >= scores["alice-a.png"].similarity

    saved = json.loads((out / "scores.json").read_text())
    # The person's own bar: 0.75 x their selfies' leave-one-out likeness, above the global floor (the weights' calibrated one).
    floor = analyzer.similarity_threshold(cfg.filter)
    assert saved["threshold_floor"] == floor and saved["threshold"] == pytest.approx(max(floor, 0.75 * saved["loo_similarity"]), abs=1e-4)
    assert saved["selfies_with_glasses"] == 0.0 and scores["alice-a.png"].glasses is False
    assert [i["file"] for i in saved["images"][:2]] == sorted([best, "alice-b.png"], key=lambda f: scores[f].rank)
    page = write_gallery(cfg).read_text()
    assert all(n in page for n in names) and "does not look like you" in page
    blank = page.split("data-file='blank.png'>")[1].split("</ul>")[0]
    assert blank.count("no face found") == 1, blank  # said once, in its checks (a walk saw it twice on the card)


def test_a_chain_infer_stage_stopped_part_way_then_retried_draws_only_what_its_round_misses(trained_user, make_config,
                                                                                               monkeypatch):
    """What the batch runner's retry of a killed infer worker does: the stage's round is named after its fingerprint,
    so the retry completes it instead of adding a second round."""
    import infer.generate
    from headshots.stages import forget, stage_named
    from service.chain import chain_round, run_stage

    cfg = make_config("alice", "infer.styles=[linkedin]", "infer.images_per_style=3", "infer.steps=2", "infer.batch_size=1")
    real_sample, calls = infer.generate.sample, []

    def killed_after_two_batches(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("worker killed")
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(infer.generate, "sample", killed_after_two_batches)
    with pytest.raises(RuntimeError, match="worker killed"):  # not a person's error: it propagates, Ray retries it
        run_stage(stage_named("infer"), cfg)
    drawn = []
    monkeypatch.setattr(infer.generate, "sample", lambda *args, **kwargs: drawn.append(1) or real_sample(*args, **kwargs))
    result = run_stage(stage_named("infer"), cfg)
    assert result.state == "done" and result.details["images"] == 3 and len(drawn) == 1  # only the missing third
    samples = Workspace.from_config(cfg).samples_dir(cfg.run)
    images = json.loads((samples / "manifest.json").read_text())["images"]
    assert [i["file"] for i in images] == ["linkedin-00.png", "linkedin-01.png", "linkedin-02.png"]
    adapter = Workspace.from_config(cfg).adapter_dir(cfg.run) / ADAPTER_WEIGHTS
    assert {i["round"] for i in images} == {chain_round(cfg)}
    assert run_stage(stage_named("infer"), cfg).state == "skipped"  # and once done, the same inputs do nothing

    # Trained again on the same settings (captions edited by hand): same fingerprints, another adapter. Its round
    # must be drawn, not taken for the old adapter's finished one.
    weights = load_file(str(adapter))
    save_file({key: value + 0.01 for key, value in weights.items()}, str(adapter))
    forget(stage_named("fit"), cfg)  # as fit run again does
    again = run_stage(stage_named("infer"), cfg)
    assert again.state == "done" and again.details["images"] == 6 and again.fingerprint == result.fingerprint


def test_a_new_likeness_threshold_scores_the_chains_round_again_without_drawing_another(trained_user, make_config,
                                                                                         monkeypatch):
    """The chain named its round after infer's whole fingerprint, so a new `filter.threshold` (or face-detail
    setting) drew a second round, minutes on a GPU, where only scoring changes. The round is named after what its
    images are drawn from: the stage runs again and scores the round it has; another number of steps draws anew."""
    import infer.generate
    from headshots.stages import stage_named
    from service.chain import run_stage

    settings = ("infer.styles=[linkedin]", "infer.images_per_style=2", "infer.steps=2", "infer.batch_size=2")
    assert run_stage(stage_named("infer"), make_config("alice", *settings)).details["images"] == 2
    real_sample, drawn = infer.generate.sample, []
    monkeypatch.setattr(infer.generate, "sample", lambda *args, **kwargs: drawn.append(1) or real_sample(*args, **kwargs))
    strict = run_stage(stage_named("infer"), make_config("alice", *settings, "filter.threshold=0.999", "infer.detail.strength=0.5"))
    assert strict.state == "done" and strict.details == {**strict.details, "images": 2, "kept": 0} and not drawn
    scores = json.loads(Workspace.from_config(trained_user).scores(trained_user.run).read_text())
    assert scores["threshold"] >= 0.999
    more_steps = run_stage(stage_named("infer"), make_config("alice", *settings, "infer.steps=3"))
    assert more_steps.details["images"] == 4 and drawn


# A process that writes half an image by write_atomic, says where, and waits to be killed
KILLED_WRITER = """import sys, time
from pathlib import Path
from headshots.workspace import write_atomic
def half(temporary):
    temporary.write_bytes(b"\\x89PNG half")
    print(temporary, flush=True)
    time.sleep(60)
write_atomic(Path(sys.argv[1]), half)
"""


def test_an_image_writer_killed_midway_leaves_no_file_under_the_name(tmp_path):
    """kill -9 of a batch's infer worker while it saved a PNG left a 0-byte linkedin-08.png in the person's samples,
    which the retry numbered around. An image is written whole or not at all, and the killed writer's temporary file
    goes with the next write into the folder (its process has ended), whatever that write's name."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from headshots.workspace import ABANDONED_AFTER_S, write_atomic, writer
    from infer.manifest import png_entry, save_png

    image = tmp_path / "linkedin-08.png"
    killed = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(image)], stdout=subprocess.PIPE, text=True)
    temporary = Path(killed.stdout.readline().strip())  # written to, not yet renamed
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert not image.exists() and temporary.is_file()
    # writes in progress: this process's (running), another machine's on a shared disk (young); and a stale one of
    # that machine, which no process here can tell is gone
    busy = [tmp_path / f".linkedin-09.png.{writer()}.k2j4.tmp", tmp_path / ".linkedin-10.png.gpu-node-7-4242.x9q1.tmp"]
    stale = tmp_path / ".linkedin-11.png.gpu-node-7-4243.a8z0.tmp"
    for left in [*busy, stale]:
        left.write_bytes(b"")
    os.utime(stale, (time.time() - ABANDONED_AFTER_S - 1,) * 2)
    save_png(Image.new("RGB", (8, 8)), {"file": "linkedin-12.png", "seed": 12}, tmp_path / "linkedin-12.png")  # another image
    assert not temporary.exists() and not stale.exists() and all(left.exists() for left in busy)
    save_png(Image.new("RGB", (8, 8)), {"file": image.name, "seed": 8}, image)
    assert png_entry(image) == {"file": image.name, "seed": 8}
    assert oct(image.stat().st_mode & 0o777) == "0o600"  # the person's login only, as every file the stages write
    def disk_full(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise OSError("No space left on device")

    with pytest.raises(OSError):  # a write that fails leaves the old file and no temporary one
        write_atomic(image, disk_full)
    assert png_entry(image) == {"file": image.name, "seed": 8}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(left.name for left in busy), image.name, "linkedin-12.png"])
