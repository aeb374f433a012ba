"""The server's rules hold for jobs already queued or running when they change: a channel that loses
its age restriction gets no more previews, a ban stops the member's queued jobs, and every job is
checked again as it starts (restored jobs: tests/bot/test_restart.py). The real bot and engine,
tiny model."""

from __future__ import annotations

import time

import pytest

from tests.bot.test_durable_queue import rows
from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord, Interaction

pytestmark = pytest.mark.asyncio(loop_scope="module")

LONG = {"steps": 50, "width": 512, "height": 512}  # a few seconds on two cores
LONGER = {"steps": 50, "width": 768, "height": 768}  # long enough for several previews (every 2-2.5 s)


async def answer(interaction: Interaction) -> str:
    return (await interaction.wait_for(lambda reply: bool(reply.content))).content


def previews(interaction: Interaction, after: float = 0.0) -> list:
    return [reply for reply in interaction.replies
            if reply.kind == "edit" and reply.files and reply.content.startswith("🖌️") and reply.at > after]


async def test_a_channel_that_loses_its_age_restriction_gets_no_more_previews(bot: BotProcess,
                                                                              fake: FakeDiscord) -> None:
    channel = fake.text_channel("after-dark", nsfw=True)
    await answer(await fake.invoke("mod filter", fake.owner, mode="off", channel=channel))
    interaction = await fake.invoke("dream", fake.user("night owl"), prompt="a long one", seed=3, **LONGER,
                                    in_channel=channel)
    await interaction.wait_for(lambda reply: bool(previews(interaction)), timeout=120)  # shown while allowed
    fake.set_nsfw(channel, False)
    await fake.post("the channel is public now", in_channel=channel)  # the bot hears CHANNEL_UPDATE first
    changed = time.monotonic()
    await interaction.wait_for(lambda reply: reply.kind == "edit" and not reply.content.startswith(("🖌️", "🎨", "📦")),
                               timeout=120)  # the outcome
    # One edit may already have been on its way; none started after the bot knew.
    assert previews(interaction, after=changed + 1.0) == []
    assert rows(bot, "interaction_id = ?", interaction.id)[0]["nsfw_mode"] in ("off", "block")


async def test_a_ban_cancels_the_members_queued_jobs(bot: BotProcess, fake: FakeDiscord) -> None:
    blocker = await fake.invoke("dream", fake.user("first in line"), prompt="keeps the engine busy", **LONG)
    await until(lambda: [r["status"] for r in rows(bot, "interaction_id = ?", blocker.id)] == ["running"])
    spammer = fake.user("spammer")
    waiting = [await fake.invoke("dream", spammer, prompt=f"wait {i}", steps=2) for i in range(2)]
    for interaction in waiting:
        await interaction.wait_for(lambda reply: "ahead of yours" in reply.content)
    said = await answer(await fake.invoke("mod ban", fake.owner, member=spammer))
    assert "can no longer use Dreambot" in said and "2 of their jobs were cancelled" in said
    for interaction in waiting:
        await interaction.wait_for(lambda reply: "cancelled by" in reply.content)
    assert [(r["status"], r["cancelled_by"]) for r in rows(bot, "user_id = ?", int(spammer["id"]))] == \
        [("failed", int(fake.owner["id"]))] * 2
    await answer(await fake.invoke("mod unban", fake.owner, member=spammer))


async def test_what_can_be_refused_is_refused_before_any_download(bot: BotProcess, fake: FakeDiscord) -> None:
    """A barred member, a blocked word, or a member at their limit: the attachment is never fetched
    (decoding a hostile picture is the costly part)."""
    await answer(await fake.invoke("mod words", fake.owner, action="add", word="forbidden"))
    barred, busy, wordy = fake.user("barred"), fake.user("busy bee"), fake.user("wordy")
    await answer(await fake.invoke("mod ban", fake.owner, member=barred))
    blocker = await fake.invoke("dream", fake.user("blocker"), prompt="keeps the engine busy", **LONG)
    await until(lambda: [r["status"] for r in rows(bot, "interaction_id = ?", blocker.id)] == ["running"])
    for _ in range(3):  # MAX_JOBS_PER_MEMBER: 3
        queued = await fake.invoke("dream", busy, prompt="one of mine", steps=2)
        await queued.wait_for(lambda reply: "Job" in reply.content)
    cases = [(barred, "a fox", "barred you"), (wordy, "a forbidden fox", "moderators have blocked"),
             (busy, "a fox", "jobs queued or running")]
    for member, prompt, refusal in cases:
        picture = fake.attachment(b"\x89PNG\r\n\x1a\n" + bytes(1000), "big.png")
        interaction = await fake.invoke("dream", member, prompt=prompt, image=picture)
        assert refusal in await answer(interaction)
        assert picture.fetches == 0
    await answer(await fake.invoke("mod unban", fake.owner, member=barred))
    await answer(await fake.invoke("mod words", fake.owner, action="remove", word="forbidden"))
