"""Captions: cleaning rules, the 77-token fit, a tiny random-weight BLIP through prepare (loaded by
the same code a hub id goes through), the person's edits in captions.json winning, load errors."""

import json
import random
from pathlib import Path

import datasets
import pytest
import torch

from headshots.caption_edits import captions_edited_since_prepare, edited_captions
from headshots.config import PrepareConfig, load_config
from headshots.errors import ConfigError, HeadshotsError, WeightsError
from headshots.workspace import Workspace
from service.purge import purge
from tests.conftest import copy_photos
from train.captions import (
    IDENTITY_WORDS,
    ModelCaptioner,
    clean_caption,
    collapse_repeats,
    compose_caption,
    generate_captions,
    token_count,
    words_of,
)
from train.prepare import prepare

PREFIX = "a photo of ohwx person"
# The tiny captioner's whole vocabulary: identity words, BLIP junk and things that vary, so its
# random output is exactly the garbage cleaning has to survive.
TINY_WORDS = [
    "a", "an", "the", "of", "in", "with", "wearing", "and", "there", "is", "man", "woman", "young", "old", "bald",
    "arafed", "his", "her", "brown", "black", "hair", "blue", "white", "shirt", "suit", "tie", "wall", "background",
    "glasses", "smiling",
]


def _varying_part(caption: str) -> list[str]:
    assert caption.startswith(PREFIX)
    return words_of(caption[len(PREFIX):].lstrip(", "))


def _assert_clean(caption: str) -> None:
    varies = _varying_part(caption)
    assert not set(varies) & IDENTITY_WORDS, caption
    assert collapse_repeats(varies) == varies, f"repetition loop left in {caption!r}"
    assert token_count(caption) <= 77


# -- cleaning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, cleaned", [
    ("bald bald bald bald", ""),
    ("a man with a man with a hat", "with a hat"),
    ("blue shirt blue shirt blue shirt", "blue shirt"),
    ("wearing a shirt and a shirt and a shirt", "wearing a shirt"),
    ("arafed man in a blue shirt shirt shirt", "in a blue shirt"),
    ("there is a young woman that is wearing a blue shirt", "wearing a blue shirt"),
])
def test_cleaning_removes_loops_and_filler(raw, cleaned):
    assert clean_caption(raw) == cleaned


@pytest.mark.parametrize("raw, cleaned", [
    ("a smiling young man in a suit standing in front of a white wall", "smiling in a suit standing in front of a white wall"),
    ("a close up of a woman with glasses", "a close up with glasses"),
    ("a woman with brown hair and glasses", "with glasses"),
    ("a woman with long brown hair smiling", "with long hair smiling"),
    ("a black man in a black suit", "in a black suit"),  # a colour names the person only next to them
    ("araffe old woman with her arms crossed", "with their arms crossed"),
    ("a 30-year-old asian man", ""),
    ("The image shows a man. He is wearing a grey jacket.", "they are wearing a grey jacket"),
])
def test_cleaning_removes_the_person_and_keeps_what_varies(raw, cleaned):
    assert clean_caption(raw) == cleaned


def test_cleaning_survives_word_salad():
    """Whatever a broken captioner emits, no identity word and no loop gets through."""
    rng = random.Random(0)
    for _ in range(300):
        raw = " ".join(rng.choice(TINY_WORDS + [",", "."]) for _ in range(rng.randint(1, 60)))
        _assert_clean(compose_caption(PREFIX, clean_caption(raw)))


def test_compose_keeps_the_prefix_and_fits_77_tokens_at_a_clause_boundary():
    assert compose_caption(PREFIX, "") == PREFIX
    assert compose_caption(PREFIX, "wearing a blue shirt") == f"{PREFIX}, wearing a blue shirt"
    colours = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "black", "brown", "grey", "gold", "teal"]
    clauses = [f"with a {colour} hat" for colour in colours]
    long = compose_caption(PREFIX, ", ".join(clauses * 2))
    assert token_count(long) <= 77 < token_count(f"{PREFIX}, {', '.join(clauses * 2)}")
    assert long.startswith(f"{PREFIX}, with a red hat") and long.endswith(" hat")  # whole clauses only


def test_compose_cuts_one_overlong_clause_at_a_word_without_a_dangling_connector():
    caption = compose_caption(PREFIX, "wearing " + " and a ".join(["blue shirt"] * 60))
    assert token_count(caption) <= 77 and caption.startswith(f"{PREFIX}, wearing blue shirt")
    assert caption.split()[-1] not in ("a", "and", "of", "with")


def test_captioner_settings_are_validated():
    with pytest.raises(ConfigError, match="prepare.captioner"):
        PrepareConfig(captioner="blip")
    with pytest.raises(ConfigError, match="prepare.caption_max_new_tokens"):
        PrepareConfig(caption_max_new_tokens=0)


