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
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import discord

from bot import fingerprint, render
from bot.engine_client import EngineCrashed, EngineJobFailed, EngineTimedOut, EngineUnavailable, JobCancelled
from bot.moderation import BANNED, Policy, PromptBlocked, Refused, post_modlog
from bot.queue import JobRefused
from dreambot.request import GenerateRequest
from dreambot.wire import GenerateResult, ImageResult, Job, Progress

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

# A result that fails to post for another reason than Discord's answer is tried again after these
# pauses; then it waits for the next start (it stays `delivering`).
POST_RETRY_SECONDS = (5.0, 30.0, None)
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


def flagged_source(job, index: int) -> bool:
    """Whether picture `index` of `job` was flagged: by the classifier, or because it was made from
    a flagged picture (the engine flags every picture of a job with `source_flagged`), so the flag
    travels down a whole chain of derived jobs."""
    return bool(job.source_flagged or (job.nsfw_flags and index < len(job.nsfw_flags) and job.nsfw_flags[index]))


def check_source(job, index: int, policy: Policy) -> None:
    """A picture the safety filter flagged stays where flagged pictures may be shown: starting a
    job from it in any other channel is refused (the new picture could carry it over)."""
    if policy.mode == "block" and flagged_source(job, index):
        raise Refused(f"Picture {index + 1} of job {job.id} was flagged by the safety filter, so it can only be "
                      "used in an age-restricted channel whose filter shows flagged images.")


def from_source(request: GenerateRequest, job, index: int) -> GenerateRequest:
    """A request that starts from picture `index` of `job` carries that picture's flag."""
    return replace(request, source_flagged=request.source_flagged or flagged_source(job, index))


async def check_upload(bot: DreamBot, request: GenerateRequest, policy: Policy, guild_id: int | None
                       ) -> GenerateRequest:
    """A member's own picture that is a flagged result brought back (re-encoded, resized, cropped
    a little: its fingerprint is within a few bits) counts as flagged: refused where flagged
    pictures are not shown, and carried as flagged where they are. The engine classifies every
    input as well; this catches a picture flagged only because of where it came from. Per server:
    each server flags under its own threshold (and a direct message never shows a flagged one)."""
    if request.image is None or guild_id is None:
        return request
    brought = await asyncio.to_thread(fingerprint.variants, request.image)
    match = next((job_id for job_id, known in await bot.store.flagged_fingerprints(guild_id)
                  if fingerprint.matches(brought, known)), None)
    if match is None:
        return request
    log.info("an uploaded picture matches flagged job %s", match)
    if policy.mode == "block":
        raise Refused("That picture was flagged by the safety filter, so it can only be used in an age-restricted "
                      "channel whose filter shows flagged images.")
    return replace(request, source_flagged=True)


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
    reservation=None,
) -> None:
    """Record, queue and run an admitted `request`, then post its outcome. Raises QueueFull (before
    recording anything) when the queue does not take it now; never raises for engine failures.
    `reservation`: the member's place, if the caller already holds one (`JobQueue.reserve`)."""
    with bot.queue.reserve(origin.user.id) if reservation is None else nullcontext(reservation) as reservation:
        job_id, kept = await record(bot, origin, request, policy=policy, action=action,
                                    parent_job_id=parent_job_id, parent_image=parent_image)
        # Ids and lengths only: members' words never go to the log (/forget could not erase them there).
        log.info("job %s (%s) queued for user %s: prompt of %d characters, negative of %d", job_id, action,
                 origin.user.id, len(request.prompt), len(request.negative_prompt))
        if not kept:
            notes = (*notes, "Your picture could not be stored, so this job cannot be re-rolled later.")
        await carry_out(bot, origin, job_id, request, policy=policy, reservation=reservation, notes=notes,
                        origin_text=render.origin(action, parent_job_id, parent_image))


