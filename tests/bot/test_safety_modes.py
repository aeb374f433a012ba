"""The safety filter modes end to end, with a tiny model whose own safety checker flags every image:
block, spoiler and off, per server and per channel, against Discord's age-restricted channels."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Interaction

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, flagging_model: Path, tmp_path_factory):
    process = BotProcess(fake, tmp_path_factory.mktemp("flagging-bot"), flagging_model)
    await process.start()
    yield process
    await process.stop()


@pytest.fixture(scope="module")
def channels(fake: FakeDiscord) -> dict[str, int]:
    return {"regular": fake.channel_id, "age-restricted": fake.text_channel("gallery", nsfw=True),
            "mod-log": fake.text_channel("mod-log")}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def modlog(fake: FakeDiscord, bot: BotProcess, channels) -> int:
    await answer(await fake.invoke("mod modlog", fake.owner, channel=channels["mod-log"]))
    return channels["mod-log"]


async def answer(interaction: Interaction) -> str:
    return (await interaction.wait_for(lambda reply: bool(reply.content))).content


def job_of(bot: BotProcess, interaction: Interaction) -> dict:
    """The job's row, once its outcome is recorded (it is recorded just after it is posted)."""
    for _ in range(200):
        row = bot.jobs("interaction_id = ?", interaction.id)[0]
        if row["status"] not in ("queued", "running", "delivering"):
            return row
        time.sleep(0.05)
    return row


async def dream_in(fake: FakeDiscord, channel: int | None, member: dict | None = None, **options) -> Interaction:
    """A /dream whose job has finished, one way or another (its final answer is in)."""
    where = {"in_dm": True} if channel is None else {"in_channel": channel}
    interaction = await fake.invoke("dream", member or fake.user("dreamer"), prompt="a fox", steps=2, **options,
                                    **where)
    await interaction.wait_for(lambda reply: "withheld" in reply.content or bool(reply.files))
    return interaction


def outcome(bot: BotProcess, interaction: Interaction) -> str:
    """withheld, spoiler or as is: what the members of the channel got."""
    # The results only: a slow job may also show a progress preview first (spoilered too).
    uploads = [upload for reply in interaction.replies for upload in reply.files if "dream-" in upload.filename]
    job = job_of(bot, interaction)
    images = list((bot.workdir / "data" / "images").glob(f"{job['id']}-result-*"))
    if not uploads:
        assert "withheld by the safety filter" in interaction.replies[-1].content
        assert images == []  # not even kept on disk
        assert job["status"] == "filtered" and job["nsfw_flags"] == "[true]"
        return "withheld"
    assert len(uploads) == 1 and len(images) == 1 and job["status"] == "done"
    if uploads[0].filename.startswith("SPOILER_"):
        assert "posted behind a spoiler" in interaction.replies[-1].content
        return "spoiler"
    return "as is"


async def set_filter(fake: FakeDiscord, **options) -> str:
    return await answer(await fake.invoke("mod filter", fake.owner, **options))


# (server mode, the age-restricted channel's own mode, where the member dreams) -> what is posted
TABLE = [
    ("block", None, "regular", "withheld"),
    ("block", None, "age-restricted", "withheld"),
    ("spoiler", None, "regular", "withheld"),
    ("spoiler", None, "age-restricted", "spoiler"),
    ("off", None, "regular", "withheld"),
    ("off", None, "age-restricted", "as is"),
    ("block", "spoiler", "age-restricted", "spoiler"),
    ("block", "off", "age-restricted", "as is"),
    ("off", "block", "age-restricted", "withheld"),
    ("off", "spoiler", "regular", "withheld"),
]


@pytest.mark.parametrize(("server", "override", "where", "expected"), TABLE)
async def test_mode_by_channel_age_restriction(bot: BotProcess, fake: FakeDiscord, channels, modlog, server: str,
                                               override: str | None, where: str, expected: str) -> None:
    await set_filter(fake, mode=server)
    await set_filter(fake, mode=override or "default", channel=channels["age-restricted"])
    interaction = await dream_in(fake, channels[where])
    assert outcome(bot, interaction) == expected
    job_id = job_of(bot, interaction)["id"]
    modes = {"withheld": "block", "spoiler": "spoiler", "as is": "off"}
    assert job_of(bot, interaction)["nsfw_mode"] == modes[expected]
    # Moderators hear of every flagged image, never with the image.
    reports = [reply for reply in fake.messages_in(modlog).replies if f"Job {job_id} " in reply.content]
    assert len(reports) == 1 and not reports[0].files and "flagged its image" in reports[0].content


