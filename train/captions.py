"""Captions: what the adapter learns to separate from the trigger token.

Whatever a caption names (clothing, background, expression, glasses, light) stays a separate,
promptable concept; whatever it never names is absorbed by "{trigger} {class_noun}". So a caption
describes what varies between the photos and never the person: no gender, age, ethnicity, skin or
hair colour, and the face binds to the trigger.

Two captioners (`prepare.captioner`):
    template   every photo gets `prepare.caption` ("a photo of ohwx person"), the default
    model      `prepare.caption` + ", " + what an image-to-text model (BLIP, Florence-2, by hub id or
               local folder) says about the photo, cleaned by `clean_caption` and fitted to CLIP's 77 tokens

The person has the last word: prepare writes data/users/<user>/captions.json ({file: caption});
an entry edited there is used as written on the next prepare, the others follow the captioner.
An entry counts as edited when it differs from what the captioner produced last time, which the
dataset keeps in its `generated_caption` column.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from headshots.caption_edits import edited_captions
from headshots.config import Config, PrepareConfig
from headshots.errors import WeightsError
from headshots.faces import resolve_device
from headshots.hub import cached_first
from headshots.logs import get_logger
from headshots.workspace import Workspace

log = get_logger(__name__)

BATCH_SIZE = 8  # photos per generate call: a person has 5-20, so at most a few calls

# -- what identifies the person (removed, so it binds to the trigger) -------------------------
IDENTITY_NOUNS = frozenset({
    "man", "men", "woman", "women", "boy", "boys", "girl", "girls", "guy", "guys", "lady", "ladies",
    "gentleman", "gentlemen", "person", "persons", "people", "human", "individual", "male", "males",
    "female", "females", "child", "children", "kid", "kids", "adult", "adults", "teen", "teens",
    "teenager", "teenagers", "businessman", "businessmen", "businesswoman", "businesswomen"
})
IDENTITY_WORDS = IDENTITY_NOUNS | frozenset({
    "young", "younger", "old", "older", "elderly", "aged", "middle-aged", "senior", "teenage", "bald",
    "balding", "blond", "blonde", "brunette", "redhead", "redheaded", "asian", "african",
    "african-american", "caucasian", "hispanic", "latino", "latina", "european", "arab", "indian"
})
# Colours that describe the person only next to hair, skin or a person noun ("brown hair", "a black
# man") and are clothing or background everywhere else ("a black suit", "a white wall").
PERSON_COLOURS = frozenset({
    "black", "white", "brown", "dark", "light", "pale", "fair", "tan", "tanned", "olive", "grey",
    "gray", "silver", "red", "blond", "blonde", "auburn", "ginger", "golden"
})
GENDERED = {"he": "they", "she": "they", "his": "their", "her": "their", "him": "them",
            "himself": "themselves", "herself": "themselves"}
PLURAL_VERBS = {"is": "are", "has": "have", "was": "were"}  # "he is" -> "they is" -> "they are"

# -- captioner filler ---------------------------------------------------------------------------
FILLER_OPENINGS = tuple(
    tuple(phrase.split())
    for phrase in (
        "there is", "there are", "this is", "the image shows", "the image is", "this image shows",
        "in this image", "the photo shows", "a photo of", "a photograph of", "a picture of", "an image of",
    )
)
BLIP_ARTEFACT = re.compile(r"^ara+f+\w*$")  # BLIP's "arafed", "araffe", "arafly": noise from its training captions

ARTICLES = frozenset({"a", "an", "the"})
PREPOSITIONS = frozenset({
    "of", "with", "in", "on", "at", "by", "from", "near", "behind", "beside", "against", "under",
    "over", "for", "to", "into", "onto", "wearing", "holding"
})
CONJUNCTIONS = frozenset({"and", "or"})
RELATIVES = frozenset({"that", "who", "which", "is", "are"})
NOUN_PHRASE_STOPS = PREPOSITIONS | CONJUNCTIONS | RELATIVES | {","}
AGE = re.compile(r"^\d+-years?-old$|^\d+s$")
WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[,.;:!?]")


def template_caption(prepare: PrepareConfig) -> str:
    """The fixed caption ("a photo of ohwx person"): every caption starts with it."""
    return prepare.caption.format(trigger=prepare.trigger, class_noun=prepare.class_noun)


# -- cleaning: pure functions on word lists --------------------------------------------------------
def words_of(text: str) -> list[str]:
    """Lower-case words; sentence punctuation becomes a clause break (",")."""
    return ["," if token in ".;:!?" else token for token in WORD.findall(text.lower())]


def join_words(words: Sequence[str]) -> str:
    return " ".join(words).replace(" ,", ",")


def drop_filler(words: list[str]) -> list[str]:
    """BLIP's "arafed" noise anywhere, "there is" / "the image shows" style openings of any clause."""
    words = [w for w in words if not BLIP_ARTEFACT.match(w)]
    kept: list[str] = []
    i = 0
    while i < len(words):
        if not kept or kept[-1] == ",":
            opening = next((o for o in FILLER_OPENINGS if tuple(words[i : i + len(o)]) == o), None)
            if opening:
                i += len(opening)
                continue
        kept.append(words[i])
        i += 1
    return kept