# -- the model captioner -----------------------------------------------------------------------------
@pytest.fixture
def make_config(tmp_path):
    """conftest's make_config without building the tiny SDXL: prepare never loads the base model."""

    def _make(user: str = "alice", *overrides: str):
        return load_config(user, "tiny", overrides=[
            f"paths.data_root={tmp_path / 'data'}", f"paths.outputs_root={tmp_path / 'outputs'}", *overrides,
        ])

    return _make


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    """BLIP's architecture (vision encoder + text decoder, BERT tokenizer, BLIP image processor) at
    toy size with random weights, saved like a hub checkpoint."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *TINY_WORDS])}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(
        vision_config={**layers, "image_size": 32, "patch_size": 8},
        text_config={**layers, "vocab_size": len(vocab), "max_position_embeddings": 64, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.sep_token_id, "sep_token_id": tokenizer.sep_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        projection_dim=32,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-blip"
    BlipForConditionalGeneration(config).save_pretrained(path)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(path)
    return path


def test_model_captions_through_prepare_and_edits_win(make_config, tiny_blip, faces_dir, analyzer):
    cfg = make_config("alice", "prepare.captioner=model", f"prepare.caption_model={tiny_blip}", "prepare.caption_max_new_tokens=24")
    ws = Workspace.from_config(cfg)
    copy_photos(sorted((faces_dir / "georgia-tech" / "s01").glob("*.jpg"))[:2], ws.selfies)

    prepare(cfg, analyzer)
    dataset = datasets.load_from_disk(str(ws.prepared))
    raw = ModelCaptioner(str(tiny_blip), torch.device("cpu"), max_new_tokens=24)(list(dataset["image"]))
    assert any(collapse_repeats(words_of(r)) != words_of(r) for r in raw), raw  # random weights loop: cleaning had work
    for caption in dataset["caption"]:
        _assert_clean(caption)
    assert any(caption != PREFIX for caption in dataset["caption"])  # the model said something
    assert dataset["caption"] == dataset["generated_caption"]
    assert json.loads(ws.captions.read_text()) == dict(zip(dataset["file"], dataset["caption"]))

    assert not captions_edited_since_prepare(ws)

    edited_file, other = dataset["file"][:2]
    captions = json.loads(ws.captions.read_text())
    captions[edited_file] = f"{PREFIX}, wearing a red scarf, outdoors"
    ws.captions.write_text(json.dumps(captions))
    assert captions_edited_since_prepare(ws)  # the web app and the batch prepare again

    prepare(make_config("alice"), analyzer)  # switch to the template captioner: only unedited captions follow
    dataset = datasets.load_from_disk(str(ws.prepared))
    by_file = dict(zip(dataset["file"], dataset["caption"]))
    assert by_file[edited_file] == f"{PREFIX}, wearing a red scarf, outdoors"
    assert by_file[other] == PREFIX
    assert json.loads(ws.captions.read_text()) == by_file
    assert not captions_edited_since_prepare(ws)

    without_other = {edited_file: by_file[edited_file]}  # a line deleted: captioned afresh, as the template would anyway
    ws.captions.write_text(json.dumps(without_other))
    assert not captions_edited_since_prepare(ws)
    ws.captions.write_text(json.dumps({other: by_file[other]}))  # the edit deleted: its photo captioned afresh
    assert captions_edited_since_prepare(ws)
    ws.captions.write_text("{not json")  # broken: prepare says what is wrong
    assert captions_edited_since_prepare(ws)

    purge(ws)
    assert not ws.captions.exists()


def test_a_broken_captions_file_says_how_to_fix_it(make_config):
    ws = Workspace.from_config(make_config("bob"))
    ws.user_dir.mkdir(parents=True)
    ws.captions.write_text('{"01.jpg": "a photo of ohwx person",}')
    with pytest.raises(HeadshotsError, match="not valid JSON") as err:
        edited_captions(ws)
    assert "delete it" in err.value.hint
    ws.captions.write_text('{"01.jpg": "a photo of ohwx person", "02.jpg": " "}')  # an edit that emptied one
    with pytest.raises(HeadshotsError, match="none for '02.jpg'"):
        edited_captions(ws)


@pytest.mark.parametrize("source, hint", [("missing-model-folder", "hub id"), ("/nowhere/blip", "folder")])
def test_a_missing_caption_model_is_a_weights_error_with_a_hint(make_config, source, hint):
    from PIL import Image

    cfg = make_config("bob", "prepare.captioner=model", f"prepare.caption_model={source}")
    with pytest.raises(WeightsError, match="caption model") as err:
        generate_captions(cfg, [Image.new("RGB", (64, 64))])
    assert hint in err.value.hint


def test_a_caption_prepare_wrote_is_not_an_edit_for_its_spaces(make_config):
    """captions.json is read stripped; a caption with a trailing space (a class noun quoted with one) must not read
    as edited right after prepare wrote it, or the web app and the batch would prepare and train again."""
    ws = Workspace.from_config(make_config("bob"))
    caption = "a photo of ohwx woman "
    datasets.Dataset.from_dict({"file": ["01.jpg"], "caption": [caption], "generated_caption": [caption]}).save_to_disk(str(ws.prepared))
    ws.captions.write_text(json.dumps({"01.jpg": caption}))
    assert not captions_edited_since_prepare(ws)
