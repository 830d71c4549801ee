"""The training recipe: DreamBooth-style LoRA on the SDXL UNet, driven by Accelerate.

Read top to bottom: (class images) -> load -> encode the dataset once -> attach LoRA -> loop
(-> validate, keep the best) -> export.
Runs the same under `python -m train fit` and `accelerate launch -m train fit` (multi-GPU DDP).

Every step's batch, noise and timesteps come from a generator seeded by (seed, step, micro-step, rank), so a
run resumed from a checkpoint follows exactly the path the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

from headshots.config import (
    TRAIN_COMPUTE_KEYS,
    Config,
    TrainConfig,
    images_to_wandb,
    model_source,
    no_wandb_reports,
    save_config,
    wandb_allowed,
    wandb_run_settings,
)
from headshots.errors import HeadshotsError
from headshots.logs import get_logger
from headshots.sdxl import load_components, warn_without_gpu
from headshots.workspace import (
    ADAPTER_WEIGHTS,
    Workspace,
    add_files_to_digest,
    replace_folder,
    write_json_atomic,
)
from train import checkpoint as ckpt
from train.cache import BatchSource, EncodedDataset, face_weight_map
from train.lora import attach_lora, peft_lora_state_dict, save_adapter, set_unet_lora_state_dict, unet_lora_state_dict
from train.prior import class_image_paths, class_rows
from train.text import TextSide, replace_trigger, setup_text_side
from train.validation import Validator, wandb_images

log = get_logger(__name__)
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LORA_STATE_FILE = "lora.safetensors"
RESUMABLE_KEYS = ("max_steps", "checkpoint_every", "keep_checkpoints", "validation")  # train.* a resumed run may change


def train(cfg: Config) -> Path:
    """Train the user's adapter; returns the adapter folder. Resumes if a checkpoint exists.

    One training of a person's run at a time, whoever starts it (a terminal, the web app, a batch, or a web app
    restarted while its last job still ran): a second is refused, since both would write the same checkpoints and
    adapter. Under `accelerate launch` the main process holds the lock for all of them."""
    workspace = Workspace.from_config(cfg)
    workspace.require_prepared()  # first: a person not prepared is told so, and no run folder is made
    if os.environ.get("RANK", "0") != "0":
        return _train(cfg, workspace)
    with ckpt.training_alone(workspace, cfg.run):
        return _train(cfg, workspace)


def _train(cfg: Config, workspace: Workspace) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    tc = cfg.train
    if tc.validation.every:
        workspace.require_reference()  # fail now, not after class images and encoding
    checkpoints = workspace.checkpoints_dir(cfg.run)

    wandb_mode = resolve_wandb_mode(cfg.wandb.mode)
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        log_with="wandb" if wandb_mode else None,
        dynamo_backend="inductor" if tc.compile else "no",  # prepare() then compiles the trained models
        # the schedule counts training steps, stepped once per step below: Accelerate's own stepping counts one per
        # process, so a checkpoint resumed on another number of GPUs found its schedule elsewhere (a 2-GPU run resumed
        # on one trained its remaining steps at a linear schedule's LR 0)
        step_scheduler_with_optimizer=False,
    )
    set_seed(tc.seed)
    if accelerator.is_main_process:
        warn_without_gpu(accelerator.device, cfg.model)
        if tc.lr_warmup_steps and tc.lr_scheduler == "constant":  # a warning: adapters trained so still load
            log.warning("train.lr_warmup_steps=%d does nothing under train.lr_scheduler=constant: use "
                        "constant_with_warmup (or linear, cosine...) for a warm-up", tc.lr_warmup_steps)
    weight_dtype = DTYPES[tc.mixed_precision]
    inputs = training_inputs(cfg, workspace)
    dataset = workspace.load_prepared()
    require_crops_as_large(dataset, cfg, workspace)

    # 0. Prior preservation: class images (generated once, each process drawing its share, then cached).
    class_paths = None
    if tc.prior.enabled:
        class_image_paths(cfg, accelerator.device, share=(accelerator.process_index, accelerator.num_processes))
        accelerator.wait_for_everyone()
        class_paths = class_image_paths(cfg, accelerator.device)

    # 1. Models, and the dataset encoded once (then VAE and text encoders are freed, or parked on
    #    the CPU when validation needs them).
    parts = load_components(cfg.model, weight_dtype)
    device, resolution = accelerator.device, cfg.model.resolution
    text = setup_text_side(parts, tc, cfg.prepare.class_noun)
    trigger = "".join(text.tokens) or cfg.prepare.trigger  # pivotal tuning: <s0><s1> stands for the person
    rows = [{**row, "caption": replace_trigger(row["caption"], cfg.prepare.trigger, text.tokens)} if text.tokens else row
            for row in dataset]
    batches = BatchSource(parts, rows, device, resolution, cache=tc.cache_encodings)
    class_batches = (BatchSource(parts, class_rows(cfg, class_paths), device, resolution, cache=tc.cache_encodings)
                     if class_paths else None)
    validator = None
    if tc.validation.every and accelerator.is_main_process:
        validator = Validator(cfg, parts, device, weight_dtype, offload=tc.cache_encodings and not text.trainable,
                              trigger=trigger)
    noise_scheduler, unet = parts.noise_scheduler, parts.unet
    del parts
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    # 2. LoRA on the frozen UNet; only the adapter is trained (and kept in fp32).
    unet.to(accelerator.device)  # loaded in weight_dtype already
    trainable = attach_lora(unet, tc)
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if tc.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    params = unet_params + text.lora_params + text.embeddings
    optimizer = make_optimizer(parameter_groups(unet_params, text, tc), tc)
    lr_scheduler = make_lr_scheduler(optimizer, tc)
    if text.trainable:
        text.text_encoders = [encoder.to(device) for encoder in text.text_encoders]
        unet, *text.text_encoders, optimizer, lr_scheduler = accelerator.prepare(unet, *text.text_encoders, optimizer, lr_scheduler)
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    models = [unet, *text.text_encoders]
    register_lora_checkpoint_hooks(accelerator, unet, text)

    # 3. Resume from the last complete checkpoint of this run's photos and settings, if any; then W&B.
    start_step = resume(accelerator, cfg, workspace, inputs)
    if validator:
        validator.resume(start_step)
    if wandb_mode:
        start_tracking(accelerator, cfg, workspace, wandb_mode)
    log.info("training %d LoRA parameters on %d photos%s for %s (mixed precision: %s; processes: %d)", trainable,
             len(batches), f" + {len(class_batches)} class images" if class_batches else "",
             _steps_left(start_step, tc.max_steps),
             tc.mixed_precision, accelerator.num_processes)

    # 4. The loop.
    for model in models:
        model.train()
    progress = tqdm(total=tc.max_steps, initial=start_step, desc="train", disable=not accelerator.is_local_main_process)
    loop_started = time.time()
    for step in range(start_step, tc.max_steps):
        step_started = time.perf_counter()
        # the step's losses (total, the person's, the class images'), each the mean over its micro-batches as the
        # update saw them; and the gradients' norm before clipping
        step_losses, grad_norm = torch.zeros(3, device=device), None
        for micro in range(tc.gradient_accumulation_steps):
            with accelerator.accumulate(*models):
                generator = step_generator(tc.seed, step, micro, accelerator.process_index)
                batch = batches(batch_indices(len(batches), tc, step, micro, accelerator))
                if class_batches:
                    class_idx = batch_indices(len(class_batches), tc, step, micro, accelerator, stream=1)
                    batch = EncodedDataset.concat(batch, class_batches(class_idx))
                per_sample = diffusion_loss(unet, noise_scheduler, text.condition(batch), tc, generator, device, weight_dtype)
                person = per_sample[: tc.batch_size].mean()
                prior = per_sample[tc.batch_size :].mean() if class_batches else torch.zeros((), device=device)
                loss = person + tc.prior.loss_weight * prior  # DreamBooth: the person's + weight x the class images'
                accelerator.backward(loss)
                step_losses += torch.stack([loss, person, prior]).detach() / tc.gradient_accumulation_steps
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    text.keep_tokens_in_scale()
        lr_scheduler.step()
        loss_value, person_loss, prior_loss = accelerator.reduce(step_losses, reduction="mean").tolist()
        if not math.isfinite(loss_value):
            raise HeadshotsError(
                f"The training loss became {loss_value} at step {step + 1}: the adapter would be ruined.",
                "Lower train.learning_rate, use train.mixed_precision=bf16, or an fp16-safe VAE (model.vae); "
                "then delete the run's checkpoints after the last good one and run again.",
            )
        lr = lr_scheduler.get_last_lr()[0]
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        if accelerator.is_main_process:
            write_progress(workspace.progress(cfg.run), step + 1, tc.max_steps, start_step, loss_value, loop_started)
        accelerator.log(step_metrics(loss_value, person_loss, prior_loss if class_batches else None, lr, grad_norm,
                                     time.perf_counter() - step_started, device), step=step + 1)
        if tc.validation.every and ((step + 1) % tc.validation.every == 0 or step + 1 == tc.max_steps):
            validate(accelerator, validator, unet, text, step + 1, cfg, workspace, images_to_wandb(cfg, wandb_mode))
        if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.max_steps:
            ckpt.save_checkpoint(accelerator, checkpoints, step + 1, tc.keep_checkpoints, inputs)
    progress.close()
    check_ranks_in_sync(accelerator, params)

    # 5. Export the adapter.
    adapter_dir = workspace.adapter_dir(cfg.run)
    if accelerator.is_main_process:
        export_adapter(accelerator, unet, text, adapter_dir, cfg)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return adapter_dir


def resume(accelerator, cfg: Config, workspace: Workspace, inputs: str) -> int:
    """Load the run's last complete checkpoint, if it was trained on these photos and settings (`inputs`); the step
    to go on from (0: from the start). Only now is a checkpoint of other ones removed: a setting that cannot load (a
    mistyped model path) has failed before, leaving it. A checkpoint that cannot be read (a file of it cut short) is
    set aside first, and the one before it resumed. The config is saved in the run's folder."""
    checkpoints, max_steps = workspace.checkpoints_dir(cfg.run), cfg.train.max_steps
    if accelerator.is_main_process:
        for aside, why in ckpt.set_aside_unreadable(checkpoints):  # first: the inputs a damaged state.json records are lost
            log.warning("a checkpoint cannot be read (%s), so training goes on from the one before it: set aside as %s",
                        why, aside)
        discard_other_inputs(workspace, cfg.run, inputs)
        save_config(cfg, workspace.run_dir(cfg.run) / "config.yaml")
        ckpt.remove_partial(checkpoints)
    accelerator.wait_for_everyone()
    latest = ckpt.latest_checkpoint(checkpoints)
    if latest is None:
        return 0
    step, path = latest
    if step > max_steps:  # resuming would export the longer-trained weights labelled as shorter
        raise HeadshotsError(f"Run {cfg.run!r} of {cfg.user} has trained {step} steps already: train.max_steps={max_steps} "
                             "cannot take them back.", f"Keep train.max_steps at {step} or more, in each training of this run "
                             f"({workspace.make_command('train', ARGS=f'train.max_steps={step}')}), or train the shorter "
                             f"adapter as a run of its own (make's RUN=, e.g. RUN={cfg.run}-{max_steps}), which keeps its own checkpoints.")
    accelerator.load_state(str(path))
    log.info("resuming from %s (step %d of %d)", path, step, max_steps)
    return step


