"""Typed, validated configuration (OmegaConf structured configs).

Composition, later wins:
    configs/base.yaml  +  configs/model/<profile>.yaml  +  optional user YAML
      +  the person's own data/users/<u>/settings.yaml (a few keys only: PERSON_KEYS)  +  `key=value` overrides

The schema below is the single source of truth for every key: a misspelt key, a wrong
type or an out-of-range value fails at load time with the key's dotted name, before any
model is loaded. The resolved config is saved next to every artifact it produced.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from headshots.errors import ConfigError
from headshots.schedulers import SCHEDULERS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
RESERVED_USER_NAMES = ("batch",)  # outputs/batch/<id>/ is the batch runner's (service/batch.py)
# Names Windows will not give a file or folder, whatever the extension: the person's data could not be copied there
WINDOWS_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"{port}{n}" for port in ("com", "lpt") for n in range(1, 10))})
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SIMPLE_NAME_RULE = "1-64 letters, digits, '-' or '_', starting with a letter or digit"  # _USER_NAME in words
PERSON_SETTINGS = "settings.yaml"  # data/users/<u>/settings.yaml: what this person chose (optional)
# What one person may choose for themselves; everything else belongs to whoever runs the pipeline.
PERSON_KEYS = ("prepare.class_noun", "prepare.keep_rejected", "infer.styles", "infer.images_per_style", "infer.style_overrides")
# Text a person gives for their prompts (a class noun, a background, clothing): words and plain punctuation only,
# so it stays text (no YAML, no `${...}` interpolation) and fits CLIP's 77 tokens beside a style's own words.
PROMPT_WORDS = re.compile(r"[\w ,.'&/-]{1,100}")
_STYLE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # a shipped style's name (configs/styles/<name>.yaml), never a path


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"Config value `{key}` {message}.", "Fix it in your YAML file or on the command line.")


def _one_of(value: str, key: str, choices: Sequence[str]) -> None:
    _check(value in choices, key, f"is {value!r}; expected one of {', '.join(map(repr, choices))}")


def _check_template(template: str, key: str, fields: Sequence[str], required: str | None = None) -> None:
    """A text that str.format fills with `fields`: any other {name} (a misspelt {classnoun}), or a lone brace, would
    stop the stage that fills it with a bare KeyError, for a validation prompt only after training up to it."""
    try:
        named = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:  # a lone { or }
        raise ConfigError(f"Config value `{key}` ({template!r}) cannot be filled in: {exc}.",
                          "Write a brace that is meant as text twice ({{ or }}).") from None
    unknown = sorted(named - set(fields))
    _check(not unknown, key, f"({template!r}) names {', '.join('{' + name + '}' for name in unknown)}; it may name only "
                             f"{', '.join('{' + name + '}' for name in fields)}")
    if required:
        _check(required in named, key, f"({template!r}) must contain {{{required}}}")


@dataclass
class PathsConfig:
    data_root: str = "data/users"  # data/users/<user>/selfies, prepared data, reference embeddings
    outputs_root: str = "outputs"  # outputs/<user>/<run>/adapter, samples
    cache_root: str = "cache"  # data shared by all users and free of anyone's face: generated class images

    def __post_init__(self) -> None:
        """Three separate folders: the photos (kept by `make purge`), what is derived from them (deleted by it)
        and the shared cache. One inside another, a purge would delete photos the person kept (outputs_root =
        data_root makes outputs/<user>/ their photo folder), or a person's folder would hold the cache."""
        roots = {key: _expanded(getattr(self, key), f"paths.{key}") for key in ("data_root", "outputs_root", "cache_root")}
        for key, root in roots.items():
            for other, other_root in roots.items():
                inside = key != other and (root == other_root or root.is_relative_to(other_root))
                _check(not inside, f"paths.{key}", f"({root}) is {'the same folder as' if root == other_root else 'inside'} "
                       f"paths.{other} ({other_root}); give each its own folder")


def _expanded(folder: str, key: str) -> Path:
    """`folder` with `~` or `~name` made the home folder it names, absolute; a name with no home folder is refused."""
    try:
        return Path(folder).expanduser().resolve()
    except RuntimeError as exc:  # ~name of no account on this machine
        raise ConfigError(f"Config value `{key}` ({folder}) starts with a home folder this machine does not know.",
                          "Give the folder as an absolute path, or ~/... for your own home folder.") from exc


@dataclass
class ModelConfig:
    pretrained: str = MISSING  # hub id ("stabilityai/stable-diffusion-xl-base-1.0") or local folder
    revision: str | None = None
    variant: str | None = None  # e.g. "fp16" to download half-size weights
    vae: str | None = None  # e.g. "madebyollin/sdxl-vae-fp16-fix": SDXL's own VAE overflows in fp16
    resolution: int = 1024

    def __post_init__(self) -> None:
        _check(self.resolution >= 64 and self.resolution % 8 == 0, "model.resolution", "must be a multiple of 8, at least 64")


def model_source(pretrained: str) -> str:
    """A local model folder by its absolute path, a hub id as it is: one model, one spelling, so what a stage
    was trained or generated with is recognised whichever folder the command ran from (the CLI's relative
    `models/tiny-sdxl`, the batch workers' absolute path)."""
    folder = Path(pretrained).expanduser()
    return str(folder.resolve()) if folder.exists() else pretrained


@dataclass
class FaceConfig:
    # "casia-webface" / "vggface2" (facenet-pytorch downloads them at first use) or a local state_dict
    # file; the HEADSHOTS_FACE_WEIGHTS environment variable replaces the default only (a value set wins). casia-webface is the
    # default because it is the one with a measured threshold (headshots/face_calibration.json).
    weights: str = "casia-webface"
    min_confidence: float = 0.95  # MTCNN probability below which a detection is not a face
    min_face_px: int = 48  # faces smaller than this (box side, pixels) are unusable
    # Another face makes a photo "several faces" only when it competes with the subject (faces.competes):
    rival_size: float = 0.6  # ... its side is at least this fraction of the subject's,
    rival_distance: float = 8.0  # ... its centre is within this many subject face sides of the subject's,
    rival_detail: float = 0.5  # ... and its coarse sharpness is at least this fraction of the subject's
    detect_max_side: int = 1024  # detection runs on a copy downscaled to this; crops come from full size
    crop_margin: int = 14  # context around the face box in FaceNet's 160 px crop, pixels (docs/face_similarity.md)

    def __post_init__(self) -> None:
        _check(0.0 < self.min_confidence <= 1.0, "face.min_confidence", "must be in (0, 1]")
        _check(self.min_face_px >= 16, "face.min_face_px", "must be at least 16")
        _check(0.0 < self.rival_size <= 1.0, "face.rival_size", "must be in (0, 1]")
        _check(self.rival_distance > 0, "face.rival_distance", "must be positive")
        _check(self.rival_detail >= 0, "face.rival_detail", "must be at least 0")
        _check(self.detect_max_side >= 160, "face.detect_max_side", "must be at least 160")
        _check(0 <= self.crop_margin <= 80, "face.crop_margin", "must be between 0 and 80 (pixels of the 160 px crop)")


