"""What members do with a posted result: Re-roll, Vary, Upscale, Delete (buttons or reactions), and
/info or the "Dream info" message command to read everything needed to make it again."""

from __future__ import annotations

import logging
import math
import re
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, render
from bot.bot import reply_privately
from bot.moderation import Refused, is_moderator, may_reach, reachable_from
from bot.queue import QueueFull
from dreambot.request import MAX_SEED, InvalidRequest, Mode, default_outpaint_amount

if TYPE_CHECKING:
    from bot.bot import DreamBot
    from bot.store import JobRow

log = logging.getLogger(__name__)

LOOKS = {
    "reroll": ("Re-roll", "🔁", discord.ButtonStyle.secondary),
    "vary": ("Vary", "🔀", discord.ButtonStyle.secondary),
    "upscale": ("Upscale", "⬆️", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.secondary),  # on the notice of a queued or running job
    # Outpainting by one quarter of the picture on that side ("pan", as Midjourney calls it).
    "left": ("", "⬅️", discord.ButtonStyle.secondary),
    "right": ("", "➡️", discord.ButtonStyle.secondary),
    "up": ("", "🔼", discord.ButtonStyle.secondary),
    "down": ("", "🔽", discord.ButtonStyle.secondary),
}
PANS = ("left", "right", "up", "down")
# Reactions members add to a result, by emoji (without the variation selector some clients send).
REACTIONS = {"🔁": "reroll", "🔀": "vary", "⬆": "upscale", "🗑": "delete"}


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"dream:(?P<action>reroll|vary|upscale|delete|cancel|left|right|up|down):(?P<job>[0-9]{1,20})"
             r"(?::(?P<index>[0-9]{1,2}))?",
):
    """A button on a result message. Its custom id carries the job (and picture), so it works on
    every past result, after a restart too, with no state in memory."""

    def __init__(self, action: str, job_id: int, index: int | None = None, *, label: str | None = None,
                 row: int | None = None) -> None:
        name, emoji, style = LOOKS[action]
        custom_id = f"dream:{action}:{job_id}" + (f":{index}" if index is not None else "")
        super().__init__(discord.ui.Button(label=label or name or None, emoji=None if label else emoji, style=style,
                                           custom_id=custom_id, row=row))
        self.action, self.job_id, self.index = action, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ResultButton:
        index = match["index"]
        return cls(match["action"], int(match["job"]), int(index) if index is not None else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: DreamBot = interaction.client  # type: ignore[assignment]
        member = interaction.user
        can_manage = interaction.permissions.manage_messages
        try:
            refusal = await act(bot, self.action, self.job_id, self.index, member=member, can_manage=can_manage,
                                channel=interaction.channel, guild_id=interaction.guild_id,
                                message=interaction.message, interaction=interaction)
        except Exception:
            # discord.py only logs what a button raises: the member would see "interaction failed".
            log.exception("%s button on job %s failed", self.action, self.job_id)
            refusal = f"😿 Sorry, that did not work (job {self.job_id}). It has been logged; please try again."
        if refusal is not None:
            await reply_privately(interaction, refusal)


async def act(
    bot: DreamBot,
    action: str,
    job_id: int,
    index: int | None,
    *,
    member: discord.abc.User,
    can_manage: bool,
    channel: discord.abc.Messageable | None,
    guild_id: int | None,
    message: discord.Message | discord.PartialMessage | None,
    interaction: discord.Interaction | None = None,
) -> str | None:
    """Carry out a button's or reaction's action; return the refusal to show the member, if any."""
    job = await bot.store.get_job(job_id)
    if job is None and on_its_result(message, job_id) and await bot.store.was_erased(job_id):
        # Said only on the result itself, where the job was seen: a number alone reveals nothing.
        return f"Job {job_id} was erased by the member who made it, so there is nothing to {action} any more."
    permissions = interaction.permissions if interaction is not None else None
    if job is None or not await may_reach(bot.store, job, member, channel, guild_id, permissions):
        # The same words as for a job that does not exist: job numbers must not be probed.
        return f"Job {job_id} is not in Dreambot's history (any more), so there is nothing to {action} here."
    if interaction is not None and message is not None and job.message_id not in (None, message.id):
        # A raw client can send any custom id: a button acts only on the result it is on.
        return "That button does not belong to this message."
    if action == "cancel":
        return await cancel(bot, job, member, can_manage, interaction)
    if action == "delete":
        if member.id != job.user_id and not can_manage:
            return "Only the member who made this picture, or a moderator with Manage Messages, can delete it."
        if interaction is not None:
            await interaction.response.defer()
        if message is not None:
            try:
                await message.delete()
            except discord.NotFound:
                pass  # already gone: record it all the same
            except discord.HTTPException as error:
                log.warning("job %s: could not delete its message: %s", job_id, error)
                return "Discord did not let me delete that message; a moderator can remove it."
        await bot.store.mark_deleted(job_id)
        await bot.images.delete_job(job_id)
        log.info("job %s: result deleted by user %s", job_id, member.id)
        return None

    try:
        request, notes = await derived_request(bot, job, action, index)
    except InvalidRequest as error:
        return str(error)
    origin = jobs.Origin(user=member, channel=channel, guild_id=guild_id, reply_to=message)
    try:
        request, policy = await jobs.admit(bot, origin, request)
        if action != "reroll":
            jobs.check_source(job, index or 0, policy)
            request = jobs.from_source(request, job, index or 0)
        elif request.source_flagged and policy.mode == "block":
            raise Refused(f"Job {job.id} started from a picture the safety filter flagged, so it can only be "
                          "re-rolled in an age-restricted channel whose filter shows flagged images.")
        bot.queue.check(member.id)
    except Refused as refusal:
        return f"🚫 {refusal}"
    except QueueFull as full:
        return f"⏳ {full}"
    if interaction is not None:
        # Acknowledge without a visible answer: the new job posts its own reply to the result.
        await interaction.response.defer()
    try:
        await jobs.run(bot, origin, request, policy=policy, action=action, parent_job_id=job.id,
                       parent_image=index if action != "reroll" else None, notes=notes)
    except QueueFull as full:
        return f"⏳ {full}"
    return None


async def cancel(bot: DreamBot, job: JobRow, member, can_manage: bool, interaction: discord.Interaction | None
                 ) -> str | None:
    """The Cancel button of a queued or running job: its member, or a moderator."""
    moderator = can_manage or (interaction is not None and job.guild_id is not None and
                               is_moderator(interaction, await bot.store.guild_settings(job.guild_id)))
    if member.id != job.user_id and not moderator:
        return "Only the member who asked for this job, or a moderator, can cancel it."
    if job.status not in ("queued", "running"):
        return f"Job {job.id} is already {job.shown_status}; there is nothing to cancel."
    if not await bot.queue.cancel(job.id, member.id):
        return f"Job {job.id} is finishing; it is too late to cancel it."
    if interaction is not None and not interaction.response.is_done():
        await interaction.response.defer()  # the job's notice says it was cancelled
    log.info("job %s cancelled by user %s", job.id, member.id)
    return None


async def derived_request(bot: DreamBot, job: JobRow, action: str, index: int | None):
    """The request a button starts from `job`: the same settings with a new seed (re-roll), an
    img2img pass over one of its pictures (vary), or that picture at twice the size (upscale)."""
    seed = secrets.randbelow(MAX_SEED + 1)
    limits = bot.settings.limits
    if action == "reroll":
        image = await bot.images.load(job.id, "image")
        mask = await bot.images.load(job.id, "mask")
        request = job.request(image=image, mask=mask)
        if (request.mode not in ("txt2img", "interpolate") and image is None) or \
                (request.mode == "inpaint" and mask is None):
            raise InvalidRequest(f"The picture job {job.id} started from is no longer stored; "
                                 "start again with the command.")
        return replace(request, seed=seed).validated(limits), ()

    if job.mode == "interpolate":
        raise InvalidRequest("An animation cannot be varied, upscaled or extended; re-roll it instead.")
    index = 0 if index is None else index
    source = await source_picture(bot, job, index)
    base = replace(job.request(), num_images=1, image=source, mask=None, width=None, height=None,
                   end_prompt=None, end_seed=None)
    if action == "vary":
        return replace(base, mode="img2img", strength=jobs.VARY_STRENGTH, seed=seed,
                       num_inference_steps=enough_steps(job, jobs.VARY_STRENGTH)).validated(limits), ()
    width, height = job.width or 0, job.height or 0
    if action in PANS:
        side = width if action in ("left", "right") else height
        amount = default_outpaint_amount(side)
        wider, taller = (amount, 0) if action in ("left", "right") else (0, amount)
        if width + wider > limits.max_width or height + taller > limits.max_height:
            raise InvalidRequest(f"This picture is {width}×{height}; extending it would go over this server's "
                                 f"limit of {limits.max_width}×{limits.max_height}.")
        return replace(base, mode="outpaint", direction=action, amount=amount, strength=None, seed=seed
                       ).validated(limits), ()
    if width * 2 > limits.max_width or height * 2 > limits.max_height:
        raise InvalidRequest(f"This picture is {width}×{height}; twice that is over this server's limit of "
                             f"{limits.max_width}×{limits.max_height}.")
    # The picture's own seed keeps the upscale's added detail in the spirit of the original.
    own_seed = (job.seed + index) % (MAX_SEED + 1)
    return replace(base, mode="upscale", strength=None, seed=own_seed,
                   num_inference_steps=enough_steps(job, Mode.UPSCALE.default_strength)).validated(limits), ()


def enough_steps(job: JobRow, strength: float) -> int:
    """The job's steps, or the few more that `strength` needs to leave at least one to run."""
    return max(job.num_inference_steps, math.ceil(1 / strength))


def build_info_commands(bot: DreamBot) -> tuple[app_commands.Command, app_commands.ContextMenu]:
    async def show(interaction: discord.Interaction, job: JobRow | None, missing: str) -> None:
        if job is None or not await reachable_from(bot.store, job, interaction):
            await interaction.response.send_message(missing, ephemeral=True)
            return
        if job.deleted_at is not None:
            await interaction.response.send_message(f"Job {job.id}'s result was deleted.", ephemeral=True)
            return
        text = render.info(job, origin=render.origin(job.action, job.parent_job_id, job.parent_image))
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="info", description="Show every parameter of a Dreambot result, to make it again")
    @app_commands.describe(job="The job number shown under the result")
    async def info(interaction: discord.Interaction, job: app_commands.Range[int, 1, 2**53]) -> None:
        # An erased job reads like one that never was: a number alone reveals nothing.
        await show(interaction, await bot.store.get_job(job), f"There is no job {job} in this server's history.")

    async def info_menu(interaction: discord.Interaction, message: discord.Message) -> None:
        await show(interaction, await bot.store.job_for_message(message.id), "That message is not a Dreambot result.")

    menu = app_commands.ContextMenu(name="Dream info", callback=info_menu)
    return info, menu


