"""Flagged pictures stay where flagged pictures may be shown, whatever way a member brings them back:
re-uploaded as an attachment, diluted in a larger canvas, or through a chain of derived jobs.

The real bot and engine with the tiny model and open_nsfw, at a server threshold of 0.2: a plain
skin-coloured picture scores about 0.3 (flagged), white about 0.01, and the tiny model's own
pictures at the seeds used here about 0.1 or less, so what flags a result below is what it kept
from its input, not what it drew.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Interaction

pytestmark = pytest.mark.asyncio(loop_scope="module")

SKIN = (198, 134, 110)  # open_nsfw: about 0.30
THRESHOLD = 0.2


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, tiny_model: Path, tmp_path_factory):
    process = BotProcess(fake, tmp_path_factory.mktemp("laundering-bot"), tiny_model, SD_SAFETY_CHECKER="opennsfw")
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def channels(fake: FakeDiscord, bot: BotProcess) -> dict[str, int]:
    gallery = fake.text_channel("gallery", nsfw=True)
    await (await fake.invoke("mod filter", fake.owner, mode="spoiler", channel=gallery)).wait_for(
        lambda reply: bool(reply.content))
    for _ in range(120):  # the threshold's scale is known once the engine has loaded
        answer = await (await fake.invoke("mod filter", fake.owner, threshold=THRESHOLD)).wait_for(
            lambda reply: bool(reply.content))
        if "now flags" in answer.content:
            break
        await asyncio.sleep(0.5)
    return {"regular": fake.channel_id, "age-restricted": gallery}


def row(bot: BotProcess, **where) -> dict:
    (column, value), = where.items()
    found = bot.jobs(f"{column} = ?", value)
    return found[0] if found else None


async def settled(bot: BotProcess, interaction: Interaction) -> sqlite3.Row:
    """The job's row once its outcome is recorded (just after it is posted)."""
    for _ in range(200):
        job = row(bot, interaction_id=interaction.id)
        if job["status"] not in ("queued", "running", "delivering"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job['id']} is still {job['status']}")


async def finished(interaction: Interaction) -> str:
    """What the channel got: "withheld", "spoiler", "posted", or the refusal's text."""
    reply = await interaction.wait_for(lambda r: r.ephemeral and bool(r.content) or "withheld" in r.content
                                       or bool(r.files), timeout=120)
    if reply.files:
        return "spoiler" if reply.files[0].filename.startswith("SPOILER_") else "posted"
    return "withheld" if "withheld" in reply.content else reply.content


async def test_a_reuploaded_flagged_picture_is_classified_and_withheld(bot, fake: FakeDiscord, channels) -> None:
    # Outpainting pastes the original back pixel-exact; the larger canvas alone scores low.
    skin = fake.attachment(png(Image.new("RGB", (64, 64), SKIN)), "photo.png")
    interaction = await fake.invoke("outpaint", fake.user("launderer"), image=skin, direction="right", amount=64,
                                    prompt="a fox", steps=2, seed=1, in_channel=channels["regular"])
    assert await finished(interaction) == "withheld"
    job = await settled(bot, interaction)
    assert job["nsfw_flags"] == "[true]" and job["source_score"] > THRESHOLD
    assert list((bot.workdir / "data" / "images").glob(f"{job['id']}-result-*")) == []  # never even kept

    # The same with a clean picture goes through: the rule is about the picture, not the mode.
    white = fake.attachment(png(Image.new("RGB", (64, 64), "white")), "white.png")
    control = await fake.invoke("outpaint", fake.user("painter"), image=white, direction="right", amount=64,
                                prompt="a fox", steps=2, seed=1, in_channel=channels["regular"])
    assert await finished(control) == "posted"
    assert row(bot, interaction_id=control.id)["source_score"] < THRESHOLD


async def test_a_flagged_region_kept_in_a_large_inpainted_canvas_is_scored_alone(bot, fake: FakeDiscord,
                                                                                  channels) -> None:
    canvas = Image.new("RGB", (256, 256), "white")
    canvas.paste(Image.new("RGB", (64, 64), SKIN), (0, 0))  # the whole canvas scores low
    mask = Image.new("L", (256, 256), 255)
    mask.paste(0, (0, 0, 64, 64))  # repaint everything but the skin-coloured corner
    interaction = await fake.invoke("inpaint", fake.user("diluter"), image=fake.attachment(png(canvas), "a.png"),
                                    mask=fake.attachment(png(mask), "m.png"), prompt="a fox", steps=2, seed=1,
                                    in_channel=channels["regular"])
    assert await finished(interaction) == "withheld"
    assert row(bot, interaction_id=interaction.id)["source_score"] > THRESHOLD


async def test_a_flag_travels_down_a_chain_of_derived_jobs(bot, fake: FakeDiscord, channels) -> None:
    member = fake.user("chainer")
    # 1. In the age-restricted channel (spoiler mode) a flagged picture is shown, behind a spoiler.
    skin = fake.attachment(png(Image.new("RGB", (64, 64), SKIN)), "photo.png")
    first = await fake.invoke("dream", member, prompt="a fox", image=skin, strength=0.5, steps=4, seed=1,
                              in_channel=channels["age-restricted"])
    assert await finished(first) == "spoiler"
    a = await settled(bot, first)
    # 2. A child of it, made there too, carries the flag whatever its own picture scores.
    second = await fake.invoke("outpaint", member, job=a["id"], direction="right", amount=64, steps=2, seed=2,
                               in_channel=channels["age-restricted"])
    assert await finished(second) == "spoiler"
    b = await settled(bot, second)
    assert b["source_flagged"] == 1 and b["nsfw_flags"] == "[true]"
    # 3. The grandchild cannot be started from the regular channel (rule: check_source on `job:`).
    before = row(bot, id=b["id"])
    third = await fake.invoke("outpaint", member, job=b["id"], direction="left", amount=64, steps=2,
                              in_channel=channels["regular"])
    refusal = await finished(third)
    assert "was flagged by the safety filter" in refusal
    assert row(bot, interaction_id=third.id) is None and dict(row(bot, id=b["id"])) == dict(before)
    # 4. Nor can its picture be brought back there as an attachment, even re-encoded as a JPEG and
    # shrunk (rule: Moderation.check_upload, the fingerprints of posted flagged pictures), though the
    # classifier alone may score it low: it is flagged because of where it came from.
    posted = next(upload for reply in second.replies for upload in reply.files  # the result, not a preview
                  if f"dream-{b['id']}-" in upload.filename)
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(posted.data)).resize((96, 48)).save(jpeg, format="JPEG", quality=80)
    for data, name in ((posted.data, "saved.png"), (jpeg.getvalue(), "saved.jpg")):
        again = await fake.invoke("dream", member, image=fake.attachment(data, name), prompt="a fox", steps=2,
                                  in_channel=channels["regular"])
        assert "was flagged by the safety filter" in await finished(again)
        assert row(bot, interaction_id=again.id) is None
    # Where flagged pictures may be shown it is taken, and its result is flagged too.
    shown = await fake.invoke("dream", member, image=fake.attachment(posted.data, "saved.png"), prompt="a fox",
                              steps=2, in_channel=channels["age-restricted"])
    assert await finished(shown) == "spoiler" and row(bot, interaction_id=shown.id)["source_flagged"] == 1