async def record(bot: DreamBot, origin: Origin, request: GenerateRequest, *, policy: Policy, action: str,
                 parent_job_id: int | None, parent_image: int | None) -> tuple[int, bool]:
    """The job's row, and its input pictures on disk (a re-roll runs it again, after a restart too).
    Returns the job id and whether the pictures could be kept (a full disk must not stop the job)."""
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
    kept = True
    for name, data in (("image", request.image), ("mask", request.mask)):
        if data is not None:
            try:
                await bot.images.save(job_id, name, data)
            except OSError:
                log.exception("job %s: could not store its input %s in %s", job_id, name, bot.images.folder)
                kept = False
    return job_id, kept


async def restore(bot: DreamBot) -> int:
    """Queue again the jobs a previous run left queued or running, and post the results it made but
    did not deliver; in their channels, mentioning the member (the interactions are gone). Returns
    how many jobs were queued again."""
    restored = 0
    for job in await bot.store.undelivered_jobs():
        if job.channel_id is None:  # nowhere to post it
            await bot.store.delivered(job.id, None)
            continue
        result = await stored_result(bot, job)
        if result is None:  # killed before its pictures were kept: the same seeds make them again
            log.info("job %s: its result was made but not kept; it runs again", job.id)
            await bot.store.requeue_job(job.id)
            continue
        origin = restored_origin(bot, job)
        policy = Policy(job.nsfw_mode or "block", job.nsfw_threshold)
        request = policy.apply(job.request())
        bot.create_task(post_restored(bot, origin, job, request, result, policy), name=f"undelivered-job-{job.id}")
        restored += 1
    if restored:
        log.info("posting %d result(s) made by the last run but not delivered", restored)
    queued = 0
    for job in await bot.store.unfinished_jobs():
        image, mask = await bot.images.load(job.id, "image"), await bot.images.load(job.id, "mask")
        if job.channel_id is None:
            await bot.store.fail_job(job.id, "the bot stopped before this job finished")
            continue
        if (job.mode not in ("txt2img", "interpolate") and image is None) or (job.mode == "inpaint" and mask is None):
            # Its picture could not be kept (a full disk): it cannot run again; say so where it was asked.
            await bot.store.fail_job(job.id, "its input picture was not stored, so it could not run after a restart")
            origin = restored_origin(bot, job)
            bot.create_task(Delivery(origin).finish(render.input_lost(job.id)), name=f"lost-input-{job.id}")
            continue
        origin = restored_origin(bot, job)
        policy = Policy(job.nsfw_mode or "block", job.nsfw_threshold)
        request = policy.apply(job.request(image=image, mask=mask))
        await bot.store.requeue_job(job.id)
        bot.create_task(carry_out(bot, origin, job.id, request, policy=policy, restored=True,
                                  origin_text=render.origin(job.action, job.parent_job_id, job.parent_image)),
                        name=f"restored-job-{job.id}")
        queued += 1
    return queued


def restored_origin(bot: DreamBot, job) -> Origin:
    """Where a job of a previous run answers: a reply to its notice in its channel. Before the
    gateway connects no channel is known: a partial one, resolved again at posting."""
    channel = bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
    notice = channel.get_partial_message(job.notice_message_id) if job.notice_message_id else None
    return Origin(user=Someone(job.user_id), channel=channel, guild_id=job.guild_id, reply_to=notice)


async def stored_result(bot: DreamBot, job) -> GenerateResult | None:
    """The result of an undelivered job, from its row and the pictures kept on disk; None if a
    picture the engine sent is missing."""
    flags = job.nsfw_flags or []
    scores = job.nsfw_scores or [0.0] * len(flags)
    fmt = "gif" if job.mode == "interpolate" else "png"
    images = []
    for index, flagged in enumerate(flags):
        data = await bot.images.load(job.id, f"result-{index}.{fmt}")
        if data is None and not (flagged and job.nsfw_mode in (None, "block")):
            return None  # the engine sent this picture (it may be shown), and it was not kept
        images.append(ImageResult(data=data or b"", seed=job.seed + index, nsfw_content_detected=flagged,
                                  nsfw_score=scores[index], format=fmt))
    if not images:
        return None
    return GenerateResult(job_id=job.id, images=tuple(images), seed=job.seed, width=job.width or 0,
                          height=job.height or 0, model=job.model or "", timings={"total": job.engine_seconds or 0},
                          source_score=job.source_score)


