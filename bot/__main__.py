"""`python -m bot`: read the settings, open the store, start the engine process and run the bot."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import random
import signal
import sys
from functools import partial

import aiohttp
import discord
import yarl

from bot.bot import DreamBot
from bot.engine_client import EngineClient, engine_environment
from bot.images import ImageStore
from bot.moderation import Moderation
from bot.queue import JobQueue
from bot.store import Store
from bot.styles import Style, StylesError, load_styles
from bot.workers import WorkerHub
from dreambot.models import Watched, start_estimate
from dreambot.settings import BUILTIN_MODELS, BotSettings, StartupError, load

log = logging.getLogger("bot")

# Discord out of reach at start: tried again after 5 s, the wait doubling up to 5 min, each wait
# 20 % longer or shorter at random, so that bots cut off together do not all come back at once.
RETRY_FIRST_SECONDS = 5.0
RETRY_MOST_SECONDS = 300.0
# What discord.py lets through from `login` when Discord cannot be reached or is failing (5xx,
# after its own retries), as opposed to an answer such as a refused token (LoginFailure). aiohttp's
# connection errors and timeouts are OSErrors.
UNREACHABLE = (OSError, aiohttp.ClientError, discord.GatewayNotFound, discord.DiscordServerError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the Dreambot Discord bot.")
    parser.add_argument(
        "--sync", action="store_true",
        help="register the slash commands with Discord even if they have not changed since the last run",
    )
    args = parser.parse_args(argv)
    settings = load(BotSettings)
    try:
        styles = load_styles(settings.styles_file)
    except StylesError as error:
        print(f"invalid settings: STYLES_FILE {error}", file=sys.stderr)
        return 2
    try:  # before anything starts: a wrong model path is one line now, not an engine failing for ever
        models = settings.checked_catalogue()
    except StartupError as error:
        print(f"invalid settings: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("discord.client").addFilter(OneLineReconnects())
    point_at_discord(settings)
    try:
        asyncio.run(run(settings, styles, models, force_sync=args.sync))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except discord.LoginFailure:
        print("DISCORD_TOKEN was refused by Discord: check the bot token", file=sys.stderr)
        return 1
    return 0


def point_at_discord(settings: BotSettings) -> None:
    """Aim discord.py at a Discord-compatible server; discord.py has no option, only these attributes."""
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def unreachable(error: BaseException) -> str:
    """A network error in a few words ("ClientConnectorError: Cannot connect to host …")."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def retry_delay(attempt: int, first: float = RETRY_FIRST_SECONDS, most: float = RETRY_MOST_SECONDS) -> float:
    """The wait before try `attempt + 1` (0: the first retry): doubling from `first` up to `most`, ±20 %."""
    return min(most, first * 2 ** min(attempt, 30)) * random.uniform(0.8, 1.2)


async def log_in(bot: discord.Client, token: str, *, first: float = RETRY_FIRST_SECONDS,
                 most: float = RETRY_MOST_SECONDS) -> None:
    """`bot.login`, tried again with back-off for as long as Discord cannot be reached (until the
    task is cancelled: Ctrl-C, SIGTERM). A refused token (LoginFailure), and any other answer, goes
    up at once. Only a login that failed before the bot's `setup_hook` ran is tried again (discord.py
    sets `application` just before calling it), so the engines and the queue start once."""
    for attempt in itertools.count():
        try:
            await bot.login(token)
            return
        except UNREACHABLE as error:
            if bot.application is not None:
                raise
            delay = retry_delay(attempt, first, most)
            log.warning("Discord is unreachable (%s); retrying in %.0f s", unreachable(error), delay)
            # discord.py opens a new HTTP session on each login, on the connector of the last one:
            # close this session with its connector, and let the next login make a fresh one.
            await bot.http.close()
            bot.http.connector = discord.utils.MISSING
            await asyncio.sleep(delay)


class OneLineReconnects(logging.Filter):
    """discord.py logs each attempt to reach the gateway again with the network error's whole
    traceback; one WARNING line says the same (the traceback stays at LOG_LEVEL=DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Attempting a reconnect") and record.exc_info and record.exc_info[1]:
            error = record.exc_info[1]
            record.msg, record.args = "Discord is unreachable (%s); retrying in %.0f s", (unreachable(error),
                                                                                            *(record.args or ()))
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if not logging.getLogger().isEnabledFor(logging.DEBUG):
                record.exc_info, record.exc_text = None, None
        return True


async def run(settings: BotSettings, styles: dict[str, Style], models: Watched, *, force_sync: bool = False) -> None:
    # A service manager stops us with SIGTERM: shut down as on Ctrl-C (asyncio cancels this task,
    # and the bot's close() lets running jobs finish while the other tasks still run).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    store = await Store.open(settings.database_path)
    default = models.current().resolve(None)
    # How long a start takes, for the notice of a job that waits for one: the last one measured
    # here, else a guess from the model's size on disk.
    estimate = start_estimate(default.source, BUILTIN_MODELS)
    last_starts = {device: await store.engine_start_seconds(default.source, device) for device in settings.devices}
    # NATS_URL: every job goes to workers on other hosts (`python -m engine worker`); no engine here.
    hub = WorkerHub(settings.nats_servers, store, creds=settings.nats_creds,
                    lease_seconds=settings.worker_lease_seconds,
                    job_timeout=settings.job_timeout_seconds) if settings.nats_url else None
    engines = [] if hub is not None else [
        EngineClient(
            engine_environment(
                os.environ,
                {
                    # The default the bot resolved (SD_MODEL, or models.toml's): the engine must agree.
                    "SD_MODEL": settings.sd_model if default.source == settings.sd_model else default.name,
                    "MODELS_DIR": str(settings.models_dir),
                    "MODEL_CACHE_GB": str(settings.model_cache_gb or ""),
                    "LORA_DIR": str(settings.lora_dir),
                    "SD_DEVICE": device,
                    "SD_DTYPE": settings.sd_dtype,
                    "SD_SAFETY_CHECKER": settings.sd_safety_checker,
                    "SD_UPSCALER": settings.sd_upscaler or "",
                    "EMBEDDINGS_DIR": str(settings.embeddings_dir),
                    "LOG_LEVEL": settings.log_level,
                },
            ),
            job_timeout=settings.job_timeout_seconds,
            model=default.name,
            expected_start=last_starts[device] if last_starts[device] is not None else estimate,
            on_started=partial(store.set_engine_start_seconds, default.source, device),
        )
        for device in settings.devices
    ]
    queue = JobQueue(store, engines, max_per_member=settings.max_jobs_per_member, max_queued=settings.max_queue,
                     cooldown_seconds=settings.cooldown_seconds, max_batch=settings.max_batch, hub=hub)
    bot = DreamBot(settings=settings, store=store, engine=hub or engines[0], queue=queue,
                   images=ImageStore(settings.images_dir), styles=styles, models=models,
                   moderation=Moderation(store, settings.installed(models.current()).current, models.current),
                   force_sync=force_sync)
    try:
        async with bot:
            await log_in(bot, settings.discord_token.get_secret_value())
            await bot.connect()  # discord.py reaches the gateway again by itself (OneLineReconnects)
    finally:
        for engine in engines:
            await engine.close()
        if hub is not None:
            await hub.close()
        await store.close()


if __name__ == "__main__":
    sys.exit(main())
