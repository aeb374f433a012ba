"""The bot's engine supervision, against small stand-in engines that misbehave on purpose."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import pytest

from bot import engine_client
from bot.engine_client import EngineClient, engine_environment
from bot.outcome import Failure, FailureKind
from dreambot.request import GenerateRequest
from dreambot.wire import PROTOCOL_VERSION, GenerateResult, Job

# A stand-in for `python -m engine serve` that speaks the protocol and then does what MODE says.
ENGINE = textwrap.dedent("""
    import os, sys, time
    from dreambot import wire
    from dreambot.wire import *
    mode = os.environ["MODE"]
    out = sys.stdout.buffer
    def send(m):
        out.write(wire.encode(m)); out.flush()
    if "STARTS" in os.environ:  # one line per start
        with open(os.environ["STARTS"], "a") as starts:
            starts.write("started\\n")
        attempt = len(open(os.environ["STARTS"]).readlines())
    if mode == "fatal":
        send(Fatal("SD_MODEL 'x' is not a model")); sys.exit(1)
    if mode == "fatal-varies":  # a different reason each time: it may be passing trouble
        send(Fatal(f"attempt {attempt} failed")); sys.exit(1)
    if mode == "exit":  # gone before Ready, saying nothing
        sys.exit(3)
    if mode == "slow-start":
        time.sleep(1)
    version = PROTOCOL_VERSION - 1 if mode == "old" else PROTOCOL_VERSION
    send(Ready(model="stand-in", device="cpu", dtype="float32", safety_checker="none", protocol=version))
    if mode == "steps":  # 20 steps of 0.1 s a job; the first job answers once the next is in (5 s at most)
        import queue, threading
        jobs = queue.Queue()
        threading.Thread(target=lambda: [jobs.put(wire.decode(line)) for line in sys.stdin.buffer], daemon=True).start()
        while True:
            job = jobs.get()
            for step in range(1, 21):
                time.sleep(0.1)
                send(Progress(job.job_id, step, 20))
            deadline = time.monotonic() + 5
            while job.request.prompt == "first" and jobs.empty() and time.monotonic() < deadline:
                time.sleep(0.01)
            waiting = "next in hand" if not jobs.empty() else "nothing in hand"
            send(GenerateResult(job.job_id, (), job.request.seed, 8, 8, waiting))
    if mode == "hang-check":  # the first job's pictures are made, their check hangs; the next job runs on
        import queue, threading
        jobs = queue.Queue()
        threading.Thread(target=lambda: [jobs.put(wire.decode(line)) for line in sys.stdin.buffer], daemon=True).start()
        first = jobs.get()
        send(Progress(first.job_id, 0, 2)); send(Progress(first.job_id, 2, 2))
        second = jobs.get()
        send(Progress(second.job_id, 0, 2))
        while True:
            send(Progress(second.job_id, 1, 2)); time.sleep(0.2)
    for line in sys.stdin.buffer:
        job = wire.decode(line)
        if mode == "garbage":
            out.write(b"this is not json\\n"); out.flush()
        elif mode == "stall":
            time.sleep(3600)
        elif mode == "error":
            send(EngineError(job.job_id, "CUDA out of memory", "internal"))
        elif mode == "slow":  # one second per job; the result names this engine
            time.sleep(1)
            send(GenerateResult(job.job_id, (), job.request.seed, 8, 8, os.environ["NAME"]))
        elif mode == "busy":  # reports steps for ever: alive, never done
            while True:
                send(Progress(job.job_id, 1, 2)); time.sleep(0.2)
        elif mode == "batch":
            for each in job.jobs:
                send(Progress(each.job_id, 1, 1))
                if each.request.prompt == "bad":
                    send(EngineError(each.job_id, "no such thing", "invalid"))
                else:
                    send(GenerateResult(each.job_id, (), each.request.seed, 8, 8, "stand-in"))
        elif mode == "die":  # a job that takes the engine down with it
            os._exit(3)
        elif mode == "die-late":  # a job that takes the engine down after its first step
            send(Progress(job.job_id, 1, 2)); time.sleep(0.5)
            os._exit(3)
        elif mode == "wrong-job":
            send(GenerateResult(job.job_id + 1, (), 1, 8, 8, "stand-in"))
            send(GenerateResult(job.job_id, (), 1, 8, 8, "stand-in"))
