"""/models: the models this server offers; /settings: a member's own defaults (model, sampler,
steps, guidance, size or aspect, style, negative prompt), shown and changed in one private panel
whose selects and buttons (`bot.views.SettingsSelect`, `SettingsButton`) work after a restart too."""

# No `from __future__ import annotations`: discord.py reads the option annotations as objects.

from typing import TYPE_CHECKING, Optional

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.replies import UserError
from bot.views import (
    ASPECT_CHOICES,
    SAMPLER_CHOICES,
    SettingsButton,
    SettingsSelect,
    change_settings,
    model_choices,
    settings_panel,
)
from dreambot.request import MIN_SIZE, InvalidRequest

if TYPE_CHECKING:
    from bot.bot import DreamBot

CLEAR = "none"  # the value of a text option that removes the member's own setting


class Models(commands.Cog):
    def __init__(self, bot: "DreamBot") -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(SettingsSelect, SettingsButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(SettingsSelect, SettingsButton)

    @app_commands.command(name="models", description="The models you can use here: family, size, steps, loaded or not")
    async def models(self, interaction: discord.Interaction) -> None:
        place = await self.bot.moderation.place(interaction.guild_id, interaction.channel)
        holding = self.bot.queue.held_models()
        await interaction.response.send_message(render.models_list(self.bot.models.current(), holding, place),
                                                ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="settings", description="Your own defaults for model, sampler, steps, size, style…")
    @app_commands.describe(
        model="Your model (see /models)",
        sampler="Your sampler",
        steps="Your number of steps",
        guidance="Your guidance (CFG scale)",
        aspect="Your aspect ratio, at each model's native pixel count",
        width="Your width in pixels (instead of an aspect ratio)",
        height="Your height in pixels (instead of an aspect ratio)",
        style="Your style preset",
        negative=f"Your negative prompt (“{CLEAR}” removes it)",
        reset="Forget all your defaults",
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES, aspect=ASPECT_CHOICES)
    async def settings(
        self,
        interaction: discord.Interaction,
        model: Optional[str] = None,
        sampler: Optional[str] = None,
        steps: Optional[app_commands.Range[int, 1, 500]] = None,
        guidance: Optional[app_commands.Range[float, 0.0, 30.0]] = None,
        aspect: Optional[str] = None,
        width: Optional[app_commands.Range[int, MIN_SIZE, 4096]] = None,
        height: Optional[app_commands.Range[int, MIN_SIZE, 4096]] = None,
        style: Optional[str] = None,
        negative: Optional[app_commands.Range[str, 1, 6000]] = None,
        reset: Optional[bool] = None,
    ) -> None:
        changes = {name: value for name, value in (("model", model), ("sampler", sampler), ("steps", steps),
                                                  ("guidance", guidance), ("aspect", aspect), ("width", width),
                                                  ("height", height), ("style", style)) if value is not None}
        if negative is not None:
            changes["negative"] = None if negative.strip().lower() == CLEAR else negative.strip()
        if reset:
            if changes:
                raise UserError("Reset forgets all your defaults: give it alone.")
            await self.bot.store.set_member_settings(interaction.user.id, {})
        elif changes:
            try:
                await change_settings(self.bot, interaction.user.id, **changes)
            except InvalidRequest as error:
                raise UserError(str(error)) from None
        text, view = await settings_panel(self.bot, interaction.user.id, interaction.guild_id, interaction.channel)
        await interaction.response.send_message(text, view=view, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @settings.autocomplete("model")
    async def model_names(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        place = await self.bot.moderation.place(interaction.guild_id, interaction.channel)
        return model_choices(self.bot.models.current(), typed, place.allows)  # what this channel shows

    @settings.autocomplete("style")
    async def style_names(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=name, value=name) for name in self.bot.styles
                if typed.strip().lower() in name.lower()][:25]


async def setup(bot: "DreamBot") -> None:
    await bot.add_cog(Models(bot))
