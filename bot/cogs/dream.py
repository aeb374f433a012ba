"""/dream (text or image to image), /inpaint, /outpaint and /interpolate: defer at once, check
the options and attachments, then run the job (`bot.jobs`), which posts the result."""

# No `from __future__ import annotations`: the option bounds below come from the settings at
# runtime, and discord.py reads the annotations as objects.

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Optional

import discord
from discord import app_commands

from bot import attachments, jobs
from bot.attachments import AttachmentError
from bot.bot import reply_privately
from bot.moderation import Refused, reachable_from
from bot.queue import QueueFull
from dreambot.request import (
    DEFAULT_FRAMES,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    Mode,
    DIRECTIONS,
    MAX_SEED,
    MIN_SIZE,
    SAMPLERS,
    GenerateRequest,
    InvalidRequest,
    default_outpaint_amount,
)

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

Build = Callable[[], Awaitable[tuple[GenerateRequest, tuple[str, ...]]]]


def choices(bot: "DreamBot"):
    """The samplers and the operator's styles as choices (Discord refuses an empty list)."""
    offered = {
        "sampler": [app_commands.Choice(name=name, value=name) for name in SAMPLERS],
        "style": [app_commands.Choice(name=name, value=name) for name in bot.styles],
    }
    return app_commands.choices(**{name: listed for name, listed in offered.items() if listed})


async def start(bot: "DreamBot", interaction: discord.Interaction, build: Build, action: str,
                texts: tuple[Optional[str], ...] = ()) -> None:
    """The common path of every command: defer, refuse what can be refused cheaply (a ban, the
    prompt filter on the words given, the member's limits, the cooldown) before downloading
    anything, then build and check the request and run the job."""
    # Defer before anything else: Discord allows 3 seconds for the first answer.
    await interaction.response.defer(thinking=True)
    origin = jobs.Origin(user=interaction.user, channel=interaction.channel, guild_id=interaction.guild_id,
                         interaction=interaction)
    try:
        prompt, negative, end = (*texts, None, None, None)[:3]
        await jobs.admit(bot, origin, GenerateRequest(prompt=prompt or "", negative_prompt=negative or "",
                                                      end_prompt=end))
        with bot.queue.reserve(interaction.user.id) as reservation:  # the place is held while we download
            await prepare_and_run(bot, interaction, origin, build, action, reservation)
    except Refused as refusal:
        await reply_privately(interaction, f"🚫 {refusal}")
    except QueueFull as full:
        await reply_privately(interaction, f"⏳ {full}")


async def prepare_and_run(bot: "DreamBot", interaction: discord.Interaction, origin: jobs.Origin, build: Build,
                          action: str, reservation) -> None:
    try:
        request, notes, *parent = await build()
        # Discord enforces the option bounds, but a Discord-compatible server or an old client
        # need not: check everything again.
        request = request.validated(bot.settings.limits)
    except AttachmentError as error:
        await reply_privately(interaction, f"⚠️ {error}")
        return
    except InvalidRequest as error:
        await reply_privately(interaction, f"⚠️ {error}")
        return
    except TypeError:
        # A Discord-compatible server that sends text for a number; logged in case it is our bug.
        log.warning("/%s: an option of the wrong type", action, exc_info=True)
        await reply_privately(interaction, "⚠️ One of the options has a value of the wrong type.")
        return
    # Started from an earlier result (a `job` option): recorded as its child.
    parent_job_id, parent_image = parent[0] if parent and parent[0] else (None, None)
    request, policy = await jobs.admit(bot, origin, request)  # Refused: answered by start()
    if parent_job_id is not None and request.mode != "interpolate":
        source = await bot.store.get_job(parent_job_id)
        jobs.check_source(source, parent_image or 0, policy)
        request = jobs.from_source(request, source, parent_image or 0)
    else:
        request = await jobs.check_upload(bot, request, policy, interaction.guild_id)
    await jobs.run(bot, origin, request, policy=policy, action=action, notes=notes, parent_job_id=parent_job_id,
                   parent_image=parent_image, reservation=reservation)


async def earlier_result(bot: "DreamBot", interaction: discord.Interaction, job_id: int, picture: Optional[int]):
    """A result of this server's history to start from (a `job` option): its row and picture."""
    from bot.cogs.results import source_picture  # shared with the buttons

    job = await bot.store.get_job(job_id)
    # An erased job reads like one that never was: its number says nothing to whoever probes it.
    if job is None or job.deleted_at is not None or not await reachable_from(bot.store, job, interaction):
        raise InvalidRequest(f"There is no job {job_id} in this server's history to start from.")
    if job.mode == "interpolate":
        raise InvalidRequest(f"Job {job_id} is an animation; start from a picture.")
    index = 0 if picture is None else picture - 1
    return job, index, await source_picture(bot, job, index)


