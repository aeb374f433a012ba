"""The job queue: fair across members, durable, and feeding one or more engine processes.

`FairQueue` is the bookkeeping (no asyncio): round robin across members, so a member with ten
jobs queued delays a member with one by at most one job; a cap per member (queued + running), a
cap on the whole queue, and an optional cooldown. `JobQueue` runs it: one worker per engine takes
the next job (and, for text to image, compatible ones from the members next in turn, as one
batch), records each step in the store, retries a job once if its engine crashed, and on shutdown
leaves what did not run in the store as queued, where the next start finds it. It is the one
module that moves a job's status, from queued to delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from bot.engine_client import EngineClient, ProgressCallback
from bot.outcome import Failure, FailureKind, Outcome
from bot.render import NO_WORKER, duration
from bot.store import Store
from bot.workers import RemoteWorker, WorkerHub
from dreambot.wire import GenerateResult, Job, Progress

log = logging.getLogger(__name__)

# How long a job takes before any has been measured, for the first estimates of the wait.
FIRST_ESTIMATE_SECONDS = 15.0
# A job whose engine crashed runs once more; a second crash fails it.
ATTEMPTS = 2
# An engine here is sent its next call when the one in hand has about this many seconds of steps
# left (`Lead`): time enough for the start-of-job gate and the pipe, so the engine never waits for
# the bot between two jobs, while the gate still checks the next job only just before it starts.
# Twice the engine's PROGRESS_SECONDS, so that a step report always comes inside it.
LEAD_SECONDS = 0.5


class QueueFull(Exception):
    """A job the queue does not take now; the message says why and when to try again."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobRefused(Exception):
    """The server's rules, checked again when the job starts, do not let it run (a ban, say); the
    message is for the member, `public` (if given) for the channel where the notice is."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public


# Checks a job as it starts: returns it (its request adjusted to the rules now) or raises JobRefused.
Gate = Callable[[Job], Awaitable[Job]]


class FairQueue:
    """Round robin across members. Members take turns in the order they first queued; each turn
    runs the oldest job of that member.

    A worker may `prefer` some jobs (those of the model its engine holds, so that it need not load
    another): it may then take a member's turn out of order, but never so that another waiting
    member sees anyone served twice since that member's own last turn. So no job waits for more
    than one job of each other member, as in plain round robin, and the switches between models
    saved are the gain. The jobs of a batch (`take`) follow the same rule. A job retried after its
    engine crashed goes first (`submit(front=True)`): it was already on its way when it failed."""

    def __init__(self, *, max_per_member: int = 3, max_queued: int = 100, cooldown_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_per_member = max_per_member
        self.max_queued = max_queued
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._turns: OrderedDict[int, deque[int]] = OrderedDict()  # member -> their queued jobs, in turn order
        self._member: dict[int, int] = {}  # job -> member, queued or running
        self._running: set[int] = set()
        self._last_submit: dict[int, float] = {}
        # Waiting member -> the members served since that member's last turn (or since it came).
        self._passed: dict[int, set[int]] = {}
        # Places held for jobs being recorded (`JobQueue.reserve`), so that a burst of commands
        # from one member cannot all pass the check before the first is queued.
        self.reserved: Counter[int] = Counter()

    def check(self, member_id: int, *, estimate: float = FIRST_ESTIMATE_SECONDS) -> None:
        """Raise QueueFull if `member_id` may not queue a job now. `estimate`: seconds per job."""
        if self.cooldown_seconds and member_id in self._last_submit:
            wait = self._last_submit[member_id] + self.cooldown_seconds - self._clock()
            if wait > 0:
                raise QueueFull(f"Please wait {duration(wait)} before your next job (this server's cooldown).", wait)
        mine = sum(1 for member in self._member.values() if member == member_id) + self.reserved[member_id]
        if mine >= self.max_per_member:
            jobs = "1 job" if mine == 1 else f"{mine} jobs"
            raise QueueFull(f"You already have {jobs} queued or running, the most allowed; try again when "
                            f"one has finished (in about {duration(estimate)}).", estimate)
        if self.queued_count >= self.max_queued:
            held = "1 job" if self.max_queued == 1 else f"{self.max_queued} jobs"
            raise QueueFull(f"The queue is full: it holds {held} at most; try again in about {duration(estimate)}.",
                            estimate)

    def submit(self, job_id: int, member_id: int, *, front: bool = False, check: bool = True) -> None:
        """Queue a job. `front`: it runs next in its member's turn (a retried job). `check`: False
        for a job already checked (`check`), retried, or restored at start-up."""
        if job_id in self._member:
            raise ValueError(f"job {job_id} is already queued or running")
        if check:
            self.check(member_id)
        if not front:
            self._last_submit[member_id] = self._clock()
        if member_id not in self._turns:
            self._passed[member_id] = set()
        jobs = self._turns.setdefault(member_id, deque())
        if front:
            jobs.appendleft(job_id)
            self._turns.move_to_end(member_id, last=False)
        else:
            jobs.append(job_id)
        self._member[job_id] = member_id

    def submitted(self, member_id: int) -> float:
        """The member's job was accepted now (the cooldown counts from here); returns that time."""
        self._last_submit[member_id] = now = self._clock()
        return now

    def last_submit(self, member_id: int) -> float | None:
        return self._last_submit.get(member_id)

    def unsubmitted(self, member_id: int, before: float | None, at: float) -> None:
        """The job `submitted` accepted at `at` was not queued after all: the cooldown counts from
        the member's job before it (unless another job of theirs came since)."""
        if self._last_submit.get(member_id) == at:
            if before is None:
                self._last_submit.pop(member_id, None)
            else:
                self._last_submit[member_id] = before

    def next(self, prefer: Callable[[int], bool] | None = None) -> int | None:
        """The next job in fair order, now running; None if nothing is queued. With `prefer`, the
        first member whose turn may come now (`eligible`) and whose oldest job it prefers goes first."""
        if not self._turns:
            return None
        member_id = next(iter(self._turns))
        if prefer is not None:
            member_id = next((m for m in self.eligible() if prefer(self._turns[m][0])), member_id)
        job_id = self._turns[member_id].popleft()
        self._pass_turn(member_id)
        self._running.add(job_id)
        return job_id

    def eligible(self) -> list[int]:
        """The waiting members, in turn order, whose turn may come now without any other waiting
        member seeing someone served twice since its own last turn. The first in turn order always may."""
        return [member for member in self._turns
                if not any(member in passed for other, passed in self._passed.items() if other != member)]

    def take(self, accept: Callable[[int], bool], limit: int) -> list[int]:
        """Up to `limit` more queued jobs that `accept` approves, now running: the rest of a batch. Each
        is the oldest job of a member whose turn may come now (`eligible`), as `next` would take it, so
        a batch never serves a member twice while another waits."""
        taken: list[int] = []
        while len(taken) < limit:
            member_id = next((m for m in self.eligible() if accept(self._turns[m][0])), None)
            if member_id is None:
                break
            job_id = self._turns[member_id].popleft()
            self._pass_turn(member_id)
            self._running.add(job_id)
            taken.append(job_id)
        return taken

    def done(self, job_id: int) -> None:
        """A running job finished (whatever the outcome)."""
        self._running.discard(job_id)
        self._member.pop(job_id, None)

    def cancel(self, job_id: int) -> bool:
        """Remove a queued job; False if it is not queued (running, or unknown)."""
        member_id = self._member.get(job_id)
        if member_id is None or job_id in self._running:
            return False
        self._turns[member_id].remove(job_id)
        if not self._turns[member_id]:
            del self._turns[member_id]
            self._passed.pop(member_id, None)
        del self._member[job_id]
        return True

    def order(self) -> list[int]:
        """Every queued job in the order they will start."""
        rounds = [list(jobs) for jobs in self._turns.values()]
        return [jobs[i] for i in range(max(map(len, rounds), default=0)) for jobs in rounds if i < len(jobs)]

    def position(self, job_id: int) -> int:
        """How many queued jobs start before this one (0: it is next, or running)."""
        order = self.order()
        return order.index(job_id) if job_id in order else 0

    def is_running(self, job_id: int) -> bool:
        return job_id in self._running

    def member_of(self, job_id: int) -> int | None:
        return self._member.get(job_id)

    @property
    def queued_count(self) -> int:
        return len(self._member) - len(self._running) + sum(self.reserved.values())

    @property
    def running(self) -> list[int]:
        return sorted(self._running)

    def __len__(self) -> int:
        return len(self._member)

    def _pass_turn(self, member_id: int) -> None:
        """`member_id` was served: it goes to the end of the turn order, and every other waiting
        member has seen it served once more."""
        for other, passed in self._passed.items():
            if other != member_id:
                passed.add(member_id)
        if self._turns[member_id]:
            self._turns.move_to_end(member_id)
            self._passed[member_id] = set()
        else:
            del self._turns[member_id]
            self._passed.pop(member_id, None)