WEIGHTS_ENV = "HEADSHOTS_FACE_WEIGHTS"  # a FaceNet weights file standing in for face.weights' default (offline machines)


def weights_source(weights: str) -> str:
    """The weights actually used: `face.weights`; left at its default, the file HEADSHOTS_FACE_WEIGHTS names when
    set (this machine's copy, e.g. offline: `make` sets it beside ../shared), so weights chosen on purpose win."""
    return (os.environ.get(WEIGHTS_ENV) or weights) if weights == FaceConfig.weights else weights


@dataclass
class PrepareConfig:
    trigger: str = "ohwx"  # rare token the adapter binds the person's identity to
    class_noun: str = "person"  # man / woman / person: what the base model already knows
    caption: str = "a photo of {trigger} {class_noun}"  # the template caption; every caption starts with it
    # template: every photo gets `caption`. model: `caption` + what a captioning model sees that varies
    # (clothing, background, expression), never the person (see train/captions.py).
    captioner: str = "template"
    caption_model: str = "Salesforce/blip-image-captioning-base"  # hub id or local folder (captioner=model)
    caption_prompt: str = ""  # text given with each photo; Florence-2 needs a task, e.g. "<DETAILED_CAPTION>"
    caption_max_new_tokens: int = 40
    crop_margin: float = 0.9  # context around the face box on each side, as a fraction of the face size
    level_eyes: bool = True  # turn a tilted head's crop so the eyes are level (train/framing.py: frame_face)
    min_photos: int = 3  # fewer usable photos than this and training is refused
    # Photos intake rejects are not trained on (someone else, a re-saved copy, a blurred or covered face), except
    # these: a photo intake got wrong, e.g. you, years apart, taken for someone else.
    keep_rejected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(re.fullmatch(r"[A-Za-z0-9_]+", self.trigger) is not None, "prepare.trigger", "must be one word (letters, digits, _)")
        _check_template(self.caption, "prepare.caption", ("trigger", "class_noun"), required="trigger")
        _one_of(self.captioner, "prepare.captioner", ("template", "model"))
        _check(bool(self.caption_model.strip()), "prepare.caption_model", "must be a hub id or a local folder")
        _check(1 <= self.caption_max_new_tokens <= 256, "prepare.caption_max_new_tokens", "must be between 1 and 256")
        _check(0.0 <= self.crop_margin <= 3.0, "prepare.crop_margin", "must be between 0 and 3")
        _check(self.min_photos >= 1, "prepare.min_photos", "must be at least 1")


@dataclass
class PriorConfig:
    """DreamBooth prior preservation: alongside the person's photos, train on photos of the class
    (e.g. other people) so the adapter learns *this* person without forgetting what people look like."""

    enabled: bool = False
    loss_weight: float = 1.0  # weight of the class images' loss relative to the person's
    prompt: str = "a photo of a {class_noun}"
    # A folder of class photos to use as they are; empty: the base model generates `num_images`
    # once, cached under paths.cache_root and shared by every user of the same model and prompt.
    images: str | None = None
    num_images: int = 100
    sampling_steps: int = 30  # denoising steps for generated class images

    def __post_init__(self) -> None:
        _check(self.loss_weight > 0, "train.prior.loss_weight", "must be positive")
        _check(self.num_images >= 1, "train.prior.num_images", "must be at least 1")
        _check(self.sampling_steps >= 1, "train.prior.sampling_steps", "must be at least 1")
        _check_template(self.prompt, "train.prior.prompt", ("class_noun",))


@dataclass
class ValidationConfig:
    """Sample fixed prompts with fixed seeds during training and score them by face similarity to
    the person's selfies, so the curve shows when likeness peaks (or the adapter overfits)."""

    every: int = 0  # steps between validations; 0 turns validation off
    prompts: list[str] = field(default_factory=lambda: [
        "professional headshot photo of {trigger} {class_noun}, business attire, neutral studio background",
        "photo of {trigger} {class_noun} smiling, outdoors, natural light",
    ])
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # one image per prompt and seed
    sampling_steps: int = 25
    guidance_scale: float = 5.0

    def __post_init__(self) -> None:
        _check(self.every >= 0, "train.validation.every", "must be >= 0 (0 turns validation off)")
        _check(len(self.prompts) > 0 and len(self.seeds) > 0, "train.validation.prompts",
               "and train.validation.seeds must each have at least one entry")
        for prompt in self.prompts:
            _check_template(prompt, "train.validation.prompts", ("trigger", "class_noun"), required="trigger")
        _check(self.sampling_steps >= 1, "train.validation.sampling_steps", "must be at least 1")
        _check(0 <= self.guidance_scale < math.inf, "train.validation.guidance_scale", "must be a number >= 0")