async def starting_picture(bot: "DreamBot", interaction: discord.Interaction, image, job_id, picture):
    """The picture a command starts from: an attachment, or a result given by its job number.
    Returns (PIL picture, the job it came from or None, that picture's index)."""
    if (image is None) == (job_id is None):
        raise InvalidRequest("Attach an image, or give the job number of a result to start from (not both).")
    if image is not None:
        return await load_picture(bot, image, "The image"), None, None
    job, index, data = await earlier_result(bot, interaction, job_id, picture)
    fitted = await attachments.load_image_async(data, name=f"job {job.id}", max_pixels=10**9,
                                                fit_within=(bot.settings.max_width, bot.settings.max_height))
    return fitted, job, index


def styled(bot: "DreamBot", style: Optional[str], prompt: str, negative: str) -> tuple[str, str]:
    if not style:
        return prompt, negative
    if style not in bot.styles:
        raise InvalidRequest(f"Unknown style {style!r}; choose one of: {', '.join(bot.styles) or '(none set up)'}.")
    prompt, negative = bot.styles[style].apply(prompt, negative)
    most = bot.settings.max_prompt_length
    for name, text in (("prompt", prompt), ("negative prompt", negative)):
        if len(text) > most:
            raise InvalidRequest(f"With the {style} style the {name} is {len(text)} characters long; the limit is "
                                 f"{most}. Shorten it or leave the style out.")
    return prompt, negative


async def load_picture(bot: "DreamBot", attachment: discord.Attachment, what: str, *, mask: bool = False):
    """An attachment as a checked RGB picture (`bot.attachments` says what is refused and why)."""
    settings = bot.settings
    data = await attachments.download(bot.http_session, attachment, what=what,
                                      max_bytes=int(settings.max_attachment_mb * 1_000_000),
                                      allowed_origins=attachments.attachment_origins(settings.discord_api_base))
    return await attachments.load_image_async(data, name=attachment.filename, what=what,
                                              max_pixels=int(settings.max_attachment_megapixels * 1_000_000),
                                              matte=(0, 0, 0) if mask else (255, 255, 255),
                                              fit_within=(settings.max_width, settings.max_height))


async def as_png(image) -> bytes:
    return await asyncio.to_thread(attachments.to_png, image)


def fit(bot: "DreamBot", image, room: tuple[int, int] = (0, 0)):
    """The picture at a size the engine takes, within the limits less `room` (outpainting adds to
    the picture), and a note of what was done to it, if anything."""
    width, height = bot.settings.max_width - room[0], bot.settings.max_height - room[1]
    if min(width, height) < MIN_SIZE:
        raise InvalidRequest(f"That much outpainting leaves no room under this server's size limit of "
                             f"{bot.settings.max_width}×{bot.settings.max_height}; use a smaller amount.")
    return attachments.fit_size(image, max_width=width, max_height=height, min_size=MIN_SIZE)