def start_tracking(accelerator, cfg: Config, workspace: Workspace, wandb_mode: str) -> None:
    """W&B through Accelerate, its files in the run's folder, with W&B's own error reports off."""
    no_wandb_reports()
    workspace.wandb_dir(cfg.run).mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(
        cfg.wandb.project,
        config=_loggable_config(cfg),
        init_kwargs={"wandb": {"dir": str(workspace.wandb_dir(cfg.run)), "mode": wandb_mode, "name": f"{cfg.user}-{cfg.run}",
                               "entity": cfg.wandb.entity, "group": cfg.wandb.group, "settings": wandb_run_settings()}},
    )
    if cfg.wandb.log_images and not images_to_wandb(cfg, wandb_mode):
        log.warning("validation images are not sent to W&B: this run is online only because a W&B key is configured "
                    "(wandb.mode=auto); wandb.mode=online sends them, wandb.mode=offline keeps them in %s",
                    workspace.wandb_dir(cfg.run))


def _steps_left(start_step: int, max_steps: int) -> str:
    if start_step == 0:
        return f"{max_steps} steps"
    if start_step < max_steps:
        return f"steps {start_step + 1}-{max_steps}"
    return "no more steps (all were done: the adapter is exported again)"


def require_crops_as_large(dataset, cfg: Config, workspace: Workspace) -> None:
    """Refuse, before any model loads, photos prepared at a smaller size than this profile trains at (prepared on the
    tiny profile, `train fit` run alone on SDXL): every crop would be enlarged (8x from 128 px), and the adapter learn
    the blur as the person's look."""
    side = min(dataset[0]["image"].size)
    if side < cfg.model.resolution:
        raise HeadshotsError(f"{cfg.user}'s photos were prepared at {side} px, and this profile trains at "
                             f"{cfg.model.resolution} px: every crop would be enlarged {cfg.model.resolution / side:.3g}x.",
                             f"Prepare them again with the profile you train with: {workspace.make_command('prepare')}")


