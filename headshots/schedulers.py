"""Sampling schedulers by short name (`infer.scheduler`), as the SDXL community names them.

Kept apart from headshots/sdxl.py so the config can validate a name without importing diffusers.
Each scheduler is built from the loaded model's own scheduler config (betas, timestep spacing,
prediction type), so only the sampling algorithm changes, never the noise schedule the model was
trained with.
"""

from __future__ import annotations

from typing import Any

# name -> (diffusers class, extra config). Euler and DPM++ 2M (Karras) are the usual SDXL portrait
# choices; the ancestral and SDE variants add fresh noise each step (more texture, less stable
# across step counts); DDIM and UniPC for comparison with other tools' outputs.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, model_scheduler: Any) -> Any:
    """The scheduler called `name`, on the noise schedule of `model_scheduler` (the pipeline's own)."""
    import diffusers

    class_name, extra = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(model_scheduler.config, **extra)
