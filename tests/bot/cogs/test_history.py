"""/history, /mod history and /forget end to end (tiny model, loopback fake Discord), and the
retention of stored pictures."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest
import pytest_asyncio

from bot.images import ImageStore
from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Interaction

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGE_GUILD = 1 << 5


def jobs_of(bot: BotProcess, user: dict) -> list[dict]:
    return bot.jobs("user_id = ?", int(user["id"]))


async def dream(fake: FakeDiscord, user: dict, prompt: str, **where) -> Interaction:
    interaction = await fake.invoke("dream", user, prompt=prompt, steps=2, **where)
    await interaction.wait_for(lambda reply: bool(reply.files))
    return interaction


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def artist(bot: BotProcess, fake: FakeDiscord) -> dict:
    """A member with six jobs, the last one in a second channel."""
    user = fake.user("artist")
    for n in range(5):
        await dream(fake, user, f"fox number {n}")
    await dream(fake, user, "fox in the attic", in_channel=fake.text_channel("attic"))
    return user


async def test_history_is_private_paged_and_links_to_each_result(bot: BotProcess, fake: FakeDiscord, artist) -> None:
    interaction = await fake.invoke("history", artist)
    reply = await interaction.wait_for(lambda reply: bool(reply.content))
    assert reply.ephemeral
    page = reply.content
    assert "6 jobs · page 1 of 2" in page
    assert "fox in the attic" in page and "fox number 2" in page and "fox number 1" not in page  # newest first
    jobs = jobs_of(bot, artist)
    newest = jobs[-1]
    link = f"https://discord.com/channels/{fake.guild_id}/{newest['channel_id']}/{newest['message_id']}"
    assert link in page and "done" in page and f"seed {newest['seed']}" in page and "2 steps" in page
    message = fake.message(interaction.message_id)
    older = next(c for c in message.custom_ids if c.endswith(":next"))
    clicked = await fake.click(message.id, older, user=artist)
    await clicked.wait_for(lambda reply: reply.kind == "callback")
    assert "page 2 of 2" in fake.message(message.id).content
    assert "fox number 1" in fake.message(message.id).content and "fox number 0" in fake.message(message.id).content
    newer = next(c for c in fake.message(message.id).custom_ids if c.endswith(":previous"))
    assert not fake.message(message.id).component(newer).get("disabled")


async def test_someone_elses_history_buttons_are_refused(bot: BotProcess, fake: FakeDiscord, artist) -> None:
    from bot.views import HistoryButton

    # A forged click (a raw client can send any custom id) on a page the artist owns.
    interaction = await fake.invoke("history", artist)
    await interaction.wait_for(lambda reply: bool(reply.content))
    message = fake.message(interaction.message_id)
    custom_id = next(c for c in message.custom_ids if c.endswith(":next"))
    assert HistoryButton.__discord_ui_compiled_template__.fullmatch(custom_id)
    # Discord shows an ephemeral page only to its member; the bot checks anyway (a raw client can
    # send any custom id), so let the fake deliver someone else's click.
    message.flags &= ~(1 << 6)
    try:
        clicked = await fake.click(message.id, custom_id, user=fake.user("snoop"))
        reply = await clicked.wait_for(lambda reply: bool(reply.content))
    finally:
        message.flags |= 1 << 6
    assert reply.ephemeral and "someone else's" in reply.content
    assert "page 1 of 2" in fake.message(message.id).content


async def test_moderators_see_a_members_history_in_this_server(bot: BotProcess, fake: FakeDiscord, artist) -> None:
    admin = fake.user("admin", permissions=MANAGE_GUILD)
    reply = await (await fake.invoke("mod history", admin, member=artist)).wait_for(lambda reply: bool(reply.content))
    assert reply.ephemeral and f"<@{artist['id']}>'s Dreambot history" in reply.content
    assert "6 jobs" in reply.content


async def test_history_in_a_dm_works_too(bot: BotProcess, fake: FakeDiscord, artist) -> None:
    reply = await (await fake.invoke("history", artist, in_dm=True)).wait_for(lambda reply: bool(reply.content))
    assert "6 jobs" in reply.content
    empty = await (await fake.invoke("history", fake.user("newcomer"))).wait_for(lambda reply: bool(reply.content))
    assert "history is empty" in empty.content


async def test_forget_asks_first_and_cancel_keeps_everything(bot: BotProcess, fake: FakeDiscord, artist) -> None:
    interaction = await fake.invoke("forget", artist)
    reply = await interaction.wait_for(lambda reply: bool(reply.content))
    assert reply.ephemeral and "6 jobs" in reply.content and "cannot be undone" in reply.content
    clicked = await fake.click(interaction.message_id, f"forget:{artist['id']}:keep", user=artist)
    await clicked.wait_for(lambda reply: reply.kind == "callback")
    assert fake.message(interaction.message_id).content == "Nothing was erased."
    assert len(jobs_of(bot, artist)) == 6


async def test_forget_erases_rows_and_files_and_old_buttons_say_so(bot: BotProcess, fake: FakeDiscord) -> None:
    member = fake.user("leaver")
    first = await dream(fake, member, "a private fox")
    second = await dream(fake, member, "another private fox")
    jobs = jobs_of(bot, member)
    images = bot.workdir / "data" / "images"
    assert any(images.glob(f"{jobs[0]['id']}-*"))
    interaction = await fake.invoke("forget", member)
    await interaction.wait_for(lambda reply: bool(reply.content))
    clicked = await fake.click(interaction.message_id, f"forget:{member['id']}:erase", user=member)
    await clicked.wait_for(lambda reply: reply.kind in ("callback", "edit"))
    for _ in range(200):
        if "Erased" in fake.message(interaction.message_id).content:
            break
        await asyncio.sleep(0.05)
    assert re.search(r"Erased 2 jobs, 2 stored pictures and your settings\.",
                     fake.message(interaction.message_id).content)
    assert jobs_of(bot, member) == []
    assert not any(images.glob(f"{jobs[0]['id']}-*")) and not any(images.glob(f"{jobs[1]['id']}-*"))
    # Someone presses a button on the old result.
    message = fake.message(first.message_id)
    reroll = next(c for c in message.custom_ids if c.startswith("dream:reroll:"))
    answer = await (await fake.click(message.id, reroll, user=fake.user("fan"))).wait_for(lambda r: bool(r.content))
    assert answer.ephemeral and f"Job {jobs[0]['id']} was erased" in answer.content
    # By number alone, an erased job reads like one that never was: nothing to probe.
    info = await (await fake.invoke("info", fake.user("fan"), job=jobs[1]["id"])).wait_for(lambda r: bool(r.content))
    assert info.content == f"There is no job {jobs[1]['id']} in this server's history."
    assert second.message_id  # its message stays in the channel: the member was told so
    nothing = await (await fake.invoke("forget", member)).wait_for(lambda reply: bool(reply.content))
    assert "no jobs or settings of yours" in nothing.content


async def test_only_the_member_can_confirm_their_own_forget(bot: BotProcess, fake: FakeDiscord, artist) -> None:
    interaction = await fake.invoke("forget", artist)
    await interaction.wait_for(lambda reply: bool(reply.content))
    message = fake.message(interaction.message_id)
    message.flags &= ~(1 << 6)
    try:
        clicked = await fake.click(message.id, f"forget:{artist['id']}:erase", user=fake.user("prankster"))
        reply = await clicked.wait_for(lambda reply: bool(reply.content))
    finally:
        message.flags |= 1 << 6
    assert "Only the member whose history it is" in reply.content
    assert len(jobs_of(bot, artist)) == 6


async def test_a_page_of_the_longest_entries_fits_in_one_message() -> None:
    from bot import render
    from bot.store import JobRow
    from bot.views import PAGE_SIZE
    from dreambot.request import GenerateRequest

    big = 2**63 - 1
    fields = {name: None for name in JobRow.__dataclass_fields__}
    request = GenerateRequest(prompt="*" * 6000, num_inference_steps=500, guidance_scale=12.5, width=4096,
                              height=4096, seed=2**32 - 1, scheduler="DPM++ 2M Karras", num_images=10,
                              mode="interpolate")
    fields.update(id=big, user_id=big, guild_id=big, channel_id=big, message_id=big, request=request, width=4096,
                  height=4096, status="failed", created_at="2026-11-23T05:00:00.000Z", error="_" * 3000,
                  action="dream")
    page = render.history([JobRow(**fields)] * PAGE_SIZE, total=10**6, page=99999, pages=10**6, whose="Your")
    assert len(page) <= render.MESSAGE_LIMIT and page.count("jump to it") == PAGE_SIZE
    assert page.split("\n")[-1].startswith("Error: ")  # the last entry is whole


async def test_old_pictures_are_removed_after_the_retention_period(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    await store.save(1, "result-0.png", b"old")
    await store.save(2, "result-0.png", b"new")
    month_ago = time.time() - 31 * 86400
    os.utime(tmp_path / "images" / "1-result-0.png", (month_ago, month_ago))
    assert await store.remove_older_than(30) == 1
    assert await store.result(1, 0) is None and await store.result(2, 0) == b"new"
    assert await ImageStore(tmp_path / "none").remove_older_than(30) == 0


async def test_members_words_never_reach_the_log(bot: BotProcess, fake: FakeDiscord) -> None:
    """/forget must be able to erase a member's prompts: the log keeps ids and lengths, never their text,
    at INFO and above (the default level), from the bot and the engine alike."""
    secret = "quetzalcoatl-marmalade-7731"
    long_prompt = " ".join([secret] * 12)  # past CLIP's 77 tokens: diffusers would quote the cut part
    member = fake.user("private person")
    await dream(fake, member, long_prompt)
    in_dm = await fake.invoke("dream", member, prompt=f"{secret} in a dm", negative=f"not {secret}", steps=2,
                              in_dm=True)
    await in_dm.wait_for(lambda reply: bool(reply.files) or "withheld" in reply.content)
    refused = await fake.invoke("dream", member, prompt=secret, steps=0)  # a bad option is answered too
    await refused.wait_for(lambda reply: reply.ephemeral and bool(reply.content))
    assert len(jobs_of(bot, member)) == 2
    await asyncio.sleep(0.5)  # the engine's stderr reaches the log through a pipe
    assert "marmalade" not in bot.log() and "quetzalcoatl" not in bot.log()
    assert re.search(r"job \d+ \(dream\) queued for user \d+: prompt of \d+ characters", bot.log())
