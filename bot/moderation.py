"""What a server's moderators decided, applied to every job before it is queued: who may use the
bot, which prompts are refused, what happens to a flagged image in each channel, who may reach a
job, and how a flagged picture's flag follows everything made from it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial

import discord

from bot import fingerprint
from bot.prompt_filter import ExpandsTooMuch, InvalidTerm, PromptFilter, Term, Uncheckable
from bot.store import GuildSettings, JobRow, Store
from dreambot.adapters import Catalogue, TurnedOff
from dreambot.models import Catalogue as ModelCatalogue
from dreambot.models import Place
from dreambot.prompt import read_as
from dreambot.request import SAFETY_SCALES, GenerateRequest

log = logging.getLogger(__name__)


class FilterMode(StrEnum):
    """What happens to a picture the safety filter flags, per server and per channel."""

    BLOCK = "block"
    SPOILER = "spoiler"
    OFF = "off"

    @property
    def describe(self) -> str:
        return {FilterMode.BLOCK: "flagged images are replaced by a notice",
                FilterMode.SPOILER: "flagged images are posted behind a spoiler, with a warning",
                FilterMode.OFF: "flagged images are posted as is"}[self]


BANNED = "A moderator has barred you from using Dreambot in this server."


class Refused(Exception):
    """A job the server's moderation does not allow; the message is for the member (ephemeral)."""


@dataclass(frozen=True)
class Policy:
    """The safety filter a job runs under in its channel."""

    mode: FilterMode = FilterMode.BLOCK  # the effective mode: spoiler and off only in age-restricted channels
    threshold: float | None = None  # None: the classifier's default
    scale: str | None = None  # the classifier whose scale `threshold` is on

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", FilterMode(self.mode))  # as stored: a string

    def apply(self, request: GenerateRequest) -> GenerateRequest:
        return replace(request, nsfw_threshold=self.threshold, nsfw_scale=self.scale if self.threshold is not None
                       else None, keep_flagged=self.mode is not FilterMode.BLOCK)


def flagged_source(job: JobRow, index: int) -> bool:
    """Whether picture `index` of `job` was flagged: by the classifier, or because it was made from
    a flagged picture (the engine flags every picture of a job with `source_flagged`), so the flag
    travels down a whole chain of derived jobs."""
    flags = job.nsfw_flags
    return bool(job.request.source_flagged or (flags and index < len(flags) and flags[index]))


def check_source(job: JobRow, index: int, policy: Policy) -> None:
    """A picture the safety filter flagged stays where flagged pictures may be shown: starting a
    job from it in any other channel is refused (the new picture could carry it over)."""
    if policy.mode is FilterMode.BLOCK and flagged_source(job, index):
        raise Refused(f"Picture {index + 1} of job {job.id} was flagged by the safety filter, so it can only be "
                      "used in an age-restricted channel whose filter shows flagged images.")


def from_source(request: GenerateRequest, job: JobRow, index: int) -> GenerateRequest:
    """A request that starts from picture `index` of `job` carries that picture's flag."""
    return replace(request, source_flagged=request.source_flagged or flagged_source(job, index))


def reachable(job, *, user_id: int, guild_id: int | None, channel_id: int | None, parent_id: int | None = None,
              moderator: bool = False) -> bool:
    """Whether a job (its prompt, its pictures) may be seen or used from here: only where its result
    could be seen. In its own server: by its author, by a moderator, or from its own channel (or a
    thread of that channel, `parent_id`); a direct message's job only by its author. The one rule
    for /info, the "Dream info" menu, every `job:` option, buttons, reactions and /queue."""
    if job.guild_id != guild_id:
        return False
    if job.user_id == user_id:
        return True
    if job.guild_id is None:
        return False
    return moderator or (job.channel_id is not None and job.channel_id in (channel_id, parent_id))


def is_moderator(interaction: discord.Interaction, settings: GuildSettings) -> bool:
    """Manage Server (owners and administrators have it), or the server's moderator role."""
    return moderates(interaction.user, interaction.permissions, settings)


