"""`python -m engine serve`: the engine process the bot starts and supervises.

Reads jobs, batches and cancels as JSON lines on stdin and writes progress, results and errors as
JSON lines (see `dreambot.wire`). The protocol stream gets fd 1 to itself: whatever a library
prints goes to stderr, which the bot logs.

Calls run one after another, in the order read. A call's pictures are checked for safety, encoded
and sent on a thread of their own (`Finishing`) while the next call already denoises; answers go
out in the order of the calls.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, BinaryIO

from dreambot import wire
from dreambot.request import InvalidRequest
from dreambot.settings import EngineSettings, StartupError
from dreambot.wire import PROTOCOL_VERSION, Batch, Cancel, EngineError, Fatal, Job, Loaded, Progress, Ready
from engine.progress import JobCancelled, Preview

if TYPE_CHECKING:
    from dreambot.wire import GenerateResult
    from engine.cache import ModelCache
    from engine.finishing import Unchecked

log = logging.getLogger("engine")

# A job's progress carries a preview picture at most this often (seconds); the other steps' don't.
PREVIEW_SECONDS = 2.0
# A job's step reports go out at most this often (seconds); its start (step 0), its last step and a
# step with a preview always do. The bot shows a job's progress every few seconds, and sees that a
# call nears its end with a report inside LEAD_SECONDS (0.5 s, `bot.queue.Lead`). A report for every
# step of a fast model (dozens a second) woke the bot, and on a worker the network, for nothing,
# and slowed the denoising beside it: bench/throughput.py, whole bot / bare loop, 0.937 with a
# report per step, 0.959 at 0.1 s, 0.959 to 0.971 at 0.25 s (docs/benchmarks.md, section 3).
PROGRESS_SECONDS = 0.25
OOM_MESSAGE = "The GPU ran out of memory for this job: try a smaller size or fewer images."


def protocol_error(job_id: int, error: Exception) -> EngineError:
    """What the bot is told when `error` stopped job `job_id`: the one mapping from the engine's
    exceptions to the protocol's error kinds (`dreambot.wire.EngineError`)."""
    if isinstance(error, JobCancelled):
        return EngineError(job_id=job_id, message="cancelled", kind="cancelled")
    if isinstance(error, InvalidRequest):
        return EngineError(job_id=job_id, message=str(error), kind="invalid")
    torch = sys.modules.get("torch")  # whoever raised `error` loaded it; this module never does
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return EngineError(job_id=job_id, message=OOM_MESSAGE, kind="oom")
    return EngineError(job_id=job_id, message=f"{type(error).__name__}: {error}", kind="internal")


