"""/help and `@Dreambot help`: the real bot (tiny model) against the fake Discord. The pages say this
server's limits (from the operator's settings), the prompt syntax and the buttons; the slash
command answers privately, the mention publicly; page buttons turn the page for its owner and give
anyone else their own copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, tiny_model: Path, tmp_path_factory):
    process = BotProcess(fake, tmp_path_factory.mktemp("bot"), tiny_model, MAX_STEPS="37", MAX_IMAGES="3",
                         MAX_PROMPT_LENGTH="640", MAX_JOBS_PER_MEMBER="2", COOLDOWN_SECONDS="20")
    await process.start()
    yield process
    await process.stop()


async def test_help_is_a_registered_command_with_its_pages(bot: BotProcess, fake: FakeDiscord) -> None:
    command = fake.command("help")
    assert command["description"] and [c["value"] for c in command["options"][0]["choices"]] == [0, 1, 2, 3]


async def test_help_answers_privately_with_pages(bot: BotProcess, fake: FakeDiscord) -> None:
    member = fake.user("newcomer")
    asked = await fake.invoke("help", member)
    first = await asked.wait_for(lambda reply: bool(reply.content))
    assert first.ephemeral and "page 1 of 4" in first.content
    for command in ("/dream", "/inpaint", "/outpaint", "/interpolate", "/history", "/info", "/settings", "/models",
                    "/loras", "/queue", "/forget", "/mod"):
        assert f"`{command}" in first.content, command
    message = fake.message(asked.message_id)
    assert message.custom_ids == [f"help:{page}:{member['id']}" for page in range(4)]

    turned = await fake.click(message.id, f"help:1:{member['id']}", user=member)
    options = await turned.wait_for(lambda reply: reply.kind == "callback")
    text = options.payload["data"]["content"]
    assert options.payload["type"] == 7 and "page 2 of 4" in text  # the same message, turned
    assert "`steps` 1–37" in text and "`count` 1–3" in text and "up to 640 characters" in text
    assert "at most 2 jobs of yours at a time, and one every 20 s" in text
    assert "pictures the safety filter flags are withheld" in text

    syntax = await fake.invoke("help", member, page=2)
    said = (await syntax.wait_for(lambda reply: bool(reply.content))).content
    assert "(word:1.4)" in said and "<lora:NAME:0.8>" in said and "BREAK" in said
    buttons = await fake.invoke("help", member, page=3)
    said = (await buttons.wait_for(lambda reply: bool(reply.content))).content
    assert all(word in said for word in ("Re-roll", "Vary", "Upscale", "Edit", "Delete", "Cancel", "🔁"))


async def test_mentioning_the_bot_with_help_answers_in_the_channel(bot: BotProcess, fake: FakeDiscord) -> None:
    member, other = fake.user("asker"), fake.user("passer-by")
    channel = fake.messages_in(fake.channel_id)
    seen = len(channel.replies)
    question = await fake.post(f"<@{fake.bot_user['id']}> help", member)
    answer = await channel.wait_for(lambda reply: reply.kind == "message" and "Dreambot help" in reply.content
                                    and channel.replies.index(reply) >= seen)
    assert int(answer.payload["message_reference"]["message_id"]) == question.id
    help_message = fake.message(answer.message_id)
    assert "page 1 of 4" in help_message.content and "/dream" in help_message.content

    # Someone else's press gets them their own, private copy; the asker's turns the page in place.
    copy = await fake.click(help_message.id, f"help:2:{member['id']}", user=other)
    reply = await copy.wait_for(lambda reply: reply.kind == "callback")
    assert reply.payload["type"] == 4 and reply.payload["data"]["flags"] & 64
    assert "page 3 of 4" in reply.payload["data"]["content"]
    assert "page 1 of 4" in fake.message(help_message.id).content
    turned = await fake.click(help_message.id, f"help:2:{member['id']}", user=member)
    await turned.wait_for(lambda reply: reply.kind == "callback")
    assert "page 3 of 4" in fake.message(help_message.id).content

    # A bare mention is a question too; other words get a pointer to the commands.
    seen = len(channel.replies)
    await fake.post(f"<@{fake.bot_user['id']}>", member)
    await channel.wait_for(lambda reply: "Dreambot help" in reply.content and channel.replies.index(reply) >= seen)
    seen = len(channel.replies)
    await fake.post(f"<@{fake.bot_user['id']}> draw me a cat", member)
    hint = await channel.wait_for(lambda reply: reply.kind == "message" and channel.replies.index(reply) >= seen)
    assert "/dream" in hint.content and "/help" in hint.content
