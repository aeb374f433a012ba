"""/sync: the bot's owner registers the slash commands again without restarting the bot."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

if TYPE_CHECKING:
    from bot.bot import DreamBot


class Admin(commands.Cog):
    def __init__(self, bot: DreamBot) -> None:
        self.bot = bot

    @app_commands.command(name="sync", description="Register Dreambot's slash commands with Discord again (bot owner)")
    @app_commands.default_permissions(administrator=True)  # hidden from members; the owner check is below
    async def sync(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not await self.bot.is_owner(interaction.user):
            await interaction.followup.send("Only the bot's owner can register its commands.", ephemeral=True)
            return
        await self.bot.sync_commands(force=True)
        names = ", ".join(f"the “{command.name}” menu" if isinstance(command, app_commands.ContextMenu) else
                          f"/{command.name}" for command in self.bot.tree.get_commands())
        await interaction.followup.send(f"Registered {names} with Discord.", ephemeral=True)


async def setup(bot: DreamBot) -> None:
    await bot.add_cog(Admin(bot))