def moderates(member, permissions: discord.Permissions | None, settings: GuildSettings) -> bool:
    """`is_moderator` for a member and their permissions where they act (a reaction has no interaction)."""
    if permissions is not None and permissions.manage_guild:
        return True
    role_id = settings.moderator_role_id
    return role_id is not None and isinstance(member, discord.Member) and member.get_role(role_id) is not None


async def may_reach(store: Store, job, member, channel, guild_id: int | None,
                    permissions: discord.Permissions | None = None) -> bool:
    """`reachable` for `member` in `channel`; whether they are a moderator is looked up only when
    it matters."""
    where = dict(user_id=member.id, guild_id=guild_id, channel_id=getattr(channel, "id", None),
                 parent_id=getattr(channel, "parent_id", None))
    allowed = reachable(job, **where)
    if allowed or job.guild_id is None or job.guild_id != guild_id:
        return allowed
    if permissions is None and isinstance(member, discord.Member) and hasattr(channel, "permissions_for"):
        permissions = channel.permissions_for(member)
    return reachable(job, **where, moderator=moderates(member, permissions, await store.guild_settings(guild_id)))


async def reachable_from(store: Store, job, interaction: discord.Interaction) -> bool:
    """Whether this interaction may see or use the job (`reachable`)."""
    return await may_reach(store, job, interaction.user, interaction.channel, interaction.guild_id,
                           interaction.permissions)


