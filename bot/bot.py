"""The Discord client: loads the cogs, starts the engine and the queue, registers commands when they change."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Coroutine

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.actions import Actions
from bot.delivery import Outbox
from bot.engine_client import EngineClient
from bot.images import ImageStore
from bot.jobs import JobRunner
from bot.moderation import Moderation
from bot.modlog import ModLog
from bot.queue import JobQueue
from bot.replies import UserError, reply_privately
from bot.store import Store
from bot.styles import Style
from bot.workers import WorkerHub
from dreambot.models import Watched
from dreambot.settings import BotSettings

log = logging.getLogger(__name__)

EXTENSIONS = ("bot.cogs.dream", "bot.cogs.results", "bot.cogs.queue", "bot.cogs.history", "bot.cogs.adapters",
              "bot.cogs.models", "bot.cogs.moderation", "bot.cogs.admin", "bot.cogs.help")
# What a member who mentions the bot with anything but `help` reads.
MENTION_HINT = ("👋 I answer slash commands: type `/dream` and a prompt to make a picture, or `/help` (or "
                "`@Dreambot help`) for everything I can do.")
FINGERPRINT_KEY = "commands_fingerprint"
RETENTION_SWEEP_SECONDS = 3600
# On SIGTERM or Ctrl-C, running jobs get this long to finish; the rest run at the next start.
SHUTDOWN_GRACE_SECONDS = 30.0
# What the bot does in a channel, and nothing more: see its messages' channel, post (in threads too),
# attach the pictures, and read the history its replies point into. Commands and their answers need
# no permission (the `applications.commands` scope). Manage Messages is optional: with it a refused
# reaction is taken back.
INVITE_PERMISSIONS = discord.Permissions(view_channel=True, send_messages=True, send_messages_in_threads=True,
                                         attach_files=True, read_message_history=True)


def invite_link(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS,
                                   scopes=("bot", "applications.commands"))


async def watch_loop_lag(period: float, tick: float = 0.02) -> None:
    """Log how late the event loop wakes a sleeper (p50/p99/max) every `period` seconds: the lag
    every gateway event and command sees (LOOP_PROBE_SECONDS; bench/loop_lag.py reads it)."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    reported = loop.time()
    while True:
        before = loop.time()
        await asyncio.sleep(tick)
        lags.append(max(loop.time() - before - tick, 0.0))
        if loop.time() - reported >= period:
            lags.sort()
            log.info("loop lag over the last %g s: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples)",
                     period, _rank(lags, 0.50), _rank(lags, 0.99), lags[-1] * 1000, len(lags))
            lags, reported = [], loop.time()


