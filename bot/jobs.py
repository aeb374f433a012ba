"""Run one job for a member and deliver its outcome, wherever it was asked for.

A slash command's job answers in place of its "thinking…" message. A job started by a button or a
reaction on an earlier result is posted as a reply to that result, mentioning the member who asked.
Either way the posted result gets the buttons that start the next job from it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot import render
from bot.engine_client import EngineCrashed, EngineJobFailed, EngineTimedOut, EngineUnavailable, JobCancelled
from bot.moderation import Policy, PromptBlocked, Refused, post_modlog
from dreambot.protocol import GenerateRequest, GenerateResult, Job, Progress

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

# A variation repaints this much of its source: close to it, yet visibly different.
VARY_STRENGTH = 0.5
# A job's notice is edited at most this often (progress, place in the queue); a job far back in
# the queue at most every FAR_BACK_EDIT_SECONDS.
EDIT_SECONDS = 2.5
FAR_BACK_EDIT_SECONDS = 30.0


@dataclass
class Origin:
    """Who asked for a job, and where its outcome goes."""

    user: discord.abc.User
    channel: discord.abc.Messageable | None
    guild_id: int | None
    # A slash command: the outcome replaces its deferred answer.
    interaction: discord.Interaction | None = None
    # A button or a reaction: the outcome replies to this result message.
    reply_to: discord.Message | discord.PartialMessage | None = None


async def admit(bot: DreamBot, origin: Origin, request: GenerateRequest) -> tuple[GenerateRequest, Policy]:
    """The server's moderation, before anything is recorded or queued: the request under the
    channel's safety policy, or `moderation.Refused` with the member's message."""
    try:
        classifier = bot.engine.info.safety_checker if bot.engine.info else None
        return await bot.moderation.admit(origin.user.id, origin.guild_id, origin.channel, request, classifier)
    except PromptBlocked as refusal:
        log.info("a prompt by user %s was refused by the prompt filter of server %s", origin.user.id, origin.guild_id)
        await post_modlog(bot, origin.guild_id, render.prompt_refused(origin.user.id, origin.channel, request,
                                                                      refusal.term))
        raise


def check_source(job, index: int, policy: Policy) -> None:
    """A picture the safety filter flagged stays where flagged pictures may be shown: starting a
    job from it in any other channel is refused (the new picture could carry it over)."""
    if policy.mode == "block" and job.nsfw_flags and index < len(job.nsfw_flags) and job.nsfw_flags[index]:
        raise Refused(f"Picture {index + 1} of job {job.id} was flagged by the safety filter, so it can only be "
                      "used in an age-restricted channel whose filter shows flagged images.")


async def run(
    bot: DreamBot,
    origin: Origin,
    request: GenerateRequest,
    *,
    policy: Policy,
    action: str = "dream",
    parent_job_id: int | None = None,
    parent_image: int | None = None,
    notes: tuple[str, ...] = (),
) -> None:
    """Record, queue and run an admitted `request`, then post its outcome. Raises QueueFull (before
    recording anything) when the queue does not take it now; never raises for engine failures."""
    with bot.queue.reserve(origin.user.id) as reservation:
        job_id = await record(bot, origin, request, policy=policy, action=action, parent_job_id=parent_job_id,
                              parent_image=parent_image)
        log.info("job %s (%s) queued for user %s: %r", job_id, action, origin.user.id, request.prompt[:80])
        await carry_out(bot, origin, job_id, request, policy=policy, reservation=reservation, notes=notes,
                        origin_text=render.origin(action, parent_job_id, parent_image))


async def record(bot: DreamBot, origin: Origin, request: GenerateRequest, *, policy: Policy, action: str,
                 parent_job_id: int | None, parent_image: int | None) -> int:
    """The job's row, and its input pictures on disk (a re-roll runs it again, after a restart too)."""
    job_id = await bot.store.create_job(
        request,
        user_id=origin.user.id,
        guild_id=origin.guild_id,
        channel_id=getattr(origin.channel, "id", None),
        interaction_id=origin.interaction.id if origin.interaction else None,
        model=bot.engine.info.model if bot.engine.info else bot.settings.sd_model,
        action=action,
        parent_job_id=parent_job_id,
        parent_image=parent_image,
        nsfw_mode=policy.mode,
    )
    for name, data in (("image", request.image), ("mask", request.mask)):
        if data is not None:
            await bot.images.save(job_id, name, data)
    return job_id


