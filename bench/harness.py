"""What the whole-bot benchmarks share: the loopback fake Discord (tests/support/fake_discord.py) in this
process, `python -m bot` as a subprocess pointed at it, members who send /dream and wait for the
posted pictures, and the percentiles, CPU times and machine description each script prints.

The bot process is started as tests/support/bot_process.py's BotProcess starts it (same environment
variables, its own temporary working directory and database), and is only handed to a benchmark
once its commands are registered and its engine has loaded the model, so no figure includes
start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python bench/x.py` puts bench/ on the path, not the repository

from tests.support.bot_process import BotProcess as TestBotProcess  # noqa: E402
from tests.support.fake_discord import FakeDiscord, Interaction, Reply  # noqa: E402

READY_LINE = re.compile(r"engine ready: (?P<model>.+?) on (?P<device>\S+) \((?P<dtype>[^)]+)\), "
                        r"safety checker (?P<safety>[^\s,]+)")
PROMPTS = tuple(f"a {colour} {shape} on a {background} background"
                for colour in ("red", "orange", "yellow", "green", "blue", "purple")
                for shape in ("circle", "square", "triangle")
                for background in ("white", "black", "gray", "blue"))


# This process's environment without the bot and engine settings a shell may hold (one list for
# the tests and the benchmarks: the settings model's).
clean_environment = TestBotProcess.base_environment


class BotProcess(TestBotProcess):
    """`python -m bot` in its own working directory, its log in a file (tests/support/bot_process.py's, with
    a wait for the engine too)."""

    def __init__(self, fake: FakeDiscord, workdir: Path, model: str, **settings: str) -> None:
        super().__init__(fake, workdir, model, **settings)
        self.engine: dict[str, str] = {}  # what the engine's Ready said: model, device, dtype, safety

    async def start(self, timeout: float = 600.0) -> BotProcess:
        """Start the bot and return once its commands are registered and its engine is ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        seen = self.fake.identify_count
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=self.workdir, env=self.env, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            ready = READY_LINE.search(text)
            if ready and self.fake.identify_count > seen and "dream" in self.fake.commands:
                self.engine = ready.groupdict()
                return self
            if "engine could not start" in text or self.process.returncode is not None:
                raise RuntimeError(f"the bot or its engine did not come up:\n{tail(text)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bot was not ready after {timeout:.0f} s:\n{tail(text)}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def running_bot(model: str, **settings: str) -> AsyncIterator[tuple[FakeDiscord, BotProcess]]:
    """The fake Discord and a ready bot against it; both stopped on the way out. If anything fails,
    the end of the bot's log goes to stderr."""
    fake = await FakeDiscord().start()
    with tempfile.TemporaryDirectory(prefix="dreambot-bench-") as tmp:
        bot = BotProcess(fake, Path(tmp), model, **settings)
        try:
            await bot.start()
            yield fake, bot
        except BaseException:
            print(f"--- end of the bot's log ---\n{tail(bot.log())}", file=sys.stderr)
            raise
        finally:
            await bot.stop()
            await fake.close()


def queue_room(jobs: int, members: int) -> dict[str, str]:
    """Bot settings under which a burst of `jobs` from `members` members is admitted whole: the
    queue refuses a member's jobs beyond MAX_JOBS_PER_MEMBER (default 3) and any beyond MAX_QUEUE
    (default 100). Unknown settings are ignored by a bot that has no such limits."""
    return {"MAX_JOBS_PER_MEMBER": str(min(100, -(-jobs // members) + 1)), "MAX_QUEUE": str(min(10000, jobs + 10)),
            "COOLDOWN_SECONDS": "0"}


def add_bot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes", help="SD_MODEL: a built-in name (shapes), folder, file or hub id")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a bot setting for this run (repeatable), e.g. --set SD_DEVICE=cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the engine (OMP_NUM_THREADS; default: torch's, one per core). On a "
                             "machine shared with other work, 1 keeps CPU figures repeatable")


def thread_settings(threads: int | None) -> dict[str, str]:
    """The environment that gives torch `threads` threads (OpenMP reads it when torch starts)."""
    return {} if threads is None else {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def settings_from(pairs: list[str], threads: int | None = None) -> dict[str, str]:
    """`--set` pairs, and `--threads` as environment variables."""
    settings = thread_settings(threads)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set takes NAME=VALUE, not {pair!r}")
        settings[name.strip().upper()] = value
    return settings


def described(settings: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "(the bot's defaults)"


def members(fake: FakeDiscord, count: int) -> list[dict]:
    return [fake.user(f"member{i}") for i in range(count)]


async def dream(fake: FakeDiscord, member: dict, prompt: str, **options) -> Interaction:
    """`member` runs /dream; options left None are not sent (the bot's defaults apply)."""
    return await fake.invoke("dream", member, prompt=prompt, **{k: v for k, v in options.items() if v is not None})


# A posted result's files ("SPOILER_" when blurred); a progress notice may carry "preview.jpg".
RESULT_FILE = re.compile(r"(SPOILER_)?dream-\d+-\d+\.(png|gif)")
# What the bot shows while a job waits or runs (queued notice, progress bar); anything else it says
# about a job is its last word.
INTERMEDIATE = ("🎨", "🖌️")


def result_files(reply: Reply) -> int:
    return sum(bool(RESULT_FILE.fullmatch(upload.filename)) for upload in reply.files)


def finished(reply: Reply) -> bool:
    """A job's last word: its pictures, or any message that is not a queued or progress notice."""
    return bool(result_files(reply)) or (reply.kind != "callback" and bool(reply.content)
                                         and not reply.content.startswith(INTERMEDIATE))


@dataclass
class Outcome:
    interaction: Interaction
    posted: bool  # pictures were posted
    images: int
    at: float | None  # monotonic time of the last word, None if it timed out
    text: str  # what a job that posted nothing said instead


async def outcome(interaction: Interaction, timeout: float) -> Outcome:
    try:
        reply = await interaction.wait_for(finished, timeout)
    except TimeoutError:
        last = next((r.content for r in reversed(interaction.replies) if r.content), "")
        return Outcome(interaction, False, 0, None, f"timed out after {last!r}" if last else "timed out")
    images = result_files(reply)
    return Outcome(interaction, bool(images), images, reply.at, "" if images else reply.content)


async def outcomes(interactions: Iterable[Interaction], timeout: float) -> list[Outcome]:
    """Each interaction's outcome, all waited for together until `timeout` seconds from now."""
    deadline = time.monotonic() + timeout
    return list(await asyncio.gather(*(outcome(i, max(deadline - time.monotonic(), 0.01)) for i in interactions)))


def pictures(interaction: Interaction) -> list[bytes]:
    """The pictures of the job's posted result, in order (none if it posted none)."""
    reply = next((r for r in interaction.replies if result_files(r)), None)
    return [] if reply is None else [u.data for u in reply.files if RESULT_FILE.fullmatch(u.filename)]


def first_callback(interaction: Interaction) -> float | None:
    """Seconds from the fake dispatching the interaction to the bot's first answer (its defer)."""
    reply = interaction.first("callback")
    return None if reply is None else reply.at - interaction.sent_at


def not_posted(results: list[Outcome]) -> str:
    """A one-line account of the jobs that posted no picture, by what they said."""
    reasons: dict[str, int] = {}
    for result in results:
        if not result.posted:
            key = result.text.splitlines()[0][:90] if result.text else "(empty)"
            reasons[key] = reasons.get(key, 0) + 1
    return "; ".join(f"{count} × {reason!r}" for reason, count in reasons.items()) or "none"


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class LoopLag:
    """Overshoot of `asyncio.sleep(interval)` on this process's own loop. The fake Discord runs on
    this loop, so its lag is in every latency the fake records: printed as a control."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task | None = None

    def start(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append(loop.time() - before - self.interval)

    def summary(self) -> str:
        s = self.samples
        return (f"p50 {ms(percentile(s, 50))}, p99 {ms(percentile(s, 99))}, max {ms(max(s, default=math.nan))} "
                f"({len(s)} sleeps of {ms(self.interval)})")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a live process has used (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot, all cores together (/proc/stat)."""
    fields = [int(f) for f in _read("/proc/stat").split("\n", 1)[0].split()[1:9]] or [0] * 8
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by this process (the fake), the bot and its engine between start and stop,
    and by every other process on the machine: other work running beside a benchmark slows it, and
    this says how much there was."""

    def __init__(self, bot: BotProcess) -> None:
        self._pids = {"fake (this process)": os.getpid(), "bot": bot.process.pid, "engine": bot.engine_pid()}
        self._start = self._read()
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in self._pids.items()}, "machine": busy_seconds()}

    def stop(self) -> dict[str, float]:
        end = self._read()
        used = {name: end[name] - self._start[name] for name in end}
        machine = used.pop("machine")
        self.used = {**used, "other processes": max(0.0, machine - sum(used.values()))}
        return self.used

    def summary(self, wall: float) -> str:
        """CPU seconds of each, and in cores on average (1.00 = one core busy all the time)."""
        return ", ".join(f"{name} {used:.1f} s ({used / wall:.2f} cores)" for name, used in self.used.items())


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> str:
    """The machine and software the figures were measured on."""
    cpu = re.search(r"model name\s*:\s*(.+)", _read("/proc/cpuinfo"))
    memory = re.search(r"MemTotal:\s*(\d+) kB", _read("/proc/meminfo"))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    return (f"{cpu.group(1).strip() if cpu else platform.processor() or platform.machine()}, {usable} usable of "
            f"{os.cpu_count()} cores, {int(memory.group(1)) / 2**20 if memory else math.nan:.0f} GiB RAM, "
            f"load average {load[0]:.2f} at start; Python {platform.python_version()}, torch {v('torch')}, "
            f"diffusers {v('diffusers')}, discord.py {v('discord.py')}")


def engine_line(bot: BotProcess) -> str:
    e = bot.engine
    return f"engine: {e.get('model')} on {e.get('device')} ({e.get('dtype')}), safety checker {e.get('safety')}"


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
