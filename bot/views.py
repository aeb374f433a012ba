"""Every button Dreambot posts, the views that hold them, and the Edit form. Each button is a `DynamicItem`
whose custom id carries what it acts on (a job and picture, whose history and which page), so it
works on every past message, after a restart too, with no state in memory. A button reaches the
behaviour it starts through the services on the client (`Host`), never through a cog."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict
from typing import Protocol, cast

import discord

from bot import help, render
from bot.images import ImageStore
from bot.moderation import FilterMode, Moderation, is_moderator
from bot.replies import reply_privately
from bot.requests import MemberSettings, checked_settings, first, pick_model, size_of, usable
from bot.store import Store
from dreambot.models import ASPECTS, Catalogue, Model, Place, Watched, aspect_size
from dreambot.request import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLERS,
    GenerateRequest,
    InvalidRequest,
    Mode,
)
from dreambot.settings import BotSettings
from dreambot.wildcards import names as wildcard_names
from dreambot.wire import GenerateResult, ImageResult

log = logging.getLogger(__name__)

LOOKS = {
    "reroll": ("Re-roll", "🔁", discord.ButtonStyle.secondary),
    "edit": ("Edit", "🖋️", discord.ButtonStyle.secondary),  # the job again with prompts and seed changed (a form)
    "vary": ("Vary", "🔀", discord.ButtonStyle.secondary),
    "upscale": ("Upscale", "⬆️", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.secondary),  # on the notice of a queued or running job
    # Outpainting by one quarter of the picture on that side ("pan", as Midjourney calls it).
    "left": ("", "⬅️", discord.ButtonStyle.secondary),
    "right": ("", "➡️", discord.ButtonStyle.secondary),
    "up": ("", "🔼", discord.ButtonStyle.secondary),
    "down": ("", "🔽", discord.ButtonStyle.secondary),
}
ADAPTERS_PAGE_SIZE = 8  # /loras entries per page, at most
ADAPTERS_PAGE_CHARACTERS = render.MESSAGE_LIMIT - 150  # and what they may take of a message, at most
PAGE_SIZE = 4  # history entries per page: four of the longest fit in one message (tests/bot/test_history.py)
EVERYWHERE = 0  # the "server" of a member's own history: every server and direct message


class ResultActions(Protocol):
    """What the buttons on a result, and its Edit form, do (`bot.actions.Actions`)."""

    async def act(self, action: str, job_id: int, index: int | None, *, member: discord.abc.User,
                  can_manage: bool, channel, guild_id: int | None, message,
                  interaction: discord.Interaction | None = None) -> str | None: ...

    async def edit(self, job_id: int, prompt: str, negative_prompt: str, seed: str, *, member: discord.abc.User,
                   channel, guild_id: int | None, message, interaction: discord.Interaction) -> str | None: ...


class Host(Protocol):
    """The services a button reaches through `interaction.client` (the bot)."""

    store: Store
    images: ImageStore
    actions: ResultActions
    moderation: Moderation


def host(interaction: discord.Interaction) -> Host:
    return cast(Host, interaction.client)


# -- a result's buttons ------------------------------------------------------------------------


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"dream:(?P<action>reroll|edit|vary|upscale|delete|cancel|left|right|up|down):(?P<job>[0-9]{1,20})"
             r"(?::(?P<index>[0-9]{1,2}))?",
):
    """A button on a result message (or on a queued job's notice: Cancel)."""

    def __init__(self, action: str, job_id: int, index: int | None = None, *, label: str | None = None,
                 row: int | None = None) -> None:
        name, emoji, style = LOOKS[action]
        custom_id = f"dream:{action}:{job_id}" + (f":{index}" if index is not None else "")
        super().__init__(discord.ui.Button(label=label or name or None, emoji=None if label else emoji, style=style,
                                           custom_id=custom_id, row=row))
        self.action, self.job_id, self.index = action, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ResultButton:
        index = match["index"]
        return cls(match["action"], int(match["job"]), int(index) if index is not None else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            refusal = await host(interaction).actions.act(
                self.action, self.job_id, self.index, member=interaction.user,
                can_manage=interaction.permissions.manage_messages, channel=interaction.channel,
                guild_id=interaction.guild_id, message=interaction.message, interaction=interaction)
        except Exception:
            # discord.py only logs what a button raises: the member would see "interaction failed".
            log.exception("%s button on job %s failed", self.action, self.job_id)
            refusal = f"😿 Sorry, that did not work (job {self.job_id}). It has been logged; please try again."
        if refusal is not None:
            await reply_privately(interaction, refusal)


TEXT_INPUT_LIMIT = 4000  # Discord's most for one text input
SEED_TYPED_LIMIT = 20  # longer than any seed, so that a wrong one gets our answer, not the form's


class EditModal(discord.ui.Modal):
    """The Edit button's form: the job's prompt, negative prompt and seed, pre-filled, to run the job
    again with them changed (Midjourney's Remix). Its custom id carries the job id, and every submit
    is handled from that id (`submitted`), never by the object shown: discord.py keeps a modal only
    in memory, and a member may submit the form after the bot restarted."""

    TEMPLATE = re.compile(r"dream:edited:(?P<job>[0-9]{1,20})")

    def __init__(self, job_id: int, prompt: str, negative_prompt: str, seed: int | None, *, longest: int) -> None:
        """`longest`: the longest prompt this server takes (a form holds at most TEXT_INPUT_LIMIT)."""
        super().__init__(title=f"Edit job {job_id}", custom_id=f"dream:edited:{job_id}")
        # A job stored before the limit was lowered still opens: its prompt is refused only if it is sent so.
        most = min(TEXT_INPUT_LIMIT, max(longest, len(prompt), len(negative_prompt)))
        self.add_item(discord.ui.TextInput(label="Prompt", custom_id="prompt", style=discord.TextStyle.paragraph,
                                           default=prompt, max_length=most))
        self.add_item(discord.ui.TextInput(label="Negative prompt", custom_id="negative",
                                           style=discord.TextStyle.paragraph, default=negative_prompt or None,
                                           required=False, max_length=most, placeholder="What to leave out"))
        self.add_item(discord.ui.TextInput(label="Seed", custom_id="seed", style=discord.TextStyle.short,
                                           default=None if seed is None else str(seed), required=False,
                                           max_length=SEED_TYPED_LIMIT, placeholder="Empty: a new random seed"))

    async def show(self, interaction: discord.Interaction) -> None:
        # Stopped first, so discord.py does not keep it waiting in memory: `submitted` handles every
        # submit alike, before a restart and after.
        self.stop()
        await interaction.response.send_modal(self)

    @classmethod
    async def submitted(cls, interaction: discord.Interaction) -> None:
        """Run a submitted Edit form (`Actions.edit` checks everything again); other modals are not ours."""
        data = cast(dict, interaction.data or {})
        match = cls.TEMPLATE.fullmatch(str(data.get("custom_id", "")))
        if interaction.type is not discord.InteractionType.modal_submit or match is None:
            return
        job_id = int(match["job"])
        try:
            typed = typed_values(data.get("components") or [])
            refusal = await host(interaction).actions.edit(
                job_id, typed.get("prompt", ""), typed.get("negative", ""), typed.get("seed", ""),
                member=interaction.user, channel=interaction.channel, guild_id=interaction.guild_id,
                message=interaction.message, interaction=interaction)
        except Exception:
            log.exception("edit form of job %s failed", job_id)
            refusal = f"😿 Sorry, that did not work (job {job_id}). It has been logged; please try again."
        if refusal is not None:
            await reply_privately(interaction, refusal)


def typed_values(components: list) -> dict[str, str]:
    """A submitted modal's text inputs by custom id, from rows (and Discord's newer labels) as sent."""
    values: dict[str, str] = {}
    for component in components:
        if "components" in component:
            values.update(typed_values(component["components"]))
        elif "component" in component:
            values.update(typed_values([component["component"]]))
        elif "custom_id" in component and isinstance(component.get("value"), str):
            values[component["custom_id"]] = component["value"]
    return values


def on_its_result(message, job_id: int) -> bool:
    """Whether `message` is a result (or notice) whose own buttons act on `job_id`."""
    for row in getattr(message, "components", None) or ():
        for item in getattr(row, "children", ()):
            match = ResultButton.__discord_ui_compiled_template__.fullmatch(getattr(item, "custom_id", None) or "")
            if match and int(match["job"]) == job_id:
                return True
    return False


def shown_under(image: ImageResult, nsfw_mode: FilterMode | str) -> bool:
    """Whether an image is posted under the channel's safety filter mode (and, to be sure, whether
    the engine sent its bytes: it keeps a flagged image's unless the request allowed it)."""
    return bool(image.data) and (not image.nsfw_content_detected or nsfw_mode != FilterMode.BLOCK)


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton("cancel", job_id))
    return view


def result_view(job_id: int, request: GenerateRequest, result: GenerateResult,
                nsfw_mode: FilterMode | str = FilterMode.BLOCK, *, reusable: bool = True) -> discord.ui.View:
    """Re-roll, Edit and Delete for every result; Vary and Upscale for each picture shown (V1-V4 and
    U1-U4 when there are several, as members know them from Midjourney); a single picture also
    gets ⬅️ ➡️ 🔼 🔽 to extend it that way. Pictures that could not be stored (`reusable` False)
    get only Re-roll, Edit and Delete."""
    view = discord.ui.View(timeout=None)
    shown = [index for index, image in enumerate(result.images) if shown_under(image, nsfw_mode)]
    if request.mode is Mode.INTERPOLATE or not reusable:
        rows = 0
    elif len(result.images) == 1:
        view.add_item(ResultButton("vary", job_id, 0, row=0))
        view.add_item(ResultButton("upscale", job_id, 0, row=0))
        if shown:
            for side in ("left", "right", "up", "down"):  # extend the picture that way (outpainting)
                view.add_item(ResultButton(side, job_id, 0, row=1))
        rows = 0
    else:
        # Discord puts at most 5 buttons in a row: V1-V5 | V6-V10 | U1-U5 | U6-U10 | the rest.
        per_row = 5
        v_rows = (len(shown) + per_row - 1) // per_row
        for position, index in enumerate(shown):
            view.add_item(ResultButton("vary", job_id, index, label=f"V{index + 1}", row=position // per_row))
            view.add_item(ResultButton("upscale", job_id, index, label=f"U{index + 1}",
                                       row=v_rows + position // per_row))
        rows = 2 * v_rows
    view.add_item(ResultButton("reroll", job_id, row=rows))
    view.add_item(ResultButton("edit", job_id, row=rows))
    view.add_item(ResultButton("delete", job_id, row=rows))
    return view


# -- history pages and /forget -----------------------------------------------------------------


async def history_page(store: Store, user_id: int, guild_id: int, page: int, *, whose: str
                       ) -> tuple[str, discord.ui.View]:
    """Page `page` (0-based) of a member's jobs, in one server or (EVERYWHERE) all of them, and its buttons."""
    jobs, total = await store.user_jobs(user_id, guild_id=guild_id or None, offset=page * PAGE_SIZE,
                                        limit=PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    if page >= pages and total:  # the history shrank (a /forget meanwhile): show the last page
        return await history_page(store, user_id, guild_id, pages - 1, whose=whose)
    text = render.history(jobs, total=total, page=page, pages=pages, whose=whose)
    view = discord.ui.View(timeout=None)
    if pages > 1:
        view.add_item(HistoryButton(user_id, guild_id, page - 1, "previous", disabled=page == 0))
        view.add_item(HistoryButton(user_id, guild_id, page + 1, "next", disabled=page + 1 >= pages))
    return text, view


class HistoryButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"history:(?P<user>[0-9]{1,20}):(?P<guild>[0-9]{1,20}):(?P<page>-?[0-9]{1,6}):(?P<way>previous|next)",
):
    def __init__(self, user_id: int, guild_id: int, page: int, way: str, *, disabled: bool = False) -> None:
        label, emoji = ("Newer", "◀️") if way == "previous" else ("Older", "▶️")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=discord.ButtonStyle.secondary,
                                           custom_id=f"history:{user_id}:{guild_id}:{page}:{way}", disabled=disabled))
        self.user_id, self.guild_id, self.page = user_id, guild_id, page

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> HistoryButton:
        return cls(int(match["user"]), int(match["guild"]), int(match["page"]), match["way"])

    async def callback(self, interaction: discord.Interaction) -> None:
        store = host(interaction).store
        if self.guild_id == EVERYWHERE:
            allowed, whose = interaction.user.id == self.user_id, "Your"
        else:
            settings = await store.guild_settings(self.guild_id)
            allowed = interaction.guild_id == self.guild_id and is_moderator(interaction, settings)
            whose = f"<@{self.user_id}>'s"
        if not allowed:
            await reply_privately(interaction, "These pages are someone else's; use /history for your own.")
            return
        text, view = await history_page(store, self.user_id, self.guild_id, max(self.page, 0), whose=whose)
        await interaction.response.edit_message(content=text, view=view,
                                                allowed_mentions=discord.AllowedMentions.none())


async def adapters_page(moderation: Moderation, store: Store, guild_id: int | None, page: int
                        ) -> tuple[str, discord.ui.View]:
    """Page `page` (0-based) of the installed LoRAs and embeddings, as this server sees them, and its
    buttons. Pages are filled by length (an entry with a long description and trigger words is
    long), so every entry is on one."""
    catalogue = moderation.adapters()
    off = await moderation.turned_off(guild_id)
    pages: list[list[str]] = [[]]
    for adapter in catalogue.all():
        entry = render.adapter_entry(adapter, off)
        if pages[-1] and (len(pages[-1]) >= ADAPTERS_PAGE_SIZE or
                          sum(len(e) + 2 for e in pages[-1]) + len(entry) > ADAPTERS_PAGE_CHARACTERS):
            pages.append([])
        pages[-1].append(entry)
    page = min(max(page, 0), len(pages) - 1)  # the folders may have changed since the button was made
    text = render.adapters(pages[page], total=(len(catalogue.loras), len(catalogue.embeddings)), page=page,
                           pages=len(pages))
    view = discord.ui.View(timeout=None)
    if len(pages) > 1:
        view.add_item(AdaptersButton(page - 1, "previous", disabled=page == 0))
        view.add_item(AdaptersButton(page + 1, "next", disabled=page + 1 >= len(pages)))
    return text, view


class AdaptersButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"adapters:(?P<page>-?[0-9]{1,6}):(?P<way>previous|next)",
):
    def __init__(self, page: int, way: str, *, disabled: bool = False) -> None:
        label, emoji = ("Previous", "◀️") if way == "previous" else ("Next", "▶️")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=discord.ButtonStyle.secondary,
                                           custom_id=f"adapters:{page}:{way}", disabled=disabled))
        self.page = page

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> AdaptersButton:
        return cls(int(match["page"]), match["way"])

    async def callback(self, interaction: discord.Interaction) -> None:
        # The list is the same for everyone in a server: nothing private to guard, only where it is asked.
        text, view = await adapters_page(host(interaction).moderation, host(interaction).store, interaction.guild_id,
                                         self.page)
        await interaction.response.edit_message(content=text, view=view,
                                                allowed_mentions=discord.AllowedMentions.none())


class ForgetButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"forget:(?P<user>[0-9]{1,20}):(?P<choice>erase|keep)",
):
    def __init__(self, user_id: int, choice: str) -> None:
        label, style = (("Erase my history", discord.ButtonStyle.danger) if choice == "erase"
                        else ("Cancel", discord.ButtonStyle.secondary))
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"forget:{user_id}:{choice}"))
        self.user_id, self.choice = user_id, choice

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ForgetButton:
        return cls(int(match["user"]), match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        services = host(interaction)
        if interaction.user.id != self.user_id:
            await reply_privately(interaction, "Only the member whose history it is can erase it.")
            return
        if self.choice == "keep":
            await interaction.response.edit_message(content="Nothing was erased.", view=None)
            return
        await interaction.response.defer()
        erased, in_progress = await services.store.erase_user_jobs(self.user_id)
        files = 0
        for job_id in erased:
            files += await services.images.delete_job(job_id)
        log.info("user %s erased their history: %d job(s), %d file(s)", self.user_id, len(erased), files)
        await interaction.edit_original_response(content=render.forgotten(len(erased), files, in_progress), view=None)


def forget_view(user_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ForgetButton(user_id, "erase"))
    view.add_item(ForgetButton(user_id, "keep"))
    return view


ALL_BUTTONS = (ResultButton, HistoryButton, ForgetButton)


# -- models: the suggestions, and a member's own defaults (/settings) ------------------------------


# The fixed choices of the options that take a sampler or an aspect ratio (/dream and its kin, /settings).
SAMPLER_CHOICES = [discord.app_commands.Choice(name=name, value=name) for name in SAMPLERS]
ASPECT_CHOICES = [discord.app_commands.Choice(name=name, value=name) for name in ASPECTS]


def model_choices(catalogue: Catalogue, typed: str, allowed: Callable[[str], bool]
                  ) -> list[discord.app_commands.Choice[str]]:
    """The models `allowed` here whose name or display name holds what was typed, each shown with
    its display name and family; the default marked (Discord shows 25 at most)."""
    typed = typed.strip().lower()
    choices = []
    for model in catalogue:
        if not allowed(model.name) or len(model.name) > 100:
            continue
        if typed and typed not in model.name.lower() and typed not in model.label.lower():
            continue
        label = model.label + (" (default)" if model.name == catalogue.default else "")
        if model.title and model.title.lower() != model.name.lower():
            label += f" [{model.name}]"
        choices.append(discord.app_commands.Choice(name=label if len(label) <= 100 else label[:99] + "…",
                                                   value=model.name))
    return choices[:25]


class SettingsHost(Host, Protocol):
    """What the /settings panel reaches through the client."""

    models: Watched
    styles: dict
    settings: BotSettings


STEPS_BY = 5
GUIDANCE_BY = 1.0
DEFAULT = "-"  # a select's "no setting of my own" value


async def member_defaults(bot: SettingsHost, user_id: int, guild_id: int | None, channel
                          ) -> tuple[Catalogue, MemberSettings, Place]:
    """The models offered now, a member's own defaults less those that no longer apply (a model
    removed, limits lowered since: `usable`), and what the server and channel say of models."""
    catalogue = bot.models.current()
    member = usable(MemberSettings.from_stored(await bot.store.member_settings(user_id)), catalogue, bot.styles,
                    bot.settings.limits)
    return catalogue, member, await bot.moderation.place(guild_id, channel)


def model_here(catalogue: Catalogue, member: MemberSettings, place: Place) -> Model:
    """The model a job of theirs here would use with no `model` option: `pick_model`'s, or the
    bot's default where the channel allows no model at all (the panel still shows something)."""
    try:
        return pick_model(catalogue, None, member, place)
    except InvalidRequest:
        return catalogue.resolve(None)


async def settings_panel(bot: SettingsHost, user_id: int, guild_id: int | None, channel
                         ) -> tuple[str, discord.ui.View]:
    """A member's own defaults and what a job of theirs here would use, with selects and buttons to
    change them (`SettingsSelect`, `SettingsButton`); for an ephemeral message."""
    catalogue, member, place = await member_defaults(bot, user_id, guild_id, channel)
    limits = bot.settings.limits
    model = model_here(catalogue, member, place)
    text = render.member_settings(member, model, catalogue.get(member.model) if member.model else None,
                                  size_of(model, limits, None, None, None, member), model.defaults)
    view = discord.ui.View(timeout=None)

    def select(field: str, placeholder: str, options: list[tuple[str, str, str]], chosen: str | None) -> None:
        items = [discord.SelectOption(label=label[:100], value=value[:100], description=description[:100] or None,
                                      default=value == (chosen or DEFAULT))
                 for label, value, description in options[:25]]
        view.add_item(SettingsSelect(field, placeholder, items))

    # Discord offers 25 options of 100 characters: the member's own model first, then the others
    # by name (`/settings model:` reaches any); a name too long to be an option's value is left out.
    offered = sorted((m for m in catalogue if place.allows(m.name) and len(m.name) <= 100),
                     key=lambda m: (m.name != member.model, m.name.lower()))
    select("model", "Model" if len(offered) <= 24 else "Model (more with /settings model:)",
           [("The channel's or server's default", DEFAULT, "")] + [(m.title or m.name, m.name, m.label)
                                                                   for m in offered], member.model)
    select("sampler", "Sampler", [("The model's default", DEFAULT, model.defaults.sampler or DEFAULT_SAMPLER)] +
           [(name, name, "") for name in SAMPLERS], member.sampler)
    select("aspect", "Aspect ratio", [("The model's default size", DEFAULT, "")] +
           [(f"{ratio} ({'×'.join(map(str, aspect_size(ratio, model.pixels, limits)))} on {model.name})", ratio, "")
            for ratio in ASPECTS], member.aspect)
    if bot.styles:
        select("style", "Style", [("No style", DEFAULT, "")] + [(name, name, "") for name in bot.styles],
               member.style)
    for field, by, label in (("steps", -STEPS_BY, f"Steps −{STEPS_BY}"), ("steps", STEPS_BY, f"Steps +{STEPS_BY}"),
                             ("guidance", -GUIDANCE_BY, f"Guidance −{GUIDANCE_BY:g}"),
                             ("guidance", GUIDANCE_BY, f"Guidance +{GUIDANCE_BY:g}")):
        view.add_item(SettingsButton(field, by, label))
    view.add_item(SettingsButton("reset", 0, "Reset all"))
    return text, view


async def change_settings(bot: SettingsHost, user_id: int, **changes) -> MemberSettings:
    """Store a member's changed defaults (None: back to no setting of their own), each checked."""
    member = MemberSettings.from_stored(await bot.store.member_settings(user_id))
    member = checked_settings(member, changes, bot.models.current(), bot.styles, bot.settings.limits)
    await bot.store.set_member_settings(user_id, member.stored())
    return member


class SettingsSelect(discord.ui.DynamicItem[discord.ui.Select],
                     template=r"settings:(?P<field>model|sampler|aspect|style)"):
    def __init__(self, field: str, placeholder: str = "", options: list[discord.SelectOption] | None = None) -> None:
        self.field = field
        super().__init__(discord.ui.Select(custom_id=f"settings:{field}", placeholder=placeholder,
                                           options=options or [discord.SelectOption(label="-")]))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> SettingsSelect:
        return cls(match["field"])

    async def callback(self, interaction: discord.Interaction) -> None:
        value = (self.item.values or [DEFAULT])[0]
        await _settings_changed(interaction, {self.field: None if value == DEFAULT else value})


class SettingsButton(discord.ui.DynamicItem[discord.ui.Button],
                     template=r"settings:(?P<field>steps|guidance|reset):(?P<by>-?[0-9]{1,3}(\.[0-9])?)"):
    def __init__(self, field: str, by: float, label: str = "") -> None:
        self.field, self.by = field, by
        style = discord.ButtonStyle.danger if field == "reset" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label or field, style=style, custom_id=f"settings:{field}:{by:g}"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> SettingsButton:
        return cls(match["field"], float(match["by"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast(SettingsHost, interaction.client)
        if self.field == "reset":  # every setting back to none of their own
            await _settings_changed(interaction, dict.fromkeys(asdict(MemberSettings())))
            return
        catalogue, member, place = await member_defaults(bot, interaction.user.id, interaction.guild_id,
                                                         interaction.channel)
        model = model_here(catalogue, member, place)
        if self.field == "steps":
            now = first(member.steps, model.defaults.steps, DEFAULT_STEPS)
            most = bot.settings.limits.max_steps
            await _settings_changed(interaction, {"steps": min(most, max(1, int(now + self.by)))})
        else:
            now = first(member.guidance, model.defaults.guidance, DEFAULT_GUIDANCE)
            await _settings_changed(interaction, {"guidance": min(30.0, max(0.0, now + self.by))})


async def _settings_changed(interaction: discord.Interaction, changes: dict) -> None:
    """Store the change (a refused one is said privately) and show the panel again."""
    bot = cast(SettingsHost, interaction.client)
    try:
        await change_settings(bot, interaction.user.id, **changes)
    except InvalidRequest as error:
        await reply_privately(interaction, f"⚠️ {error}")
        return
    text, view = await settings_panel(bot, interaction.user.id, interaction.guild_id, interaction.channel)
    await interaction.response.edit_message(content=text, view=view)


# -- /help -------------------------------------------------------------------------------------


async def help_facts(bot: SettingsHost, guild_id: int | None, channel) -> help.Facts:
    """What /help says of this bot's limits, and of the models and safety filter where it is read."""
    settings, limits = bot.settings, bot.settings.limits
    catalogue, place = bot.models.current(), await bot.moderation.place(guild_id, channel)
    offered = [model for model in catalogue if place.allows(model.name)]
    return help.Facts(
        max_prompt_length=limits.max_prompt_length, max_steps=limits.max_steps, max_width=limits.max_width,
        max_height=limits.max_height, max_images=limits.max_images, max_frames=limits.max_frames,
        max_attachment_mb=settings.max_attachment_mb, jobs_per_member=settings.max_jobs_per_member,
        cooldown_seconds=settings.cooldown_seconds, styles=tuple(bot.styles),
        wildcards=tuple(wildcard_names(settings.wildcards_dir)), models=len(offered),
        default_model=model_here(catalogue, MemberSettings(), place).name if offered else "",
        filter_mode=await bot.moderation.current_mode(guild_id, channel), in_dm=guild_id is None)


async def help_message(bot: SettingsHost, guild_id: int | None, channel, page: int, owner: int
                       ) -> tuple[str, discord.ui.View]:
    """Page `page` of /help for where it is read, with buttons to the others (`HelpButton`)."""
    page = max(0, min(page, len(help.HELP_PAGES) - 1))
    view = discord.ui.View(timeout=None)
    for number in range(len(help.HELP_PAGES)):
        view.add_item(HelpButton(number, owner, current=number == page))
    return help.page(await help_facts(bot, guild_id, channel), page), view


class HelpButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"help:(?P<page>[0-9]{1,2}):(?P<owner>[0-9]{1,20})",
):
    """One of /help's page buttons. On a message only its owner sees (or asked for), the page turns
    in place; anyone else pressing it on a public answer (`@Dreambot help`) gets their own copy."""

    TITLES = ("Commands", "Options", "Prompt syntax", "Buttons")

    def __init__(self, page: int, owner: int, *, current: bool = False) -> None:
        title = self.TITLES[page] if page < len(self.TITLES) else str(page + 1)
        super().__init__(discord.ui.Button(
            label=f"{page + 1} · {title}", custom_id=f"help:{page}:{owner}", disabled=current,
            style=discord.ButtonStyle.primary if current else discord.ButtonStyle.secondary))
        self.page, self.owner = page, owner

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> HelpButton:
        return cls(int(match["page"]), int(match["owner"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast(SettingsHost, interaction.client)
        try:
            text, view = await help_message(bot, interaction.guild_id, interaction.channel, self.page,
                                            interaction.user.id)
        except Exception:
            log.exception("help page %s failed", self.page)
            await reply_privately(interaction, "😿 Sorry, that did not work. It has been logged; please try again.")
            return
        # Turned in place only on a help message, for whoever asked for it; anyone else, or a page
        # button forged onto another message, gets a copy of their own.
        on_help = any(str(getattr(item, "custom_id", "")).startswith("help:")
                      for row in getattr(interaction.message, "components", None) or ()
                      for item in getattr(row, "children", ()))
        if interaction.user.id == self.owner and on_help:
            await interaction.response.edit_message(content=text, view=view)
        else:
            await interaction.response.send_message(text, view=view, ephemeral=True)
