"""/dream (text or image to image), /inpaint, /outpaint and /interpolate: defer at once, check
the options and attachments, build the request (`bot.requests`), then run the job (`bot.jobs`),
which posts the result."""

# No `from __future__ import annotations`: discord.py reads the option annotations as objects.

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Optional, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot import attachments
from bot.attachments import AttachmentError
from bot.delivery import Origin
from bot.moderation import Refused, check_source, from_source, reachable_from
from bot.queue import QueueFull, Reservation
from bot.replies import reply_privately
from bot.requests import from_options, pick_model, prompts, size_of, source_picture, startable, styled
from bot.store import JobRow
from bot.views import ASPECT_CHOICES, SAMPLER_CHOICES, member_defaults, model_choices
from dreambot.prompt import MAX_LORA_WEIGHT, MIN_LORA_WEIGHT
from dreambot.request import (
    DEFAULT_FRAMES,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    DIRECTIONS,
    MAX_SEED,
    MIN_SIZE,
    GenerateRequest,
    InvalidRequest,
    Mode,
    default_outpaint_amount,
    picture_seed,
)

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

# The request, notes on what was done to the member's pictures, and (job, picture) it started from.
Built = tuple[GenerateRequest, tuple[str, ...], tuple[Optional[int], Optional[int]]]
Build = Callable[[], Awaitable[Built]]

T = TypeVar("T")
# The checks that run before the public "thinking…" get this long; past it the bot defers first and
# finishes them after (Discord drops an interaction not answered within 3 seconds).
DEFER_DEADLINE_SECONDS = 2.0

Range = app_commands.Range
# Bounds that come from the operator's settings are set per bot when the cog is made (`_bound`);
# these are the most any setting allows.
Prompt = Range[str, 1, 6000]
Steps = Range[int, 1, 500]
Width = Range[int, MIN_SIZE, 4096]
Height = Range[int, MIN_SIZE, 4096]
Count = Range[int, 1, 10]
Picture = Range[int, 1, 10]
Frames = Range[int, 2, 64]
Guidance = Range[float, 0.0, 30.0]
Seed = Range[int, 0, MAX_SEED]
Strength = Range[float, 0.01, 1.0]
JobNumber = Range[int, 1, 2**53]
Amount = Range[int, 8, 512]
LoraWeight = Range[float, MIN_LORA_WEIGHT, MAX_LORA_WEIGHT]

COMMON = dict(
    negative="What to keep out of the image (negative prompt)",
    steps=f"Denoising steps (default {DEFAULT_STEPS}): more is slower and often finer",
    guidance=f"How closely to follow the prompt, CFG scale (default {DEFAULT_GUIDANCE:g})",
    seed="Seed for a repeatable image (default: random)",
    sampler=f"Sampler (default {DEFAULT_SAMPLER})",
    style="A style preset that adds to the prompt",
    lora="A LoRA to apply (see /loras); adds <lora:NAME:WEIGHT> to the prompt",
    lora_weight=f"The LoRA's weight, {MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g} (default 1)",
    model="Which model draws it (see /models; default: yours from /settings, or this channel's)",
)
ASPECT = "Aspect ratio at the model's native pixel count (instead of width and height)"