# train.* settings of how training computes, not what it learns (the same loss over the same steps): a run resumes
# across a change of them (gradient checkpointing turned on to fit a smaller GPU, compile turned off after a run
# stopped in its first compile), and the adapter it made stays done. Checkpoints hold the plain module names
# (train/recipe.py unwraps the compile wrapper), so one saved under torch.compile loads without it (a slow test).
TRAIN_COMPUTE_KEYS = ("gradient_checkpointing", "cache_encodings", "compile")


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"  # constant | constant_with_warmup | linear | cosine | cosine_with_restarts | polynomial
    lr_warmup_steps: int = 0
    optimizer: str = "adamw"  # adamw | adamw8bit | prodigy (learning_rate=1.0, a multiplier; every group uses it)
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    rank: int = 16
    alpha: float | None = None  # the UNet LoRA's; None => alpha = rank (scale 1); the text encoders' LoRA always has scale 1
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    mixed_precision: str = "bf16"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    # torch.compile the trained models through Accelerate (TorchDynamo + inductor): a one-time compile when
    # training starts, then faster steps on a GPU; measured by scripts/bench_train.py (docs/benchmarks.md).
    compile: bool = False
    noise_offset: float = 0.0
    face_loss_weight: float = 1.0  # >1 weights the loss inside the face box more (1 = plain MSE)
    cache_encodings: bool = True  # encode photos and captions once instead of every step
    min_snr_gamma: float | None = None  # e.g. 5.0; None disables min-SNR weighting
    # The text side (train/text.py), off by default: LoRA on both CLIP text encoders, and pivotal
    # tuning (new tokens <s0><s1>... for the person, replacing the trigger word in every caption).
    text_encoder_lora: bool = False
    text_encoder_rank: int | None = None  # None: train.rank
    # diffusers' DreamBooth scripts' default, 20x under the UNet's: the text side overfits a handful of selfies
    # easily (not measured here: no GPU). None: train.learning_rate.
    text_encoder_lr: float | None = 5e-6
    pivotal_tuning: bool = False
    pivotal_tokens: int = 2
    embedding_lr: float = 1e-3  # learning rate of the new token vectors
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    prior: PriorConfig = field(default_factory=PriorConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "rank", "checkpoint_every", "keep_checkpoints"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be at least 1")
        _check(0 < self.learning_rate < math.inf, "train.learning_rate", "must be a positive number (inf trains to nan)")
        _check(self.lr_warmup_steps >= 0, "train.lr_warmup_steps", "must be >= 0")
        _check(0 <= self.weight_decay < math.inf, "train.weight_decay", "must be a number >= 0")
        # inf is allowed (no clipping); 0 would zero every gradient and a negative norm turn descent into ascent
        _check(self.max_grad_norm > 0, "train.max_grad_norm", f"is {self.max_grad_norm}; it must be positive (inf: no clipping)")
        _one_of(self.optimizer, "train.optimizer", ("adamw", "adamw8bit", "prodigy"))
        # Prodigy estimates the step size itself and takes learning_rate as a multiplier of it: AdamW's 1e-4 trains nothing
        _check(self.optimizer != "prodigy" or self.learning_rate >= 0.1, "train.learning_rate",
               f"is {self.learning_rate}, a multiplier of Prodigy's own step size (train.optimizer=prodigy): near 0 it "
               "trains nothing; use train.learning_rate=1.0")
        if self.mixed_precision in ("False", "fp32"):  # YAML reads a bare `no` as false
            self.mixed_precision = "no"
        _one_of(self.mixed_precision, "train.mixed_precision", ("no", "fp16", "bf16"))
        _one_of(
            self.lr_scheduler,
            "train.lr_scheduler",
            ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"),
        )
        _check(len(self.target_modules) > 0, "train.target_modules", "must name at least one module")
        _check(self.noise_offset >= 0, "train.noise_offset", "must be >= 0")
        _check(self.face_loss_weight >= 1.0, "train.face_loss_weight", "must be >= 1 (1 disables it)")
        _check(self.text_encoder_rank is None or self.text_encoder_rank >= 1, "train.text_encoder_rank", "must be at least 1")
        _check(self.text_encoder_lr is None or 0 < self.text_encoder_lr < math.inf, "train.text_encoder_lr", "must be a positive number")
        _check(1 <= self.pivotal_tokens <= 8, "train.pivotal_tokens", "must be between 1 and 8")
        _check(0 < self.embedding_lr < math.inf, "train.embedding_lr", "must be a positive number")
        # min(SNR, gamma) weights each sample's loss: 0 weights it all to nothing, a negative gamma climbs the loss
        _check(self.min_snr_gamma is None or 0 < self.min_snr_gamma < math.inf, "train.min_snr_gamma",
               "must be a positive number (5 is usual), or null to turn min-SNR weighting off")


@dataclass
class WandbConfig:
    # auto: online when a W&B key is configured (WANDB_API_KEY or `wandb login`), offline files otherwise;
    # WANDB_MODE=offline/disabled or WANDB_DISABLED in the environment limit any mode (`wandb_allowed`).
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "headshots"
    entity: str | None = None
    log_images: bool = False  # images of a person's face leave the machine only if this is turned on
    group: str | None = None  # W&B run group; the batch runner sets batch-<id> so one batch's runs sit together

    def __post_init__(self) -> None:
        _one_of(self.mode, "wandb.mode", ("auto", "online", "offline", "disabled"))


def wandb_allowed(mode: str | None) -> str | None:
    """`mode` ("online", "offline"; None: no W&B) as W&B's own switches in the environment leave it: WANDB_DISABLED
    or WANDB_MODE=disabled turn it off and WANDB_MODE=offline keeps it local, whatever the config says. A person
    who set them for their machine meant them for this project too (a W&B key kept for other work turned `auto`
    online over WANDB_MODE=offline), and the stricter of the two wins."""
    switch = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode is None or switch == "disabled" or os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return None
    return "offline" if switch in ("offline", "dryrun") else mode


def no_wandb_reports() -> None:
    """Call before W&B starts: its own crash and usage reports (WANDB_ERROR_REPORTING, on by default, even offline)
    stay off unless the person turned them on; nothing leaves the machine but what they chose to send."""
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")


def wandb_run_settings():
    """What every W&B run of the project records besides what it logs: nothing. By default W&B also captures the
    console (log lines naming the person's folders), the command line (`--user alice`), the interpreter's absolute
    path, the host, the git remote and the code; all of it went with the run, online too (a privacy review)."""
    import wandb

    return wandb.Settings(console="off", disable_git=True, disable_code=True, save_code=False, disable_job_creation=True,
                          x_disable_meta=True, x_disable_machine_info=True)


def image_logging_mode(cfg: Config) -> str | None:
    """Where pictures of the person may go: None (nowhere), "offline" or "online". Only with `wandb.log_images`, and
    online only when `wandb.mode=online` is explicit: a W&B key kept for other work turns `auto` online for metrics,
    never for faces. W&B's switches in the environment limit it (`wandb_allowed`)."""
    if cfg.wandb.mode == "disabled" or not cfg.wandb.log_images:
        return None
    return wandb_allowed("online" if cfg.wandb.mode == "online" else "offline")


def images_to_wandb(cfg: Config, run_mode: str | None) -> bool:
    """Whether pictures of the person go into a W&B run already in `run_mode` (its mode says what W&B's switches in
    the environment left): the rule of `image_logging_mode` (training logged its validation images into a run `auto`
    had turned online)."""
    return bool(cfg.wandb.log_images and run_mode and (run_mode == "offline" or cfg.wandb.mode == "online"))


@dataclass
class DetailConfig:
    """Face-detail pass (infer/detail.py): each generated face re-drawn at the model's native size with the
    person's adapter, then pasted back through a soft mask; scoring keeps the better of the two versions."""

    enabled: bool = False  # part of `infer all` when on; `python -m infer detail` runs it alone
    crop_scale: float = 2.0  # the square crop's side / the face box's longer side (context for the inpainting)
    strength: float = 0.4  # how much of the denoising is redone: low keeps the face's shape, high re-invents it
    steps: int = 30  # the pipeline runs steps x strength of them
    guidance_scale: float | None = None  # None: infer.guidance_scale
    dilate: float = 0.15  # the mask's ellipse is the face box grown by this share of its size
    feather: float = 0.3  # the mask fades to 0 over this share of the ellipse's radius, inside its edge

    def __post_init__(self) -> None:
        # the mask's ellipse must end inside the crop: cut at its edge, the re-drawn patch ends in a straight seam
        _check(self.crop_scale >= 1.0 + self.dilate, "infer.detail.crop_scale",
               f"is {self.crop_scale}: it must be at least 1 + infer.detail.dilate ({1.0 + self.dilate:g}), so that the "
               "crop holds the whole pasted face")
        _check(0.0 < self.strength <= 1.0, "infer.detail.strength", "must be in (0, 1]")
        _check(self.guidance_scale is None or 0 <= self.guidance_scale < math.inf, "infer.detail.guidance_scale",
               "must be a number >= 0, or null (infer.guidance_scale)")
        _check(self.steps >= 1, "infer.detail.steps", "must be at least 1")
        _check(0.0 <= self.dilate <= 1.0, "infer.detail.dilate", "must be between 0 and 1")
        _check(0.0 < self.feather <= 1.0, "infer.detail.feather", "must be in (0, 1]")


@dataclass
class MoreConfig:
    """More like this (infer/variations.py): variations of one generated image the person likes, each drawn
    from it by SDXL img2img with the person's adapter, the image's own prompts and a fresh seed."""

    image: str | None = None  # a generated image in samples/, as the gallery names it (e.g. linkedin-02.png)
    count: int = 4
    strength: float = 0.5  # share of the denoising redone: 0.3 keeps pose, clothes and light; 0.7 keeps the idea

    def __post_init__(self) -> None:
        _check(self.count >= 1, "infer.more.count", "must be at least 1")
        _check(0.0 < self.strength <= 1.0, "infer.more.strength", "must be in (0, 1]")


@dataclass
class InferConfig:
    styles: list[str] = field(default_factory=lambda: ["linkedin", "corporate", "executive"])  # names or YAML paths
    style_overrides: dict[str, str] = field(default_factory=dict)  # e.g. {background: "white wall"}, all styles
    images_per_style: int = 4
    steps: int = 30
    guidance_scale: float = 5.0
    lora_scale: float = 1.0
    batch_size: int = 2
    seed: int = 0
    # A name for this round of images (generating again adds a round; infer/generate.py). Generating under a
    # name that already has images completes that round instead of adding another: a retried job makes no
    # more than it was asked for. None: a new round, named by the time.
    round: str | None = None
    adapter: str = "last"  # last: outputs/<user>/<run>/adapter; best: adapter-best (train.validation's pick)
    scheduler: str | None = None  # euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ... (headshots/schedulers.py); None: the model's own
    # Merge the adapter into the UNet weights once, so sampling runs the plain UNet (no per-layer LoRA
    # work); false keeps the separate LoRA layers (same images within rounding).
    fuse_lora: bool = True
    # torch.compile the UNet (inductor) once the adapter is loaded: the first batch of each size pays a compile
    # (a shorter last batch and the face-detail pass are other sizes), every later one runs faster on a GPU;
    # scripts/bench_generate.py measures both (docs/benchmarks.md).
    compile: bool = False
    # SDXL refiner ("ensemble of experts"), hub id or local folder, e.g. stabilityai/stable-diffusion-xl-refiner-1.0:
    # the base runs the first `refiner_start` of the denoising, the refiner the rest. None: base only.
    refiner: str | None = None
    refiner_start: float = 0.8
    export_files: list[str] = field(default_factory=list)  # files in samples/ to export; empty: the favourites, else every kept image
    discard_files: list[str] = field(default_factory=list)  # python -m infer discard: files in samples/ to delete for good
    detail: DetailConfig = field(default_factory=DetailConfig)
    more: MoreConfig = field(default_factory=MoreConfig)

    def __post_init__(self) -> None:
        _check(len(self.styles) > 0, "infer.styles", "must name at least one style")
        for key, example in (("styles", "linkedin,actor"), ("export_files", "linkedin-00.png,linkedin-01.png"),
                             ("discard_files", "linkedin-00.png,linkedin-01.png")):  # a YAML flow list holds lists and maps too
            _check(all(isinstance(name, str) for name in getattr(self, key)), f"infer.{key}",
                   f"must be names separated by commas, e.g. infer.{key}=[{example}]")
        for key in ("images_per_style", "steps", "batch_size"):
            _check(getattr(self, key) >= 1, f"infer.{key}", "must be at least 1")
        _one_of(self.adapter, "infer.adapter", ("last", "best"))
        if self.scheduler is not None:
            _one_of(self.scheduler, "infer.scheduler", list(SCHEDULERS))
        _check(0.0 < self.refiner_start < 1.0, "infer.refiner_start", "must be between 0 and 1 (exclusive)")
        _check(0 <= self.guidance_scale < math.inf, "infer.guidance_scale", "must be a number >= 0 (5 by default)")
        _check(0 <= self.lora_scale < math.inf, "infer.lora_scale", "must be a number >= 0 (1: the adapter as trained)")
        _check(self.round is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", str(self.round)) is not None,
               "infer.round", "must be 1-64 letters, digits, '.', '_' or '-'")
        _leaves_a_step(self.detail.strength, self.detail.steps, "detail.strength", "detail.steps")

    def check_more(self) -> None:
        """More like this's strength against the steps it is drawn with, checked when variations are asked for (not at
        load: a generation that draws none must not be stopped by a setting of theirs, such as the default strength
        beside infer.refiner_start=0.5)."""
        _leaves_a_step(self.more.strength, self.steps, "more.strength", "steps")
        # the base, the only part drawing with the person's adapter, runs from `strength` down to the refiner's start
        _check(self.refiner is None or self.more.strength > 1 - self.refiner_start, "infer.more.strength",
               f"is {self.more.strength}, which with infer.refiner leaves the person's adapter no step (the refiner "
               f"draws the last {1 - self.refiner_start:.2g} of the denoising, infer.refiner_start={self.refiner_start}): "
               f"use more than {1 - self.refiner_start:.2g}")


def _leaves_a_step(strength: float, steps: int, strength_key: str, steps_key: str) -> None:
    """img2img and inpainting redo int(steps x strength) of the denoising: none ended deep in diffusers (a reshape of
    0 elements), in words no one could act on, after the model had loaded."""
    _check(int(steps * strength) >= 1, f"infer.{strength_key}",
           f"is {strength}, which with infer.{steps_key}={steps} leaves no denoising step (int(steps x strength) are "
           f"redone): use at least {math.ceil(1000 / steps) / 1000:g}, or more steps")


@dataclass
class FilterConfig:
    # Global floor of the cosine similarity of FaceNet embeddings: no person's threshold goes below it.
    # None: the calibrated threshold of face.weights at face.crop_margin (headshots/face_calibration.json,
    # docs/face_similarity.md); set a number only for weights you measured yourself.
    threshold: float | None = None
    # Per-person threshold = max(threshold, loo_fraction x the mean leave-one-out similarity of the
    # person's own reference photos), measured in docs/face_similarity.md. 0 turns calibration off.
    loo_fraction: float = 0.75
    eye_distance: list[float] = field(default_factory=lambda: [0.25, 0.65])  # eye distance / face width, min and max
    face_width: list[float] = field(default_factory=lambda: [0.12, 0.65])  # face width / image width, min and max
    edge_margin: float = 0.1  # free space above and beside the face box, as a fraction of the face size
    check_glasses: bool = True  # glasses on the output must match the selfies (infer/review.py)
    glasses_threshold: float = 0.6  # nose-bridge edge score above which a face wears glasses
    duplicate_similarity: float = 0.95  # grey-thumbnail correlation above which two outputs are one picture

    def __post_init__(self) -> None:
        _check(self.threshold is None or -1.0 <= self.threshold <= 1.0, "filter.threshold", "must be between -1 and 1 (or null)")
        _check(0.0 <= self.loo_fraction <= 1.0, "filter.loo_fraction", "must be between 0 and 1")
        for key in ("eye_distance", "face_width"):
            low_high = getattr(self, key)
            _check(len(low_high) == 2 and 0.0 <= low_high[0] < low_high[1] <= 1.0, f"filter.{key}",
                   "must be [min, max] with 0 <= min < max <= 1")
        _check(0.0 <= self.edge_margin <= 2.0, "filter.edge_margin", "must be between 0 and 2")
        _check(self.glasses_threshold > 0, "filter.glasses_threshold", "must be positive")
        _check(0.0 < self.duplicate_similarity <= 1.0, "filter.duplicate_similarity", "must be in (0, 1]")


@dataclass
class IntakeConfig:
    """Selfie quality gate. Values are measured on the face (see headshots/quality.py); the thresholds
    were calibrated on real photos and degraded copies: docs/intake_quality.md."""

    decode_side: int = 800  # big JPEGs are decoded at reduced scale, long side at least this (speed)
    detect_max_side: int = 480  # face detection runs on a copy this long (MTCNN cost grows with pixels and noise)
    min_crop_fraction: float = 0.2  # training crop side below this x model.resolution: reject
    warn_crop_fraction: float = 0.5  # ... below this: warn (it will be upscaled)
    min_acuity: float = 0.44  # strongest 1-px / 3-px edge step over 12 directions (~1/3 blurred .. 1 sharp); below: out of focus
    max_anisotropy: float = 0.96  # 1 - weakest / strongest orientation's fine-detail energy; above: blurred by movement
    min_texture: float = 0.3  # grain of bare skin, % of the face's mean luminance; below with sharp edges: beauty filter
    min_skin_light: float = 115.0  # median luminance of the face's best-lit skin patch, 0..255; below while the photo ...
    min_photo_light: float = 60.0  # ... has a median below this too: underexposed (a dark face in a well-lit photo is skin tone)
    max_crushed: float = 0.15  # share of the face at luminance <= 16 (shadows sunk into black); above: too dark
    dim_skin_light: float = 150.0  # best-lit skin below this while ...
    min_photo_white: float = 220.0  # ... the photo's brightest tones (99.9th percentile, brightest channel) are below this too: dim (warn)
    dim_crushed: float = 0.025  # ... or more than this share of the face is crushed to black (luminance <= 16): dim (warn)
    min_scene_ev: float = 4.0  # light the camera's EXIF settings say the scene had (EV at ISO 100), without flash; below: dim (warn)
    min_relative_light: float = 0.65  # best-lit skin / its median over the person's set (their own skin tone); below: darker than the rest
    max_relative_crushed: float = 0.02  # share of the face crushed to black minus its median over the set; above: darker than the rest
    min_relative_texture: float = 0.5  # skin grain / its median over the set; below on a sharp, lit face: smoothed (warn)
    min_relative_side_light: float = 0.75  # darker / brighter cheek over its median over the set; below: lit from one side (warn)
    max_relative_colour: float = 0.4  # distance of the face's chromaticity from its median over the set; above: coloured light (warn)
    max_clipped: float = 0.03  # share of the face blown out to white (every channel >= 250); above: overexposed
    max_photo_clipped: float = 0.25  # share of the whole photo blown out, judged only when no face was found
    max_side_contrast: float = 0.68  # |log cheek ratio| / spread of log skin luminance (quality.side_contrast)
    max_backlight: float = 2.0  # background / face luminance
    max_colour_cast: float = 0.2  # distance of the face's log-chromaticity from the hue of skin (coloured light, not skin tone)
    min_colour_saturation: float = 0.05  # the photo's colour (quality.colour_saturation, 0..1); below: black-and-white (warn)
    max_yaw: float = 0.35  # nose offset from the eye midpoint, in eye distances
    max_roll: float = 15.0  # eye-line angle, degrees, of a face whose crop prepare does not level (near the photo's edge, or level_eyes off)
    max_levelled_roll: float = 25.0  # ... of one it levels (never below max_roll): further, the levelled crop's neck and shoulders slant
    min_pitch: float = 0.25  # nose height between eye line (0) and mouth line (1)
    max_pitch: float = 0.85
    max_eye_flat: float = 0.3  # share of featureless pixels around the eyes (sunglasses, hands)
    min_eye_light: float = 0.14  # the lighter eye's light over the best-lit skin's (quality.occlusion); below on a lit face: a lens
    min_mouth_detail: float = 0.5  # share of the mouth patch with detail, not flat (masks, hands)
    max_age_years: float = 3.0  # photos older than this (EXIF date) may no longer look like you
    duplicate_similarity: float = 0.975  # face-region correlation (band-passed, best scale/shift): same shot above
    max_sameness: float = 0.5  # mean thumbnail cosine over the set above which it lacks variety (docs/intake_quality.md)
    identity_threshold: float = 0.5  # FaceNet cosine: faces alike at least this on average are one person; the largest group is the person
    smile_ratio: float = 0.92  # mouth width / eye distance above which a face is smiling (docs/intake_quality.md)
    min_photos: int = 5  # fewer usable photos and the set is rejected
    good_photos: int = 10  # fewer and the set gets a warning with what to add

    def __post_init__(self) -> None:
        _check(self.decode_side >= 256, "intake.decode_side", "must be at least 256")
        _check(self.detect_max_side >= 160, "intake.detect_max_side", "must be at least 160")
        _check(0.0 < self.min_crop_fraction <= self.warn_crop_fraction <= 4.0, "intake.min_crop_fraction",
               "must be positive and at most intake.warn_crop_fraction")
        for key in ("min_skin_light", "min_photo_light", "dim_skin_light", "min_photo_white"):
            _check(0.0 <= getattr(self, key) <= 255.0, f"intake.{key}", "must be in 0..255")
        _check(self.min_pitch < self.max_pitch, "intake.min_pitch", "must be below intake.max_pitch")
        for key in ("max_clipped", "max_photo_clipped", "max_crushed", "dim_crushed", "min_relative_light", "max_relative_crushed", "min_relative_texture", "min_relative_side_light",
                    "min_acuity", "max_anisotropy", "duplicate_similarity", "max_sameness", "max_eye_flat", "min_eye_light", "min_mouth_detail",
                    "min_colour_saturation"):
            _check(0.0 <= getattr(self, key) <= 1.0, f"intake.{key}", "must be between 0 and 1")
        for key in ("min_texture", "max_side_contrast", "max_backlight", "max_colour_cast", "max_relative_colour", "max_yaw", "max_roll",
                    "max_levelled_roll", "max_age_years", "smile_ratio"):
            _check(getattr(self, key) >= 0, f"intake.{key}", "must be >= 0")
        _check(-1.0 <= self.identity_threshold <= 1.0, "intake.identity_threshold", "must be between -1 and 1")
        _check(1 <= self.min_photos <= self.good_photos, "intake.min_photos",
               f"is {self.min_photos}: it must be at least 1 and at most intake.good_photos ({self.good_photos})")

    @property
    def photos_wanted(self) -> str:
        """How many photos to ask a person for, in every hint: from the set's minimum to twice what intake calls
        enough (5-20 by default), so a changed limit changes the advice too."""
        return f"{self.min_photos}-{2 * self.good_photos}"


@dataclass
class BatchConfig:
    """Many people at once on Ray (service/batch.py)."""

    max_retries: int = 2  # a stage that crashed or whose worker died runs again, at most this many more times
    gpu: str = "auto"  # fit and generate ask Ray for one GPU each: auto (when the cluster has GPUs) | yes | no
    cpus_per_stage: float = 1.0  # what each stage asks Ray for on CPUs (torch in a stage uses this many threads)
    status_every_s: float = 2.0  # how often status.json and the table are refreshed while the batch runs

    def __post_init__(self) -> None:
        _check(0 <= self.max_retries <= 100, "batch.max_retries", "must be between 0 and 100")
        _one_of(self.gpu, "batch.gpu", ("auto", "yes", "no"))
        _check(self.cpus_per_stage > 0, "batch.cpus_per_stage", "must be positive")
        _check(self.status_every_s > 0, "batch.status_every_s", "must be positive")


@dataclass
class AppConfig:
    """The local web app (service/app.py): what one upload and one request may ask for. Checked on the
    server for every file, whatever the page allowed, with the limit named in the refusal."""

    max_photos: int = 30  # photos one person may keep in data/users/<u>/selfies/
    max_upload_bytes: int = 31_457_280  # per file, 30 MiB (what the page says: "30.0 Mb"); a 48 MP phone JPEG or HEIC is 5-15 MB
    max_pixels: int = 50_000_000  # per photo, width x height (48 MP phones: 8064x6048)
    max_images_per_style: int = 16  # the most images per style one generate request may queue
    # With a password file: failed sign-ins allowed for one account name, and from one address, within
    # sign_in_lockout_s; past them its sign-ins are refused until the oldest is that old (service.app.SignInLimit)
    max_failed_sign_ins: int = 10
    sign_in_lockout_s: float = 900.0
    # With a password file: a sign-in no page has used for this long is forgotten (service.app.ForgetIdleSignIns)
    sign_in_idle_s: float = 43_200.0

    def __post_init__(self) -> None:
        for key in ("max_photos", "max_upload_bytes", "max_pixels", "max_images_per_style", "max_failed_sign_ins"):
            _check(getattr(self, key) >= 1, f"app.{key}", "must be at least 1")
        for key in ("sign_in_lockout_s", "sign_in_idle_s"):
            _check(0 < getattr(self, key) < math.inf, f"app.{key}", "must be a number of seconds above 0")


@dataclass
class Config:
    user: str = MISSING
    run: str = "default"
    profile: str = "sdxl"
    device: str = "auto"  # auto | cpu | cuda | cuda:N  (prepare / infer; training uses Accelerate's)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    app: AppConfig = field(default_factory=AppConfig)

    def __post_init__(self) -> None:
        validate_user_name(self.user)
        _check(is_simple_name(self.run), "run", f"must be {SIMPLE_NAME_RULE}")
        _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, "device",
               f"is {self.device!r}; expected auto, cpu, cuda or cuda:N")
        # prepare trains on the photos intake accepts: fewer asked of intake, and it passes a set prepare refuses
        _check(self.prepare.min_photos <= self.intake.min_photos, "prepare.min_photos",
               f"is {self.prepare.min_photos}, more than intake.min_photos ({self.intake.min_photos}): intake would "
               "call a set usable that prepare refuses; set intake.min_photos at least as high")