def collapse_repeats(words: list[str]) -> list[str]:
    """Remove repetition loops, the typical failure of greedy captioners: any n-gram immediately
    repeated ("bald bald bald", "a man with a man with") is kept once."""
    words = list(words)
    changed = True
    while changed:
        changed = False
        for n in range(1, len(words) // 2 + 1):
            i = 0
            while i + 2 * n <= len(words):
                if words[i : i + n] == words[i + n : i + 2 * n]:
                    del words[i + n : i + 2 * n]
                    changed = True
                else:
                    i += 1
    return words


def drop_repeated_clauses(words: list[str]) -> list[str]:
    """A clause (between commas / "and" / "or") already said in an earlier clause adds nothing:
    "wearing a shirt and a shirt" -> "wearing a shirt"."""
    kept: list[str] = []
    said: list[tuple[str, ...]] = []
    clause: list[str] = []
    separator: list[str] = []
    for word in [*words, ","]:
        if word == "," or word in CONJUNCTIONS:
            if clause and not any(_contains(earlier, tuple(clause)) for earlier in said):
                kept += separator + clause
                said.append(tuple(clause))
            clause, separator = [], [word]
        else:
            clause.append(word)
    return kept


def _contains(sequence: tuple[str, ...], part: tuple[str, ...]) -> bool:
    return any(sequence[i : i + len(part)] == part for i in range(len(sequence) - len(part) + 1))


def drop_identity(words: list[str]) -> list[str]:
    """Remove what identifies the person: person nouns with their article ("a young man" -> ""),
    age, ethnicity, hair and skin colour; gendered pronouns become "they"/"their". Other words of
    the noun phrase stay: "a smiling man" -> "smiling"."""
    words = _agree(GENDERED.get(w, w) for w in words)
    drop = {i for i, w in enumerate(words) if w in IDENTITY_WORDS or AGE.match(w) or _is_person_colour_compound(w)}
    for i, word in enumerate(words):
        if word in IDENTITY_NOUNS:
            drop |= _noun_phrase_identity(words, i)
        elif word in ("hair", "skin"):
            drop |= _colours_before(words, i)
            if not _has_modifier(words, i, drop):
                drop.add(i)
    return [w for i, w in enumerate(words) if i not in drop]


def _agree(words: Iterable[str]) -> list[str]:
    """Fix the verb after a pronoun became "they": "they is" -> "they are"."""
    out: list[str] = []
    for word in words:
        if out and out[-1] == "they":
            word = PLURAL_VERBS.get(word, word)
        out.append(word)
    return out


def _is_person_colour_compound(word: str) -> bool:
    """"grey-haired", "dark-skinned"."""
    head, _, tail = word.partition("-")
    return tail in ("haired", "skinned") and head in PERSON_COLOURS


def _colours_before(words: list[str], index: int) -> set[int]:
    """Colour words right before `index`, also joined by "and" ("black and grey hair")."""
    found = set()
    i = index - 1
    while i >= 0 and (words[i] in PERSON_COLOURS or words[i] == "and"):
        if words[i] in PERSON_COLOURS:
            found.add(i)
        i -= 1
    return found


def _has_modifier(words: list[str], index: int, drop: set[int]) -> bool:
    """Is something left to say about this hair ("short hair") once its colour is gone?"""
    i = index - 1
    while i >= 0 and i in drop:
        i -= 1
    return i >= 0 and words[i] not in NOUN_PHRASE_STOPS and words[i] not in ARTICLES


def _noun_phrase_identity(words: list[str], noun: int) -> set[int]:
    """The noun, colours right before it ("a black man") and the article that opened its phrase."""
    drop = {noun} | _colours_before(words, noun)
    i = noun - 1
    while i >= 0 and words[i] not in NOUN_PHRASE_STOPS:
        if words[i] in ARTICLES:
            drop.add(i)
            break
        i -= 1
    return drop


def tidy(words: list[str]) -> list[str]:
    """Drop the connectors a removal left dangling: "a close up of" -> "a close up",
    "with and glasses" -> "with glasses", leading "who is", doubled or trailing commas."""
    words = list(words)
    changed = True
    while changed:
        changed = False
        for i, word in enumerate(words):
            before = words[i - 1] if i > 0 else ","
            after = words[i + 1] if i + 1 < len(words) else ","
            if _dangling(word, before, after, at_start=i == 0):
                del words[i]
                changed = True
                break
    return words


def _dangling(word: str, before: str, after: str, at_start: bool) -> bool:
    ends_clause = after == "," or after in CONJUNCTIONS
    if word == ",":
        return before == "," or after == ","
    if word in CONJUNCTIONS:
        return ends_clause or before == "," or before in ARTICLES or before in PREPOSITIONS
    if word in ARTICLES:
        return ends_clause
    if word in PREPOSITIONS:  # before "and", the "and" goes instead: "with and glasses" -> "with glasses"
        return after == "," or (word == "of" and after in PREPOSITIONS)
    return word in RELATIVES and (at_start or before == ",")


def clean_caption(raw: str) -> str:
    """A captioner's raw output -> what varies in the photo, without the person
    ("arafed young man in a blue shirt shirt shirt" -> "in a blue shirt")."""
    words = tidy(drop_identity(collapse_repeats(drop_filler(words_of(raw)))))
    while True:  # each removal can bring two equal pieces together: repeat until nothing changes
        shorter = tidy(drop_repeated_clauses(collapse_repeats(words)))
        if shorter == words:
            return join_words(words)
        words = shorter


# -- fitting CLIP's 77 tokens --------------------------------------------------------------------
@lru_cache(maxsize=1)
def clip_tokenizer():
    """SDXL's two text encoders share this BPE vocabulary (the copy shipped for the tiny profile),
    so counting with it is counting what training will see."""
    from transformers import CLIPTokenizer

    from headshots.tiny_sdxl import TOKENIZER_DIR

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def token_count(text: str) -> int:
    """CLIP tokens including the start and end tokens, as the text encoder counts them."""
    return len(clip_tokenizer()(text, verbose=False).input_ids)


def token_limit() -> int:
    return clip_tokenizer().model_max_length


def compose_caption(prefix: str, varies: str, fits: Callable[[str], bool] | None = None) -> str:
    """"{prefix}, {varies}", shortened at the end until it fits the text encoder: whole clauses
    first, then words. The prefix (which holds the trigger) is never cut."""
    fits = fits or (lambda text: token_count(text) <= token_limit())
    words = words_of(varies)
    clause_ends = [i for i, w in enumerate(words) if w == ","]
    first_clause = words[: clause_ends[0]] if clause_ends else words
    candidates = [words] + [words[:end] for end in reversed(clause_ends)]
    candidates += [first_clause[:end] for end in range(len(first_clause) - 1, 0, -1)]
    for candidate in candidates:
        text = _join_caption(prefix, tidy(candidate))
        if fits(text):
            return text
    return prefix


def _join_caption(prefix: str, words: list[str]) -> str:
    return f"{prefix}, {join_words(words)}" if words else prefix


# -- the model captioner ---------------------------------------------------------------------------
class ModelCaptioner:
    """An image-to-text transformers model (BLIP, Florence-2, ...) with its processor, loaded once.
    Loading goes through the Auto classes, so a hub id and a local folder take the same path."""

    def __init__(self, source: str, device: torch.device, prompt: str = "", max_new_tokens: int = 40) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = cached_first(source, lambda **o: AutoProcessor.from_pretrained(source, **o))
            self.model = cached_first(source, lambda **o: AutoModelForImageTextToText.from_pretrained(source, **o)).to(device).eval()
        except Exception as exc:  # OSError (missing files, offline hub), ValueError (not a captioning model)
            raise WeightsError(f"Could not load the caption model {source!r}: {exc}", _load_hint(source)) from exc
        self.device = device
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        """Raw captions, one per image, in order (the prompt, if the model repeats it, removed)."""
        captions: list[str] = []
        for start in range(0, len(images), BATCH_SIZE):
            batch = list(images[start : start + BATCH_SIZE])
            text = {"text": [self.prompt] * len(batch)} if self.prompt else {}
            inputs = self.processor(images=batch, return_tensors="pt", **text).to(self.device)
            # Decoding settings (greedy, beams) come from the checkpoint's own generation_config.
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            captions += [self._without_prompt(c) for c in self.processor.batch_decode(output, skip_special_tokens=True)]
        return captions

    def _without_prompt(self, caption: str) -> str:
        caption = caption.strip()
        if self.prompt and caption.lower().startswith(self.prompt.lower()):
            return caption[len(self.prompt) :].strip()
        return caption


def _load_hint(source: str) -> str:
    if Path(source).exists() or source.startswith((".", "/", "~")):
        return ("Check the folder: it must hold what save_pretrained writes for an image-to-text model and its "
                "processor (config.json, weights, processor and tokenizer files), or set prepare.captioner=template.")
    return ("Check the hub id and your network, or set prepare.caption_model=/path/to/a/local/copy "
            "(or prepare.captioner=template to caption without a model).")


# -- captions for a prepare run --------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoCaptions:
    captions: list[str]  # what training uses: the person's edit where there is one
    generated: list[str]  # what the captioner produced this time


def caption_photos(cfg: Config, workspace: Workspace, files: list[str], crops: list[Image.Image]) -> PhotoCaptions:
    """Caption every kept photo, then let the person's edits in captions.json win."""
    edits = edited_captions(workspace)  # first: a broken captions.json fails before a model loads
    generated = generate_captions(cfg, crops)
    used = {file: caption for file, caption in edits.items() if file in files}
    for file, caption in used.items():
        _warn_if_unusable(file, caption, cfg.prepare.trigger)
    if edits:
        log.info("%d of %d captions as edited in %s", len(used), len(files), workspace.captions)
    if len(used) < len(edits):
        log.warning("edited captions for photos no longer prepared were dropped: %s", ", ".join(sorted(set(edits) - set(used))))
    return PhotoCaptions([used.get(file, caption) for file, caption in zip(files, generated)], generated)


def generate_captions(cfg: Config, crops: list[Image.Image]) -> list[str]:
    prefix = template_caption(cfg.prepare)
    if cfg.prepare.captioner == "template":
        return [prefix] * len(crops)
    captioner = ModelCaptioner(
        cfg.prepare.caption_model, resolve_device(cfg.device), cfg.prepare.caption_prompt, cfg.prepare.caption_max_new_tokens
    )
    return [compose_caption(prefix, clean_caption(raw)) for raw in captioner(crops)]


def _warn_if_unusable(file: str, caption: str, trigger: str) -> None:
    if not re.search(rf"\b{re.escape(trigger)}\b", caption):
        log.warning("caption of %s does not contain the trigger %r: this photo will not teach your face to it", file, trigger)
    if token_count(caption) > token_limit():
        log.warning("caption of %s is longer than %d CLIP tokens: the text encoder ignores the end", file, token_limit())
