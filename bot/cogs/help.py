"""/help, and `@Dreambot help` for those who ask the bot by name: what each command does, the options
with this server's limits, the prompt syntax, the buttons and reactions (`bot.help`), in pages."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.views import HelpButton, help_message

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

PAGES = [app_commands.Choice(name=f"{number + 1} · {title}", value=number)
         for number, title in enumerate(HelpButton.TITLES)]


class Help(commands.Cog):
    def __init__(self, bot: DreamBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(HelpButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(HelpButton)

    @app_commands.command(name="help", description="What Dreambot can do: commands, options and limits, prompt "
                                                    "syntax, buttons")
    @app_commands.describe(page="Which page to open (default: the commands)")
    @app_commands.choices(page=PAGES)
    async def help(self, interaction: discord.Interaction, page: int = 0) -> None:
        text, view = await help_message(self.bot, interaction.guild_id, interaction.channel, page,
                                        interaction.user.id)
        await interaction.response.send_message(text, view=view, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @commands.command(name="help", aliases=["commands"])
    async def mention_help(self, ctx: commands.Context) -> None:
        """`@Dreambot help`: the same pages, as a reply (a message has no private answer); the page
        buttons turn it for the member who asked and give anyone else their own copy."""
        text, view = await help_message(self.bot, ctx.guild.id if ctx.guild else None, ctx.channel, 0,
                                        ctx.author.id)
        try:
            await ctx.reply(text, view=view, mention_author=False, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as error:  # no right to post here: nothing else to do
            log.info("could not answer @help in channel %s: %s", ctx.channel.id, error)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A mention and nothing else is a question too: the first page."""
        me = self.bot.user
        if me is None or message.author.bot or message.content.strip() not in (f"<@{me.id}>", f"<@!{me.id}>"):
            return
        await self.mention_help(await self.bot.get_context(message))


async def setup(bot: DreamBot) -> None:
    await bot.add_cog(Help(bot))