def age_restricted(channel) -> bool:
    """Discord's "age-restricted" flag; a thread has its parent's. Unknown channels count as not."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def configured_mode(settings: GuildSettings, channel) -> FilterMode:
    """The mode moderators set for a channel: its own, its parent's (for a thread), or the server's."""
    for channel_id in (getattr(channel, "id", None), getattr(channel, "parent_id", None)):
        if channel_id in settings.channel_modes:
            return FilterMode(settings.channel_modes[channel_id])
    return FilterMode(settings.nsfw_mode)


def effective_mode(configured: FilterMode, is_age_restricted: bool) -> FilterMode:
    """Discord's rule: flagged images may only be shown in age-restricted channels; elsewhere they
    are blocked whatever the setting."""
    return configured if is_age_restricted else FilterMode.BLOCK


def applied_mode(settings: GuildSettings, channel) -> FilterMode:
    """The mode flagged images get in `channel` now: as configured, where Discord allows it."""
    return effective_mode(configured_mode(settings, channel), age_restricted(channel))


class Moderation:
    """The moderation rules of every server, with each server's prompt filter compiled once."""

    def __init__(self, store: Store, adapters: Callable[[], Catalogue] = Catalogue,
                 models: Callable[[], ModelCatalogue] | None = None) -> None:
        self._store = store
        # The LoRAs and embeddings installed now (`dreambot.adapters.Installed.current`).
        self.adapters = adapters
        # The models offered now (`dreambot.models.Watched.current`): a job naming none runs on the default.
        self.models = models
        self._filters: dict[int, asyncio.Future[PromptFilter]] = {}  # compiled, or being compiled

    # The prompt filter never runs on the event loop: compiling hundreds of terms, or matching them
    # in long prompts, takes long enough to hold up every member's commands. It has two threads of
    # its own (not the default executor, which other work shares), and a prompt gets `filter_budget`
    # seconds of them; past that it is refused, never let through unchecked.
    filter_budget = 2.0
    _filter_threads: ThreadPoolExecutor | None = None
    _TEXT_NAMES = ("prompt", "negative prompt", "end prompt")  # in the order `_match` passes them

    def _filter_executor(self) -> ThreadPoolExecutor:
        if self._filter_threads is None:
            self._filter_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prompt-filter")
        return self._filter_threads

    async def prompt_filter(self, guild_id: int) -> PromptFilter:
        """The server's filter, compiled in the filter's threads once after each change of its list;
        prompts that come meanwhile wait for that one compilation."""
        while True:
            compiling = self._filters.get(guild_id)
            if compiling is None:
                compiling = self._filters[guild_id] = asyncio.ensure_future(self._compile_filter(guild_id))
            try:
                compiled = await asyncio.shield(compiling)
            except Exception:
                if self._filters.get(guild_id) is compiling:
                    del self._filters[guild_id]  # the next prompt tries again
                raise
            if self._filters.get(guild_id) is compiling:
                return compiled
            # terms_changed dropped it while it was being compiled: compile the new list.

    async def _compile_filter(self, guild_id: int) -> PromptFilter:
        terms = [Term(kind, text) for kind, text in await self._store.blocked_terms(guild_id)]

        def skip(error: InvalidTerm) -> None:  # stored under older rules: every other term still applies
            log.error("server %s: skipping a blocked term: %s", guild_id, error)

        return await asyncio.get_running_loop().run_in_executor(
            self._filter_executor(), partial(PromptFilter, terms, on_invalid=skip))

    async def _match(self, user_id: int, guild_id: int, request: GenerateRequest) -> Term | None:
        """The first blocked term in the request's texts, or None; Refused for texts the filter
        cannot check (fail closed), or not within `filter_budget` seconds."""
        prompt_filter = await self.prompt_filter(guild_id)
        if not len(prompt_filter):  # a server that blocks nothing: nothing to look for
            return None
        written = (request.prompt, request.negative_prompt, request.end_prompt or "")
        # As written, and as the text encoder reads it: "nu<lora:x:0>de" and "nu[]de" are read as "nude".
        texts = (*written, *(" ".join(read_as(text)) for text in written))
        # The thread stops at its next check past the deadline, so a prompt given up on frees it.
        deadline = time.monotonic() + self.filter_budget
        matching = asyncio.get_running_loop().run_in_executor(
            self._filter_executor(), partial(prompt_filter.match, *texts, deadline=deadline))
        try:
            return await asyncio.wait_for(matching, self.filter_budget)
        except ExpandsTooMuch as error:
            # Lengths only: member text never goes to the log.
            log.info("server %s: refused a prompt by user %s: its %s grows from %d to %d characters when "
                     "normalized (limit %d)", guild_id, user_id, self._TEXT_NAMES[error.index % 3], error.length,
                     error.normalized_length, error.limit)
            raise Refused(f"Your {self._TEXT_NAMES[error.index % 3]} has characters that expand too much when spelled "
                          f"out: its {error.length} characters would be checked as {error.normalized_length}, and "
                          f"the limit is {error.limit}. Please write it in plain text.") from None
        except (TimeoutError, Uncheckable):
            log.warning("server %s: refused a prompt by user %s: the prompt filter did not finish within %g s "
                        "(text lengths %s)", guild_id, user_id, self.filter_budget, [len(text) for text in texts])
            raise Refused("Your prompt could not be checked against this server's blocked words in time, so it "
                          "was not accepted. Please make it shorter, or write it in plain text.") from None

    def terms_changed(self, guild_id: int) -> None:
        self._filters.pop(guild_id, None)

    async def admit(self, user_id: int, guild_id: int | None, channel, request: GenerateRequest,
                    classifier: str | None = None) -> tuple[GenerateRequest, Policy]:
        """The request with the channel's safety policy, or Refused (PromptBlocked for a blocked term).
        `classifier` is the engine's safety classifier, once known (the threshold's scale).
        InvalidRequest for a LoRA that is not installed."""
        if guild_id is None:
            await self.check_adapters(request, None)
            # Direct messages have no moderators: the strictest filter, at the classifier's default.
            return Policy().apply(request), Policy()
        ban = await self._store.get_ban(guild_id, user_id)
        if ban is not None:
            raise Refused(BANNED)
        matched = await self._match(user_id, guild_id, request)
        if matched is not None:
            # Never echo the term: it would teach how to get around it.
            raise PromptBlocked("Your prompt contains something this server's moderators have blocked. "
                                "Please rephrase it.", matched)
        await self.check_adapters(request, guild_id)
        await self.check_model(request, guild_id, channel)
        settings = await self._store.guild_settings(guild_id)
        threshold = settings.nsfw_threshold
        scale = SAFETY_SCALES.get(classifier) if classifier else None
        if threshold is not None and scale is not None:
            if not scale.allows(threshold):
                # Set for another classifier (the operator changed SD_SAFETY_CHECKER): its default.
                log.warning("server %s: threshold %g is outside %s's bounds; using its default",
                            guild_id, threshold, classifier)
                threshold = None
        policy = Policy(applied_mode(settings, channel), threshold, classifier)
        return policy.apply(request), policy

    async def check_adapters(self, request: GenerateRequest, guild_id: int | None) -> None:
        """InvalidRequest for a LoRA the request names that is not installed; Refused for a LoRA or an
        embedding it uses that the server turned off (none in direct messages)."""
        disabled = await self._store.disabled_adapters(guild_id) if guild_id is not None else []
        try:
            self.adapters().check(request.prompt, " ".join((request.negative_prompt, request.end_prompt or "")),
                                  disabled)
        except TurnedOff as refusal:
            raise Refused(str(refusal)) from None

    async def place(self, guild_id: int | None, channel) -> Place:
        """What the server and the channel (for a thread: its own settings, else its parent's) say
        about models (/mod model); nothing in direct messages."""
        if guild_id is None:
            return Place()
        server = (await self._store.guild_settings(guild_id)).model
        channels = await self._store.channel_models(guild_id)
        for channel_id in (getattr(channel, "id", None), getattr(channel, "parent_id", None)):
            if channel_id in channels:
                own = channels[channel_id]
                return Place(server_model=server, channel_model=own.model, allowed=own.allowed)
        return Place(server_model=server)

    async def check_model(self, request: GenerateRequest, guild_id: int | None, channel) -> None:
        """Refused when the channel does not allow the request's model (moderators restricted it)."""
        if guild_id is None:
            return
        # A request with no model (recorded before there were several) runs on the default one.
        name = request.model or (self.models().default if self.models is not None else "")
        place = await self.place(guild_id, channel)
        if name and not place.allows(name):
            raise Refused(place.refusal(name))

    async def turned_off(self, guild_id: int | None) -> set[tuple[str, str]]:
        """(kind, name in lower case) of the LoRAs and embeddings a server turned off, for what members
        are shown (suggestions, /loras); none in direct messages."""
        if guild_id is None:
            return set()
        return {(kind, name.lower()) for kind, name in await self._store.disabled_adapters(guild_id)}

    async def current_mode(self, guild_id: int | None, channel) -> FilterMode:
        """The mode that applies in `channel` now (a job's result may come long after it was asked for)."""
        if guild_id is None:
            return FilterMode.BLOCK
        return applied_mode(await self._store.guild_settings(guild_id), channel)

    async def check_upload(self, request: GenerateRequest, policy: Policy, guild_id: int | None) -> GenerateRequest:
        """A member's own picture that is a flagged result brought back (re-encoded, resized, cropped
        a little: its fingerprint is within a few bits) counts as flagged: refused where flagged
        pictures are not shown, and carried as flagged where they are. The engine classifies every
        input as well; this catches a picture flagged only because of where it came from. Per server:
        each server flags under its own threshold (and a direct message never shows a flagged one)."""
        if request.image is None or guild_id is None:
            return request
        brought = await asyncio.to_thread(fingerprint.variants, request.image)
        match = next((job_id for job_id, known in await self._store.flagged_fingerprints(guild_id)
                      if fingerprint.matches(brought, known)), None)
        if match is None:
            return request
        log.info("an uploaded picture matches flagged job %s", match)
        if policy.mode is FilterMode.BLOCK:
            raise Refused("That picture was flagged by the safety filter, so it can only be used in an "
                          "age-restricted channel whose filter shows flagged images.")
        return replace(request, source_flagged=True)


class PromptBlocked(Refused):
    """Refused by the prompt filter; `term` is for the mod-log only."""

    def __init__(self, message: str, term: Term) -> None:
        super().__init__(message)
        self.term = term