async def on_reaction(bot: DreamBot, payload: discord.RawReactionActionEvent) -> None:
    """🔁 🔀 ⬆️ 🗑️ on a result do what its buttons do (for the first picture)."""
    if bot.user is None or payload.user_id == bot.user.id or payload.emoji.id is not None:
        return
    if payload.member is not None and payload.member.bot:
        return
    action = REACTIONS.get(payload.emoji.name.replace("\ufe0f", ""))
    if action is None:
        return
    job = await bot.store.job_for_message(payload.message_id)
    if job is None:
        return  # not one of our results
    channel = bot.get_channel(payload.channel_id) or await bot.fetch_channel(payload.channel_id)
    member = payload.member or await bot.fetch_user(payload.user_id)
    can_manage = isinstance(member, discord.Member) and channel.permissions_for(member).manage_messages
    message = channel.get_partial_message(payload.message_id)
    # Vary and upscale act on the first picture the safety filter let through.
    first_shown = next((i for i in range(job.num_images) if job.shown(i)), 0)
    refusal = await act(bot, action, job.id, first_shown if action in ("vary", "upscale") else None, member=member,
                        can_manage=can_manage, channel=channel, guild_id=payload.guild_id, message=message)
    if refusal is not None:
        log.info("reaction %s by %s on job %s refused: %s", payload.emoji, payload.user_id, job.id, refusal)
        # A reaction has no private answer: take the reaction back and tell the member directly.
        try:
            await message.remove_reaction(payload.emoji, discord.Object(payload.user_id))
        except discord.HTTPException:
            pass
        try:
            await member.send(f"{refusal} (job {job.id})")
        except discord.HTTPException:
            pass