async def post_restored(bot: DreamBot, origin: Origin, job, request: GenerateRequest, result: GenerateResult,
                        policy: Policy) -> None:
    bot.posting.add(job.id)
    try:
        if await already_posted(bot, origin, job):
            return
        await deliver(bot, Delivery(origin), origin, job.id, request, result, policy,
                      origin_text=render.origin(job.action, job.parent_job_id, job.parent_image))
    finally:
        bot.posting.discard(job.id)


async def already_posted(bot: DreamBot, origin: Origin, job) -> bool:
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
        await record_delivery(bot, job.id, notice.id)
        return True
    return False


async def gate(bot: DreamBot, job: Job) -> Job:
    """The server's rules again when a job starts (it may have waited long, or survived a
    restart): a barred member's job does not run, and a channel that stopped showing flagged
    pictures gets none. Raises JobRefused with the member's message."""
    row = await bot.store.get_job(job.job_id)
    if row is None or row.guild_id is None:
        return job  # direct messages are always strictest
    if await bot.store.get_ban(row.guild_id, row.user_id) is not None:
        raise JobRefused(BANNED, public="This job was stopped by this server's moderators.")
    request = job.request
    if request.keep_flagged or request.source_flagged:
        channel = bot.get_channel(row.channel_id) if row.channel_id else None
        if channel is None and row.channel_id:
            try:  # a restored job may start before the gateway has told us of its channel
                channel = await bot.fetch_channel(row.channel_id)
            except discord.HTTPException:
                channel = None
        if await bot.moderation.current_mode(row.guild_id, channel) == "block":
            if request.source_flagged:
                raise JobRefused("The picture this job starts from was flagged by the safety filter, and this "
                                 "channel no longer shows flagged pictures.")
            request = replace(request, keep_flagged=False)
            await bot.store.set_policy(job.job_id, "block")
    return replace(job, request=request)


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
    async def mode_now() -> str:
        return await bot.moderation.current_mode(origin.guild_id, await current_channel(bot, origin))

    # A preview is drawn before the safety check: only where flagged images may be shown at all,
    # and the channel's mode is read again before each one (it may lose its age restriction).
    delivery = Delivery(origin, previews=policy.mode, current_mode=mode_now)
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
    except JobRefused as refusal:
        # The public notice says no more than the channel may know; the member hears why privately.
        await delivery.finish(f"🚫 {refusal.public or refusal} (job {job_id})")
        if refusal.public and origin.interaction is not None:
            try:
                await origin.interaction.followup.send(f"🚫 {refusal} (job {job_id})", ephemeral=True)
            except discord.HTTPException:
                pass
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
        await deliver(bot, delivery, origin, job_id, request, result, policy, origin_text=origin_text, notes=notes)
    finally:
        bot.posting.discard(job_id)


async def current_channel(bot: DreamBot, origin: Origin):
    """The job's channel as Discord has it now (age restriction included): from the gateway's
    cache, or asked for (a restored job's, before the gateway has told us of it)."""
    channel = origin.channel
    if channel is None:
        return None
    known = bot.get_channel(channel.id)
    if known is None and isinstance(channel, discord.PartialMessageable) and channel.guild_id is not None:
        try:
            known = await bot.fetch_channel(channel.id)
        except discord.HTTPException:
            known = None
    return known or channel


