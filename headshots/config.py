"""Typed, validated configuration (OmegaConf structured configs).

Composition, later wins:
    configs/base.yaml  +  configs/model/<profile>.yaml  +  optional user YAML  +  `key=value` overrides

The schema below is the single source of truth for every key: a misspelt key, a wrong
type or an out-of-range value fails at load time with the key's dotted name, before any
model is loaded. The resolved config is saved next to every artifact it produced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from headshots.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"Config value `{key}` {message}.", "Fix it in your YAML file or on the command line.")


def _one_of(value: str, key: str, choices: Sequence[str]) -> None:
    _check(value in choices, key, f"is {value!r}; expected one of {', '.join(map(repr, choices))}")


@dataclass
class PathsConfig:
    data_root: str = "data/users"  # data/users/<user>/selfies, prepared data, reference embeddings
    outputs_root: str = "outputs"  # outputs/<user>/<run>/adapter, samples


@dataclass
class ModelConfig:
    pretrained: str = MISSING  # hub id ("stabilityai/stable-diffusion-xl-base-1.0") or local folder
    revision: Optional[str] = None
    variant: Optional[str] = None  # e.g. "fp16" to download half-size weights
    vae: Optional[str] = None  # e.g. "madebyollin/sdxl-vae-fp16-fix": SDXL's own VAE overflows in fp16
    resolution: int = 1024

    def __post_init__(self) -> None:
        _check(self.resolution >= 64 and self.resolution % 8 == 0, "model.resolution", "must be a multiple of 8, at least 64")


@dataclass
class FaceConfig:
    # "vggface2" / "casia-webface" (facenet-pytorch downloads them at first use) or a local state_dict
    # file; the HEADSHOTS_FACE_WEIGHTS environment variable overrides this key.
    weights: str = "vggface2"
    min_confidence: float = 0.95  # MTCNN probability below which a detection is not a face
    min_face_px: int = 48  # faces smaller than this (box side, pixels) are unusable
    second_face_ratio: float = 0.45  # another face this large relative to the subject => "several faces"
    detect_max_side: int = 1024  # detection runs on a copy downscaled to this; crops come from full size

    def __post_init__(self) -> None:
        _check(0.0 < self.min_confidence <= 1.0, "face.min_confidence", "must be in (0, 1]")
        _check(self.min_face_px >= 16, "face.min_face_px", "must be at least 16")
        _check(0.0 < self.second_face_ratio <= 1.0, "face.second_face_ratio", "must be in (0, 1]")
        _check(self.detect_max_side >= 160, "face.detect_max_side", "must be at least 160")


@dataclass
class PrepareConfig:
    trigger: str = "ohwx"  # rare token the adapter binds the person's identity to
    class_noun: str = "person"  # man / woman / person: what the base model already knows
    caption: str = "a photo of {trigger} {class_noun}"
    crop_margin: float = 0.9  # context around the face box on each side, as a fraction of the face size
    min_photos: int = 3  # fewer usable photos than this and training is refused

    def __post_init__(self) -> None:
        _check(re.fullmatch(r"[A-Za-z0-9_]+", self.trigger) is not None, "prepare.trigger", "must be one word (letters, digits, _)")
        _check("{trigger}" in self.caption, "prepare.caption", "must contain {trigger}")
        _check(0.0 <= self.crop_margin <= 3.0, "prepare.crop_margin", "must be between 0 and 3")
        _check(self.min_photos >= 1, "prepare.min_photos", "must be at least 1")


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"  # any name diffusers.optimization.get_scheduler knows
    lr_warmup_steps: int = 0
    optimizer: str = "adamw"  # adamw | adamw8bit | prodigy
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    rank: int = 16
    alpha: Optional[float] = None  # None => alpha = rank (scale 1)
    target_modules: List[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    mixed_precision: str = "bf16"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    noise_offset: float = 0.0
    min_snr_gamma: Optional[float] = None  # e.g. 5.0; None disables min-SNR weighting
    seed: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for key in ("max_steps", "batch_size", "gradient_accumulation_steps", "rank", "checkpoint_every", "keep_checkpoints"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be at least 1")
        _check(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _check(self.lr_warmup_steps >= 0, "train.lr_warmup_steps", "must be >= 0")
        _one_of(self.optimizer, "train.optimizer", ("adamw", "adamw8bit", "prodigy"))
        _one_of(self.mixed_precision, "train.mixed_precision", ("no", "fp16", "bf16"))
        _one_of(
            self.lr_scheduler,
            "train.lr_scheduler",
            ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"),
        )
        _check(len(self.target_modules) > 0, "train.target_modules", "must name at least one module")
        _check(self.noise_offset >= 0, "train.noise_offset", "must be >= 0")


@dataclass
class WandbConfig:
    # auto: online when a W&B key is configured (WANDB_API_KEY or `wandb login`), offline files otherwise.
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "headshots"
    entity: Optional[str] = None
    log_images: bool = False  # images of a person's face leave the machine only if this is turned on

    def __post_init__(self) -> None:
        _one_of(self.mode, "wandb.mode", ("auto", "online", "offline", "disabled"))


@dataclass
class InferConfig:
    styles: List[str] = field(default_factory=lambda: ["linkedin", "corporate", "executive"])  # names or YAML paths
    style_overrides: Dict[str, str] = field(default_factory=dict)  # e.g. {background: "white wall"}, all styles
    images_per_style: int = 4
    steps: int = 30
    guidance_scale: float = 5.0
    lora_scale: float = 1.0
    batch_size: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        _check(len(self.styles) > 0, "infer.styles", "must name at least one style")
        for key in ("images_per_style", "steps", "batch_size"):
            _check(getattr(self, key) >= 1, f"infer.{key}", "must be at least 1")


@dataclass
class FilterConfig:
    # Cosine similarity of FaceNet embeddings; see docs/measurements.md for how it was chosen.
    threshold: float = 0.45

    def __post_init__(self) -> None:
        _check(-1.0 <= self.threshold <= 1.0, "filter.threshold", "must be between -1 and 1")


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

    def __post_init__(self) -> None:
        validate_user_name(self.user)
        _check(_USER_NAME.fullmatch(self.run) is not None, "run", "must be a simple name (letters, digits, - and _)")


def validate_user_name(user: str) -> str:
    """User names become folder names: refuse anything that could escape data/users/."""
    if not _USER_NAME.fullmatch(user or ""):
        raise ConfigError(
            f"User name {user!r} is not allowed.",
            "Use 1-64 letters, digits, '-' or '_', starting with a letter or digit (e.g. USER=alice).",
        )
    return user


def available_profiles() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def _load_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.", "Check the path.")
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}", "Fix the YAML syntax.") from exc


def load_config(
    user: str,
    profile: Optional[str] = None,
    config_file: Optional[str | Path] = None,
    overrides: Sequence[str] = (),
) -> Config:
    """Compose, validate and return the config for `user`.

    `overrides` are `key=value` strings as typed on a command line (`train.max_steps=50`).
    """
    validate_user_name(user)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override {item!r} is not of the form key=value.", "Example: train.max_steps=500")
    cli = OmegaConf.from_dotlist(list(overrides))
    profile = profile or OmegaConf.select(cli, "profile") or "sdxl"
    profile_file = CONFIG_DIR / "model" / f"{profile}.yaml"
    if not profile_file.is_file():
        raise ConfigError(f"Unknown model profile {profile!r}.", f"Available profiles: {', '.join(available_profiles())}.")

    layers = [_load_yaml(CONFIG_DIR / "base.yaml"), _load_yaml(profile_file)]
    if config_file:
        layers.append(_load_yaml(Path(config_file)))
    layers.append(cli)
    layers.append(OmegaConf.create({"user": user, "profile": profile}))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), *layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc), "Check the key's spelling and type against configs/base.yaml.") from exc


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    text = str(exc).splitlines()[0]
    if "not in struct" in text or "Key '" in text and "not" in text:
        return f"Unknown config key `{key}`."
    if "MissingMandatoryValue" in type(exc).__name__:
        return f"Config key `{key}` must be set."
    return f"Bad value for config key `{key}`: {text}"


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg))


def config_from_yaml(path: Path) -> Config:
    """Re-load a resolved config saved by `save_config` (e.g. an adapter's training config)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), _load_yaml(path))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {_describe(exc)}", "The file was written by another version; re-run training.") from exc