async def restore(bot: DreamBot) -> int:
    """Queue again the jobs a previous run left queued or running; their results are posted in
    their channels, mentioning the member (the interactions they came from are gone)."""
    restored = 0
    for job in await bot.store.unfinished_jobs():
        image, mask = await bot.images.load(job.id, "image"), await bot.images.load(job.id, "mask")
        if job.channel_id is None:
            await bot.store.fail_job(job.id, "the bot stopped before this job finished")
            continue
        # Before the gateway connects no channel is known: a partial one, resolved again at posting.
        channel = bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        notice = channel.get_partial_message(job.notice_message_id) if job.notice_message_id else None
        origin = Origin(user=Someone(job.user_id), channel=channel, guild_id=job.guild_id, reply_to=notice)
        policy = Policy(job.nsfw_mode or "block", job.nsfw_threshold)
        request = policy.apply(job.request(image=image, mask=mask))
        await bot.store.requeue_job(job.id)
        bot.create_task(carry_out(bot, origin, job.id, request, policy=policy, restored=True,
                                  origin_text=render.origin(job.action, job.parent_job_id, job.parent_image)),
                        name=f"restored-job-{job.id}")
        restored += 1
    return restored


@dataclass(frozen=True)
class Someone:
    """The member of a restored job: all Delivery needs is whom to mention."""

    id: int

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


async def carry_out(bot: DreamBot, origin: Origin, job_id: int, request: GenerateRequest, *, policy: Policy,
                    reservation=None, origin_text: str = "", notes: tuple[str, ...] = (),
                    restored: bool = False) -> None:
    """Queue a recorded job, keep its notice up to date (place in the queue, then progress), and
    post its outcome."""
    # A preview is drawn before the safety check: only where flagged images may be shown at all.
    delivery = Delivery(origin, previews=policy.mode)
    ticket = bot.queue.submit(Job(job_id, request), origin.user.id, delivery.progressed, reservation=reservation,
                              check=False)
    position = bot.queue.position(job_id)
    text = render.queued(job_id, position, bot.queue.estimate(position), notes, restored=restored)
    notice = await delivery.show(text, cancel_view(job_id))
    if notice is not None:
        await bot.store.set_notice(job_id, notice.id)
        if origin.reply_to is None:  # if the interaction expires first, the result replies to its notice
            origin.reply_to = notice
    pump = asyncio.create_task(delivery.keep_fresh(bot.queue, ticket, notes), name=f"job-{job_id}-notice")
    try:
        result = await ticket.result
        bot.posting.add(job_id)  # a shutdown waits for this result to be posted
    except JobCancelled as cancelled:
        await delivery.finish(render.cancelled(job_id, str(cancelled)))
        return
    except EngineUnavailable as error:
        await delivery.finish(render.engine_unavailable(job_id, str(error)))
        return
    except EngineCrashed:
        await delivery.finish(render.crashed(job_id))
        return
    except EngineTimedOut as error:
        await delivery.finish(render.timed_out(job_id, str(error)))
        return
    except EngineJobFailed as error:
        known = error.kind in ("invalid", "oom")
        await delivery.finish(f"⚠️ {error} (job {job_id})" if known else render.failed(job_id))
        return
    except RuntimeError:
        await delivery.finish(render.failed(job_id))
        return
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)

    try:
        if isinstance(origin.channel, discord.PartialMessageable):  # a restored job: its channel is known now
            origin.channel = bot.get_channel(origin.channel.id) or origin.channel
        if any(image.nsfw_content_detected for image in result.images):
            if policy.mode != "block" and await bot.moderation.current_mode(origin.guild_id, origin.channel) == "block":
                # The channel lost its age restriction, or moderators tightened it, while the job waited.
                policy = Policy("block", policy.threshold)
                await bot.store.withhold_flagged(job_id)
            await post_modlog(bot, origin.guild_id, render.flagged(job_id, origin.user.id, origin.channel, result,
                                                                   policy.mode))
        shown = [(index, image) for index, image in enumerate(result.images) if shown_under(image, policy.mode)]
        if not shown:
            # A blocked image never reached this process (the engine keeps its bytes): only the notice.
            await delivery.finish(render.all_withheld(job_id, len(result.images)))
            return
        try:
            files = []
            for index, image in shown:
                await bot.images.save(job_id, f"result-{index}.{image.format}", image.data)
                name = f"dream-{job_id}-{image.seed}.{image.format}"
                # Discord blurs an attachment whose name starts with SPOILER_ until it is clicked.
                spoiler = image.nsfw_content_detected and policy.mode == "spoiler"
                files.append(("SPOILER_" + name if spoiler else name, image.data))
            text = render.summary(job_id, request, result, origin=origin_text, notes=notes, nsfw_mode=policy.mode)
            message = await delivery.finish(text, files, result_view(job_id, request, result, policy.mode))
            if message is None:
                # Discord refused the upload (too large, say) and every fallback: say so in words.
                await delivery.finish(render.undeliverable(job_id))
            else:
                await bot.store.set_message(job_id, message.id)
        except Exception:
            log.exception("job %s: could not post its result", job_id)
            await delivery.finish(render.failed(job_id))
    finally:
        bot.posting.discard(job_id)


