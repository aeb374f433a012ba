"""Building a job's request, with no Discord in sight: from a command's options (styles, defaults,
the prompts of the result it starts from), or from an earlier result for its buttons (re-roll,
vary, upscale, extend). Every request leaves here checked against the server's limits."""

from __future__ import annotations

import math
import secrets
from dataclasses import replace
from pathlib import Path

from bot.images import ImageStore
from bot.store import JobRow
from bot.styles import Style
from dreambot.request import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_SEED,
    GenerateRequest,
    InvalidRequest,
    Limits,
    Mode,
    default_outpaint_amount,
    picture_seed,
)
from dreambot.wildcards import expand as wildcards_expand

# A variation repaints this much of its source: close to it, yet visibly different.
VARY_STRENGTH = 0.5
# The arrows on a result extend it that way by a quarter ("pan", as Midjourney calls it).
PANS = ("left", "right", "up", "down")


def new_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def styled(styles: dict[str, Style], limits: Limits, style: str | None, prompt: str, negative: str
           ) -> tuple[str, str]:
    """The prompts with a style preset's words added, still within the length limit."""
    if not style:
        return prompt, negative
    if style not in styles:
        raise InvalidRequest(f"Unknown style {style!r}; choose one of: {', '.join(styles) or '(none set up)'}.")
    prompt, negative = styles[style].apply(prompt, negative)
    most = limits.max_prompt_length
    for name, text in (("prompt", prompt), ("negative prompt", negative)):
        if len(text) > most:
            raise InvalidRequest(f"With the {style} style the {name} is {len(text)} characters long; the limit is "
                                 f"{most}. Shorten it or leave the style out.")
    return prompt, negative


def with_lora(prompt: str, lora: str | None, weight: float | None) -> str:
    """The prompt with the `lora` option's tag at its end (`<lora:NAME:WEIGHT>`, as a member could type it)."""
    if lora is None:
        if weight is not None:
            raise InvalidRequest("lora_weight is the weight of a LoRA: choose one in the lora option too.")
        return prompt
    name = lora.strip()
    if not name or any(c in name for c in "<>:/\\") or len(name) > 100:
        raise InvalidRequest(f"There is no LoRA named “{lora[:100]}”: pick one from the list the lora option offers, "
                             "or see /loras.")
    return f"{prompt} <lora:{name}:{1.0 if weight is None else weight:g}>"


def prompts(prompt: str | None, negative: str | None, parent: JobRow | None) -> tuple[str, str | None]:
    """The member's prompts, or those of the result they start from."""
    if prompt is None and parent is None:
        raise InvalidRequest("Give a prompt, or the job number of a result whose prompt to use.")
    if parent is None:
        return prompt or "", negative
    said = parent.request
    return prompt or said.prompt, said.negative_prompt if negative is None else negative


def from_options(styles: dict[str, Style], limits: Limits, wildcards: Path | None, prompt: str,
                 negative: str | None, steps: int | None, guidance: float | None, seed: int | None,
                 sampler: str | None, style: str | None, lora: str | None = None, lora_weight: float | None = None,
                 **fields) -> GenerateRequest:
    """A command's request: the options a member left out take the defaults (a random seed), its
    wildcards and choices picked by that seed, and the `lora` option added to the prompt as a tag."""
    prompt, negative = styled(styles, limits, style, prompt, negative or "")
    seed = new_seed() if seed is None else seed
    prompt, negative = wildcards_expand(prompt, seed, wildcards), wildcards_expand(negative, seed, wildcards,
                                                                                   "negative prompt")
    prompt = with_lora(prompt, lora, lora_weight)
    if fields.get("end_prompt"):
        fields["end_prompt"] = wildcards_expand(fields["end_prompt"], seed, wildcards, "end prompt")
    return GenerateRequest(
        prompt=prompt,
        negative_prompt=negative,
        num_inference_steps=DEFAULT_STEPS if steps is None else steps,
        guidance_scale=DEFAULT_GUIDANCE if guidance is None else guidance,
        seed=seed,
        scheduler=sampler or DEFAULT_SAMPLER,
        style=style or "",
        **fields,
    ).validated(limits)


