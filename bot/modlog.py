"""The mod-log: where a server's moderators read what the bot refused or flagged, and what was changed."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict

import discord

from bot.store import Store

log = logging.getLogger(__name__)

# A problem told to a server's moderators (`post_once`) is told again only after this long, so that
# a failure that repeats with each job makes one post, not one per job.
REPEAT_SECONDS = 6 * 3600.0
# The problems remembered per server; the oldest are forgotten first.
REMEMBERED = 100


class ModLog:
    def __init__(self, client: discord.Client, store: Store) -> None:
        self._client = client
        self._store = store
        # Per server: each problem told (`_key`), and when.
        self._told: dict[int, OrderedDict[str, float]] = {}

    async def post(self, guild_id: int | None, text: str, *, channel_id: int | None = None) -> None:
        """Tell the server's moderators, in their mod-log channel if they chose one (`channel_id`, when
        the caller read it already). Never raises."""
        if guild_id is None:
            return
        try:
            if channel_id is None:
                channel_id = (await self._store.guild_settings(guild_id)).modlog_channel_id
            if channel_id is None:
                return
            channel = self._client.get_channel(channel_id) or await self._client.fetch_channel(channel_id)
            await channel.send(text[:2000], allowed_mentions=discord.AllowedMentions.none(),  # type: ignore[union-attr]
                               suppress_embeds=True)
        except discord.HTTPException as error:
            log.warning("could not post in the mod-log of server %s: %s", guild_id, error)
        except Exception:
            log.exception("could not post in the mod-log of server %s", guild_id)

    async def post_once(self, guild_id: int | None, problem: str, text: str) -> None:
        """`post`, unless this server's moderators were told of the same `problem` lately: a failure
        that repeats with every job is told once (numbers such as job ids and exit codes aside)."""
        if guild_id is None or not self._first_time(guild_id, problem):
            return
        await self.post(guild_id, text)

    async def broadcast(self, problem: str, text: str) -> None:
        """Tell every server's moderators that chose a mod-log channel of a problem of the whole bot
        (the engine being down), once however many engines report it, and count `problem` as told
        to each (`post_once` says no more of it). Never raises."""
        for guild_id, channel_id in (await self._channels()).items():
            self._first_time(guild_id, problem)
            if self._first_time(guild_id, f"everywhere: {problem}"):
                await self.post(guild_id, text, channel_id=channel_id)

    async def announce(self, text: str) -> None:
        """Tell every server's moderators that chose a mod-log channel of news of the whole bot (a
        worker joined or was lost), each time. Never raises."""
        for guild_id, channel_id in (await self._channels()).items():
            await self.post(guild_id, text, channel_id=channel_id)

    async def _channels(self) -> dict[int, int]:
        """Every server's mod-log channel (none if they cannot be read: logged)."""
        try:
            return await self._store.modlog_channels()
        except Exception:
            log.exception("could not read the mod-log channels")
            return {}

    def _first_time(self, guild_id: int, problem: str) -> bool:
        """Whether `problem` is news to this server's moderators; it is remembered as told from now."""
        told = self._told.setdefault(guild_id, OrderedDict())
        key = re.sub(r"\d+", "#", problem)
        now = time.monotonic()
        fresh = key not in told or now - told[key] >= REPEAT_SECONDS
        if fresh:
            told[key] = now
            told.move_to_end(key)
            while len(told) > REMEMBERED:
                told.popitem(last=False)
        return fresh
