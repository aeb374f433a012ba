"""A job is reachable only where its result could be seen (bot.moderation.reachable): its own channel
or a thread of it, its author, a moderator. Every path to a job by number is held to it: /info, the
`job:` options of /inpaint, /outpaint and /interpolate; and /queue shows only this server's jobs
and the viewer's own. The real bot and engine (tiny model), several servers, threads and DMs."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
import pytest_asyncio
from PIL import Image

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Interaction

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "the staff party plans"


def rows(bot: BotProcess) -> list[dict]:
    return bot.jobs()


async def answer(interaction: Interaction) -> str:
    return (await interaction.wait_for(lambda reply: bool(reply.content) and "Job" not in reply.content[:12]
                                       or reply.ephemeral and bool(reply.content))).content


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def staff_job(bot: BotProcess, fake: FakeDiscord) -> dict:
    staff = fake.text_channel("staff")
    author = fake.user("staffer")
    interaction = await fake.invoke("dream", author, prompt=SECRET, steps=2, seed=4, in_channel=staff)
    await interaction.wait_for(lambda reply: bool(reply.files))
    job = next(row for row in rows(bot) if row["interaction_id"] == interaction.id)
    return {"id": job["id"], "channel": staff, "author": author}


async def test_a_job_cannot_be_read_or_used_from_another_channel(bot: BotProcess, fake: FakeDiscord,
                                                                 staff_job) -> None:
    outsider, job = fake.user("outsider"), staff_job["id"]
    before = len(rows(bot))
    never = await answer(await fake.invoke("info", outsider, job=10**9))
    info = await answer(await fake.invoke("info", outsider, job=job))
    assert SECRET not in info and info == never.replace(str(10**9), str(job))  # no different from no job at all
    white = io.BytesIO()
    Image.new("L", (64, 64), 255).save(white, format="PNG")
    for command, options in (("outpaint", {"direction": "left"}), ("inpaint", {"mask": white.getvalue()}),
                             ("interpolate", {"end_seed": 5})):
        refused = await answer(await fake.invoke(command, outsider, job=job, steps=2, **options))
        assert f"There is no job {job} in this server's history to start from" in refused, command
    assert len(rows(bot)) == before  # nothing was queued, nothing of the picture reposted


async def test_a_job_is_reachable_where_it_could_be_seen(bot: BotProcess, fake: FakeDiscord, staff_job) -> None:
    job, staff = staff_job["id"], staff_job["channel"]
    thread = fake.thread(staff, "party planning")
    moderator = fake.user("moderator", permissions=1 << 5)  # Manage Server
    for who, where in ((fake.user("staff colleague"), staff), (fake.user("in the thread"), thread),
                       (staff_job["author"], fake.channel_id), (moderator, fake.channel_id)):
        assert SECRET in await answer(await fake.invoke("info", who, job=job, in_channel=where))
    extended = await fake.invoke("outpaint", fake.user("in the thread"), job=job, direction="right", steps=2,
                                 in_channel=thread)
    await extended.wait_for(lambda reply: bool(reply.files))  # posted in the thread


async def test_a_private_threads_job_stays_in_the_thread(bot: BotProcess, fake: FakeDiscord, staff_job) -> None:
    private = fake.thread(staff_job["channel"], "just us", private=True)
    whisper = await fake.invoke("dream", staff_job["author"], prompt="a whispered fox", steps=2, in_channel=private)
    await whisper.wait_for(lambda reply: bool(reply.files))
    job = next(row for row in rows(bot) if row["interaction_id"] == whisper.id)["id"]
    parent_reader = fake.user("reads the parent")
    refused = await answer(await fake.invoke("info", parent_reader, job=job, in_channel=staff_job["channel"]))
    assert "a whispered fox" not in refused and f"There is no job {job}" in refused


async def test_the_queue_shows_this_servers_jobs_and_counts_the_rest(bot: BotProcess, fake: FakeDiscord) -> None:
    other = fake.add_guild("Another Lab")
    stranger = fake.user("stranger", guild_id=other)
    loner = fake.user("loner")
    blocker = await fake.invoke("dream", fake.user("local"), prompt="keeps the engine busy", steps=50, width=512,
                                height=512)
    deadline = time.monotonic() + 60
    while not any(r["interaction_id"] == blocker.id and r["status"] == "running" for r in rows(bot)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    elsewhere = await fake.invoke("dream", stranger, prompt="another server's fox", steps=2,
                                  in_channel=fake.guilds[other].channel_id)
    private = await fake.invoke("dream", loner, prompt="a private fox", steps=2, in_dm=True)
    for interaction in (elsewhere, private):
        await interaction.wait_for(lambda reply: "ahead of yours" in reply.content)
    listing = await answer(await fake.invoke("queue", fake.user("curious")))
    assert "keeps the engine busy" in listing  # this channel's job, prompt and all
    assert "another server's fox" not in listing and f"<@{stranger['id']}>" not in listing
    assert "a private fox" not in listing and f"<@{loner['id']}>" not in listing
    assert "and 2 jobs from elsewhere" in listing
    # In their DM, the loner sees their own job, and the rest only counted.
    mine = await answer(await fake.invoke("queue", loner, in_dm=True))
    assert "a private fox" in mine and "keeps the engine busy" not in mine and "and 2 jobs from elsewhere" in mine