def cancel_view(job_id: int) -> discord.ui.View:
    from bot.cogs.results import ResultButton  # the cog owns the buttons' behaviour

    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton("cancel", job_id))
    return view


def shown_under(image, nsfw_mode: str) -> bool:
    """Whether an image is posted under the channel's safety filter mode (and, to be sure, whether
    the engine sent its bytes: it keeps a flagged image's unless the request allowed it)."""
    return bool(image.data) and (not image.nsfw_content_detected or nsfw_mode != "block")


def result_view(job_id: int, request: GenerateRequest, result: GenerateResult, nsfw_mode: str = "block"
                ) -> discord.ui.View:
    """Re-roll and Delete for every result; Vary and Upscale for each picture shown (V1-V4 and
    U1-U4 when there are several, as members know them from Midjourney); a single picture also
    gets ⬅️ ➡️ 🔼 🔽 to extend it that way. The buttons carry the job
    id, so they work for as long as the job is in the history, across restarts."""
    from bot.cogs.results import ResultButton  # the cog owns the buttons' behaviour

    view = discord.ui.View(timeout=None)
    shown = [index for index, image in enumerate(result.images) if shown_under(image, nsfw_mode)]
    if request.mode == "interpolate":
        rows = 0
    elif len(result.images) == 1:
        view.add_item(ResultButton("vary", job_id, 0, row=0))
        view.add_item(ResultButton("upscale", job_id, 0, row=0))
        if shown:
            for side in ("left", "right", "up", "down"):  # extend the picture that way (outpainting)
                view.add_item(ResultButton(side, job_id, 0, row=1))
        rows = 0
    else:
        # Discord puts at most 5 buttons in a row: V1-V5 | V6-V10 | U1-U5 | U6-U10 | the rest.
        per_row = 5
        v_rows = (len(shown) + per_row - 1) // per_row
        for position, index in enumerate(shown):
            view.add_item(ResultButton("vary", job_id, index, label=f"V{index + 1}", row=position // per_row))
            view.add_item(ResultButton("upscale", job_id, index, label=f"U{index + 1}",
                                       row=v_rows + position // per_row))
        rows = 2 * v_rows
    view.add_item(ResultButton("reroll", job_id, row=rows))
    view.add_item(ResultButton("delete", job_id, row=rows))
    return view


class Delivery:
    """Where a job's messages go: the interaction's own answer, or a reply in the channel."""

    def __init__(self, origin: Origin, previews: str = "block") -> None:
        self.origin = origin
        # The channel's safety filter mode: "block" shows no preview, "spoiler" hides it behind one.
        self.previews = previews
        self.message: discord.Message | None = None  # the reply posted for a button/reaction
        self._edit = asyncio.Lock()  # one edit at a time: a late notice must never cover the result
        self._last_edit = 0.0
        self._progress: Progress | None = None
        self._preview: bytes | None = None
        self._shown_progress: Progress | None = None
        self._shown_position: int | None = None
        self._started: float | None = None
        self.finished = False  # set with the outcome: no notice may be edited in after it

    async def show(self, content: str, view: discord.ui.View | None = None) -> discord.Message | None:
        """The queued notice (with its Cancel button); returns its message. Failing to show it must
        not stop the job."""
        try:
            if self.origin.interaction is not None:
                return await self.origin.interaction.edit_original_response(content=content, view=view)
            if self.origin.channel is not None:
                self.message = await self.origin.channel.send(
                    f"{self.origin.user.mention} {content}",
                    reference=self._reference(),
                    mention_author=False,
                    allowed_mentions=discord.AllowedMentions(users=[self.origin.user]),
                    view=view,
                )
                return self.message
        except discord.HTTPException:
            log.warning("could not show the queued notice", exc_info=True)
        return None

    def progressed(self, progress: Progress) -> None:
        """The engine's step report (called for every step; `keep_fresh` shows the latest)."""
        if self._started is None:
            self._started = time.monotonic()
        self._progress = progress
        if progress.preview and self.previews != "block":
            self._preview = progress.preview

    async def keep_fresh(self, queue, ticket, notes: tuple[str, ...]) -> None:
        """Until the job ends: while queued, its place and the estimated wait when they change; while
        running, step i of n and a preview. At most one edit every EDIT_SECONDS (further apart for
        jobs far back in the queue), well within Discord's rate limits."""
        job_id = ticket.job.job_id
        while not ticket.result.done():
            await asyncio.sleep(EDIT_SECONDS)
            progress = self._progress
            if progress is not None:
                if progress == self._shown_progress:
                    continue
                self._shown_progress = progress
                elapsed = time.monotonic() - (self._started or time.monotonic())
                await self._update(render.running(job_id, progress.step, progress.total, elapsed), self._preview)
                continue
            position = queue.position(job_id)
            far_back = position >= 10 and time.monotonic() - self._last_edit < FAR_BACK_EDIT_SECONDS
            if position == self._shown_position or far_back:
                continue
            self._shown_position = position
            await self._update(render.queued(job_id, position, queue.estimate(position), notes), None)

    async def _update(self, content: str, preview: bytes | None) -> None:
        name = "SPOILER_preview.jpg" if self.previews == "spoiler" else "preview.jpg"
        files = [discord.File(io.BytesIO(preview), filename=name)] if preview else []
        async with self._edit:
            if self.finished:
                return
            self._last_edit = time.monotonic()
            try:
                if self.origin.interaction is not None:
                    await self.origin.interaction.edit_original_response(content=content, attachments=files)
                elif self.message is not None:
                    await self.message.edit(content=f"{self.origin.user.mention} {content}", attachments=files,
                                            allowed_mentions=discord.AllowedMentions(users=[self.origin.user]))
            except discord.HTTPException as error:
                log.info("could not update a job's notice: %s", error)

    async def finish(
        self, content: str, images: list[tuple[str, bytes]] = (), view: discord.ui.View | None = None
    ) -> discord.Message | None:
        """Put the outcome in place of the queued notice. Interactions expire after 15 minutes; a
        job that took longer is posted in the channel instead, mentioning the member."""
        async with self._edit:
            self.finished = True
            return await self._finish(content, images, view)

    async def _finish(self, content: str, images: list[tuple[str, bytes]], view: discord.ui.View | None
                      ) -> discord.Message | None:
        def files() -> list[discord.File]:  # a File is spent once sent: fresh ones for each try
            return [discord.File(io.BytesIO(data), filename=name) for name, data in images]

        extra = {"view": view}  # None takes the notice's Cancel button away
        try:
            if self.origin.interaction is not None:
                return await self.origin.interaction.edit_original_response(
                    content=content, attachments=files(), **extra
                )
            if self.message is not None:
                return await self.message.edit(
                    content=f"{self.origin.user.mention} {content}", attachments=files(),
                    allowed_mentions=discord.AllowedMentions(users=[self.origin.user]), **extra
                )
        except discord.HTTPException as error:
            log.info("could not edit the job's message (%s); posting in the channel", error)
        if self.origin.channel is None:
            return None
        for reference in dict.fromkeys((self._reference(), None)):  # without the reply if that is what fails
            try:
                return await self.origin.channel.send(
                    f"{self.origin.user.mention} {content}",
                    files=files(),
                    reference=reference,
                    mention_author=False,
                    allowed_mentions=discord.AllowedMentions(users=[self.origin.user]),
                    **extra,
                )
            except discord.HTTPException as error:
                log.warning("could not post a job's outcome in channel %s: %s",
                            getattr(self.origin.channel, "id", None), error)
        return None

    def _reference(self) -> discord.MessageReference | None:
        if self.origin.reply_to is None:
            return None
        return self.origin.reply_to.to_reference(fail_if_not_exists=False)
