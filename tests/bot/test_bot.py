"""Start-up, command registration, shutdown, and an engine that cannot start."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
from functools import partial
from pathlib import Path

import pytest
from aiohttp import web

from bot.store import Store
from tests.support.bot_process import BotProcess, until
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


async def test_an_engine_that_cannot_load_its_model_twice_stays_down_and_says_why(fake: FakeDiscord, tiny_model: Path,
                                                                                 tmp_path: Path) -> None:
    model = tmp_path / "broken"
    shutil.copytree(tiny_model, model)  # shaped like a model, so the start check lets it by; but it cannot load
    (model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not really weights")
    modlog = fake.text_channel("mod-log")
    bot = BotProcess(fake, tmp_path, model)
    store = await Store.open(bot.database)
    await store.set_guild_setting(fake.guild_id, "modlog_channel_id", modlog, actor_id=int(fake.owner["id"]))
    await store.close()
    await bot.start()
    try:
        await until(lambda: "the image engine is down" in bot.log(), timeout=180)
        told = await fake.messages_in(modlog).wait_for(lambda r: "The image engine is down" in r.content)
        interaction = await fake.invoke("dream", prompt="a fox")
        answer = await interaction.wait_for(lambda r: "Sorry" in r.content, timeout=10)
        info = await fake.invoke("info", job=1)
        shown = await info.wait_for(lambda r: "Error:" in r.content, timeout=10)
        await asyncio.sleep(0.5)  # time for a second mod-log post, which must not come
    finally:
        await bot.stop()
    reason = f"could not load SD_MODEL '{model}': "
    assert answer.content == "😿 Sorry, the image engine is down (job 1); moderators have been told."
    assert reason in told.content and len(fake.messages_in(modlog).replies) == 1  # once, not once per job
    assert "Error: the image engine was down" in shown.content and str(model) not in shown.content
    log = bot.log()
    assert len(re.findall(r"engine process \d+ started", log)) == 2  # and no third try
    assert re.search(r"ERROR bot.engine_client: the image engine is down: .*" + re.escape(reason), log)
    assert "Traceback" not in log
    with sqlite3.connect(bot.database) as db:  # the operator keeps the detail
        [(status, error)] = db.execute("SELECT status, error FROM jobs").fetchall()
    assert status == "failed" and error.startswith(f"unavailable: {reason}")


async def test_waits_for_discord_then_starts_its_engine_once_and_remembers_the_start(fake: FakeDiscord,
                                                                                     tiny_model: Path,
                                                                                     tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on, for now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot = BotProcess(fake, tmp_path, tiny_model, DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10",
                     DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/gateway")
    coming_up = asyncio.create_task(bot.start())
    proxy = None
    try:
        await until(lambda: "Discord is unreachable" in bot.log(), timeout=60)
        assert bot.process.returncode is None  # waiting, not stopped
        proxy = await asyncio.start_server(partial(forward, fake.port), "127.0.0.1", port)  # Discord is back
        await coming_up  # logged in and connected at the next try
        await until(lambda: "engine ready" in bot.log(), timeout=120)
    finally:
        coming_up.cancel()
        await bot.stop()
        if proxy is not None:
            proxy.close()
    log = bot.log()
    waits = [line for line in log.splitlines() if "Discord is unreachable" in line]
    assert waits and all(re.search(r" WARNING bot: Discord is unreachable \(ClientConnectorError: Cannot connect to "
                                   r"host 127\.0\.0\.1:\d+ .*\); retrying in \d+ s$", line) for line in waits)
    assert "Traceback" not in log and len(re.findall(r"engine process \d+ started", log)) == 1
    with sqlite3.connect(bot.database) as db:
        [(seconds,)] = db.execute("SELECT value FROM meta WHERE key = ?", (f"engine_start_seconds:auto:{tiny_model}",))
    assert 0 < float(seconds) < 120


async def forward(port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One connection passed on to the fake Discord's port, both ways (HTTP and the gateway's websocket)."""
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def test_a_refused_token_stops_at_once_with_one_line(tiny_model: Path, tmp_path: Path) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    env = {**BotProcess.base_environment(), "DISCORD_TOKEN": "refused.token.value", "SD_MODEL": str(tiny_model),
           "DISCORD_API_BASE": f"http://127.0.0.1:{port}/api/v10", "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{port}/"}
    try:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=tmp_path, env=env,
                                                       stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await runner.cleanup()
    assert process.returncode == 1
    assert stderr.decode().splitlines()[-1] == "DISCORD_TOKEN was refused by Discord: check the bot token"
    assert "Discord is unreachable" not in stderr.decode() and "engine process" not in stderr.decode()


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
            "/sync, /help, "
            "the “Dream info” menu with Discord.")
        assert len(fake.sync_calls) == 2
    finally:
        await bot.stop()
