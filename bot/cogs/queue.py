"""/queue: what the engines are making now and what waits, in the order it will run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import render

if TYPE_CHECKING:
    from bot.bot import DreamBot

LISTED = 15  # queued jobs listed; the rest are counted


def build_queue_command(bot: DreamBot) -> app_commands.Command:
    @app_commands.command(name="queue", description="See what Dreambot is making now and what waits")
    async def queue(interaction: discord.Interaction) -> None:
        lines = []
        for job_id in bot.queue.running():
            lines.append(await entry(interaction, job_id, "▶️"))
        waiting = bot.queue.queued()
        for place, job_id in enumerate(waiting[:LISTED], start=1):
            lines.append(await entry(interaction, job_id, f"{place}."))
        if len(waiting) > LISTED:
            lines.append(f"… and {len(waiting) - LISTED} more.")
        if not lines:
            text = "The queue is empty: a new job starts at once."
        else:
            head = f"**Dreambot's queue** · {len(bot.queue.running())} running · {len(waiting)} waiting"
            text = "\n".join([head, *lines, "Cancel a job with ✖️ on its message (its member or a moderator)."])
        await interaction.response.send_message(render.clip(text), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    async def entry(interaction: discord.Interaction, job_id: int, marker: str) -> str:
        job = await bot.store.get_job(job_id)
        ticket = bot.queue.ticket(job_id)
        if job is None:
            return f"{marker} Job {job_id}"
        # Prompts only where the viewer could read them anyway: their own, or from this channel.
        visible = job.user_id == interaction.user.id or job.channel_id == interaction.channel_id
        said = f" · {render.clip(render.escape(job.prompt), 80)}" if visible else ""
        step = f" · step {ticket.step[0]} of {ticket.step[1]}" if ticket and ticket.step else ""
        return f"{marker} Job {job_id} · <@{job.user_id}> · {job.mode}{step}{said}"

    return queue


async def setup(bot: DreamBot) -> None:
    bot.tree.add_command(build_queue_command(bot))


async def teardown(bot: DreamBot) -> None:
    bot.tree.remove_command("queue")
