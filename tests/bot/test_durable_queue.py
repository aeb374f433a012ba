"""The queue end to end (tiny model, loopback fake Discord): limits, progress, Cancel, /queue and
a gateway reconnect during a job. A restart with jobs queued and running: tests/bot/test_restart.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord, Interaction

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW = {"steps": 50, "width": 640, "height": 640}  # several seconds on the tiny model


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, tiny_model: Path, tmp_path_factory):
    process = BotProcess(fake, tmp_path_factory.mktemp("queue-bot"), tiny_model, MAX_JOBS_PER_MEMBER="2",
                         MAX_BATCH="1")
    await process.start()
    yield process
    await process.stop()


def rows(bot: BotProcess, where: str = "1", *args) -> list[dict]:
    return bot.jobs(where, *args)


def result(reply) -> bool:
    return any(upload.filename.endswith(".png") for upload in reply.files)


async def running(bot: BotProcess, interaction: Interaction) -> dict:
    await until(lambda: [r["status"] for r in rows(bot, "interaction_id = ?", interaction.id)] == ["running"])
    return rows(bot, "interaction_id = ?", interaction.id)[0]


async def test_a_member_over_the_limit_is_told_when_to_try_again(bot: BotProcess, fake: FakeDiscord) -> None:
    member = fake.user("eager")
    first = await fake.invoke("dream", member, prompt="one", **SLOW)
    await first.wait_for(lambda reply: "Job" in reply.content)
    second = await fake.invoke("dream", member, prompt="two", steps=2)
    await second.wait_for(lambda reply: "Job" in reply.content)
    third = await fake.invoke("dream", member, prompt="three", steps=2)
    refusal = await third.wait_for(lambda reply: reply.ephemeral and bool(reply.content))
    assert "You already have 2 jobs queued or running" in refusal.content and "try again" in refusal.content
    assert len(rows(bot, "user_id = ?", int(member["id"]))) == 2  # nothing recorded for the third
    for interaction in (first, second):
        await interaction.wait_for(result, timeout=120)


async def test_the_notice_shows_the_place_then_the_steps(bot: BotProcess, fake: FakeDiscord) -> None:
    slow = await fake.invoke("dream", fake.user("a"), prompt="slow", **SLOW)
    await running(bot, slow)
    waiting = await fake.invoke("dream", fake.user("b"), prompt="waiting", steps=30, width=256, height=256)
    placed = await waiting.wait_for(lambda reply: "ahead of yours" in reply.content)
    assert "1 job ahead of yours, about" in placed.content
    stepping = await slow.wait_for(lambda reply: " left" in reply.content, timeout=60)
    assert re.fullmatch(r"🖌️ Job \d+: [▰▱]{12} \d+ % · about \d+ (s|min) left", stepping.content), stepping.content
    assert not stepping.files  # previews only where flagged images could be shown
    notice = fake.message(slow.message_id)
    for interaction in (slow, waiting):
        await interaction.wait_for(result, timeout=120)
    assert not any(custom_id.startswith("dream:cancel:") for custom_id in fake.message(slow.message_id).custom_ids)
    assert notice.id == slow.message_id


async def test_cancel_a_queued_and_a_running_job(bot: BotProcess, fake: FakeDiscord) -> None:
    owner, other = fake.user("owner of jobs"), fake.user("bystander")
    slow = await fake.invoke("dream", owner, prompt="to stop", steps=50, width=512, height=512)
    job = await running(bot, slow)  # first: two members' commands are prepared side by side
    queued = await fake.invoke("dream", fake.user("c"), prompt="to drop", steps=2)
    await queued.wait_for(lambda reply: "ahead of yours" in reply.content)
    queued_job = rows(bot, "interaction_id = ?", queued.id)[0]

    # Someone else may not cancel it.
    refused = await fake.click(slow.message_id, f"dream:cancel:{job['id']}", user=other)
    assert "Only the member who asked for this job" in (await refused.wait_for(lambda r: bool(r.content))).content
    # A moderator may cancel the queued one; its member the running one, between two steps.
    moderator = fake.user("mod", permissions=1 << 5)
    await fake.click(queued.message_id, f"dream:cancel:{queued_job['id']}", user=moderator)
    dropped = await queued.wait_for(lambda reply: "cancelled" in reply.content)
    assert f"cancelled by <@{moderator['id']}>" in dropped.content
    await fake.click(slow.message_id, f"dream:cancel:{job['id']}", user=owner)
    stopped = await slow.wait_for(lambda reply: "cancelled" in reply.content, timeout=60)
    assert f"Job {job['id']} was cancelled by <@{owner['id']}>" in stopped.content and not stopped.files
    await until(lambda: rows(bot, "id = ?", job["id"])[0]["status"] == "failed")
    assert rows(bot, "id = ?", job["id"])[0]["cancelled_by"] == int(owner["id"])
    after = await fake.invoke("dream", prompt="the engine carries on", steps=2)
    await after.wait_for(result, timeout=60)


async def test_queue_lists_running_and_waiting_jobs(bot: BotProcess, fake: FakeDiscord) -> None:
    elsewhere = fake.text_channel("elsewhere")
    slow = await fake.invoke("dream", fake.user("d"), prompt="visible fox", **SLOW)
    await running(bot, slow)
    hidden = await fake.invoke("dream", fake.user("e"), prompt="secret fox", steps=2, in_channel=elsewhere)
    await hidden.wait_for(lambda reply: "ahead of yours" in reply.content)
    listing = await (await fake.invoke("queue", fake.user("f"))).wait_for(lambda reply: bool(reply.content))
    assert listing.ephemeral and "1 running · 1 waiting" in listing.content
    assert "visible fox" in listing.content and "secret fox" not in listing.content  # not from this channel
    for interaction in (slow, hidden):
        await interaction.wait_for(result, timeout=120)


async def test_a_gateway_reconnect_during_a_job_loses_nothing(bot: BotProcess, fake: FakeDiscord) -> None:
    slow = await fake.invoke("dream", fake.user("g"), prompt="through a reconnect", **SLOW)
    await running(bot, slow)
    identified = fake.identify_count
    for ws in list(fake._sockets):
        await ws.close(code=4000)  # Discord asks the client to reconnect
    await slow.wait_for(result, timeout=120)
    await until(lambda: bool(fake._sockets), timeout=60)
    assert fake.identify_count >= identified
    later = await fake.invoke("dream", fake.user("h"), prompt="after the reconnect", steps=2)
    await later.wait_for(result, timeout=60)
