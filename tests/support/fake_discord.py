"""A loopback fake of Discord's REST API and gateway, enough for an unmodified discord.py bot.

The bot is pointed here with DISCORD_API_BASE / DISCORD_GATEWAY_URL (discord.py reads
`Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY`). Tests play the members: they run slash and
context-menu commands, click buttons, react and post messages, each sent over the gateway as
Discord would. Every REST call the bot makes is recorded, and the messages it creates are kept
as Discord keeps them (edits applied, deletions marked), so later events can target them.
Discord's rules that bots trip over in production are enforced (one answer per interaction, the
first followup after a defer, message, modal and command limits, the bot's own permissions).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import mimetypes
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

JSON = "application/json"  # exactly: discord.py's login rejects a charset suffix

# Message flags.
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7  # a deferred "thinking…" response not yet filled in
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15
CREATION_FLAGS = EPHEMERAL | SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2  # what a new message may set

# Permission bits.
ADMINISTRATOR = 1 << 3
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
SEND_MESSAGES_IN_THREADS = 1 << 38  # what posting in a thread needs instead of SEND_MESSAGES
DEFAULT_PERMISSIONS = 2248473465835073  # what Discord gives @everyone in a new server
ALL_PERMISSIONS = (1 << 53) - 1  # the server owner and administrators have every bit
DM_APP_PERMISSIONS = ATTACH_FILES | EMBED_LINKS | MENTION_EVERYONE | USE_EXTERNAL_EMOJIS  # app_permissions in a bot DM

# Gateway intents.
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
MESSAGE_CONTENT = 1 << 15

# Channel types.
GUILD_TEXT = 0
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12

# Interaction types.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
APPLICATION_COMMAND_AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

# Interaction response types.
MODAL = 9

# Discord's limits on a modal and its text inputs.
MODAL_TITLE_LIMIT = 45
MODAL_ROWS = 5
TEXT_INPUT_LABEL_LIMIT = 45
TEXT_INPUT_LIMIT = 4000  # max_length, min_length and a pre-filled value
PLACEHOLDER_LIMIT = 100

SELECT_TYPES = (3, 5, 6, 7, 8)  # string, user, role, mentionable and channel selects


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Upload:
    filename: str
    data: bytes


@dataclass
class Attachment:
    """A file on the fake CDN: one the bot uploaded, or one a member attaches (see `FakeDiscord.attachment`)."""

    id: int
    filename: str
    data: bytes
    url: str
    size: int  # what Discord reports, which a test may set to a lie
    content_type: str | None
    width: int | None = None
    height: int | None = None
    description: str | None = None
    fetches: int = 0  # GETs of `url`, failed ones included
    gone: bool = False  # set it to make the CDN answer 404, as for an expired link
    delay: float = 0.0  # seconds the CDN waits before answering, to test download timeouts

    def payload(self) -> dict:
        data = {"id": str(self.id), "filename": self.filename, "size": self.size, "url": self.url,
                "proxy_url": self.url, "content_type": self.content_type}
        if self.width is not None:
            data["width"], data["height"] = self.width, self.height
        if self.description is not None:
            data["description"] = self.description
        return data


@dataclass(eq=False)
class Message:
    """A message as Discord holds it: its latest content, attachments and components, and whether it is gone."""

    id: int
    channel_id: int
    author: dict
    content: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)  # as the bot sent them
    embeds: list[dict] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    message_reference: dict | None = None  # what it replies to, as stored by Discord
    mentions: list[str] = field(default_factory=list)  # ids of the users it pings
    interaction_id: int | None = None  # the interaction it answers, if any
    interaction_metadata: dict | None = None
    webhook_id: int | None = None
    reactions: dict[str, list[str]] = field(default_factory=dict)  # emoji -> ids of who reacted, in order
    timestamp: str = field(default_factory=_now)
    edited_timestamp: str | None = None
    edits: int = 0
    deleted: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in _walk(self.components) if "custom_id" in c]

    def component(self, custom_id: str) -> dict | None:
        return next((c for c in _walk(self.components) if c.get("custom_id") == custom_id), None)


@dataclass
class Reply:
    """One thing the bot did in answer to an interaction (or in a channel)."""

    kind: str  # "callback", "edit", "delete", "followup"; "message" for channel posts
    at: float
    payload: dict
    files: list[Upload] = field(default_factory=list)
    message_id: int | None = None  # the message it created, edited or deleted

    @property
    def fields(self) -> dict:
        """The message fields sent: a callback nests them under `data`."""
        return (self.payload.get("data") or {}) if self.kind == "callback" else self.payload

    @property
    def content(self) -> str:
        return self.fields.get("content") or ""

    @property
    def ephemeral(self) -> bool:
        return bool((self.fields.get("flags") or 0) & EPHEMERAL)


@dataclass(eq=False)
class Interaction:
    id: int
    token: str
    sent_at: float
    replies: list[Reply] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    type: int = APPLICATION_COMMAND
    user: dict | None = None
    channel_id: int | None = None  # where it happened: a text channel, or the DM channel with `user`
    payload: dict = field(default_factory=dict)  # the INTERACTION_CREATE data as dispatched
    message_id: int | None = None  # the original response ("@original"), once there is one
    source_message_id: int | None = None  # component interactions: the message clicked
    followup_ids: list[int] = field(default_factory=list)  # messages created by followups
    modal: dict | None = None  # the modal the bot answered with (response type 9), as sent
    modal_closed: bool = False  # Discord closed that modal: a submit of it was answered
    modal_of: Interaction | None = None  # a MODAL_SUBMIT: the interaction whose modal it submits

    @property
    def modal_values(self) -> dict[str, str]:
        """The modal's text inputs by custom id, each with what it was pre-filled with ("" if nothing)."""
        if self.modal is None:
            raise AssertionError(f"interaction {self.id} was not answered with a modal")
        return {c["custom_id"]: c.get("value") or "" for row in self.modal["components"]
                for c in row.get("components") or []}

    def first(self, kind: str) -> Reply | None:
        return next((reply for reply in self.replies if reply.kind == kind), None)

    async def wait_for(self, predicate, timeout: float = 60.0) -> Reply:
        """The first reply that satisfies `predicate`, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        while True:
            for reply in self.replies:
                if predicate(reply):
                    return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching reply; got {[(r.kind, r.content) for r in self.replies]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


@dataclass(eq=False)
class Guild:
    """A server the bot is in: its roles, members and the permissions Discord computes there.
    Its channels and threads live in `FakeDiscord.channels` / `threads`, each naming its guild."""

    id: int
    name: str
    channel_id: int = 0  # its default text channel
    owner_id: str = ""  # owns the server (all permissions); may be changed any time
    locale: str = "en-US"  # preferred_locale, sent as interactions' guild_locale
    everyone_permissions: int = DEFAULT_PERMISSIONS
    app_permissions: int = DEFAULT_PERMISSIONS  # the bot's own, in every channel; checked on channel routes
    bot_role: dict = field(default_factory=dict)
    roles: dict[str, dict] = field(default_factory=dict)  # made with role(), or by user()/join(permissions=...)
    members: dict[str, dict] = field(default_factory=dict)  # user id -> {"roles", "nick", "joined_at"}
    joined_at: str = field(default_factory=_now)


def _first_guild(name: str, doc: str) -> property:
    """An attribute of the first server, read and set on FakeDiscord as before there were several."""
    return property(lambda self: getattr(self.guilds[self.guild_id], name),
                    lambda self, value: setattr(self.guilds[self.guild_id], name, value), doc=doc)


class FakeDiscord:
    """Servers with text channels and threads, DMs with the bot, and the members who act there.

    The first server ("guild_id") has a default text channel ("channel_id"), where members act unless
    told; `add_guild` adds more servers the bot is in, each with a default channel of its own. In any
    of them `text_channel` adds channels (to the first server unless `guild_id=`), `thread` public or
    private threads (age-restricted when their parent is), `set_nsfw` makes a channel age-restricted
    (or not). `role` and `user` add roles and members (to the first server unless `guild_id=`); `join`
    makes a member a member of another server too, with roles and permissions of their own there.
    `guilds[id]` holds each server's roles, members, owner, locale and the bot's permissions there;
    `everyone_permissions`, `app_permissions`, `guild_owner_id`, `roles`, `members` and `bot_role`
    are the first server's.

    Members act with invoke / invoke_message_command / invoke_user_command / click / select / submit
    (each returns the Interaction, whose replies the bot's answers fill; `submit` fills in a modal the
    bot answered one of them with), react / unreact and post: in the
    default channel, in another channel or thread of any server (`in_channel=`), in a DM with the bot
    (`invoke(..., in_dm=True)`), or where the message they act on is; an interaction carries its
    server's id, locale and permissions (the member's and the bot's). Guild commands are registered
    per server, global ones apply in all. Tests read `message(id)` (every message, edits applied,
    `deleted`), `channel_messages`, `messages_in(channel_id)` (any channel or thread) and `dm(user)`
    (what the bot posted outside interactions), `reactions` (the bot's own), `attachments` (with their
    `fetches`), `events` (everything sent over the gateway) and `requests`. `upload_hook`, if set, is
    awaited with the stored message before the fake answers any request that uploads files, so a test
    can hold that answer back (and stop the bot meanwhile).
    """

    everyone_permissions = _first_guild("everyone_permissions", "@everyone's permissions in the first server.")
    app_permissions = _first_guild("app_permissions", "The bot's own permissions in the first server.")
    guild_owner_id = _first_guild("owner_id", "Who owns the first server (all permissions); may be changed any time.")
    bot_role = _first_guild("bot_role", "The bot's managed role in the first server.")
    roles = _first_guild("roles", "The first server's roles, made with role(), or by user(permissions=...).")
    members = _first_guild("members", 'The first server\'s members: user id -> {"roles", "nick", "joined_at"}.')

    def __init__(self) -> None:
        self._ids = itertools.count(1_000_000_000_000_000_000)
        self.application_id = self.snowflake()
        self.bot_user = {"id": str(self.application_id), "username": "dreambot", "discriminator": "0",
                         "global_name": None, "avatar": None, "bot": True}
        self.guilds: dict[int, Guild] = {}  # every server the bot is in, the first one first
        self.channels: dict[int, dict] = {}  # every server's text channels, as GUILD_CREATE sends them
        self.threads: dict[int, dict] = {}  # every server's threads, as stored (see `_channel` for what is sent)
        self.users: dict[str, dict] = {self.bot_user["id"]: self.bot_user}
        first = self._new_guild("Dream Lab")
        self.guild_id = first.id
        self.channel_id = first.channel_id  # the default one, where members act unless told
        self.owner = self.user("owner")  # owns the application (the bot's owner)
        first.owner_id = self.owner["id"]  # and the first server
        self._announced_guilds: set[int] = set()
        self._announced_roles: set[str] = set()
        self._announced_owners: dict[int, str] = {}
        self._announced_channels: dict[int, dict] = {}
        self._announced_threads: set[int] = set()
        self._announcing = asyncio.Lock()  # one batch of announcements and the event that follows, at a time
        self._background: set[asyncio.Task] = set()
        self.commands: dict[str, dict] = {}  # name -> registered payload, global and every server's together
        self._global_commands: list[dict] = []
        self._guild_commands: dict[int, list[dict]] = {}  # server id -> its own commands
        self.sync_calls: list[str] = []  # the paths of every command registration
        self.interactions: dict[str, Interaction] = {}
        self.expired: set[str] = set()  # interaction tokens past Discord's 15 minutes
        self.ack_timeout: float | None = None  # set to 3.0 to refuse late first answers, as Discord does
        self.channel_messages = Interaction(id=0, token="", sent_at=0.0)  # what the bot did in the channel
        self._in_channels: dict[int, Interaction] = {}  # the other channels' and threads' `channel_messages`
        self.messages: dict[int, Message] = {}
        self.deleted: set[int] = set()
        self.reactions: dict[int, list[str]] = {}  # message id -> emoji the bot itself added, in order
        self.attachments: dict[int, Attachment] = {}
        self.upload_limit = 26_214_400  # per file, as `attachment_size_limit` tells the bot
        # Awaited with the message as stored, after a request that uploads files is applied and before
        # it is answered: `async def stall(message): await asyncio.sleep(25)` holds the answer back.
        self.upload_hook: Callable[[Message], Awaitable[None]] | None = None
        self.dm_channels: dict[str, int] = {}  # user id -> DM channel id
        self._dms: dict[str, Interaction] = {}
        self.requests: list[tuple[str, str]] = []
        self.events: list[tuple[str, dict]] = []  # every event sent over the gateway, in order
        self.intents: int | None = None  # what the bot asked for when it identified
        self.strict_intents = False  # if True, test-made events the bot did not subscribe to are dropped
        self.identified = asyncio.Event()
        self.identify_count = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._sequence = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def snowflake(self) -> int:
        return next(self._ids)

    def add_guild(self, name: str, *, locale: str = "en-US") -> int:
        """Another server the bot is in, owned by a new member, with a default text channel "general"
        (`guilds[id].channel_id`) and `locale` as its preferred locale; returns its id. The bot hears of it
        as of the first (unavailable in READY, then GUILD_CREATE) or, if it is connected, at once in
        GUILD_CREATE, as when it is invited to a server."""
        guild = self._new_guild(name, locale)
        guild.owner_id = self.user(f"{name} owner", guild_id=guild.id)["id"]
        self._announce_soon()
        return guild.id

    def user(self, name: str, *, permissions: int = 0, roles: tuple | list = (), nick: str | None = None,
             guild_id: int | None = None) -> dict:
        """A new member of the first server (or of `guild_id`), with @everyone's permissions plus those of
        `roles` and `permissions`. `permissions` comes as a role of their own, so that the interaction's
        `member.permissions` and what the bot computes from its cache (`channel.permissions_for(member)`)
        agree. `join` makes them a member of another server too."""
        user = {"id": str(self.snowflake()), "username": name, "discriminator": "0", "global_name": name,
                "avatar": None}
        self.users[user["id"]] = user
        return self.join(user, guild_id or self.guild_id, permissions=permissions, roles=roles, nick=nick)

    def join(self, user: dict, guild_id: int, *, permissions: int = 0, roles: tuple | list = (),
             nick: str | None = None) -> dict:
        """`user` (the same user, with the same id) becomes a member of server `guild_id` too, with that
        server's @everyone permissions plus those of `roles` (roles of that server) and `permissions` (a
        role of their own there); returns `user`. Without the members intent the bot is not told."""
        guild = self._guild(guild_id)
        if user["id"] in guild.members:
            raise AssertionError(f"{user['username']} is already a member of server {guild.id}")
        role_ids = [str(r["id"] if isinstance(r, dict) else r) for r in roles]
        foreign = [r for r in role_ids if r not in guild.roles and any(r in g.roles for g in self.guilds.values())]
        if foreign:
            raise AssertionError(f"roles {foreign} are another server's, not server {guild.id}'s")
        if permissions:
            role_ids.append(self.role(f"{user['username']}'s permissions", permissions, guild_id=guild.id)["id"])
        self.users.setdefault(user["id"], user)
        guild.members[user["id"]] = {"roles": role_ids, "nick": nick, "joined_at": _now()}
        return user

    def role(self, name: str, permissions: int = 0, *, guild_id: int | None = None) -> dict:
        """A new role in the first server (or `guild_id`); members get it with `user(..., roles=[role])`. The
        bot hears of it in GUILD_CREATE, or in GUILD_ROLE_CREATE just before the next event the fake sends."""
        guild = self._guild(guild_id or self.guild_id)
        role = {"id": str(self.snowflake()), "name": name, "permissions": str(permissions),
                "position": len(guild.roles) + 2, "color": 0, "hoist": False, "managed": False,
                "mentionable": False, "flags": 0}
        guild.roles[role["id"]] = role
        return role

    def text_channel(self, name: str, *, nsfw: bool = False, guild_id: int | None = None) -> int:
        """A new text channel in the first server (or `guild_id`); returns its id. The bot hears of it in
        GUILD_CREATE, or in CHANNEL_CREATE just before the next event the fake sends."""
        guild = self._guild(guild_id or self.guild_id)
        channel_id = self.snowflake()
        self.channels[channel_id] = {
            "id": str(channel_id), "type": GUILD_TEXT, "guild_id": str(guild.id), "name": name,
            "position": sum(c["guild_id"] == str(guild.id) for c in self.channels.values()),
            "permission_overwrites": [], "nsfw": nsfw, "parent_id": None, "topic": None, "last_message_id": None,
            "rate_limit_per_user": 0}
        return channel_id

    def thread(self, parent_channel_id: int, name: str, *, private: bool = False) -> int:
        """A new thread in text channel `parent_channel_id`, started by the server's owner: public (type
        11), or private (type 12; the bot added to it, as a member must do for a bot to see one at all).
        Like Discord, it is age-restricted exactly when its parent is. Returns its id. The bot hears of
        it in GUILD_CREATE's `threads`, or at once in THREAD_CREATE."""
        parent = self._text_channel(parent_channel_id)
        guild = self.guilds[int(parent["guild_id"])]
        thread_id = self.snowflake()
        now = _now()
        metadata = {"archived": False, "auto_archive_duration": 4320, "archive_timestamp": now, "locked": False,
                    "create_timestamp": now}
        if private:
            metadata["invitable"] = True
        self.threads[thread_id] = {
            "id": str(thread_id), "type": PRIVATE_THREAD if private else PUBLIC_THREAD, "guild_id": parent["guild_id"],
            "parent_id": parent["id"], "owner_id": guild.owner_id, "name": name, "last_message_id": None,
            "rate_limit_per_user": 0, "flags": 0, "member_count": 2 if private else 1, "thread_metadata": metadata}
        self._announce_soon()
        return thread_id

    def set_nsfw(self, channel_id: int, nsfw: bool) -> None:
        """Mark text channel `channel_id` age-restricted or not (its threads follow); the bot hears
        CHANNEL_UPDATE just before the next event the fake sends."""
        self._text_channel(channel_id)["nsfw"] = nsfw

    def messages_in(self, channel_id: int) -> Interaction:
        """What the bot did outside interactions in text channel or thread `channel_id` (`channel_messages`
        for the default one; `dm(user)` for a DM channel), as replies of kind "message", "edit", "delete"."""
        if channel_id == self.channel_id:
            return self.channel_messages
        if self._is_dm(channel_id):
            return self.dm(self._dm_user(channel_id))
        self._place(channel_id)
        return self._in_channels.setdefault(int(channel_id), Interaction(id=0, token="", sent_at=0.0))

    def permissions_of(self, user: dict, guild_id: int | None = None) -> int:
        """The member's permissions in the first server (or `guild_id`), as Discord sends them in
        `member.permissions`."""
        guild = self._guild(guild_id or self.guild_id)
        if user["id"] == guild.owner_id:
            return ALL_PERMISSIONS
        value = guild.everyone_permissions
        for role_id in guild.members.get(user["id"], {}).get("roles", []):
            value |= int(guild.roles.get(role_id, {}).get("permissions", 0))
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    def member(self, user: dict, guild_id: int | None = None) -> dict:
        """`user` as a member payload of the first server (or `guild_id`), permissions included."""
        guild = self._guild(guild_id or self.guild_id)
        record = guild.members.get(user["id"], {})
        return {"user": user, "roles": list(record.get("roles", [])), "joined_at": record.get("joined_at", _now()),
                "deaf": False, "mute": False, "flags": 0, "pending": False, "nick": record.get("nick"),
                "avatar": None, "communication_disabled_until": None,
                "permissions": str(self.permissions_of(user, guild.id))}

    def command(self, name: str, type: int = 1, *, guild_id: int | None = None) -> dict:
        """The registered command `name` of `type` (1 slash, 2 user, 3 message) offered in the first server
        (or `guild_id`): that server's own commands win over global ones."""
        guild_id = int(guild_id or self.guild_id)
        for command in (*self._guild_commands.get(guild_id, []), *self._global_commands):
            if command["name"] == name and command.get("type", 1) == type:
                return command
        registered = sorted((c["name"], c.get("type", 1), c.get("guild_id", "global")) for c in self._all_commands())
        raise AssertionError(f"no command {name!r} of type {type} is registered for server {guild_id}; "
                             f"registered: {registered}")

    def message(self, message_id: int | str) -> Message:
        """A message the bot or a member created, deleted or not."""
        try:
            return self.messages[int(message_id)]
        except KeyError:
            raise AssertionError(f"fake Discord has no message {message_id}") from None

    def dm(self, user: dict) -> Interaction:
        """What the bot sent `user` in direct messages, as replies of kind "message"."""
        return self._dms.setdefault(user["id"], Interaction(id=0, token="", sent_at=0.0))

    def attachment(self, data: bytes | Upload, filename: str | None = None, *, size: int | None = None,
                   content_type: str | None = None, width: int | None = None, height: int | None = None,
                   description: str | None = None) -> Attachment:
        """A file a member attaches (a slash-command option value). By default `size`, `content_type`,
        `width` and `height` are the truth about `data`; pass them to lie as a broken or hostile client might."""
        if isinstance(data, Upload):
            filename = filename or data.filename
            data = data.data
        return self._store_attachment(data, filename or "image.png", f"ephemeral-attachments/{self.application_id}",
                                      size=size, content_type=content_type, width=width, height=height,
                                      description=description)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/{kind:(?:ephemeral-)?attachments}/{scope}/{id}/{filename}", self._serve_attachment)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        for attachment in self.attachments.values():  # made before the server had a port
            attachment.url = attachment.url.replace("http://127.0.0.1:0/", f"http://127.0.0.1:{self.port}/", 1)
        return self

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what members do -------------------------------------------------------------------------

    async def invoke(self, name: str, user: dict | None = None, *, in_channel: int | None = None,
                     in_dm: bool = False, **options: Any) -> Interaction:
        """A member runs slash command `name` ("group sub" for a subcommand) with `options`, sent as given:
        no checks, like a raw client. An Attachment, Upload or bytes value becomes an attachment option,
        a user dict a user (or mentionable) option; by the option's declared type, a channel id a
        channel, a role dict or id a role. It runs in the default channel, in text channel or thread
        `in_channel` of any server (whose member `user` must be), or with `in_dm` in the member's DM
        with the bot (which a guild command, or one not allowed in DMs, never is)."""
        names = name.split()
        guild = None if in_dm else self._guild_at(in_channel or self.channel_id)
        command = self.command(names[0], 1, guild_id=guild.id if guild else None)
        user = user or self.user("member", guild_id=guild.id if guild else None)
        contexts = command.get("contexts") or ([0] if command.get("dm_permission") is False else [0, 1, 2])
        if in_dm and (command.get("guild_id") or 1 not in contexts):
            raise AssertionError(f"/{names[0]} is not offered in DMs (a guild command, or contexts {contexts})")
        declared = command.get("options") or []
        chain = []
        for sub in names[1:]:
            option = next((o for o in declared if o["name"] == sub and o.get("type") in (1, 2)), None)
            if option is None:
                raise AssertionError(f"/{name}: /{names[0]} has no subcommand {sub!r}")
            chain.append(option)
            declared = option.get("options") or []
        kinds = {o["name"]: o["type"] for o in declared}
        resolved: dict[str, dict] = {}
        data_options = [self._option(key, value, kinds.get(key), resolved, user, guild)
                        for key, value in options.items()]
        for option in reversed(chain):
            data_options = [{"name": option["name"], "type": option["type"], "options": data_options}]
        data = {"id": command["id"], "name": names[0], "type": 1, "options": data_options}
        if resolved:
            data["resolved"] = resolved
        channel_id = self._dm_id(user) if in_dm else int(in_channel or self.channel_id)
        return await self._interact(APPLICATION_COMMAND, self._scoped(data, command), user, channel_id=channel_id)

    async def autocomplete(self, name: str, focused: str, typed: str = "", user: dict | None = None, *,
                           in_channel: int | None = None, **options: str) -> list[dict]:
        """A member types `typed` into option `focused` of /`name` (other string options as given so far),
        and Discord asks the bot for suggestions: returns the choices the bot answered with. Discord
        asks only for options declared with autocomplete."""
        names = name.split()
        guild = self._guild_at(in_channel or self.channel_id)
        command = self.command(names[0], 1, guild_id=guild.id)
        chain, options_declared = [], command.get("options") or []
        for sub in names[1:]:  # "group sub": the subcommand's options
            option = next(o for o in options_declared if o["name"] == sub and o.get("type") in (1, 2))
            chain.append(option)
            options_declared = option.get("options") or []
        declared = {o["name"]: o for o in options_declared}
        if not (declared.get(focused) or {}).get("autocomplete"):
            raise AssertionError(f"/{name} has no option {focused!r} with autocomplete")
        data_options = [{"name": key, "type": declared[key]["type"], "value": value} for key, value in options.items()]
        data_options.append({"name": focused, "type": declared[focused]["type"], "value": typed, "focused": True})
        for option in reversed(chain):
            data_options = [{"name": option["name"], "type": option["type"], "options": data_options}]
        data = {"id": command["id"], "name": names[0], "type": 1, "options": data_options}
        record = await self._interact(APPLICATION_COMMAND_AUTOCOMPLETE, self._scoped(data, command), user,
                                      channel_id=int(in_channel or self.channel_id))
        reply = await record.wait_for(lambda reply: reply.kind == "callback", timeout=10)
        return reply.payload["data"]["choices"]

    async def invoke_message_command(self, name: str, message_id: int, user: dict | None = None) -> Interaction:
        """A member picks Apps → `name` on message `message_id`, where that message is."""
        message = self._target(message_id)
        guild = self._guild_of(message.channel_id)
        command = self.command(name, 3, guild_id=guild.id if guild else None)
        data = {"id": command["id"], "name": name, "type": 3, "target_id": str(message.id),
                "resolved": {"messages": {str(message.id): self._payload(message)}}}
        return await self._interact(APPLICATION_COMMAND, self._scoped(data, command), self._viewer(message, user),
                                    channel_id=message.channel_id)

    async def invoke_user_command(self, name: str, target: dict, user: dict | None = None, *,
                                  in_channel: int | None = None) -> Interaction:
        """A member picks Apps → `name` on member `target`, in the default channel or `in_channel`."""
        channel_id = int(in_channel or self.channel_id)
        guild = self._guild_at(channel_id)
        command = self.command(name, 2, guild_id=guild.id)
        resolved: dict = {"users": {target["id"]: target}}
        if target["id"] in guild.members:  # someone who left, or never joined, comes as a user only
            member = {k: v for k, v in self.member(target, guild.id).items() if k != "user"}
            resolved["members"] = {target["id"]: member}
        data = {"id": command["id"], "name": name, "type": 2, "target_id": target["id"], "resolved": resolved}
        return await self._interact(APPLICATION_COMMAND, self._scoped(data, command), user, channel_id=channel_id)

    async def click(self, message_id: int, custom_id: str, user: dict | None = None) -> Interaction:
        """A member clicks the button `custom_id` on message `message_id`, where that message is; only its
        recipient (the default `user`) can click on an ephemeral or direct message."""
        message = self._target(message_id)
        component = self._component(message, custom_id)
        if component.get("type") != 2:
            raise AssertionError(f"{custom_id!r} is a component of type {component.get('type')}, not a button")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(MESSAGE_COMPONENT, data, user, message=message)

    async def select(self, message_id: int, custom_id: str, values: list[str], user: dict | None = None) -> Interaction:
        """A member picks `values` in the select menu `custom_id` on message `message_id` (see `click`)."""
        message = self._target(message_id)
        component = self._component(message, custom_id)
        if component.get("type") not in SELECT_TYPES:
            raise AssertionError(f"{custom_id!r} is a component of type {component.get('type')}, not a select menu")
        offered = {o["value"] for o in component.get("options") or []}
        if component["type"] == 3 and not set(values) <= offered:
            raise AssertionError(f"{custom_id!r} offers {sorted(offered)}, not {values}")
        data = {"custom_id": custom_id, "component_type": component["type"], "values": [str(v) for v in values]}
        return await self._interact(MESSAGE_COMPONENT, data, user, message=message)

    async def submit(self, shown: Interaction, values: dict[str, str] | None = None, user: dict | None = None
                     ) -> Interaction:
        """The member the bot showed a modal to (in answer to `shown`, `shown.modal`) submits it, having typed
        `values` by the text inputs' custom ids; the inputs not named keep what they were pre-filled with.
        As Discord's client: only that member sees the modal, only one still open can be submitted (Discord
        closes it once a submit is answered), and only with what its inputs accept (a required input filled,
        lengths within bounds). Sent as Discord sends it: a MODAL_SUBMIT where `shown` happened, carrying
        the message whose component opened the modal, if one did."""
        modal = shown.modal
        if modal is None:
            raise AssertionError(f"interaction {shown.id} was not answered with a modal")
        if user is not None and user["id"] != shown.user["id"]:
            raise AssertionError(f"only {shown.user['username']} sees the modal {modal['custom_id']!r}, "
                                 f"not {user['username']}")
        if shown.modal_closed:
            raise AssertionError(f"the modal {modal['custom_id']!r} was submitted and closed")
        values = dict(values or {})
        inputs = shown.modal_values
        if set(values) - set(inputs):
            raise AssertionError(f"the modal {modal['custom_id']!r} has no input {sorted(set(values) - set(inputs))}; "
                                 f"it has {sorted(inputs)}")
        rows = []
        for row in modal["components"]:
            typed = []
            for text_input in row["components"]:
                custom_id = text_input["custom_id"]
                value = str(values.get(custom_id, inputs[custom_id]))
                least, most = text_input.get("min_length", 0), text_input.get("max_length", TEXT_INPUT_LIMIT)
                if not value and text_input.get("required", True):
                    raise AssertionError(f"{custom_id!r} is required: Discord does not submit the modal empty")
                if value and not least <= len(value) <= most:
                    raise AssertionError(f"{custom_id!r} takes {least} to {most} characters, not {len(value)}")
                typed.append({"type": 4, "custom_id": custom_id, "value": value})
            rows.append({"type": 1, "components": typed})
        source = self.messages.get(shown.source_message_id) if shown.source_message_id is not None else None
        data = {"custom_id": modal["custom_id"], "components": rows}
        record = await self._interact(MODAL_SUBMIT, data, shown.user, message=source, channel_id=shown.channel_id,
                                      modal_of=shown)
        return record

    async def react(self, message_id: int, emoji: str, user: dict | None = None) -> dict:
        """A member adds reaction `emoji` ("🔁", or "name:id" for a custom emoji) to message `message_id`;
        returns the MESSAGE_REACTION_ADD data sent."""
        message = self._target(message_id)
        if message.ephemeral:
            raise AssertionError(f"message {message_id} is ephemeral: Discord offers no reactions on it")
        user = self._viewer(message, user) or self._someone(message.channel_id)
        self._check_member(user, message.channel_id)
        emoji = _emoji_key(emoji)
        who = message.reactions.setdefault(emoji, [])
        if user["id"] not in who:
            who.append(user["id"])
        data = self._reaction_event(message, emoji, user)
        data["message_author_id"] = message.author["id"]
        intent = DIRECT_MESSAGE_REACTIONS if self._is_dm(message.channel_id) else GUILD_MESSAGE_REACTIONS
        await self._deliver("MESSAGE_REACTION_ADD", data, intent)
        return data

    async def unreact(self, message_id: int, emoji: str, user: dict) -> dict:
        """`user` takes their reaction `emoji` off message `message_id`."""
        message = self._target(message_id)
        emoji = _emoji_key(emoji)
        if user["id"] in message.reactions.get(emoji, []):
            message.reactions[emoji].remove(user["id"])
        data = self._reaction_event(message, emoji, user)
        data.pop("member", None)
        intent = DIRECT_MESSAGE_REACTIONS if self._is_dm(message.channel_id) else GUILD_MESSAGE_REACTIONS
        await self._deliver("MESSAGE_REACTION_REMOVE", data, intent)
        return data

    async def post(self, content: str = "", user: dict | None = None, *,
                   attachments: list[Attachment | Upload | bytes] = (), reply_to: int | None = None,
                   in_channel: int | None = None) -> Message:
        """A member posts a message in the default channel or `in_channel` (a text channel or thread of any
        server, or a DM channel whose recipient then posts) as MESSAGE_CREATE; its content reaches the bot
        only with the message content intent, as on Discord."""
        channel_id = int(in_channel or self.channel_id)
        dm = self._is_dm(channel_id)
        guild = None if dm else self._guild_of(channel_id)
        user = user or (self._dm_user(channel_id) if dm else self._someone(channel_id))
        self._check_member(user, channel_id)
        stored = [a if isinstance(a, Attachment) else self._store_attachment(
            a.data if isinstance(a, Upload) else a, a.filename if isinstance(a, Upload) else "image.png",
            f"attachments/{channel_id}") for a in attachments]
        message = Message(id=self.snowflake(), channel_id=channel_id, author=user, content=content,
                          attachments=stored, mentions=re.findall(r"<@!?(\d+)>", content))
        if reply_to is not None:
            message.type = 19
            message.message_reference = {"type": 0, "message_id": str(self._target(reply_to).id),
                                         "channel_id": str(channel_id)}
            if guild is not None:
                message.message_reference["guild_id"] = str(guild.id)
        self.messages[message.id] = message
        await self._deliver("MESSAGE_CREATE", self._gateway_payload(message), DIRECT_MESSAGES if dm else GUILD_MESSAGES)
        return message

    def expire(self, interaction: Interaction) -> None:
        """From now on, act as Discord does once an interaction's 15 minutes are up."""
        self.expired.add(interaction.token)

    async def dispatch(self, event: str, data: dict) -> None:
        await self.identified.wait()
        async with self._announcing:
            await self._sync_guilds()
            await self._send(event, data)

    async def _send(self, event: str, data: dict) -> None:
        self.events.append((event, data))
        for ws in list(self._sockets):
            await ws.send_json({"op": 0, "t": event, "s": next(self._sequence), "d": data})

    def _announce_soon(self) -> None:
        """Tell a connected bot of a new server or thread now, as Discord does, not with the next event."""
        if not self.identified.is_set():
            return  # READY and GUILD_CREATE will bring it
        try:
            task = asyncio.get_running_loop().create_task(self._announce())
        except RuntimeError:  # no loop running: the next event the fake sends brings it
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce(self) -> None:
        async with self._announcing:
            try:
                await self._sync_guilds()
            except (ConnectionError, RuntimeError):  # the bot is going away; it hears all again when it identifies
                pass

    async def _sync_guilds(self) -> None:
        """Tell the bot about servers, roles, channels, threads and owner changes made since it last heard,
        as Discord would have."""
        updates = []
        for guild in self.guilds.values():
            if guild.id not in self._announced_guilds:  # invited to it: all it holds comes along
                updates.append(("GUILD_CREATE", self._guild_payload(guild)))
                self._mark_announced(guild)
        for guild in self.guilds.values():
            updates += [("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role})
                        for role_id, role in guild.roles.items() if role_id not in self._announced_roles]
            self._announced_roles.update(guild.roles)
        updates += [("CHANNEL_UPDATE" if channel_id in self._announced_channels else "CHANNEL_CREATE", dict(channel))
                    for channel_id, channel in self.channels.items()
                    if self._announced_channels.get(channel_id) != channel]
        self._announced_channels = {channel_id: dict(channel) for channel_id, channel in self.channels.items()}
        updates += [("THREAD_CREATE", {**self._thread_payload(thread_id), "newly_created": True})
                    for thread_id in self.threads if thread_id not in self._announced_threads]
        self._announced_threads.update(self.threads)
        for guild in self.guilds.values():
            if guild.owner_id != self._announced_owners.get(guild.id):
                self._announced_owners[guild.id] = guild.owner_id
                data = self._guild_payload(guild)
                updates.append(("GUILD_UPDATE", {k: v for k, v in data.items()
                                                 if k not in ("channels", "members", "threads")}))
        for event, data in updates:
            await self._send(event, data)

    def _mark_announced(self, guild: Guild) -> None:
        """What the bot now knows of `guild`, as GUILD_CREATE told it."""
        self._announced_guilds.add(guild.id)
        self._announced_roles.update(guild.roles)
        self._announced_owners[guild.id] = guild.owner_id
        self._announced_channels.update({channel_id: dict(channel) for channel_id, channel in self.channels.items()
                                         if channel["guild_id"] == str(guild.id)})
        self._announced_threads.update(thread_id for thread_id, thread in self.threads.items()
                                       if thread["guild_id"] == str(guild.id))

    # -- gateway ---------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(message.data)
                if payload["op"] == 1:
                    await ws.send_json({"op": 11})
                elif payload["op"] == 2:
                    self.intents = payload["d"].get("intents")
                    await self._identify(ws)
                elif payload["op"] == 6:
                    await ws.send_json({"op": 0, "t": "RESUMED", "s": next(self._sequence), "d": {}})
        finally:
            self._sockets.remove(ws)
        return ws

    async def _identify(self, ws: web.WebSocketResponse) -> None:
        async with self._announcing:
            await ws.send_json({"op": 0, "t": "READY", "s": next(self._sequence), "d": {
                "v": 10,
                "user": self.bot_user,
                "guilds": [{"id": str(guild_id), "unavailable": True} for guild_id in self.guilds],
                "session_id": "fake-session",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "shard": [0, 1],
            }})
            self._announced_guilds, self._announced_roles, self._announced_threads = set(), set(), set()
            self._announced_channels, self._announced_owners = {}, {}
            for guild in list(self.guilds.values()):
                data = self._guild_payload(guild)
                self._mark_announced(guild)
                await ws.send_json({"op": 0, "t": "GUILD_CREATE", "s": next(self._sequence), "d": data})
            self.identify_count += 1
            self.identified.set()

    async def _deliver(self, event: str, data: dict, intent: int) -> None:
        """An event a test asked for: sent even if the bot did not subscribe, unless `strict_intents`."""
        if self.strict_intents and not self._subscribed(intent):
            self.events.append((f"{event} (dropped: not subscribed)", data))
            return
        await self.dispatch(event, data)

    async def _emit(self, event: str, data: dict, intent: int) -> None:
        """An event that follows from the bot's own REST call: sent only if it subscribed, as Discord does."""
        if not self.identified.is_set() or not self._subscribed(intent):
            return
        self.events.append((event, data))
        for ws in list(self._sockets):
            try:
                await ws.send_json({"op": 0, "t": event, "s": next(self._sequence), "d": data})
            except (ConnectionError, RuntimeError):  # the bot is going away; Discord would not care either
                pass

    def _subscribed(self, intent: int) -> bool:
        return self.intents is not None and bool(self.intents & intent)

    async def _emit_message(self, event: str, message: Message) -> None:
        if message.ephemeral:  # only the member sees those: no gateway event
            return
        guild = self._guild_of(message.channel_id)
        intent = GUILD_MESSAGES if guild else DIRECT_MESSAGES
        if event == "MESSAGE_DELETE":
            data = {"id": str(message.id), "channel_id": str(message.channel_id)}
            if guild is not None:
                data["guild_id"] = str(guild.id)
        else:
            data = self._gateway_payload(message)
        await self._emit(event, data, intent)

    def _channel(self, channel_id: int | str | None = None) -> dict:
        """A text channel's or thread's payload as Discord sends it, the default channel's unless told. A
        thread reports its parent's `nsfw`, whatever that is now."""
        channel_id = int(channel_id or self.channel_id)
        if channel_id not in self.threads:
            return dict(self._text_channel(channel_id))
        thread = self.threads[channel_id]
        sent = [m for m in self.messages.values() if m.channel_id == channel_id and not m.ephemeral]
        return {**thread, "thread_metadata": dict(thread["thread_metadata"]),
                "nsfw": self.channels[int(thread["parent_id"])]["nsfw"],
                "message_count": sum(not m.deleted for m in sent), "total_message_sent": len(sent)}

    def _thread_payload(self, thread_id: int) -> dict:
        """A thread as GUILD_CREATE and THREAD_CREATE send it: with the bot's thread membership, if any."""
        data = self._channel(thread_id)
        if data["type"] == PRIVATE_THREAD:  # the bot was added to it (see `thread`)
            data["member"] = {"id": data["id"], "user_id": self.bot_user["id"],
                              "join_timestamp": data["thread_metadata"]["create_timestamp"], "flags": 0}
        return data

    def _text_channel(self, channel_id: int | str) -> dict:
        """The stored text channel (a test's mistake if there is none)."""
        try:
            return self.channels[int(channel_id)]
        except (KeyError, ValueError, TypeError):
            if str(channel_id).isdigit() and int(channel_id) in self.threads:
                raise AssertionError(f"{channel_id} is a thread, not a text channel (a thread is age-restricted "
                                     f"exactly when its parent is)") from None
            raise AssertionError(f"fake Discord has no text channel {channel_id}; it has {list(self.channels)}") \
                from None

    def _place(self, channel_id: int | str) -> dict:
        """The stored text channel or thread (a test's mistake if there is neither)."""
        key = int(channel_id) if str(channel_id).isdigit() else None
        place = self.channels.get(key) or self.threads.get(key)
        if place is None:
            raise AssertionError(f"fake Discord has no text channel or thread {channel_id}; it has channels "
                                 f"{list(self.channels)} and threads {list(self.threads)}")
        return place

    def _guild(self, guild_id: int | str) -> Guild:
        guild = self.guilds.get(int(guild_id)) if str(guild_id).isdigit() else None
        if guild is None:
            raise AssertionError(f"fake Discord has no server {guild_id}; it has {list(self.guilds)}")
        return guild

    def _guild_at(self, channel_id: int | str) -> Guild:
        """The server text channel or thread `channel_id` is in."""
        return self.guilds[int(self._place(channel_id)["guild_id"])]

    def _guild_of(self, channel_id: int | str) -> Guild | None:
        """The server `channel_id` is in; None for a DM channel."""
        return None if self._is_dm(int(channel_id)) else self._guild_at(channel_id)

    def _someone(self, channel_id: int) -> dict:
        """A new member who can act in `channel_id`: of its server, or of the first for a DM."""
        guild = self._guild_of(channel_id)
        return self.user("member", guild_id=guild.id if guild else None)

    def _check_member(self, user: dict, channel_id: int) -> None:
        guild = self._guild_of(channel_id)
        if guild is not None and user["id"] not in guild.members:
            raise AssertionError(f"{user['username']} is not a member of server {guild.id}, where channel "
                                 f"{channel_id} is: fake.join(user, {guild.id}) first")

    def _dm_id(self, user: dict) -> int:
        """The id of the DM channel between the bot and `user`, opened if needed."""
        if user["id"] not in self.dm_channels:
            self.dm_channels[user["id"]] = self.snowflake()
        self.dm(user)
        return self.dm_channels[user["id"]]

    def _dm_channel(self, user: dict) -> dict:
        return {"id": str(self._dm_id(user)), "type": 1, "recipients": [user], "last_message_id": None, "flags": 0}

    def _dm_user(self, channel_id: int) -> dict:
        return self.users[next(u for u, c in self.dm_channels.items() if c == channel_id)]

    def _new_guild(self, name: str, locale: str = "en-US") -> Guild:
        guild = Guild(id=self.snowflake(), name=name, locale=locale)
        self.guilds[guild.id] = guild
        guild.channel_id = self.text_channel("general", guild_id=guild.id)
        guild.bot_role = {"id": str(self.snowflake()), "name": "Dreambot", "permissions": str(guild.app_permissions),
                          "position": 1, "color": 0, "hoist": False, "managed": True, "mentionable": False,
                          "flags": 0, "tags": {"bot_id": str(self.application_id)}}
        return guild

    def _roles(self, guild: Guild | None = None) -> list[dict]:
        guild = guild or self.guilds[self.guild_id]
        everyone = {"id": str(guild.id), "name": "@everyone", "permissions": str(guild.everyone_permissions),
                    "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        guild.bot_role["permissions"] = str(guild.app_permissions)
        return [everyone, guild.bot_role, *guild.roles.values()]

    def _guild_payload(self, guild: Guild) -> dict:
        return {
            "id": str(guild.id), "name": guild.name, "icon": None, "owner_id": guild.owner_id,
            "roles": self._roles(guild), "emojis": [], "stickers": [], "features": [],
            "channels": [dict(channel) for channel in self.channels.values() if channel["guild_id"] == str(guild.id)],
            "threads": [self._thread_payload(thread_id) for thread_id, thread in self.threads.items()
                        if thread["guild_id"] == str(guild.id)],
            "members": [{"user": self.bot_user, "roles": [guild.bot_role["id"]], "joined_at": guild.joined_at,
                         "deaf": False, "mute": False, "flags": 0}],
            "member_count": len(guild.members) + 1, "large": False, "unavailable": False, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "premium_tier": 0, "preferred_locale": guild.locale, "system_channel_id": None, "system_channel_flags": 0,
            "afk_channel_id": None, "afk_timeout": 300, "application_id": None, "vanity_url_code": None,
            "description": None, "banner": None, "splash": None, "discovery_splash": None,
            "joined_at": guild.joined_at, "voice_states": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "premium_progress_bar_enabled": False,
        }

    # -- interactions ----------------------------------------------------------------------------

    async def _interact(self, kind: int, data: dict, user: dict | None, message: Message | None = None, *,
                        channel_id: int | None = None, modal_of: Interaction | None = None) -> Interaction:
        """INTERACTION_CREATE from `channel_id` (where `message` is, for a component): a text channel or
        thread of a server `user` is a member of, or `user`'s DM with the bot, as Discord sends it there."""
        if message is not None:
            user, channel_id = self._viewer(message, user), message.channel_id
        channel_id = int(channel_id or self.channel_id)
        user = user or self._someone(channel_id)
        self._check_member(user, channel_id)
        guild = self._guild_of(channel_id)
        dm = guild is None
        interaction_id = self.snowflake()
        token = f"token-{interaction_id}"
        record = Interaction(id=interaction_id, token=token, sent_at=time.monotonic(), type=kind, user=user,
                             channel_id=channel_id, source_message_id=message.id if message else None,
                             modal_of=modal_of)
        self.interactions[token] = record
        payload = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": self._dm_channel(user) if dm else self._channel(channel_id),
            "data": data,
            "locale": "en-US",
            "app_permissions": str(DM_APP_PERMISSIONS if dm else guild.app_permissions),
            "entitlements": [],
            "authorizing_integration_owners": {"0": "0" if dm else str(guild.id)},
            "context": 1 if dm else 0,
            "attachment_size_limit": self.upload_limit,
        }
        if dm:  # no guild, no member: the user at the top level
            payload["user"] = user
        else:
            payload.update(guild_id=str(guild.id), member=self.member(user, guild.id), guild_locale=guild.locale)
        if message is not None:
            payload["message"] = self._payload(message)
        record.payload = payload
        await self.dispatch("INTERACTION_CREATE", payload)
        return record

    def _scoped(self, data: dict, command: dict) -> dict:
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return data

    def _option(self, name: str, value: Any, kind: int | None, resolved: dict, user: dict,
                guild: Guild | None) -> dict:
        """One option as Discord sends it, what it names added to `resolved` (`user` runs the command in
        `guild`; None for a DM, where the first server's members, roles and channels stand in)."""
        guild = guild or self.guilds[self.guild_id]
        if isinstance(value, (bytes, Upload)):
            value = self.attachment(value)
        if isinstance(value, Attachment):
            resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
            return {"name": name, "type": 11, "value": str(value.id)}
        if kind in (6, 9) and isinstance(value, (int, str)) and str(value) in self.users:
            value = self.users[str(value)]
        if isinstance(value, dict) and "username" in value:
            resolved.setdefault("users", {})[value["id"]] = value
            if value["id"] in guild.members:  # a user who is not a member there comes without one
                member = {k: v for k, v in self.member(value, guild.id).items() if k != "user"}
                resolved.setdefault("members", {})[value["id"]] = member
            return {"name": name, "type": 9 if kind == 9 else 6, "value": value["id"]}
        if kind in (8, 9):
            roles = {role["id"]: role for role in self._roles(guild)}
            role_id = str(value.get("id") if isinstance(value, dict) else value)
            if role_id in roles:
                resolved.setdefault("roles", {})[role_id] = roles[role_id]
                return {"name": name, "type": kind, "value": role_id}
        if kind == 7:
            channel = {k: v for k, v in self._channel(value).items() if k not in ("guild_id", "permission_overwrites")}
            resolved.setdefault("channels", {})[channel["id"]] = {
                **channel, "permissions": str(self.permissions_of(user, guild.id)), "flags": 0}
            return {"name": name, "type": 7, "value": channel["id"]}
        if kind is None:
            kind = (5 if isinstance(value, bool) else 3 if isinstance(value, str)
                    else 10 if isinstance(value, float) else 4)
        return {"name": name, "type": kind, "value": value}

    def _viewer(self, message: Message, user: dict | None) -> dict | None:
        """Who acts on `message`: `user`, checked to be its recipient if it is ephemeral or in a DM (the
        recipient, by default); None if anyone in the channel could."""
        viewer = ((message.interaction_metadata or {}).get("user") if message.ephemeral
                  else self._dm_user(message.channel_id) if self._is_dm(message.channel_id) else None)
        if viewer is not None and user is not None and user["id"] != viewer["id"]:
            raise AssertionError(f"only {viewer['username']} sees message {message.id}, not {user['username']}")
        return user or viewer

    def _target(self, message_id: int | str) -> Message:
        message = self.message(message_id)
        if message.deleted:
            raise AssertionError(f"message {message_id} was deleted")
        return message

    def _component(self, message: Message, custom_id: str) -> dict:
        component = message.component(custom_id)
        if component is None:
            raise AssertionError(f"message {message.id} has no component {custom_id!r}; it has {message.custom_ids}")
        if component.get("disabled"):
            raise AssertionError(f"{custom_id!r} on message {message.id} is disabled")
        return component

    def _reaction_event(self, message: Message, emoji: str, user: dict) -> dict:
        data = {"user_id": user["id"], "channel_id": str(message.channel_id), "message_id": str(message.id),
                "emoji": _emoji(emoji), "burst": False, "burst_colors": [], "type": 0}
        guild = self._guild_of(message.channel_id)
        if guild is not None:
            data["guild_id"] = str(guild.id)
            data["member"] = self.member(user, guild.id)
        return data

    # -- messages --------------------------------------------------------------------------------

    def _is_dm(self, channel_id: int) -> bool:
        return channel_id in self.dm_channels.values()

    def _live(self, message_id: int | str | None) -> Message | None:
        if message_id is None:
            return None
        try:
            message = self.messages.get(int(message_id))
        except ValueError:
            return None
        return None if message is None or message.deleted else message

    def _store_attachment(self, data: bytes, filename: str, scope: str, *, size: int | None = None,
                          content_type: str | None = None, width: int | None = None, height: int | None = None,
                          description: str | None = None) -> Attachment:
        attachment_id = self.snowflake()
        sniffed_type, sniffed_size = _sniff(data, filename)
        if sniffed_size and width is None and height is None:
            width, height = sniffed_size
        attachment = Attachment(
            id=attachment_id, filename=filename, data=data,
            url=f"http://127.0.0.1:{self.port}/{scope}/{attachment_id}/{quote(filename)}",
            size=len(data) if size is None else size, content_type=content_type or sniffed_type,
            width=width, height=height, description=description)
        self.attachments[attachment_id] = attachment
        return attachment

    def _new_message(self, channel_id: int, payload: dict, files: list[Upload], *, type: int = 0,
                     flags: int = 0, interaction: Interaction | None = None) -> Message:
        message = Message(id=self.snowflake(), channel_id=channel_id, author=self.bot_user, type=type, flags=flags)
        if interaction is not None:
            message.interaction_id = interaction.id
            message.webhook_id = self.application_id
            message.interaction_metadata = {
                "id": str(interaction.id), "type": interaction.type, "user": interaction.user,
                "authorizing_integration_owners": interaction.payload.get("authorizing_integration_owners", {})}
            if interaction.source_message_id is not None:
                message.interaction_metadata["interacted_message_id"] = str(interaction.source_message_id)
            if interaction.message_id is not None:
                message.interaction_metadata["original_response_message_id"] = str(interaction.message_id)
        self._apply(message, payload, files)
        self.messages[message.id] = message
        return message

    def _apply(self, message: Message, payload: dict, files: list[Upload]) -> None:
        """Discord's edit rules: fields sent replace, fields left out stay; `attachments` lists what to keep."""
        if "content" in payload:
            message.content = payload["content"] or ""
            message.mentions = _mentions(message.content, payload.get("allowed_mentions"))
        if "embeds" in payload:
            message.embeds = payload["embeds"] or []
        if "components" in payload:
            message.components = payload["components"] or []
        if "flags" in payload:  # only these may change after creation
            mutable = SUPPRESS_EMBEDS
            message.flags = (message.flags & ~mutable) | ((payload["flags"] or 0) & mutable)
        scope = f"attachments/{message.channel_id}"
        if "attachments" in payload:
            existing = {str(a.id): a for a in message.attachments}
            kept, used = [], set()
            for entry in payload["attachments"] or []:
                key = str(entry.get("id"))
                if key in existing:
                    kept.append(existing[key])
                elif key.isdigit() and int(key) < len(files):
                    upload = files[int(key)]
                    used.add(int(key))
                    kept.append(self._store_attachment(upload.data, entry.get("filename") or upload.filename, scope,
                                                       description=entry.get("description")))
            kept += [self._store_attachment(u.data, u.filename, scope) for i, u in enumerate(files) if i not in used]
            message.attachments = kept
        else:
            message.attachments = message.attachments + [self._store_attachment(u.data, u.filename, scope)
                                                         for u in files]

    async def _edit_route(self, request: web.Request, message: Message, record: Interaction) -> web.Response:
        """PATCH of a message, through a webhook or the channel: check, apply, record, announce."""
        payload, files = await _read_body(request)
        problem = self._message_problem(payload, files, creating=False)
        if problem is not None:
            return problem
        self._edit(message, payload, files)
        self._record(record, Reply("edit", time.monotonic(), payload, files, message_id=message.id))
        await self._emit_message("MESSAGE_UPDATE", message)
        answer = _json(self._payload(message))
        await self._uploaded(message, files)
        return answer

    async def _uploaded(self, message: Message | None, files: list[Upload]) -> None:
        """`upload_hook`'s turn, if the request uploaded files: applied and announced, not yet answered."""
        if files and message is not None and self.upload_hook is not None:
            await self.upload_hook(message)

    def _edit(self, message: Message, payload: dict, files: list[Upload]) -> None:
        self._apply(message, payload, files)
        message.flags &= ~LOADING
        message.edits += 1
        message.edited_timestamp = _now()

    def _delete(self, message: Message) -> None:
        message.deleted = True
        self.deleted.add(message.id)

    def _payload(self, message: Message, *, with_reference: bool = True) -> dict:
        data = {
            "id": str(message.id), "channel_id": str(message.channel_id), "author": message.author,
            "content": message.content, "timestamp": message.timestamp, "edited_timestamp": message.edited_timestamp,
            "tts": False, "mention_everyone": False,
            "mentions": [self.users.get(i, {"id": i, "username": "someone", "discriminator": "0", "avatar": None,
                                            "global_name": None}) for i in message.mentions],
            "mention_roles": [], "attachments": [a.payload() for a in message.attachments],
            "embeds": message.embeds, "pinned": False, "type": message.type, "flags": message.flags,
            "components": message.components,
        }
        guild = self._guild_of(message.channel_id)
        if guild is not None:
            data["guild_id"] = str(guild.id)
        if message.webhook_id is not None:
            data["webhook_id"] = data["application_id"] = str(message.webhook_id)
        if message.interaction_metadata is not None:
            data["interaction_metadata"] = message.interaction_metadata
        if message.reactions:
            data["reactions"] = [
                {"emoji": _emoji(emoji), "count": len(who), "count_details": {"burst": 0, "normal": len(who)},
                 "me": self.bot_user["id"] in who, "me_burst": False, "burst_colors": []}
                for emoji, who in message.reactions.items() if who]
        if message.message_reference is not None:
            data["message_reference"] = message.message_reference
            if with_reference:
                target = self._live(message.message_reference.get("message_id"))
                data["referenced_message"] = self._payload(target, with_reference=False) if target else None
        return data

    def _gateway_payload(self, message: Message) -> dict:
        data = self._payload(message)
        if message.author.get("bot") or self._is_dm(message.channel_id):
            return data
        member = self.member(message.author, self._guild_at(message.channel_id).id)
        data["member"] = {k: v for k, v in member.items() if k not in ("user", "permissions")}
        # Without the privileged intent Discord strips what members wrote, unless the bot is mentioned.
        if not self._subscribed(MESSAGE_CONTENT) and self.bot_user["id"] not in message.mentions:
            data.update(content="", embeds=[], attachments=[], components=[])
        return data

    # -- REST ------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        self.requests.append((request.method, path))
        parts = path.strip("/").split("/")
        if request.method == "GET" and path == "/users/@me":
            return _json(self.bot_user)
        if request.method == "GET" and path == "/oauth2/applications/@me":
            return _json({"id": str(self.application_id), "name": "Dreambot", "description": "", "icon": None,
                          "bot_public": True, "bot_require_code_grant": False, "owner": self.owner,
                          "verify_key": "0" * 64, "flags": 0, "team": None, "summary": ""})
        if request.method == "GET" and path == "/gateway":
            return _json({"url": self.gateway_url})
        if parts[0] == "applications" and parts[-1] == "commands":
            return await self._commands(request, path, parts)
        if parts[0] in ("interactions", "webhooks") and len(parts) > 2 and parts[2] in self.expired:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        if parts[0] == "interactions" and parts[-1] == "callback":
            return await self._callback(request, parts[2])
        if parts[0] == "webhooks":
            return await self._webhook(request, parts)
        if parts[0] == "channels" and len(parts) > 1:
            return await self._channel_route(request, parts)
        if parts[:3] == ["users", "@me", "channels"] and request.method == "POST":
            return await self._open_dm(request)
        if parts[0] == "guilds" and len(parts) > 1 and request.method == "GET":
            return self._guild_route(parts)
        if parts[0] == "users" and len(parts) == 2 and request.method == "GET":
            user = self.users.get(parts[1])
            return _json(user) if user else _json({"message": "Unknown User", "code": 10013}, status=404)
        return _json({"message": f"fake Discord has no route {request.method} {path}", "code": 0}, status=404)

    def _all_commands(self) -> list[dict]:
        return [*self._global_commands, *(c for commands in self._guild_commands.values() for c in commands)]

    async def _commands(self, request: web.Request, path: str, parts: list[str]) -> web.Response:
        """A server's commands (…/guilds/{id}/commands) apply there only, and replace only that server's."""
        guild_id = parts[3] if len(parts) == 5 and parts[2] == "guilds" else None
        if guild_id is not None and (not guild_id.isdigit() or int(guild_id) not in self.guilds):
            return _json({"message": "Missing Access", "code": 50001}, status=403)  # a server the bot is not in
        if request.method == "GET":
            return _json(self._guild_commands.get(int(guild_id), []) if guild_id else self._global_commands)
        if request.method != "PUT":
            return web.Response(status=405)
        self.sync_calls.append(path)
        payload = await request.json()
        errors = _command_errors(payload)
        if errors:
            return _invalid(errors)
        registered = []
        for command in payload:
            command = {**command, "id": str(self.snowflake()), "application_id": str(self.application_id),
                       "version": str(self.snowflake())}
            command.setdefault("type", 1)
            command.setdefault("description", "")  # what Discord answers for context menus; discord.py needs it
            if command.get("default_member_permissions") is not None:  # Discord answers with a string
                command["default_member_permissions"] = str(command["default_member_permissions"])
            command.setdefault("default_member_permissions", None)
            if guild_id:
                command["guild_id"] = guild_id
            registered.append(command)
        if guild_id:
            self._guild_commands[int(guild_id)] = registered
        else:
            self._global_commands = registered
        self.commands = {command["name"]: command for command in self._all_commands()}
        return _json(registered)

    async def _callback(self, request: web.Request, token: str) -> web.Response:
        record = self.interactions.get(token)
        if record is None:
            return _json({"message": "Unknown interaction", "code": 10062}, status=404)
        payload, files = await _read_body(request)
        if record.first("callback") is not None:
            return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, status=400)
        if self.ack_timeout is not None and time.monotonic() - record.sent_at > self.ack_timeout:
            return _json({"message": "Unknown interaction", "code": 10062}, status=404)
        kind = payload.get("type")
        data = payload.get("data") or {}
        if (kind == 8) != (record.type == APPLICATION_COMMAND_AUTOCOMPLETE):
            return _invalid({"type": _error("INTERACTION_RESPONSE_TYPE_INVALID",
                                            "Autocomplete interactions take autocomplete results, and only they do.")})
        if kind == 8:
            choices = data.get("choices")
            errors: dict = {}
            if not isinstance(choices, list) or len(choices) > 25:
                _put_error(errors, ("data", "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            for i, choice in enumerate(choices if isinstance(choices, list) else []):
                if not 1 <= len(str(choice.get("name", ""))) <= 100:
                    _put_error(errors, ("data", "choices", i, "name"), "BASE_TYPE_BAD_LENGTH",
                               "Must be between 1 and 100 in length.")
                if isinstance(choice.get("value"), str) and not 1 <= len(choice["value"]) <= 100:
                    _put_error(errors, ("data", "choices", i, "value"), "BASE_TYPE_BAD_LENGTH",
                               "Must be between 1 and 100 in length.")
            if errors:
                return _invalid(errors)
            self._record(record, Reply("callback", time.monotonic(), payload))
            return web.Response(status=204)
        if kind == MODAL:
            if record.type == MODAL_SUBMIT:
                return _invalid({"type": _error("INTERACTION_RESPONSE_TYPE_INVALID",
                                                "A modal submit cannot be answered with another modal.")})
            errors = _modal_errors(data)
            if errors:
                return _invalid(errors)
            record.modal = data
            self._record(record, Reply("callback", time.monotonic(), payload))
            return _json({"interaction": {"id": str(record.id), "type": record.type,
                                          "response_message_loading": False, "response_message_ephemeral": False}})
        source = self._live(record.source_message_id)
        if kind in (6, 7) and source is None:
            return _invalid({"type": _error("INTERACTION_RESPONSE_TYPE_INVALID",
                                            "Deferred updates and message updates need a component interaction.")})
        if kind in (4, 7):
            problem = self._message_problem(data, files, creating=kind == 4)
            if problem is not None:
                return problem
        message = None
        if kind in (4, 5):
            flags = (data.get("flags") or 0) & CREATION_FLAGS
            if kind == 5:  # the "thinking…" placeholder; its visibility is fixed now
                data, files, flags = {}, [], (flags & EPHEMERAL) | LOADING
            is_command = record.type == APPLICATION_COMMAND
            command_kind = (record.payload.get("data") or {}).get("type", 1)
            message_type = (20 if command_kind == 1 else 23) if is_command else 0
            message = self._new_message(record.channel_id or self.channel_id, data, files, type=message_type,
                                        flags=flags, interaction=record)
            record.message_id = message.id
        elif kind == 6:
            message = source
            record.message_id = source.id
        elif kind == 7:
            message = source
            self._edit(source, data, files)
            record.message_id = source.id
        self._record(record, Reply("callback", time.monotonic(), payload, files,
                                   message_id=message.id if message else None))
        if record.modal_of is not None:  # answered: Discord closes the modal
            record.modal_of.modal_closed = True
        answer = {"interaction": {"id": str(record.id), "type": record.type,
                                  "response_message_loading": kind == 5,
                                  "response_message_ephemeral": bool(message and message.ephemeral)}}
        if message is not None and kind != 6:
            answer["interaction"]["response_message_id"] = str(message.id)
            answer["resource"] = {"type": kind, "message": self._payload(message)}
            await self._emit_message("MESSAGE_UPDATE" if kind == 7 else "MESSAGE_CREATE", message)
        await self._uploaded(message, files)
        return _json(answer)

    async def _webhook(self, request: web.Request, parts: list[str]) -> web.Response:
        record = self.interactions.get(parts[2]) if len(parts) > 2 and parts[1] == str(self.application_id) else None
        if record is None or record.first("callback") is None:  # the webhook exists once the interaction is answered
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if len(parts) == 3 and request.method == "POST":
            return await self._followup(request, record)
        if len(parts) != 5 or parts[3] != "messages":
            return web.Response(status=405)
        target = record.message_id if parts[4] == "@original" else parts[4]
        message = self._live(target)
        if message is None or message.id not in (record.message_id, *record.followup_ids):
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        if request.method == "GET":
            return _json(self._payload(message))
        if request.method == "DELETE":
            self._delete(message)
            self._record(record, Reply("delete", time.monotonic(), {}, message_id=message.id))
            await self._emit_message("MESSAGE_DELETE", message)
            return web.Response(status=204)
        return await self._edit_route(request, message, record)

    async def _followup(self, request: web.Request, record: Interaction) -> web.Response:
        payload, files = await _read_body(request)
        problem = self._message_problem(payload, files, creating=True)
        if problem is not None:
            return problem
        original = self._live(record.message_id)
        if original is not None and original.loading:
            # Discord: the first followup after a defer fills the "thinking…" message, keeping the
            # visibility chosen when deferring, whatever flags the followup asks for.
            message = original
            self._edit(message, payload, files)
            event = "MESSAGE_UPDATE"
        else:
            flags = (payload.get("flags") or 0) & CREATION_FLAGS
            message = self._new_message(record.channel_id or self.channel_id, payload, files, flags=flags,
                                        interaction=record)
            record.followup_ids.append(message.id)
            event = "MESSAGE_CREATE"
        self._record(record, Reply("followup", time.monotonic(), payload, files, message_id=message.id))
        await self._emit_message(event, message)
        answer = _json(self._payload(message))
        await self._uploaded(message, files)
        return answer

    async def _channel_route(self, request: web.Request, parts: list[str]) -> web.Response:
        channel_id = int(parts[1]) if parts[1].isdigit() else None
        dm = self._is_dm(channel_id)
        if channel_id not in self.channels and channel_id not in self.threads and not dm:
            return _json({"message": "Unknown Channel", "code": 10003}, status=404)
        recorder = self.messages_in(channel_id)
        guild = self._guild_of(channel_id)
        allowed = ALL_PERMISSIONS if guild is None else self._bot_permissions(guild)
        # Discord: in a thread, Send Messages in Threads stands in for Send Messages.
        send = SEND_MESSAGES_IN_THREADS if channel_id in self.threads else SEND_MESSAGES
        rest, method = parts[2:], request.method
        if rest == [] and method == "GET":
            return _json(self._dm_channel(self._dm_user(channel_id)) if dm else self._channel(channel_id))
        if rest == ["typing"] and method == "POST":
            return web.Response(status=204)
        if rest == ["messages"] and method == "POST":
            payload, files = await _read_body(request)
            needed = VIEW_CHANNEL | send | (ATTACH_FILES if files else 0)
            if allowed & needed != needed:
                return _missing_permissions()
            problem = self._message_problem(payload, files, creating=True)
            if problem is not None:
                return problem
            reference = payload.get("message_reference")
            referenced = None
            if reference and reference.get("type", 0) == 0 and reference.get("message_id"):
                if not allowed & READ_MESSAGE_HISTORY:
                    return _json({"message": "Cannot reply without permission to read message history",
                                  "code": 160002}, status=400)
                referenced = self._live(reference["message_id"])
                if referenced is None or referenced.channel_id != channel_id or referenced.ephemeral:
                    referenced = None
                    if reference.get("fail_if_not_exists", True):
                        return _invalid({"message_reference": _error(
                            "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")})
            message = self._new_message(channel_id, payload, files, type=19 if referenced else 0,
                                        flags=(payload.get("flags") or 0) & (SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS))
            if referenced is not None:
                message.message_reference = {"type": 0, "message_id": str(referenced.id),
                                             "channel_id": str(channel_id)}
                if guild is not None:
                    message.message_reference["guild_id"] = str(guild.id)
                replied = (payload.get("allowed_mentions") or {}).get("replied_user", "allowed_mentions" not in payload)
                if replied and referenced.author["id"] not in message.mentions:
                    message.mentions.append(referenced.author["id"])
            self._record(recorder, Reply("message", time.monotonic(), payload, files, message_id=message.id))
            await self._emit_message("MESSAGE_CREATE", message)
            answer = _json(self._payload(message))
            await self._uploaded(message, files)
            return answer
        if len(rest) < 2 or rest[0] != "messages":
            return web.Response(status=405)
        message = self._live(rest[1])
        if message is None or message.channel_id != channel_id or message.ephemeral:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        own = message.author["id"] == self.bot_user["id"]
        if len(rest) == 2:
            if method == "GET":
                if not allowed & READ_MESSAGE_HISTORY:
                    return _missing_permissions()
                return _json(self._payload(message))
            if method == "DELETE":
                if not own and not allowed & MANAGE_MESSAGES:
                    return _missing_permissions()
                self._delete(message)
                self._record(recorder, Reply("delete", time.monotonic(), {}, message_id=message.id))
                await self._emit_message("MESSAGE_DELETE", message)
                return web.Response(status=204)
            if method == "PATCH":
                if not own:
                    return _json({"message": "Cannot edit a message authored by another user", "code": 50005},
                                 status=403)
                return await self._edit_route(request, message, recorder)
            return web.Response(status=405)
        if rest[2] == "reactions":
            return await self._reaction_route(method, message, rest[3:], allowed)
        return web.Response(status=405)

    async def _reaction_route(self, method: str, message: Message, rest: list[str], allowed: int) -> web.Response:
        bot_id = self.bot_user["id"]
        intent = DIRECT_MESSAGE_REACTIONS if self._is_dm(message.channel_id) else GUILD_MESSAGE_REACTIONS
        if not rest:  # DELETE …/reactions: clear them all
            if method != "DELETE":
                return web.Response(status=405)
            if not allowed & MANAGE_MESSAGES:
                return _missing_permissions()
            message.reactions.clear()
            self.reactions.pop(message.id, None)
            return web.Response(status=204)
        emoji = _emoji_key(rest[0])
        who = message.reactions.get(emoji, [])
        if len(rest) == 1:
            if method == "GET":
                return _json([self.users.get(i, {"id": i, "username": "someone", "discriminator": "0",
                                                 "avatar": None, "global_name": None}) for i in who])
            if method == "DELETE":
                if not allowed & MANAGE_MESSAGES:
                    return _missing_permissions()
                message.reactions.pop(emoji, None)
                if emoji in self.reactions.get(message.id, []):
                    self.reactions[message.id].remove(emoji)
                return web.Response(status=204)
            return web.Response(status=405)
        user_id = bot_id if rest[1] == "@me" else rest[1]
        if method == "PUT" and rest[1] == "@me":
            if not allowed & READ_MESSAGE_HISTORY or (not who and not allowed & ADD_REACTIONS):
                return _missing_permissions()
            if bot_id not in who:
                message.reactions.setdefault(emoji, []).append(bot_id)
                self.reactions.setdefault(message.id, []).append(emoji)
                data = self._reaction_event(message, emoji, self.bot_user)
                data["message_author_id"] = message.author["id"]
                await self._emit("MESSAGE_REACTION_ADD", data, intent)
            return web.Response(status=204)
        if method == "DELETE":
            if user_id != bot_id and not allowed & MANAGE_MESSAGES:
                return _missing_permissions()
            if user_id in who:
                who.remove(user_id)
                if user_id == bot_id:
                    self.reactions[message.id].remove(emoji)
                data = self._reaction_event(message, emoji, self.users.get(user_id, {"id": user_id}))
                data.pop("member", None)
                await self._emit("MESSAGE_REACTION_REMOVE", data, intent)
            return web.Response(status=204)
        return web.Response(status=405)

    async def _open_dm(self, request: web.Request) -> web.Response:
        recipient = str((await request.json())["recipient_id"])
        user = self.users.get(recipient)
        if user is None:
            return _json({"message": "Unknown User", "code": 10013}, status=404)
        return _json(self._dm_channel(user))

    def _guild_route(self, parts: list[str]) -> web.Response:
        guild = self.guilds.get(int(parts[1])) if parts[1].isdigit() else None
        if guild is None:
            return _json({"message": "Unknown Guild", "code": 10004}, status=404)
        if len(parts) == 2:
            return _json(self._guild_payload(guild))
        if parts[2:] == ["roles"]:
            return _json(self._roles(guild))
        if parts[2:] == ["channels"]:  # threads are not channels here, as on Discord
            return _json([channel for channel in self.channels.values() if channel["guild_id"] == str(guild.id)])
        if parts[2:] == ["threads", "active"]:
            return _json({"threads": [self._channel(thread_id) for thread_id, thread in self.threads.items()
                                      if thread["guild_id"] == str(guild.id)], "members": []})
        if len(parts) == 4 and parts[2] == "members":
            user = self.users.get(parts[3])
            if user is None or parts[3] not in guild.members:
                return _json({"message": "Unknown Member", "code": 10007}, status=404)
            return _json({k: v for k, v in self.member(user, guild.id).items() if k != "permissions"})
        return _json({"message": "fake Discord has no such guild route", "code": 0}, status=404)

    def _bot_permissions(self, guild: Guild) -> int:
        return ALL_PERMISSIONS if guild.app_permissions & ADMINISTRATOR else guild.app_permissions

    def _message_problem(self, payload: dict, files: list[Upload], *, creating: bool) -> web.Response | None:
        """Discord's answer to a message it would refuse, or None."""
        if any(len(upload.data) > self.upload_limit for upload in files):
            return _json({"message": "Request entity too large", "code": 40005}, status=413)
        errors = _message_errors(payload, files)
        if errors:
            return _invalid(errors)
        if creating and not ((payload.get("content") or "").strip() or payload.get("embeds") or files
                             or payload.get("components") or payload.get("poll") or payload.get("sticker_ids")):
            return _json({"message": "Cannot send an empty message", "code": 50006}, status=400)
        return None

    def _record(self, record: Interaction, reply: Reply) -> None:
        record.replies.append(reply)
        record.changed.set()

    async def _serve_attachment(self, request: web.Request) -> web.Response:
        attachment = self.attachments.get(int(request.match_info["id"])) if request.match_info["id"].isdigit() else None
        if attachment is not None:
            attachment.fetches += 1
        if attachment is not None and attachment.delay:
            await asyncio.sleep(attachment.delay)
        if attachment is None or attachment.gone:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=attachment.data,
                            headers={"Content-Type": attachment.content_type or "application/octet-stream"})


# -- Discord's validation, as far as bots run into it ----------------------------------------------


def _walk(components: list[dict]):
    for component in components or []:
        yield component
        yield from _walk(component.get("components") or [])
        if isinstance(component.get("accessory"), dict):
            yield component["accessory"]


def _error(code: str, message: str) -> dict:
    return {"_errors": [{"code": code, "message": message}]}


def _put_error(errors: dict, path: tuple, code: str, message: str) -> None:
    node = errors
    for key in path:
        node = node.setdefault(str(key), {})
    node.setdefault("_errors", []).append({"code": code, "message": message})


def _too_long(limit: int) -> tuple[str, str]:
    return "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length."


def _message_errors(payload: dict, files: list[Upload]) -> dict:
    errors: dict = {}
    if len(payload.get("content") or "") > 2000:
        _put_error(errors, ("content",), *_too_long(2000))
    if len(payload.get("embeds") or []) > 10:
        _put_error(errors, ("embeds",), *_too_long(10))
    if len(files) > 10 or len(payload.get("attachments") or []) > 10:
        _put_error(errors, ("attachments",), *_too_long(10))
    components = payload.get("components") or []
    v2 = bool((payload.get("flags") or 0) & IS_COMPONENTS_V2)
    if not v2:
        if len(components) > 5:
            _put_error(errors, ("components",), *_too_long(5))
        for i, row in enumerate(components):
            children = row.get("components") or []
            if row.get("type") != 1:
                _put_error(errors, ("components", i, "type"), "COMPONENT_LAYOUT_INVALID",
                           "Top-level components must be action rows (or set the IS_COMPONENTS_V2 flag).")
            elif not 1 <= len(children) <= 5:
                _put_error(errors, ("components", i, "components"), "BASE_TYPE_BAD_LENGTH",
                           "Must be between 1 and 5 in length.")
            elif any(c.get("type") in SELECT_TYPES for c in children) and len(children) > 1:
                _put_error(errors, ("components", i, "components"), "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                           "A select menu takes a whole action row.")
            for j, child in enumerate(children):
                where = ("components", i, "components", j)
                if child.get("type") == 2:
                    link = child.get("style") == 5
                    premium = child.get("style") == 6
                    if link and (not child.get("url") or "custom_id" in child):
                        _put_error(errors, where, "BUTTON_COMPONENT_INVALID",
                                   "A link button has a url and no custom_id.")
                    if not link and not premium and not child.get("custom_id"):
                        _put_error(errors, where + ("custom_id",), "BASE_TYPE_REQUIRED", "This field is required")
                    if len(child.get("label") or "") > 80:
                        _put_error(errors, where + ("label",), *_too_long(80))
    seen: set[str] = set()
    for component in _walk(components):
        custom_id = component.get("custom_id")
        if custom_id is None:
            continue
        if not 1 <= len(custom_id) <= 100:
            _put_error(errors, ("components",), "BASE_TYPE_BAD_LENGTH",
                       f"custom_id {custom_id[:20]!r}… must be between 1 and 100 in length.")
        if custom_id in seen:
            _put_error(errors, ("components",), "COMPONENT_CUSTOM_ID_DUPLICATED",
                       f"Component custom id {custom_id!r} cannot be duplicated")
        seen.add(custom_id)
    return errors


def _modal_errors(data: dict) -> dict:
    """What Discord refuses in a modal (response type 9): its custom id and title, 1 to 5 action rows of
    one text input each, and each input's custom id, style, label, lengths, pre-filled value and
    placeholder. (Discord's newer Label components, type 18, are not modelled here.)"""
    errors: dict = {}
    custom_id, title, rows = data.get("custom_id"), data.get("title"), data.get("components")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
        _put_error(errors, ("data", "custom_id"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    if not isinstance(title, str) or not 1 <= len(title) <= MODAL_TITLE_LIMIT:
        _put_error(errors, ("data", "title"), "BASE_TYPE_BAD_LENGTH",
                   f"Must be between 1 and {MODAL_TITLE_LIMIT} in length.")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MODAL_ROWS:
        _put_error(errors, ("data", "components"), "BASE_TYPE_BAD_LENGTH",
                   f"Must be between 1 and {MODAL_ROWS} in length.")
        rows = rows if isinstance(rows, list) else []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        children = row.get("components") or []
        if row.get("type") != 1:
            _put_error(errors, ("data", "components", i, "type"), "COMPONENT_LAYOUT_INVALID",
                       "A modal's top-level components must be action rows.")
            continue
        if len(children) != 1:
            _put_error(errors, ("data", "components", i, "components"), "BASE_TYPE_BAD_LENGTH",
                       "Must be between 1 and 1 in length.")
        for j, text_input in enumerate(children):
            where = ("data", "components", i, "components", j)
            if text_input.get("type") != 4:
                _put_error(errors, where + ("type",), "UNION_TYPE_CHOICES",
                           "An action row in a modal holds a text input (type 4).")
                continue
            input_id = text_input.get("custom_id")
            if not isinstance(input_id, str) or not 1 <= len(input_id) <= 100:
                _put_error(errors, where + ("custom_id",), "BASE_TYPE_BAD_LENGTH",
                           "Must be between 1 and 100 in length.")
            elif input_id in seen:
                _put_error(errors, where + ("custom_id",), "COMPONENT_CUSTOM_ID_DUPLICATED",
                           f"Component custom id {input_id!r} cannot be duplicated")
            seen.add(input_id if isinstance(input_id, str) else "")
            if text_input.get("style") not in (1, 2):
                _put_error(errors, where + ("style",), "BASE_TYPE_CHOICES",
                           f"Value must be one of (1, 2) (got {text_input.get('style')}).")
            label = text_input.get("label")
            if not isinstance(label, str) or not 1 <= len(label) <= TEXT_INPUT_LABEL_LIMIT:
                _put_error(errors, where + ("label",), "BASE_TYPE_BAD_LENGTH",
                           f"Must be between 1 and {TEXT_INPUT_LABEL_LIMIT} in length.")
            least, most = text_input.get("min_length", 0), text_input.get("max_length", TEXT_INPUT_LIMIT)
            for name, number, lowest in (("min_length", least, 0), ("max_length", most, 1)):
                if number > TEXT_INPUT_LIMIT:
                    _put_error(errors, where + (name,), "NUMBER_TYPE_MAX",
                               f"int value should be less than or equal to {TEXT_INPUT_LIMIT}.")
                elif number < lowest:
                    _put_error(errors, where + (name,), "NUMBER_TYPE_MIN",
                               f"int value should be greater than or equal to {lowest}.")
            if least > most:
                _put_error(errors, where + ("min_length",), "BASE_TYPE_BAD_LENGTH",
                           "min_length must not be greater than max_length.")
            value = text_input.get("value")
            if value and not least <= len(value) <= min(most, TEXT_INPUT_LIMIT):
                _put_error(errors, where + ("value",), "BASE_TYPE_BAD_LENGTH",
                           f"Must be between {least} and {min(most, TEXT_INPUT_LIMIT)} in length.")
            if len(text_input.get("placeholder") or "") > PLACEHOLDER_LIMIT:
                _put_error(errors, where + ("placeholder",), *_too_long(PLACEHOLDER_LIMIT))
    return errors


def _valid_slash_name(name: str) -> bool:
    # Discord: ^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$, lower case where a letter has one.
    return (1 <= len(name) <= 32 and name == name.lower()
            and all(c.isalnum() or c in "-_'" or unicodedata.category(c).startswith("M") for c in name))


def _command_errors(commands: list[dict]) -> dict:
    errors: dict = {}
    seen: set[tuple[str, int]] = set()
    per_type: Counter[int] = Counter()
    for i, command in enumerate(commands):
        kind = command.get("type", 1)
        name = command.get("name") or ""
        per_type[kind] += 1
        if kind not in (1, 2, 3):
            _put_error(errors, (i, "type"), "BASE_TYPE_CHOICES", f"Value must be one of (1, 2, 3) (got {kind}).")
            continue
        if kind == 1 and not _valid_slash_name(name):
            _put_error(errors, (i, "name"), "APPLICATION_COMMAND_INVALID_NAME", f"Command name {name!r} is invalid")
        elif kind != 1 and not 1 <= len(name) <= 32:
            _put_error(errors, (i, "name"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        if (name, kind) in seen:
            _put_error(errors, (i, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME",
                       f"Command name {name!r} is already used")
        seen.add((name, kind))
        description = command.get("description") or ""
        if kind == 1 and not 1 <= len(description) <= 100:
            _put_error(errors, (i, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if kind != 1 and description:
            _put_error(errors, (i, "description"), "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                       "Context menu commands cannot have a description.")
        if kind != 1 and command.get("options"):
            _put_error(errors, (i, "options"), "APPLICATION_COMMAND_CONTEXT_MENU_OPTIONS",
                       "Context menu commands cannot have options.")
        if kind == 1:
            _option_errors(command.get("options") or [], errors, (i, "options"), level=0)
    for kind, limit in ((1, 100), (2, 15), (3, 15)):
        if per_type[kind] > limit:
            _put_error(errors, (), "APPLICATION_COMMANDS_TOO_MANY", f"At most {limit} commands of type {kind}.")
    return errors


def _option_errors(options: list[dict], errors: dict, path: tuple, level: int) -> None:
    """level 0: a command's options; 1: a subcommand group's; 2: a subcommand's."""
    if len(options) > 25:
        _put_error(errors, path, *_too_long(25))
    nested = [o.get("type") in (1, 2) for o in options]
    if any(nested) and not all(nested):
        _put_error(errors, path, "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                   "Subcommands and subcommand groups cannot be mixed with other options.")
    optional_seen, names = False, set()
    for j, option in enumerate(options):
        where = path + (j,)
        kind = option.get("type")
        name = option.get("name") or ""
        if not isinstance(kind, int) or not 1 <= kind <= 11:
            _put_error(errors, where + ("type",), "BASE_TYPE_CHOICES", f"Value must be between 1 and 11 (got {kind}).")
            continue
        if not _valid_slash_name(name):
            _put_error(errors, where + ("name",), "APPLICATION_COMMAND_INVALID_NAME",
                       f"Option name {name!r} is invalid")
        if name in names:
            _put_error(errors, where + ("name",), "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                       f"Option name {name!r} is already used")
        names.add(name)
        if not 1 <= len(option.get("description") or "") <= 100:
            _put_error(errors, where + ("description",), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if kind == 2:
            if level != 0:
                _put_error(errors, where + ("type",), "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                           "Subcommand groups can only be at the top level.")
            children = option.get("options") or []
            if any(child.get("type") != 1 for child in children):
                _put_error(errors, where + ("options",), "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                           "A subcommand group holds subcommands only.")
            _option_errors(children, errors, where + ("options",), level=1)
        elif kind == 1:
            if level == 2:
                _put_error(errors, where + ("type",), "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                           "Subcommands cannot be nested in subcommands.")
            _option_errors(option.get("options") or [], errors, where + ("options",), level=2)
        else:
            if option.get("required"):
                if optional_seen:
                    _put_error(errors, where + ("required",), "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                               "Required options must be placed before non-required options")
            else:
                optional_seen = True
            choices = option.get("choices") or []
            if len(choices) > 25:
                _put_error(errors, where + ("choices",), *_too_long(25))
            if choices and option.get("autocomplete"):
                _put_error(errors, where + ("autocomplete",), "APPLICATION_COMMAND_OPTION_CHOICES_AUTOCOMPLETE",
                           "Autocomplete cannot be used with choices.")
            for k, choice in enumerate(choices):
                if not 1 <= len(choice.get("name") or "") <= 100:
                    _put_error(errors, where + ("choices", k, "name"), "BASE_TYPE_BAD_LENGTH",
                               "Must be between 1 and 100 in length.")
                if isinstance(choice.get("value"), str) and len(choice["value"]) > 100:
                    _put_error(errors, where + ("choices", k, "value"), *_too_long(100))
            if not 0 <= option.get("min_length", 0) <= 6000 or not 1 <= option.get("max_length", 1) <= 6000:
                _put_error(errors, where, "BASE_TYPE_BAD_LENGTH", "min_length is 0 to 6000, max_length 1 to 6000.")


# -- helpers ---------------------------------------------------------------------------------------


def _emoji(key: str) -> dict:
    """'🔁' or 'name:id' (how routes spell a custom emoji) as an emoji payload."""
    name, _, emoji_id = key.rpartition(":")
    if name and emoji_id.isdigit():
        animated = name.startswith("a:")
        return {"id": emoji_id, "name": name[2:] if animated else name, "animated": animated}
    return {"id": None, "name": key}


def _emoji_key(emoji: str) -> str:
    """How reactions are keyed here and spelled in routes: '🔁', or 'name:id' (never 'a:name:id')."""
    payload = _emoji(emoji)
    return payload["name"] if payload["id"] is None else f"{payload['name']}:{payload['id']}"


def _mentions(content: str, allowed: dict | None) -> list[str]:
    """Ids of the users `content` pings, given allowed_mentions (none sent: Discord pings everyone named)."""
    named = re.findall(r"<@!?(\d+)>", content)
    if allowed is None or "users" in (allowed.get("parse") or []):
        return named
    permitted = {str(u) for u in allowed.get("users") or []}
    return [user_id for user_id in named if user_id in permitted]


def _sniff(data: bytes, filename: str) -> tuple[str | None, tuple[int, int] | None]:
    """The content type and, for an image, the size Discord would report."""
    signatures = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF87a": "image/gif",
                  b"GIF89a": "image/gif"}
    content_type = next((kind for magic, kind in signatures.items() if data.startswith(magic)), None)
    if content_type is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        content_type = "image/webp"
    content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if not content_type.startswith("image/"):
        return content_type, None
    try:
        from PIL import Image  # only to read the size, as Discord does for images

        with Image.open(io.BytesIO(data)) as image:
            return content_type, image.size
    except Exception:  # not an image after all (or no Pillow): Discord then reports no size either
        return content_type, None


async def _read_body(request: web.Request) -> tuple[dict, list[Upload]]:
    if request.content_type.startswith("multipart/"):
        payload: dict = {}
        files = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            else:
                files.append(Upload(part.filename or part.name or "file", bytes(await part.read())))
        return payload, files
    if request.can_read_body:
        return await request.json(), []
    return {}, []


def _invalid(errors: dict) -> web.Response:
    return _json({"message": "Invalid Form Body", "code": 50035, "errors": errors}, status=400)


def _missing_permissions() -> web.Response:
    return _json({"message": "Missing Permissions", "code": 50013}, status=403)


def _json(data: Any, status: int = 200) -> web.Response:
    # body, not text: aiohttp would add "; charset=utf-8", which discord.py does not treat as JSON.
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": JSON})