class Dream(commands.Cog):
    def __init__(self, bot: "DreamBot") -> None:
        self.bot = bot
        limits = bot.settings.limits
        for command in self.get_app_commands():
            assert isinstance(command, app_commands.Command)
            _bound(command, prompt=(1, limits.max_prompt_length), negative=(1, limits.max_prompt_length),
                   end_prompt=(1, limits.max_prompt_length), steps=(1, limits.max_steps),
                   width=(MIN_SIZE, limits.max_width), height=(MIN_SIZE, limits.max_height),
                   count=(1, limits.max_images), picture=(1, limits.max_images), frames=(2, limits.max_frames))
            if "frames" in command._params:
                command._params["frames"] = dataclasses.replace(
                    command._params["frames"],
                    description=f"Number of frames, 2-{limits.max_frames} (default {DEFAULT_FRAMES})")
            # The operator's styles (Discord refuses an empty list of choices: then any text, checked here).
            if "style" in command._params and bot.styles:
                command._params["style"] = dataclasses.replace(
                    command._params["style"],
                    choices=[app_commands.Choice(name=name, value=name) for name in bot.styles])

    # -- the commands ----------------------------------------------------------------------------

    @app_commands.command(name="dream", description="Make an image from a text prompt, or from an image and a prompt")
    @app_commands.describe(
        prompt="What to draw",
        width="Width in pixels, a multiple of 8 (default: the model's native size)",
        height="Height in pixels, a multiple of 8 (default: the model's native size)",
        count="How many images (default 1)",
        image="A picture to start from (image-to-image): PNG, JPEG, WebP or GIF",
        strength=f"With an image: how much of it to repaint, 0.01-1 (default {Mode.IMG2IMG.default_strength:g})",
        aspect=ASPECT,
        **COMMON,
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES, aspect=ASPECT_CHOICES)
    async def dream(
        self,
        interaction: discord.Interaction,
        prompt: Prompt,
        negative: Optional[Prompt] = None,
        steps: Optional[Steps] = None,
        guidance: Optional[Guidance] = None,
        seed: Optional[Seed] = None,
        width: Optional[Width] = None,
        height: Optional[Height] = None,
        sampler: Optional[str] = None,
        count: Optional[Count] = None,
        style: Optional[str] = None,
        image: Optional[discord.Attachment] = None,
        strength: Optional[Strength] = None,
        lora: Optional[str] = None,
        lora_weight: Optional[LoraWeight] = None,
        model: Optional[str] = None,
        aspect: Optional[str] = None,
    ) -> None:
        async def check() -> None:
            if image is None and strength is not None:
                raise InvalidRequest("Strength only applies with an image to start from; attach one or leave "
                                     "strength out.")
            if image is not None:
                self.declared(image, "The image")
            await self.request(interaction, prompt, negative, steps, guidance, seed, sampler, style, lora=lora,
                               lora_weight=lora_weight, model=model, num_images=1 if count is None else count,
                               size=(width, height, aspect) if image is None else None)

        async def build() -> Built:
            notes = []
            fields: dict = {"num_images": 1 if count is None else count}
            if image is None:
                fields["size"] = (width, height, aspect)
            else:
                fitted, notice = await asyncio.to_thread(self.fit, await self.load_picture(image, "The image"))
                notes += [notice] if notice else []
                if width is not None or height is not None or aspect is not None:
                    notes.append("The size options were left aside: image-to-image keeps the image's size.")
                fields.update(mode=Mode.IMG2IMG, image=await as_png(fitted), strength=strength)
            return await self.request(interaction, prompt, negative, steps, guidance, seed, sampler, style, lora=lora,
                                      lora_weight=lora_weight, model=model, **fields), tuple(notes), (None, None)

        await self.start(interaction, check, build, "dream", (prompt, negative))

    @app_commands.command(name="inpaint", description="Repaint the white part of a mask on your image or a result")
    @app_commands.describe(
        image="The picture to change: PNG, JPEG, WebP or GIF (or give job)",
        job="Or the job number of a result to change (shown under it)",
        picture="With job: which of its pictures, from 1 (default 1)",
        mask="Same size as the image: white where to repaint, black where to keep",
        prompt="What to paint in the masked area (default: the job's prompt)",
        strength=f"How much of the masked area to repaint, 0.01-1 (default {Mode.INPAINT.default_strength:g})",
        **COMMON,
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES)
    async def inpaint(
        self,
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
        lora: Optional[str] = None,
        lora_weight: Optional[LoraWeight] = None,
        model: Optional[str] = None,
    ) -> None:
        async def check() -> None:
            self.declared(mask, "The mask")
            await self.options(interaction, image, job, picture, prompt, negative, steps, guidance, seed, sampler,
                               style, lora=lora, lora_weight=lora_weight, model=model)

        async def build() -> Built:
            source, parent, index = await self.starting_picture(interaction, image, job, picture)
            said, negative_said = prompts(prompt, negative, parent)
            fitted, notice = await asyncio.to_thread(self.fit, source)
            drawn = await self.load_picture(mask, "The mask", mask=True)
            scaled, mask_notice = await asyncio.to_thread(attachments.fit_mask, drawn, source)
            # The same resize and crop as the image, so the mask still covers the same pixels.
            fitted_mask, _ = await asyncio.to_thread(self.fit, scaled)
            notes = tuple(n for n in (notice, mask_notice) if n)
            request = await self.request(interaction, said, negative_said, steps, guidance, seed, sampler, style,
                                         lora=lora, lora_weight=lora_weight, model=model, mode=Mode.INPAINT,
                                   image=await as_png(fitted), mask=await as_png(fitted_mask), strength=strength)
            return request, notes, (parent and parent.id, index)

        await self.start(interaction, check, build, "inpaint", (prompt, negative))

    @app_commands.command(name="outpaint", description="Extend your image or a result beyond its edges")
    @app_commands.describe(
        image="The picture to extend: PNG, JPEG, WebP or GIF (or give job)",
        job="Or the job number of a result to extend (shown under it)",
        picture="With job: which of its pictures, from 1 (default 1)",
        prompt="What the extended picture shows (default: the job's prompt)",
        direction="Which side to extend (default: all)",
        amount="How many pixels to add, a multiple of 8 (default: a quarter of the picture)",
        **COMMON,
    )
    @app_commands.choices(direction=[app_commands.Choice(name=d, value=d) for d in DIRECTIONS],
                          sampler=SAMPLER_CHOICES)
    async def outpaint(
        self,
        interaction: discord.Interaction,
        image: Optional[discord.Attachment] = None,
        job: Optional[JobNumber] = None,
        picture: Optional[Picture] = None,
        prompt: Optional[Prompt] = None,
        direction: Optional[str] = None,
        amount: Optional[Amount] = None,
        negative: Optional[Prompt] = None,
        steps: Optional[Steps] = None,
        guidance: Optional[Guidance] = None,
        seed: Optional[Seed] = None,
        sampler: Optional[str] = None,
        style: Optional[str] = None,
        lora: Optional[str] = None,
        lora_weight: Optional[LoraWeight] = None,
        model: Optional[str] = None,
    ) -> None:
        side = direction or "all"

        async def check() -> None:
            if side not in DIRECTIONS:
                raise InvalidRequest(f"Unknown direction {side!r}; choose one of: {', '.join(DIRECTIONS)}.")
            if amount is not None and amount % 8:
                raise InvalidRequest(f"The amount must be a multiple of 8 (got {amount}; "
                                     f"try {amount - amount % 8 or 8}).")
            await self.options(interaction, image, job, picture, prompt, negative, steps, guidance, seed, sampler,
                               style, lora=lora, lora_weight=lora_weight, model=model)

        async def build() -> Built:
            source, parent, index = await self.starting_picture(interaction, image, job, picture)
            said, negative_said = prompts(prompt, negative, parent)
            if amount is None:
                # A quarter of the picture by default: sized for the picture, whatever the model.
                shown, _ = await asyncio.to_thread(self.fit, source)
                length = {"left": shown.width, "right": shown.width, "up": shown.height, "down": shown.height}
                grow = default_outpaint_amount(length.get(side, min(shown.size)))
            else:
                grow = amount
            times = 2 if side == "all" else 1
            wide = times * grow if side in ("left", "right", "all") else 0
            tall = times * grow if side in ("up", "down", "all") else 0
            fitted, notice = await asyncio.to_thread(self.fit, source, (wide, tall))
            request = await self.request(interaction, said, negative_said, steps, guidance, seed, sampler, style,
                                         lora=lora, lora_weight=lora_weight, model=model, mode=Mode.OUTPAINT,
                                   image=await as_png(fitted), direction=side, amount=grow)
            return request, tuple(n for n in (notice,) if n), (parent and parent.id, index)

        await self.start(interaction, check, build, "outpaint", (prompt, negative))

    @app_commands.command(name="interpolate", description="Animate from one prompt (or seed) to another, as a GIF")
    @app_commands.describe(
        prompt="Where the animation starts (default: the job's prompt)",
        job="Or start from a result: its job number (its prompt and seed)",
        picture="With job: which of its pictures, from 1 (default 1)",
        end_prompt="Where it ends (default: the same prompt, with end_seed)",
        end_seed="The seed it ends on (default: the start seed)",
        frames=f"Number of frames (default {DEFAULT_FRAMES})",
        width="Width in pixels, a multiple of 8 (default: the model's native size)",
        height="Height in pixels, a multiple of 8 (default: the model's native size)",
        aspect=ASPECT,
        **COMMON,
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES, aspect=ASPECT_CHOICES)
    async def interpolate(
        self,
        interaction: discord.Interaction,
        prompt: Optional[Prompt] = None,
        job: Optional[JobNumber] = None,
        picture: Optional[Picture] = None,
        end_prompt: Optional[Prompt] = None,
        seed: Optional[Seed] = None,
        end_seed: Optional[Seed] = None,
        frames: Optional[Frames] = None,
        negative: Optional[Prompt] = None,
        steps: Optional[Steps] = None,
        guidance: Optional[Guidance] = None,
        width: Optional[Width] = None,
        height: Optional[Height] = None,
        sampler: Optional[str] = None,
        style: Optional[str] = None,
        lora: Optional[str] = None,
        lora_weight: Optional[LoraWeight] = None,
        model: Optional[str] = None,
        aspect: Optional[str] = None,
    ) -> None:
        async def build() -> Built:
            parent = index = None
            start_seed, size = seed, (width, height, aspect)
            if job is not None:  # its prompt and seed, not its picture: nothing to read from disk
                parent, index = await self.result_to_start_from(interaction, job), 0 if picture is None else picture - 1
                startable(parent, index)
                if start_seed is None:
                    assert parent.request.seed is not None
                    start_seed = picture_seed(parent.request.seed, index)  # that picture's own seed
                if size == (None, None, None):
                    size = (parent.width, parent.height, None)
            said, negative_said = prompts(prompt, negative, parent)
            end = styled(self.bot.styles, self.bot.settings.limits, style, end_prompt, "")[0] if end_prompt else None
            request = await self.request(interaction, said, negative_said, steps, guidance, start_seed, sampler, style,
                                         lora=lora, lora_weight=lora_weight, model=model, mode=Mode.INTERPOLATE,
                                         end_prompt=end, end_seed=end_seed,
                                         frames=DEFAULT_FRAMES if frames is None else frames, size=size)
            return request, (), (parent and parent.id, index)

        # Every check is cheap here (no attachment, no picture read): building the request is the check.
        await self.start(interaction, build, build, "interpolate", (prompt, negative, end_prompt))

    # -- the path every command takes ------------------------------------------------------------

    async def start(self, interaction: discord.Interaction, check: Callable[[], Awaitable[object]], build: Build,
                    action: str, texts: tuple[Optional[str], ...] = ()) -> None:
        """Refuse what can be refused before anyone sees anything (a ban, the prompt filter on the words
        given, the member's limits and cooldown, every option: `check`), privately; only then show the
        public "thinking…", download the pictures, build the request and run the job."""
        runner = self.bot.runner
        origin = Origin(user=interaction.user, channel=interaction.channel, guild_id=interaction.guild_id,
                        interaction=interaction)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEFER_DEADLINE_SECONDS

        async def in_time(step: Awaitable[T]) -> T:
            """`step`, deferring (publicly) first if it has not finished by the deadline: a slow check
            (a busy prompt filter, say) must not cost the answer Discord waits 3 seconds for."""
            task = asyncio.ensure_future(step)
            if not interaction.response.is_done():
                done, _ = await asyncio.wait({task}, timeout=max(deadline - loop.time(), 0.0))
                if not done:
                    log.info("/%s: checks took over %.1f s; deferred before they ended", action,
                             DEFER_DEADLINE_SECONDS)
                    await interaction.response.defer(thinking=True)
            return await task

        try:
            prompt, negative, end = (*texts, None, None, None)[:3]
            await in_time(runner.admit(origin, GenerateRequest(prompt=prompt or "", negative_prompt=negative or "",
                                                               end_prompt=end)))
            with self.bot.queue.reserve(interaction.user.id) as reservation:  # held while we download
                await in_time(options_typed(action, check()))
                if not interaction.response.is_done():
                    await interaction.response.defer(thinking=True)
                await self.prepare_and_run(interaction, origin, build, action, reservation)
        except Refused as refusal:
            await reply_privately(interaction, f"🚫 {refusal}")
        except (AttachmentError, InvalidRequest) as error:
            await reply_privately(interaction, f"⚠️ {error}")
        except QueueFull as full:
            await reply_privately(interaction, f"⏳ {full}")

    async def prepare_and_run(self, interaction: discord.Interaction, origin: Origin, build: Build, action: str,
                              reservation: Reservation) -> None:
        """After the deferral: the pictures downloaded and checked, the request built (AttachmentError,
        InvalidRequest: answered by `start`), the job run."""
        runner = self.bot.runner
        request, notes, (parent_job_id, parent_image) = await options_typed(action, build())
        request, policy = await runner.admit(origin, request)  # Refused, InvalidRequest: answered by start()
        if parent_job_id is not None and request.mode is not Mode.INTERPOLATE:
            source = await self.bot.store.get_job(parent_job_id)
            assert source is not None
            check_source(source, parent_image or 0, policy)
            request = from_source(request, source, parent_image or 0)
        else:
            request = await self.bot.moderation.check_upload(request, policy, interaction.guild_id)
        await runner.run(origin, request, policy=policy, action=action, notes=notes, parent_job_id=parent_job_id,
                         parent_image=parent_image, reservation=reservation)

    async def request(self, interaction: discord.Interaction, prompt, negative, steps, guidance, seed, sampler, style,
                      *, lora, lora_weight, model, size=None, **fields) -> GenerateRequest:
        """The request from the options: each option left out takes the member's own setting
        (/settings), then the model's default, then the built-in one; the model is the option's, the
        member's, the channel's or the server's (`requests.pick_model`); `size` (width, height,
        aspect) for modes that draw from noise. Checked against the limits (Discord enforces the
        option bounds, but a Discord-compatible server or an old client need not)."""
        catalogue, member, place = await member_defaults(self.bot, interaction.user.id, interaction.guild_id,
                                                         interaction.channel)
        limits = self.bot.settings.limits
        chosen = pick_model(catalogue, model, member, place)
        if size is not None:
            fields["width"], fields["height"] = size_of(chosen, limits, *size, member)
        return from_options(self.bot.styles, limits, self.bot.settings.wildcards_dir, prompt, negative, steps,
                            guidance, seed, sampler, style, lora=lora, lora_weight=lora_weight, model=chosen,
                            member=member, **fields)

    # -- the model option's suggestions --------------------------------------------------------------

    @dream.autocomplete("model")
    @inpaint.autocomplete("model")
    @outpaint.autocomplete("model")
    @interpolate.autocomplete("model")
    async def model_names(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        """The models this channel allows whose name or display name holds what the member typed,
        shown with their display name and family (Discord shows 25 at most)."""
        place = await self.bot.moderation.place(interaction.guild_id, interaction.channel)
        return model_choices(self.bot.models.current(), typed, place.allows)

    # -- the lora option's suggestions ---------------------------------------------------------------

    @dream.autocomplete("lora")
    @inpaint.autocomplete("lora")
    @outpaint.autocomplete("lora")
    @interpolate.autocomplete("lora")
    async def lora_names(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        """The installed LoRAs this server has not turned off whose name or trigger words hold what the
        member typed, with their trigger words (Discord shows 25 at most)."""
        off = await self.bot.moderation.turned_off(interaction.guild_id)
        typed = typed.strip().lower()
        choices = []
        for adapter in self.bot.moderation.adapters().loras.values():
            if ("lora", adapter.name.lower()) in off or len(adapter.name) > 100:
                continue
            if typed and typed not in adapter.name.lower() and not any(typed in t.lower() for t in adapter.triggers):
                continue
            label = adapter.name + (f" · {', '.join(adapter.triggers)}" if adapter.triggers else "")
            choices.append(app_commands.Choice(name=label if len(label) <= 100 else label[:99] + "…",
                                               value=adapter.name))
        return choices[:25]

    async def options(self, interaction: discord.Interaction, image: Optional[discord.Attachment],
                      job: Optional[int], picture: Optional[int], prompt, negative, steps, guidance, seed, sampler,
                      style, *, lora, lora_weight, model) -> None:
        """The options of a command that starts from a picture, checked before anything is fetched:
        one picture (an attachment or a result), one this member may start from, and every other
        option as a request would read them. Raises InvalidRequest or AttachmentError."""
        if (image is None) == (job is None):
            raise InvalidRequest("Attach an image, or give the job number of a result to start from (not both).")
        parent = None
        if image is not None:
            self.declared(image, "The image")
        else:
            assert job is not None
            parent = await self.result_to_start_from(interaction, job)
            startable(parent, 0 if picture is None else picture - 1)
        said, negative_said = prompts(prompt, negative, parent)
        await self.request(interaction, said, negative_said, steps, guidance, seed, sampler, style, lora=lora,
                           lora_weight=lora_weight, model=model)

    def declared(self, attachment: discord.Attachment, what: str) -> None:
        """An attachment's link and declared size, before fetching it (`attachments.declared`)."""
        attachments.declared(attachment, max_bytes=int(self.bot.settings.max_attachment_mb * 1_000_000), what=what,
                             allowed_origins=attachments.attachment_origins(self.bot.settings.discord_api_base))

    async def result_to_start_from(self, interaction: discord.Interaction, job_id: int) -> JobRow:
        """A result of this server's history this member may start from (a `job` option)."""
        job = await self.bot.store.get_job(job_id)
        # A job this member may not see reads like one that never was: its number says nothing to a prober.
        if job is None or not await reachable_from(self.bot.store, job, interaction):
            raise InvalidRequest(f"There is no job {job_id} in this server's history to start from.")
        if job.deleted_at is not None:
            raise InvalidRequest(f"Job {job_id}'s result was deleted, so nothing can start from it.")
        if job.request.mode is Mode.INTERPOLATE:
            raise InvalidRequest(f"Job {job_id} is an animation; start from a picture.")
        return job

    async def earlier_result(self, interaction: discord.Interaction, job_id: int, picture: Optional[int]
                             ) -> tuple[JobRow, int, bytes]:
        """A result of this server's history to start from (a `job` option): its row and picture."""
        job = await self.result_to_start_from(interaction, job_id)
        index = 0 if picture is None else picture - 1
        return job, index, await source_picture(self.bot.images, job, index)

    async def starting_picture(self, interaction: discord.Interaction, image: Optional[discord.Attachment],
                               job_id: Optional[int], picture: Optional[int]):
        """The picture a command starts from: an attachment, or a result given by its job number.
        Returns (PIL picture, the job it came from or None, that picture's index)."""
        if (image is None) == (job_id is None):
            raise InvalidRequest("Attach an image, or give the job number of a result to start from (not both).")
        if image is not None:
            return await self.load_picture(image, "The image"), None, None
        assert job_id is not None
        job, index, data = await self.earlier_result(interaction, job_id, picture)
        settings = self.bot.settings
        fitted = await attachments.load_image_async(data, name=f"job {job.id}", max_pixels=10**9,
                                                    fit_within=(settings.max_width, settings.max_height))
        return fitted, job, index

    async def load_picture(self, attachment: discord.Attachment, what: str, *, mask: bool = False):
        """An attachment as a checked RGB picture (`bot.attachments` says what is refused and why)."""
        settings = self.bot.settings
        data = await attachments.download(self.bot.http_session, attachment, what=what,
                                          max_bytes=int(settings.max_attachment_mb * 1_000_000),
                                          allowed_origins=attachments.attachment_origins(settings.discord_api_base))
        return await attachments.load_image_async(data, name=attachment.filename, what=what,
                                                  max_pixels=int(settings.max_attachment_megapixels * 1_000_000),
                                                  matte=(0, 0, 0) if mask else (255, 255, 255),
                                                  fit_within=(settings.max_width, settings.max_height))

    def fit(self, image, room: tuple[int, int] = (0, 0)):
        """The picture at a size the engine takes, within the limits less `room` (outpainting adds to
        the picture), and a note of what was done to it, if anything."""
        settings = self.bot.settings
        width, height = settings.max_width - room[0], settings.max_height - room[1]
        if min(width, height) < MIN_SIZE:
            raise InvalidRequest(f"That much outpainting leaves no room under this server's size limit of "
                                 f"{settings.max_width}×{settings.max_height}; use a smaller amount.")
        return attachments.fit_size(image, max_width=width, max_height=height, min_size=MIN_SIZE)


async def options_typed(action: str, step: Awaitable[T]) -> T:
    """`step`, with a TypeError from reading the options said as the member's problem: a
    Discord-compatible server that sends text for a number (logged in case it is our bug)."""
    try:
        return await step
    except TypeError:
        log.warning("/%s: an option of the wrong type", action, exc_info=True)
        raise InvalidRequest("One of the options has a value of the wrong type.") from None


async def as_png(image) -> bytes:
    return await asyncio.to_thread(attachments.to_png, image)


def _bound(command: app_commands.Command, **bounds: tuple[int, int]) -> None:
    """Set the bounds of the options this command has: discord.py reads them from the annotations
    when the class is made, and the server's limits are known only when the bot starts. The cog's
    own copy of the command is changed (the class's stays as it was)."""
    for name, (low, high) in bounds.items():
        if name in command._params:
            command._params[name] = dataclasses.replace(command._params[name], min_value=low, max_value=high)


async def setup(bot: "DreamBot") -> None:
    await bot.add_cog(Dream(bot))