def is_simple_name(name: str | None) -> bool:
    """Safe as one folder's name (a user, a run, a batch): SIMPLE_NAME_RULE, so it can never reach outside the
    folder it is put in."""
    return _USER_NAME.fullmatch(name or "") is not None


def validate_user_name(user: str) -> str:
    """User names become folder names: refuse anything that could escape data/users/."""
    if not is_simple_name(user):
        raise ConfigError(
            f"User name {user!r} is not allowed.",
            f"Use {SIMPLE_NAME_RULE} (e.g. alice).",
        )
    if user.casefold() in RESERVED_USER_NAMES:  # Batch is outputs/batch/ too on macOS and Windows
        raise ConfigError(f"User name {user!r} is reserved: outputs/{user}/ holds the batch runner's status files.",
                          "Pick another name (e.g. alice).")
    if user.casefold() in WINDOWS_DEVICE_NAMES:
        raise ConfigError(f"User name {user!r} is not allowed: Windows keeps it for a device, so the person's folder "
                          "could not be copied there.", "Pick another name (e.g. alice).")
    return user


def available_profiles() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


SECTIONS = "Write sections of `key: value` lines, as configs/base.yaml does (e.g. `infer:` then `  styles: [linkedin]`)."


@functools.cache
def _schema() -> Any:
    """Config as an OmegaConf schema, built once per process: building it takes OmegaConf about 45 ms, and a
    load_config needed it twice, while the web app loads a person's config on most of its events (profiled: a
    fifth of the CPU samples of the browser test's processes were in loading configs). Never changed in place:
    OmegaConf.merge deep-copies its first argument (7 ms), and the other callers only read it; read-only, so
    none can."""
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema, True)
    return schema


