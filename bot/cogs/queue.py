"""/queue: what the engines are making now and what waits, in the order it will run: this server's
jobs and the viewer's own; the rest (other servers, direct messages) only counted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.moderation import may_reach
from bot.store import JobRow

if TYPE_CHECKING:
    from bot.bot import DreamBot

LISTED = 15  # queued jobs listed; the rest are counted


class Queue(commands.Cog):
    def __init__(self, bot: DreamBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="See what Dreambot is making now and what waits")
    async def queue(self, interaction: discord.Interaction) -> None:
        queue, store = self.bot.queue, self.bot.store
        running, waiting = queue.running(), queue.queued()
        jobs = {job_id: await store.get_job(job_id) for job_id in running + waiting}

        def listed(job_id: int) -> bool:  # this server's, or the viewer's own
            job = jobs[job_id]
            return job is not None and (job.user_id == interaction.user.id or
                                        (job.guild_id is not None and job.guild_id == interaction.guild_id))

        here = [job_id for job_id in running if listed(job_id)]
        lines = [await self.entry(interaction, jobs[job_id], "▶️") for job_id in here]
        mine = [job_id for job_id in waiting if listed(job_id)]
        places = {job_id: place for place, job_id in enumerate(waiting, start=1)}
        lines += [await self.entry(interaction, jobs[job_id], f"{places[job_id]}.") for job_id in mine[:LISTED]]
        if len(mine) > LISTED:
            lines.append(f"… and {len(mine) - LISTED} more here.")
        elsewhere = len(running) + len(waiting) - len(here) - len(mine)
        if elsewhere:
            lines.append(f"… and {elsewhere} {'job' if elsewhere == 1 else 'jobs'} from elsewhere "
                         "(other servers and direct messages).")
        if not running and not waiting:
            text = "The queue is empty: a new job starts at once."
        else:
            head = f"**Dreambot's queue** · {len(running)} running · {len(waiting)} waiting"
            text = "\n".join([head, *lines, "Cancel a job with ✖️ on its message (its member or a moderator)."])
        await interaction.response.send_message(render.clip(text), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    async def entry(self, interaction: discord.Interaction, job: JobRow | None, marker: str) -> str:
        assert job is not None
        ticket = self.bot.queue.ticket(job.id)
        # Prompts only where the viewer could read them anyway (moderation.reachable).
        visible = await may_reach(self.bot.store, job, interaction.user, interaction.channel, interaction.guild_id,
                                  interaction.permissions)
        said = f" · {render.clip(render.escape(job.request.prompt), 80)}" if visible else ""
        done = f" · {100 * ticket.step[0] // max(ticket.step[1], 1)} %" if ticket and ticket.step else ""
        return (f"{marker} Job {job.id} · <@{job.user_id}> · {job.request.mode}{done} · asked "
                f"{render.when(job.created_at, 'R')}{said}")


async def setup(bot: DreamBot) -> None:
    await bot.add_cog(Queue(bot))
