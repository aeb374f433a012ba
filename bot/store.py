"""All SQL lives here: jobs (every user's history), moderation (settings, the prompt filter, bans
and their audit trail) and small bot facts, in SQLite through aiosqlite.

The schema is only in `migrations/NNNN_*.sql`; `Store.open` applies the pending ones in order,
each in its own transaction, and records the version in SQLite's `user_version`.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import math
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import EllipsisType
from typing import TypeVar

import aiosqlite

from dreambot.request import GenerateRequest
from dreambot.wire import GenerateResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for entry in importlib.resources.files("dreambot.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, … without gaps; found {versions}")
    return found


@dataclass(frozen=True)
class JobRow:
    """A job as stored: its request as it was made (`GenerateRequest`, without its pictures, which
    are files), where it was asked for, and what became of it."""

    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    interaction_id: int | None
    message_id: int | None
    notice_message_id: int | None
    request: GenerateRequest
    action: str
    parent_job_id: int | None
    parent_image: int | None
    status: str
    nsfw_mode: str | None
    # The result: the model and size the engine used, one safety flag and score per picture.
    model: str | None
    width: int | None
    height: int | None
    nsfw_flags: list[bool] | None
    nsfw_scores: list[float] | None
    source_score: float | None
    engine_seconds: float | None
    error: str | None
    cancelled_by: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    deleted_at: str | None
    # How the engine read the prompt: its tokens and the encoder-length chunks they took (None: unknown).
    prompt_tokens: int | None = None
    prompt_chunks: int | None = None
    # Run by a worker on another host (NATS_URL): the lease it was last handed out under, and the worker.
    lease: str | None = None
    worker: str | None = None

    @property
    def shown_status(self) -> str:
        """The status as members read it (a cancelled job is stored as failed)."""
        if self.deleted_at:
            return "deleted"
        return "cancelled" if self.cancelled_by is not None else self.status

    def shown(self, index: int) -> bool:
        """Whether picture `index` was posted (not withheld by the safety filter)."""
        if self.nsfw_flags is None:
            return self.status == "done" and index < self.request.num_images
        if index >= len(self.nsfw_flags):
            return False
        return not self.nsfw_flags[index] or self.nsfw_mode in ("spoiler", "off")

    def with_pictures(self, image: bytes | None, mask: bytes | None = None) -> GenerateRequest:
        """The job's request with its input pictures (kept outside the database, `bot.images`)."""
        return replace(self.request, image=image, mask=mask)


@dataclass(frozen=True)
class GuildSettings:
    """A server's moderation settings (the defaults for a server that set nothing)."""

    guild_id: int
    nsfw_mode: str = "block"
    nsfw_threshold: float | None = None
    modlog_channel_id: int | None = None
    moderator_role_id: int | None = None
    channel_modes: dict[int, str] = field(default_factory=dict)
    model: str | None = None  # the server's default model (/mod model)


@dataclass(frozen=True)
class ChannelModels:
    """A channel's own default model and the models it allows (None: every model)."""

    model: str | None = None
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AuditRow:
    id: int
    guild_id: int
    actor_id: int
    action: str
    target: str | None
    old_value: str | None
    new_value: str | None
    created_at: str


@dataclass(frozen=True)
class Ban:
    guild_id: int
    user_id: int
    banned_by: int
    reason: str
    banned_at: str


_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
# A write that finds the database locked (another program holds it past busy_timeout) is tried
# again for this long: a job's state must not be lost to a busy moment.
WRITE_RETRY_SECONDS = 120.0
# Jobs whose result exists and is being posted; the next start posts what was left here.
UNDELIVERED = "delivering"
# How many reads of the moderation tables are kept in memory (`Store._kept_read`): the servers' and
# channels' settings, and a ban (or none) for each member who sent a command lately.
KEPT_READS = 4096
# How often, at most, the kept reads ask SQLite whether another program wrote to the database
# (an operator's sqlite3): if it did, they are forgotten.
KEPT_CHECK_SECONDS = 1.0
T = TypeVar("T")
# The columns of guild_settings a moderator changes, with the audit action of each.
_GUILD_FIELDS = {"nsfw_mode": "filter.mode", "nsfw_threshold": "filter.threshold",
                 "modlog_channel_id": "modlog", "moderator_role_id": "moderator_role", "model": "model.default"}