@dataclass
class Ticket:
    """A queued job and the future its result arrives on."""

    job: Job
    member_id: int
    on_progress: ProgressCallback | None = None
    result: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    attempts: int = 0
    cancelled_by: int | None = None
    sent: bool = False  # handed to an engine (a Cancel must then go to the engine)
    step: tuple[int, int] | None = None  # the latest (step, total) the engine reported


class Lead:
    """Tells when an engine's call is about to end, from its jobs' progress: `event` is set once every
    job of it (`expect`) has about LEAD_SECONDS of steps left, at the pace of its steps so far, or has
    made its last step (its decoding, safety check and encoding follow). `JobQueue._serve` then
    starts the engine's next call, which the engine runs as soon as this one's pictures are made.
    A call that `expect`s nothing sets it only when it ends."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._seen: dict[int, tuple[float, int]] = {}  # job -> (when, step) of its first step reported
        self._far: set[int] = set()  # the jobs expected that are not near their end yet

    def expect(self, job_ids: list[int]) -> None:
        self._far = set(job_ids)

    def progressed(self, progress: Progress) -> None:
        if progress.job_id not in self._far or progress.loading or not progress.total:
            return
        now = time.monotonic()
        when, step = self._seen.setdefault(progress.job_id, (now, progress.step))
        left = progress.total - progress.step
        pace = (now - when) / (progress.step - step) if progress.step > step else None
        if left <= 0 or (pace is not None and left * pace <= LEAD_SECONDS):
            self._far.discard(progress.job_id)
            if not self._far:
                self.event.set()


@dataclass
class Reservation:
    member_id: int
    taken: bool = False


class QueueClosed(QueueFull):
    """The bot is shutting down."""


Engine = EngineClient | RemoteWorker


class JobQueue:
    """`engines`: the bot's own engine processes, one worker task each; `hub`: workers on other
    hosts (NATS_URL), each served when it asks for work."""

    def __init__(self, store: Store, engines: list[EngineClient] | EngineClient, *, max_per_member: int = 3,
                 max_queued: int = 100, cooldown_seconds: float = 0.0, max_batch: int = 1,
                 gate: Gate | None = None, hub: WorkerHub | None = None) -> None:
        self._store = store
        self.gate = gate
        self.engines = engines if isinstance(engines, list) else [engines]
        self.hub = hub
        self._runs: set[asyncio.Task] = set()  # calls in hand
        self.fair = FairQueue(max_per_member=max_per_member, max_queued=max_queued, cooldown_seconds=cooldown_seconds)
        self.max_batch = max_batch
        self._tickets: dict[int, Ticket] = {}
        self._work = asyncio.Event()
        self._workers: list[asyncio.Task] = []
        self._accepting = True
        self._seconds_per_job: float | None = None  # a running average, for estimates

    # -- members' side ---------------------------------------------------------------------------

    def check(self, member_id: int) -> None:
        """Raise QueueFull (or QueueClosed) if this member's job would be refused now."""
        if not self._accepting:
            raise QueueClosed("Dreambot is restarting; please try again in a minute.")
        self.fair.check(member_id, estimate=self.estimate(1))

    @contextmanager
    def reserve(self, member_id: int):
        """Check that the member may queue a job and hold its place while the job is recorded;
        `submit(..., reservation=...)` takes the place. Raises QueueFull (or QueueClosed)."""
        self.check(member_id)
        before = self.fair.last_submit(member_id)
        at = self.fair.submitted(member_id)  # the cooldown counts from now: a burst cannot all pass
        reservation = Reservation(member_id)
        self.fair.reserved[member_id] += 1
        try:
            yield reservation
        finally:
            if not reservation.taken:
                # Nothing was queued (a bad option, a refused attachment): no cooldown for it.
                self.fair.reserved[member_id] -= 1
                self.fair.unsubmitted(member_id, before, at)

    def submit(self, job: Job, member_id: int, on_progress: ProgressCallback | None = None, *,
               reservation: Reservation | None = None, check: bool = True) -> Ticket:
        """Queue a recorded job: with the place `reserve` held for it, or checked now (`check`), or
        neither for a job restored from a previous run (accepted then, so it runs whatever the
        limits are now)."""
        if reservation is not None:
            self.fair.reserved[member_id] -= 1
            reservation.taken = True
        elif check:
            self.check(member_id)
        self.fair.submit(job.job_id, member_id, check=False)

        def progressed(progress) -> None:
            ticket.step = (progress.step, progress.total)
            if on_progress is not None:
                on_progress(progress)

        ticket = Ticket(job, member_id, progressed)
        self._tickets[job.job_id] = ticket
        self._work.set()
        return ticket

    def position(self, job_id: int) -> int:
        """How many jobs run before this one starts, the running ones included (0: it is running,
        or next with an engine free)."""
        if self.fair.is_running(job_id):
            return 0
        return self.fair.position(job_id) + len(self.fair.running)

    def estimate(self, position: int) -> float:
        """Seconds until a job at `position` starts, from the average time a job has taken."""
        per_job = self._seconds_per_job or FIRST_ESTIMATE_SECONDS
        return per_job * position / max(self.capacity, 1)

    @property
    def capacity(self) -> int:
        """How many jobs (or batches) can run at once: the engines here and the workers there."""
        return len(self.engines) + (len(self.hub.workers) if self.hub is not None else 0)

    def held_models(self) -> set[str]:
        """The models some engine or worker has loaded now (lower case)."""
        engines: list[Engine] = [*self.engines, *(self.hub.workers.values() if self.hub is not None else ())]
        return {name.lower() for engine in engines for name in engine.models}

    def ticket(self, job_id: int) -> Ticket | None:
        return self._tickets.get(job_id)

    def starting(self) -> tuple[str, float | None] | None:
        """While no engine is ready because every one is still starting (a cold start): the model
        the soonest loads and about how long it has left; None once one can take jobs. With workers on
        other hosts only and none connected: (render.NO_WORKER, None)."""
        if self.hub is not None and not self.engines and not self.hub.workers:
            return NO_WORKER, None
        starts = [engine.starting for engine in self.engines]
        if not starts or any(start is None for start in starts):
            return None
        return min((start for start in starts if start is not None), key=lambda start: (start[1] is None, start[1]))

    def queued(self) -> list[int]:
        return self.fair.order()

    def running(self) -> list[int]:
        return self.fair.running

    async def cancel(self, job_id: int, by: int) -> bool:
        """Stop a queued job, or a running one between two denoising steps; False if it is neither."""
        ticket = self._tickets.get(job_id)
        if ticket is None:
            return False
        ticket.cancelled_by = by
        if self.fair.cancel(job_id):
            await self._cancelled(ticket)
            return True
        if not ticket.sent:
            return True  # a worker took it and drops it before it reaches an engine
        for engine in self.engines:
            if await engine.cancel(job_id):
                return True
        return self.hub is not None and await self.hub.cancel(job_id)

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._serve(engine), name=f"job-worker-{i}")
                             for i, engine in enumerate(self.engines)]
            if self.hub is not None:
                self.hub.on_free = self._work.set
                self.hub.adopt = self.adopt
                self._workers.append(asyncio.create_task(self._dispatch(self.hub), name="job-dispatcher"))

    async def close(self, grace: float = 30.0) -> None:
        """Stop taking jobs; give running ones `grace` seconds to finish. Whatever did not finish
        stays queued in the store and runs at the next start."""
        self._accepting = False
        running = [self._tickets[j].result for j in self.fair.running if j in self._tickets]
        if running:
            log.info("waiting up to %.0f s for %d running job(s) to finish", grace, len(running))
            await asyncio.wait(running, timeout=grace)
        for worker in [*self._workers, *self._runs]:
            worker.cancel()
        for worker in [*self._workers, *self._runs]:
            try:
                await worker
            except asyncio.CancelledError:
                pass
        unfinished = self.fair.running  # finished jobs have left it
        for job_id in unfinished:
            await self._store.requeue_job(job_id)
        if unfinished or self.fair.queued_count:
            log.info("%d job(s) left for the next start", len(unfinished) + self.fair.queued_count)

    async def _serve(self, engine: EngineClient) -> None:
        """Feed one engine here: its next call starts once the one in hand is about to end (`Lead`),
        so it is checked (the gate) and sent while the engine still works, and waits there its turn."""
        while True:
            # Shutting down: queued jobs wait. Otherwise a job of a model this engine holds goes first
            # where fairness allows (`FairQueue.next`): loading another model costs seconds.
            job_id = self.fair.next(partial(self._held_by, engine)) if self._accepting else None
            if job_id is None:
                self._work.clear()
                await self._work.wait()
                continue
            lead = Lead()
            run = self._in_hand(self._start(engine, job_id, lead=lead), f"job-{job_id}")
            run.add_done_callback(partial(_ended, lead))  # refused, failed or answered
            await lead.event.wait()

    def _in_hand(self, call: Coroutine[object, object, None], name: str) -> asyncio.Task:
        run = asyncio.create_task(call, name=name)
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)
        return run

    async def _dispatch(self, hub: WorkerHub) -> None:
        """Hand work to the workers on other hosts that asked for it, each its next job by the same
        rules as an engine here (round robin, then the model it holds), as they ask."""
        while True:
            self._work.clear()
            for worker in hub.free() if self._accepting else []:
                job_id = self.fair.next(partial(self._held_by, worker))
                if job_id is None:
                    break
                claim = hub.claim(worker)
                self._in_hand(self._start(worker, job_id, claim), f"job-{job_id}-on-{worker.name}")
            await self._work.wait()

    async def _start(self, engine: Engine, job_id: int, claim: object = None, lead: Lead | None = None) -> None:
        """Run `job_id`, and the jobs that can join it as a batch, on `engine` (a worker elsewhere: under
        its request for work, `claim`; an engine here: `lead` told of their progress)."""
        tickets = []
        try:
            batch = [job_id]
            key = self._tickets[job_id].job.request.batch_key()
            if key is not None and self.max_batch > 1:
                batch += self.fair.take(partial(self._same_batch, key), self.max_batch - 1)
            tickets = [self._tickets[j] for j in batch]
            await self._run(engine, list(tickets), lead)
        except Exception as error:
            log.exception("jobs %s: unexpected failure in the queue worker", [t.job.job_id for t in tickets])
            for ticket in tickets:
                if not ticket.result.done():  # only those still waiting for an outcome
                    await self._fail(ticket, Failure(FailureKind.INTERNAL, f"{type(error).__name__}: {error}"))
        finally:
            if isinstance(engine, RemoteWorker) and self.hub is not None and self.hub.release(engine, claim):
                self._work.set()  # nothing was handed out after all (refused, cancelled): it asks still

    def _held_by(self, engine: Engine, job_id: int) -> bool:
        return engine.holds(self._tickets[job_id].job.request.model)

    def _same_batch(self, key: tuple, job_id: int) -> bool:
        return self._tickets[job_id].job.request.batch_key() == key

    async def _run(self, engine: Engine, tickets: list[Ticket], lead: Lead | None = None) -> None:
        for ticket in list(tickets):
            if self.gate is not None and ticket.cancelled_by is None:
                try:
                    ticket.job = await self.gate(ticket.job)
                except JobRefused as refusal:
                    log.info("job %s refused as it started: %s", ticket.job.job_id, refusal)
                    tickets.remove(ticket)
                    await self._fail(ticket, Failure(FailureKind.REFUSED, str(refusal), refusal.public))
                    continue
            await self._store.mark_running(ticket.job.job_id)
        for ticket in [t for t in tickets if t.cancelled_by is not None]:  # cancelled on the way
            await self._cancelled(ticket)
            tickets.remove(ticket)
        if not tickets:
            return
        for ticket in tickets:
            ticket.attempts += 1
            ticket.sent = True
        if len(tickets) > 1:
            log.info("jobs %s sent to the engine as a batch of %d", ", ".join(str(t.job.job_id) for t in tickets),
                     len(tickets))
        started = time.monotonic()
        callbacks = {t.job.job_id: t.on_progress for t in tickets if t.on_progress}
        if lead is not None and all(t.attempts == 1 for t in tickets):
            # (A retried job's call may be what crashes the engine: nothing is sent behind it, so that
            # a crash is never counted against a job that was only started after it.)
            lead.expect([t.job.job_id for t in tickets])
            callbacks = {t.job.job_id: partial(_told, lead, t.on_progress) for t in tickets}
        outcomes = await engine.generate_batch([t.job for t in tickets], callbacks)
        elapsed = (time.monotonic() - started) / len(tickets)
        for ticket, outcome in zip(tickets, outcomes, strict=True):
            job_id = ticket.job.job_id
            if isinstance(outcome, GenerateResult):
                self._measured(elapsed)
                await self._store.finish_job(job_id, outcome)
                self._finish(ticket).set_result(outcome)
            elif outcome.kind is FailureKind.UNSENT or \
                    outcome.kind is FailureKind.CRASHED and (ticket.attempts < ATTEMPTS or not self._accepting):
                # Once more (a job that never reached an engine does not count); or, if the bot is
                # stopping (the engine may have been stopped with it), it stays queued in the store
                # and runs at the next start.
                if outcome.kind is FailureKind.UNSENT:
                    ticket.attempts -= 1
                    log.info("job %s: %s; it goes back to the front of the queue", job_id, outcome.message)
                else:
                    log.warning("job %s: the engine crashed (%s); it will run once more", job_id, outcome.message)
                self.fair.done(job_id)
                self.fair.submit(job_id, ticket.member_id, front=True, check=False)
                ticket.sent = False
                await self._store.requeue_job(job_id)
                self._work.set()
            elif outcome.kind is FailureKind.CANCELLED:
                await self._cancelled(ticket)
            else:
                log.error("job %s failed (%s): %s", job_id, outcome.kind, outcome.message)
                await self._fail(ticket, outcome)

    async def _fail(self, ticket: Ticket, failure: Failure) -> None:
        try:
            await self._store.fail_job(ticket.job.job_id, f"{failure.kind}: {failure.message}")
        except Exception:
            log.exception("job %s: could not record the failure", ticket.job.job_id)
        self._settle(ticket, failure)

    async def _cancelled(self, ticket: Ticket) -> None:
        """Answer a cancelled job (first, so that a failing write cannot leave it unanswered), then record it."""
        by = f"cancelled by <@{ticket.cancelled_by}>" if ticket.cancelled_by else "cancelled"
        self._settle(ticket, Failure(FailureKind.CANCELLED, by))
        await self._store.cancel_job(ticket.job.job_id, ticket.cancelled_by)

    def _settle(self, ticket: Ticket, failure: Failure) -> None:
        future = self._finish(ticket)
        if not future.done():
            future.set_result(failure)

    def _finish(self, ticket: Ticket) -> asyncio.Future:
        self.fair.done(ticket.job.job_id)
        self._tickets.pop(ticket.job.job_id, None)
        return ticket.result

    def _measured(self, seconds: float) -> None:
        self._seconds_per_job = seconds if self._seconds_per_job is None else \
            0.8 * self._seconds_per_job + 0.2 * seconds

    # -- what a previous run left, and what happens after a result ------------------------------

    async def restored(self, job_id: int) -> None:
        """A job a previous run left queued or running is queued again (`submit` it next)."""
        await self._store.requeue_job(job_id)

    async def collected(self, job_id: int, result: GenerateResult) -> None:
        """A result a worker made for a job of a previous run, taken at start (`WorkerHub.collect`):
        the job is delivering, as if this run had made it."""
        await self._store.finish_job(job_id, result)

    async def adopt(self, job_id: int, result: GenerateResult) -> bool:
        """A worker finished a job of the previous run after this run queued it again (the bot was
        restarted while it ran): if it is still queued, that result is its outcome. False if it is not
        queued here (it runs again, or already has)."""
        ticket = self._tickets.get(job_id)
        if ticket is None or not self.fair.cancel(job_id):
            return False
        try:
            await self._store.finish_job(job_id, result)
        except Exception:
            log.exception("job %s: could not record the result of its previous run; it runs again", job_id)
            self.fair.submit(job_id, ticket.member_id, front=True, check=False)
            self._work.set()
            return False
        self._finish(ticket).set_result(result)
        return True

    async def abandon(self, job_id: int, reason: str) -> None:
        """A job a previous run left that cannot run again (`reason` says why)."""
        await self._store.fail_job(job_id, reason)

    async def delivered(self, job_id: int, message_id: int | None, *, filtered: bool = False) -> None:
        """Its result is posted (`message_id`; None if Discord refused every way of posting it), or,
        `filtered`, every picture was withheld and the member was told."""
        await self._store.delivered(job_id, message_id, filtered=filtered)


def _told(lead: Lead, on_progress: ProgressCallback | None, progress: Progress) -> None:
    lead.progressed(progress)
    if on_progress is not None:
        on_progress(progress)


def _ended(lead: Lead, _: asyncio.Task) -> None:
    lead.event.set()
