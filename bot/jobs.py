"""The job runner: admit a member's request under the server's rules, record it, queue it, keep
its notice fresh and hand its outcome to the outbox. It also brings back what a previous run left
(queued jobs run again, made results are posted) and checks every job again as it starts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace

import discord

from bot import render
from bot.delivery import Delivery, Origin, Outbox, Someone
from bot.engine_client import EngineClient
from bot.images import ImageStore
from bot.moderation import BANNED, FilterMode, Moderation, Policy, PromptBlocked, Refused
from bot.modlog import ModLog
from bot.outcome import Failure
from bot.queue import JobQueue, JobRefused, Reservation
from bot.requests import stored_inputs
from bot.store import JobRow, Store
from bot.views import cancel_view
from bot.workers import WorkerHub
from dreambot.request import GenerateRequest, InvalidRequest, picture_seed
from dreambot.wire import GenerateResult, ImageResult, Job

log = logging.getLogger(__name__)

Spawn = Callable[..., asyncio.Task]


class JobRunner:
    def __init__(self, *, client: discord.Client, engine: EngineClient | WorkerHub, default_model: str, store: Store,
                 images: ImageStore, queue: JobQueue, moderation: Moderation, modlog: ModLog, outbox: Outbox,
                 spawn: Spawn) -> None:
        self._client = client
        self._engine = engine
        self._default_model = default_model
        self._store = store
        self._images = images
        self._queue = queue
        self._moderation = moderation
        self._modlog = modlog
        self._outbox = outbox
        self._spawn = spawn  # a background task that is kept and whose failure is logged
        self.posting: set[int] = set()  # jobs whose result is being posted (a shutdown waits for them)

    async def admit(self, origin: Origin, request: GenerateRequest) -> tuple[GenerateRequest, Policy]:
        """The server's moderation, before anything is recorded or queued: the request under the
        channel's safety policy, or `moderation.Refused` with the member's message."""
        try:
            classifier = self._engine.info.safety_checker if self._engine.info else None
            return await self._moderation.admit(origin.user.id, origin.guild_id, origin.channel, request, classifier)
        except PromptBlocked as refusal:
            log.info("a prompt by user %s was refused by the prompt filter of server %s", origin.user.id,
                     origin.guild_id)
            await self._modlog.post(origin.guild_id, render.prompt_refused(origin.user.id, origin.channel, request,
                                                                           refusal.term))
            raise

    async def run(self, origin: Origin, request: GenerateRequest, *, policy: Policy, action: str = "dream",
                  parent_job_id: int | None = None, parent_image: int | None = None, notes: tuple[str, ...] = (),
                  reservation: Reservation | None = None) -> None:
        """Record, queue and run an admitted `request`, then post its outcome. Raises QueueFull (before
        recording anything) when the queue does not take it now; never raises for engine failures.
        `reservation`: the member's place, if the caller already holds one (`JobQueue.reserve`)."""
        held = self._queue.reserve(origin.user.id) if reservation is None else nullcontext(reservation)
        with held as reservation:
            job_id, kept = await self.record(origin, request, policy=policy, action=action,
                                             parent_job_id=parent_job_id, parent_image=parent_image)
            # Ids and lengths only: members' words never go to the log (/forget could not erase them there).
            log.info("job %s (%s) queued for user %s: prompt of %d characters, negative of %d", job_id, action,
                     origin.user.id, len(request.prompt), len(request.negative_prompt))
            if not kept:
                notes = (*notes, "Your picture could not be stored, so this job cannot be re-rolled later.")
            await self.carry_out(origin, job_id, request, policy=policy, reservation=reservation, notes=notes,
                                 origin_text=render.origin(action, parent_job_id, parent_image))

    async def record(self, origin: Origin, request: GenerateRequest, *, policy: Policy, action: str,
                     parent_job_id: int | None, parent_image: int | None) -> tuple[int, bool]:
        """The job's row, and its input pictures on disk (a re-roll runs it again, after a restart too).
        Returns the job id and whether the pictures could be kept (a full disk must not stop the job)."""
        job_id = await self._store.create_job(
            request,
            user_id=origin.user.id,
            guild_id=origin.guild_id,
            channel_id=getattr(origin.channel, "id", None),
            interaction_id=origin.interaction.id if origin.interaction else None,
            model=request.model or (self._engine.info.model if self._engine.info else self._default_model),
            action=action,
            parent_job_id=parent_job_id,
            parent_image=parent_image,
            nsfw_mode=policy.mode,
        )
        kept = True
        for name, data in (("image", request.image), ("mask", request.mask)):
            if data is not None:
                try:
                    await self._images.save(job_id, name, data)
                except OSError:
                    log.exception("job %s: could not store its input %s in %s", job_id, name, self._images.folder)
                    kept = False
        return job_id, kept

    async def carry_out(self, origin: Origin, job_id: int, request: GenerateRequest, *, policy: Policy,
                        reservation: Reservation | None = None, origin_text: str = "", notes: tuple[str, ...] = (),
                        restored: bool = False) -> None:
        """Queue a recorded job, keep its notice up to date (place in the queue, then progress), and
        post its outcome."""
        # A preview is drawn before the safety check: only where flagged images may be shown at all,
        # and the channel's mode is read again before each one (it may lose its age restriction).
        delivery = Delivery(origin, previews=policy.mode, current_mode=lambda: self._outbox.mode_now(origin))
        ticket = self._queue.submit(Job(job_id, request), origin.user.id, delivery.progressed,
                                    reservation=reservation, check=False)
        position = self._queue.position(job_id)
        text = render.queued(job_id, position, self._queue.estimate(position), notes, restored=restored,
                             starting=self._queue.starting())
        notice = await delivery.show(text, cancel_view(job_id))
        if notice is not None:
            await self._store.set_notice(job_id, notice.id)
            if origin.reply_to is None:  # if the interaction expires first, the result replies to its notice
                origin.reply_to = notice
        pump = asyncio.create_task(delivery.keep_fresh(self._queue, ticket, notes), name=f"job-{job_id}-notice")
        try:
            outcome = await ticket.result
            if not isinstance(outcome, Failure):
                self.posting.add(job_id)  # at once: a shutdown waits for this result to be posted
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if isinstance(outcome, Failure):
            await self._outbox.fail(delivery, origin, job_id, outcome)
            return
        try:
            await self._outbox.deliver(delivery, origin, job_id, request, outcome, policy, origin_text=origin_text,
                                       notes=notes)
        finally:
            self.posting.discard(job_id)

    async def gate(self, job: Job) -> Job:
        """The server's rules again when a job starts (it may have waited long, or survived a
        restart): a barred member's job does not run, and a channel that stopped showing flagged
        pictures gets none. Raises JobRefused with the member's message."""
        row = await self._store.get_job(job.job_id)
        if row is None or row.guild_id is None:
            return job  # direct messages are always strictest
        if await self._store.get_ban(row.guild_id, row.user_id) is not None:
            raise JobRefused(BANNED, public="This job was stopped by this server's moderators.")
        request = job.request
        channel = self._client.get_channel(row.channel_id) if row.channel_id else None
        if channel is None and row.channel_id:
            try:  # a restored job may start before the gateway has told us of its channel
                channel = await self._client.fetch_channel(row.channel_id)
            except discord.HTTPException:
                channel = None
        try:  # a LoRA or embedding turned off, or a model no longer allowed in the channel, since it was queued
            await self._moderation.check_adapters(request, row.guild_id)
            # A channel Discord no longer shows us is still known by its id (a thread's parent is not).
            await self._moderation.check_model(request, row.guild_id,
                                               channel or (row.channel_id and discord.Object(id=row.channel_id)))
        except Refused as refusal:
            raise JobRefused(str(refusal), public="This job was stopped by this server's moderators.") from None
        except InvalidRequest:
            pass  # a LoRA removed since: the engine tells the member
        if request.keep_flagged or request.source_flagged:
            if await self._moderation.current_mode(row.guild_id, channel) is FilterMode.BLOCK:
                if request.source_flagged:
                    raise JobRefused("The picture this job starts from was flagged by the safety filter, and this "
                                     "channel no longer shows flagged pictures.")
                request = replace(request, keep_flagged=False)
                await self._store.set_policy(job.job_id, FilterMode.BLOCK)
        return replace(job, request=request)

    # -- what a previous run left ----------------------------------------------------------------

    async def keep_collected(self, job_id: int, result: GenerateResult) -> None:
        """A result a worker kept for a job of the previous run: recorded with its pictures, so that
        `restore` posts it like any result that run made and did not deliver."""
        for index, image in enumerate(result.images):
            if image.data:  # a withheld picture never left the worker
                await self._images.save(job_id, f"result-{index}.{image.format}", image.data)
        await self._queue.collected(job_id, result)

    async def restore(self) -> int:
        """Queue again the jobs a previous run left queued or running, and post the results it made but
        did not deliver; in their channels, mentioning the member (the interactions are gone). Returns
        how many jobs were queued again."""
        restored = 0
        for job in await self._store.undelivered_jobs():
            if job.channel_id is None:  # nowhere to post it
                await self._outbox.record(job.id, None)
                continue
            result = await self.stored_result(job)
            if result is None:  # killed before its pictures were kept: the same seeds make them again
                log.info("job %s: its result was made but not kept; it runs again", job.id)
                await self._queue.restored(job.id)
                continue
            self._spawn(self.post_restored(job, result), name=f"undelivered-job-{job.id}")
            restored += 1
        if restored:
            log.info("posting %d result(s) made by the last run but not delivered", restored)
        queued = 0
        for job in await self._store.unfinished_jobs():
            if job.channel_id is None:
                await self._queue.abandon(job.id, "the bot stopped before this job finished")
                continue
            origin = self.restored_origin(job)
            request = await stored_inputs(self._images, job)
            if request is None:
                # Its picture could not be kept (a full disk): it cannot run again; say so where it was asked.
                await self._queue.abandon(job.id, "its input picture was not stored, so it could not run after a "
                                                  "restart")
                self._spawn(Delivery(origin).finish(render.input_lost(job.id)), name=f"lost-input-{job.id}")
                continue
            policy = restored_policy(job)
            await self._queue.restored(job.id)
            self._spawn(self.carry_out(origin, job.id, policy.apply(request), policy=policy, restored=True,
                                       origin_text=render.origin(job.action, job.parent_job_id, job.parent_image)),
                        name=f"restored-job-{job.id}")
            queued += 1
        return queued

    def restored_origin(self, job: JobRow) -> Origin:
        """Where a job of a previous run answers: a reply to its notice in its channel. Before the
        gateway connects no channel is known: a partial one, resolved again at posting."""
        assert job.channel_id is not None
        channel = self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        notice = channel.get_partial_message(job.notice_message_id) if job.notice_message_id else None
        return Origin(user=Someone(job.user_id), channel=channel, guild_id=job.guild_id, reply_to=notice)

    async def stored_result(self, job: JobRow) -> GenerateResult | None:
        """The result of an undelivered job, from its row and the pictures kept on disk; None if a
        picture the engine sent is missing."""
        flags = job.nsfw_flags or []
        scores = job.nsfw_scores or [0.0] * len(flags)
        request = job.request
        assert request.seed is not None
        fmt = request.mode.file_format
        images = []
        for index, flagged in enumerate(flags):
            data = await self._images.load(job.id, f"result-{index}.{fmt}")
            if data is None and not (flagged and job.nsfw_mode in (None, FilterMode.BLOCK)):
                return None  # the engine sent this picture (it may be shown), and it was not kept
            images.append(ImageResult(data=data or b"", seed=picture_seed(request.seed, index),
                                      nsfw_content_detected=flagged, nsfw_score=scores[index], format=fmt))
        if not images:
            return None
        return GenerateResult(job_id=job.id, images=tuple(images), seed=request.seed, width=job.width or 0,
                              height=job.height or 0, model=job.model or "",
                              timings={"total": job.engine_seconds or 0}, source_score=job.source_score)

    async def post_restored(self, job: JobRow, result: GenerateResult) -> None:
        origin = self.restored_origin(job)
        policy = restored_policy(job)
        self.posting.add(job.id)
        try:
            if await self._outbox.already_posted(origin, job):
                return
            await self._outbox.deliver(Delivery(origin), origin, job.id, policy.apply(job.request), result, policy,
                                       origin_text=render.origin(job.action, job.parent_job_id, job.parent_image))
        finally:
            self.posting.discard(job.id)


def restored_policy(job: JobRow) -> Policy:
    """The safety policy a job was recorded under (a restored job runs and posts under it; the gate
    and the outbox read the channel's mode again)."""
    return Policy(FilterMode(job.nsfw_mode or FilterMode.BLOCK), job.request.nsfw_threshold, job.request.nsfw_scale)