def _our_yaml(path: Path) -> Any:
    """One of the project's own config files (configs/), parsed once per version of the file: parsing base.yaml
    and a profile took a third of a load_config. Read-only: a merge layer, never changed in place."""
    stat = path.stat() if path.is_file() else None
    return _parsed(path, stat.st_mtime_ns, stat.st_size) if stat else load_yaml(path)


@functools.lru_cache(maxsize=32)
def _parsed(path: Path, mtime_ns: int, size: int) -> Any:
    """load_yaml, remembered by the file's path, time and size (an edited file is parsed again); read-only."""
    layer = load_yaml(path)
    OmegaConf.set_readonly(layer, True)
    return layer


def load_yaml(path: Path, what: str = "Config file", shape: str = SECTIONS) -> Any:
    """A YAML file of ours or the person's (a config layer, settings.yaml, a style): missing or broken, a
    ConfigError that names the file and the place, never a parser traceback; `shape` says what the file should hold."""
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist.", "Check the path.")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file (a folder or a device).", "Give the path of a YAML file.")
    try:
        loaded = OmegaConf.load(path)
    except OSError as exc:  # what OmegaConf raises for a file holding one number or true/false
        raise ConfigError(f"{what} {path} holds a single value, not settings.", shape) from exc
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}", "Fix the YAML syntax.") from exc
    if not OmegaConf.is_dict(loaded):
        raise ConfigError(f"{what} {path} holds a list, not settings.", shape)
    return loaded


