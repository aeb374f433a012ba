"""What the buttons and reactions on a result do: Re-roll, Edit (and its form), Vary, Upscale, the
arrows, Delete, and Cancel on a queued job's notice. Each checks who may act on the job
(`moderation.may_reach`) before anything else, then starts the new job through the runner."""

from __future__ import annotations

import logging
from pathlib import Path

import discord

from bot.delivery import Origin
from bot.images import ImageStore
from bot.jobs import JobRunner
from bot.moderation import FilterMode, Refused, check_source, from_source, is_moderator, may_reach
from bot.queue import JobQueue, QueueFull
from bot.requests import derived, edited
from bot.store import JobRow, Store
from bot.views import TEXT_INPUT_LIMIT, EditModal, on_its_result
from dreambot.request import GenerateRequest, InvalidRequest, Limits

log = logging.getLogger(__name__)

# The actions that run a job itself again, from its own inputs (not from one of its pictures).
AGAIN = ("reroll", "edit")


class Actions:
    def __init__(self, *, store: Store, images: ImageStore, queue: JobQueue, runner: JobRunner, limits: Limits,
                 wildcards: Path | None = None) -> None:
        self._store = store
        self._images = images
        self._queue = queue
        self._runner = runner
        self._limits = limits
        self._wildcards = wildcards  # WILDCARDS_DIR: `__name__` typed in the Edit form is drawn as in a command

    async def act(self, action: str, job_id: int, index: int | None, *, member: discord.abc.User,
                  can_manage: bool, channel, guild_id: int | None, message,
                  interaction: discord.Interaction | None = None) -> str | None:
        """Carry out a button's or reaction's action; return the refusal to show the member, if any."""
        job, refusal = await self.reach(action, job_id, member, channel, guild_id, message, interaction)
        if job is None:
            return refusal
        if action == "cancel":
            return await self.cancel(job, member, can_manage, interaction)
        if action == "delete":
            return await self.delete(job, member, can_manage, message, interaction)
        if action == "edit":
            return await self.open_edit(job, interaction)

        try:
            request = await derived(self._images, self._limits, job, action, index)
        except InvalidRequest as error:
            return str(error)
        origin = Origin(user=member, channel=channel, guild_id=guild_id, reply_to=message)
        return await self.start(origin, job, request, action, index, interaction)

    async def reach(self, action: str, job_id: int, member, channel, guild_id: int | None, message,
                    interaction: discord.Interaction | None) -> tuple[JobRow | None, str]:
        """The job, if `member` may act on it here (`may_reach`) from `message`; else None and why not."""
        job = await self._store.get_job(job_id)
        if job is None and on_its_result(message, job_id) and await self._store.was_erased(job_id):
            # Said only on the result itself, where the job was seen: a number alone reveals nothing.
            return None, f"Job {job_id} was erased by the member who made it, so there is nothing to {action} any more."
        permissions = interaction.permissions if interaction is not None else None
        if job is None or not await may_reach(self._store, job, member, channel, guild_id, permissions):
            # The same words as for a job that does not exist: job numbers must not be probed.
            return None, f"Job {job_id} is not in Dreambot's history (any more), so there is nothing to {action} here."
        if interaction is not None and message is not None and job.message_id not in (None, message.id):
            # A raw client can send any custom id: a button (or the form it opened) acts only on its own result.
            return None, "That button does not belong to this message."
        return job, ""

    async def start(self, origin: Origin, job: JobRow, request: GenerateRequest, action: str, index: int | None,
                    interaction: discord.Interaction | None) -> str | None:
        """Start the job a button (or the Edit form) derived from `job`, under the server's rules and the
        queue's limits; return the refusal to show the member, if any."""
        member = origin.user
        if interaction is not None and not can_post_here(interaction):
            return ("🚫 I cannot post pictures here: this channel does not let me send messages or attach files. "
                    "Ask a moderator, or use the command in another channel.")
        try:
            request, policy = await self._runner.admit(origin, request)
            if action not in AGAIN:
                check_source(job, index or 0, policy)
                request = from_source(request, job, index or 0)
            elif request.source_flagged and policy.mode is FilterMode.BLOCK:
                verb = "re-rolled" if action == "reroll" else "edited"
                raise Refused(f"Job {job.id} started from a picture the safety filter flagged, so it can only be "
                              f"{verb} in an age-restricted channel whose filter shows flagged images.")
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
                                   parent_image=index if action not in AGAIN else None)
        except QueueFull as full:
            return f"⏳ {full}"
        return None

    async def open_edit(self, job: JobRow, interaction: discord.Interaction | None) -> str | None:
        """Edit: a form with the job's prompts and seed (only once `reach` let the member see the job)."""
        if interaction is None:
            return "Edit opens a form, so it has a button but no reaction: press Edit under the result."
        if job.deleted_at is not None:
            return f"Job {job.id}'s result was deleted, so there is nothing to edit any more."
        if (not_here := typing_refused(interaction)) is not None:
            return not_here
        request = job.request
        if max(len(request.prompt), len(request.negative_prompt)) > TEXT_INPUT_LIMIT:
            which = "prompt" if len(request.prompt) > TEXT_INPUT_LIMIT else "negative prompt"
            return (f"Job {job.id}'s {which} is longer than a Discord form holds ({TEXT_INPUT_LIMIT} characters), "
                    "so it cannot be edited here; start again with the command.")
        await EditModal(job.id, request.prompt, request.negative_prompt, request.seed,
                        longest=self._limits.max_prompt_length).show(interaction)
        return None

    async def edit(self, job_id: int, prompt: str, negative_prompt: str, seed: str, *, member: discord.abc.User,
                   channel, guild_id: int | None, message, interaction: discord.Interaction) -> str | None:
        """A submitted Edit form: the job again with the prompts and seed typed, as a reply to its result.
        Every rule is checked again, as at the button: the job may have been erased or deleted, or the
        member barred, since the form was opened; the new prompts meet the server's filter and limits."""
        job, refusal = await self.reach("edit", job_id, member, channel, guild_id, message, interaction)
        if job is None:
            return refusal
        if job.deleted_at is not None:
            return f"Job {job.id}'s result was deleted, so there is nothing to edit any more."
        if (not_here := typing_refused(interaction)) is not None:
            return not_here
        origin = Origin(user=member, channel=channel, guild_id=guild_id, reply_to=message)
        try:
            # As a command does: the ban and the filter on the words as typed, then on what they draw.
            await self._runner.admit(origin, GenerateRequest(prompt=prompt, negative_prompt=negative_prompt))
            request = await edited(self._images, self._limits, job, prompt, negative_prompt, seed, self._wildcards)
        except Refused as refusal:
            return f"🚫 {refusal}"
        except InvalidRequest as error:
            return f"⚠️ {error}"
        return await self.start(origin, job, request, "edit", None, interaction)

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


def can_post_here(interaction: discord.Interaction) -> bool:
    """Whether the bot may post a job's result where `interaction` happened: a reply in the channel
    (or thread) with pictures, as a button's job is posted. A direct message always takes it."""
    if interaction.guild_id is None:
        return True
    allowed = interaction.app_permissions
    thread = isinstance(interaction.channel, discord.Thread)
    return ((allowed.send_messages_in_threads if thread else allowed.send_messages) and allowed.attach_files
            and allowed.read_message_history)


def typing_refused(interaction: discord.Interaction | None) -> str | None:
    """The Edit form posts the member's own words: only where they may post words themselves."""
    if interaction is None or interaction.guild_id is None:
        return None
    allowed = interaction.permissions
    thread = isinstance(interaction.channel, discord.Thread)
    if allowed.send_messages_in_threads if thread else allowed.send_messages:
        return None
    return "🚫 You cannot post in this channel, so you cannot post a new prompt here through Edit either."

