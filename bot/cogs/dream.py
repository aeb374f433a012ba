"""/dream: defer at once, validate, record and queue the job, then post the image(s) with their parameters."""

# No `from __future__ import annotations`: the option bounds below come from the settings at
# runtime, and discord.py reads the annotations as objects.

import io
import logging
import secrets
from typing import TYPE_CHECKING, Optional

import discord
from discord import app_commands

from bot import render
from bot.bot import reply_privately
from bot.engine_client import EngineCrashed, EngineJobFailed, EngineUnavailable
from dreambot.protocol import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_SEED,
    MIN_SIZE,
    SAMPLERS,
    GenerateRequest,
    InvalidRequest,
    Job,
)

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)


def build_dream_command(bot: "DreamBot") -> app_commands.Command:
    limits = bot.settings.limits
    Range = app_commands.Range

    @app_commands.command(name="dream", description="Make an image from a text prompt with Stable Diffusion")
    @app_commands.describe(
        prompt="What to draw",
        negative="What to keep out of the image (negative prompt)",
        steps=f"Denoising steps (default {DEFAULT_STEPS}): more is slower and often finer",
        guidance=f"How closely to follow the prompt, CFG scale (default {DEFAULT_GUIDANCE:g})",
        seed="Seed for a repeatable image (default: random)",
        width="Width in pixels, a multiple of 8 (default: the model's native size)",
        height="Height in pixels, a multiple of 8 (default: the model's native size)",
        sampler=f"Sampler (default {DEFAULT_SAMPLER})",
        count="How many images (default 1)",
    )
    @app_commands.choices(sampler=[app_commands.Choice(name=name, value=name) for name in SAMPLERS])
    async def dream(
        interaction: discord.Interaction,
        prompt: Range[str, 1, limits.max_prompt_length],
        negative: Optional[Range[str, 1, limits.max_prompt_length]] = None,
        steps: Optional[Range[int, 1, limits.max_steps]] = None,
        guidance: Optional[Range[float, 0.0, 30.0]] = None,
        seed: Optional[Range[int, 0, MAX_SEED]] = None,
        width: Optional[Range[int, MIN_SIZE, limits.max_width]] = None,
        height: Optional[Range[int, MIN_SIZE, limits.max_height]] = None,
        sampler: Optional[str] = None,
        count: Optional[Range[int, 1, limits.max_images]] = None,
    ) -> None:
        # Defer before anything else: Discord allows 3 seconds for the first answer.
        await interaction.response.defer(thinking=True)
        try:
            # Discord enforces the bounds above, but a Discord-compatible server or an old client
            # need not: check everything again.
            request = GenerateRequest(
                prompt=prompt,
                negative_prompt=negative or "",
                num_inference_steps=DEFAULT_STEPS if steps is None else steps,
                guidance_scale=DEFAULT_GUIDANCE if guidance is None else guidance,
                width=width,
                height=height,
                seed=secrets.randbelow(MAX_SEED + 1) if seed is None else seed,
                scheduler=sampler or DEFAULT_SAMPLER,
                num_images=1 if count is None else count,
            ).validated(limits)
        except (InvalidRequest, TypeError) as error:
            await reply_privately(interaction, f"⚠️ {error}" if isinstance(error, InvalidRequest) else
                                  "⚠️ One of the options has a value of the wrong type.")
            return
        await run_job(bot, interaction, request)

    return dream


async def run_job(bot: "DreamBot", interaction: discord.Interaction, request: GenerateRequest) -> None:
    job_id = await bot.store.create_job(
        request,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        interaction_id=interaction.id,
        model=bot.engine.info.model if bot.engine.info else bot.settings.sd_model,
    )
    ticket = bot.queue.submit(Job(job_id, request))
    log.info("job %s queued for user %s: %r", job_id, interaction.user.id, request.prompt[:80])
    try:
        await interaction.edit_original_response(content=render.queued(job_id, bot.queue.position(job_id)))
    except discord.HTTPException:
        log.warning("job %s: could not show the queue position", job_id, exc_info=True)  # the job still runs

    try:
        result = await ticket.result
    except EngineUnavailable as error:
        await answer(interaction, render.engine_unavailable(job_id, str(error)))
        return
    except EngineCrashed:
        await answer(interaction, render.crashed(job_id))
        return
    except EngineJobFailed as error:
        message = f"⚠️ {error} (job {job_id})" if error.kind == "invalid" else render.failed(job_id)
        await answer(interaction, message)
        return
    except RuntimeError:
        await answer(interaction, render.failed(job_id))
        return

    shown = [image for image in result.images if not image.nsfw_content_detected]
    if not shown:
        # A flagged image is never uploaded: only the notice is posted.
        await answer(interaction, render.all_withheld(job_id, len(result.images)))
        return
    images = [(f"dream-{job_id}-{image.seed}.png", image.png) for image in shown]
    message = await answer(interaction, render.summary(job_id, request, result), images)
    if message is not None:
        await bot.store.set_message(job_id, message.id)


async def answer(
    interaction: discord.Interaction, content: str, images: list[tuple[str, bytes]] = ()
) -> discord.Message | None:
    """Put the job's outcome in place of the "thinking…" message. Interactions expire after 15
    minutes; a job that took longer is posted in the channel instead, mentioning the member."""

    def files() -> list[discord.File]:  # a File is spent once sent: fresh ones for each try
        return [discord.File(io.BytesIO(png), filename=name) for name, png in images]

    try:
        if images:
            return await interaction.edit_original_response(content=content, attachments=files())
        return await interaction.edit_original_response(content=content)
    except discord.HTTPException as error:
        log.info("interaction %s can no longer be edited (%s); posting in the channel", interaction.id, error)
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        return None
    try:
        return await channel.send(
            f"{interaction.user.mention} {content}",
            files=files(),
            allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
        )
    except discord.HTTPException:
        log.exception("could not deliver the outcome of interaction %s", interaction.id)
        return None


async def setup(bot: "DreamBot") -> None:
    bot.tree.add_command(build_dream_command(bot))


async def teardown(bot: "DreamBot") -> None:
    bot.tree.remove_command("dream")
