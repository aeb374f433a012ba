"""Start-up, command registration, shutdown, and an engine that cannot start."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord


@pytest.fixture
async def fake():
    server = await FakeDiscord().start()
    yield server
    await server.close()


async def test_commands_are_registered_only_when_they_change(fake: FakeDiscord, tiny_model: Path,
                                                             tmp_path: Path) -> None:
    bot = BotProcess(fake, tmp_path, tiny_model)
    await bot.start()
    await bot.stop()
    assert fake.sync_calls == [f"/applications/{fake.application_id}/commands"]

    await bot.start()  # same definitions: nothing to register
    await bot.stop()
    assert len(fake.sync_calls) == 1 and "commands unchanged since the last registration" in bot.log()

    await bot.start("--sync")  # the owner forces it
    await bot.stop()
    assert len(fake.sync_calls) == 2

    bot.env["MAX_STEPS"] = "30"  # the option bounds changed: register again
    await bot.start()
    await bot.stop()
    assert len(fake.sync_calls) == 3
    steps = next(o for o in fake.commands["dream"]["options"] if o["name"] == "steps")
    assert steps["max_value"] == 30

    bot.env["DISCORD_GUILD_ID"] = str(fake.guild_id)  # one server, registered instantly
    await bot.start()
    await bot.stop()
    assert fake.sync_calls[-1] == f"/applications/{fake.application_id}/guilds/{fake.guild_id}/commands"


@pytest.mark.parametrize(("stop_signal", "engine_state"), [(signal.SIGINT, "loading"), (signal.SIGTERM, "ready")])
async def test_stops_cleanly_with_its_engine(
    fake: FakeDiscord, tiny_model: Path, tmp_path: Path, stop_signal: int, engine_state: str
) -> None:
    bot = await BotProcess(fake, tmp_path, tiny_model).start()
    for _ in range(600):
        engine = bot.engine_pid()
        if engine is not None and (engine_state == "loading" or "engine ready" in bot.log()):
            break
        await asyncio.sleep(0.05)
    bot.process.send_signal(stop_signal)
    assert await asyncio.wait_for(bot.process.wait(), 20) == 0
    await asyncio.sleep(0.2)
    assert not Path(f"/proc/{engine}").exists() or "zombie" in Path(f"/proc/{engine}/status").read_text()


async def test_an_engine_that_cannot_load_answers_at_once(fake: FakeDiscord, tmp_path: Path) -> None:
    bot = await BotProcess(fake, tmp_path, tmp_path / "no-model-here").start()
    try:
        for _ in range(400):
            if "engine could not start" in bot.log():
                break
            await asyncio.sleep(0.05)
        interaction = await fake.invoke("dream", prompt="a fox")
        answer = await interaction.wait_for(lambda r: "not available" in r.content, timeout=10)
    finally:
        await bot.stop()
    assert "is not an existing folder or checkpoint file" in answer.content
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT status FROM jobs").fetchall() == [("failed",)]


async def test_runs_from_any_working_directory(fake: FakeDiscord, tiny_model: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "srv" / "anywhere"
    bot = BotProcess(fake, elsewhere, tiny_model, DATABASE_PATH=str(tmp_path / "state" / "bot.sqlite3"))
    await bot.start()
    await bot.stop()
    assert (tmp_path / "state" / "bot.sqlite3").is_file() and os.listdir(elsewhere) == ["bot.log"]


async def test_the_owner_can_force_a_registration_from_discord(fake: FakeDiscord, tiny_model: Path,
                                                               tmp_path: Path) -> None:
    bot = await BotProcess(fake, tmp_path, tiny_model).start()
    try:
        assert str(fake.commands["sync"]["default_member_permissions"]) == "8"  # hidden from non-admins
        refused = await fake.invoke("sync")
        answer = await refused.wait_for(lambda r: r.kind == "followup")
        assert answer.ephemeral and "Only the bot's owner" in answer.content and len(fake.sync_calls) == 1

        done = await fake.invoke("sync", user=fake.owner)
        answer = await done.wait_for(lambda r: r.kind == "followup")
        assert answer.ephemeral and answer.content == (
            "Registered /dream, /inpaint, /outpaint, /interpolate, /info, /queue, /history, /forget, /loras, /models, "
            "/settings, /mod, "
            "/sync, "
            "the “Dream info” menu with Discord.")
        assert len(fake.sync_calls) == 2
    finally:
        await bot.stop()
