"""/history: a member's own jobs, privately, a page at a time; /forget: erase them. The pages'
buttons (`bot.views`) carry whose history and which page they show, so they work after a restart too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.views import EVERYWHERE, ForgetButton, HistoryButton, forget_view, history_page

if TYPE_CHECKING:
    from bot.bot import DreamBot


class History(commands.Cog):
    def __init__(self, bot: DreamBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(HistoryButton, ForgetButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(HistoryButton, ForgetButton)

    @app_commands.command(name="history", description="Your Dreambot jobs, newest first (only you see them)")
    async def history(self, interaction: discord.Interaction) -> None:
        text, view = await history_page(self.bot.store, interaction.user.id, EVERYWHERE, 0, whose="Your")
        await interaction.response.send_message(text, view=view, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="forget",
                          description="Erase your Dreambot history, stored pictures and settings (asks first)")
    async def forget(self, interaction: discord.Interaction) -> None:
        _, total = await self.bot.store.user_jobs(interaction.user.id, limit=0)
        own = bool(await self.bot.store.member_settings(interaction.user.id))
        if not total and not own:
            await interaction.response.send_message("Dreambot has no jobs or settings of yours to erase.",
                                                    ephemeral=True)
            return
        await interaction.response.send_message(render.forget_question(total, own),
                                                view=forget_view(interaction.user.id), ephemeral=True)


async def setup(bot: DreamBot) -> None:
    await bot.add_cog(History(bot))
