"""/mod: what a server's moderators control. The safety filter per server and per channel, the
prompt filter, the mod-log channel, bans, a member's history and the audit trail. Discord shows
/mod only to members with Manage Server (server admins can allow a role under Integrations), and
every call is checked again here: Manage Server, or the moderator role set with /mod role."""

# No `from __future__ import annotations`: discord.py reads the option annotations as objects.

import io
import logging
import time
from typing import TYPE_CHECKING, Optional, Union

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.moderation import FilterMode, age_restricted, configured_mode, effective_mode, is_moderator
from bot.prompt_filter import InvalidTerm, check_pattern, check_word
from bot.replies import UserError
from bot.store import GuildSettings
from bot.views import adapters_page, history_page, model_choices
from dreambot.request import SAFETY_SCALES

if TYPE_CHECKING:
    from bot.bot import DreamBot

log = logging.getLogger(__name__)

Channel = Union[discord.TextChannel, discord.VoiceChannel, discord.ForumChannel, discord.StageChannel]
MAX_TERMS = 500  # per server: the list must stay readable, and every prompt is checked against it


class ModeratorOnly(app_commands.CheckFailure):
    """The caller may not use this (sub)command."""


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Mod(commands.GroupCog, group_name="mod", group_description="Moderate Dreambot in this server"):
    def __init__(self, bot: "DreamBot") -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Every /mod call, whatever Discord showed: a raw client can send any command."""
        if interaction.guild_id is None:
            raise ModeratorOnly("Moderator commands work in a server, not in direct messages.")
        if not is_moderator(interaction, await self.bot.store.guild_settings(interaction.guild_id)):
            raise ModeratorOnly("Only members with the Manage Server permission or this server's moderator role "
                                "can use /mod.")
        return True

    async def announce(self, interaction: discord.Interaction, what: str, old, new) -> None:
        await self.bot.modlog.post(interaction.guild_id, render.setting_changed(interaction.user.id, what, old, new))

    # -- the safety filter ---------------------------------------------------------------------

    @app_commands.command(name="filter", description="Show or set what happens to images the safety filter flags")
    @app_commands.describe(
        mode="block, spoiler or off; spoiler and off only take effect in age-restricted channels",
        channel="Set this channel's own mode instead of the server's (mode default: follow the server)",
        threshold="Flag images scoring above this; lower is stricter (server-wide)",
    )
    @app_commands.choices(mode=[
        app_commands.Choice(name="block: replace flagged images by a notice", value="block"),
        app_commands.Choice(name="spoiler: post them behind a spoiler (age-restricted channels)", value="spoiler"),
        app_commands.Choice(name="off: post them as is (age-restricted channels)", value="off"),
        app_commands.Choice(name="default: the channel follows the server's mode", value="default"),
    ])
    async def filter(self, interaction: discord.Interaction, mode: Optional[str] = None,
                     channel: Optional[Channel] = None, threshold: Optional[float] = None) -> None:
        store, guild_id, actor = self.bot.store, interaction.guild_id, interaction.user.id
        if mode is None and threshold is None:
            await self.reply(interaction, self.describe(await store.guild_settings(guild_id), channel))
            return
        # Every check before any change: a refused part leaves everything as it was.
        if mode is not None and mode not in (*FilterMode, "default"):
            raise UserError(f"Unknown mode {mode!r}; choose block, spoiler or off.")
        if mode == "default" and channel is None:
            raise UserError("`default` makes a channel follow the server's mode; give the channel.")
        if threshold is not None and channel is not None:
            raise UserError("The threshold applies to the whole server; leave `channel` out to set it.")
        if mode in ("spoiler", "off") and channel is not None and not age_restricted(channel):
            raise UserError(
                f"{channel.mention} is not age-restricted, and Discord allows flagged images only in "
                f"age-restricted channels, so there they are always blocked. Mark the channel age-restricted "
                f"(Edit Channel → Age-Restricted Channel) first, then set its mode again.")
        answers = []
        if threshold is not None:
            answers.append(await self.set_threshold(interaction, threshold))
        if mode is not None and channel is None:
            old = await store.set_guild_setting(guild_id, "nsfw_mode", mode, actor_id=actor)
            await self.announce(interaction, "the server's safety filter mode", old, mode)
            answer = f"The server's safety filter mode is now **{mode}**: {FilterMode(mode).describe}."
            if mode != "block":
                answer += (" Discord allows that only in age-restricted channels: in every other channel "
                           "flagged images are still blocked.")
            answers.append(answer)
        elif mode is not None:
            answers.append(await self.set_channel_mode(interaction, channel, None if mode == "default" else mode))
        await self.reply(interaction, "\n".join(answers))

    async def set_threshold(self, interaction: discord.Interaction, threshold: float) -> str:
        info = self.bot.engine.info
        if info is None:
            raise UserError("The image engine is still starting, so its safety classifier is not known yet; "
                            "try again in a minute.")
        scale = SAFETY_SCALES[info.safety_checker]
        default = scale.default
        if not scale.allows(threshold):
            raise UserError(f"The threshold must be between {scale.lowest:g} and {scale.highest:g} for this bot's "
                            f"safety classifier ({info.safety_checker}, default {default:g}; lower is stricter).")
        old = await self.bot.store.set_guild_setting(interaction.guild_id, "nsfw_threshold", threshold,
                                                     actor_id=interaction.user.id)
        await self.announce(interaction, "the safety filter threshold", default if old is None else old, threshold)
        return f"The safety filter now flags images scoring above **{threshold:g}** (default {default:g})."

    async def set_channel_mode(self, interaction: discord.Interaction, channel, mode: Optional[str]) -> str:
        old = await self.bot.store.set_channel_mode(interaction.guild_id, channel.id, mode,
                                                    actor_id=interaction.user.id)
        await self.announce(interaction, f"the safety filter mode of {channel.mention}", old or "(the server's)",
                            mode or "(the server's)")
        if mode is None:
            return f"{channel.mention} now follows the server's safety filter mode."
        return f"The safety filter mode of {channel.mention} is now **{mode}**: {FilterMode(mode).describe}."

    def describe(self, settings: GuildSettings, channel) -> str:
        info = self.bot.engine.info
        server_mode = FilterMode(settings.nsfw_mode)
        lines = [f"**Safety filter** · server mode: **{server_mode}** ({server_mode.describe})"]
        if info is not None:
            scale = SAFETY_SCALES[info.safety_checker]
            now = scale.default if settings.nsfw_threshold is None else settings.nsfw_threshold
            lines.append(f"Threshold: {now:g}{' (default)' if settings.nsfw_threshold is None else ''} · "
                         f"classifier {info.safety_checker}, allowed {scale.lowest:g} to {scale.highest:g}, "
                         "lower is stricter")
        elif settings.nsfw_threshold is not None:
            lines.append(f"Threshold: {settings.nsfw_threshold:g}")
        for channel_id, mode in sorted(settings.channel_modes.items()):
            lines.append(f"<#{channel_id}>: **{mode}**")
        if channel is not None:
            configured = configured_mode(settings, channel)
            applied = effective_mode(configured, age_restricted(channel))
            why = "" if applied == configured else " (not age-restricted, so flagged images are blocked)"
            lines.append(f"In {channel.mention}: **{applied}**{why}")
        lines.append("Spoiler and off only take effect in age-restricted channels; elsewhere flagged images are "
                     "always blocked.")
        lines.append(f"Mod-log: {f'<#{settings.modlog_channel_id}>' if settings.modlog_channel_id else 'not set'}"
                     f" · moderator role: "
                     f"{f'<@&{settings.moderator_role_id}>' if settings.moderator_role_id else 'not set'}")
        text = "\n".join(lines)
        if len(text) > render.MESSAGE_LIMIT:  # hundreds of channel overrides: keep the head and the tail
            overrides = len(settings.channel_modes)
            text = "\n".join([*lines[:2], f"({overrides} channels have their own mode; too many to list here)",
                              *lines[-2:]])
        return text

    # -- the prompt filter ---------------------------------------------------------------------

    @app_commands.command(name="words", description="Add, remove or list the words and patterns refused in prompts")
    @app_commands.describe(action="add, remove or list", word="The word or words (whole words, any case or accents)",
                           pattern="Treat `word` as a regular expression (RE2 syntax) instead")
    @app_commands.choices(action=[app_commands.Choice(name=name, value=name) for name in ("add", "remove", "list")])
    async def words(self, interaction: discord.Interaction, action: str, word: Optional[str] = None,
                    pattern: Optional[bool] = None) -> None:
        store, guild_id = self.bot.store, interaction.guild_id
        if action == "list":
            terms = await store.blocked_terms(guild_id)
            await self.send_list(interaction, terms)
            return
        if action not in ("add", "remove"):
            raise UserError(f"Unknown action {action!r}; choose add, remove or list.")
        if not word:
            raise UserError(f"Give the word to {action}.")
        kind = "pattern" if pattern else "word"
        try:
            term = check_pattern(word) if pattern else check_word(word)
        except InvalidTerm as error:
            raise UserError(str(error)) from None
        shown = f"`{term.replace('`', 'ˋ')}`"
        if action == "add":
            if len(await store.blocked_terms(guild_id)) >= MAX_TERMS:
                raise UserError(f"This server already blocks {MAX_TERMS} words and patterns; remove some first, "
                                    "or combine them into a pattern.")
            added = await store.add_blocked_term(guild_id, kind, term, actor_id=interaction.user.id)
            answer = f"Prompts with the {kind} {shown} are now refused." if added else \
                f"The {kind} {shown} was already blocked."
        else:
            removed = await store.remove_blocked_term(guild_id, kind, term, actor_id=interaction.user.id)
            answer = f"The {kind} {shown} is no longer blocked." if removed else \
                f"The {kind} {shown} is not on this server's list (see /mod words list)."
            added = removed
        if added:
            self.bot.moderation.terms_changed(guild_id)
            await self.announce(interaction, f"the prompt filter ({kind})",
                                None if action == "add" else shown, shown if action == "add" else None)
        await self.reply(interaction, answer)

    async def send_list(self, interaction: discord.Interaction, terms: list[tuple[str, str]]) -> None:
        if not terms:
            await self.reply(interaction, "No words or patterns are blocked in this server.")
            return
        words = [term for kind, term in terms if kind == "word"]
        patterns = [term for kind, term in terms if kind == "pattern"]
        text = "\n".join([f"**Blocked words** ({len(words)}): " +
                          (", ".join(f"`{w.replace('`', 'ˋ')}`" for w in words) or "none"),
                          f"**Blocked patterns** ({len(patterns)}): " +
                          (" ".join(f"`{p.replace('`', 'ˋ')}`" for p in patterns) or "none")])
        if len(text) <= render.MESSAGE_LIMIT:
            await self.reply(interaction, text)
            return
        listing = "\n".join([*(f"word\t{w}" for w in words), *(f"pattern\t{p}" for p in patterns)])
        await interaction.response.send_message(
            f"This server blocks {len(words)} words and {len(patterns)} patterns (the list is attached).",
            file=discord.File(io.BytesIO(listing.encode()), filename="blocked-terms.txt"), ephemeral=True)

    # -- LoRAs and embeddings -------------------------------------------------------------------

    @app_commands.command(name="adapters",
                          description="Turn LoRAs and embeddings off or on in this server, or list them")
    @app_commands.describe(action="off, on or list", adapter="The LoRA or embedding (as /loras names it)")
    @app_commands.choices(action=[app_commands.Choice(name=name, value=name) for name in ("off", "on", "list")])
    async def adapters(self, interaction: discord.Interaction, action: str, adapter: Optional[str] = None) -> None:
        store, guild_id = self.bot.store, interaction.guild_id
        if action == "list":
            text, view = await adapters_page(self.bot.moderation, store, guild_id, 0)
            await interaction.response.send_message(text, view=view, ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())
            return
        if action not in ("off", "on"):
            raise UserError(f"Unknown action {action!r}; choose off, on or list.")
        if not adapter:
            raise UserError(f"Give the name of the LoRA or embedding to turn {action}.")
        found = self.find_adapter(adapter)
        label = f"the {'LoRA' if found.kind == 'lora' else 'embedding'} **{render.escape(found.name)}**"
        changed = await store.set_adapter_disabled(guild_id, found.kind, found.name, action == "off",
                                                   actor_id=interaction.user.id)
        if changed:
            await self.announce(interaction, label.replace("**", ""), "on" if action == "off" else "off", action)
        if action == "off":
            answer = (f"Prompts that use {label} are now refused in this server; queued jobs that use it will not "
                      "run." if changed else f"{label.capitalize()} was already off in this server.")
        else:
            answer = f"Members can use {label} again." if changed else f"{label.capitalize()} was not off."
        await self.reply(interaction, answer)

    def find_adapter(self, name: str):
        """The installed LoRA or embedding a moderator named: `kind:name` as the suggestions give it, or a
        name that only one of them has (any case)."""
        catalogue = self.bot.moderation.adapters()
        kind, _, bare = name.partition(":") if name.startswith(("lora:", "embedding:")) else ("", "", name)
        found = [adapter for adapter in catalogue.all()
                 if adapter.name.lower() == bare.strip().lower() and kind in ("", adapter.kind)]
        if not found:
            raise UserError(f"No LoRA or embedding named “{render.escape(bare.strip())}” is installed; see /loras.")
        if len(found) > 1:
            raise UserError(f"A LoRA and an embedding are both named “{render.escape(found[0].name)}”: pick one "
                            "from the suggestions (lora:… or embedding:…).")
        return found[0]

    @adapters.autocomplete("adapter")
    async def adapter_names(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        typed = typed.strip().lower()
        off = await self.bot.moderation.turned_off(interaction.guild_id)
        choices = []
        for adapter in self.bot.moderation.adapters().all():
            if typed and typed not in adapter.name.lower() or len(adapter.name) > 80:
                continue
            state = "off" if (adapter.kind, adapter.name.lower()) in off else "on"
            kind = "LoRA" if adapter.kind == "lora" else "embedding"
            choices.append(app_commands.Choice(name=f"{adapter.name} ({kind}, {state})",
                                               value=f"{adapter.kind}:{adapter.name}"))
        return choices[:25]

    # -- models --------------------------------------------------------------------------------

    @app_commands.command(name="model", description="Set the default model of this server or a channel, or which "
                                                    "models a channel allows")
    @app_commands.describe(
        action="default: set (or, without a model, clear) the default; allow / disallow: a model in a channel; "
               "allow-all: lift a channel's restriction; list",
        model="The model (see /models)",
        channel="The channel (default: the server for default, this channel for allow and disallow)",
    )
    @app_commands.choices(action=[app_commands.Choice(name=name, value=name)
                                  for name in ("default", "allow", "disallow", "allow-all", "list")])
    async def model(self, interaction: discord.Interaction, action: str, model: Optional[str] = None,
                    channel: Optional[Channel] = None) -> None:
        store, guild_id, actor = self.bot.store, interaction.guild_id, interaction.user.id
        catalogue = self.bot.models.current()
        found = catalogue.get(model) if model else None
        if model and found is None:
            raise UserError(f"There is no model named “{render.escape(model[:100])}” ({catalogue.offered()}).")
        if action == "list":
            await self.reply(interaction, render.clip(render.model_settings(
                await store.guild_settings(guild_id), await store.channel_models(guild_id), catalogue)))
            return
        if action == "default":
            name = found.name if found else None
            if channel is None:
                old = await store.set_guild_setting(guild_id, "model", name, actor_id=actor)
                where = "this server"
            else:
                allowed = (await store.channel_models(guild_id)).get(channel.id)
                if name and allowed and allowed.allowed is not None and name not in allowed.allowed:
                    raise UserError(f"{channel.mention} does not allow {name}; allow it there first.")
                old = (await store.set_channel_models(guild_id, channel.id, model=name, actor_id=actor)).model
                where = channel.mention
            if old != name:
                await self.announce(interaction, f"the default model of {where}", old, name)
            await self.reply(interaction, f"The default model of {where} is now **{name}**." if name else
                             f"{where[0].upper() + where[1:]} has no default model of its own now.")
            return
        if action not in ("allow", "disallow", "allow-all"):
            raise UserError(f"Unknown action {action!r}; choose default, allow, disallow, allow-all or list.")
        target = channel or interaction.channel
        target_id = getattr(target, "parent_id", None) if isinstance(target, discord.Thread) else target.id
        current = (await store.channel_models(guild_id)).get(target_id)
        allowed = current.allowed if current else None
        if action == "allow-all":
            new: tuple[str, ...] | None = None
        else:
            if found is None:
                raise UserError(f"Give the model to {action}.")
            names = list(allowed if allowed is not None else ([] if action == "allow" else
                                                                [m.name for m in catalogue]))
            if action == "allow" and found.name not in names:
                names.append(found.name)
            if action == "disallow":
                names = [name for name in names if name.lower() != found.name.lower()]
            new = tuple(names)
        model_default = current.model if current else None
        if new is not None and model_default and model_default not in new:
            raise UserError(f"<#{target_id}>'s default model is {model_default}: change it first.")
        old = await store.set_channel_models(guild_id, target_id, allowed=new, actor_id=actor)
        if old.allowed != new:
            await self.announce(interaction, f"the models allowed in <#{target_id}>",
                                "every model" if old.allowed is None else ", ".join(old.allowed) or "none",
                                "every model" if new is None else ", ".join(new) or "none")
        later = (" Models added to the bot later are not allowed there until you allow them."
                 if action == "disallow" and allowed is None else "")
        await self.reply(interaction, render.clip(f"<#{target_id}> now allows "
                                                  f"{'every model' if new is None else ', '.join(new) or 'no model'}."
                                                  + later))

    @model.autocomplete("model")
    async def model_names(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        return model_choices(self.bot.models.current(), typed, lambda name: True)

    # -- the mod-log, the moderator role, bans -------------------------------------------------

    @app_commands.command(name="modlog", description="Choose the channel where Dreambot reports to moderators")
    @app_commands.describe(channel="Where refused prompts, flagged images and setting changes are reported",
                           off="Stop reporting")
    async def modlog(self, interaction: discord.Interaction, channel: Optional[discord.TextChannel] = None,
                     off: Optional[bool] = None) -> None:
        store, guild_id = self.bot.store, interaction.guild_id
        settings = await store.guild_settings(guild_id)
        if channel is None and not off:
            where = f"<#{settings.modlog_channel_id}>" if settings.modlog_channel_id else "not set"
            await self.reply(interaction, f"Mod-log: {where}. Give a channel to set it, or `off` to stop.")
            return
        if channel is not None and off:
            raise UserError("Give a channel or `off`, not both.")
        old = settings.modlog_channel_id
        new = channel.id if channel is not None else None
        change = render.setting_changed(interaction.user.id, "the mod-log channel", old and f"<#{old}>",
                                        new and f"<#{new}>")
        if channel is None:  # said in the channel that stops receiving reports, before it stops
            await self.bot.modlog.post(guild_id, change)
        else:
            # Posting is the only sure test that the bot may post there (overwrites included).
            try:
                await channel.send(change, allowed_mentions=discord.AllowedMentions.none())
            except discord.HTTPException:
                raise UserError(f"Dreambot cannot post in {channel.mention}; give it View Channel and Send "
                                "Messages there first.") from None
        await store.set_guild_setting(guild_id, "modlog_channel_id", new, actor_id=interaction.user.id)
        await self.reply(interaction, f"Dreambot now reports to {channel.mention}." if channel else
                         "Dreambot no longer reports to a mod-log channel.")

    @app_commands.command(name="role", description="Choose the role whose members may use /mod (Manage Server)")
    @app_commands.describe(role="Members with this role may use /mod", clear="No moderator role")
    async def role(self, interaction: discord.Interaction, role: Optional[discord.Role] = None,
                   clear: Optional[bool] = None) -> None:
        store, guild_id = self.bot.store, interaction.guild_id
        settings = await store.guild_settings(guild_id)
        if role is None and not clear:
            current = f"<@&{settings.moderator_role_id}>" if settings.moderator_role_id else "not set"
            await self.reply(interaction, f"Moderator role: {current}.")
            return
        if not interaction.permissions.manage_guild:
            raise ModeratorOnly("Only members with the Manage Server permission can choose the moderator role.")
        if role is not None and clear:
            raise UserError("Give a role or `clear`, not both.")
        if role is not None and (role.is_default() or role.managed):
            raise UserError(f"{role.mention} cannot be the moderator role: choose a role you give to moderators.")
        new = role.id if role is not None else None
        old = await store.set_guild_setting(guild_id, "moderator_role_id", new, actor_id=interaction.user.id)
        await self.announce(interaction, "the moderator role", old and f"<@&{old}>", new and f"<@&{new}>")
        await self.reply(interaction, f"Members with {role.mention} can now use /mod." if role else
                         "There is no moderator role now; /mod needs Manage Server.")

    @app_commands.command(name="ban", description="Bar a member from using Dreambot in this server")
    @app_commands.describe(member="Who to bar", reason="Why (kept in the audit log)")
    async def ban(self, interaction: discord.Interaction, member: discord.User,
                  reason: Optional[app_commands.Range[str, 1, 200]] = None) -> None:
        if member.id == interaction.user.id:
            raise UserError("You cannot bar yourself.")
        if member.bot:
            raise UserError("Bots do not use Dreambot; there is nothing to bar.")
        if isinstance(member, discord.Member):
            settings = await self.bot.store.guild_settings(interaction.guild_id)
            if member.guild_permissions.manage_guild:
                raise UserError(f"{member.mention} has Manage Server, so they can always use Dreambot here.")
            moderator = settings.moderator_role_id is not None and member.get_role(settings.moderator_role_id)
            if moderator and not interaction.permissions.manage_guild:
                raise UserError("Only members with Manage Server can bar a moderator.")
        banned = await self.bot.store.ban(interaction.guild_id, member.id, actor_id=interaction.user.id,
                                          reason=reason or "")
        # Their jobs in this server stop too (each job is checked again as it starts, as well).
        stopped = 0
        for job_id in await self.bot.store.queued_jobs_of(member.id, interaction.guild_id):
            stopped += await self.bot.queue.cancel(job_id, interaction.user.id)
        if banned:
            await self.bot.modlog.post(interaction.guild_id,
                              f"⛔ <@{interaction.user.id}> barred {member.mention} from Dreambot"
                              + (f": {render.escape(reason)}" if reason else "."))
        stopped_text = f" {stopped} of their jobs {'was' if stopped == 1 else 'were'} cancelled." if stopped else ""
        await self.reply(interaction, f"{member.mention} can no longer use Dreambot in this server.{stopped_text}"
                         if banned else f"{member.mention} was already barred.{stopped_text}")

    @app_commands.command(name="unban", description="Let a barred member use Dreambot in this server again")
    @app_commands.describe(member="Who to let back")
    async def unban(self, interaction: discord.Interaction, member: discord.User) -> None:
        unbanned = await self.bot.store.unban(interaction.guild_id, member.id, actor_id=interaction.user.id)
        if unbanned:
            await self.bot.modlog.post(interaction.guild_id,
                              f"✅ <@{interaction.user.id}> let {member.mention} use Dreambot again.")
        await self.reply(interaction, f"{member.mention} can use Dreambot in this server again." if unbanned else
                         f"{member.mention} was not barred.")

    # -- what happened -------------------------------------------------------------------------

    @app_commands.command(name="history", description="A member's Dreambot jobs in this server")
    @app_commands.describe(member="Whose jobs")
    async def history(self, interaction: discord.Interaction, member: discord.User) -> None:
        text, view = await history_page(self.bot.store, member.id, interaction.guild_id, 0,
                                        whose=f"{member.mention}'s")
        await interaction.response.send_message(text, view=view, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="audit", description="The latest moderation changes in this server")
    async def audit(self, interaction: discord.Interaction) -> None:
        rows = await self.bot.store.audit_log(interaction.guild_id, limit=20)
        await self.reply(interaction, render.audit(rows))

    @app_commands.command(name="workers", description="The GPU workers on other hosts: device, models, busy or idle")
    async def workers(self, interaction: discord.Interaction) -> None:
        hub = self.bot.queue.hub
        workers = list(hub.workers.values()) if hub is not None else []
        done = await self.bot.store.jobs_by_worker() if hub is not None else {}
        await self.reply(interaction, render.workers_list(workers, done, time.monotonic(), remote=hub is not None,
                                                          lease_seconds=hub.lease_seconds if hub else 0))

    async def reply(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: "DreamBot") -> None:
    await bot.add_cog(Mod(bot))
