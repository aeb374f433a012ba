"""/sync: the bot's owner registers the slash commands again without restarting the bot."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bot.bot import DreamBot


def build_sync_command(bot: DreamBot) -> app_commands.Command:
    @app_commands.command(name="sync", description="Register Dreambot's slash commands with Discord again (bot owner)")
    @app_commands.default_permissions(administrator=True)  # hidden from members; the owner check is below
    async def sync(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not await bot.is_owner(interaction.user):
            await interaction.followup.send("Only the bot's owner can register its commands.", ephemeral=True)
            return
        await bot.sync_commands(force=True)
        names = ", ".join(f"the “{command.name}” menu" if isinstance(command, app_commands.ContextMenu) else
                          f"/{command.name}" for command in bot.tree.get_commands())
        await interaction.followup.send(f"Registered {names} with Discord.", ephemeral=True)

    return sync


async def setup(bot: DreamBot) -> None:
    bot.tree.add_command(build_sync_command(bot))


async def teardown(bot: DreamBot) -> None:
    bot.tree.remove_command("sync")