def load_config(
    user: str,
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    with_person_settings: bool = True,
) -> Config:
    """Compose, validate and return the config for `user`.

    `overrides` are `key=value` strings as typed on a command line (`train.max_steps=50`).
    `with_person_settings=False` leaves the person's settings.yaml out (purge needs only the paths, and must
    work whatever that file says).
    """
    validate_user_name(user)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override {item!r} is not of the form key=value.",
                              "Example: train.max_steps=500. A value with spaces is one word to the shell only in quotes, "
                              "inside ARGS too: ARGS='infer.style_overrides.background=\"plain grey wall\"'.")
    cli = _parse_overrides(overrides)
    profile = profile or OmegaConf.select(cli, "profile") or "sdxl"
    if not is_simple_name(str(profile)):  # a name of configs/model/, never a path to some other YAML file
        raise ConfigError(f"Unknown model profile {profile!r}: a profile is a name, not a path.",
                          f"Available profiles: {', '.join(available_profiles())}; your own YAML file goes in --config.")
    profile_file = CONFIG_DIR / "model" / f"{profile}.yaml"
    if not profile_file.is_file():
        raise ConfigError(f"Unknown model profile {profile!r}.", f"Available profiles: {', '.join(available_profiles())}.")

    layers = [_our_yaml(CONFIG_DIR / "base.yaml"), _our_yaml(profile_file)]
    if config_file:
        layers.append(load_yaml(Path(config_file)))
    identity = OmegaConf.create({"user": user, "profile": profile})
    person_file = None
    try:
        person_file = Path(_data_root(layers, cli)) / user / PERSON_SETTINGS
        person = person_settings(person_file) if with_person_settings else OmegaConf.create({})
        merged = OmegaConf.merge(_schema(), *layers, person, cli, identity)
        _refuse_nan(OmegaConf.to_container(merged, resolve=True, throw_on_missing=False))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        message = _describe(exc)
        if with_person_settings and person_file and person_file.is_file() and _merges([*layers, cli, identity]):
            message = f"{person_file}: {message}"  # it merges without the person's file: the file is what is wrong
        raise ConfigError(message, "Check the key's spelling and type: headshots/config.py declares every key (configs/base.yaml the common ones).") from exc
    except ConfigError as exc:  # a section's own check of a value, said of the person's file when it is what is wrong
        if (with_person_settings and person_file and person_file.is_file() and str(person_file) not in exc.message
                and _merges([*layers, cli, identity])):
            raise ConfigError(f"{person_file}: {exc.message}", "Fix it in that file.") from exc
        raise


