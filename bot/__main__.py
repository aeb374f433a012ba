"""`python -m bot`: read the settings, open the store, start the engine process and run the bot."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import discord
import yarl

from bot.bot import DreamBot
from bot.engine_client import EngineClient, engine_environment
from bot.images import ImageStore
from bot.moderation import Moderation
from bot.queue import JobQueue
from bot.store import Store
from bot.styles import Style, StylesError, load_styles
from dreambot.models import ModelsError, Watched
from dreambot.settings import BotSettings, load

log = logging.getLogger("bot")


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
    try:
        models = settings.watched_catalogue()
    except ModelsError as error:
        print(f"invalid settings: MODELS_DIR {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
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


async def run(settings: BotSettings, styles: dict[str, Style], models: Watched, *, force_sync: bool = False) -> None:
    # A service manager stops us with SIGTERM: shut down as on Ctrl-C (asyncio cancels this task,
    # and the bot's close() lets running jobs finish while the other tasks still run).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    store = await Store.open(settings.database_path)
    default = models.current().resolve(None)
    engines = [
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
                },
            ),
            job_timeout=settings.job_timeout_seconds,
        )
        for device in settings.devices
    ]
    queue = JobQueue(store, engines, max_per_member=settings.max_jobs_per_member, max_queued=settings.max_queue,
                     cooldown_seconds=settings.cooldown_seconds, max_batch=settings.max_batch)
    bot = DreamBot(settings=settings, store=store, engine=engines[0], queue=queue,
                   images=ImageStore(settings.images_dir), styles=styles, models=models,
                   moderation=Moderation(store, settings.installed(models.current()).current, models.current),
                   force_sync=force_sync)
    try:
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    finally:
        for engine in engines:
            await engine.close()
        await store.close()


if __name__ == "__main__":
    sys.exit(main())