async def deliver(bot: DreamBot, delivery: Delivery, origin: Origin, job_id: int, request: GenerateRequest,
                  result: GenerateResult, policy: Policy, *, origin_text: str = "", notes: tuple[str, ...] = ()
                  ) -> None:
    """Post a finished job's result under the channel's policy as it is now, and record it as
    delivered. The job stays `delivering` (its pictures on disk) until the post is confirmed, so a
    crash in between is delivered at the next start."""
    origin.channel = await current_channel(bot, origin)
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
        await record_delivery(bot, job_id, None, filtered=result.all_flagged)
        return
    kept, files = True, []
    for index, image in shown:  # all before posting: a restart can post them if we die on the way
        if image.nsfw_content_detected and origin.guild_id is not None:  # known again if brought back
            try:
                print_ = await asyncio.to_thread(fingerprint.of, image.data)
                if fingerprint.informative(print_):
                    await bot.store.add_flagged_picture(job_id, index, origin.guild_id, print_)
            except Exception:
                log.exception("job %s: could not remember flagged picture %d", job_id, index + 1)
        try:
            await bot.images.save(job_id, f"result-{index}.{image.format}", image.data)
        except OSError:
            log.exception("job %s: could not store picture %d in %s", job_id, index + 1, bot.images.folder)
            kept = False
        name = f"dream-{job_id}-{image.seed}.{image.format}"
        # Discord blurs an attachment whose name starts with SPOILER_ until it is clicked.
        spoiler = image.nsfw_content_detected and policy.mode == "spoiler"
        files.append(("SPOILER_" + name if spoiler else name, image.data))
    if not kept:
        notes = (*notes, "This picture could not be stored, so Vary, Upscale and the arrows cannot start from it.")
    text = render.summary(job_id, request, result, origin=origin_text, notes=notes, nsfw_mode=policy.mode)
    view = result_view(job_id, request, result, policy.mode, reusable=kept)
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
    await record_delivery(bot, job_id, message.id if message is not None else None)


async def record_delivery(bot: DreamBot, job_id: int, message_id: int | None, *, filtered: bool = False) -> None:
    """A posted result stays posted: failing to record it is logged, never shown in its place."""
    try:
        await bot.store.delivered(job_id, message_id, filtered=filtered)
    except Exception:
        log.exception("job %s: delivered as message %s, but that could not be recorded", job_id, message_id)


def cancel_view(job_id: int) -> discord.ui.View:
    from bot.cogs.results import ResultButton  # the cog owns the buttons' behaviour

    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton("cancel", job_id))
    return view


def shown_under(image, nsfw_mode: str) -> bool:
    """Whether an image is posted under the channel's safety filter mode (and, to be sure, whether
    the engine sent its bytes: it keeps a flagged image's unless the request allowed it)."""
    return bool(image.data) and (not image.nsfw_content_detected or nsfw_mode != "block")


def result_view(job_id: int, request: GenerateRequest, result: GenerateResult, nsfw_mode: str = "block", *,
                reusable: bool = True) -> discord.ui.View:
    """Re-roll and Delete for every result; Vary and Upscale for each picture shown (V1-V4 and
    U1-U4 when there are several, as members know them from Midjourney); a single picture also
    gets ⬅️ ➡️ 🔼 🔽 to extend it that way. The buttons carry the job
    id, so they work for as long as the job is in the history, across restarts. Pictures that
    could not be stored (`reusable` False) get only Re-roll and Delete."""
    from bot.cogs.results import ResultButton  # the cog owns the buttons' behaviour

    view = discord.ui.View(timeout=None)
    shown = [index for index, image in enumerate(result.images) if shown_under(image, nsfw_mode)]
    if request.mode == "interpolate" or not reusable:
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

    def __init__(self, origin: Origin, previews: str = "block", current_mode=None) -> None:
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
                await self._update(render.running(job_id, progress.step, progress.total, elapsed),
                                   await self._allowed_preview())
                continue
            position = queue.position(job_id)
            far_back = position >= 10 and time.monotonic() - self._last_edit < FAR_BACK_EDIT_SECONDS
            if position == self._shown_position or far_back:
                continue
            self._shown_position = position
            await self._update(render.queued(job_id, position, queue.estimate(position), notes), None)

    async def _allowed_preview(self) -> bytes | None:
        """The latest preview, if the channel still shows flagged pictures now: a preview is drawn
        before the safety check, and the channel may have lost its age restriction meanwhile."""
        if self._preview is None or self.previews == "block":
            return None
        if self._current_mode is not None:
            try:
                mode = await self._current_mode()
            except Exception:
                log.exception("could not read a channel's safety filter mode; no preview")
                mode = "block"
            if mode == "block":
                self.previews, self._preview = "block", None  # and none from now on
                return None
            self.previews = mode
        return self._preview

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
