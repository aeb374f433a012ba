"""What members do with a posted result besides its buttons (`bot.views`, `bot.actions`):
reactions that do what the buttons do, the Edit button's form when it is submitted, and /info or
the "Dream info" message command to read everything needed to make it again."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.moderation import reachable_from
from bot.store import JobRow
from bot.views import EditModal, ResultButton

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

# Reactions members add to a result, by emoji (without the variation selector some clients send).
REACTIONS = {"🔁": "reroll", "🔀": "vary", "⬆": "upscale", "🗑": "delete"}


class Results(commands.Cog):
    def __init__(self, bot: DreamBot) -> None:
        self.bot = bot
        self.info_menu = app_commands.ContextMenu(name="Dream info", callback=self.show_menu)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ResultButton)
        self.bot.tree.add_command(self.info_menu)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ResultButton)
        self.bot.tree.remove_command(self.info_menu.name, type=self.info_menu.type)

    @app_commands.command(name="info", description="Show every parameter of a Dreambot result, to make it again")
    @app_commands.describe(job="The job number shown under the result")
    async def info(self, interaction: discord.Interaction, job: app_commands.Range[int, 1, 2**53]) -> None:
        # An erased job reads like one that never was: a number alone reveals nothing.
        await self.show(interaction, await self.bot.store.get_job(job),
                        f"There is no job {job} in this server's history.")

    async def show_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self.show(interaction, await self.bot.store.job_for_message(message.id),
                        "That message is not a Dreambot result.")

    async def show(self, interaction: discord.Interaction, job: JobRow | None, missing: str) -> None:
        if job is None or not await reachable_from(self.bot.store, job, interaction):
            await interaction.response.send_message(missing, ephemeral=True)
            return
        if job.deleted_at is not None:
            await interaction.response.send_message(f"Job {job.id}'s result was deleted.", ephemeral=True)
            return
        text = render.info(job, origin=render.origin(job.action, job.parent_job_id, job.parent_image),
                           mine=interaction.user.id == job.user_id)
        # Prompts too long for the message come whole in a file: what is shown is never silently cut.
        files = [discord.File(io.BytesIO(render.prompts_file(job).encode()), filename=f"job-{job.id}-prompts.txt")] \
            if render.prompts_clipped(job) else []
        await interaction.response.send_message(text, ephemeral=True, files=files,
                                                allowed_mentions=discord.AllowedMentions.none())

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        # discord.py routes a modal's submit only to a modal object it keeps in memory; the Edit
        # form's is routed here by its custom id, so one opened before a restart still works.
        if interaction.type is discord.InteractionType.modal_submit:
            await EditModal.submitted(interaction)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        try:
            await self.react(payload)
        except Exception:
            log.exception("reaction %s on message %s failed", payload.emoji, payload.message_id)

    async def react(self, payload: discord.RawReactionActionEvent) -> None:
        """🔁 🔀 ⬆️ 🗑️ on a result do what its buttons do (for the first picture)."""
        bot = self.bot
        if bot.user is None or payload.user_id == bot.user.id or payload.emoji.id is not None:
            return
        if payload.member is not None and payload.member.bot:
            return
        action = REACTIONS.get((payload.emoji.name or "").replace("\ufe0f", ""))
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
        first_shown = next((i for i in range(job.request.num_images) if job.shown(i)), 0)
        refusal = await bot.actions.act(action, job.id, first_shown if action in ("vary", "upscale") else None,
                                        member=member, can_manage=can_manage, channel=channel,
                                        guild_id=payload.guild_id, message=message)
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


async def setup(bot: DreamBot) -> None:
    await bot.add_cog(Results(bot))