class Store:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection serves every coroutine: a transaction must not interleave with another.
        self._transaction_lock = asyncio.Lock()
        # The moderation tables and the members' defaults are read on every command (before and after
        # its deferral, and again as its job starts: a dozen reads) and change only through this
        # Store's methods, each of which forgets what was kept (`_forgetting`; the migrations run
        # before anything is read); another program's writes within KEPT_CHECK_SECONDS.
        self._kept: OrderedDict[tuple, object] = OrderedDict()
        self._changes = 0  # writes to those tables begun or ended
        self._data_version: int | None = None  # SQLite's count of other connections' commits, last seen
        self._checked_at = -math.inf

    @classmethod
    async def open(cls, path: str | Path, migrations: list[Migration] | None = None) -> Store:
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (the migration runner needs that).
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL is still crash-safe (only a power cut can lose the last commits) and
        # spares an fsync per write on the path of every job (bench/throughput.py).
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA busy_timeout = 5000")
        store = cls(db)
        try:
            await store.migrate(bundled_migrations() if migrations is None else migrations)
            await store._notice_other_writers()  # the database's version as it opens
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        return await self._value("PRAGMA user_version")

    async def _value(self, sql: str, params: tuple | list = ()):
        """The one value of a query that always returns one row (a count, a pragma)."""
        row = await self._row(sql, params)
        assert row is not None, sql
        return row[0]

    async def _rows(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        """A query's rows, in one trip to the database's thread (a cursor's execute, fetch and close
        would be three: the bot's path to a job's start reads a dozen times)."""
        return list(await self._db.execute_fetchall(sql, params))

    async def _row(self, sql: str, params: tuple | list = ()) -> sqlite3.Row | None:
        """A query's first row, or None (`_rows`)."""
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def _kept_read(self, key: tuple, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`, or what it gave last time if none of the tables it reads was written since. A read
        that a write begins or ends during is not kept: it may hold the old state."""
        if self._kept and time.monotonic() - self._checked_at >= KEPT_CHECK_SECONDS:
            await self._notice_other_writers()
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]  # type: ignore[return-value]
        changes = self._changes
        value = await read()
        if changes == self._changes:
            self._kept[key] = value
            if len(self._kept) > KEPT_READS:
                self._kept.popitem(last=False)
        return value

    async def _notice_other_writers(self) -> None:
        """Forget what was kept if another program committed to the database since the last look
        (SQLite's `data_version` changes with every commit made by another connection)."""
        self._checked_at = time.monotonic()
        version = await self._value("PRAGMA data_version")
        if version != self._data_version:
            self._data_version = version
            self._forget()

    def _forget(self) -> None:
        self._changes += 1
        self._kept.clear()

    @contextmanager
    def _forgetting(self):
        """Around a write to the tables `_kept_read` keeps: everything kept is forgotten as it begins
        and again once it ended (committed or not)."""
        self._forget()
        try:
            yield
        finally:
            self._forget()

    @asynccontextmanager
    async def _changing(self):
        """A transaction that writes the tables `_kept_read` keeps (`_forgetting`)."""
        with self._forgetting():
            async with self._transaction():
                yield

    async def migrate(self, migrations: list[Migration]) -> None:
        current = await self.schema_version()
        newest = max((m.version for m in migrations), default=0)
        if current > newest:
            raise RuntimeError(f"the database is at schema version {current}, newer than this code ({newest})")
        for migration in migrations:
            if migration.version <= current:
                continue
            # Foreign keys are off while a migration runs (it cannot be switched inside a
            # transaction), so a migration may rebuild a table as SQLite's ALTER TABLE procedure
            # says; the keys are checked before the commit.
            before = await self._foreign_key_violations()
            await self._db.execute("PRAGMA foreign_keys = OFF")
            try:
                # executescript commits any open transaction first, so the migration, its BEGIN
                # included, goes in one call, and the transaction is left open for the check.
                await self._db.executescript(f"BEGIN;\n{migration.sql}\n;PRAGMA user_version = {migration.version};")
                # Only what the migration did: an operator's shell (foreign keys off by default) may
                # have left dangling links before, and those must not stop the bot from starting.
                added = await self._foreign_key_violations() - before
                if added:
                    raise RuntimeError(f"migration {migration.name} adds {added} foreign key violation(s)")
                await self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise
            finally:
                await self._db.execute("PRAGMA foreign_keys = ON")
            log.info("applied migration %s", migration.name)

    async def _foreign_key_violations(self) -> int:
        return await self._value("SELECT count(*) FROM pragma_foreign_key_check")

    # -- jobs ------------------------------------------------------------------------------------

    async def create_job(
        self,
        request: GenerateRequest,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        interaction_id: int | None,
        model: str,
        action: str = "dream",
        parent_job_id: int | None = None,
        parent_image: int | None = None,
        nsfw_mode: str = "block",
    ) -> int:
        assert request.seed is not None, "the bot picks the seed before recording the job"
        cursor = await self._db.execute(
            """
            INSERT INTO jobs (user_id, guild_id, channel_id, interaction_id, request, model, action, parent_job_id,
                              parent_image, nsfw_mode)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (user_id, guild_id, channel_id, interaction_id, request.to_json(), model, action, parent_job_id,
             parent_image, nsfw_mode),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def mark_running(self, job_id: int) -> None:
        await self._write(f"UPDATE jobs SET status = 'running', started_at = {_NOW} WHERE id = ?", (job_id,))

    async def finish_job(self, job_id: int, result: GenerateResult) -> None:
        """Record the engine's result: the job is now delivering until `delivered` (its pictures are
        kept on disk meanwhile, so a restart can still post them)."""
        await self._write(
            f"""
            UPDATE jobs SET status = '{UNDELIVERED}', width = ?, height = ?, model = ?, nsfw_flags = ?,
                            nsfw_scores = ?, source_score = ?, engine_seconds = ?, prompt_tokens = ?,
                            prompt_chunks = ?, finished_at = {_NOW}
            WHERE id = ?
            """,
            (
                result.width, result.height, result.model,
                json.dumps([image.nsfw_content_detected for image in result.images]),
                json.dumps([image.nsfw_score for image in result.images]),
                result.source_score, result.timings.get("total"), result.prompt_tokens, result.prompt_chunks,
                job_id,
            ),
        )

    async def delivered(self, job_id: int, message_id: int | None, *, filtered: bool = False) -> None:
        """The result is posted (`message_id`; None if Discord refused every way of posting it), or,
        `filtered`, every picture was withheld and the member was told."""
        await self._write(
            "UPDATE jobs SET status = ?, message_id = coalesce(?, message_id) WHERE id = ?",
            ("filtered" if filtered else "done", message_id, job_id),
        )

    async def undelivered_jobs(self) -> list[JobRow]:
        """Jobs whose result a previous run made but did not post, oldest first."""
        return [_job(row) for row in await self._rows(f"SELECT * FROM jobs WHERE status = '{UNDELIVERED}' ORDER BY id")]

    async def add_flagged_picture(self, job_id: int, picture: int, guild_id: int | None, fingerprint: int) -> None:
        await self._write(
            "INSERT OR REPLACE INTO flagged_pictures (job_id, picture, guild_id, fingerprint) VALUES (?, ?, ?, ?)",
            (job_id, picture, guild_id, _signed(fingerprint)),
        )

    async def flagged_fingerprints(self, guild_id: int) -> list[tuple[int, int]]:
        """(job id, fingerprint) of every flagged picture posted in a server."""
        rows = await self._rows("SELECT job_id, fingerprint FROM flagged_pictures WHERE guild_id = ?", (guild_id,))
        return [(job_id, fingerprint & (2**64 - 1)) for job_id, fingerprint in rows]

    async def queued_jobs_of(self, user_id: int, guild_id: int) -> list[int]:
        """A member's jobs in a server that have not started yet or are running."""
        rows = await self._rows(
            "SELECT id FROM jobs WHERE user_id = ? AND guild_id = ? AND status IN ('queued', 'running') ORDER BY id",
            (user_id, guild_id))
        return [row[0] for row in rows]

    async def withhold_flagged(self, job_id: int) -> None:
        """The job's flagged images are withheld after all (the channel's filter became block)."""
        await self._write("UPDATE jobs SET nsfw_mode = 'block' WHERE id = ?", (job_id,))

    async def set_policy(self, job_id: int, nsfw_mode: str) -> None:
        """The safety filter mode the job runs under, as checked again when it starts."""
        await self._write("UPDATE jobs SET nsfw_mode = ? WHERE id = ?", (nsfw_mode, job_id))

    async def fail_job(self, job_id: int, error: str) -> None:
        await self._write(
            f"UPDATE jobs SET status = 'failed', error = ?, finished_at = {_NOW} WHERE id = ?", (error, job_id)
        )

    async def mark_deleted(self, job_id: int) -> None:
        await self._db.execute(f"UPDATE jobs SET deleted_at = {_NOW} WHERE id = ?", (job_id,))

    async def job_for_message(self, message_id: int) -> JobRow | None:
        """The job whose result is this message (buttons and reactions on it act on that job)."""
        row = await self._row("SELECT * FROM jobs WHERE message_id = ?", (message_id,))
        return _job(row) if row else None

    async def get_job(self, job_id: int) -> JobRow | None:
        row = await self._row("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    async def user_jobs(self, user_id: int, *, guild_id: int | None = None, offset: int = 0,
                        limit: int = 25) -> tuple[list[JobRow], int]:
        """A member's jobs, newest first (in one server if `guild_id` is given), and how many there are."""
        where, params = "user_id = ?", [user_id]
        if guild_id is not None:
            where, params = where + " AND guild_id = ?", params + [guild_id]
        total = await self._value(f"SELECT count(*) FROM jobs WHERE {where}", params)
        rows = await self._rows(f"SELECT * FROM jobs WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                                (*params, limit, offset))
        return [_job(row) for row in rows], total

    async def erase_user_jobs(self, user_id: int) -> tuple[list[int], int]:
        """/forget: delete the member's finished jobs, keeping only their numbers (`was_erased`).
        Returns the erased job ids and how many jobs were left because they are still in progress."""
        async with self._changing():  # their defaults go too
            rows = await self._rows(
                f"SELECT id FROM jobs WHERE user_id = ? AND status NOT IN ('queued', 'running', '{UNDELIVERED}')",
                (user_id,))
            erased = [row[0] for row in rows]
            await self._db.executemany("INSERT OR IGNORE INTO erased_jobs (job_id) VALUES (?)",
                                       [(job_id,) for job_id in erased])
            # By id: a job that finishes meanwhile was not counted, and is kept.
            await self._db.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in erased])
            await self._db.execute("DELETE FROM member_settings WHERE user_id = ?", (user_id,))
            kept = await self._value("SELECT count(*) FROM jobs WHERE user_id = ?", (user_id,))
        return erased, kept

    async def was_erased(self, job_id: int) -> bool:
        return await self._row("SELECT 1 FROM erased_jobs WHERE job_id = ?", (job_id,)) is not None

    async def unfinished_jobs(self) -> list[JobRow]:
        """Jobs a previous run left queued or running, oldest first: they run again (`requeue_job`)."""
        rows = await self._rows("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY id")
        return [_job(row) for row in rows]

    async def lease_jobs(self, job_ids: list[int], lease: str, worker: str) -> None:
        """These jobs are handed to `worker` under `lease` (a result is taken only under it)."""
        for job_id in job_ids:
            await self._write("UPDATE jobs SET lease = ?, worker = ? WHERE id = ?", (lease, worker, job_id))

    async def has_lease(self, lease: str, *, excluding: set[int] = frozenset()) -> bool:  # type: ignore[assignment]
        """Whether a job still queued or running was handed out under `lease` (and is not in `excluding`)."""
        rows = await self._rows("SELECT id FROM jobs WHERE lease = ? AND status IN ('queued', 'running')", (lease,))
        return any(job_id not in excluding for (job_id,) in rows)

    async def jobs_by_worker(self) -> dict[str, int]:
        """How many jobs each worker has finished (whatever became of their pictures)."""
        rows = await self._rows(
            "SELECT worker, count(*) FROM jobs WHERE worker IS NOT NULL AND finished_at IS NOT NULL "
            "AND cancelled_by IS NULL AND error IS NULL GROUP BY worker")
        return {worker: count for worker, count in rows}

    async def requeue_job(self, job_id: int) -> None:
        """Back to queued: its engine crashed (it runs once more), or the bot stopped before it finished."""
        await self._write("UPDATE jobs SET status = 'queued', started_at = NULL WHERE id = ?", (job_id,))

    async def cancel_job(self, job_id: int, by: int | None, reason: str = "cancelled") -> None:
        await self._write(
            f"UPDATE jobs SET status = 'failed', error = ?, cancelled_by = ?, finished_at = {_NOW} "
            "WHERE id = ?", (reason, by, job_id))

    async def set_notice(self, job_id: int, message_id: int) -> None:
        await self._write("UPDATE jobs SET notice_message_id = ? WHERE id = ?", (message_id, job_id))

    async def _write(self, sql: str, params: tuple) -> None:
        """One statement of a job's life, tried again while the database is locked by another
        program (a backup, an operator's sqlite3 shell) for up to WRITE_RETRY_SECONDS."""
        deadline = time.monotonic() + WRITE_RETRY_SECONDS
        delay = 0.5
        while True:
            try:
                await self._db.execute(sql, params)
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                    raise
                log.warning("the database is busy (%s); trying the write again in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- moderation ------------------------------------------------------------------------------

    async def guild_settings(self, guild_id: int) -> GuildSettings:
        async def read() -> GuildSettings:
            row = await self._row("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
            rows = await self._rows("SELECT channel_id, nsfw_mode FROM channel_settings WHERE guild_id = ?",
                                    (guild_id,))
            channels = {channel_id: mode for channel_id, mode in rows}
            return GuildSettings(**(dict(row) if row else {"guild_id": guild_id}), channel_modes=channels)

        kept = await self._kept_read(("guild", guild_id), read)
        return replace(kept, channel_modes=dict(kept.channel_modes))  # the caller's own to change

    async def modlog_channels(self) -> dict[int, int]:
        """Every server's mod-log channel, by server id, for the servers that chose one."""
        rows = await self._rows("SELECT guild_id, modlog_channel_id FROM guild_settings "
                                "WHERE modlog_channel_id IS NOT NULL ORDER BY guild_id")
        return {row[0]: row[1] for row in rows}

    async def set_guild_setting(self, guild_id: int, name: str, value, *, actor_id: int, target: str | None = None):
        """Change one server setting and audit it; returns the old value."""
        action = _GUILD_FIELDS[name]  # also keeps `name` out of reach of anything but our own columns
        async with self._changing():
            old = getattr(await self.guild_settings(guild_id), name)
            await self._db.execute(
                f"INSERT INTO guild_settings (guild_id, {name}) VALUES (?, ?) "
                f"ON CONFLICT (guild_id) DO UPDATE SET {name} = excluded.{name}",
                (guild_id, value),
            )
            await self._audit(guild_id, actor_id, action, target, old, value)
        return old

    async def set_channel_mode(self, guild_id: int, channel_id: int, mode: str | None, *, actor_id: int) -> str | None:
        """A channel's own filter mode (None: follow the server's); audited. Returns the old one."""
        async with self._changing():
            old = (await self.guild_settings(guild_id)).channel_modes.get(channel_id)
            if mode is None:
                await self._db.execute("DELETE FROM channel_settings WHERE channel_id = ?", (channel_id,))
            else:
                await self._db.execute(
                    "INSERT INTO channel_settings (channel_id, guild_id, nsfw_mode) VALUES (?, ?, ?) "
                    "ON CONFLICT (channel_id) DO UPDATE SET nsfw_mode = excluded.nsfw_mode",
                    (channel_id, guild_id, mode),
                )
            await self._audit(guild_id, actor_id, "filter.mode", f"<#{channel_id}>", old, mode)
        return old

    async def channel_models(self, guild_id: int) -> dict[int, ChannelModels]:
        """Each channel's own model settings in a server (/mod model)."""
        async def read() -> dict[int, ChannelModels]:
            rows = await self._rows("SELECT channel_id, model, allowed FROM channel_models WHERE guild_id = ?",
                                    (guild_id,))
            return {channel_id: ChannelModels(model, tuple(json.loads(allowed)) if allowed is not None else None)
                    for channel_id, model, allowed in rows}

        return dict(await self._kept_read(("channel models", guild_id), read))

    async def set_channel_models(self, guild_id: int, channel_id: int, *, actor_id: int,
                                 model: str | None | EllipsisType = ...,
                                 allowed: tuple[str, ...] | None | EllipsisType = ...) -> ChannelModels:
        """Change a channel's default model or its allowed models (`...`: leave it), audited.
        Returns the settings before."""
        async with self._changing():
            old = (await self.channel_models(guild_id)).get(channel_id, ChannelModels())
            new = ChannelModels(old.model if model is ... else model, old.allowed if allowed is ... else allowed)
            if new == ChannelModels():
                await self._db.execute("DELETE FROM channel_models WHERE channel_id = ?", (channel_id,))
            else:
                await self._db.execute(
                    "INSERT INTO channel_models (channel_id, guild_id, model, allowed) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (channel_id) DO UPDATE SET model = excluded.model, allowed = excluded.allowed",
                    (channel_id, guild_id, new.model, None if new.allowed is None else json.dumps(new.allowed)))
            if new.model != old.model:
                await self._audit(guild_id, actor_id, "model.default", f"<#{channel_id}>", old.model, new.model)
            if new.allowed != old.allowed:
                await self._audit(guild_id, actor_id, "model.allowed", f"<#{channel_id}>",
                                  _names(old.allowed), _names(new.allowed))
        return old

    async def member_settings(self, user_id: int) -> dict:
        """A member's own defaults (/settings), as they stored them; {} for none."""
        async def read() -> str | None:
            row = await self._row("SELECT settings FROM member_settings WHERE user_id = ?", (user_id,))
            return row[0] if row else None

        stored = await self._kept_read(("member", user_id), read)
        return json.loads(stored) if stored else {}

    async def set_member_settings(self, user_id: int, settings: dict) -> None:
        """Replace a member's own defaults; {} erases them."""
        with self._forgetting():
            if not settings:
                await self._write("DELETE FROM member_settings WHERE user_id = ?", (user_id,))
                return
            await self._write(
                "INSERT INTO member_settings (user_id, settings) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET "
                "settings = excluded.settings, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                (user_id, json.dumps(settings, sort_keys=True)))

    async def blocked_terms(self, guild_id: int) -> list[tuple[str, str]]:
        """(kind, term) pairs, words first, each kind in alphabetical order."""
        rows = await self._rows("SELECT kind, term FROM blocked_terms WHERE guild_id = ? ORDER BY kind DESC, term",
                                (guild_id,))
        return [(kind, term) for kind, term in rows]

    async def add_blocked_term(self, guild_id: int, kind: str, term: str, *, actor_id: int) -> bool:
        """Add a word or pattern (audited); False if it was already there."""
        async with self._transaction():
            cursor = await self._db.execute(
                "INSERT OR IGNORE INTO blocked_terms (guild_id, kind, term, added_by) VALUES (?, ?, ?, ?)",
                (guild_id, kind, term, actor_id),
            )
            if cursor.rowcount:
                await self._audit(guild_id, actor_id, "words.add", kind, None, term)
        return bool(cursor.rowcount)

    async def remove_blocked_term(self, guild_id: int, kind: str, term: str, *, actor_id: int) -> bool:
        async with self._transaction():
            cursor = await self._db.execute(
                "DELETE FROM blocked_terms WHERE guild_id = ? AND kind = ? AND term = ?", (guild_id, kind, term)
            )
            if cursor.rowcount:
                await self._audit(guild_id, actor_id, "words.remove", kind, term, None)
        return bool(cursor.rowcount)

    async def disabled_adapters(self, guild_id: int) -> list[tuple[str, str]]:
        """(kind, name) of the LoRAs and embeddings turned off in a server, LoRAs first, by name."""
        async def read() -> list[tuple[str, str]]:
            rows = await self._rows(
                "SELECT kind, name FROM disabled_adapters WHERE guild_id = ? ORDER BY kind DESC, name", (guild_id,))
            return [(kind, name) for kind, name in rows]

        return list(await self._kept_read(("disabled adapters", guild_id), read))

    async def set_adapter_disabled(self, guild_id: int, kind: str, name: str, disabled: bool, *,
                                   actor_id: int) -> bool:
        """Turn a LoRA or embedding off (or on again) in a server, audited; False if it already was."""
        async with self._changing():
            if disabled:
                cursor = await self._db.execute(
                    "INSERT OR IGNORE INTO disabled_adapters (guild_id, kind, name, disabled_by) VALUES (?, ?, ?, ?)",
                    (guild_id, kind, name, actor_id))
            else:
                cursor = await self._db.execute(
                    "DELETE FROM disabled_adapters WHERE guild_id = ? AND kind = ? AND name = ?",
                    (guild_id, kind, name))
            if cursor.rowcount:
                await self._audit(guild_id, actor_id, "adapters.off" if disabled else "adapters.on",
                                  f"{kind} {name}", "on" if disabled else "off", "off" if disabled else "on")
        return bool(cursor.rowcount)

    async def ban(self, guild_id: int, user_id: int, *, actor_id: int, reason: str = "") -> bool:
        """Bar a member from the bot in a server (audited); False if they already were."""
        async with self._changing():
            cursor = await self._db.execute(
                "INSERT OR IGNORE INTO bans (guild_id, user_id, banned_by, reason) VALUES (?, ?, ?, ?)",
                (guild_id, user_id, actor_id, reason),
            )
            if cursor.rowcount:
                await self._audit(guild_id, actor_id, "ban", f"<@{user_id}>", None, reason or "banned")
        return bool(cursor.rowcount)

    async def unban(self, guild_id: int, user_id: int, *, actor_id: int) -> bool:
        async with self._changing():
            old = await self.get_ban(guild_id, user_id)
            if old is not None:
                await self._db.execute("DELETE FROM bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
                await self._audit(guild_id, actor_id, "unban", f"<@{user_id}>", old.reason or "banned", None)
        return old is not None

    async def get_ban(self, guild_id: int, user_id: int) -> Ban | None:
        async def read() -> Ban | None:
            row = await self._row("SELECT * FROM bans WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
            return Ban(**dict(row)) if row else None

        return await self._kept_read(("ban", guild_id, user_id), read)

    async def audit_log(self, guild_id: int, limit: int = 50) -> list[AuditRow]:
        rows = await self._rows("SELECT * FROM audit_log WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
                                (guild_id, limit))
        return [AuditRow(**dict(row)) for row in rows]

    async def _audit(self, guild_id: int, actor_id: int, action: str, target: str | None, old, new) -> None:
        await self._db.execute(
            "INSERT INTO audit_log (guild_id, actor_id, action, target, old_value, new_value) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, actor_id, action, target, _text(old), _text(new)),
        )

    @asynccontextmanager
    async def _transaction(self):
        # One connection: another coroutine's write may land inside the transaction and commits
        # with it; a rollback would undo it too. The statements here fail only on a schema
        # constraint, which no valid call meets, so that is a bug path, not a normal one.
        async with self._transaction_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self._db.execute("ROLLBACK")
                # A write of a member's defaults from outside it (`_write` takes no lock) may have
                # landed in it and gone with it.
                self._forget()
                raise
            await self._db.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._row("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def engine_start_seconds(self, model: str, device: str) -> float | None:
        """How long the last start of an engine of this default model (its source) on this device
        took, from its spawn to Ready; None if it never started here."""
        value = await self.get_meta(f"engine_start_seconds:{device}:{model}")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    async def set_engine_start_seconds(self, model: str, device: str, seconds: float) -> None:
        await self.set_meta(f"engine_start_seconds:{device}:{model}", f"{seconds:.3f}")


def _signed(bits: int) -> int:
    """64 bits as SQLite's signed 64-bit integer."""
    return bits - 2**64 if bits >= 2**63 else bits


def _names(allowed: tuple[str, ...] | None) -> str:
    return "every model" if allowed is None else ", ".join(allowed) or "none"


def _text(value) -> str | None:
    return None if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _job(row: aiosqlite.Row) -> JobRow:
    data = dict(row)
    data["request"] = GenerateRequest.from_json(data["request"])
    for key in ("nsfw_flags", "nsfw_scores"):
        if data[key] is not None:
            data[key] = json.loads(data[key])
    if data["nsfw_flags"] is not None:
        data["nsfw_flags"] = [bool(flag) for flag in data["nsfw_flags"]]
    return JobRow(**data)