def _rank(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted seconds, in milliseconds."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


class Tree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Every error raised while handling a command ends in an answer; the unexpected ones in the log too."""
        if isinstance(error, app_commands.TransformerError):
            message = f"The value {error.value!r} is not valid here: {error}"
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "You can't use this command here."
        elif isinstance(error, UserError):
            message = f"⚠️ {error}"
        else:
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("error in /%s (interaction %s)", command, interaction.id, exc_info=error)
            message = "😿 Sorry, something went wrong on our side. It has been logged; please try again."
        await reply_privately(interaction, message)


class DreamBot(commands.Bot):
    def __init__(
        self,
        *,
        settings: BotSettings,
        store: Store,
        engine: EngineClient | WorkerHub,
        queue: JobQueue,
        images: ImageStore,
        styles: dict[str, Style],
        moderation: Moderation,
        models: Watched,
        force_sync: bool = False,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,  # `@Dreambot help` only (bot.cogs.help)
            help_command=None,  # discord.py's own lists prefix commands, of which there is one
            intents=discord.Intents.default(),
            tree_cls=Tree,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self.store = store
        self.engine = engine
        self.queue = queue
        self.images = images
        self.styles = styles
        self.moderation = moderation
        # The models this server offers (`dreambot.models`), kept up to date as files come and go.
        self.models = models
        self.force_sync = force_sync
        # For members' attachments; opened in setup_hook, where there is a running loop.
        self.http_session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        # The services the cogs and the buttons use, each with the collaborators it needs.
        self.modlog = ModLog(self, store)
        self.outbox = Outbox(client=self, store=store, images=images, queue=queue, moderation=moderation,
                             modlog=self.modlog)
        self.runner = JobRunner(client=self, engine=engine, default_model=settings.sd_model, store=store,
                                images=images, queue=queue, moderation=moderation, modlog=self.modlog,
                                outbox=self.outbox, spawn=self.create_task)
        self.actions = Actions(store=store, images=images, queue=queue, runner=self.runner, limits=settings.limits,
                               wildcards=settings.wildcards_dir)
        for each in queue.engines:  # an engine that stops restarting tells every server's moderators why
            each.on_down = lambda reason: self.create_task(self.modlog.broadcast(reason, render.engine_down(reason)),
                                                           name="engine-down")

    def create_task(self, coroutine: Coroutine, *, name: str) -> asyncio.Task:
        """A background task that is kept referenced until it ends, and whose failure is logged."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)

        def done(task: asyncio.Task) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("background task %s failed", task.get_name(), exc_info=task.exception())

        task.add_done_callback(done)
        return task

    async def sweep_old_images(self) -> None:
        """Delete stored pictures older than IMAGE_RETENTION_DAYS, now and every hour."""
        days = self.settings.image_retention_days
        while days:
            try:
                removed = await self.images.remove_older_than(days)
                if removed:
                    log.info("removed %d stored picture(s) older than %g days", removed, days)
            except OSError:
                log.exception("could not clean up old pictures in %s", self.images.folder)
            await asyncio.sleep(RETENTION_SWEEP_SECONDS)

    async def setup_hook(self) -> None:
        self.http_session = aiohttp.ClientSession()
        for engine in self.queue.engines:
            engine.start()
        hub = self.queue.hub
        if hub is not None:  # workers on other hosts: what they made while we were away comes first
            hub.on_joined = lambda worker: self.create_task(
                self.modlog.announce(render.worker_joined(worker.name, worker.status.device, worker.status.model)),
                name="worker-joined")
            hub.on_lost = lambda worker, reason: self.create_task(
                self.modlog.announce(render.worker_lost(worker.name, reason)), name="worker-lost")
            hub.on_left = lambda worker, reason: self.create_task(
                self.modlog.announce(render.worker_left(worker.name)), name="worker-left")
            if await hub.start():
                await hub.collect(self.runner.keep_collected)
        # Every job meets the server's rules again as it starts (bans, the channel's filter mode).
        self.queue.gate = self.runner.gate
        # Before any member can queue a new job: the old ones keep their place ahead.
        restored = await self.runner.restore()
        if restored:
            log.info("queued %d job(s) left unfinished by the last run again", restored)
        self.queue.start()
        self.create_task(self.sweep_old_images(), name="image-retention")
        if self.settings.loop_probe_seconds:
            self.create_task(watch_loop_lag(self.settings.loop_probe_seconds), name="loop-lag-probe")
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands(force=self.force_sync)

    async def close(self) -> None:
        """Stop taking jobs, let running ones finish for a while (queued ones stay in the store for
        the next start), then leave Discord."""
        await self.queue.close(grace=SHUTDOWN_GRACE_SECONDS)
        for _ in range(100):  # the results of jobs that finished in the grace period go out first
            if not self.runner.posting:
                break
            await asyncio.sleep(0.1)
        for task in list(self._tasks):
            task.cancel()
        if self.http_session is not None:
            await self.http_session.close()
        await super().close()

    async def sync_commands(self, *, force: bool = False) -> bool:
        """Register the commands with Discord if they changed since the last registration (or if forced)."""
        guild = discord.Object(self.settings.discord_guild_id) if self.settings.discord_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        fingerprint = hashlib.sha256(
            json.dumps(
                {"application": self.application_id, "guild": self.settings.discord_guild_id, "commands": payload},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        if not force and await self.store.get_meta(FINGERPRINT_KEY) == fingerprint:
            log.info("commands unchanged since the last registration; not syncing")
            return False
        synced = await self.tree.sync(guild=guild)
        await self.store.set_meta(FINGERPRINT_KEY, fingerprint)
        where = f"guild {self.settings.discord_guild_id}" if guild else "all servers (global)"
        log.info("registered %d command(s) for %s: %s", len(synced), where, ", ".join(c.name for c in synced))
        return True

    async def on_command_error(self, context: commands.Context, error: commands.CommandError) -> None:  # type: ignore[override]
        """A mention with words the bot has no command for: point at the slash commands."""
        if isinstance(error, commands.CommandNotFound):
            try:
                await context.reply(MENTION_HINT, mention_author=False)
            except discord.HTTPException:
                pass
            return
        log.error("error in @%s", context.command, exc_info=error)

    async def on_ready(self) -> None:
        log.info("logged in as %s (id %s) in %d server(s); invite it with %s", self.user, self.user and self.user.id,
                 len(self.guilds), invite_link(self.application_id or 0))

