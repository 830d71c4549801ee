"""The training recipe: DreamBooth-style LoRA on the SDXL UNet, driven by Accelerate.

Read top to bottom: load -> encode the dataset once -> attach LoRA -> loop -> export.
Runs the same under `python -m train fit` and `accelerate launch -m train fit` (multi-GPU DDP).

Every step's batch, noise and timesteps come from a generator seeded by (seed, step, rank), so a
run resumed from a checkpoint follows exactly the path the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from headshots.config import Config, TrainConfig, save_config, to_yaml
from headshots.errors import HeadshotsError
from headshots.logs import get_logger
from headshots.sdxl import load_components
from headshots.workspace import Workspace
from train import checkpoint as ckpt
from train.cache import BatchSource, EncodedDataset, face_weight_map
from train.lora import attach_lora, save_adapter, set_unet_lora_state_dict, unet_lora_state_dict

log = get_logger(__name__)
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LORA_STATE_FILE = "lora.safetensors"


def train(cfg: Config) -> Path:
    """Train the user's adapter; returns the adapter folder. Resumes if a checkpoint exists."""
    import datasets
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    tc = cfg.train
    workspace = Workspace.from_config(cfg)
    prepared = workspace.require_prepared()
    run_dir = workspace.run_dir(cfg.run)
    checkpoints = workspace.checkpoints_dir(cfg.run)

    wandb_mode = resolve_wandb_mode(cfg.wandb.mode)
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        log_with="wandb" if wandb_mode else None,
    )
    set_seed(tc.seed)
    weight_dtype = DTYPES[tc.mixed_precision]
    if accelerator.is_main_process:
        save_config(cfg, run_dir / "config.yaml")

    # 1. Models, and the dataset encoded once (then VAE and text encoders are freed).
    parts = load_components(cfg.model, weight_dtype)
    batches = BatchSource(parts, list(datasets.load_from_disk(str(prepared))), accelerator.device,
                          cfg.model.resolution, cache=tc.cache_encodings)
    noise_scheduler, unet = parts.noise_scheduler, parts.unet
    del parts
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    # 2. LoRA on the frozen UNet; only the adapter is trained (and kept in fp32).
    unet.to(accelerator.device, dtype=weight_dtype)
    trainable = attach_lora(unet, tc)
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if tc.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, tc)
    lr_scheduler = make_lr_scheduler(optimizer, tc, accelerator.num_processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    register_lora_checkpoint_hooks(accelerator, unet)

    # 3. Resume from the last complete checkpoint, if any.
    start_step = 0
    if accelerator.is_main_process:
        ckpt.remove_partial(checkpoints)
    accelerator.wait_for_everyone()
    latest = ckpt.latest_checkpoint(checkpoints)
    if latest:
        start_step, path = latest
        accelerator.load_state(str(path))
        log.info("resuming from %s (step %d of %d)", path, start_step, tc.max_steps)

    if wandb_mode:
        workspace.wandb_dir(cfg.run).mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers(
            cfg.wandb.project,
            config=_loggable_config(cfg),
            init_kwargs={"wandb": {"dir": str(workspace.wandb_dir(cfg.run)), "mode": wandb_mode,
                                   "name": f"{cfg.user}-{cfg.run}", "entity": cfg.wandb.entity}},
        )
    log.info("training %d LoRA parameters on %d photos for %d steps (%s, %d process(es))",
             trainable, len(batches), tc.max_steps, tc.mixed_precision, accelerator.num_processes)

    # 4. The loop.
    unet.train()
    progress = tqdm(total=tc.max_steps, initial=start_step, desc="train", disable=not accelerator.is_local_main_process)
    for step in range(start_step, tc.max_steps):
        for micro in range(tc.gradient_accumulation_steps):
            with accelerator.accumulate(unet):
                generator = step_generator(tc.seed, step, micro, accelerator.process_index)
                data, idx = batches(batch_indices(len(batches), tc, step, micro, accelerator))
                loss = diffusion_loss(unet, noise_scheduler, data, idx, tc, generator, accelerator.device, weight_dtype)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, tc.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        loss_value = accelerator.reduce(loss.detach(), reduction="mean").item()
        if not math.isfinite(loss_value):
            raise HeadshotsError(
                f"The training loss became {loss_value} at step {step + 1}: the adapter would be ruined.",
                "Lower train.learning_rate, use train.mixed_precision=bf16, or an fp16-safe VAE (model.vae); "
                "then delete the run's checkpoints after the last good one and run again.",
            )
        lr = lr_scheduler.get_last_lr()[0]
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        accelerator.log({"train/loss": loss_value, "train/lr": lr}, step=step + 1)
        if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.max_steps:
            ckpt.save_checkpoint(accelerator, checkpoints, step + 1, tc.keep_checkpoints)
    progress.close()
    check_ranks_in_sync(accelerator, params)

    # 5. Export the adapter (atomically: a half-written adapter is never picked up by inference).
    adapter_dir = workspace.adapter_dir(cfg.run)
    if accelerator.is_main_process:
        tmp = adapter_dir.with_name("adapter.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_adapter(accelerator.unwrap_model(unet), tmp, adapter_metadata(cfg))
        save_config(cfg, tmp / "config.yaml")
        shutil.rmtree(adapter_dir, ignore_errors=True)
        os.replace(tmp, adapter_dir)
        log.info("adapter saved to %s", adapter_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return adapter_dir


# -- pieces of the step -------------------------------------------------------------------------


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    key = f"{seed}:{step}:{micro}:{rank}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def batch_indices(n: int, tc: TrainConfig, step: int, micro: int, accelerator) -> torch.Tensor:
    """Epoch-style sampling without replacement; which images a step sees depends only on the step."""
    world, rank = accelerator.num_processes, accelerator.process_index
    first = ((step * tc.gradient_accumulation_steps + micro) * world + rank) * tc.batch_size
    indices = []
    for sample in range(first, first + tc.batch_size):
        epoch, position = divmod(sample, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(tc.seed * 100_003 + epoch))
        indices.append(order[position])
    return torch.stack(indices)


def diffusion_loss(unet, noise_scheduler, data: EncodedDataset, idx: torch.Tensor, tc: TrainConfig,
                   generator: torch.Generator, device: torch.device, weight_dtype: torch.dtype) -> torch.Tensor:
    """Noise-prediction (or v-prediction) MSE of one batch; optionally face-weighted and min-SNR weighted."""
    mean, std = data.latent_mean[idx], data.latent_std[idx]
    latents = mean + std * torch.randn(mean.shape, generator=generator).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    if tc.noise_offset:
        noise = noise + tc.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator).to(device)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(
        noisy.to(weight_dtype),
        timesteps,
        encoder_hidden_states=data.prompt_embeds[idx].to(weight_dtype),
        added_cond_kwargs={"text_embeds": data.pooled_embeds[idx].to(weight_dtype), "time_ids": data.time_ids[idx]},
        return_dict=False,
    )[0].float()
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    error = F.mse_loss(prediction, target, reduction="none")
    if tc.face_loss_weight != 1.0:
        error = error * face_weight_map(data.face_boxes[idx], *error.shape[-2:], tc.face_loss_weight)
    per_sample = error.mean(dim=(1, 2, 3))
    if tc.min_snr_gamma is None:
        return per_sample.mean()
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=tc.min_snr_gamma)
    weights = clipped / (snr + 1) if noise_scheduler.config.prediction_type == "v_prediction" else clipped / snr
    return (per_sample * weights).mean()


def check_ranks_in_sync(accelerator, params: list[torch.nn.Parameter]) -> None:
    """Under DDP every process must end with bit-identical LoRA weights; a silent divergence would
    make the exported adapter depend on which rank saved it."""
    if accelerator.num_processes == 1:
        return
    flat = torch.cat([p.detach().double().flatten() for p in params])
    fingerprint = torch.stack([flat.sum(), (flat * flat).sum(), (flat * torch.arange(len(flat), device=flat.device)).sum()])
    gathered = accelerator.gather(fingerprint[None]).cpu()
    if not all(torch.equal(row, gathered[0]) for row in gathered):
        raise HeadshotsError("The LoRA weights differ between training processes.", "Report this as a bug, with your accelerate config.")
    log.info("adapter weights identical on all %d processes", accelerator.num_processes)


def make_optimizer(params: list[torch.nn.Parameter], tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    if tc.optimizer == "prodigy":
        from prodigyopt import Prodigy

        # Prodigy estimates the step size itself; learning_rate is a multiplier (1.0 is the usual choice).
        return Prodigy(params, lr=tc.learning_rate, weight_decay=tc.weight_decay, safeguard_warmup=True)
    return torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)


def make_lr_scheduler(optimizer, tc: TrainConfig, num_processes: int):
    from diffusers.optimization import get_scheduler

    # Accelerate steps a prepared scheduler once per process per optimizer step.
    return get_scheduler(
        tc.lr_scheduler, optimizer,
        num_warmup_steps=tc.lr_warmup_steps * num_processes,
        num_training_steps=tc.max_steps * num_processes,
    )


def register_lora_checkpoint_hooks(accelerator, unet) -> None:
    """Make Accelerate's save_state/load_state store only the LoRA weights (MBs), not the UNet (GBs)."""
    from safetensors.torch import load_file, save_file

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            state = {k: v.detach().cpu().contiguous() for k, v in unet_lora_state_dict(accelerator.unwrap_model(unet)).items()}
            save_file(state, str(Path(output_dir) / LORA_STATE_FILE))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        while models:
            models.pop()
        set_unet_lora_state_dict(accelerator.unwrap_model(unet), load_file(str(Path(input_dir) / LORA_STATE_FILE)))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def resolve_wandb_mode(mode: str) -> Optional[str]:
    """None (no tracker), "online" or "offline". auto = online only when a W&B key is configured."""
    if mode == "disabled":
        return None
    if mode != "auto":
        return mode
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))
    return "online" if has_key else "offline"


def adapter_metadata(cfg: Config) -> dict[str, str]:
    """What a person (or another tool) needs to use the adapter; stored in every adapter file."""
    return {
        "headshots.trigger": cfg.prepare.trigger,
        "headshots.class_noun": cfg.prepare.class_noun,
        "headshots.base_model": cfg.model.pretrained,
        "headshots.resolution": str(cfg.model.resolution),
        "headshots.rank": str(cfg.train.rank),
        "headshots.alpha": str(cfg.train.alpha if cfg.train.alpha is not None else cfg.train.rank),
        "headshots.steps": str(cfg.train.max_steps),
        "headshots.config_sha256": hashlib.sha256(to_yaml(cfg).encode()).hexdigest(),
    }


def _loggable_config(cfg: Config) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
