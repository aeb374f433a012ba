"""`python -m engine worker`: an engine on any host that runs the bot's jobs, over NATS.

The engine is the bot's own (`engine.server.start` and `run_jobs`: the same model loading, the same
jobs, the same safety check, so a blocked picture never leaves this process); only the transport
differs (`dreambot.relay`). It connects outward, so it works behind NAT: when it is free it asks the
bot for work, runs what it is handed under a lease, says it is alive every second, and keeps each
result until the bot has answered for it (a bot restarting meanwhile collects it when it is back).

SIGTERM or Ctrl-C: it asks for no more work, finishes the jobs in hand, hands their results over
(for up to STOP_DELIVERY_SECONDS) and exits. A second Ctrl-C exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import nats.errors

from dreambot import relay, wire
from dreambot.relay import Control, WorkerStatus
from dreambot.settings import WorkerSettings
from dreambot.wire import PROTOCOL_VERSION, Batch, EngineError, Fatal, GenerateResult, Job, Loaded, Progress, Ready
from engine.server import HeldJobs, run_jobs, start

log = logging.getLogger("engine.worker")

# A pull the bot has not answered in this long is asked again (the bot answers within POLL_SECONDS).
PULL_TIMEOUT_SECONDS = relay.POLL_SECONDS + 20
# How long the bot may take to take one part of a result.
RESULT_TIMEOUT_SECONDS = 30.0
# Waits between tries while the bot cannot be reached (no bot subscribed, NATS down).
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
# On SIGTERM, the results of the last jobs are offered to the bot for this long before exiting.
STOP_DELIVERY_SECONDS = 60.0
# A lease the bot voided (its job timed out, or the worker was counted lost) whose jobs the engine
# has not answered this long after: the engine is stuck in a step. The worker exits (code 3), for its
# service manager to start it again, rather than hold on to a job it will never finish.
STUCK_SECONDS = 120.0
STUCK_EXIT_CODE = 3


def run(settings: WorkerSettings) -> int:
    """Load the engine, then serve the bot through NATS until stopped; the exit code."""
    told: dict[str, wire.Message] = {}

    def remember(message: wire.Message) -> None:  # Ready, Loaded or Fatal, while loading
        told[type(message).__name__] = message

    loaded = start(settings, remember)
    if isinstance(loaded, int):
        return loaded
    ready = told["Ready"]
    assert isinstance(ready, Ready)
    models = told["Loaded"].models if isinstance(told.get("Loaded"), Loaded) else (ready.model,)  # type: ignore[union-attr]
    name = settings.worker_name or f"{socket.gethostname()}-{ready.device}"
    worker = Worker(settings, name, ready, tuple(models))
    return worker.serve(lambda: run_jobs(loaded, worker.work, worker.held, worker.from_engine))


class Worker:
    """The NATS side of one worker process; the engine runs in a thread of its own (`run_jobs`)."""

    def __init__(self, settings: WorkerSettings, name: str, ready: Ready, models: tuple[str, ...], *,
                 stuck_seconds: float = STUCK_SECONDS) -> None:
        self.settings = settings
        self.stuck_seconds = stuck_seconds
        self.name = name
        self.session = secrets.token_hex(8)
        self.ready = ready
        self.models = models
        self.work: queue.Queue[list[Job] | None] = queue.Queue()
        self.held = HeldJobs()
        self.exit_code = 0
        self.lease: str | None = None
        self._engine_heard_at = 0.0  # when the engine last said something (monotonic)
        self._loading = False  # its latest word: it loads a model (which no Cancel interrupts)
        # Cancels for jobs of a lease not running yet (the Cancel can overtake the hand-out): (lease, job id).
        self._early_cancels: dict[tuple[str, int], None] = {}
        self._unanswered: set[int] = set()  # jobs of the lease the engine has not answered yet
        self._lease_done: asyncio.Event | None = None
        # (lease, job id) -> the encoded result, kept until the bot answers for it.
        self.results: dict[tuple[str, int], bytes] = {}
        self._outgoing: asyncio.Queue[tuple[str, bytes, dict[str, str]]] | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        # A bot called the roll (it started), or NATS is back: a pull in flight is asked again.
        self._called: asyncio.Event | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: nats.aio.client.Client | None = None

    def serve(self, engine: Callable[[], None]) -> int:
        """Run `engine` (it takes `work`, answers through `from_engine`) in a thread of its own and this
        worker's NATS side here, until stopped; the exit code."""
        thread = threading.Thread(target=engine, name="engine-jobs", daemon=True)
        thread.start()
        try:
            asyncio.run(self.main())
        except KeyboardInterrupt:
            self.exit_code = 130
        finally:
            self.work.put(None)  # the engine ends with the jobs in hand: never exit under its feet
            thread.join(timeout=60)
        return self.exit_code

    # -- the engine's thread ---------------------------------------------------------------------

    def from_engine(self, message: wire.Message) -> None:
        """The engine said something (on its own thread): handled on the event loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._heard, message)

    def _heard(self, message: wire.Message) -> None:
        lease = self.lease
        self._engine_heard_at = time.monotonic()
        self._loading = isinstance(message, Progress) and bool(message.loading)
        if isinstance(message, Loaded):
            self.models = message.models
        elif isinstance(message, Progress) and lease is not None:
            self._send(relay.EVENT, wire.encode(message), {relay.KIND: "progress", relay.LEASE: lease})
        elif isinstance(message, GenerateResult | EngineError) and lease is not None:
            self.held.release(message.job_id)
            self.results[(lease, message.job_id)] = wire.encode(message)
            self._unanswered.discard(message.job_id)
            if not self._unanswered and self._lease_done is not None:
                self._lease_done.set()
        elif isinstance(message, Fatal):
            log.error("the engine failed: %s", message.message)

    # -- the event loop --------------------------------------------------------------------------

    async def main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._outgoing = asyncio.Queue()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._called = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self.stop)
        self._nc = await relay.connect(self.settings.nats_servers, name=f"dreambot worker {self.name}",
                                       creds=self.settings.nats_creds, on_change=self._connection_changed)
        await self._nc.subscribe(relay.CONTROL, cb=self._control)
        tasks = [asyncio.create_task(self._publisher(), name="publisher"),
                 asyncio.create_task(self._heartbeat(), name="heartbeat")]
        log.info("worker %s (%s, %s on %s) serving the bot through NATS", self.name, self.session, self.ready.model,
                 self.ready.device)
        try:
            await self._serve()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            last = replace(self.status(), leaving=True)
            try:
                await self._nc.publish(relay.EVENT, last.encode(), headers={relay.WORKER: self.session,
                                                                           relay.KIND: "status"})
            except nats.errors.Error:
                pass
            try:
                await asyncio.wait_for(self._nc.drain(), 5)
            except Exception:
                await self._nc.close()

    def stop(self) -> None:
        if self._stopping:  # a second signal: now
            raise KeyboardInterrupt
        log.info("stopping: no more work is taken; the jobs in hand finish first")
        self._stopping = True
        assert self._wake is not None and self._stop is not None
        self._wake.set()
        self._stop.set()

    async def _serve(self) -> None:
        failures = 0
        while not self._stopping:
            await self._deliver()
            if self.results:  # the bot cannot take them now: hold on to them, and try again soon
                failures = await self._pause(failures)
                continue
            try:
                handed = await self._unless_stopped(self._pull())
            except nats.errors.Error as problem:  # no bot listening, NATS away, an answer lost: ask again
                if failures == 0:
                    log.warning("the bot cannot be reached (%s); asking again", type(problem).__name__)
                failures = await self._pause(failures)
                continue
            failures = 0
            if handed is not None:
                await self._run(*handed)
        deadline = time.monotonic() + STOP_DELIVERY_SECONDS
        while self.results and time.monotonic() < deadline:
            await self._deliver()
            if self.results:
                await asyncio.sleep(1)
        if self.results:
            log.error("stopping with %d result(s) the bot never took; those jobs run again elsewhere",
                      len(self.results))

    async def _unless_stopped(self, pull) -> tuple[str, list[Job]] | None:
        """The pull's answer; None if the worker is told to stop first, or a bot starts (the pull may
        have gone to the one before it). Work handed out meanwhile never reaches this worker, and
        the bot gives it to another as never sent."""
        assert self._stop is not None and self._called is not None
        self._called.clear()
        asking = asyncio.ensure_future(pull)
        interrupts = [asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._called.wait())]
        await asyncio.wait({asking, *interrupts}, return_when=asyncio.FIRST_COMPLETED)
        for interrupt in interrupts:
            interrupt.cancel()
        if asking.done():
            return asking.result()
        asking.cancel()
        return None

    async def _pause(self, failures: int) -> int:
        assert self._wake is not None
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
        except TimeoutError:
            pass
        return failures + 1

    async def _pull(self) -> tuple[str, list[Job]] | None:
        """Ask for work: (lease, jobs), or None when there is none now."""
        assert self._nc is not None
        answer = await self._nc.request(relay.WORK, self.status().encode(), timeout=PULL_TIMEOUT_SECONDS,
                                        headers={relay.WORKER: self.session})
        headers = answer.headers or {}
        if relay.REFUSED in headers:
            log.error("the bot refuses this worker: %s", headers[relay.REFUSED])
            self.exit_code = 2
            self._stopping = True
            return None
        if relay.IDLE in headers or relay.LEASE not in headers:
            return None
        lease, count = headers[relay.LEASE], int(headers.get(relay.PARTS, "1"))
        data = [answer.data]
        for index in range(1, count):
            part = await self._nc.request(relay.FETCH, b"", timeout=RESULT_TIMEOUT_SECONDS,
                                          headers={relay.WORKER: self.session, relay.LEASE: lease,
                                                   relay.PART: str(index)})
            if relay.REFUSED in (part.headers or {}):  # the bot no longer honours it (it restarted): ask again
                log.warning("the bot no longer hands out lease %s…", lease[:8])
                return None
            data.append(part.data)
        try:
            message = wire.decode(b"".join(data))
        except (ValueError, KeyError, TypeError):
            log.exception("the bot handed out work this worker cannot read (another release?)")
            return None
        if not isinstance(message, Job | Batch):
            log.error("the bot handed out a %s, which is not work", type(message).__name__)
            return None
        return lease, [message] if isinstance(message, Job) else list(message.jobs)

    async def _run(self, lease: str, jobs: list[Job]) -> None:
        """Run the jobs of one lease to their last answer."""
        self.lease = lease
        self._unanswered = {job.job_id for job in jobs}
        self._lease_done = asyncio.Event()
        self._send(relay.EVENT, self.status().encode(), {relay.KIND: "status"})  # the bot knows it arrived
        log.info("lease %s…: job(s) %s", lease[:8], ", ".join(str(job.job_id) for job in jobs))
        self.held.hold(jobs)
        for job in jobs:
            if self._early_cancels.pop((lease, job.job_id), "none") is None:
                self.held.cancel(job.job_id)
        self.work.put(jobs)
        await self._lease_done.wait()
        self.lease = None

    async def _deliver(self) -> None:
        """Offer each result held to the bot, part by part; those it answers for are dropped."""
        assert self._nc is not None
        for (lease, job_id), data in list(self.results.items()):
            parts = relay.split(data, self._nc.max_payload)
            try:
                answer = None
                for index, part in enumerate(parts):
                    answer = await self._nc.request(
                        relay.RESULT, part, timeout=RESULT_TIMEOUT_SECONDS,
                        headers={relay.WORKER: self.session, relay.LEASE: lease, relay.JOB: str(job_id),
                                 relay.PART: str(index), relay.PARTS: str(len(parts))})
            except (TimeoutError, nats.errors.Error):
                return  # kept: offered again on the next round, or when the bot calls the roll
            assert answer is not None
            verdict = (answer.headers or {}).get(relay.KIND, "taken")
            if verdict == "later":  # the bot does not know this worker yet (it just started): offered again
                return
            if verdict != "taken":
                log.warning("the bot did not take the result of job %s (%s); dropped", job_id, verdict)
            self.results.pop((lease, job_id), None)

    async def _control(self, msg) -> None:
        try:
            control = Control.decode(msg.data)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a control message that is not one")
            return
        if control.type == "roll-call":
            self._send(relay.EVENT, self.status().encode(), {relay.KIND: "status"})
            assert self._wake is not None and self._called is not None
            self._wake.set()  # results held are offered now
            self._called.set()  # and work is asked of this bot
        elif control.type == "cancel" and control.lease is not None and control.job_id is not None and \
                control.lease != self.lease:  # perhaps for work on its way here: kept for a while
            self._early_cancels[(control.lease, control.job_id)] = None
            while len(self._early_cancels) > 100:
                del self._early_cancels[next(iter(self._early_cancels))]
        elif control.lease is not None and control.lease == self.lease:
            if control.type == "cancel" and control.job_id is not None:
                self.held.cancel(control.job_id)
            elif control.type == "void":
                log.warning("the bot no longer honours lease %s…; its jobs stop", control.lease[:8])
                for job_id in self._unanswered:
                    self.held.cancel(job_id)
                assert self._loop is not None
                self._loop.call_later(self.stuck_seconds, self._check_stuck, control.lease)
        if control.type == "void" and control.lease is not None:
            for key in [key for key in self.results if key[0] == control.lease]:
                del self.results[key]

    def _check_stuck(self, lease: str) -> None:
        """`stuck_seconds` after the bot voided `lease`: if the engine still runs its jobs and has said
        nothing since (no step: a Cancel is checked at each), it is stuck. Loading a model is not."""
        if self.lease != lease:
            return
        quiet = time.monotonic() - self._engine_heard_at
        if self._loading or quiet < self.stuck_seconds:
            assert self._loop is not None
            self._loop.call_later(self.stuck_seconds - (0 if self._loading else quiet), self._check_stuck, lease)
            return
        if self.lease == lease:
            log.error("the engine has not stopped the jobs of lease %s… %.0f s after the bot gave them up: it is "
                      "stuck; exiting (code %d) for the service manager to start this worker again", lease[:8],
                      self.stuck_seconds, STUCK_EXIT_CODE)
            logging.shutdown()
            os._exit(STUCK_EXIT_CODE)  # the engine's thread cannot be stopped, nor waited for

    async def _heartbeat(self) -> None:
        while True:
            self._send(relay.EVENT, self.status().encode(), {relay.KIND: "status"})
            await asyncio.sleep(relay.HEARTBEAT_SECONDS)

    async def _connection_changed(self, connected: bool) -> None:
        if connected and self._wake is not None and self._called is not None:
            self._wake.set()
            self._called.set()  # a pull made before the outage may have been lost with it: ask again

    def _send(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Publish in order, from one task (progress and status are never reordered)."""
        assert self._outgoing is not None
        self._outgoing.put_nowait((subject, data, {relay.WORKER: self.session, **headers}))

    async def _publisher(self) -> None:
        assert self._outgoing is not None and self._nc is not None
        while True:
            subject, data, headers = await self._outgoing.get()
            try:
                await self._nc.publish(subject, data, headers=headers)
            except nats.errors.Error as problem:  # the buffer of a long outage: the next status says it all
                log.debug("could not publish on %s: %s", subject, problem)

    def status(self) -> WorkerStatus:
        return WorkerStatus(session=self.session, name=self.name, device=self.ready.device, model=self.ready.model,
                            dtype=self.ready.dtype, safety_checker=self.ready.safety_checker,
                            protocol=PROTOCOL_VERSION, models=tuple(self.models), lease=self.lease,
                            holding=tuple(sorted({lease for lease, _ in self.results})))


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # its own tracebacks; relay logs one line instead
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
