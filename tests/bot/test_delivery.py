"""Nothing made is lost on its way to the channel: a crash or a stop during the upload (the next
start posts it), a full images disk (posted anyway), a database locked by another program (the
posted picture stays posted). The real bot and engine, tiny model; each test its own bot process
(the fake Discord is the module's, and only one bot may be connected to it at a time)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord, Message

pytestmark = pytest.mark.asyncio(loop_scope="module")


def row(bot: BotProcess, interaction_id: int) -> dict:
    return bot.jobs("interaction_id = ?", interaction_id)[0]


def picture(message: Message) -> bool:
    return any(attachment.filename.endswith(".png") for attachment in message.attachments)


class StalledUpload:
    """The fake's upload hook: the first result upload never gets its answer while `hold` lasts.
    `taken`: whether Discord had taken the upload (only its answer is lost), or not (the upload
    was cut short: the message keeps no picture)."""

    def __init__(self, hold: float, taken: bool) -> None:
        self.hold, self.taken, self.seen = hold, taken, asyncio.Event()

    async def __call__(self, message: Message) -> None:
        if picture(message) and not self.seen.is_set():
            if not self.taken:
                message.attachments = []
            self.seen.set()
            await asyncio.sleep(self.hold)


@pytest.mark.parametrize(("how", "taken"), [("kill -9", False), ("SIGTERM", False), ("kill -9", True)])
async def test_a_result_whose_upload_was_cut_short_is_posted_at_the_next_start(
        fake: FakeDiscord, tiny_model: Path, tmp_path: Path, how: str, taken: bool) -> None:
    first = await BotProcess(fake, tmp_path, tiny_model).start()
    member = fake.user(f"unlucky {how}")
    stall = fake.upload_hook = StalledUpload(hold=25, taken=taken)
    try:
        interaction = await fake.invoke("dream", member, prompt="a fox", steps=2, seed=5)
        await asyncio.wait_for(stall.seen.wait(), 90)
        if how == "kill -9":
            first.process.kill()
        else:  # a service manager's stop while a slow upload runs: the grace ends before it does
            first.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(first.process.wait(), 60)
    finally:
        fake.upload_hook = None
        await first.stop()
    job = row(first, interaction.id)
    assert job["status"] == "delivering"  # made, not confirmed posted: not lost
    assert (tmp_path / "data" / "images" / f"{job['id']}-result-0.png").is_file()

    posted_before = len(fake.channel_messages.replies)
    second = await BotProcess(fake, tmp_path, tiny_model).start()
    try:
        await until(lambda: row(second, interaction.id)["status"] == "done")
        job = row(second, interaction.id)
        delivered = fake.message(job["message_id"])
        assert picture(delivered) and f"job {job['id']}" in delivered.content
        reposted = [reply for reply in fake.channel_messages.replies[posted_before:] if reply.files]
        if taken:  # Discord had it: recorded, not posted twice
            assert delivered.id == interaction.message_id and reposted == []
            assert "its result was posted before the restart" in second.log()
        else:  # posted in the channel, replying to the notice, mentioning the member
            assert [reply.message_id for reply in reposted] == [delivered.id]
            assert f"<@{member['id']}>" in delivered.content
            assert delivered.message_reference["message_id"] == str(interaction.message_id)
        assert "result(s) made by the last run" in second.log()
    finally:
        await second.stop()


async def test_a_full_images_disk_still_posts_the_picture(fake: FakeDiscord, tiny_model: Path, tmp_path: Path) -> None:
    disk = tmp_path / "images"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):  # fill it to the last byte
                pass
        except OSError:
            pass
        finally:
            os.close(filler)
        bot = await BotProcess(fake, tmp_path, tiny_model, IMAGES_DIR=str(disk)).start()
        try:
            interaction = await fake.invoke("dream", fake.user("lucky anyway"), prompt="a fox", steps=2, seed=5)
            result = await interaction.wait_for(lambda reply: bool(reply.files))
            assert "could not be stored" in result.content and "Sorry" not in result.content
            buttons = fake.message(interaction.message_id).custom_ids
            assert any(b.startswith("dream:reroll:") for b in buttons) and not any("vary" in b for b in buttons)
            await until(lambda: row(bot, interaction.id)["status"] == "done")
            assert row(bot, interaction.id)["message_id"] == interaction.message_id
            assert "could not store picture 1" in bot.log()
        finally:
            await bot.stop()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


async def test_a_locked_database_never_replaces_a_posted_picture(fake: FakeDiscord, tiny_model: Path,
                                                                  tmp_path: Path) -> None:
    bot = await BotProcess(fake, tmp_path, tiny_model).start()
    released = threading.Event()

    def hold_the_lock(seconds: float) -> None:  # another program writing, past the bot's 5 s busy_timeout
        db = sqlite3.connect(bot.database, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE meta SET value = value")
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()
        released.set()

    async def lock_as_it_uploads(message: Message) -> None:
        if picture(message):  # the picture is in; the bot is about to record its message id
            threading.Thread(target=hold_the_lock, args=(8.0,), daemon=True).start()
            await asyncio.sleep(0.3)

    fake.upload_hook = lock_as_it_uploads
    try:
        interaction = await fake.invoke("dream", fake.user("patient"), prompt="a fox", steps=2, seed=5)
        await interaction.wait_for(lambda reply: bool(reply.files))
        await until(released.is_set, timeout=30)
        await until(lambda: row(bot, interaction.id)["status"] == "done", timeout=60)
        assert row(bot, interaction.id)["message_id"] == interaction.message_id
        message = fake.message(interaction.message_id)
        assert picture(message) and "Sorry" not in message.content  # still the picture, not an apology
        assert "the database is busy" in bot.log()
    finally:
        fake.upload_hook = None
        await bot.stop()


async def test_a_job_waiting_for_its_model_says_so_then_shows_its_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from bot import delivery
    from bot.delivery import Delivery, Origin
    from dreambot.wire import Progress

    monkeypatch.setattr(delivery, "EDIT_SECONDS", 0.01)
    shown: list[str] = []

    async def edit_original_response(content: str, attachments: list) -> None:
        shown.append(content)

    origin = Origin(user=SimpleNamespace(id=1, mention="<@1>"), channel=None, guild_id=None,
                    interaction=SimpleNamespace(edit_original_response=edit_original_response))
    notice = Delivery(origin)
    ticket = SimpleNamespace(job=SimpleNamespace(job_id=7), result=asyncio.get_running_loop().create_future())
    pump = asyncio.create_task(notice.keep_fresh(SimpleNamespace(), ticket, ()))
    notice.progressed(Progress(job_id=7, step=0, total=20, loading="anime", seconds=12.0))
    while not shown:
        await asyncio.sleep(0.01)
    notice.progressed(Progress(job_id=7, step=1, total=20))
    while len(shown) < 2:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    notice.progressed(Progress(job_id=7, step=11, total=20))  # ten steps in about 0.2 s: 9 more, 0.18 s
    while len(shown) < 3:
        await asyncio.sleep(0.01)
    notice.progressed(Progress(job_id=7, step=20, total=20))
    while len(shown) < 4:
        await asyncio.sleep(0.01)
    ticket.result.set_result(None)
    await pump
    assert shown[0] == "📦 Job 7: loading the model anime (about 12 s); it starts right after."
    assert shown[1:] == ["🖌️ Job 7: ▱▱▱▱▱▱▱▱▱▱▱▱ 5 % · starting", "🖌️ Job 7: ▰▰▰▰▰▰▱▱▱▱▱▱ 55 % · about 1 s left",
                         "🖌️ Job 7: ▰▰▰▰▰▰▰▰▰▰▰▰ 100 % · finishing"]


async def test_the_progress_bar_and_the_time_left() -> None:
    from bot import render

    assert render.running(3, 0, 25, None) == "🖌️ Job 3: ▱▱▱▱▱▱▱▱▱▱▱▱ 0 % · starting"
    assert render.running(3, 12, 25, 20.4) == "🖌️ Job 3: ▰▰▰▰▰▱▱▱▱▱▱▱ 48 % · about 20 s left"
    assert render.running(3, 24, 25, 130) == "🖌️ Job 3: ▰▰▰▰▰▰▰▰▰▰▰▱ 96 % · about 2 min left"
    assert render.running(3, 8, 8, 0) == "🖌️ Job 3: ▰▰▰▰▰▰▰▰▰▰▰▰ 100 % · finishing"


async def test_the_first_notice_is_not_sent_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queued notice is shown once; keep_fresh edits it only when its place or wait changes."""
    from types import SimpleNamespace

    from bot import delivery, render
    from bot.delivery import Delivery, Origin

    monkeypatch.setattr(delivery, "EDIT_SECONDS", 0.01)
    shown: list[str] = []

    async def edit_original_response(content: str, **_) -> None:
        shown.append(content)

    origin = Origin(user=SimpleNamespace(id=1, mention="<@1>"), channel=None, guild_id=None,
                    interaction=SimpleNamespace(edit_original_response=edit_original_response))
    notice = Delivery(origin)
    place = {"position": 1}
    queue = SimpleNamespace(position=lambda job_id: place["position"], estimate=lambda position: 30.0,
                            starting=lambda: None)
    await notice.show(render.queued(7, 1, 30.0))
    ticket = SimpleNamespace(job=SimpleNamespace(job_id=7), result=asyncio.get_running_loop().create_future())
    pump = asyncio.create_task(notice.keep_fresh(queue, ticket, ()))
    await asyncio.sleep(0.2)
    assert shown == [render.queued(7, 1, 30.0)]  # nothing changed: nothing sent again
    place["position"] = 0
    for _ in range(500):
        if len(shown) >= 2 or pump.done():
            break
        await asyncio.sleep(0.01)
    ticket.result.set_result(None)
    await pump
    assert shown[1:] == [render.queued(7, 0, 30.0)]
