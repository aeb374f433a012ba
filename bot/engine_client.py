"""The bot's handle on the engine process: start it, supervise it, and send it jobs.

The engine (`python -m engine serve`) speaks `dreambot.wire` as JSON lines over its stdin and
stdout; its stderr goes to our log. Torch lives only in that process, so the bot's event loop
never waits on a GPU or CPU-bound step. The engine runs its calls (a job, or a batch) one after
another, in the order sent; the queue sends the next one while the last is about to end
(`bot.queue.Lead`), so that the engine never waits for the bot between two jobs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Mapping

from bot.outcome import Failure, FailureKind, Outcome, failure_of
from dreambot import wire
from dreambot.models import name_of
from dreambot.wire import (
    PROTOCOL_VERSION,
    Batch,
    Cancel,
    EngineError,
    Fatal,
    GenerateResult,
    Job,
    Loaded,
    Progress,
    Ready,
)

log = logging.getLogger(__name__)
engine_log = logging.getLogger("engine")

ProgressCallback = Callable[[Progress], None]

# A PNG result travels base64-encoded on one line; give the reader room for several large ones.
LINE_LIMIT = 256 * 1024 * 1024
RESTART_DELAYS = (1.0, 2.0, 5.0, 15.0, 60.0)
# An engine that says nothing (no progress, no result) for this long while it holds a job is
# stuck: it is killed, the job fails, and a fresh engine starts. A denoising step of a big image
# on a slow CPU takes seconds, not minutes.
STALL_SECONDS = 300.0
# The most a job may take, steps and safety check included (JOB_TIMEOUT_SECONDS); a batch gets
# this much per job.
JOB_TIMEOUT_SECONDS = 600.0


class EngineUnavailable(RuntimeError):
    """The engine is not running and could not be started (the message says why)."""


class EngineClient:
    """One engine process. `model`: the name of the model a start loads (the default; else SD_MODEL's
    name); `expected_start`: how long a start took last time (or an estimate), for `starting`;
    `on_started(seconds)`: told each measured start, to remember it; `on_down(reason)`: told once
    when the engine failed to start twice the same way and is no longer restarted."""

    def __init__(
        self, env: Mapping[str, str], command: list[str] | None = None, stall_seconds: float = STALL_SECONDS,
        job_timeout: float = JOB_TIMEOUT_SECONDS, *, model: str = "", expected_start: float | None = None,
        on_started: Callable[[float], Awaitable[None]] | None = None, on_down: Callable[[str], None] | None = None,
    ) -> None:
        self._env = dict(env)
        self._command = command or [sys.executable, "-m", "engine", "serve"]
        self._stall_seconds = stall_seconds
        self._job_timeout = job_timeout
        self._last_heard = 0.0
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[Ready] | None = None
        # The jobs in hand, of every call sent: job id -> the future its result arrives on.
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._on_progress: dict[int, ProgressCallback] = {}
        self._calls: list[tuple[int, ...]] = []  # the calls in hand (their job ids), in the order sent
        self._began: dict[int, float] = {}  # the jobs in hand the engine has started (step 0): when
        self._timed_out: set[int] = set()  # the jobs in hand that ran past their time limit
        self._supervisor: asyncio.Task | None = None
        self._closing = False
        self._stall_reason: str | None = None
        self.info: Ready | None = None
        self.last_error: str | None = None
        self.model = model or name_of(self._env.get("SD_MODEL", "")) or "the default model"
        self.expected_start = expected_start
        self.on_started = on_started
        self.on_down = on_down
        # Why the engine is down for good (it failed to start twice the same way); None while it runs
        # or is being restarted.
        self.down: str | None = None
        self._spawned_at: float | None = None
        # The models the engine holds now, the most recently used last (`wire.Loaded`).
        self.models: tuple[str, ...] = ()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    @property
    def starting(self) -> tuple[str, float | None] | None:
        """While the engine process is up but not Ready yet: the model it loads and about how many
        seconds that has left (from the last start measured, else an estimate; 0 once past it; None
        if unknown). None otherwise."""
        process = self._process
        if process is None or process.returncode is not None or self._spawned_at is None:
            return None
        if self.expected_start is None:
            return self.model, None
        elapsed = asyncio.get_running_loop().time() - self._spawned_at
        return self.model, max(self.expected_start - elapsed, 0.0)

    def start(self) -> None:
        """Start the engine in the background and keep it running until `close`."""
        if self._supervisor is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._supervisor = asyncio.create_task(self._supervise(), name="engine-supervisor")

    def holds(self, model: str) -> bool:
        """Whether the engine has this model loaded ("": its default)."""
        name = model or (self.info.model if self.info else "")
        return name.lower() in {held.lower() for held in self.models}

    async def wait_ready(self) -> Ready:
        """The engine's Ready message; raises EngineUnavailable while it cannot start."""
        assert self._ready is not None, "start() first"
        return await asyncio.shield(self._ready)

    async def generate(self, job: Job, on_progress: ProgressCallback | None = None) -> Outcome:
        """Run one job: its result, or the Failure that ended it."""
        return (await self.generate_batch([job], {job.job_id: on_progress} if on_progress else {}))[0]

    async def generate_batch(self, jobs: list[Job], on_progress: Mapping[int, ProgressCallback] | None = None
                             ) -> list[Outcome]:
        """Run jobs as one engine call (`wire.Batch`; one job goes as a plain Job): each job's
        result or the Failure that ended it, in order. A call sent while another is in hand waits
        its turn in the engine (it is queued there, not here)."""
        try:
            await self.wait_ready()
        except EngineUnavailable as error:
            return [Failure(FailureKind.UNAVAILABLE, str(error)) for _ in jobs]
        # No await from the ready check to here: a process that exits meanwhile fails these futures.
        process = self._process
        assert process is not None and process.stdin is not None
        loop = asyncio.get_running_loop()
        futures = {job.job_id: loop.create_future() for job in jobs}
        call = tuple(futures)
        self._pending.update(futures)
        self._on_progress.update(on_progress or {})
        self._calls.append(call)
        message = jobs[0] if len(jobs) == 1 else Batch(jobs=tuple(jobs))
        try:
            try:
                process.stdin.write(wire.encode(message))
                await process.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the reader sees the exit and fails the jobs
            await self._await_results(process, futures)
            return [future.result() for future in futures.values()]
        finally:
            self._calls.remove(call)
            for job_id in call:
                self._pending.pop(job_id, None)
                self._on_progress.pop(job_id, None)
                self._began.pop(job_id, None)

    async def cancel(self, job_id: int) -> bool:
        """Ask the engine to stop `job_id` between two denoising steps; False if it is not in hand."""
        process = self._process
        future = self._pending.get(job_id)
        if future is None or future.done() or process is None or process.stdin is None:
            return False
        try:
            process.stdin.write(wire.encode(Cancel(job_id=job_id)))
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def _await_results(self, process: asyncio.subprocess.Process,
                             futures: Mapping[int, asyncio.Future[Outcome]]) -> None:
        """Wait for one call's outcomes; kill the engine if it stalls, or if the call runs past its
        time limit (counted from when the engine started it; from now if nothing is ahead of it)."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        if len(self._calls) == 1:
            self._last_heard = sent  # the engine was idle: its silence counts from now
        waiting = set(futures.values())
        while True:
            started = min((self._began[job_id] for job_id in futures if job_id in self._began), default=None)
            if started is None and not any(job_id in self._behind() for job_id in futures):
                started = sent
            deadline = math.inf if started is None else started + self._job_timeout * len(futures)
            silent = loop.time() - self._last_heard
            wait = min(self._stall_seconds - silent, deadline - loop.time(), 5.0)
            done, waiting = await asyncio.wait(waiting, timeout=max(wait, 0.01))
            if not waiting:
                return
            if process.returncode is not None or process is not self._process:
                pass  # it exited: the reader fails what it held
            elif loop.time() >= deadline:
                log.error("engine process %s: jobs %s ran past the time limit of %.0f s; killing it",
                          process.pid, list(futures), self._job_timeout)
                self._timed_out.update(futures)
            elif loop.time() - self._last_heard >= self._stall_seconds:
                log.error("engine process %s said nothing for %.0f s while holding a job; killing it",
                          process.pid, self._stall_seconds)
                self._stall_reason = f"the engine stalled (silent for {self._stall_seconds:.0f} s) and was restarted"
            else:
                continue
            if process.returncode is None:
                process.kill()  # the reader fails the jobs and the supervisor restarts the engine
            await asyncio.wait(waiting)
            return

    async def close(self) -> None:
        self._closing = True
        await self._stop_process()
        if self._supervisor is not None:
            self._supervisor.cancel()  # it may be waiting out a restart back-off
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass

    async def _supervise(self) -> None:
        failures, last_reason = 0, None
        while not self._closing:
            try:
                started = await self._run_once()
                reason = self.last_error
            except OSError as error:  # the command itself cannot run
                log.error("could not start the engine process: %s", error)
                reason = f"the engine process could not be started: {error}"
                self._fail_ready(reason)
                started = False
            if self._closing:
                return
            if not started and reason is not None and reason == last_reason:
                # The same failure twice before Ready (a model that cannot load, a missing command):
                # a third try would fail alike, and restarting for ever would only fill the log.
                self._go_down(reason)
                return
            failures = 0 if started else failures + 1
            last_reason = None if started else reason
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            log.warning("engine exited; restarting in %.0f s", delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> bool:
        """Run one engine process to its end; True if it got as far as Ready. If it did not,
        `last_error` says why."""
        if self._ready is None or self._ready.done():
            self._ready = asyncio.get_running_loop().create_future()  # jobs now wait for this attempt
        self.last_error = None
        self._spawned_at = asyncio.get_running_loop().time()
        self._process = process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            limit=LINE_LIMIT,
        )
        log.info("engine process %s started", process.pid)
        self.models = ()
        stderr = asyncio.create_task(self._forward_stderr(process))
        try:
            await self._read(process)
        except Exception:
            # An unreadable or oversized line, or a bug of ours: never leave jobs waiting on an
            # engine we cannot follow any more.
            log.exception("lost track of engine process %s; killing it", process.pid)
            if process.returncode is None:
                process.kill()
        code = await process.wait()
        await stderr
        became_ready = self._ready.done() and not self._ready.cancelled() and self._ready.exception() is None
        if not self._closing:
            log.error("engine process %s exited with code %s", process.pid, code)
        behind = set(self._behind())
        for job_id, future in self._pending.items():
            if future.done():
                continue
            if job_id in self._timed_out:
                future.set_result(Failure(FailureKind.TIMED_OUT,
                                          f"the job took longer than the limit of {self._job_timeout:.0f} s and was "
                                          "stopped"))
            elif job_id in behind:
                future.set_result(Failure(FailureKind.UNSENT, "the engine stopped before it started the job"))
            else:  # started, and stopped with the engine (by another job's time limit, maybe): once more
                future.set_result(Failure(FailureKind.CRASHED,
                                          self._stall_reason or f"the engine process exited with code {code}"))
        self._stall_reason = None
        self._timed_out.clear()
        if self._closing:
            self._fail_ready("the bot is shutting down")
        elif became_ready:
            self._ready = asyncio.get_running_loop().create_future()  # jobs wait for the restart
        else:
            # An engine that cannot load its model would make jobs wait forever: fail them now,
            # and keep failing new ones at once until the next attempt starts.
            self.last_error = self.last_error or f"the engine process exited with code {code} before it was ready"
            self._fail_ready(self.last_error)
        self._spawned_at = None
        return became_ready

    def _behind(self) -> list[int]:
        """The jobs in hand that the engine has not started: sent behind a call it has not answered
        yet, and no progress heard of them (the engine says step 0 as it starts a job)."""
        behind, ahead_unanswered = [], False
        for call in self._calls:
            behind += [job_id for job_id in call if ahead_unanswered and job_id not in self._began]
            ahead_unanswered = ahead_unanswered or any(not self._pending[job_id].done() for job_id in call
                                                       if job_id in self._pending)
        return behind

    def _go_down(self, reason: str) -> None:
        """Stop restarting: jobs fail at once with `reason`, the log and `on_down` say why."""
        self.down = reason
        self._fail_ready(reason)
        log.error("the image engine is down: it failed to start twice in a row the same way, so it is not restarted "
                  "until the bot is (fix the cause first): %s", reason)
        if self.on_down is not None:
            try:
                self.on_down(reason)
            except Exception:
                log.exception("could not report that the engine is down")

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and self._ready is not None
        async for line in process.stdout:
            message = wire.decode(line)
            self._last_heard = asyncio.get_running_loop().time()
            if isinstance(message, Ready) and message.protocol != PROTOCOL_VERSION:
                self.last_error = (f"the engine speaks protocol version {message.protocol} and the bot version "
                                   f"{PROTOCOL_VERSION}: run the same Dreambot release on both")
                log.error("%s", self.last_error)
                process.kill()  # and it counts as one that never became ready
                return
            if isinstance(message, Ready):
                self.info, self.last_error = message, None
                took = None if self._spawned_at is None else asyncio.get_running_loop().time() - self._spawned_at
                self._spawned_at = None
                log.info("engine ready: %s on %s (%s), safety checker %s%s", message.model, message.device,
                         message.dtype, message.safety_checker, "" if took is None else f", in {took:.1f} s")
                if not self._ready.done():
                    self._ready.set_result(message)
                if took is not None:
                    await self._remember_start(took)
            elif isinstance(message, Loaded):
                self.models = message.models
            elif isinstance(message, Fatal):
                self.last_error = message.message
                log.error("engine could not start: %s", message.message)
            elif isinstance(message, Progress):
                if message.job_id in self._pending:
                    self._began.setdefault(message.job_id, self._last_heard)
                report_progress(self._on_progress, message)
            elif not isinstance(message, (GenerateResult, EngineError)):
                log.warning("engine sent a %s, which only the bot sends", type(message).__name__)
            elif message.job_id not in self._pending or self._pending[message.job_id].done():
                log.warning("engine sent %s for job %s, which is not a job in hand",
                            type(message).__name__, message.job_id)
            elif isinstance(message, GenerateResult):
                self._pending[message.job_id].set_result(message)
            elif isinstance(message, EngineError):
                self._pending[message.job_id].set_result(failure_of(message))

    async def _remember_start(self, seconds: float) -> None:
        self.expected_start = seconds
        if self.on_started is not None:
            try:
                await self.on_started(seconds)
            except Exception:  # a number for a notice is not worth the engine
                log.exception("could not remember how long the engine took to start")

    def _fail_ready(self, reason: str) -> None:
        if self._ready is None or self._ready.done():
            self._ready = asyncio.get_running_loop().create_future()
        self._ready.set_exception(EngineUnavailable(reason))
        self._ready.exception()  # marked as seen: waiters get it, nobody else needs to

    async def _forward_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            engine_log.info("%s", line.decode(errors="replace").rstrip())

    async def _stop_process(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        serving = self._ready is not None and self._ready.done() and not self._ready.exception()
        if serving and process.stdin is not None:
            process.stdin.close()  # the engine finishes the job in hand and ends at end of input
        else:
            process.terminate()  # still loading the model: nothing to finish
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()


def report_progress(callbacks: Mapping[int, ProgressCallback], progress: Progress) -> None:
    """Tell the job's progress callback, if it has one; a failing callback is logged, never raised."""
    callback = callbacks.get(progress.job_id)
    if callback is not None:
        try:
            callback(progress)
        except Exception:
            log.exception("progress callback failed")


def engine_environment(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The engine's environment: ours with the resolved engine settings, and never the Discord token."""
    env = {key: value for key, value in base.items() if key != "DISCORD_TOKEN"}
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env