def _parse_overrides(overrides: Sequence[str]) -> Any:
    """`key=value` strings as typed on a command line; a value that is not YAML (an unclosed `[`, a `*`, which
    YAML reads as an alias) is named, not a parser's traceback."""
    for item in overrides:
        try:
            OmegaConf.from_dotlist([item])
        except (yaml.YAMLError, OmegaConfBaseException) as exc:
            key, _, value = item.partition("=")
            raise ConfigError(f"The value of {key} cannot be read: {value!r} ({str(exc).splitlines()[0]}).",
                              "A list is [a,b] (make's IMAGES= and STYLES= add the brackets: IMAGES=a.png,b.png); no "
                              "wildcards; a value with spaces in quotes: ARGS='key=\"two words\"'.") from exc
    parsed = OmegaConf.from_dotlist(list(overrides))
    schema = _schema()
    for item in overrides:
        key = item.partition("=")[0]
        value = OmegaConf.select(parsed, key, throw_on_resolution_failure=False)  # ${...} is resolved at load, not here
        parts = key.replace("[", ".").replace("]", "").split(".")
        listed = next((".".join(parts[:n]) for n in range(1, len(parts))
                       if OmegaConf.is_list(OmegaConf.select(schema, ".".join(parts[:n]), default=None))), None)
        if listed:  # OmegaConf would fail to merge a dict into the list, with a bare TypeError
            raise ConfigError(f"`{listed}` is a list, set whole: {item!r} sets one item of it.",
                              f"Give the whole list, e.g. {listed}=[a,b] (make's STYLES= and IMAGES= add the brackets).")
        if OmegaConf.is_dict(OmegaConf.select(schema, key, default=None)) and not OmegaConf.is_dict(value) and value is not None:
            raise ConfigError(f"`{key}` is a section of settings, not one value ({item!r}).",
                              f"Set one of its keys, e.g. {key}.<key>=<value> (configs/base.yaml lists them).")
    return parsed


def _refuse_nan(config: Any, prefix: str = "") -> None:
    """nan is no setting (it compares false with every limit, so a section's own checks may let it through):
    refused, naming the key. inf may mean "no limit" (train.max_grad_norm, intake.max_*): each section says where
    it is nonsense (a learning rate)."""
    for key, value in config.items():
        if isinstance(value, dict):
            _refuse_nan(value, f"{prefix}{key}.")
        elif isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"Config key `{prefix}{key}` is nan: a setting must be a number.",
                              f"Give an ordinary number, e.g. {prefix}{key}=<value> as in configs/base.yaml.")


def _merges(layers: list[Any]) -> bool:
    try:
        OmegaConf.to_object(OmegaConf.merge(_schema(), *layers))
    except (OmegaConfBaseException, ConfigError):
        return False
    return True


def _data_root(layers: list[Any], cli: Any) -> str:
    """Where the person's folder is, before their settings are merged: read off the plain layers (the schema's
    validating merge, a few times slower, is done once, on the whole stack)."""
    return str(OmegaConf.select(OmegaConf.merge(*layers, cli), "paths.data_root", default=PathsConfig().data_root))


