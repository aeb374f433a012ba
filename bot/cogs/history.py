"""/history: a member's own jobs, privately, a page at a time; /forget: erase them. The pages'
buttons carry whose history and which page they show, so they work after a restart too."""

import logging
import re

import discord
from discord import app_commands

from bot import render
from bot.bot import reply_privately
from bot.moderation import is_moderator

log = logging.getLogger(__name__)

PAGE_SIZE = 4  # four of the longest entries fit in one message (tests/bot/test_history.py)
EVERYWHERE = 0  # the "server" of a member's own history: every server and direct message


async def history_page(bot, user_id: int, guild_id: int, page: int, *, whose: str) -> tuple[str, discord.ui.View]:
    """Page `page` (0-based) of a member's jobs, in one server or (EVERYWHERE) all of them, and its buttons."""
    jobs, total = await bot.store.user_jobs(user_id, guild_id=guild_id or None, offset=page * PAGE_SIZE,
                                            limit=PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    if page >= pages and total:  # the history shrank (a /forget meanwhile): show the last page
        return await history_page(bot, user_id, guild_id, pages - 1, whose=whose)
    text = render.history(jobs, total=total, page=page, pages=pages, whose=whose)
    view = discord.ui.View(timeout=None)
    if pages > 1:
        view.add_item(HistoryButton(user_id, guild_id, page - 1, "previous", disabled=page == 0))
        view.add_item(HistoryButton(user_id, guild_id, page + 1, "next", disabled=page + 1 >= pages))
    return text, view


class HistoryButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"history:(?P<user>[0-9]{1,20}):(?P<guild>[0-9]{1,20}):(?P<page>-?[0-9]{1,6}):(?P<way>previous|next)",
):
    def __init__(self, user_id: int, guild_id: int, page: int, way: str, *, disabled: bool = False) -> None:
        label, emoji = ("Newer", "◀️") if way == "previous" else ("Older", "▶️")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=discord.ButtonStyle.secondary,
                                           custom_id=f"history:{user_id}:{guild_id}:{page}:{way}", disabled=disabled))
        self.user_id, self.guild_id, self.page = user_id, guild_id, page

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "HistoryButton":
        return cls(int(match["user"]), int(match["guild"]), int(match["page"]), match["way"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        if self.guild_id == EVERYWHERE:
            allowed, whose = interaction.user.id == self.user_id, "Your"
        else:
            settings = await bot.store.guild_settings(self.guild_id)
            allowed = interaction.guild_id == self.guild_id and is_moderator(interaction, settings)
            whose = f"<@{self.user_id}>'s"
        if not allowed:
            await reply_privately(interaction, "These pages are someone else's; use /history for your own.")
            return
        text, view = await history_page(bot, self.user_id, self.guild_id, max(self.page, 0), whose=whose)
        await interaction.response.edit_message(content=text, view=view,
                                                allowed_mentions=discord.AllowedMentions.none())


class ForgetButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"forget:(?P<user>[0-9]{1,20}):(?P<choice>erase|keep)",
):
    def __init__(self, user_id: int, choice: str) -> None:
        label, style = (("Erase my history", discord.ButtonStyle.danger) if choice == "erase"
                        else ("Cancel", discord.ButtonStyle.secondary))
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"forget:{user_id}:{choice}"))
        self.user_id, self.choice = user_id, choice

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "ForgetButton":
        return cls(int(match["user"]), match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        if interaction.user.id != self.user_id:
            await reply_privately(interaction, "Only the member whose history it is can erase it.")
            return
        if self.choice == "keep":
            await interaction.response.edit_message(content="Nothing was erased.", view=None)
            return
        await interaction.response.defer()
        erased, in_progress = await bot.store.erase_user_jobs(self.user_id)
        files = 0
        for job_id in erased:
            files += await bot.images.delete_job(job_id)
        log.info("user %s erased their history: %d job(s), %d file(s)", self.user_id, len(erased), files)
        await interaction.edit_original_response(content=render.forgotten(len(erased), files, in_progress), view=None)


def build_commands(bot) -> list[app_commands.Command]:
    @app_commands.command(name="history", description="Your Dreambot jobs, newest first (only you see them)")
    async def history(interaction: discord.Interaction) -> None:
        text, view = await history_page(bot, interaction.user.id, EVERYWHERE, 0, whose="Your")
        await interaction.response.send_message(text, view=view, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="forget", description="Erase your Dreambot history and stored pictures (asks first)")
    async def forget(interaction: discord.Interaction) -> None:
        _, total = await bot.store.user_jobs(interaction.user.id, limit=0)
        if not total:
            await interaction.response.send_message("Dreambot has no jobs of yours to erase.", ephemeral=True)
            return
        view = discord.ui.View(timeout=None)
        view.add_item(ForgetButton(interaction.user.id, "erase"))
        view.add_item(ForgetButton(interaction.user.id, "keep"))
        await interaction.response.send_message(render.forget_question(total), view=view, ephemeral=True)

    return [history, forget]


async def setup(bot) -> None:
    bot.add_dynamic_items(HistoryButton, ForgetButton)
    for command in build_commands(bot):
        bot.tree.add_command(command)


async def teardown(bot) -> None:
    bot.remove_dynamic_items(HistoryButton, ForgetButton)
    for name in ("history", "forget"):
        bot.tree.remove_command(name)