def build_commands(bot: "DreamBot") -> list[app_commands.Command]:
    limits = bot.settings.limits
    Range = app_commands.Range
    Prompt = Range[str, 1, limits.max_prompt_length]
    Steps = Range[int, 1, limits.max_steps]
    Guidance = Range[float, 0.0, 30.0]
    Seed = Range[int, 0, MAX_SEED]
    Strength = Range[float, 0.01, 1.0]
    JobNumber = Range[int, 1, 2**53]
    Picture = Range[int, 1, limits.max_images]
    common = dict(
        negative="What to keep out of the image (negative prompt)",
        steps=f"Denoising steps (default {DEFAULT_STEPS}): more is slower and often finer",
        guidance=f"How closely to follow the prompt, CFG scale (default {DEFAULT_GUIDANCE:g})",
        seed="Seed for a repeatable image (default: random)",
        sampler=f"Sampler (default {DEFAULT_SAMPLER})",
        style="A style preset that adds to the prompt",
    )

    def prompts(prompt, negative, parent):
        """The member's prompts, or those of the result they start from."""
        if prompt is None and parent is None:
            raise InvalidRequest("Give a prompt, or the job number of a result whose prompt to use.")
        if parent is None:
            return prompt, negative
        return prompt or parent.prompt, parent.negative_prompt if negative is None else negative

    def base(prompt, negative, steps, guidance, seed, sampler, style, **fields) -> GenerateRequest:
        prompt, negative = styled(bot, style, prompt, negative or "")
        return GenerateRequest(
            prompt=prompt,
            negative_prompt=negative,
            num_inference_steps=DEFAULT_STEPS if steps is None else steps,
            guidance_scale=DEFAULT_GUIDANCE if guidance is None else guidance,
            seed=secrets.randbelow(MAX_SEED + 1) if seed is None else seed,
            scheduler=sampler or DEFAULT_SAMPLER,
            style=style or "",
            **fields,
        )

    @choices(bot)
    @app_commands.command(name="dream", description="Make an image from a text prompt, or from an image and a prompt")
    @app_commands.describe(
        prompt="What to draw",
        width="Width in pixels, a multiple of 8 (default: the model's native size)",
        height="Height in pixels, a multiple of 8 (default: the model's native size)",
        count="How many images (default 1)",
        image="A picture to start from (image-to-image): PNG, JPEG, WebP or GIF",
        strength=f"With an image: how much of it to repaint, 0.01-1 (default {Mode.IMG2IMG.default_strength:g})",
        **common,
    )
    async def dream(
        interaction: discord.Interaction,
        prompt: Prompt,
        negative: Optional[Prompt] = None,
        steps: Optional[Steps] = None,
        guidance: Optional[Guidance] = None,
        seed: Optional[Seed] = None,
        width: Optional[Range[int, MIN_SIZE, limits.max_width]] = None,
        height: Optional[Range[int, MIN_SIZE, limits.max_height]] = None,
        sampler: Optional[str] = None,
        count: Optional[Range[int, 1, limits.max_images]] = None,
        style: Optional[str] = None,
        image: Optional[discord.Attachment] = None,
        strength: Optional[Strength] = None,
    ) -> None:
        async def build():
            notes = []
            fields = {"num_images": 1 if count is None else count}
            if image is None:
                if strength is not None:
                    raise InvalidRequest("Strength only applies with an image to start from; attach one or leave "
                                         "strength out.")
                fields.update(width=width, height=height)
            else:
                fitted, notice = await asyncio.to_thread(fit, bot, await load_picture(bot, image, "The image"))
                notes += [notice] if notice else []
                if width is not None or height is not None:
                    notes.append("Width and height were left aside: image-to-image keeps the image's size.")
                fields.update(mode="img2img", image=await as_png(fitted), strength=strength)
            return base(prompt, negative, steps, guidance, seed, sampler, style, **fields), tuple(notes)

        await start(bot, interaction, build, "dream", (prompt, negative))

    @choices(bot)
    @app_commands.command(name="inpaint", description="Repaint the white part of a mask on your image or a result")
    @app_commands.describe(
        image="The picture to change: PNG, JPEG, WebP or GIF (or give job)",
        job="Or the job number of a result to change (shown under it)",
        picture="With job: which of its pictures, 1-4 (default 1)",
        mask="Same size as the image: white where to repaint, black where to keep",
        prompt="What to paint in the masked area (default: the job's prompt)",
        strength=f"How much of the masked area to repaint, 0.01-1 (default {Mode.INPAINT.default_strength:g})",
        **common,
    )
    async def inpaint(
        interaction: discord.Interaction,
        mask: discord.Attachment,
        prompt: Optional[Prompt] = None,
        image: Optional[discord.Attachment] = None,
        job: Optional[JobNumber] = None,
        picture: Optional[Picture] = None,
        negative: Optional[Prompt] = None,
        strength: Optional[Strength] = None,
        steps: Optional[Steps] = None,
        guidance: Optional[Guidance] = None,
        seed: Optional[Seed] = None,
        sampler: Optional[str] = None,
        style: Optional[str] = None,
    ) -> None:
        async def build():
            source, parent, index = await starting_picture(bot, interaction, image, job, picture)
            said, negative_said = prompts(prompt, negative, parent)
            fitted, notice = await asyncio.to_thread(fit, bot, source)
            drawn = await load_picture(bot, mask, "The mask", mask=True)
            scaled, mask_notice = await asyncio.to_thread(attachments.fit_mask, drawn, source)
            # The same resize and crop as the image, so the mask still covers the same pixels.
            fitted_mask, _ = await asyncio.to_thread(fit, bot, scaled)
            notes = tuple(n for n in (notice, mask_notice) if n)
            request = base(said, negative_said, steps, guidance, seed, sampler, style, mode="inpaint",
                           image=await as_png(fitted), mask=await as_png(fitted_mask), strength=strength)
            return request, notes, (parent and parent.id, index)

        await start(bot, interaction, build, "inpaint", (prompt, negative))

    @choices(bot)
    @app_commands.command(name="outpaint", description="Extend your image or a result beyond its edges")
    @app_commands.describe(
        image="The picture to extend: PNG, JPEG, WebP or GIF (or give job)",
        job="Or the job number of a result to extend (shown under it)",
        picture="With job: which of its pictures, 1-4 (default 1)",
        prompt="What the extended picture shows (default: the job's prompt)",
        direction="Which side to extend (default: all)",
        amount="How many pixels to add, a multiple of 8 (default: a quarter of the picture)",
        **common,
    )
    @app_commands.choices(direction=[app_commands.Choice(name=d, value=d) for d in DIRECTIONS])
    async def outpaint(
        interaction: discord.Interaction,
        image: Optional[discord.Attachment] = None,
        job: Optional[JobNumber] = None,
        picture: Optional[Picture] = None,
        prompt: Optional[Prompt] = None,
        direction: Optional[str] = None,
        amount: Optional[Range[int, 8, 512]] = None,
        negative: Optional[Prompt] = None,
        steps: Optional[Steps] = None,
        guidance: Optional[Guidance] = None,
        seed: Optional[Seed] = None,
        sampler: Optional[str] = None,
        style: Optional[str] = None,
    ) -> None:
        async def build():
            side = direction or "all"
            if side not in DIRECTIONS:
                raise InvalidRequest(f"Unknown direction {side!r}; choose one of: {', '.join(DIRECTIONS)}.")
            if amount is not None and amount % 8:
                raise InvalidRequest(f"The amount must be a multiple of 8 (got {amount}; try {amount - amount % 8 or 8}).")
            source, parent, index = await starting_picture(bot, interaction, image, job, picture)
            said, negative_said = prompts(prompt, negative, parent)
            if amount is None:
                # A quarter of the picture by default: sized for the picture, whatever the model.
                shown, _ = await asyncio.to_thread(fit, bot, source)
                length = {"left": shown.width, "right": shown.width, "up": shown.height, "down": shown.height}
                grow = default_outpaint_amount(length.get(side, min(shown.size)))
            else:
                grow = amount
            times = 2 if side == "all" else 1
            wide = times * grow if side in ("left", "right", "all") else 0
            tall = times * grow if side in ("up", "down", "all") else 0
            fitted, notice = await asyncio.to_thread(fit, bot, source, (wide, tall))
            request = base(said, negative_said, steps, guidance, seed, sampler, style, mode="outpaint",
                           image=await as_png(fitted), direction=side, amount=grow)
            return request, tuple(n for n in (notice,) if n), (parent and parent.id, index)

        await start(bot, interaction, build, "outpaint", (prompt, negative))

    @choices(bot)
    @app_commands.command(name="interpolate", description="Animate from one prompt (or seed) to another, as a GIF")
    @app_commands.describe(
        prompt="Where the animation starts (default: the job's prompt)",
        job="Or start from a result: its job number (its prompt and seed)",
        picture="With job: which of its pictures, 1-4 (default 1)",
        end_prompt="Where it ends (default: the same prompt, with end_seed)",
        end_seed="The seed it ends on (default: the start seed)",
        frames=f"Number of frames, 2-{limits.max_frames} (default {DEFAULT_FRAMES})",
        width="Width in pixels, a multiple of 8 (default: the model's native size)",
        height="Height in pixels, a multiple of 8 (default: the model's native size)",
        **common,
    )
    async def interpolate(
        interaction: discord.Interaction,
        prompt: Optional[Prompt] = None,
        job: Optional[JobNumber] = None,
        picture: Optional[Picture] = None,
        end_prompt: Optional[Prompt] = None,
        seed: Optional[Seed] = None,
        end_seed: Optional[Seed] = None,
        frames: Optional[Range[int, 2, limits.max_frames]] = None,
        negative: Optional[Prompt] = None,
        steps: Optional[Steps] = None,
        guidance: Optional[Guidance] = None,
        width: Optional[Range[int, MIN_SIZE, limits.max_width]] = None,
        height: Optional[Range[int, MIN_SIZE, limits.max_height]] = None,
        sampler: Optional[str] = None,
        style: Optional[str] = None,
    ) -> None:
        async def build():
            parent = index = None
            start_seed, size = seed, (width, height)
            if job is not None:
                parent, index, _ = await earlier_result(bot, interaction, job, picture)
                if start_seed is None:
                    start_seed = (parent.seed + index) % (MAX_SEED + 1)  # that picture's own seed
                if size == (None, None):
                    size = (parent.width, parent.height)
            said, negative_said = prompts(prompt, negative, parent)
            end = styled(bot, style, end_prompt, "")[0] if end_prompt else None
            request = base(said, negative_said, steps, guidance, start_seed, sampler, style, mode="interpolate",
                           end_prompt=end, end_seed=end_seed, frames=DEFAULT_FRAMES if frames is None else frames,
                           width=size[0], height=size[1])
            return request, (), (parent and parent.id, index)

        await start(bot, interaction, build, "interpolate", (prompt, negative, end_prompt))

    return [dream, inpaint, outpaint, interpolate]


NAMES = ("dream", "inpaint", "outpaint", "interpolate")


async def setup(bot: "DreamBot") -> None:
    for command in build_commands(bot):
        bot.tree.add_command(command)


async def teardown(bot: "DreamBot") -> None:
    for name in NAMES:
        bot.tree.remove_command(name)
