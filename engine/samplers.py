"""Step 2 of every mode: the job's sampler (a fresh scheduler) and one random generator per picture."""

from __future__ import annotations

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dreambot.request import SAMPLERS, GenerateRequest, InvalidRequest

# Sampler name -> (scheduler class, config overrides); names as AUTOMATIC1111 shows them.
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Euler": (EulerDiscreteScheduler, {}),
    "DDIM": (DDIMScheduler, {"clip_sample": False}),  # as AUTOMATIC1111; the default would clip latents
    "UniPC": (UniPCMultistepScheduler, {}),
    "LMS": (LMSDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
}
assert tuple(SCHEDULERS) == SAMPLERS, "engine and protocol must offer the same samplers"


def scheduler(config: dict, request: GenerateRequest) -> SchedulerMixin:
    """A fresh scheduler for the request's sampler, built from the checkpoint's own scheduler
    config (so one job's sampler options, Karras sigmas say, never leak into the next); raises
    InvalidRequest for a sampler that cannot run the request's steps on this model."""
    scheduler_cls, overrides = SCHEDULERS[request.scheduler]
    built = scheduler_cls.from_config(config, **overrides)
    built.set_timesteps(request.num_inference_steps)
    timesteps = built.timesteps.tolist()
    if scheduler_cls is DPMSolverMultistepScheduler and timesteps.count(timesteps[0]) > 1:
        # Karras sigmas on a zero-terminal-SNR schedule can repeat the first timestep, and then
        # this solver starts one step late; diffusers would fail at the end with an IndexError.
        raise InvalidRequest(
            f"The {request.scheduler} sampler cannot run {request.num_inference_steps} steps on this model "
            f"(its noise schedule repeats steps); choose another sampler."
        )
    return built


def check(config: dict, request: GenerateRequest) -> None:
    """Refuse, before any work, a sampler that cannot run the request's steps on this model."""
    scheduler(config, request)


def generators(device: torch.device, seeds: list[int]) -> list[torch.Generator]:
    """One generator per picture, seeded as its job alone would seed it: the starting noise (and any
    noise a sampler adds) of picture i comes from its own generator, whatever the batch."""
    # MPS generators are not reproducible; diffusers recommends CPU generators there.
    on = "cpu" if device.type == "mps" else device
    return [torch.Generator(on).manual_seed(seed) for seed in seeds]
