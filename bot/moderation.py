"""What a server's moderators decided, applied to every job before it is queued: who may use the
bot, which prompts are refused, and what happens to a flagged image in each channel. Also the
mod-log, where moderators read what the bot refused or flagged and what was changed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import discord

from bot.prompt_filter import InvalidTerm, PromptFilter, Term
from bot.store import GuildSettings, Store
from dreambot.protocol import SAFETY_THRESHOLDS, GenerateRequest

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

FILTER_MODES = ("block", "spoiler", "off")
DESCRIBE_MODE = {"block": "flagged images are replaced by a notice",
                 "spoiler": "flagged images are posted behind a spoiler, with a warning",
                 "off": "flagged images are posted as is"}


class Refused(Exception):
    """A job the server's moderation does not allow; the message is for the member (ephemeral)."""


@dataclass(frozen=True)
class Policy:
    """The safety filter a job runs under in its channel."""

    mode: str = "block"  # the effective mode: spoiler and off only in age-restricted channels
    threshold: float | None = None  # None: the classifier's default

    def apply(self, request: GenerateRequest) -> GenerateRequest:
        return replace(request, nsfw_threshold=self.threshold, keep_flagged=self.mode != "block")


def age_restricted(channel) -> bool:
    """Discord's "age-restricted" flag; a thread has its parent's. Unknown channels count as not."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def configured_mode(settings: GuildSettings, channel) -> str:
    """The mode moderators set for a channel: its own, its parent's (for a thread), or the server's."""
    for channel_id in (getattr(channel, "id", None), getattr(channel, "parent_id", None)):
        if channel_id in settings.channel_modes:
            return settings.channel_modes[channel_id]
    return settings.nsfw_mode


def effective_mode(configured: str, is_age_restricted: bool) -> str:
    """Discord's rule: flagged images may only be shown in age-restricted channels; elsewhere they
    are blocked whatever the setting."""
    return configured if is_age_restricted else "block"


def applied_mode(settings: GuildSettings, channel) -> str:
    """The mode flagged images get in `channel` now: as configured, where Discord allows it."""
    return effective_mode(configured_mode(settings, channel), age_restricted(channel))


class Moderation:
    """The moderation rules of every server, with each server's prompt filter compiled once."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._filters: dict[int, PromptFilter] = {}

    async def prompt_filter(self, guild_id: int) -> PromptFilter:
        if guild_id not in self._filters:
            terms = []
            for kind, text in await self._store.blocked_terms(guild_id):
                try:
                    PromptFilter([Term(kind, text)])
                except InvalidTerm as error:  # stored under older rules: every other term still applies
                    log.error("server %s: skipping a blocked term: %s", guild_id, error)
                    continue
                terms.append(Term(kind, text))
            self._filters[guild_id] = PromptFilter(terms)
        return self._filters[guild_id]

    def terms_changed(self, guild_id: int) -> None:
        self._filters.pop(guild_id, None)

    async def admit(self, user_id: int, guild_id: int | None, channel, request: GenerateRequest,
                    classifier: str | None = None) -> tuple[GenerateRequest, Policy]:
        """The request with the channel's safety policy, or Refused (PromptBlocked for a blocked term).
        `classifier` is the engine's safety classifier, once known (the threshold's scale)."""
        if guild_id is None:
            # Direct messages have no moderators: the strictest filter, at the classifier's default.
            return Policy().apply(request), Policy()
        ban = await self._store.get_ban(guild_id, user_id)
        if ban is not None:
            raise Refused("A moderator has barred you from using Dreambot in this server.")
        matched = (await self.prompt_filter(guild_id)).match(
            request.prompt, request.negative_prompt, request.end_prompt or "")
        if matched is not None:
            # Never echo the term: it would teach how to get around it.
            raise PromptBlocked("Your prompt contains something this server's moderators have blocked. "
                                "Please rephrase it.", matched)
        settings = await self._store.guild_settings(guild_id)
        threshold = settings.nsfw_threshold
        if threshold is not None and classifier in SAFETY_THRESHOLDS:
            _, lowest, highest = SAFETY_THRESHOLDS[classifier]
            if not lowest <= threshold <= highest:
                # Set for another classifier (the operator changed SD_SAFETY_CHECKER): its default.
                log.warning("server %s: threshold %g is outside %s's bounds; using its default",
                            guild_id, threshold, classifier)
                threshold = None
        policy = Policy(applied_mode(settings, channel), threshold)
        return policy.apply(request), policy


    async def current_mode(self, guild_id: int | None, channel) -> str:
        """The mode that applies in `channel` now (a job's result may come long after it was asked for)."""
        if guild_id is None:
            return "block"
        return applied_mode(await self._store.guild_settings(guild_id), channel)


class PromptBlocked(Refused):
    """Refused by the prompt filter; `term` is for the mod-log only."""

    def __init__(self, message: str, term: Term) -> None:
        super().__init__(message)
        self.term = term


async def post_modlog(bot: DreamBot, guild_id: int | None, text: str) -> None:
    """Tell the server's moderators, in their mod-log channel if they chose one. Never raises."""
    if guild_id is None:
        return
    try:
        channel_id = (await bot.store.guild_settings(guild_id)).modlog_channel_id
        if channel_id is None:
            return
        channel = bot.get_channel(channel_id) or await bot.fetch_channel(channel_id)
        await channel.send(text[:2000], allowed_mentions=discord.AllowedMentions.none(), suppress_embeds=True)
    except discord.HTTPException as error:
        log.warning("could not post in the mod-log of server %s: %s", guild_id, error)
    except Exception:
        log.exception("could not post in the mod-log of server %s", guild_id)