class HeldJobs:
    """The jobs the engine holds (queued or running) and which of them the bot cancelled.

    The stdin reader adds and cancels, the job loop asks and releases: a lock keeps them apart.
    A Cancel for a job the engine does not hold (unknown, or already answered) is ignored, so it
    cannot stop a later job that happens to reuse the id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[int] = set()
        self._cancelled: set[int] = set()

    def hold(self, jobs: list[Job] | tuple[Job, ...]) -> None:
        with self._lock:
            self._held.update(job.job_id for job in jobs)

    def cancel(self, job_id: int) -> None:
        with self._lock:
            if job_id not in self._held:
                log.info("ignoring a cancel for job %s, which this engine does not hold", job_id)
                return
            self._cancelled.add(job_id)

    def cancelled(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._cancelled

    def release(self, job_id: int) -> None:
        with self._lock:
            self._held.discard(job_id)
            self._cancelled.discard(job_id)


def serve(settings: EngineSettings, stdin: BinaryIO | None = None) -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = stdin or sys.stdin.buffer

    writing = threading.Lock()  # the job loop and the finishing thread both write

    def send(message: wire.Message) -> None:
        line = wire.encode(message)
        with writing:
            out.write(line)
            out.flush()

    cache = start(settings, send)
    if isinstance(cache, int):
        return cache
    # Stdin is read beside the jobs, so that a Cancel reaches the job it stops between two steps.
    work: queue.Queue[list[Job] | None] = queue.Queue()
    held = HeldJobs()
    threading.Thread(target=_read, args=(stdin, work, held), name="stdin", daemon=True).start()
    # End of input: the jobs already read are finished (the bot's graceful stop), then we exit.
    run_jobs(cache, work, held, send)
    return 0


def start(settings: EngineSettings, send: Callable[[wire.Message], None]) -> ModelCache | int:
    """Load the default model and say Ready and Loaded; or say Fatal and return the exit code.
    Shared by `serve` (the bot's own engine) and `python -m engine worker` (one on another host)."""
    logging.getLogger("engine").setLevel(settings.log_level)
    # A model that is not there, or not shaped like one, is said in one line before torch is even
    # imported (the bot checked the same at its start; an operator may run this alone).
    try:
        watched = settings.checked_catalogue()
    except StartupError as error:
        line = f"invalid settings: {error}"
        print(line, file=sys.stderr)
        send(Fatal(message=line))
        return 2

    from engine.cache import ModelCache, default_budget  # after the fd swap: importing torch may print
    from engine.loading import ModelLoadError, resolve_device
    from engine.pipeline import Engine

    _keep_prompts_out_of_the_log()

    try:
        budget = int(settings.model_cache_gb * 1024 ** 3) if settings.model_cache_gb else \
            default_budget(resolve_device(settings.sd_device))
        # One scan of the models, the LoRAs and the embeddings for every model this engine loads.
        installed = settings.installed(watched.current())
        engine = Engine.load(settings, watched.current().resolve(None), installed=installed)  # or stop here
        cache = ModelCache(watched.current, partial(Engine.load, settings, upscaler=engine.upscaler,
                                                    installed=installed), budget)
        cache.hold(engine)
    except Exception as error:
        torch = sys.modules.get("torch")  # loaded by now; this module never imports it
        out_of_memory = torch is not None and isinstance(error, torch.OutOfMemoryError)
        if isinstance(error, ModelLoadError | OSError) or out_of_memory:
            # The model's files or the device: the operator's to fix, said in one line (the bot shows
            # it); the traceback only at LOG_LEVEL=DEBUG.
            reason = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
            log.error("the engine could not start: %s", reason)
            log.debug("the engine could not start", exc_info=True)
        else:  # a bug, ours or a library's: the whole traceback
            reason = f"{type(error).__name__}: {error}"
            log.exception("the engine could not start")
        send(Fatal(message=reason))
        return 1
    send(Ready(model=engine.model, device=str(engine.device), dtype=str(engine.dtype).removeprefix("torch."),
               safety_checker=engine.safety.name, protocol=PROTOCOL_VERSION))
    send(Loaded(models=cache.held))
    return cache


def run_jobs(cache: ModelCache, work: queue.Queue[list[Job] | None], held: HeldJobs,
             send: Callable[[wire.Message], None]) -> None:
    """Run the jobs put on `work` (those of one call together), answering each through `send`,
    until a None comes; then return once every answer is sent. `send` must be safe to call from
    two threads: the answers go out from `Finishing`'s."""
    finishing = Finishing(held, send)
    try:
        while (jobs := work.get()) is not None:
            _run(cache, jobs, held, send, finishing.put, finishing.drain)
    finally:
        finishing.close()


# What a call's jobs came to, in their order: pictures to check and encode, a result, or what
# stopped the job.
Answers = list[tuple[int, "Unchecked | GenerateResult | Exception"]]


class Finishing:
    """The thread that checks, encodes and sends each call's answers (`answer`), in the order put,
    while the job loop runs the next call. The hand-off holds one call's answers waiting at most (so
    three calls' pictures at most: one being made, one waiting, one being checked): a loop that
    makes pictures faster than they are checked waits, rather than piling them up in memory.

    If the thread fails (it could not write to the bot, which is gone), it keeps taking what is put,
    sending nothing, and `put` and `close` raise its error: the job loop stops as it would have had
    it failed itself, and the engine exits instead of waiting on a thread that will never take more."""

    def __init__(self, held: HeldJobs, send: Callable[[wire.Message], None]) -> None:
        self._held, self._send = held, send
        self._queue: queue.Queue[Answers | None] = queue.Queue(maxsize=1)
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="finishing", daemon=True)
        self._thread.start()

    def put(self, answers: Answers) -> None:
        self._raise_if_failed()
        self._queue.put(answers)

    def drain(self) -> None:
        """Return once every answer put is sent (before a model load: the pictures being checked hold
        memory, and the check runs on the device too)."""
        self._queue.join()
        self._raise_if_failed()

    def close(self) -> None:
        """Return once every answer put is sent."""
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _run(self) -> None:
        while True:
            answers = self._queue.get()
            try:
                if answers is None:
                    return
                if self._failed is None:
                    answer(answers, self._held, self._send)
            except BaseException as error:
                log.exception("could not send the jobs' answers; the engine stops")
                self._failed = error
            finally:
                self._queue.task_done()


def answer(answers: Answers, held: HeldJobs, send: Callable[[wire.Message], None]) -> None:
    """Send each job's answer (its pictures checked and encoded first, `engine.pipeline.finished`)
    and let go of the job."""
    from engine.pipeline import finished  # loaded by now (`start`); this module does not import torch

    for job_id, outcome in answers:
        result = finished(outcome)  # a failure of the check or the encoding is this job's alone
        send(protocol_error(job_id, result) if isinstance(result, Exception) else result)
        held.release(job_id)