async def source_picture(images: ImageStore, job: JobRow, index: int) -> bytes:
    """Picture `index` of a finished job, as posted, to start a new job from."""
    if job.status != "done":
        raise InvalidRequest(f"Job {job.id} is {job.status}; wait for its picture first.")
    if not job.shown(index):
        raise InvalidRequest(f"Job {job.id} has no picture {index + 1} to start from.")
    source = await images.result(job.id, index)
    if source is None:
        raise InvalidRequest(f"Picture {index + 1} of job {job.id} is no longer stored.")
    return source


async def stored_inputs(images: ImageStore, job: JobRow) -> GenerateRequest | None:
    """The job's request with the pictures it started from, or None if they are no longer stored."""
    mode = job.request.mode
    image = await images.load(job.id, "image") if mode.needs_image else None
    mask = await images.load(job.id, "mask") if mode.needs_mask else None
    if (mode.needs_image and image is None) or (mode.needs_mask and mask is None):
        return None
    return job.with_pictures(image, mask)


async def derived(images: ImageStore, limits: Limits, job: JobRow, action: str, index: int | None
                  ) -> GenerateRequest:
    """The request a button starts from `job`: the same settings with a new seed (re-roll), an
    img2img pass over one of its pictures (vary), that picture extended on one side (the arrows),
    or at twice the size (upscale)."""
    seed = new_seed()
    if action == "reroll":
        request = await stored_inputs(images, job)
        if request is None:
            raise InvalidRequest(f"The picture job {job.id} started from is no longer stored; "
                                 "start again with the command.")
        return replace(request, seed=seed).validated(limits)

    if job.request.mode is Mode.INTERPOLATE:
        raise InvalidRequest("An animation cannot be varied, upscaled or extended; re-roll it instead.")
    index = 0 if index is None else index
    source = await source_picture(images, job, index)
    base = replace(job.request, num_images=1, image=source, mask=None, width=None, height=None,
                   end_prompt=None, end_seed=None)
    if action == "vary":
        return replace(base, mode=Mode.IMG2IMG, strength=VARY_STRENGTH, seed=seed,
                       num_inference_steps=enough_steps(job, VARY_STRENGTH)).validated(limits)
    width, height = job.width or 0, job.height or 0
    if action in PANS:
        side = width if action in ("left", "right") else height
        amount = default_outpaint_amount(side)
        wider, taller = (amount, 0) if action in ("left", "right") else (0, amount)
        if width + wider > limits.max_width or height + taller > limits.max_height:
            raise InvalidRequest(f"This picture is {width}×{height}; extending it would go over this server's "
                                 f"limit of {limits.max_width}×{limits.max_height}.")
        return replace(base, mode=Mode.OUTPAINT, direction=action, amount=amount, strength=None, seed=seed
                       ).validated(limits)
    if width * 2 > limits.max_width or height * 2 > limits.max_height:
        raise InvalidRequest(f"This picture is {width}×{height}; twice that is over this server's limit of "
                             f"{limits.max_width}×{limits.max_height}.")
    # The picture's own seed keeps the upscale's added detail in the spirit of the original.
    assert job.request.seed is not None
    upscale_strength = Mode.UPSCALE.default_strength or 1.0
    return replace(base, mode=Mode.UPSCALE, strength=None, seed=picture_seed(job.request.seed, index),
                   num_inference_steps=enough_steps(job, upscale_strength)).validated(limits)


def enough_steps(job: JobRow, strength: float) -> int:
    """The job's steps, or the few more that `strength` needs to leave at least one to run."""
    return max(job.request.num_inference_steps, math.ceil(1 / strength))