def training_inputs(cfg: Config, workspace: Workspace) -> str:
    """Digest of what the adapter is trained from: the prepared dataset's rows (photos, crops, captions), the
    base model and every training setting that shapes the weights (`shaping_settings`): a run resumes across a change
    of the others."""
    digest = hashlib.sha256()
    add_files_to_digest(digest, workspace.prepared, workspace.prepared_rows)
    model = {**OmegaConf.to_container(OmegaConf.structured(cfg.model)), "pretrained": model_source(cfg.model.pretrained)}
    digest.update(json.dumps({"model": model, "train": shaping_settings(cfg.train)}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def shaping_settings(tc: TrainConfig) -> dict:
    """The training settings as hashed where what shapes the weights is (a checkpoint's inputs, an adapter's metadata):
    RESUMABLE_KEYS left out, and how it computes (TRAIN_COMPUTE_KEYS) at their defaults, so that the checkpoints and
    adapters made while those were hashed stay true for everyone who never changed them."""
    defaults = TrainConfig()
    tc = replace(tc, **{key: getattr(defaults, key) for key in TRAIN_COMPUTE_KEYS})
    return {key: value for key, value in OmegaConf.to_container(OmegaConf.structured(tc)).items() if key not in RESUMABLE_KEYS}


def discard_other_inputs(workspace: Workspace, run: str, inputs: str) -> None:
    """A run's checkpoints and validation history (with the best adapter it chose) belong to the photos and
    settings they were trained on. After new photos (or another rank, learning rate...), resuming would
    continue the old run, or, if it had finished, skip training and export the old adapter again; so they
    are removed and training starts afresh. The finished adapter stays until this run's replaces it: an
    interrupted retraining leaves the person the adapter they had. A checkpoint saved before checkpoints
    recorded their inputs is kept. With no checkpoint at all, training starts afresh too, and so does the history:
    a run stopped before its first checkpoint left its best adapter, which a later run on other photos or settings
    (without validation, which would have replaced it) kept beside its own, for infer.adapter=best to draw with."""
    latest = ckpt.latest_checkpoint(workspace.checkpoints_dir(run))
    if latest is not None and ckpt.recorded_inputs(latest[1]) in (None, inputs):
        return
    if latest is not None:
        kept = " (its adapter stays until this run's replaces it)" if (workspace.adapter_dir(run) / ADAPTER_WEIGHTS).is_file() else ""
        log.warning("the photos or training settings changed since %s was saved: starting run %r afresh%s", latest[1], run, kept)
    for path in (workspace.checkpoints_dir(run), workspace.best_adapter_dir(run), workspace.validation_images(run),
                 workspace.validation(run), workspace.progress(run)):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def export_adapter(accelerator, unet, text: TextSide, adapter_dir: Path, cfg: Config, step: int | None = None) -> None:
    """Write the adapter atomically: a half-written adapter is never picked up by inference."""
    tmp = adapter_dir.with_name(adapter_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    metadata = adapter_metadata(cfg, text.tokens)
    if step is not None:
        metadata["headshots.step"] = str(step)
    encoders = [unwrap(accelerator, encoder) for encoder in text.text_encoders] if text.lora_params else []
    save_adapter(unwrap(accelerator, unet), tmp, metadata, encoders, text.embedding_state() if text.tokens else None)
    save_config(cfg, tmp / "config.yaml")
    replace_folder(tmp, adapter_dir)
    log.info("adapter saved to %s", adapter_dir)


def validate(accelerator, validator: Validator | None, unet, text: TextSide, step: int, cfg: Config,
             workspace: Workspace, log_images: bool) -> None:
    """Main process samples and scores; a new best likeness also becomes `adapter-best/`. `log_images`: the samples
    go to W&B too (`images_to_wandb`)."""
    if validator is not None:
        result = validator(unwrap(accelerator, unet), step)
        values = {"val/face_similarity": result.face_similarity, "val/faces_found": result.faces_found}
        if log_images:
            values["val/images"] = wandb_images(result, validator.images_dir)
        accelerator.log(values, step=step)
        if validator.is_best(result):
            export_adapter(accelerator, unet, text, workspace.best_adapter_dir(cfg.run), cfg, step)
    accelerator.wait_for_everyone()


# -- pieces of the step -------------------------------------------------------------------------


def step_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    key = f"{seed}:{step}:{micro}:{rank}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def batch_indices(n: int, tc: TrainConfig, step: int, micro: int, accelerator, stream: int = 0) -> torch.Tensor:
    """Epoch-style sampling without replacement; which images a step sees depends only on the step.
    `stream` gives the class images their own order."""
    world, rank = accelerator.num_processes, accelerator.process_index
    first = ((step * tc.gradient_accumulation_steps + micro) * world + rank) * tc.batch_size
    indices = []
    for sample in range(first, first + tc.batch_size):
        epoch, position = divmod(sample, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(tc.seed * 100_003 + epoch + 7_919 * stream))
        indices.append(order[position])
    return torch.stack(indices)


def diffusion_loss(unet, noise_scheduler, data: EncodedDataset, tc: TrainConfig, generator: torch.Generator,
                   device: torch.device, weight_dtype: torch.dtype) -> torch.Tensor:
    """Per-sample noise-prediction (or v-prediction) MSE of one batch; optionally face-weighted and
    min-SNR weighted."""
    mean, std = data.latent_mean, data.latent_std
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
        encoder_hidden_states=data.prompt_embeds.to(weight_dtype),
        added_cond_kwargs={"text_embeds": data.pooled_embeds.to(weight_dtype), "time_ids": data.time_ids},
        return_dict=False,
    )[0].float()
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    error = F.mse_loss(prediction, target, reduction="none")
    if tc.face_loss_weight != 1.0:
        error = error * face_weight_map(data.face_boxes, *error.shape[-2:], tc.face_loss_weight)
    per_sample = error.mean(dim=(1, 2, 3))
    if tc.min_snr_gamma is None:
        return per_sample
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=tc.min_snr_gamma)
    weights = clipped / (snr + 1) if noise_scheduler.config.prediction_type == "v_prediction" else clipped / snr
    return per_sample * weights


def step_metrics(loss: float, person_loss: float, prior_loss: float | None, lr: float, grad_norm: torch.Tensor | None,
                 seconds: float, device: torch.device) -> dict[str, float]:
    """What a step sends to W&B: the loss, and with prior preservation its two parts (the person's photos', the class
    images'; the class loss climbing while the person's falls is the drift prior preservation exists to stop); the
    learning rate; the gradients' norm before clipping (spikes, or a norm pinned at train.max_grad_norm, say the
    learning rate is too high); the step's seconds; and on a GPU the peak memory so far, as torch allocated it."""
    metrics = {"train/loss": loss, "train/lr": lr, "train/step_seconds": seconds}
    if prior_loss is not None:
        metrics.update({"train/person_loss": person_loss, "train/prior_loss": prior_loss})
    if grad_norm is not None:  # DeepSpeed clips inside its own step and returns none
        metrics["train/grad_norm"] = float(grad_norm)
    if device.type == "cuda":
        metrics["train/gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return metrics


def write_progress(path: Path, step: int, max_steps: int, first_step: int, loss: float, started: float) -> None:
    """Where the loop is, for a watcher in another process (the web app): replaced atomically each step,
    so a reader never sees half a file. The ETA counts only this process's steps (a resumed run's
    earlier steps took place in another process, with its own loading time)."""
    now = time.time()
    done = step - first_step
    record = {"step": step, "max_steps": max_steps, "loss": round(loss, 6), "started": round(started, 3),
              "updated": round(now, 3), "resumed_from": first_step,
              "eta_s": round((now - started) / done * (max_steps - step), 1) if done else None}
    write_json_atomic(path, record, indent=None)


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


def parameter_groups(unet_params: list[torch.nn.Parameter], text: TextSide, tc: TrainConfig) -> list[dict]:
    """The UNet LoRA at train.learning_rate; text-encoder LoRA and new token vectors at their own rates. Prodigy
    estimates one step size for all groups and multiplies it by the groups' rate, which must be the same in all of them
    (prodigyopt refuses others but 0), so under it every group takes train.learning_rate, as diffusers' advanced
    DreamBooth script does."""
    own = tc.optimizer != "prodigy"
    groups = [{"params": unet_params, "lr": tc.learning_rate}]
    if text.lora_params:
        groups.append({"params": text.lora_params, "lr": (tc.text_encoder_lr if own else None) or tc.learning_rate})
    if text.embeddings:
        groups.append({"params": text.embeddings, "lr": tc.embedding_lr if own else tc.learning_rate, "weight_decay": 0.0})
    return groups


def make_optimizer(params: list[dict], tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    if tc.optimizer == "prodigy":
        from prodigyopt import Prodigy

        # Prodigy estimates the step size itself; learning_rate is a multiplier (1.0 is the usual choice). Bias
        # correction and the warm-up safeguard as its authors advise for diffusion models, and diffusers' DreamBooth
        # scripts set: without bias correction, early steps are several times larger (about 3x at step 100).
        return Prodigy(params, lr=tc.learning_rate, weight_decay=tc.weight_decay, use_bias_correction=True,
                       safeguard_warmup=True)
    return torch.optim.AdamW(params, lr=tc.learning_rate, weight_decay=tc.weight_decay)


def make_lr_scheduler(optimizer, tc: TrainConfig):
    """The learning-rate schedule over training steps (stepped once per step, on every process alike)."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(tc.lr_scheduler, optimizer, num_warmup_steps=tc.lr_warmup_steps, num_training_steps=tc.max_steps)


def unwrap(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, without DDP's or torch.compile's wrapper (train.compile): its state-dict keys are the
    plain module names that the adapter files and checkpoints use."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def register_lora_checkpoint_hooks(accelerator, unet, text: TextSide) -> None:
    """Make Accelerate's save_state/load_state store only what is trained (MBs), not the UNet (GBs):
    `unet.*` LoRA keys, `text_encoder*.*` LoRA keys and `embeddings.*` new token vectors."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    encoders = {"text_encoder": 0, "text_encoder_2": 1} if text.lora_params else {}

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            state = {f"unet.{k}": v for k, v in unet_lora_state_dict(unwrap(accelerator, unet)).items()}
            for name, k in encoders.items():
                encoder = unwrap(accelerator, text.text_encoders[k])
                state.update({f"{name}.{key}": v for key, v in peft_lora_state_dict(encoder).items()})
            state.update({f"embeddings.{key}": v for key, v in text.embedding_state().items()})
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(Path(output_dir) / LORA_STATE_FILE))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        while models:
            models.pop()
        state = load_file(str(Path(input_dir) / LORA_STATE_FILE))

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}

        set_unet_lora_state_dict(unwrap(accelerator, unet), part("unet"))
        for name, k in encoders.items():
            set_peft_model_state_dict(unwrap(accelerator, text.text_encoders[k]), part(name))
        if text.embeddings:
            text.load_embedding_state(part("embeddings"))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def resolve_wandb_mode(mode: str) -> str | None:
    """None (no tracker), "online" or "offline". auto = online only when a W&B key is configured; W&B's own
    switches in the environment (WANDB_MODE, WANDB_DISABLED) limit either (`wandb_allowed`)."""
    if mode == "disabled":
        return None
    if mode != "auto":
        return wandb_allowed(mode)
    return wandb_allowed("online" if wandb_key_configured() else "offline")


def wandb_key_configured() -> bool:
    """Whether W&B would find a key: WANDB_API_KEY, or what `wandb login` saved for the server runs go to
    (WANDB_BASE_URL's, else W&B's cloud) in the netrc file wandb reads (NETRC's, else ~/.netrc), read by wandb's own
    reader, which warns of a broken file and a malformed key (then: none)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib.wbauth import read_netrc_auth

    try:
        return read_netrc_auth(host=os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai") is not None
    except AuthenticationError:
        return False


def adapter_metadata(cfg: Config, tokens: list[str] = ()) -> dict[str, str]:
    """What a person (or another tool) needs to use the adapter; stored in every adapter file.
    With pivotal tuning the trigger is the new tokens (`<s0><s1>`), loaded from embeddings.safetensors.

    Only what shapes the adapter goes in: the same training exported again (`make train` after a batch trained
    the person, or a run resumed at its last step after a new `train.validation` or checkpoint setting) writes the
    same contents, so the chain, which names its rounds of images by the adapter file's digest, does not draw a round
    again. Paths, W&B's group and the infer settings differ between the CLI and a batch; of the settings a resumed run
    may change (RESUMABLE_KEYS, TRAIN_COMPUTE_KEYS), only the number of steps shapes the weights, and it has its own
    entry."""
    shaping = {key: OmegaConf.to_container(OmegaConf.structured(getattr(cfg, key))) for key in ("model", "prepare")}
    shaping["model"]["pretrained"] = model_source(cfg.model.pretrained)
    shaping["train"] = shaping_settings(cfg.train)
    return {
        "headshots.trigger": "".join(tokens) or cfg.prepare.trigger,
        "headshots.pivotal_tokens": json.dumps(list(tokens)),
        "headshots.class_noun": cfg.prepare.class_noun,
        "headshots.base_model": model_source(cfg.model.pretrained),
        "headshots.resolution": str(cfg.model.resolution),
        "headshots.rank": str(cfg.train.rank),
        "headshots.alpha": str(cfg.train.alpha if cfg.train.alpha is not None else cfg.train.rank),
        "headshots.steps": str(cfg.train.max_steps),
        "headshots.config_sha256": hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest(),
    }


def _loggable_config(cfg: Config) -> dict:
    """The settings a W&B run records, without `paths`: absolute folders name the machine's account and where the
    photos are, which a W&B server has no use for."""
    settings = OmegaConf.to_container(OmegaConf.structured(cfg))
    settings.pop("paths")  # type: ignore[union-attr]
    return settings  # type: ignore[return-value]