class _NoMemberText(logging.Filter):
    """Drops library warnings that quote a member's prompt (diffusers prints the part of a prompt
    CLIP truncates): the bot's log must never hold members' words (/forget could not erase them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "part of your input was truncated" not in record.getMessage()


def _keep_prompts_out_of_the_log() -> None:
    from diffusers.utils import logging as diffusers_logging

    for handler in diffusers_logging._get_library_root_logger().handlers:
        handler.addFilter(_NoMemberText())


def _read(stdin: BinaryIO, work: queue.Queue[list[Job] | None], held: HeldJobs) -> None:
    try:
        for line in stdin:
            if not line.strip():
                continue
            try:
                message = wire.decode(line)
            except Exception:
                log.exception("ignoring a line of %d bytes that is not a message", len(line))
                continue
            if isinstance(message, Cancel):
                held.cancel(message.job_id)
            elif isinstance(message, Job | Batch):
                jobs = [message] if isinstance(message, Job) else list(message.jobs)
                held.hold(jobs)  # before a Cancel for them can be read
                work.put(jobs)
            else:
                log.error("ignoring a %s message, which is not a job", type(message).__name__)
    finally:
        work.put(None)  # even if reading failed: the job loop must not wait forever


def _run(cache: ModelCache, jobs: list[Job], held: HeldJobs, send: Callable[[wire.Message], None],
         answered: Callable[[Answers], None] | None = None, drain: Callable[[], None] | None = None) -> None:
    """Run one call's jobs; their answers go to `answered` (`Finishing.put`), or are sent here.
    `drain` (`Finishing.drain`) is called before a model is loaded."""
    if answered is None:
        answered = partial(answer, held=held, send=send)
    cancelled: Answers = []
    waiting = []
    for job in jobs:
        if held.cancelled(job.job_id):  # cancelled while it waited its turn: no step to run
            cancelled.append((job.job_id, JobCancelled()))
        else:
            waiting.append(job)
    if cancelled:
        answered(cancelled)
    if not waiting:
        return
    # The jobs of one call share their model (`GenerateRequest.batch_key`): load it if need be.
    before = cache.held

    def loading(model: str, seconds: float | None) -> None:
        if drain is not None:  # the last call's pictures checked first: their memory, and the device's
            drain()
        for job in waiting:
            send(Progress(job_id=job.job_id, step=0, total=job.request.num_inference_steps, loading=model,
                          seconds=seconds))

    try:
        engine = cache.get(waiting[0].request.model, loading)
    except Exception as error:  # an unknown or broken model: these jobs fail, the engine carries on
        answered([(job.job_id, error) for job in waiting])
        return
    finally:
        if cache.held != before:
            send(Loaded(models=cache.held))
    # Step 0: the jobs have started. The bot may have sent the next call already; if the engine dies
    # from here, these jobs are the ones it was running (counted), the next call was never started.
    for job in waiting:
        send(Progress(job_id=job.job_id, step=0, total=job.request.num_inference_steps))
    # The first preview after PREVIEW_SECONDS: the first steps' latents are mostly noise. A preview
    # is drawn before the safety check, so it goes only where flagged images may be shown at all.
    started = time.monotonic()
    next_preview = {job.job_id: started + PREVIEW_SECONDS if job.request.keep_flagged else math.inf
                    for job in waiting}
    reported = dict.fromkeys(next_preview, started)  # step 0's report, just sent

    def on_step(job_id: int, step: int, total: int, preview: Preview) -> None:
        if held.cancelled(job_id):  # checked at every step, reported or not
            raise JobCancelled
        picture = None
        now = time.monotonic()
        if step < total and now >= next_preview[job_id]:  # the result follows the last step
            try:
                picture = preview(0)  # the job's first picture
            except Exception:  # a preview is a nicety: never fail the job over one
                log.exception("could not render a preview of job %s", job_id)
            next_preview[job_id] = time.monotonic() + PREVIEW_SECONDS
        if picture is None and step < total and now - reported[job_id] < PROGRESS_SECONDS:
            return
        reported[job_id] = now
        send(Progress(job_id=job_id, step=step, total=total, preview=picture))

    made: list[Unchecked | Exception]
    try:
        made = engine.make_batch(waiting, {job.job_id: partial(on_step, job.job_id) for job in waiting})
    except Exception as error:  # make_batch answers a job's own failures; this is a bug of ours
        log.exception("jobs %s failed", ", ".join(str(job.job_id) for job in waiting))
        made = [error for _ in waiting]
    answered([(job.job_id, outcome) for job, outcome in zip(waiting, made, strict=True)])
