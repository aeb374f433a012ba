"""What the buttons and reactions on a result do: Re-roll, Vary, Upscale, the arrows, Delete, and
Cancel on a queued job's notice. Each checks who may act on the job (`moderation.may_reach`)
before anything else, then starts the new job through the runner."""

from __future__ import annotations

import logging

import discord

from bot.delivery import Origin
from bot.images import ImageStore
from bot.jobs import JobRunner
from bot.moderation import FilterMode, Refused, check_source, from_source, is_moderator, may_reach
from bot.queue import JobQueue, QueueFull
from bot.requests import derived
from bot.store import JobRow, Store
from bot.views import on_its_result
from dreambot.request import InvalidRequest, Limits

log = logging.getLogger(__name__)


class Actions:
    def __init__(self, *, store: Store, images: ImageStore, queue: JobQueue, runner: JobRunner, limits: Limits
                 ) -> None:
        self._store = store
        self._images = images
        self._queue = queue
        self._runner = runner
        self._limits = limits

    async def act(self, action: str, job_id: int, index: int | None, *, member: discord.abc.User,
                  can_manage: bool, channel, guild_id: int | None, message,
                  interaction: discord.Interaction | None = None) -> str | None:
        """Carry out a button's or reaction's action; return the refusal to show the member, if any."""
        job = await self._store.get_job(job_id)
        if job is None and on_its_result(message, job_id) and await self._store.was_erased(job_id):
            # Said only on the result itself, where the job was seen: a number alone reveals nothing.
            return f"Job {job_id} was erased by the member who made it, so there is nothing to {action} any more."
        permissions = interaction.permissions if interaction is not None else None
        if job is None or not await may_reach(self._store, job, member, channel, guild_id, permissions):
            # The same words as for a job that does not exist: job numbers must not be probed.
            return f"Job {job_id} is not in Dreambot's history (any more), so there is nothing to {action} here."
        if interaction is not None and message is not None and job.message_id not in (None, message.id):
            # A raw client can send any custom id: a button acts only on the result it is on.
            return "That button does not belong to this message."
        if action == "cancel":
            return await self.cancel(job, member, can_manage, interaction)
        if action == "delete":
            return await self.delete(job, member, can_manage, message, interaction)

        try:
            request = await derived(self._images, self._limits, job, action, index)
        except InvalidRequest as error:
            return str(error)
        origin = Origin(user=member, channel=channel, guild_id=guild_id, reply_to=message)
        try:
            request, policy = await self._runner.admit(origin, request)
            if action != "reroll":
                check_source(job, index or 0, policy)
                request = from_source(request, job, index or 0)
            elif request.source_flagged and policy.mode is FilterMode.BLOCK:
                raise Refused(f"Job {job.id} started from a picture the safety filter flagged, so it can only be "
                              "re-rolled in an age-restricted channel whose filter shows flagged images.")
            self._queue.check(member.id)
        except Refused as refusal:
            return f"🚫 {refusal}"
        except InvalidRequest as error:  # a LoRA no longer installed
            return f"⚠️ {error}"
        except QueueFull as full:
            return f"⏳ {full}"
        if interaction is not None:
            # Acknowledge without a visible answer: the new job posts its own reply to the result.
            await interaction.response.defer()
        try:
            await self._runner.run(origin, request, policy=policy, action=action, parent_job_id=job.id,
                                   parent_image=index if action != "reroll" else None)
        except QueueFull as full:
            return f"⏳ {full}"
        return None

    async def delete(self, job: JobRow, member, can_manage: bool, message,
                     interaction: discord.Interaction | None) -> str | None:
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
                log.warning("job %s: could not delete its message: %s", job.id, error)
                return "Discord did not let me delete that message; a moderator can remove it."
        await self._store.mark_deleted(job.id)
        await self._images.delete_job(job.id)
        log.info("job %s: result deleted by user %s", job.id, member.id)
        return None

    async def cancel(self, job: JobRow, member, can_manage: bool, interaction: discord.Interaction | None
                     ) -> str | None:
        """The Cancel button of a queued or running job: its member, or a moderator."""
        moderator = can_manage or (interaction is not None and job.guild_id is not None and
                                   is_moderator(interaction, await self._store.guild_settings(job.guild_id)))
        if member.id != job.user_id and not moderator:
            return "Only the member who asked for this job, or a moderator, can cancel it."
        if job.status not in ("queued", "running"):
            return f"Job {job.id} is already {job.shown_status}; there is nothing to cancel."
        if not await self._queue.cancel(job.id, member.id):
            return f"Job {job.id} is finishing; it is too late to cancel it."
        if interaction is not None and not interaction.response.is_done():
            await interaction.response.defer()  # the job's notice says it was cancelled
        log.info("job %s cancelled by user %s", job.id, member.id)
        return None
