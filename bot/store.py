"""All SQL lives here: jobs (every user's history) and small bot facts, in SQLite through aiosqlite.

The schema is only in `migrations/NNNN_*.sql`; `Store.open` applies the pending ones in order,
each in its own transaction, and records the version in SQLite's `user_version`.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from dreambot.protocol import DEFAULT_FRAMES, GenerateRequest, GenerateResult

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
    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    interaction_id: int | None
    message_id: int | None
    prompt: str
    negative_prompt: str
    num_inference_steps: int
    guidance_scale: float
    width: int | None
    height: int | None
    seed: int
    scheduler: str
    num_images: int
    model: str | None
    status: str
    nsfw_flags: list[bool] | None
    nsfw_scores: list[float] | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    engine_seconds: float | None
    error: str | None
    mode: str
    action: str
    parent_job_id: int | None
    parent_image: int | None
    strength: float | None
    direction: str | None
    amount: int | None
    end_prompt: str | None
    end_seed: int | None
    frames: int | None
    style: str
    deleted_at: str | None

    def request(self, image: bytes | None = None, mask: bytes | None = None) -> GenerateRequest:
        """The job's request; the input pictures live outside the database (`bot.images`)."""
        image_based = self.mode not in ("txt2img", "interpolate")
        return GenerateRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            # A picture's size comes from its input; a txt2img job's is the size it was made at.
            width=None if image_based else self.width,
            height=None if image_based else self.height,
            seed=self.seed,
            scheduler=self.scheduler,
            num_images=self.num_images,
            mode=self.mode,
            image=image,
            mask=mask,
            strength=self.strength,
            direction=self.direction or "all",
            amount=self.amount or 0,
            end_prompt=self.end_prompt,
            end_seed=self.end_seed,
            frames=self.frames or DEFAULT_FRAMES,
            style=self.style,
        )


_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


class Store:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: str | Path, migrations: list[Migration] | None = None) -> Store:
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (the migration runner needs that).
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA busy_timeout = 5000")
        store = cls(db)
        try:
            await store.migrate(bundled_migrations() if migrations is None else migrations)
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone()
        return version

    async def migrate(self, migrations: list[Migration]) -> None:
        current = await self.schema_version()
        newest = max((m.version for m in migrations), default=0)
        if current > newest:
            raise RuntimeError(f"the database is at schema version {current}, newer than this code ({newest})")
        for migration in migrations:
            if migration.version <= current:
                continue
            # executescript commits any open transaction first, so the whole script, its BEGIN and
            # COMMIT included, goes in one call; on failure we roll back what it had begun.
            try:
                await self._db.executescript(
                    f"BEGIN;\n{migration.sql}\n;PRAGMA user_version = {migration.version};\nCOMMIT;"
                )
            except BaseException:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise
            log.info("applied migration %s", migration.name)

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
    ) -> int:
        assert request.seed is not None, "the bot picks the seed before recording the job"
        interpolating = request.mode == "interpolate"
        cursor = await self._db.execute(
            """
            INSERT INTO jobs (user_id, guild_id, channel_id, interaction_id, prompt, negative_prompt,
                              num_inference_steps, guidance_scale, width, height, seed, scheduler,
                              num_images, model, mode, action, parent_job_id, parent_image, strength, direction,
                              amount, end_prompt, end_seed, frames, style)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                user_id, guild_id, channel_id, interaction_id, request.prompt, request.negative_prompt,
                request.num_inference_steps, request.guidance_scale, request.width, request.height,
                request.seed, request.scheduler, request.num_images, model, request.mode, action, parent_job_id, parent_image,
                request.strength, request.direction if request.mode == "outpaint" else None,
                request.amount if request.mode == "outpaint" else None,
                request.end_prompt if interpolating else None, request.end_seed if interpolating else None,
                request.frames if interpolating else None, request.style,
            ),
        )
        return cursor.lastrowid

    async def mark_running(self, job_id: int) -> None:
        await self._db.execute(f"UPDATE jobs SET status = 'running', started_at = {_NOW} WHERE id = ?", (job_id,))

    async def finish_job(self, job_id: int, result: GenerateResult) -> str:
        """Record the engine's result; returns the job's final status (done, or filtered if nothing may be shown)."""
        status = "filtered" if result.all_flagged else "done"
        await self._db.execute(
            f"""
            UPDATE jobs SET status = ?, width = ?, height = ?, model = ?, nsfw_flags = ?, nsfw_scores = ?,
                            engine_seconds = ?, finished_at = {_NOW}
            WHERE id = ?
            """,
            (
                status, result.width, result.height, result.model,
                json.dumps([image.nsfw_content_detected for image in result.images]),
                json.dumps([image.nsfw_score for image in result.images]),
                result.timings.get("total"), job_id,
            ),
        )
        return status

    async def fail_job(self, job_id: int, error: str) -> None:
        await self._db.execute(
            f"UPDATE jobs SET status = 'failed', error = ?, finished_at = {_NOW} WHERE id = ?", (error, job_id)
        )

    async def set_message(self, job_id: int, message_id: int) -> None:
        await self._db.execute("UPDATE jobs SET message_id = ? WHERE id = ?", (message_id, job_id))

    async def mark_deleted(self, job_id: int) -> None:
        await self._db.execute(f"UPDATE jobs SET deleted_at = {_NOW} WHERE id = ?", (job_id,))

    async def job_for_message(self, message_id: int) -> JobRow | None:
        """The job whose result is this message (buttons and reactions on it act on that job)."""
        async with self._db.execute("SELECT * FROM jobs WHERE message_id = ?", (message_id,)) as cursor:
            row = await cursor.fetchone()
        return _job(row) if row else None

    async def get_job(self, job_id: int) -> JobRow | None:
        async with self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        return _job(row) if row else None

    async def user_jobs(self, user_id: int, limit: int = 25) -> list[JobRow]:
        async with self._db.execute(
            "SELECT * FROM jobs WHERE user_id = ? ORDER BY id DESC LIMIT ?", (user_id, limit)
        ) as cursor:
            return [_job(row) for row in await cursor.fetchall()]

    async def fail_unfinished(self, error: str) -> int:
        """Jobs left queued or running by a previous run cannot be answered any more: mark them failed."""
        cursor = await self._db.execute(
            f"UPDATE jobs SET status = 'failed', error = ?, finished_at = {_NOW} WHERE status IN ('queued', 'running')",
            (error,),
        )
        return cursor.rowcount

    # -- meta ------------------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _job(row: aiosqlite.Row) -> JobRow:
    data = dict(row)
    for key in ("nsfw_flags", "nsfw_scores"):
        if data[key] is not None:
            data[key] = json.loads(data[key])
    if data["nsfw_flags"] is not None:
        data["nsfw_flags"] = [bool(flag) for flag in data["nsfw_flags"]]
    return JobRow(**data)
