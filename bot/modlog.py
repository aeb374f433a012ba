"""The mod-log: where a server's moderators read what the bot refused or flagged, and what was changed."""

from __future__ import annotations

import logging

import discord

from bot.store import Store

log = logging.getLogger(__name__)


class ModLog:
    def __init__(self, client: discord.Client, store: Store) -> None:
        self._client = client
        self._store = store

    async def post(self, guild_id: int | None, text: str) -> None:
        """Tell the server's moderators, in their mod-log channel if they chose one. Never raises."""
        if guild_id is None:
            return
        try:
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