""")

JOB = Job(7, GenerateRequest(prompt="a fox", seed=1))


def client(mode: str, **kwargs) -> EngineClient:
    env = {**os.environ, "MODE": mode}
    return EngineClient(env, command=[sys.executable, "-c", ENGINE], **kwargs)


def failed(outcome, kind: FailureKind, says: str) -> None:
    """The outcome is a failure of this kind, whose message says `says`."""
    assert isinstance(outcome, Failure) and outcome.kind is kind and says in outcome.message, outcome


async def test_an_engine_error_fails_the_job_and_the_engine_keeps_serving() -> None:
    engine = client("error")
    engine.start()
    try:
        for _ in range(2):
            failed(await engine.generate(JOB), FailureKind.INTERNAL, "CUDA out of memory")
        assert engine.info.model == "stand-in"
    finally:
        await engine.close()


async def test_a_result_for_another_job_is_not_taken_for_this_one() -> None:
    engine = client("wrong-job")
    engine.start()
    try:
        assert (await engine.generate(JOB)).job_id == 7
    finally:
        await engine.close()


async def test_an_unreadable_line_kills_the_engine_and_fails_the_job() -> None:
    engine = client("garbage")
    engine.start()
    try:
        first = (await engine.wait_ready(), engine.pid)[1]
        failed(await asyncio.wait_for(engine.generate(JOB), 10), FailureKind.CRASHED,
               "exited with code -9")
        await asyncio.wait_for(engine.wait_ready(), 10)  # restarted
        assert engine.pid not in (None, first)
    finally:
        await engine.close()


async def test_a_silent_engine_is_killed_and_restarted() -> None:
    engine = client("stall", stall_seconds=0.5)
    engine.start()
    try:
        failed(await asyncio.wait_for(engine.generate(JOB), 10), FailureKind.CRASHED,
               "stalled")
    finally:
        await engine.close()


async def test_an_engine_that_cannot_start_fails_jobs_at_once() -> None:
    engine = client("fatal")
    engine.start()
    try:
        failed(await asyncio.wait_for(engine.generate(JOB), 10), FailureKind.UNAVAILABLE,
               "SD_MODEL 'x' is not a model")
    finally:
        await engine.close()


async def test_an_engine_of_another_protocol_version_is_refused_with_the_reason() -> None:
    engine = client("old")
    engine.start()
    try:
        failed(await asyncio.wait_for(engine.generate(JOB), 10), FailureKind.UNAVAILABLE,
               f"protocol version {PROTOCOL_VERSION - 1} and the bot version "
                                                    f"{PROTOCOL_VERSION}: run the same Dreambot release")
        assert engine.info is None
    finally:
        await engine.close()


async def test_a_missing_command_is_reported_not_hung() -> None:
    engine = EngineClient(os.environ, command=["/nonexistent/python"])
    engine.start()
    try:
        failed(await asyncio.wait_for(engine.generate(JOB), 10), FailureKind.UNAVAILABLE,
               "could not be started")
    finally:
        await engine.close()


def test_the_engine_never_sees_the_discord_token() -> None:
    env = engine_environment({"DISCORD_TOKEN": "secret", "PATH": "/bin"}, {"SD_MODEL": "tiny"})
    assert env == {"PATH": "/bin", "SD_MODEL": "tiny", "PYTHONUNBUFFERED": "1"}


async def test_a_job_past_the_time_limit_is_stopped_even_while_it_reports_steps() -> None:
    engine = client("busy", job_timeout=1.0)
    engine.start()
    try:
        first = engine.pid
        failed(await engine.generate(JOB), FailureKind.TIMED_OUT,
               "longer than the limit of 1 s")
        await engine.wait_ready()
        assert engine.pid not in (None, first)  # a fresh engine
    finally:
        await engine.close()


async def test_a_batch_gives_each_job_its_own_outcome_and_progress() -> None:
    engine = client("batch")
    engine.start()
    seen = []
    try:
        jobs = [Job(1, GenerateRequest(prompt="a", seed=5)), Job(2, GenerateRequest(prompt="bad", seed=6)),
                Job(3, GenerateRequest(prompt="c", seed=7))]
        outcomes = await engine.generate_batch(jobs, {1: seen.append, 3: seen.append})
        assert isinstance(outcomes[0], GenerateResult) and outcomes[0].seed == 5
        failed(outcomes[1], FailureKind.INVALID, "")
        assert isinstance(outcomes[2], GenerateResult) and outcomes[2].seed == 7
        assert sorted(p.job_id for p in seen) == [1, 3]
    finally:
        await engine.close()


async def test_each_engine_takes_the_next_job_when_it_is_free(tmp_path) -> None:
    from bot.queue import JobQueue
    from bot.store import Store

    store = await Store.open(tmp_path / "bot.sqlite3")
    engines = [EngineClient({**os.environ, "MODE": "slow", "NAME": f"engine {i}"},
                            command=[sys.executable, "-c", ENGINE]) for i in range(2)]
    queue = JobQueue(store, engines, max_batch=1)
    for engine in engines:
        engine.start()
    queue.start()
    try:
        tickets = []
        for member in range(4):
            request = GenerateRequest(prompt="a fox", seed=member)
            job_id = await store.create_job(request, user_id=member, guild_id=1, channel_id=2, interaction_id=None,
                                            model="m")
            tickets.append(queue.submit(Job(job_id, request), member))
        await until(lambda: len(queue.running()) == 2, 10)  # both engines busy at once, two jobs waiting
        assert len(queue.running()) == 2 and len(queue.queued()) == 2
        results = await asyncio.gather(*(ticket.result for ticket in tickets))
        assert sorted(result.model for result in results) == ["engine 0", "engine 0", "engine 1", "engine 1"]
    finally:
        await queue.close(grace=0)
        for engine in engines:
            await engine.close()
        await store.close()


async def test_a_call_sent_behind_one_the_engine_never_finished_runs_again_uncounted() -> None:
    engine = client("die-late")
    engine.start()
    try:
        started = asyncio.Event()
        first = asyncio.create_task(engine.generate(JOB, lambda progress: started.set()))
        await asyncio.wait_for(started.wait(), 10)
        second = await engine.generate(Job(8, GenerateRequest(prompt="a cat", seed=2)))
        failed(await first, FailureKind.CRASHED, "exited with code 3")  # it counts: it may be the cause
        failed(second, FailureKind.UNSENT, "before it started the job")  # it never started: it does not
    finally:
        await engine.close()


async def test_a_time_limit_stops_only_the_call_that_ran_past_it() -> None:
    engine = client("hang-check", job_timeout=1.0)
    engine.start()
    try:
        made = asyncio.Event()
        first = asyncio.create_task(engine.generate(JOB, lambda progress: made.set() if progress.step == 2 else None))
        await asyncio.wait_for(made.wait(), 10)
        second = await asyncio.wait_for(engine.generate(Job(8, GenerateRequest(prompt="a cat", seed=2))), 20)
        failed(await first, FailureKind.TIMED_OUT, "longer than the limit of 1 s")
        failed(second, FailureKind.CRASHED, "exited with code -9")  # stopped with it: it runs once more
    finally:
        await engine.close()


async def test_the_next_job_is_checked_and_sent_as_the_one_in_hand_ends(tmp_path) -> None:
    """The engine is sent its next job before it answers the last (`bot.queue.Lead`), so it never
    waits for the bot; the start-of-job gate still checks that job only near the end of the last."""
    from bot.queue import JobQueue
    from bot.store import Store

    store = await Store.open(tmp_path / "bot.sqlite3")
    engine = client("steps")
    checked: dict[int, tuple[int, int] | None] = {}  # job -> the first job's step when it was checked

    async def gate(job: Job) -> Job:
        checked[job.job_id] = first.step if first.job.job_id != job.job_id else None
        return job

    queue = JobQueue(store, engine, gate=gate)
    engine.start()
    try:
        tickets = []
        for member, prompt in enumerate(["first", "second"]):
            request = GenerateRequest(prompt=prompt, seed=member)
            job_id = await store.create_job(request, user_id=member, guild_id=1, channel_id=2, interaction_id=None,
                                            model="m")
            tickets.append(queue.submit(Job(job_id, request), member))
        first, second = tickets
        queue.start()
        results = await asyncio.wait_for(asyncio.gather(*(ticket.result for ticket in tickets)), 30)
        assert [result.model for result in results] == ["next in hand", "nothing in hand"]
        step = checked[second.job.job_id]
        assert step is not None and step[0] >= 10, step  # about LEAD_SECONDS before the end, not at its start
    finally:
        await queue.close(grace=0)
        await engine.close()
        await store.close()


@pytest.fixture
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_client, "RESTART_DELAYS", (0.05,) * 5)


def starts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def counting(mode: str, tmp_path: Path, **kwargs) -> EngineClient:
    """The fake engine in `mode`, each of its starts counted in tmp_path/starts (`starts`)."""
    return EngineClient({**os.environ, "MODE": mode, "STARTS": str(tmp_path / "starts")},
                        command=[sys.executable, "-c", ENGINE], **kwargs)


async def until(condition, seconds: float, every: float = 0.05) -> None:
    """Wait until `condition()` holds, for `seconds` at most (the test's asserts then say what failed)."""
    for _ in range(int(seconds / every)):
        if condition():
            return
        await asyncio.sleep(every)


async def test_an_engine_that_fails_to_start_twice_the_same_way_stays_down(tmp_path: Path, quick_restarts) -> None:
    told = []
    engine = counting("fatal", tmp_path, on_down=told.append)
    engine.start()
    try:
        await until(lambda: engine.down is not None, 20)
        assert engine.down == "SD_MODEL 'x' is not a model" and told == [engine.down]
        await asyncio.sleep(0.5)  # no third start
        assert starts(tmp_path / "starts") == 2 and engine.pid is None and engine.starting is None
        failed(await asyncio.wait_for(engine.generate(JOB), 1), FailureKind.UNAVAILABLE, "SD_MODEL 'x' is not a model")
    finally:
        await engine.close()


async def test_an_engine_that_exits_before_ready_twice_stays_down(tmp_path: Path, quick_restarts) -> None:
    engine = counting("exit", tmp_path)
    engine.start()
    try:
        await until(lambda: engine.down is not None, 20)
        assert engine.down == "the engine process exited with code 3 before it was ready"
        assert starts(tmp_path / "starts") == 2
    finally:
        await engine.close()


async def test_an_engine_failing_in_different_ways_is_still_restarted(tmp_path: Path, quick_restarts) -> None:
    engine = counting("fatal-varies", tmp_path)
    engine.start()
    try:
        await until(lambda: starts(tmp_path / "starts") >= 4, 30)
        assert starts(tmp_path / "starts") >= 4 and engine.down is None
    finally:
        await engine.close()


async def test_an_engine_that_crashes_after_ready_is_restarted_each_time(tmp_path: Path, quick_restarts) -> None:
    told = []
    engine = counting("die", tmp_path, on_down=told.append)
    engine.start()
    try:
        for _ in range(3):  # the same crash three times in a row: a job's fault, not the start's
            await asyncio.wait_for(engine.wait_ready(), 20)
            failed(await asyncio.wait_for(engine.generate(JOB), 20), FailureKind.CRASHED, "exited with code 3")
        await asyncio.wait_for(engine.wait_ready(), 20)
        assert starts(tmp_path / "starts") == 4 and engine.down is None and told == []
    finally:
        await engine.close()


async def test_a_start_is_shown_while_it_lasts_and_measured(tmp_path: Path) -> None:
    measured = []

    async def remember(seconds: float) -> None:
        measured.append(seconds)

    engine = EngineClient({**os.environ, "MODE": "slow-start", "SD_MODEL": str(tmp_path / "anime.safetensors")},
                          command=[sys.executable, "-c", ENGINE], expected_start=42.0, on_started=remember)
    assert engine.starting is None  # not started yet
    engine.start()
    try:
        await until(lambda: engine.starting is not None, 4, every=0.02)
        model, left = engine.starting
        assert model == "anime" and 40.0 < left <= 42.0  # the model's name, never its path; the time left
        await asyncio.wait_for(engine.wait_ready(), 20)
        assert engine.starting is None
        assert len(measured) == 1 and 1.0 <= measured[0] < 20 and engine.expected_start == measured[0]
    finally:
        await engine.close()

