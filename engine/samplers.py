"""Step 2 of every mode: the job's sampler (a fresh scheduler) and one random generator per picture."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteSchedulerOutput
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
    # For LCM models (an LCM-LoRA merged in, or distilled), at 1 to 8 steps and guidance 1 or less.
    # Its steps are picked from the `original_inference_steps` (50) its model was distilled on.
    "LCM": (LCMScheduler, {"clip_sample": False}),  # never clip latents, as for DDIM
}
assert tuple(SCHEDULERS) == SAMPLERS, "engine and protocol must offer the same samplers"


def config_text(config: Mapping) -> str:
    """A model's scheduler config as the JSON text the functions below take: made once per model,
    since `trained_betas` alone is 1000 numbers (half a millisecond a job, made for each)."""
    return json.dumps(config, sort_keys=True, default=str)


def scheduler(config: str, request: GenerateRequest) -> SchedulerMixin:
    """A fresh scheduler for the request's sampler, built from the checkpoint's own scheduler
    config (`config_text`; so one job's sampler options, Karras sigmas say, never leak into the
    next); raises InvalidRequest for a sampler that cannot run the request's steps on this model."""
    check(config, request)
    return copy.deepcopy(_template(config, request.scheduler))


def check(config: str, request: GenerateRequest) -> None:
    """Refuse, before any work, a sampler that cannot run the request's steps on this model."""
    refusal = _refusal(config, request.scheduler, request.num_inference_steps)
    if refusal is not None:
        raise InvalidRequest(refusal)


@functools.lru_cache(maxsize=256)
def _refusal(config: str, sampler: str, steps: int) -> str | None:
    """Why the sampler cannot run `steps` steps on a model of this scheduler config; None: it can.
    Known once per (model, sampler, steps): it takes a scheduler's set_timesteps."""
    built = copy.deepcopy(_template(config, sampler))
    if isinstance(built, LCMScheduler) and steps > built.config.original_inference_steps:
        # Its steps are a subset of that schedule; diffusers would raise a ValueError.
        return (f"The {sampler} sampler runs at most {built.config.original_inference_steps} steps "
                f"(got {steps}); it is made for 1 to 8. Choose fewer steps or another sampler.")
    built.set_timesteps(steps)
    timesteps = built.timesteps.tolist()
    if isinstance(built, DPMSolverMultistepScheduler) and timesteps.count(timesteps[0]) > 1:
        # Karras sigmas on a zero-terminal-SNR schedule can repeat the first timestep, and then
        # this solver starts one step late; diffusers would fail at the end with an IndexError.
        return (f"The {sampler} sampler cannot run {steps} steps on this model "
                f"(its noise schedule repeats steps); choose another sampler.")
    return None


@functools.lru_cache(maxsize=64)
def _template(config: str, sampler: str) -> SchedulerMixin:
    """The sampler's scheduler built from a model's scheduler config (JSON), copied for each job:
    `from_config` inspects every compatible scheduler class's signature, some 20 ms a job on a CPU,
    next to a few for the copy (bench/throughput.py)."""
    scheduler_cls, overrides = SCHEDULERS[sampler]
    built = scheduler_cls.from_config(json.loads(config), **overrides)
    if scheduler_cls is HeunDiscreteScheduler and starts_from_pure_noise(built):
        built = HeunFromPureNoise.from_config(built.config)  # its first step is Euler's
    return built


# Below this signal-to-noise ratio a step starts from pure noise. Stable Diffusion's own schedules
# start at 0.0047 (sigma 14.6); zero-terminal-SNR ones at 2**-24 (sigma 4096: diffusers' stand-in
# for zero, which would make sigma infinite) or lower. The cut lies far from both.
PURE_NOISE_SNR = 1e-4


def starts_from_pure_noise(scheduler: HeunDiscreteScheduler) -> bool:
    """Whether the scheduler's first step starts at zero (terminal) SNR."""
    return float(scheduler.sigmas.max()) ** -2 < PURE_NOISE_SNR


class HeunFromPureNoise(HeunDiscreteScheduler):
    """Heun's sampler for a zero-terminal-SNR schedule: its step out of pure noise is Euler's.

    Heun corrects each Euler step with the slope at the step's far end, averaging the two. Out of
    pure noise, from sigma 4096 to about 40 (20 steps on the bundled model), that correction comes
    to 4096 / (2 x 40), about 50, times how much the model's predicted picture changed between the
    two ends: the picture drowns in it (at 25 steps too, for some seeds). The slope at an infinite
    sigma, which 4096 stands in for, is no more fit for the trapezoid than the one at sigma 0, where
    diffusers' Heun, like k-diffusion's, already ends with an Euler step. The schedule keeps its
    shape (2n - 1 evaluations, as img2img's start and the progress count expect): the second
    evaluation of that first step still runs, and only its correction is dropped."""

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             return_dict: bool = True) -> HeunDiscreteSchedulerOutput | tuple:
        if self.step_index is None:
            self._init_step_index(timestep)
        # In its second half, a step's start is the previous sigma; `sample` is where Euler landed.
        euler = not self.state_in_first_order and float(self.sigmas[self.step_index - 1]) ** -2 < PURE_NOISE_SNR
        stepped = super().step(model_output, timestep, sample, return_dict=False)
        prev_sample, pred_original_sample = (sample, stepped[1]) if euler else stepped
        if not return_dict:
            return prev_sample, pred_original_sample
        return HeunDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)


def generators(device: torch.device, seeds: list[int]) -> list[torch.Generator]:
    """One generator per picture, seeded as its job alone would seed it: the starting noise (and any
    noise a sampler adds) of picture i comes from its own generator, whatever the batch."""
    # MPS generators are not reproducible; diffusers recommends CPU generators there.
    on = "cpu" if device.type == "mps" else device
    return [torch.Generator(on).manual_seed(seed) for seed in seeds]
