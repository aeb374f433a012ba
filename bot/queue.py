"""The job queue: an asyncio queue in the bot that feeds the engine one job at a time.

The worker records each job's progress in the store (running, then done/filtered/failed) so the
history is right whatever happens to the Discord side afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bot.engine_client import EngineClient, EngineCrashed, EngineJobFailed, EngineUnavailable, ProgressCallback
from bot.store import Store
from dreambot.protocol import GenerateResult, Job

log = logging.getLogger(__name__)


@dataclass
class Ticket:
    """A queued job and the future its result arrives on."""

    job: Job
    on_progress: ProgressCallback | None = None
    result: asyncio.Future[GenerateResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class JobQueue:
    def __init__(self, store: Store, engine: EngineClient) -> None:
        self._store = store
        self._engine = engine
        self._queue: asyncio.Queue[Ticket] = asyncio.Queue()
        self._waiting: list[int] = []  # job ids in queue order, for positions
        self._running: int | None = None
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="job-queue-worker")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    def submit(self, job: Job, on_progress: ProgressCallback | None = None) -> Ticket:
        ticket = Ticket(job, on_progress)
        self._waiting.append(job.job_id)
        self._queue.put_nowait(ticket)
        return ticket

    def position(self, job_id: int) -> int:
        """How many jobs run before this one starts: 0 when it is next (or running)."""
        if job_id == self._running:
            return 0
        ahead = self._waiting.index(job_id) if job_id in self._waiting else 0
        return ahead + (self._running is not None)

    def __len__(self) -> int:
        return len(self._waiting) + (self._running is not None)

    async def _work(self) -> None:
        while True:
            ticket = await self._queue.get()
            job_id = ticket.job.job_id
            self._waiting.remove(job_id)
            self._running = job_id
            try:
                await self._run(ticket)
            except Exception as error:
                log.exception("job %s: unexpected failure in the queue worker", job_id)
                try:
                    await self._store.fail_job(job_id, f"internal error: {type(error).__name__}: {error}")
                except Exception:
                    log.exception("job %s: could not record the failure", job_id)
                if not ticket.result.done():
                    ticket.result.set_exception(RuntimeError("internal error"))
            finally:
                self._running = None

    async def _run(self, ticket: Ticket) -> None:
        job_id = ticket.job.job_id
        await self._store.mark_running(job_id)
        try:
            result = await self._engine.generate(ticket.job, ticket.on_progress)
        except (EngineCrashed, EngineJobFailed, EngineUnavailable) as error:
            log.error("job %s failed: %s", job_id, error)
            await self._store.fail_job(job_id, f"{type(error).__name__}: {error}")
            ticket.result.set_exception(error)
            ticket.result.exception()  # the cog may be gone (interaction expired); don't warn twice
            return
        await self._store.finish_job(job_id, result, flagged_shown=ticket.job.request.keep_flagged)
        ticket.result.set_result(result)
