"""Building a job's request, with no Discord in sight: from a command's options (styles, defaults,
the prompts of the result it starts from), or from an earlier result for its buttons (re-roll,
vary, upscale, extend). Every request leaves here checked against the server's limits."""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path

from bot.images import ImageStore
from bot.store import JobRow
from bot.styles import Style
from dreambot.models import ASPECTS, Catalogue, Defaults, Model, Place, aspect_size
from dreambot.request import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_SEED,
    MIN_SIZE,
    SAMPLERS,
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


@dataclass(frozen=True)
class MemberSettings:
    """A member's own defaults (/settings): used where a command's options say nothing."""

    model: str | None = None
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    aspect: str | None = None
    style: str | None = None
    negative: str | None = None

    @classmethod
    def from_stored(cls, data: dict) -> MemberSettings:
        """As stored; keys this release does not know are left out."""
        known = {f.name for f in dataclass_fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def stored(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


def checked_settings(member: MemberSettings, changes: dict, catalogue: Catalogue, styles: dict[str, Style],
                     limits: Limits) -> MemberSettings:
    """The member's defaults with `changes` made (None: no setting of their own), each change checked
    as a command's option would be (InvalidRequest says what is wrong); what they stored before and
    is no longer usable here is left out (`usable`), never blamed on this change."""
    given = {key: value for key, value in changes.items() if value is not None}
    if "model" in given:
        given["model"] = catalogue.resolve(given["model"]).name
    if given.get("sampler", SAMPLERS[0]) not in SAMPLERS:
        raise InvalidRequest(f"Unknown sampler {given['sampler']!r}; choose one of: {', '.join(SAMPLERS)}.")
    if given.get("aspect", ASPECTS[0]) not in ASPECTS:
        raise InvalidRequest(f"Unknown aspect ratio {given['aspect']!r}; choose one of: {', '.join(ASPECTS)}.")
    if "style" in given and given["style"] not in styles:
        raise InvalidRequest(f"Unknown style {given['style']!r}; choose one of: {', '.join(styles) or '(none)'}.")
    if len(given.get("negative", "")) > limits.max_prompt_length:
        raise InvalidRequest(f"The negative prompt is {len(given['negative'])} characters long; the limit is "
                             f"{limits.max_prompt_length}.")
    # Steps, guidance and size as a request checks them, within this bot's limits.
    GenerateRequest(prompt="x", width=given.get("width"), height=given.get("height"),
                    num_inference_steps=given.get("steps", DEFAULT_STEPS),
                    guidance_scale=given.get("guidance", DEFAULT_GUIDANCE)).validated(limits)
    changed = replace(member, **changes)
    if given.get("aspect") is not None:  # an aspect replaces a size, and a size an aspect
        changed = replace(changed, width=None, height=None)
    elif given.get("width") is not None or given.get("height") is not None:
        changed = replace(changed, aspect=None)
    return usable(changed, catalogue, styles, limits)


def usable(member: MemberSettings, catalogue: Catalogue, styles: dict[str, Style], limits: Limits
           ) -> MemberSettings:
    """The member's defaults without those that no longer apply: a model or style since removed,
    steps or a size past limits since lowered. A job then takes the next default in line."""
    within = {
        "model": member.model is None or catalogue.get(member.model) is not None,
        "style": member.style is None or member.style in styles,
        "sampler": member.sampler is None or member.sampler in SAMPLERS,
        "aspect": member.aspect is None or member.aspect in ASPECTS,
        "steps": member.steps is None or 1 <= member.steps <= limits.max_steps,
        "guidance": member.guidance is None or 0 <= member.guidance <= 30,
        "width": member.width is None or MIN_SIZE <= member.width <= limits.max_width and member.width % 8 == 0,
        "height": member.height is None or MIN_SIZE <= member.height <= limits.max_height and member.height % 8 == 0,
        "negative": member.negative is None or len(member.negative) <= limits.max_prompt_length,
    }
    return replace(member, **{key: None for key, ok in within.items() if not ok})


def pick_model(catalogue: Catalogue, option: str | None, member: MemberSettings, place: Place) -> Model:
    """The job's model: the command's option, else the member's own, the channel's, the server's
    and the bot's default, the first of them the channel allows."""
    if option:
        model = catalogue.resolve(option, shown=place.allows)  # naming no model the channel hides
        if not place.allows(model.name):
            raise InvalidRequest(place.refusal(model.name))
        return model
    for name in (member.model, place.channel_model, place.server_model, catalogue.default):
        named = catalogue.get(name) if name else None
        if named is not None and place.allows(named.name):
            return named
    allowed = [model for model in catalogue if place.allows(model.name)]
    if not allowed:
        raise InvalidRequest("None of this server's models is allowed in this channel; ask a moderator "
                             "(/mod model).")
    return allowed[0]


def size_of(model: Model, limits: Limits, width: int | None, height: int | None, aspect: str | None,
            member: MemberSettings) -> tuple[int | None, int | None]:
    """The picture's size: the options' width, height or aspect, else the member's own, else the
    model's default (None: the engine's native size). An aspect keeps the model's pixel count."""
    for given_width, given_height, given_aspect in ((width, height, aspect),
                                                   (member.width, member.height, member.aspect)):
        if given_aspect is not None:
            if given_width is not None or given_height is not None:
                raise InvalidRequest("Give an aspect ratio or a width and height, not both.")
            return aspect_size(given_aspect, model.pixels, limits)
        if given_width is not None or given_height is not None:
            default_width, default_height = model.size
            return (given_width or default_width, given_height or default_height)
    return model.size


def from_options(styles: dict[str, Style], limits: Limits, wildcards: Path | None, prompt: str,
                 negative: str | None, steps: int | None, guidance: float | None, seed: int | None,
                 sampler: str | None, style: str | None, lora: str | None = None, lora_weight: float | None = None,
                 *, model: Model | None = None, member: MemberSettings = MemberSettings(),
                 **fields) -> GenerateRequest:
    """A command's request: each option a member left out takes their own setting, else the model's
    default, else the built-in one (a random seed); its wildcards and choices picked by that seed,
    and the `lora` option added to the prompt as a tag."""
    own = model.defaults if model is not None else Defaults()
    style = style or member.style
    negative = first(negative, member.negative, own.negative_prompt, "")
    prompt, negative = styled(styles, limits, style, prompt, negative)
    seed = new_seed() if seed is None else seed
    prompt, negative = wildcards_expand(prompt, seed, wildcards), wildcards_expand(negative, seed, wildcards,
                                                                                   "negative prompt")
    prompt = with_lora(prompt, lora, lora_weight)
    if fields.get("end_prompt"):
        fields["end_prompt"] = wildcards_expand(fields["end_prompt"], seed, wildcards, "end prompt")
    return GenerateRequest(
        prompt=prompt,
        negative_prompt=negative,
        model=model.name if model is not None else "",
        num_inference_steps=first(steps, member.steps, own.steps, DEFAULT_STEPS),
        guidance_scale=first(guidance, member.guidance, own.guidance, DEFAULT_GUIDANCE),
        seed=seed,
        scheduler=first(sampler, member.sampler, own.sampler, DEFAULT_SAMPLER),
        style=style or "",
        **fields,
    ).validated(limits)


def first(*values):
    """The first value that is not None: the precedence of options, settings and defaults."""
    return next(value for value in values if value is not None)


def startable(job: JobRow, index: int) -> None:
    """Raise InvalidRequest unless picture `index` of `job` was made and shown (it may be started from)."""
    if job.status != "done":
        raise InvalidRequest(f"Job {job.id} is {job.status}; wait for its picture first.")
    if not job.shown(index):
        raise InvalidRequest(f"Job {job.id} has no picture {index + 1} to start from.")


async def source_picture(images: ImageStore, job: JobRow, index: int) -> bytes:
    """Picture `index` of a finished job, as posted, to start a new job from."""
    startable(job, index)
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


async def edited(images: ImageStore, limits: Limits, job: JobRow, prompt: str, negative_prompt: str, seed: str,
                 wildcards: Path | None = None) -> GenerateRequest:
    """The request the Edit form starts from `job`: everything the job had (its input pictures too),
    with the prompts and seed the member typed. The stored prompts already hold the job's style's
    words and its wildcards' picks, so nothing is added to them again; a wildcard or `{a|b}` typed
    in the form is drawn by the seed, as in a command."""
    request = await stored_inputs(images, job)
    if request is None:
        raise InvalidRequest(f"The picture job {job.id} started from is no longer stored; "
                             "start again with the command.")
    drawn = typed_seed(seed)
    return replace(request, prompt=wildcards_expand(prompt, drawn, wildcards),
                   negative_prompt=wildcards_expand(negative_prompt, drawn, wildcards, "negative prompt"),
                   seed=drawn).validated(limits)


def typed_seed(text: str) -> int:
    """A seed as a member types it in a form: a whole number in range, or nothing for a new random one."""
    text = text.strip()
    if not text:
        return new_seed()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEED:
        raise InvalidRequest(f"The seed must be a whole number from 0 to {MAX_SEED}, not “{text[:20]}”; "
                             "leave it empty for a random one.")
    return int(text)


def enough_steps(job: JobRow, strength: float) -> int:
    """The job's steps, or the few more that `strength` needs to leave at least one to run."""
    return max(job.request.num_inference_steps, math.ceil(1 / strength))