def person_settings(path: Path) -> Any:
    """A person's own choices (data/users/<u>/settings.yaml), e.g. `infer: {styles: [linkedin, doctor]}` or
    `prepare: {class_noun: woman}`: what a batch runs for each person, over the batch's shared config. Only
    PERSON_KEYS, shipped style names (not paths) and plain words for prompt text: the file may come from the
    person, and must not reach paths, models or other people's data. Empty when there is no file."""
    if not path.is_file():
        return OmegaConf.create({})
    written = OmegaConf.to_container(load_yaml(path, "Your settings file"), resolve=False) or {}
    settings = OmegaConf.create({key: value for key, value in written.items() if value is not None})  # `infer:` alone sets nothing
    leaves = _leaves(written)
    for key, value in leaves.items():
        allowed = next((k for k in PERSON_KEYS if key == k or key.startswith((k + ".", k + "["))), None)
        if allowed is None and value is None and any(k.startswith(key + ".") for k in PERSON_KEYS):
            continue  # an empty section (`infer:` with nothing under it) sets nothing
        if allowed is None:
            named = re.sub(r"\[\d+\]", "", key)  # the key as written, not a list item of it
            meant = difflib.get_close_matches(named, PERSON_KEYS, n=1)
            raise ConfigError(f"{path}: `{named}` is not something one person's settings may set"
                              + (f" (did you mean `{meant[0]}`?)." if meant else "."),
                              f"A person's settings.yaml may set {', '.join(PERSON_KEYS)}; the rest is the run's config.")
        if allowed == "infer.styles":
            _check(isinstance(value, str) and bool(_STYLE_NAME.fullmatch(value)) and (CONFIG_DIR / "styles" / f"{value}.yaml").is_file(),
                   f"{key} in {path}", f"is {value!r}: it must name one of the styles in configs/styles/ "
                   f"({', '.join(sorted(p.stem for p in (CONFIG_DIR / 'styles').glob('*.yaml')))}; a person's settings cannot point at files)")
        elif allowed == "prepare.keep_rejected":
            _check(isinstance(value, str) and Path(value).name == value and not value.startswith("."), f"{key} in {path}",
                   "must be the file name of one of your photos, e.g. 05.jpg")
        elif allowed in ("prepare.class_noun", "infer.style_overrides"):
            _check(isinstance(value, str) and bool(PROMPT_WORDS.fullmatch(value)), f"{key} in {path}",
                   "must be plain words (and , . ' & / -), 100 characters at most")
    return settings


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf of a nested mapping (list items as key[i])."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}.{key}" if prefix else str(key)).items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _leaves(sub, f"{prefix}[{i}]").items()}
    return {prefix: tree}


# Keys earlier versions had: a saved config (an adapter's config.yaml) still loads without them, and a user's
# config naming one is told what replaced it.
_INTAKE_MEASURES = "the intake's new measures (docs/intake_quality.md, held-out evaluation)"
RETIRED_KEYS = {
    "face.second_face_ratio": "face.rival_size, face.rival_distance and face.rival_detail (another face counts only "
                              "when it competes with yours: docs/face_similarity.md)",
    "intake.min_sharpness": f"intake.min_acuity, {_INTAKE_MEASURES}",
    "intake.min_fine_detail": f"intake.min_texture, {_INTAKE_MEASURES}",
    "intake.max_motion_blur": f"intake.max_anisotropy, {_INTAKE_MEASURES}",
    "intake.min_brightness": f"intake.min_skin_light and intake.min_photo_light, {_INTAKE_MEASURES}",
    "intake.max_brightness": f"intake.max_clipped (a bright face is not overexposed unless blown out), {_INTAKE_MEASURES}",
}


def _known_keys() -> list[str]:
    """Every dotted key the schema has, sections included: what an unknown key is compared with."""
    leaves = {re.sub(r"\[\d+\]", "", key) for key in _leaves(OmegaConf.to_container(_schema()))}
    return sorted({".".join(key.split(".")[:n]) for key in leaves for n in range(1, key.count(".") + 2)})


# What people type for a key, too short for difflib to match (train.lr for train.learning_rate)
SHORT_NAMES = {"lr": "learning_rate", "steps": "max_steps"}


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    text = str(exc).splitlines()[0]
    if key in RETIRED_KEYS:
        return f"Config key `{key}` was replaced by {RETIRED_KEYS[key]}."
    if "not in struct" in text or "Key '" in text and "not" in text:
        close = difflib.get_close_matches(str(key), _known_keys(), n=1, cutoff=0.8)
        if not close:  # a short name (train.lr) or a section left out (max_roll=20): that key, else every one of that name
            section, _, leaf = str(key).rpartition(".")
            leaf = SHORT_NAMES.get(leaf, leaf)
            close = ([known for known in _known_keys() if known == f"{section}.{leaf}"]
                     or [known for known in _known_keys() if known.rsplit(".", 1)[-1] == leaf])
        return f"Unknown config key `{key}`" + (": did you mean " + " or ".join(f"`{c}`" for c in close) + "?" if close else ".")
    if "MissingMandatoryValue" in type(exc).__name__:
        return f"Config key `{key}` must be set."
    wrong_type = (re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", text)
                  or re.match(r"Value '(.*)' is not a valid (bool)", text))
    if wrong_type:  # e.g. train.max_steps=five, wandb.log_images=maybe
        wanted = {"Integer": "a whole number", "Float": "a number", "bool": "true or false"}.get(wrong_type[2], wrong_type[2])
        return f"Config key `{key}` takes {wanted}, not {wrong_type[1]!r}."
    if text.startswith("Incompatible value 'None'"):  # key= with nothing after it, for a key that must hold something
        return f"Config key `{key}` was given no value: write one after the = sign (in a YAML file, after the colon)."
    if "is not a ListConfig" in text:  # e.g. infer.styles=linkedin
        return f"Config key `{key}` takes a list, even of one: {key}=[a,b] (in a YAML file: [a, b])."
    return f"Bad value for config key `{key}`: {text}"


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg))


def config_from_yaml(path: Path) -> Config:
    """Re-load a resolved config saved by `save_config` (e.g. an adapter's training config); keys an earlier
    version saved and this one retired (RETIRED_KEYS) are dropped, so older adapters stay usable."""
    saved = load_yaml(path)
    for key in RETIRED_KEYS:
        section, _, name = key.rpartition(".")
        node = OmegaConf.select(saved, section) if section else saved
        if node is not None and name in node:
            node.pop(name)
    try:
        merged = OmegaConf.merge(_schema(), saved)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {_describe(exc)}", "The file was written by another version; re-run training.") from exc
