"""/loras: the LoRAs and embeddings installed, how to use each, and their trigger words, a page at a
time, privately. The pages' buttons (`bot.views.AdaptersButton`) work after a restart too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.views import AdaptersButton, adapters_page

if TYPE_CHECKING:
    from bot.bot import DreamBot


class Adapters(commands.Cog):
    def __init__(self, bot: DreamBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(AdaptersButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(AdaptersButton)

    @app_commands.command(name="loras", description="The LoRAs and embeddings you can use, with their trigger words")
    async def loras(self, interaction: discord.Interaction) -> None:
        text, view = await adapters_page(self.bot.moderation, self.bot.store, interaction.guild_id, 0)
        await interaction.response.send_message(text, view=view, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: DreamBot) -> None:
    await bot.add_cog(Adapters(bot))
