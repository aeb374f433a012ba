"""The invite link asks for exactly what the bot uses (`bot.bot.INVITE_PERMISSIONS`): with those
permissions and no others, every way a result is posted works, in a channel and in threads; the
README's link is the bot's own. The real bot and engine (tiny model) against the fake Discord, which
refuses what real Discord refuses without a permission (a reply without Read Message History, a
post in a thread without Send Messages in Threads)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot.bot import INVITE_PERMISSIONS, invite_link
from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Message

pytestmark = pytest.mark.asyncio(loop_scope="module")

README = Path(__file__).resolve().parents[2] / "README.md"


async def result_replying_to(fake: FakeDiscord, message_id: int, timeout: float = 60) -> Message:
    for _ in range(int(timeout / 0.05)):
        for message in list(fake.messages.values()):
            if str((message.message_reference or {}).get("message_id")) == str(message_id) and message.attachments:
                return message
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no result replied to {message_id}")


async def job_id_of(bot: BotProcess, message_id: int) -> int:
    for _ in range(200):
        found = bot.jobs("message_id = ?", message_id)
        if found:
            return found[0]["id"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no job for message {message_id}")


async def test_the_readme_invites_with_exactly_these_permissions() -> None:
    links = re.findall(r"https://discord\.com/oauth2/authorize\?\S*permissions=(\d+)", README.read_text())
    assert links and {int(value) for value in links} == {INVITE_PERMISSIONS.value}
    assert not INVITE_PERMISSIONS.embed_links and INVITE_PERMISSIONS.send_messages_in_threads
    assert f"permissions={INVITE_PERMISSIONS.value}" in invite_link(1)


async def test_every_result_posts_with_only_the_invite_permissions(bot: BotProcess, fake: FakeDiscord) -> None:
    saved = fake.app_permissions
    fake.app_permissions = INVITE_PERMISSIONS.value
    try:
        thread = fake.thread(fake.channel_id, "fox pictures")
        private = fake.thread(fake.channel_id, "just us", private=True)
        member = fake.user("member")
        for where in (fake.channel_id, thread, private):
            asked = await fake.invoke("dream", member, prompt="a red fox", steps=2, seed=3, in_channel=where)
            await asked.wait_for(lambda reply: reply.kind == "edit" and bool(reply.files))
            result = fake.message(asked.message_id)
            job = await job_id_of(bot, result.id)
            # A button's job is a reply in the channel (or thread): Send Messages (in Threads), Attach
            # Files and Read Message History.
            await fake.click(result.id, f"dream:reroll:{job}", user=member)
            reroll = await result_replying_to(fake, result.id)
            assert reroll.channel_id == where and reroll.attachments
            # A reaction does the same.
            await fake.react(reroll.id, "🔁", user=member)
            assert (await result_replying_to(fake, reroll.id)).channel_id == where
    finally:
        fake.app_permissions = saved


async def test_without_send_messages_in_threads_a_buttons_job_is_refused_up_front(bot: BotProcess,
                                                                                    fake: FakeDiscord) -> None:
    """The permission the invite asks for is the one threads need: without it a button's job could
    not be posted, so it is not run; the member is told why, privately."""
    saved = fake.app_permissions
    fake.app_permissions = INVITE_PERMISSIONS.value & ~(1 << 38)
    try:
        thread = fake.thread(fake.channel_id, "no threads")
        member = fake.user("threaded")
        asked = await fake.invoke("dream", member, prompt="a red fox", steps=2, seed=4, in_channel=thread)
        await asked.wait_for(lambda reply: reply.kind == "edit" and bool(reply.files))  # an interaction needs none
        result = fake.message(asked.message_id)
        before = len(bot.jobs())
        click = await fake.click(result.id, f"dream:reroll:{await job_id_of(bot, result.id)}", user=member)
        refusal = await click.wait_for(lambda reply: reply.ephemeral and bool(reply.content))
        assert "I cannot post pictures here" in refusal.content
        assert len(bot.jobs()) == before
    finally:
        fake.app_permissions = saved
