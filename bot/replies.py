"""Answers to a member's interaction that only they see, and the error that carries one."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

log = logging.getLogger(__name__)


class UserError(app_commands.AppCommandError):
    """A member's mistake in a command; the message says what to change."""


async def reply_privately(interaction: discord.Interaction, message: str) -> None:
    """An ephemeral answer whether or not the interaction was already deferred publicly."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)
            return
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            # A public "thinking…" placeholder would show the refusal to everyone: remove it first.
            # (A button's deferral has no placeholder: its "original response" is the message it is
            # on, a result that must stay.)
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
        await interaction.followup.send(message, ephemeral=True)
    except discord.HTTPException:
        log.exception("could not answer interaction %s", interaction.id)
