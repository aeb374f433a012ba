"""Where a job's messages go, and how its outcome is posted.

A slash command's job answers in place of its "thinking…" message. A job started by a button or a
reaction on an earlier result is posted as a reply to that result, mentioning the member who asked.
Either way the posted result gets the buttons that start the next job from it (`bot.views`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import discord

from bot import fingerprint, render
from bot.images import ImageStore
from bot.moderation import FilterMode, Moderation, Policy
from bot.modlog import ModLog
from bot.outcome import Failure, FailureKind
from bot.queue import JobQueue, Ticket
from bot.store import JobRow, Store
from bot.views import result_view, shown_under
from dreambot.request import GenerateRequest
from dreambot.wire import GenerateResult, Progress

log = logging.getLogger(__name__)

# A result that fails to post for another reason than Discord's answer is tried again after these
# pauses; then it waits for the next start (it stays `delivering`).
POST_RETRY_SECONDS = (5.0, 30.0, None)
# A job's notice is edited at most this often (progress, place in the queue); a job far back in
# the queue at most every FAR_BACK_EDIT_SECONDS.
EDIT_SECONDS = 2.5
FAR_BACK_EDIT_SECONDS = 30.0


@dataclass
class Origin:
    """Who asked for a job, and where its outcome goes."""

    user: discord.abc.User | Someone
    channel: discord.abc.Messageable | None
    guild_id: int | None
    # A slash command: the outcome replaces its deferred answer.
    interaction: discord.Interaction | None = None
    # A button or a reaction: the outcome replies to this result message.
    reply_to: discord.Message | discord.PartialMessage | None = None


@dataclass(frozen=True)
class Someone:
    """The member of a restored job: all Delivery needs is whom to mention."""

    id: int

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


class Outbox:
    """Posts a job's outcome under the channel's rules as they are when it is posted, and records it."""

    def __init__(self, *, client: discord.Client, store: Store, images: ImageStore, queue: JobQueue,
                 moderation: Moderation, modlog: ModLog) -> None:
        self._client = client
        self._store = store
        self._images = images
        self._queue = queue
        self._moderation = moderation
        self._modlog = modlog

    async def current_channel(self, origin: Origin):
        """The job's channel as Discord has it now (age restriction included): from the gateway's
        cache, or asked for (a restored job's, before the gateway has told us of it)."""
        channel = origin.channel
        if channel is None:
            return None
        known = self._client.get_channel(channel.id)  # type: ignore[attr-defined]
        if known is None and isinstance(channel, discord.PartialMessageable) and channel.guild_id is not None:
            try:
                known = await self._client.fetch_channel(channel.id)
            except discord.HTTPException:
                known = None
        return known or channel

    async def mode_now(self, origin: Origin) -> FilterMode:
        return await self._moderation.current_mode(origin.guild_id, await self.current_channel(origin))

    async def fail(self, delivery: Delivery, origin: Origin, job_id: int, failure: Failure) -> None:
        """Say in place of the notice how the job ended; a refusal's reason goes to the member alone,
        an operator's reason (a path, an exception) to the server's mod-log, once per reason."""
        await delivery.finish(render.failure(job_id, failure))
        if failure.kind in render.OPERATORS_FAILURES:
            await self._modlog.post_once(origin.guild_id, failure.message, render.failure_detail(job_id, failure))
        if failure.kind is FailureKind.REFUSED and failure.public and origin.interaction is not None:
            try:
                await origin.interaction.followup.send(f"🚫 {failure.message} (job {job_id})", ephemeral=True)
            except discord.HTTPException:
                pass

    async def deliver(self, delivery: Delivery, origin: Origin, job_id: int, request: GenerateRequest,
                      result: GenerateResult, policy: Policy, *, origin_text: str = "", notes: tuple[str, ...] = ()
                      ) -> None:
        """Post a finished job's result under the channel's policy as it is now, and record it as
        delivered. The job stays `delivering` (its pictures on disk) until the post is confirmed, so a
        crash in between is delivered at the next start."""
        origin.channel = await self.current_channel(origin)
        if any(image.nsfw_content_detected for image in result.images):
            if policy.mode is not FilterMode.BLOCK and \
                    await self._moderation.current_mode(origin.guild_id, origin.channel) is FilterMode.BLOCK:
                # The channel lost its age restriction, or moderators tightened it, while the job waited.
                policy = Policy(FilterMode.BLOCK, policy.threshold)
                await self._store.withhold_flagged(job_id)
            await self._modlog.post(origin.guild_id, render.flagged(job_id, origin.user.id, origin.channel, result,
                                                                    policy.mode))
        shown = [(index, image) for index, image in enumerate(result.images) if shown_under(image, policy.mode)]
        if not shown:
            # A blocked image never reached this process (the engine keeps its bytes): only the notice.
            await delivery.finish(render.all_withheld(job_id, len(result.images)))
            await self.record(job_id, None, filtered=result.all_flagged)
            return
        kept, files = True, []
        for index, image in shown:  # all before posting: a restart can post them if we die on the way
            if image.nsfw_content_detected and origin.guild_id is not None:  # known again if brought back
                try:
                    print_ = await asyncio.to_thread(fingerprint.of, image.data)
                    if fingerprint.informative(print_):
                        await self._store.add_flagged_picture(job_id, index, origin.guild_id, print_)
                except Exception:
                    log.exception("job %s: could not remember flagged picture %d", job_id, index + 1)
            try:
                await self._images.save(job_id, f"result-{index}.{image.format}", image.data)
            except OSError:
                log.exception("job %s: could not store picture %d in %s", job_id, index + 1, self._images.folder)
                kept = False
            name = f"dream-{job_id}-{image.seed}.{image.format}"
            # Discord blurs an attachment whose name starts with SPOILER_ until it is clicked.
            spoiler = image.nsfw_content_detected and policy.mode is FilterMode.SPOILER
            files.append(("SPOILER_" + name if spoiler else name, image.data))
        if not kept:
            notes = (*notes, "This picture could not be stored, so Vary, Upscale and the arrows cannot start from it.")
        text = render.summary(job_id, request, result, origin=origin_text, notes=notes, nsfw_mode=policy.mode)
        view = result_view(job_id, request, result, policy.mode, reusable=kept)
        message = None
        for attempt, pause in enumerate(POST_RETRY_SECONDS):
            try:
                message = await delivery.finish(text, files, view)
                break
            except Exception:  # Discord's refusals are handled inside; this is the network, or a bug
                log.exception("job %s: could not post its result (attempt %d)", job_id, attempt + 1)
                if pause is None:
                    await delivery.finish(render.failed(job_id))
                    return  # still delivering: the next start tries again
                await asyncio.sleep(pause)
        if message is None:
            # Discord refused the upload (too large, say) and every fallback: say so in words.
            await delivery.finish(render.undeliverable(job_id))
        await self.record(job_id, message.id if message is not None else None)

    async def record(self, job_id: int, message_id: int | None, *, filtered: bool = False) -> None:
        """A posted result stays posted: failing to record it is logged, never shown in its place."""
        try:
            await self._queue.delivered(job_id, message_id, filtered=filtered)
        except Exception:
            log.exception("job %s: delivered as message %s, but that could not be recorded", job_id, message_id)

    async def already_posted(self, origin: Origin, job: JobRow) -> bool:
        """Whether Discord took the result before the bot died (only its answer was lost): the notice,
        which the result replaces, already carries the job's pictures. Then it is only recorded."""
        if job.notice_message_id is None or origin.channel is None:
            return False
        try:
            notice = await origin.channel.fetch_message(job.notice_message_id)
        except discord.HTTPException:
            return False
        names = (f"dream-{job.id}-", f"SPOILER_dream-{job.id}-")
        if any(attachment.filename.startswith(names) for attachment in notice.attachments):
            log.info("job %s: its result was posted before the restart; recording it", job.id)
            await self.record(job.id, notice.id)
            return True
        return False


class Delivery:
    """Where a job's messages go: the interaction's own answer, or a reply in the channel."""

    def __init__(self, origin: Origin, previews: FilterMode = FilterMode.BLOCK,
                 current_mode: Callable[[], Awaitable[FilterMode]] | None = None) -> None:
        self.origin = origin
        # The channel's safety filter mode: "block" shows no preview, "spoiler" hides it behind one.
        self.previews = previews
        # Reads the channel's mode now (a coroutine function), checked before each preview.
        self._current_mode = current_mode
        self.message: discord.Message | None = None  # the reply posted for a button/reaction
        self._edit = asyncio.Lock()  # one edit at a time: a late notice must never cover the result
        self._last_edit = 0.0
        self._progress: Progress | None = None
        self._preview: bytes | None = None
        self._shown_progress: Progress | None = None
        self._shown_position: int | None = None
        self._shown_starting = False  # whether the notice says the engine is starting
        self._started: float | None = None
        self._first_step = 0
        self._shown_text: str | None = None  # the notice as last shown: an edit that changes nothing is not sent
        self.finished = False  # set with the outcome: no notice may be edited in after it

    async def show(self, content: str, view: discord.ui.View | None = None) -> discord.Message | None:
        """The queued notice (with its Cancel button); returns its message. Failing to show it must
        not stop the job."""
        self._shown_text = content
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
        if progress.loading:  # waiting for its model: the steps' clock has not started
            self._progress = progress
            return
        if self._started is None:  # the pace is measured from the first step reported
            self._started, self._first_step = time.monotonic(), progress.step
        self._progress = progress
        if progress.preview and self.previews is not FilterMode.BLOCK:
            self._preview = progress.preview

    async def keep_fresh(self, queue: JobQueue, ticket: Ticket, notes: tuple[str, ...]) -> None:
        """Until the job ends: while queued, its place and the estimated wait when they change; while
        running, a progress bar with the time left and a preview. At most one edit every EDIT_SECONDS (further apart for
        jobs far back in the queue), well within Discord's rate limits."""
        job_id = ticket.job.job_id
        while not ticket.result.done():
            await asyncio.sleep(EDIT_SECONDS)
            progress = self._progress
            if progress is not None:
                if progress == self._shown_progress:
                    continue
                self._shown_progress = progress
                if progress.loading:
                    await self._update(render.loading(job_id, progress.loading, progress.seconds), None)
                    continue
                await self._update(render.running(job_id, progress.step, progress.total, self._time_left(progress)),
                                   await self._allowed_preview())
                continue
            position, starting = queue.position(job_id), queue.starting()
            far_back = position >= 10 and time.monotonic() - self._last_edit < FAR_BACK_EDIT_SECONDS
            # The next job's notice counts down a cold start; the others change with their place, and
            # when the engine is ready (the start's line goes).
            unchanged = position == self._shown_position and (starting is not None) == self._shown_starting
            if (unchanged and not (position == 0 and starting)) or far_back:
                continue
            self._shown_position, self._shown_starting = position, starting is not None
            await self._update(render.queued(job_id, position, queue.estimate(position), notes, starting=starting),
                               None)

    def _time_left(self, progress: Progress) -> float | None:
        """Seconds left at the pace of the steps so far; None until a step has been timed."""
        steps = progress.step - self._first_step
        if self._started is None or steps <= 0:
            return None
        return (time.monotonic() - self._started) / steps * (progress.total - progress.step)

    async def _allowed_preview(self) -> bytes | None:
        """The latest preview, if the channel still shows flagged pictures now: a preview is drawn
        before the safety check, and the channel may have lost its age restriction meanwhile."""
        if self._preview is None or self.previews is FilterMode.BLOCK:
            return None
        if self._current_mode is not None:
            try:
                mode = await self._current_mode()
            except Exception:
                log.exception("could not read a channel's safety filter mode; no preview")
                mode = FilterMode.BLOCK
            if mode is FilterMode.BLOCK:
                self.previews, self._preview = FilterMode.BLOCK, None  # and none from now on
                return None
            self.previews = mode
        return self._preview

    async def _update(self, content: str, preview: bytes | None) -> None:
        name = "SPOILER_preview.jpg" if self.previews is FilterMode.SPOILER else "preview.jpg"
        files = [discord.File(io.BytesIO(preview), filename=name)] if preview else []
        async with self._edit:
            if self.finished or (content == self._shown_text and not files):
                return
            self._shown_text = content
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
        self, content: str, images: Sequence[tuple[str, bytes]] = (), view: discord.ui.View | None = None
    ) -> discord.Message | None:
        """Put the outcome in place of the queued notice. Interactions expire after 15 minutes; a
        job that took longer is posted in the channel instead, mentioning the member."""
        async with self._edit:
            self.finished = True
            return await self._finish(content, images, view)

    async def _finish(self, content: str, images: Sequence[tuple[str, bytes]], view: discord.ui.View | None
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
