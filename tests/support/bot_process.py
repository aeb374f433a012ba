"""`python -m bot` as a real subprocess against the loopback fake Discord, for the tests and the
benchmarks alike, and the small waits they share."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dreambot.settings import setting_names
from tests.support.fake_discord import FakeDiscord

TOKEN = "MTE5.fake-bot-token.never-logged"


class BotProcess:
    """`python -m bot` in its own working directory, its log in a file."""

    def __init__(self, fake: FakeDiscord, workdir: Path, model: Path | str, **settings: str) -> None:
        self.fake = fake
        self.workdir = workdir
        self.log_path = workdir / "bot.log"
        self.database = workdir / "data" / "dreambot.sqlite3"
        self.env = {
            **self.base_environment(),
            "DISCORD_TOKEN": TOKEN,
            "DISCORD_API_BASE": fake.api_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "SD_MODEL": str(model),
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        self.process: asyncio.subprocess.Process | None = None

    @staticmethod
    def base_environment() -> dict[str, str]:
        """Ours, without the Discord and engine settings a developer's shell may hold (one list for
        the tests and the benchmarks: the settings model's)."""
        return {k: v for k, v in os.environ.items() if k not in setting_names()}

    async def start(self, *args: str) -> BotProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        seen = self.fake.identify_count
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *args, cwd=self.workdir, env=self.env, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + 60
        while self.fake.identify_count == seen or "dream" not in self.fake.commands:
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"the bot did not come up:\n{self.log()}")
            await asyncio.sleep(0.05)
        return self

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def jobs(self, where: str = "1", *args) -> list[dict]:
        """The job rows, oldest first, read-only, each with its request's fields beside the row's own
        columns (the row's width and height, once the job ran, are the size the engine made)."""
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        connection.row_factory = sqlite3.Row
        try:
            rows = connection.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", args).fetchall()
        finally:
            connection.close()
        return [{**json.loads(row["request"]), **dict(row)} for row in rows]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def engine_pid(self) -> int | None:
        """The engine process: the bot's child."""
        assert self.process is not None
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        children = path.read_text().split() if path.exists() else []
        return int(children[0]) if children else None


async def until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait until `predicate()` holds (polled every 50 ms); TimeoutError after `timeout` seconds."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the condition never came true")
