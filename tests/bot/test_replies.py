"""`reply_privately`: a refusal after a deferral is only ever seen by the member, and never takes
away a message that is not the command's own placeholder."""

from __future__ import annotations

from types import SimpleNamespace

import discord
import pytest

from bot.replies import reply_privately

pytestmark = pytest.mark.asyncio


def deferred(kind: discord.InteractionResponseType) -> tuple[SimpleNamespace, list]:
    calls: list = []

    async def delete_original_response() -> None:
        calls.append("delete")

    async def send(message: str, ephemeral: bool) -> None:
        calls.append(("followup", message, ephemeral))

    interaction = SimpleNamespace(
        id=1, response=SimpleNamespace(is_done=lambda: True, type=kind),
        delete_original_response=delete_original_response, followup=SimpleNamespace(send=send))
    return interaction, calls


async def test_a_commands_public_thinking_placeholder_is_removed_first() -> None:
    interaction, calls = deferred(discord.InteractionResponseType.deferred_channel_message)
    await reply_privately(interaction, "no")  # type: ignore[arg-type]
    assert calls == ["delete", ("followup", "no", True)]


async def test_a_buttons_deferral_keeps_the_result_it_is_on() -> None:
    """A button is deferred without a placeholder: its "original response" is the result itself."""
    interaction, calls = deferred(discord.InteractionResponseType.deferred_message_update)
    await reply_privately(interaction, "the queue is full")  # type: ignore[arg-type]
    assert calls == [("followup", "the queue is full", True)]
