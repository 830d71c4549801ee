"""Trainable text conditioning, both off by default: LoRA on SDXL's two CLIP text encoders, and
pivotal tuning (new token embeddings that stand for the person, learnt alongside the LoRA).

Why off by default: with only the UNet trained, the text embeddings stay frozen and are encoded once
(train/cache.py); training the text side costs two encoder passes per step and tends to overfit a
handful of selfies. Pivotal tuning helps when the trigger word carries meaning of its own: the
person gets fresh tokens `<s0><s1>` initialised from the class noun ("person"), and only those
vectors are trained, not the 49,408-row vocabulary (so the optimizer state stays tiny).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import torch

from headshots.config import TrainConfig
from headshots.sdxl import pool_at_end_token
from train.cache import EncodedDataset, text_conditioning

TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
EMBEDDING_KEYS = ("clip_l", "clip_g")  # the names diffusers' SDXL pivotal-tuning examples use


def pivotal_tokens(tc: TrainConfig) -> list[str]:
    return [f"<s{i}>" for i in range(tc.pivotal_tokens)]


def replace_trigger(text: str, trigger: str, tokens: list[str]) -> str:
    """'a photo of ohwx person' -> 'a photo of <s0><s1> person'."""
    return re.sub(rf"\b{re.escape(trigger)}\b", "".join(tokens), text)


class NewTokenEmbedding(torch.nn.Module):
    """A frozen vocabulary plus a few trainable rows for tokens added after it: ids below the
    vocabulary size read the frozen table, the new ids read `new`."""

    def __init__(self, base: torch.nn.Embedding, init: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.vocab_size = base.num_embeddings
        self.new = torch.nn.Parameter(init.detach().float().clone())

    @property
    def weight(self) -> torch.Tensor:  # code that inspects the table (dtype, device) still finds one
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        frozen = self.base(ids.clamp(max=self.vocab_size - 1))
        is_new = (ids >= self.vocab_size)[..., None]
        learnt = self.new[(ids - self.vocab_size).clamp(min=0, max=len(self.new) - 1)].to(frozen.dtype)
        return torch.where(is_new, learnt, frozen)


def add_pivotal_tokens(tokenizer, text_encoder: torch.nn.Module, tokens: list[str], init_word: str) -> torch.nn.Parameter:
    """Add `tokens` to the tokenizer and trainable vectors for them, initialised from `init_word`."""
    from headshots.errors import ConfigError

    embeddings = text_encoder.get_input_embeddings()
    first_id = len(tokenizer)
    if tokenizer.add_tokens(tokens) != len(tokens) or first_id != embeddings.num_embeddings:
        raise ConfigError(f"Pivotal tokens {tokens} clash with the tokenizer's vocabulary.",
                          "Use a base model whose tokenizer and text encoder sizes match.")
    init_ids = tokenizer(init_word, add_special_tokens=False).input_ids[:1]
    init = embeddings.weight[init_ids].float().mean(dim=0, keepdim=True).repeat(len(tokens), 1)
    module = NewTokenEmbedding(embeddings, init)
    text_encoder.set_input_embeddings(module)
    pool_at_end_token(text_encoder, tokenizer)
    return module.new


@dataclass
class TextSide:
    """What training the text side adds: the encoders (when trainable), their trainable parameters
    and the new-token vectors. `condition` gives a batch its text conditioning, with gradients only
    when something on the text side is trained."""

    text_encoders: list[torch.nn.Module]
    lora_params: list[torch.nn.Parameter]
    embeddings: list[torch.nn.Parameter]  # one (k, dim) per encoder; empty without pivotal tuning
    tokens: list[str]
    vocabulary_std: list[float] = field(default_factory=list)  # per encoder: the spread of its frozen word vectors

    @property
    def trainable(self) -> bool:
        return bool(self.lora_params or self.embeddings)

    def condition(self, batch: EncodedDataset) -> EncodedDataset:
        if not self.trainable:
            return batch
        prompt_embeds, pooled = text_conditioning(self.text_encoders, batch.input_ids)
        return replace(batch, prompt_embeds=prompt_embeds, pooled_embeds=pooled)

    @torch.no_grad()
    def keep_tokens_in_scale(self) -> None:
        """After each update, pull the new vectors' spread a tenth of the way (in log) back to their vocabulary's, as
        diffusers' advanced DreamBooth script does after every step. Nothing else bounds them: at embedding_lr, a
        thousand steps can carry them far past every word's scale, and then the person's tokens drown the words
        around them (the style's clothes and light)."""
        for vectors, std in zip(self.embeddings, self.vocabulary_std):
            vectors.mul_((std / vectors.std()) ** 0.1)

    def embedding_state(self) -> dict[str, torch.Tensor]:
        return {key: p.detach().cpu().float().contiguous() for key, p in zip(EMBEDDING_KEYS, self.embeddings)}

    def load_embedding_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key, p in zip(EMBEDDING_KEYS, self.embeddings):
                p.copy_(state[key])


def layers_read(encoder: torch.nn.Module, pooled_read: bool) -> list[int]:
    """The encoder layers whose output reaches SDXL's conditioning, the only ones worth a LoRA. Conditioning reads
    each encoder's penultimate hidden state (train/cache.py, as SDXL's pipeline does), and the pooled embedding only
    from the second encoder, through its last layer; so the first encoder's last layer never reaches the loss. A LoRA
    there would stay at its init, and under DDP, which expects a gradient for every trained weight, training stopped
    at its second step ("Expected to have finished reduction in the prior iteration")."""
    layers = encoder.config.num_hidden_layers
    return list(range(layers if pooled_read else layers - 1))


def setup_text_side(parts, tc: TrainConfig, class_noun: str) -> TextSide:
    """Attach text-encoder LoRA and/or pivotal tokens as configured; frozen and empty otherwise."""
    from peft import LoraConfig

    encoders = [parts.text_encoder, parts.text_encoder_2]
    tokens = pivotal_tokens(tc) if tc.pivotal_tuning else []
    embeddings = [add_pivotal_tokens(tok, enc, tokens, class_noun)
                  for tok, enc in ((parts.tokenizer, parts.text_encoder), (parts.tokenizer_2, parts.text_encoder_2))
                  ] if tokens else []
    lora_params: list[torch.nn.Parameter] = []
    if tc.text_encoder_lora:
        rank = tc.text_encoder_rank or tc.rank
        for encoder, pooled_read in zip(encoders, (False, True)):
            encoder.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                           target_modules=TEXT_LORA_TARGETS, layers_pattern="layers",
                                           layers_to_transform=layers_read(encoder, pooled_read)))
            lora_params += [p for name, p in encoder.named_parameters() if "lora_" in name]
    for p in lora_params + embeddings:  # after add_adapter, which freezes everything that is not LoRA
        p.requires_grad_(True)
        p.data = p.data.float()  # trainable weights stay fp32 under mixed precision
    vocabulary_std = [float(encoder.get_input_embeddings().weight.float().std()) for encoder in encoders] if tokens else []
    return TextSide(encoders if (lora_params or embeddings) else [], lora_params, embeddings, tokens, vocabulary_std)
