"""A restart with jobs queued and running: nothing is lost, and the results reach the channel.
(Its own module: the bot under test must be the only one connected to its fake Discord.)"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.bot.test_durable_queue import result, rows, running
from tests.bot.test_policy_changes import LONG
from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_restart_runs_queued_and_interrupted_jobs_and_delivers_them(
        fake: FakeDiscord, tiny_model: Path, tmp_path: Path) -> None:
    first = await BotProcess(fake, tmp_path, tiny_model, MAX_BATCH="1").start()
    members = [fake.user(f"patient {i}") for i in range(3)]
    try:
        interactions = [await fake.invoke("dream", members[0], prompt="long one", steps=50, width=512, height=512)]
        await running(first, interactions[0])
        interactions += [await fake.invoke("dream", member, prompt=f"waits {i}", steps=2)
                         for i, member in enumerate(members[1:])]
        for interaction in interactions[1:]:
            await interaction.wait_for(lambda reply: "ahead of yours" in reply.content)
        first.process.send_signal(signal.SIGTERM)  # as a service manager stops it
        await asyncio.wait_for(first.process.wait(), 90)
    finally:
        await first.stop()
    assert first.process.returncode == 0
    left = {row["status"] for row in rows(first)}
    assert left <= {"queued", "delivering", "done"} and "queued" in left  # nothing lost, nothing failed

    posted_before = len(fake.channel_messages.replies)
    second = await BotProcess(fake, tmp_path, tiny_model, MAX_BATCH="1").start()
    try:
        await until(lambda: all(row["status"] == "done" for row in rows(second)), timeout=180)
        results = [reply for reply in fake.channel_messages.replies[posted_before:] if result(reply)]
        unfinished_then = [row for row in rows(second) if row["message_id"] and
                           all(r.message_id != row["message_id"] for i in interactions for r in i.replies)]
        assert results and len(results) == len(unfinished_then)
        for reply in results:  # posted in the channel, mentioning the member, as the interaction is gone
            assert any(f"<@{m['id']}>" in reply.content for m in members)
        assert "left unfinished by the last run" in second.log()
    finally:
        await second.stop()


async def test_a_job_restored_after_a_restart_is_checked_again_as_it_starts(fake: FakeDiscord, tiny_model: Path,
                                                                            tmp_path: Path) -> None:
    first = await BotProcess(fake, tmp_path, tiny_model, MAX_BATCH="1").start()
    barred, patient = fake.user("barred later"), fake.user("patient")
    try:
        blocker = await fake.invoke("dream", fake.user("busy"), prompt="keeps the engine busy", **LONG)
        await running(first, blocker)
        left = [await fake.invoke("dream", member, prompt="left for later", steps=2) for member in (barred, patient)]
        for interaction in left:
            await interaction.wait_for(lambda reply: "ahead of yours" in reply.content)
    finally:
        await first.stop()
    # While the bot was down, a moderator barred one of them (an operator's sqlite3 shell, say).
    with sqlite3.connect(first.database) as db:
        db.execute("INSERT INTO bans (guild_id, user_id, banned_by, reason) VALUES (?, ?, ?, 'spam')",
                   (fake.guild_id, int(barred["id"]), int(fake.owner["id"])))
    second = await BotProcess(fake, tmp_path, tiny_model, MAX_BATCH="1").start()
    try:
        def mine(member: dict) -> sqlite3.Row:
            return next(row for row in rows(second) if row["user_id"] == int(member["id"]))

        await until(lambda: mine(barred)["status"] == "failed" and mine(patient)["status"] == "done", timeout=180)
        assert "barred" in mine(barred)["error"]
        told = [reply for reply in fake.channel_messages.replies if f"<@{barred['id']}>" in reply.content]
        # The channel reads that moderators stopped it, not why (a ban is the member's business).
        assert told and "stopped by this server's moderators" in told[-1].content and not told[-1].files
        assert "barred" not in told[-1].content
    finally:
        await second.stop()