async def test_relaxing_a_regular_channel_is_refused_with_the_reason(bot: BotProcess, fake: FakeDiscord,
                                                                     channels, modlog) -> None:
    with sqlite3.connect(bot.database) as db:
        before = db.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    for mode in ("spoiler", "off"):
        text = await set_filter(fake, mode=mode, channel=channels["regular"])
        assert "is not age-restricted" in text and "Age-Restricted Channel" in text
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT count(*) FROM audit_log").fetchone()[0] == before
        assert db.execute("SELECT count(*) FROM channel_settings WHERE channel_id = ?",
                          (channels["regular"],)).fetchone()[0] == 0
    # The server-wide mode may be relaxed; the answer says where it applies.
    assert "only in age-restricted channels" in await set_filter(fake, mode="spoiler")


async def test_a_channel_that_loses_its_age_restriction_blocks_again(bot: BotProcess, fake: FakeDiscord,
                                                                     channels, modlog) -> None:
    await set_filter(fake, mode="off", channel=channels["age-restricted"])
    assert outcome(bot, await dream_in(fake, channels["age-restricted"])) == "as is"
    fake.set_nsfw(channels["age-restricted"], False)
    try:
        assert outcome(bot, await dream_in(fake, channels["age-restricted"])) == "withheld"
        shown = await set_filter(fake, channel=channels["age-restricted"])
        assert "**block** (not age-restricted, so flagged images are blocked)" in shown
    finally:
        fake.set_nsfw(channels["age-restricted"], True)


async def test_direct_messages_get_the_strictest_filter(bot: BotProcess, fake: FakeDiscord, channels, modlog) -> None:
    await set_filter(fake, mode="off")
    assert outcome(bot, await dream_in(fake, None)) == "withheld"


async def test_a_spoilered_picture_can_be_varied_where_it_was_posted(bot: BotProcess, fake: FakeDiscord,
                                                                     channels, modlog) -> None:
    await set_filter(fake, mode="spoiler", channel=channels["age-restricted"])
    interaction = await dream_in(fake, channels["age-restricted"])
    assert outcome(bot, interaction) == "spoiler"
    message = fake.message(interaction.message_id)
    vary = next(custom_id for custom_id in message.custom_ids if custom_id.startswith("dream:vary:"))
    await fake.click(message.id, vary, user=fake.user("fan"))
    for _ in range(600):
        replies = [m for m in fake.messages.values() if (m.message_reference or {}).get("message_id") == str(message.id)
                   and m.attachments]
        if replies:
            break
        await asyncio.sleep(0.05)
    assert replies and replies[0].attachments[0].filename.startswith("SPOILER_")


async def test_a_flagged_picture_cannot_be_carried_into_a_regular_channel(bot: BotProcess, fake: FakeDiscord,
                                                                          channels, modlog) -> None:
    await set_filter(fake, mode="spoiler", channel=channels["age-restricted"])
    # Its own author (who may reach the job from any channel of the server) tries to carry it out.
    smuggler = fake.user("smuggler")
    interaction = await dream_in(fake, channels["age-restricted"], smuggler)
    assert outcome(bot, interaction) == "spoiler"
    job_id = job_of(bot, interaction)["id"]
    with sqlite3.connect(bot.database) as db:
        jobs_before = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    white = io.BytesIO()
    Image.new("L", (64, 64), 255).save(white, format="PNG")
    for command, options in (("outpaint", {"direction": "left"}), ("inpaint", {"mask": white.getvalue()}),
                             ("interpolate", {"end_seed": 5})):
        started = await fake.invoke(command, smuggler, job=job_id, steps=2, **options,
                                    in_channel=channels["regular"])
        animation = command == "interpolate"
        reply = await started.wait_for(lambda reply, animation=animation: bool(reply.content) and
                                       (reply.ephemeral or animation))
        if command == "interpolate":  # it takes only the prompt and the seed: nothing of the picture
            assert "withheld" in (await started.wait_for(lambda r: "withheld" in r.content or bool(r.files))).content
            continue
        assert "was flagged by the safety filter" in reply.content, reply.content
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == jobs_before + 1  # the animation only
    # Where flagged pictures may be shown, the same is allowed.
    extended = await fake.invoke("outpaint", fake.user("artist"), job=job_id, steps=2, direction="left",
                                 in_channel=channels["age-restricted"])
    await extended.wait_for(lambda reply: bool(reply.files))
