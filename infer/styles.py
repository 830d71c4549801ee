"""Styles are data: a YAML file per style in configs/styles/, composed into SDXL's two prompts.

SDXL has two text encoders and takes two prompts: `prompt` (CLIP ViT-L) carries the subject
(who, wearing what, how they look and stand), `prompt_2` (OpenCLIP bigG) the photographic
treatment (background, light, tone). Each must fit the 77-token window, checked before sampling.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from omegaconf import OmegaConf

from headshots.config import CONFIG_DIR, SIMPLE_NAME_RULE, is_simple_name, load_yaml
from headshots.errors import ConfigError

STYLE_DIR = CONFIG_DIR / "styles"
MAX_TOKENS = 77


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    background: str
    clothing: str
    pose: str
    expression: str
    crop: str
    lighting: str
    tone: str
    negative: str
    file: str | None = None  # the person's own YAML (absolute path) it was read from; None: configs/styles/<name>.yaml

    def prompts(self, trigger: str, class_noun: str) -> dict[str, str]:
        """Keyword arguments for StableDiffusionXLPipeline: the person, framing and clothes to the first text encoder,
        the scene to the second, both opening with the person (`subject`)."""
        person = subject(trigger, class_noun)
        return {
            "prompt": f"{person}, professional {self.crop}, {self.expression}, {self.pose}, wearing {self.clothing}",
            "prompt_2": f"{person}, {self.background}, {self.lighting}, {self.tone}, high-end portrait photography, 85mm lens",
            "negative_prompt": self.negative,
            "negative_prompt_2": self.negative,
        }


FIELDS = [f.name for f in fields(Style) if f.name not in ("name", "file")]


def subject(trigger: str, class_noun: str) -> str:
    """How both of SDXL's prompts open: "a photo of ohwx person", as every training caption does (prepare.caption), so
    the trigger sits at the same token in both encoders, as in training. The pipeline joins the two encoders' vectors
    token by token, and the adapter learnt the person from tokens holding the trigger in both halves; with the
    prompts opening differently ("professional head and shoulders headshot photo of ohwx" beside "photo of ohwx")
    the trigger fell at token 8-11 in one and 3 in the other (an inference review)."""
    return f"a photo of {trigger} {class_noun}"


def available_styles() -> list[str]:
    return sorted(p.stem for p in STYLE_DIR.glob("*.yaml"))


def load_style(name_or_path: str, overrides: dict[str, str] | None = None) -> Style:
    """A style by name (configs/styles/<name>.yaml) or by path to the user's own YAML file."""
    path = Path(name_or_path)
    own = path.suffix in (".yaml", ".yml")
    if not own:
        path = STYLE_DIR / f"{name_or_path}.yaml"
    if own and not is_simple_name(path.stem):  # the name starts every image's file name, in URLs and make's IMAGES= too
        raise ConfigError(f"Style file {path}: its name {path.stem!r} names the images drawn in it, and must be "
                          f"{SIMPLE_NAME_RULE}.", f"Rename the file, e.g. to {re.sub(r'[^A-Za-z0-9_-]+', '-', path.stem).strip('-') or 'mine'}{path.suffix}.")
    if not path.is_file():
        close = difflib.get_close_matches(name_or_path.lower(), available_styles(), n=1, cutoff=0.6)
        raise ConfigError(f"Unknown style {name_or_path!r}" + (f": did you mean {close[0]!r}?" if close else "."),
                          f"Available styles: {', '.join(available_styles())}, or a path to your own .yaml.")
    data = OmegaConf.to_container(load_yaml(path, "Style file", f"Write one `field: words` line for each of {', '.join(FIELDS)}, "
                                                             "as configs/styles/linkedin.yaml does."))
    unknown = set(data) - set(FIELDS)
    missing = set(FIELDS) - set(data)
    if unknown or missing:
        raise ConfigError(
            f"Style file {path}: " + "; ".join(filter(None, [
                f"unknown field(s) {', '.join(sorted(unknown))}" if unknown else "",
                f"missing field(s) {', '.join(sorted(missing))}" if missing else "",
            ])),
            f"A style has exactly these fields: {', '.join(FIELDS)}.",
        )
    style = Style(name=path.stem, file=str(path.resolve()) if own else None, **{k: str(v) for k, v in data.items()})
    return apply_overrides(style, overrides or {})


def apply_overrides(style: Style, overrides: dict[str, str]) -> Style:
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise ConfigError(f"infer.style_overrides has unknown field(s): {', '.join(sorted(unknown))}.", f"Fields: {', '.join(FIELDS)}.")
    return replace(style, **overrides)


def check_prompt_lengths(prompts: dict[str, str], tokenizers: dict[str, object], style: str) -> None:
    """Refuse prompts CLIP would silently truncate: the cut-off words would simply be ignored."""
    for key, text in prompts.items():
        tokenizer = tokenizers["tokenizer_2" if key.endswith("_2") else "tokenizer"]
        count = len(tokenizer(text).input_ids)  # includes start and end tokens
        if count > MAX_TOKENS:
            raise ConfigError(
                f"Style {style!r}: {key} is {count} tokens, over CLIP's limit of {MAX_TOKENS}: {text!r}",
                "Shorten the style's fields (or the override) so the prompt fits.",
            )
