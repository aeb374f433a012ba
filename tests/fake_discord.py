"""A loopback fake of Discord's REST API and gateway, enough for an unmodified discord.py bot.

The bot is pointed here with DISCORD_API_BASE / DISCORD_GATEWAY_URL (discord.py reads
`Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY`). Tests play the members: `invoke` sends an
INTERACTION_CREATE over the gateway, and every REST call the bot makes is recorded, interaction
callbacks and webhook edits per interaction, uploaded files included.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

JSON = "application/json"  # exactly: discord.py's login rejects a charset suffix
EPHEMERAL = 64


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Upload:
    filename: str
    data: bytes


@dataclass
class Reply:
    """One thing the bot did in answer to an interaction."""

    kind: str  # "callback", "edit", "delete", "followup"
    at: float
    payload: dict
    files: list[Upload] = field(default_factory=list)

    @property
    def content(self) -> str:
        return self.payload.get("content") or ""

    @property
    def ephemeral(self) -> bool:
        return bool((self.payload.get("flags") or 0) & EPHEMERAL)


@dataclass
class Interaction:
    id: int
    token: str
    sent_at: float
    replies: list[Reply] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

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


class FakeDiscord:
    def __init__(self) -> None:
        self._ids = itertools.count(1_000_000_000_000_000_000)
        self.application_id = self.snowflake()
        self.bot_user = {"id": str(self.application_id), "username": "dreambot", "discriminator": "0",
                         "global_name": None, "avatar": None, "bot": True}
        self.owner = self.user("owner")
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.commands: dict[str, dict] = {}  # name -> registered payload
        self.sync_calls: list[str] = []  # the paths of every command registration
        self.interactions: dict[str, Interaction] = {}
        self.expired: set[str] = set()  # interaction tokens past Discord's 15 minutes
        self.channel_messages = Interaction(id=0, token="", sent_at=0.0)  # messages sent to the channel
        self.requests: list[tuple[str, str]] = []
        self.identified = asyncio.Event()
        self.identify_count = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._sequence = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def snowflake(self) -> int:
        return next(self._ids)

    def user(self, name: str) -> dict:
        return {"id": str(self.snowflake()), "username": name, "discriminator": "0", "global_name": name,
                "avatar": None}

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
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what members do -------------------------------------------------------------------------

    async def invoke(self, name: str, user: dict | None = None, **options: Any) -> Interaction:
        """A member runs slash command `name` with `options` (sent as given: no checks, like a raw client)."""
        command = self.commands.get(name)
        if command is None:
            raise AssertionError(f"/{name} is not registered; registered: {sorted(self.commands)}")
        kinds = {o["name"]: o["type"] for o in command.get("options", [])}
        data_options = []
        for key, value in options.items():
            kind = kinds.get(key, 3 if isinstance(value, str) else 10 if isinstance(value, float) else 4)
            data_options.append({"name": key, "type": kind, "value": value})
        user = user or self.user("member")
        interaction_id = self.snowflake()
        token = f"token-{interaction_id}"
        record = Interaction(id=interaction_id, token=token, sent_at=time.monotonic())
        self.interactions[token] = record
        await self.dispatch("INTERACTION_CREATE", {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": 2,
            "token": token,
            "version": 1,
            "guild_id": str(self.guild_id),
            "channel_id": str(self.channel_id),
            "channel": self._channel(),
            "member": {"user": user, "roles": [], "joined_at": _now(), "deaf": False, "mute": False, "flags": 0,
                       "pending": False, "nick": None, "avatar": None, "permissions": "2248473465835073"},
            "data": {"id": command["id"], "name": name, "type": 1, "options": data_options},
            "locale": "en-US",
            "guild_locale": "en-US",
            "app_permissions": "2248473465835073",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": 26_214_400,
        })
        return record

    def expire(self, interaction: Interaction) -> None:
        """From now on, act as Discord does once an interaction's 15 minutes are up."""
        self.expired.add(interaction.token)

    async def dispatch(self, event: str, data: dict) -> None:
        await self.identified.wait()
        for ws in list(self._sockets):
            await ws.send_json({"op": 0, "t": event, "s": next(self._sequence), "d": data})

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
                    await self._identify(ws)
                elif payload["op"] == 6:
                    await ws.send_json({"op": 0, "t": "RESUMED", "s": next(self._sequence), "d": {}})
        finally:
            self._sockets.remove(ws)
        return ws

    async def _identify(self, ws: web.WebSocketResponse) -> None:
        await ws.send_json({"op": 0, "t": "READY", "s": next(self._sequence), "d": {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "shard": [0, 1],
        }})
        await ws.send_json({"op": 0, "t": "GUILD_CREATE", "s": next(self._sequence), "d": self._guild()})
        self.identify_count += 1
        self.identified.set()

    def _channel(self) -> dict:
        return {"id": str(self.channel_id), "type": 0, "guild_id": str(self.guild_id), "name": "general",
                "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
                "last_message_id": None, "rate_limit_per_user": 0}

    def _guild(self) -> dict:
        everyone = {"id": str(self.guild_id), "name": "@everyone", "permissions": "2248473465835073",
                    "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        return {
            "id": str(self.guild_id), "name": "Dream Lab", "icon": None, "owner_id": self.owner["id"],
            "roles": [everyone], "emojis": [], "stickers": [], "features": [], "channels": [self._channel()],
            "threads": [], "members": [{"user": self.bot_user, "roles": [], "joined_at": _now(), "deaf": False,
                                        "mute": False, "flags": 0}],
            "member_count": 2, "large": False, "unavailable": False, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "premium_tier": 0, "preferred_locale": "en-US", "system_channel_id": None, "system_channel_flags": 0,
            "afk_channel_id": None, "afk_timeout": 300, "application_id": None, "vanity_url_code": None,
            "description": None, "banner": None, "splash": None, "discovery_splash": None,
            "joined_at": _now(), "voice_states": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "premium_progress_bar_enabled": False,
        }

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
            return await self._commands(request, path)
        if parts[0] in ("interactions", "webhooks") and parts[2] in self.expired:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        if parts[0] == "channels" and parts[-1] == "messages" and request.method == "POST":
            payload, files = await _read_body(request)
            self._record(self.channel_messages, Reply("message", time.monotonic(), payload, files))
            return _json(self._message(payload, files))
        if parts[0] == "interactions" and parts[-1] == "callback":
            return await self._callback(request, parts[2])
        if parts[0] == "webhooks":
            return await self._webhook(request, parts)
        return _json({"message": f"fake Discord has no route {request.method} {path}", "code": 0}, status=404)

    async def _commands(self, request: web.Request, path: str) -> web.Response:
        if request.method == "GET":
            return _json(list(self.commands.values()))
        if request.method != "PUT":
            return web.Response(status=405)
        self.sync_calls.append(path)
        registered = []
        for command in await request.json():
            command = {**command, "id": str(self.snowflake()), "application_id": str(self.application_id),
                       "version": str(self.snowflake())}
            command.setdefault("default_member_permissions", None)
            registered.append(command)
        self.commands = {command["name"]: command for command in registered}
        return _json(registered)

    async def _callback(self, request: web.Request, token: str) -> web.Response:
        payload, files = await _read_body(request)
        record = self.interactions[token]
        if record.first("callback") is not None:
            return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, status=400)
        self._record(record, Reply("callback", time.monotonic(), payload, files))
        data = payload.get("data") or {}
        interaction = {"id": str(record.id), "type": payload["type"],
                       "response_message_loading": payload["type"] == 5,
                       "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL)}
        return _json({"interaction": interaction})

    async def _webhook(self, request: web.Request, parts: list[str]) -> web.Response:
        token = parts[2]
        record = self.interactions.get(token)
        if record is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if request.method == "DELETE":
            self._record(record, Reply("delete", time.monotonic(), {}))
            return web.Response(status=204)
        payload, files = await _read_body(request)
        kind = "followup" if request.method == "POST" else "edit"
        self._record(record, Reply(kind, time.monotonic(), payload, files))
        return _json(self._message(payload, files))

    def _record(self, record: Interaction, reply: Reply) -> None:
        record.replies.append(reply)
        record.changed.set()

    def _message(self, payload: dict, files: list[Upload]) -> dict:
        return {
            "id": str(self.snowflake()), "channel_id": str(self.channel_id), "guild_id": str(self.guild_id),
            "author": self.bot_user, "content": payload.get("content") or "", "timestamp": _now(),
            "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [],
            "mention_roles": [], "embeds": payload.get("embeds") or [], "pinned": False, "type": 0,
            "flags": payload.get("flags") or 0, "components": payload.get("components") or [],
            "attachments": [
                {"id": str(self.snowflake()), "filename": upload.filename, "size": len(upload.data),
                 "url": f"http://127.0.0.1:{self.port}/attachments/{upload.filename}",
                 "proxy_url": f"http://127.0.0.1:{self.port}/attachments/{upload.filename}",
                 "content_type": "image/png"}
                for upload in files
            ],
        }


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


def _json(data: Any, status: int = 200) -> web.Response:
    # body, not text: aiohttp would add "; charset=utf-8", which discord.py does not treat as JSON.
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": JSON})
