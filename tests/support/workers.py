"""The bot's queue and a real NATS server, with real `python -m engine worker` processes (or stand-ins
with no model, for `bench/workers.py`): the pieces of the several-hosts setup, without Discord."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bot.outcome import Outcome
from bot.queue import JobQueue, Ticket
from bot.store import Store
from bot.workers import WorkerHub
from dreambot.request import GenerateRequest
from dreambot.settings import setting_names
from dreambot.wire import Job, Progress
from tests.support.nats import NatsServer


class WorkerProcess:
    """`python -m engine worker` (or any command speaking its part), its log in a file."""

    def __init__(self, name: str, url: str, workdir: Path, model: Path | str, command: list[str] | None = None,
                 **settings: str) -> None:
        self.name = name
        self.log_path = workdir / f"worker-{name}.log"
        self.command = command or [sys.executable, "-m", "engine", "worker"]
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in setting_names()},
            "NATS_URL": url, "WORKER_NAME": name, "SD_MODEL": str(model), "SD_DEVICE": "cpu",
            "MODELS_DIR": str(workdir / "no-models"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            **settings,
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(*self.command, env=self.env, stdout=log, stderr=log)
        log.close()
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
        return await self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Rig:
    """A store, a queue and its WorkerHub on a NATS server: the bot's side, as `python -m bot` builds it."""

    def __init__(self, workdir: Path, nats: NatsServer, *, lease_seconds: float = 3.0, max_per_member: int = 100,
                 max_batch: int = 1, job_timeout: float = 600.0) -> None:
        self.job_timeout = job_timeout
        self.workdir = workdir
        self.nats = nats
        self.lease_seconds = lease_seconds
        self.max_per_member = max_per_member
        self.max_batch = max_batch
        self.store: Store | None = None
        self.hub: WorkerHub | None = None
        self.queue: JobQueue | None = None
        self.progress: dict[int, list[Progress]] = {}

    async def start(self, *, collect: Callable | None = None) -> Rig:
        self.store = await Store.open(self.workdir / "dreambot.sqlite3")
        self.hub = WorkerHub([self.nats.url], self.store, lease_seconds=self.lease_seconds,
                             job_timeout=self.job_timeout)
        self.queue = JobQueue(self.store, [], hub=self.hub, max_per_member=self.max_per_member,
                              max_queued=10_000, max_batch=self.max_batch)
        assert await self.hub.start()
        await self.hub.collect(collect or self.queue.collected)  # as the bot does at start: calls the roll
        self.queue.start()
        return self

    async def close(self, grace: float = 0.0) -> None:
        assert self.queue is not None and self.hub is not None and self.store is not None
        await self.queue.close(grace=grace)
        await self.hub.close()
        await self.store.close()

    async def crash(self) -> None:
        """Stop as a killed bot would: nothing requeued, nothing said, the rows left as they are."""
        assert self.queue is not None and self.hub is not None and self.store is not None
        tasks = [*self.queue._workers, *self.queue._runs, *self.hub._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.hub._nc is not None:
            await self.hub._nc.close()
        await self.store.close()

    async def record(self, prompt: str, *, user: int = 1, steps: int = 4, seed: int = 1, **fields) -> int:
        assert self.store is not None
        request = GenerateRequest(prompt=prompt, num_inference_steps=steps, seed=seed, width=64, height=64, **fields)
        return await self.store.create_job(request, user_id=user, guild_id=None, channel_id=None, interaction_id=None,
                                           model="tiny")

    async def submit(self, prompt: str, *, user: int = 1, steps: int = 4, seed: int = 1, **fields) -> Ticket:
        assert self.queue is not None and self.store is not None
        job_id = await self.record(prompt, user=user, steps=steps, seed=seed, **fields)
        request = (await self.store.get_job(job_id)).request  # type: ignore[union-attr]
        self.progress[job_id] = []
        return self.queue.submit(Job(job_id, request), user, self.progress[job_id].append, check=False)

    async def wait_for_workers(self, count: int, timeout: float = 90.0) -> None:
        assert self.hub is not None
        deadline = time.monotonic() + timeout
        while len(self.hub.workers) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.hub.workers)} of {count} worker(s) came")
            await asyncio.sleep(0.1)


async def outcome(ticket: Ticket, timeout: float = 120.0) -> Outcome:
    return await asyncio.wait_for(asyncio.shield(ticket.result), timeout)
