"""Workers on other hosts, through NATS (`dreambot.relay`): the bot hands them jobs under leases.

With NATS_URL set the bot starts no engine of its own. Each `python -m engine worker` asks for work
when it is free; the queue (`bot.queue.JobQueue`) answers the pulls waiting here (`WorkerHub.free`)
by its own round robin, caps and model affinity, so fairness holds across hosts. A job handed out
is a lease: random, recorded with the job (`Store.lease_jobs`), and kept alive by what its worker
says (status every second, progress at each step). A lease lapses when its worker has been silent
for WORKER_LEASE_SECONDS: its jobs go back to the front of the queue (counted against their one
retry, unless the worker never got them), the worker is told to drop them, and anything it sends
under that lease later is refused. So a result is posted at most once, and only from the worker
the bot chose.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from bot.engine_client import JOB_TIMEOUT_SECONDS, ProgressCallback, report_progress
from bot.outcome import Failure, FailureKind, Outcome, failure_of
from bot.store import Store
from dreambot import relay, wire
from dreambot.relay import Control, Parts, WorkerStatus
from dreambot.wire import PROTOCOL_VERSION, Batch, EngineError, GenerateResult, Job, Progress, Ready

log = logging.getLogger(__name__)

# How often leases, pulls and workers are looked over.
TICK_SECONDS = 0.25
# The most parts one result may come in (64 MB at NATS's default payload limit of 1 MB).
MAX_PARTS = 64
# Leases the hub ended itself (lapsed, timed out) and statuses of workers not yet serving, remembered.
REMEMBERED = 1000
# Workers that said they stop, remembered (by session) so that a message of theirs that comes late is ignored.
GONE_REMEMBERED = 1000
# At start, how long the bot listens for the workers' answers to its roll call, and then, at most,
# for the results they hold.
ROLL_CALL_SECONDS = 1.5
COLLECT_SECONDS = 15.0


@dataclass
class Lease:
    """Jobs handed to one worker, and the futures their outcomes arrive on."""

    token: str
    worker: RemoteWorker
    outcomes: dict[int, asyncio.Future[Outcome]]
    on_progress: Mapping[int, ProgressCallback]
    parts: list[bytes]  # the job or batch as sent, for FETCH
    acknowledged: bool = False  # the worker has said it holds it
    deadline: float = float("inf")


@dataclass
class RemoteWorker:
    """One worker process as the queue sees it: an engine that takes a job when it has asked for one."""

    hub: WorkerHub
    status: WorkerStatus
    joined_at: float
    last_seen: float
    pull: Msg | None = None  # its request for work, waiting for an answer
    pulled_at: float = 0.0
    claimed: Msg | None = None  # a pull the queue took, to answer with a job
    lease: Lease | None = None

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def models(self) -> tuple[str, ...]:
        return self.status.models

    @property
    def busy(self) -> bool:
        return self.lease is not None or self.claimed is not None

    def holds(self, model: str) -> bool:
        """Whether the worker has this model loaded ("": its default)."""
        name = model or self.status.model
        return name.lower() in {held.lower() for held in self.status.models}

    async def generate_batch(self, jobs: list[Job], on_progress: Mapping[int, ProgressCallback] | None = None
                             ) -> list[Outcome]:
        """Hand the jobs to this worker (it asked for work: `WorkerHub.claim`) and wait for their outcomes."""
        return await self.hub.hand_out(self, jobs, on_progress or {})

    async def cancel(self, job_id: int) -> bool:
        return await self.hub.cancel(job_id)


class WorkerHub:
    """The bot's side of NATS: who is there, what each holds, and the leases handed out.

    `on_free()` is called whenever a worker asks for work (the queue then looks at `free`);
    `on_joined(worker)`, `on_lost(worker, reason)` (silent too long) and `on_left(worker, reason)` (it
    said it stops) tell of workers coming and going (the mod-log)."""

    def __init__(self, servers: list[str], store: Store, *, creds=None, lease_seconds: float = 15.0,
                 job_timeout: float = JOB_TIMEOUT_SECONDS, poll_seconds: float = relay.POLL_SECONDS) -> None:
        self._servers = servers
        self._creds = creds
        self._store = store
        self.lease_seconds = lease_seconds
        self._job_timeout = job_timeout
        self._poll_seconds = poll_seconds
        self.workers: dict[str, RemoteWorker] = {}  # by session
        self._leases: dict[str, Lease] = {}
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task] = []
        self._sending: set[asyncio.Future] = set()  # answers and controls on their way (`_soon`)
        self._gone: dict[str, None] = {}  # sessions that said they stop, the latest last
        self._refused: dict[str, None] = {}  # sessions of another protocol version, the latest last
        # Per worker session, the one result it is sending: (lease, job id, the parts so far).
        self._parts: dict[str, tuple[str, int, Parts]] = {}
        self._voided: dict[str, None] = {}  # leases the hub ended, the latest last
        # Statuses of workers that have not asked for work (yet): at start, those offering results.
        self._heard: dict[str, tuple[WorkerStatus, float]] = {}
        self._down_since: float | None = None  # NATS unreachable since: nobody's silence counts meanwhile
        self._closing = False
        # Takes a late result of a lease of the previous run whose job waits in the queue (`JobQueue.adopt`).
        self.adopt: Callable[[int, GenerateResult], Awaitable[bool]] | None = None
        self._collecting: list[tuple[int, GenerateResult]] | None = None
        self._connected: asyncio.Future[None] | None = None
        self._announce_after = 0.0  # workers found by the roll call at start are not news
        self.on_free: Callable[[], None] = lambda: None
        self.on_joined: Callable[[RemoteWorker], None] = lambda worker: None
        self.on_lost: Callable[[RemoteWorker, str], None] = lambda worker, reason: None
        self.on_left: Callable[[RemoteWorker, str], None] = lambda worker, reason: None
        self.info: Ready | None = None  # the latest worker's: its default model and safety classifier

    # -- starting and stopping -------------------------------------------------------------------

    async def start(self, wait: float = 10.0) -> bool:
        """Connect and listen; False if NATS could not be reached within `wait` seconds (the bot
        carries on, jobs wait in the queue, and the hub connects as soon as it can)."""
        self._connected = asyncio.get_running_loop().create_future()
        self._tasks.append(asyncio.create_task(self._connect(), name="nats-connect"))
        self._tasks.append(asyncio.create_task(self._watch(), name="worker-leases"))
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), wait)
            return True
        except TimeoutError:
            log.warning("NATS cannot be reached yet (%s): jobs wait in the queue until it can and a worker asks",
                        relay.redacted(self._servers))
            return False

    async def _connect(self) -> None:
        nc = await relay.connect(self._servers, name="dreambot bot", creds=self._creds)
        await nc.subscribe(relay.WORK, cb=self._guarded(self._on_work))
        await nc.subscribe(relay.FETCH, cb=self._guarded(self._on_fetch))
        await nc.subscribe(relay.RESULT, cb=self._guarded(self._on_result))
        await nc.subscribe(relay.EVENT, cb=self._guarded(self._on_event))
        await nc.flush()
        self._nc = nc
        assert self._connected is not None
        self._connected.set_result(None)

    async def collect(self, keep: Callable[[int, GenerateResult], Awaitable[None]]) -> int:
        """At start, before the jobs a previous run left are queued again: call the roll, and `keep`
        each result a worker made under a lease the previous run handed out (the job is still queued
        or running in the store). Returns how many were kept."""
        if self._nc is None:
            return 0
        collected: list[tuple[int, GenerateResult]] = []
        self._collecting = collected
        self._announce_after = time.monotonic() + ROLL_CALL_SECONDS
        try:
            await self._nc.publish(relay.CONTROL, Control("roll-call").encode())
            await asyncio.sleep(ROLL_CALL_SECONDS)
            deadline = time.monotonic() + COLLECT_SECONDS
            while time.monotonic() < deadline:
                if not await self._awaited(collected):
                    break
                await asyncio.sleep(TICK_SECONDS)
        finally:
            self._collecting = None
        for job_id, result in collected:
            await keep(job_id, result)
        if collected:
            log.info("collected %d result(s) workers made while the bot was away", len(collected))
        return len(collected)

    async def _awaited(self, collected: list[tuple[int, GenerateResult]]) -> bool:
        """Whether a worker still holds a result of a lease the store knows and that is not collected yet."""
        have = {job_id for job_id, _ in collected}
        statuses = [worker.status for worker in self.workers.values()] + [status for status, _ in self._heard.values()]
        for status in statuses:
            for lease in status.holding:
                if lease not in self._leases and await self._store.has_lease(lease, excluding=have):
                    return True
        return False

    async def close(self) -> None:
        self._closing = True  # a pull that comes now is answered at once: the next bot serves it
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lease in list(self._leases.values()):  # the bot stops: what runs now is collected at the next start
            self._end(lease, Failure(FailureKind.CRASHED, "the bot stopped before the worker finished"))
        for worker in self.workers.values():  # they ask again, of the next bot, at once rather than at a timeout
            if worker.pull is not None:
                await self._answer(worker.pull, {relay.IDLE: "1"})
                worker.pull = None
        if self._nc is not None:
            try:
                await asyncio.wait_for(self._nc.drain(), 5)
            except Exception:
                await self._nc.close()

    # -- the queue's side ------------------------------------------------------------------------

    def free(self) -> list[RemoteWorker]:
        """The workers waiting for work, those that asked first first."""
        return sorted((w for w in self.workers.values() if w.pull is not None and w.lease is None
                       and w.claimed is None), key=lambda worker: worker.pulled_at)

    def claim(self, worker: RemoteWorker) -> Msg:
        """The queue has work for this worker: its pull is answered with it (`hand_out`), not with idle."""
        assert worker.pull is not None
        worker.claimed, worker.pull = worker.pull, None
        return worker.claimed

    def release(self, worker: RemoteWorker, claim: object) -> bool:
        """The queue took the worker's pull (`claim`) but handed nothing out (its jobs were refused or
        cancelled as they started): the pull waits again. True if it was still unanswered."""
        if worker.claimed is not claim:
            return False
        if self.workers.get(worker.status.session) is worker and worker.pull is None:
            worker.pull = worker.claimed
        worker.claimed = None
        return True

    async def hand_out(self, worker: RemoteWorker, jobs: list[Job], on_progress: Mapping[int, ProgressCallback]
                       ) -> list[Outcome]:
        msg, worker.claimed = worker.claimed, None
        if msg is None or self.workers.get(worker.status.session) is not worker or self._nc is None:
            return [Failure(FailureKind.UNSENT, f"worker {worker.name} went away before it got the job")
                    for _ in jobs]
        loop = asyncio.get_running_loop()
        token = secrets.token_hex(16)
        message = jobs[0] if len(jobs) == 1 else Batch(jobs=tuple(jobs))
        parts = relay.split(wire.encode(message), self._nc.max_payload)
        now = time.monotonic()
        lease = Lease(token, worker, {job.job_id: loop.create_future() for job in jobs}, on_progress, parts,
                      deadline=now + self._job_timeout * len(jobs))
        self._leases[token] = worker.lease = lease  # from now on a Cancel finds it
        try:
            await self._store.lease_jobs([job.job_id for job in jobs], token, worker.name)
            if token in self._leases:  # not lapsed meanwhile
                await self._nc.publish(msg.reply, parts[0], headers={relay.LEASE: token,
                                                                     relay.PARTS: str(len(parts))})
                log.info("job(s) %s handed to worker %s (lease %s…)", ", ".join(str(job.job_id) for job in jobs),
                         worker.name, token[:8])
        except Exception as problem:  # NATS is away, or the store: the worker asks again, the jobs wait
            log.warning("could not hand job(s) to worker %s: %s", worker.name, problem)
            self._end(lease, Failure(FailureKind.UNSENT, f"could not hand the job to worker {worker.name}: {problem}"))
            await self._answer(msg, {relay.IDLE: "1"})
        try:
            return [await future for future in lease.outcomes.values()]
        finally:
            self._leases.pop(token, None)
            if worker.lease is lease:
                worker.lease = None

    async def cancel(self, job_id: int) -> bool:
        """Tell the worker that holds `job_id` to stop it; False if no worker holds it."""
        for lease in self._leases.values():
            if job_id in lease.outcomes and not lease.outcomes[job_id].done() and self._nc is not None:
                try:
                    await self._nc.publish(relay.CONTROL, Control("cancel", lease.token, job_id).encode())
                except nats.errors.Error:
                    return False
                return True
        return False

    # -- what workers say ------------------------------------------------------------------------

    def _guarded(self, handler: Callable[[Msg], Awaitable[None]]) -> Callable[[Msg], Awaitable[None]]:
        async def guarded(msg: Msg) -> None:
            try:
                await handler(msg)
            except Exception:  # one bad message must not stop the subscription
                log.exception("could not handle a message on %s", msg.subject)
        return guarded

    def _seen(self, status: WorkerStatus) -> RemoteWorker:
        now = time.monotonic()
        worker = self.workers.get(status.session)
        if worker is None:
            self._heard.pop(status.session, None)
            worker = self.workers[status.session] = RemoteWorker(self, status, now, now)
            log.info("worker %s joined: %s on %s, safety checker %s", status.name, status.model, status.device,
                     status.safety_checker)
            if now >= self._announce_after:
                self.on_joined(worker)
        worker.status, worker.last_seen = status, now
        self.info = Ready(model=status.model, device=status.device, dtype=status.dtype,
                          safety_checker=status.safety_checker, protocol=status.protocol)
        return worker

    def _left(self, worker: RemoteWorker, reason: str, *, lost: bool) -> None:
        """The worker is gone (`lost`: silent for too long; else it said it stops): what it held runs elsewhere."""
        if self.workers.get(worker.status.session) is not worker:
            return
        del self.workers[worker.status.session]
        self._parts.pop(worker.status.session, None)
        if not lost:  # it said it stops: a pull it sent just before, handled after, must not bring it back
            self._gone[worker.status.session] = None
            while len(self._gone) > GONE_REMEMBERED:
                del self._gone[next(iter(self._gone))]
        for msg in (worker.pull, worker.claimed):  # answered, or the worker waits out its request's time
            if msg is not None:
                self._soon(self._answer(msg, {relay.IDLE: "1"}))
        worker.pull = worker.claimed = None
        log.warning("%s: lost", reason) if lost else log.info("%s", reason)
        if worker.lease is not None:
            self._lapse(worker.lease, reason, counted=worker.lease.acknowledged)
        (self.on_lost if lost else self.on_left)(worker, reason)

    async def _on_work(self, msg: Msg) -> None:
        status = WorkerStatus.decode(msg.data)
        if status.protocol != PROTOCOL_VERSION:
            reason = (f"the worker speaks protocol version {status.protocol} and the bot version {PROTOCOL_VERSION}: "
                      "run the same Dreambot release on both")
            log.error("refused worker %s: %s", status.name, reason)
            await self._answer(msg, {relay.REFUSED: reason})
            return
        if status.session in self._gone or self._closing:
            await self._answer(msg, {relay.IDLE: "1"})
            return
        worker = self._seen(status)
        if worker.lease is not None:
            # A worker asks for work only once it has answered for all it held: it lost this lease (it
            # started again, or the job never reached it).
            lease = worker.lease
            self._lapse(lease, f"worker {worker.name} asked for work again without answering for it",
                        counted=lease.acknowledged)
        if worker.pull is not None:
            await self._answer(worker.pull, {relay.IDLE: "1"})
        worker.pull, worker.pulled_at = msg, time.monotonic()
        self.on_free()

    async def _on_fetch(self, msg: Msg) -> None:
        headers = msg.headers or {}
        lease = self._leases.get(headers.get(relay.LEASE, ""))
        index = int(headers.get(relay.PART, "0"))
        if lease is None or lease.worker.status.session != headers.get(relay.WORKER) or \
                not 0 < index < len(lease.parts):
            await self._answer(msg, {relay.REFUSED: "no such lease"})
            return
        await self._nc.publish(msg.reply, lease.parts[index])  # type: ignore[union-attr]

    async def _on_event(self, msg: Msg) -> None:
        headers = msg.headers or {}
        session = headers.get(relay.WORKER, "")
        if headers.get(relay.KIND) == "status":
            status = WorkerStatus.decode(msg.data)
            if status.protocol != PROTOCOL_VERSION and status.session == session:
                self._refused[session] = None  # its results are refused too: it then asks, and hears why
                while len(self._refused) > REMEMBERED:
                    del self._refused[next(iter(self._refused))]
            if status.session != session or status.session in self._gone or status.protocol != PROTOCOL_VERSION:
                return
            worker = self.workers.get(status.session)
            if status.leaving:
                self._heard.pop(status.session, None)
                if worker is not None:
                    self._left(worker, f"worker {status.name} stopped", lost=False)
                return
            if worker is None:  # not serving (yet): it joins when it asks for work
                self._heard[status.session] = (status, time.monotonic())
                while len(self._heard) > REMEMBERED:
                    del self._heard[next(iter(self._heard))]
            else:
                worker.status, worker.last_seen = status, time.monotonic()
            if status.lease is not None:
                await self._check_lease(worker, status.lease)
            return
        sender = self.workers.get(session)
        lease = self._leases.get(headers.get(relay.LEASE, ""))
        if sender is None or lease is None or lease.worker is not sender:
            return
        sender.last_seen = time.monotonic()
        lease.acknowledged = True
        message = wire.decode(msg.data)
        if isinstance(message, Progress) and message.job_id in lease.outcomes:
            report_progress(lease.on_progress, message)

    async def _check_lease(self, worker: RemoteWorker | None, token: str) -> None:
        """A worker says it runs under `token`: its own live lease is acknowledged; a lease the hub ended
        is voided (again: the worker may have missed it); so is one that no job waits under any more.
        A lease of the previous run whose job is still queued or running is left to finish: its
        result is collected or adopted. Another worker's live lease is not this worker's to touch."""
        lease = self._leases.get(token)
        if lease is not None:
            if lease.worker is worker:
                lease.acknowledged = True
            return
        if token in self._voided or (self._collecting is None and not await self._store.has_lease(token)):
            await self._publish(Control("void", token))

    async def _on_result(self, msg: Msg) -> None:
        headers = msg.headers or {}
        session, token = headers.get(relay.WORKER, ""), headers.get(relay.LEASE, "")
        job_id, index, count = int(headers.get(relay.JOB, "0")), int(headers.get(relay.PART, "0")), \
            int(headers.get(relay.PARTS, "1"))
        worker = self.workers.get(session)
        if worker is not None:
            worker.last_seen = time.monotonic()
        elif session in self._refused:
            await self._answer(msg, {relay.KIND: "refused: the worker speaks another protocol version"})
            return
        elif session not in self._heard:  # say who you are first (a status), then offer it again
            await self._answer(msg, {relay.KIND: "later"})
            return
        if not 0 < count <= MAX_PARTS:
            await self._answer(msg, {relay.KIND: f"refused: more than {MAX_PARTS} parts"})
            return
        if index == 0:  # one result at a time per worker: whatever it sent before is dropped
            self._parts[session] = (token, job_id, Parts(count))
        arriving = self._parts.get(session)
        try:
            if arriving is None or arriving[:2] != (token, job_id):
                raise ValueError("its first part is missing")
            data = arriving[2].add(index, msg.data)
        except ValueError as problem:
            self._parts.pop(session, None)
            log.warning("a part of the result of job %s came out of order (%s); the worker sends it again", job_id,
                        problem)
            await self._answer(msg, {relay.KIND: "later"})
            return
        if data is None:
            await self._answer(msg, {relay.KIND: "part"})
            return
        del self._parts[session]
        try:
            message = wire.decode(data)
        except (ValueError, KeyError, TypeError):
            await self._answer(msg, {relay.KIND: "refused: not a message"})
            return
        verdict = await self._take(worker, token, job_id, message, session)
        await self._answer(msg, {relay.KIND: verdict})

    async def _take(self, worker: RemoteWorker | None, token: str, job_id: int, message: wire.Message,
                    session: str = "") -> str:
        """Take one job's result or error: "taken", or why it is refused (the worker drops it either way)."""
        if not isinstance(message, GenerateResult | EngineError) or message.job_id != job_id or \
                isinstance(message, GenerateResult) and any(image.format not in ("png", "gif") for image in
                                                             message.images):
            log.warning("worker sent a %s as the result of job %s that is not one; refused", type(message).__name__,
                        job_id)
            return "refused: not a result"
        lease = self._leases.get(token)
        if lease is not None:
            if lease.worker is not worker or job_id not in lease.outcomes:
                log.warning("refused a result of job %s: not from the worker its lease went to", job_id)
                return "refused: not the worker this lease went to"
            future = lease.outcomes[job_id]
            if not future.done():
                future.set_result(message if isinstance(message, GenerateResult) else failure_of(message))
                if worker is not None and all(f.done() for f in lease.outcomes.values()):
                    worker.lease = None
            return "taken"
        row = await self._store.get_job(job_id)
        if row is None or row.lease != token:
            log.warning("refused a result of job %s: the bot did not hand it out under that lease (or the lease "
                        "lapsed)", job_id)
            return "refused: not under a lease the bot handed out"
        if row.status not in ("queued", "running"):
            return "taken"  # already in: an answer that was lost on the way, sent again
        # From the worker it was handed to, by name: after a restart its session is new to us.
        heard = self._heard.get(session)
        name = worker.name if worker is not None else heard[0].name if heard is not None else None
        if isinstance(message, GenerateResult) and name == row.worker:
            if self._collecting is not None:
                if job_id not in {collected for collected, _ in self._collecting}:
                    self._collecting.append((job_id, message))
                return "taken"
            if row.status == "queued" and token not in self._voided and self.adopt is not None and \
                    await self.adopt(job_id, message):
                log.info("job %s: a result of the previous run, made while it waited to run again, taken", job_id)
                return "taken"
        log.warning("refused a late result of job %s: its lease lapsed, so it runs again", job_id)
        return "refused: the lease lapsed"

    # -- leases ----------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Answer old pulls with idle, lapse the leases of silent workers and of jobs past their time,
        and forget workers that have gone."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            if self._nc is not None and not self._nc.is_connected:  # our outage, not the workers' silence
                self._down_since = self._down_since or now
                continue
            if self._down_since is not None:
                for worker in self.workers.values():
                    worker.last_seen += now - self._down_since
                for lease in self._leases.values():
                    lease.deadline += now - self._down_since
                self._down_since = None
            for session, (_, heard_at) in list(self._heard.items()):
                if now - heard_at >= self.lease_seconds:
                    del self._heard[session]
            for session in [s for s in self._parts if s not in self.workers and s not in self._heard]:
                del self._parts[session]
            for worker in list(self.workers.values()):
                if worker.pull is not None and now - worker.pulled_at >= self._poll_seconds:
                    msg, worker.pull = worker.pull, None
                    await self._answer(msg, {relay.IDLE: "1"})
                silent = now - worker.last_seen
                if silent >= self.lease_seconds:
                    self._left(worker, f"worker {worker.name} said nothing for {silent:.0f} s", lost=True)
            for lease in list(self._leases.values()):
                if now >= lease.deadline:
                    self._end(lease, Failure(FailureKind.TIMED_OUT,
                                             f"the job took longer than the limit of {self._job_timeout:.0f} s and was "
                                             "stopped"))
                    self._void(lease.token)
                elif self.workers.get(lease.worker.status.session) is not lease.worker:
                    self._lapse(lease, f"worker {lease.worker.name} is gone", counted=lease.acknowledged)

    def _lapse(self, lease: Lease, reason: str, *, counted: bool) -> None:
        """The lease is over without an answer: its jobs go back to the queue (`counted`: as a crash,
        against their one retry; else as never sent), and its worker is told to drop it."""
        log.warning("lease %s… of job(s) %s lapsed: %s", lease.token[:8], ", ".join(map(str, lease.outcomes)), reason)
        kind = FailureKind.CRASHED if counted else FailureKind.UNSENT
        self._end(lease, Failure(kind, reason))
        self._void(lease.token)

    def _void(self, token: str) -> None:
        """The hub no longer honours this lease: its worker is told to drop it (now, and whenever it
        says it still runs it)."""
        self._voided[token] = None
        while len(self._voided) > REMEMBERED:
            del self._voided[next(iter(self._voided))]
        if self._nc is not None:
            self._soon(self._publish(Control("void", token)))

    def _end(self, lease: Lease, failure: Failure) -> None:
        self._leases.pop(lease.token, None)
        if lease.worker.lease is lease:
            lease.worker.lease = None
        for future in lease.outcomes.values():
            if not future.done():
                future.set_result(failure)

    def _soon(self, message: Awaitable[None]) -> None:
        """Send `message` (an `_answer` or a `_publish`, which never raise) from a task kept until it ends."""
        task = asyncio.ensure_future(message)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _answer(self, msg: Msg, headers: dict[str, str]) -> None:
        if self._nc is None or not msg.reply:
            return
        try:
            await self._nc.publish(msg.reply, b"", headers=headers)
        except nats.errors.Error as problem:
            log.debug("could not answer on %s: %s", msg.subject, problem)

    async def _publish(self, control: Control) -> None:
        if self._nc is None:
            return
        try:
            await self._nc.publish(relay.CONTROL, control.encode())
        except nats.errors.Error as problem:
            log.debug("could not publish %s: %s", control.type, problem)