def on_its_result(message, job_id: int) -> bool:
    """Whether `message` is a result (or notice) whose own buttons act on `job_id`."""
    for row in getattr(message, "components", None) or ():
        for item in getattr(row, "children", ()):
            match = ResultButton.__discord_ui_compiled_template__.fullmatch(getattr(item, "custom_id", None) or "")
            if match and int(match["job"]) == job_id:
                return True
    return False


async def source_picture(bot: DreamBot, job: JobRow, index: int) -> bytes:
    """Picture `index` of a finished job, as posted, to start a new job from."""
    if job.status != "done":
        raise InvalidRequest(f"Job {job.id} is {job.status}; wait for its picture first.")
    if not job.shown(index):
        raise InvalidRequest(f"Job {job.id} has no picture {index + 1} to start from.")
    source = await bot.images.result(job.id, index)
    if source is None:
        raise InvalidRequest(f"Picture {index + 1} of job {job.id} is no longer stored.")
    return source


class Reactions(commands.Cog):
    def __init__(self, bot: DreamBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        try:
            await on_reaction(self.bot, payload)
        except Exception:
            log.exception("reaction %s on message %s failed", payload.emoji, payload.message_id)


async def setup(bot: DreamBot) -> None:
    bot.add_dynamic_items(ResultButton)
    info, menu = build_info_commands(bot)
    bot.tree.add_command(info)
    bot.tree.add_command(menu)
    await bot.add_cog(Reactions(bot))


async def teardown(bot: DreamBot) -> None:
    bot.remove_dynamic_items(ResultButton)
    bot.tree.remove_command("info")
    bot.tree.remove_command("Dream info", type=discord.AppCommandType.message)
