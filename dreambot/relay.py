"""Jobs over NATS, between the bot (`bot.workers`) and `python -m engine worker` processes on any host.

The messages are `dreambot.wire`'s, the same lines a local engine reads and writes; this module adds
only what NATS needs: the subjects, the headers that carry a lease, the split of big messages into
parts within the server's payload limit, a worker's status, and a connection that comes back by itself.

Workers pull. A free worker asks for work on WORK (a request); the bot answers with a job or a batch
(the first part, and the LEASE it is handed out under) or, after POLL_SECONDS with nothing for it,
"idle". The other parts of a big job are fetched on FETCH. While it holds a lease the worker says so
every HEARTBEAT_SECONDS on EVENT, beside each job's progress; results go to RESULT part by part, and
the worker keeps each one until the bot has answered for it. The bot speaks to workers only on
CONTROL: cancel a job, void a lease it no longer honours, call the roll.

Permissions (deploy/nats-server.conf): the bot subscribes to WORK, FETCH, RESULT, EVENT and answers
requests; workers publish on those four and subscribe to CONTROL and their inboxes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client

PREFIX = "dreambot"
WORK = f"{PREFIX}.work"
FETCH = f"{PREFIX}.fetch"
RESULT = f"{PREFIX}.result"
EVENT = f"{PREFIX}.event"
CONTROL = f"{PREFIX}.control"

# Headers.
LEASE = "Dreambot-Lease"  # the lease a message belongs to: random, known only to the bot and its worker
WORKER = "Dreambot-Worker"  # the worker's session: random for each run of a worker process
PART = "Dreambot-Part"  # which part of a split message (0-based) ...
PARTS = "Dreambot-Parts"  # ... of how many
JOB = "Dreambot-Job"  # the job a result part belongs to
KIND = "Dreambot-Kind"  # on EVENT: "status" (a WorkerStatus) or "progress" (a wire.Progress)
IDLE = "Dreambot-Idle"  # on a WORK answer: nothing to do now, ask again
REFUSED = "Dreambot-Refused"  # on a WORK answer: this worker may not serve (the value says why)

# The bot answers a pull within this long ("idle" when there is nothing for the worker).
POLL_SECONDS = 10.0
# A worker's status goes out this often; the bot's lease (WORKER_LEASE_SECONDS) is several of these.
HEARTBEAT_SECONDS = 1.0
# Room left in each part for the headers and the protocol's own bytes.
HEADROOM = 16 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerStatus:
    """What a worker says of itself, with each pull and every HEARTBEAT_SECONDS."""

    session: str
    name: str
    device: str
    model: str  # its default model
    dtype: str
    safety_checker: str
    protocol: int
    models: tuple[str, ...] = ()  # loaded now, the most recently used last
    lease: str | None = None  # the lease whose jobs it runs now
    holding: tuple[str, ...] = ()  # leases whose results it keeps until the bot answers for them
    leaving: bool = False  # its last word: it stops (SIGTERM), and holds nothing any more

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerStatus:
        body = json.loads(data)
        known = {name for name in cls.__dataclass_fields__}
        body = {key: value for key, value in body.items() if key in known}
        body["models"] = tuple(body.get("models", ()))
        body["holding"] = tuple(body.get("holding", ()))
        return cls(**body)


@dataclass(frozen=True)
class Control:
    """Bot to workers, on CONTROL: "cancel" a job of a lease, "void" a lease (its worker stops and
    drops it), or "roll-call" (every worker says its status and offers what it holds, now)."""

    type: str
    lease: str | None = None
    job_id: int | None = None

    def encode(self) -> bytes:
        return json.dumps({key: value for key, value in asdict(self).items() if value is not None}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Control:
        body = json.loads(data)
        return cls(type=str(body["type"]), lease=body.get("lease"), job_id=body.get("job_id"))


def split(data: bytes, max_payload: int) -> list[bytes]:
    """`data` in parts that each fit the server's payload limit (one part at least)."""
    size = max(max_payload - HEADROOM, 1024)
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


@dataclass
class Parts:
    """The parts of one split message as they arrive, in order."""

    count: int
    received: list[bytes] = field(default_factory=list)

    def add(self, index: int, data: bytes) -> bytes | None:
        """Take part `index`; the whole message once the last part is in, else None. A part out of
        order (a sender that started again) starts the message over."""
        if index == 0:
            self.received = []
        if index != len(self.received):
            raise ValueError(f"part {index} arrived after {len(self.received)} part(s)")
        self.received.append(data)
        return b"".join(self.received) if len(self.received) == self.count else None


def redacted(servers: list[str]) -> str:
    """The servers as a log may show them: no user, password or token."""
    shown = []
    for url in servers:
        parts = urlsplit(url)
        shown.append(f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else ""))
    return ", ".join(shown)


async def connect(servers: list[str], *, name: str, creds: Path | None = None, on_change=None) -> Client:
    """A NATS connection that comes back by itself: the first connect is tried again (with growing
    waits) until it works or the task is cancelled, and a lost connection is reconnected for ever.
    `on_change(connected: bool)` (a coroutine function) hears each loss and return."""

    async def error(exception: Exception) -> None:
        log.warning("NATS: %s", exception or type(exception).__name__)

    async def disconnected() -> None:
        if opened and (opened[0].is_closed or opened[0].is_draining):
            return  # closed on purpose
        log.warning("NATS: lost the connection to %s; reconnecting", redacted(servers))
        if on_change is not None:
            await on_change(False)

    async def reconnected() -> None:
        log.info("NATS: connected again")
        if on_change is not None:
            await on_change(True)

    options = dict(
        name=name, error_cb=error, disconnected_cb=disconnected, reconnected_cb=reconnected,
        allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
        # A cut that sends nothing back (a host gone) is noticed within seconds, not minutes.
        ping_interval=5, max_outstanding_pings=3,
    )
    if creds is not None:
        options["user_credentials"] = str(creds)
    if any(url.startswith("tls://") for url in servers):
        # TLS before anything else is said: nats-py otherwise upgrades only when the server asks for
        # it, and a server impersonated on the way would read the password in clear. The server's
        # `tls` block needs `handshake_first: true` (deploy/nats-server.conf).
        options["tls"] = ssl.create_default_context()
        options["tls_handshake_first"] = True
    opened: list[Client] = []
    wait = 0.5
    while True:
        try:
            connection = await nats.connect(servers, **options)
        except (TimeoutError, OSError, nats.errors.Error) as problem:
            log.warning("NATS: cannot reach %s (%s); trying again in %.0f s", redacted(servers),
                        problem or type(problem).__name__, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 15.0)
            continue
        log.info("NATS: connected to %s", redacted(servers))
        opened.append(connection)
        return connection
