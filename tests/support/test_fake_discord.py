"""The loopback fake Discord, driven by a bare in-process discord.py client: buttons, reactions,
attachments, context menus, permissions, channels, threads, several servers and DMs, held-back
uploads, and Discord's refusals, with no bot process and no torch."""

from __future__ import annotations

import asyncio
import io
import json
import time

import aiohttp
import discord
import pytest
import pytest_asyncio
import yarl
from discord import app_commands
from PIL import Image

from tests.support.fake_discord import (
    ADD_REACTIONS,
    DEFAULT_PERMISSIONS,
    DM_APP_PERMISSIONS,
    EPHEMERAL,
    GUILD_MESSAGE_REACTIONS,
    MANAGE_MESSAGES,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    FakeDiscord,
    Interaction,
    Message,
    Reply,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def png(width: int = 3, height: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


# -- the client under test: one of each thing a bot does ------------------------------------------


class ResultView(discord.ui.View):
    """Not persistent: discord.py finds it by the message id the callback response reported."""

    def __init__(self) -> None:
        super().__init__(timeout=300)

    @discord.ui.button(label="Update", custom_id="update")
    async def on_update(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=f"updated by {interaction.user.name}", view=None)

    @discord.ui.button(label="Defer", custom_id="defer")
    async def on_defer(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="edited after defer")
        await interaction.followup.send("only you", ephemeral=True)

    @discord.ui.button(label="New", custom_id="new")
    async def on_new(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_message(f"new from {interaction.message.id}")

    @discord.ui.select(custom_id="pick", row=1, options=[discord.SelectOption(label="A", value="a"),
                                                          discord.SelectOption(label="B", value="b")])
    async def on_pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.edit_message(content=f"picked {select.values[0]}")


class PrivateView(discord.ui.View):
    """Sent on ephemeral messages: only the member who got one sees it and can click."""

    def __init__(self) -> None:
        super().__init__(timeout=300)

    @discord.ui.button(label="Edit", custom_id="private-edit")
    async def on_edit(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=f"edited for {interaction.user.name}", view=None)

    @discord.ui.button(label="Answer", custom_id="private-answer")
    async def on_answer(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_message(f"answered {interaction.message.id}", ephemeral=True)


class AskModal(discord.ui.Modal, title="Tell me more"):
    name = discord.ui.TextInput(label="Name", custom_id="name", default="Ada", max_length=20)
    note = discord.ui.TextInput(label="Note", custom_id="note", style=discord.TextStyle.paragraph, required=False)

    def __init__(self) -> None:
        super().__init__(custom_id="ask-modal", timeout=300)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        if self.name.value == "again":  # Discord takes no modal in answer to a modal submit
            try:
                await interaction.response.send_modal(AskModal())
            except discord.HTTPException as error:
                interaction.client.errors.append(error)
            await interaction.response.send_message("no modal on a modal", ephemeral=True)
            return
        on = interaction.message.id if interaction.message is not None else None
        await interaction.response.send_message(f"{interaction.user.name}: {self.name.value!r} {self.note.value!r} "
                                                f"on {on}")


class AskView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=300)

    @discord.ui.button(label="Ask", custom_id="ask")
    async def on_ask(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.send_modal(AskModal())


@app_commands.command(name="ask", description="Ask with a modal, at once or from a button")
async def ask(interaction: discord.Interaction, button: bool = False) -> None:
    if button:
        await interaction.response.send_message("press to answer", view=AskView())
    else:
        await interaction.response.send_modal(AskModal())


@app_commands.command(name="paint", description="Answer with a picture and buttons")
async def paint(interaction: discord.Interaction, prompt: str, image: discord.Attachment | None = None) -> None:
    data, text = b"\x89PNG not really", prompt
    if image is not None:
        try:
            data = await image.read()
        except discord.NotFound:
            await interaction.response.send_message("gone", ephemeral=True)
            return
        text = (f"{prompt}: {image.filename} {image.size} {image.content_type} {image.width}x{image.height} "
                f"read {len(data)}")
    await interaction.response.send_message(text, view=ResultView(), file=discord.File(io.BytesIO(data), "result.png"))


@app_commands.command(name="slow", description="Defer, then answer with followups")
async def slow(interaction: discord.Interaction) -> None:
    await interaction.response.defer(thinking=True)
    await interaction.followup.send("first", ephemeral=True)
    second = await interaction.followup.send("second", ephemeral=True, wait=True)
    await second.delete()
    await interaction.delete_original_response()


@app_commands.command(name="legacy", description="The answers /dream and /sync give")
async def legacy(interaction: discord.Interaction, mode: str) -> None:
    if mode == "private":  # /sync
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("registered", ephemeral=True)
        return
    await interaction.response.defer(thinking=True)
    if mode == "refuse":  # a bad option
        await interaction.delete_original_response()
        await interaction.followup.send("refused", ephemeral=True)
        return
    await interaction.edit_original_response(content="queued")
    if mode == "late":
        await interaction.client.go.wait()
    picture = discord.File(io.BytesIO(png()), filename="result.png")
    try:
        await interaction.edit_original_response(content="done", attachments=[picture])
    except discord.HTTPException:  # expired: post in the channel, mentioning the member
        await interaction.channel.send(f"{interaction.user.mention} done",
                                       file=discord.File(io.BytesIO(png()), "r.png"),
                                       allowed_mentions=discord.AllowedMentions(users=[interaction.user]))


@app_commands.command(name="secret", description="Answer privately, with buttons")
async def secret(interaction: discord.Interaction, followup: bool = False) -> None:
    if not followup:
        await interaction.response.send_message("secret", view=PrivateView(), ephemeral=True)
        return
    await interaction.response.send_message("wait for it", ephemeral=True)
    await interaction.followup.send("secret followup", view=PrivateView(), ephemeral=True)


@app_commands.command(name="where", description="Say where it runs, then post, reply, react, edit, delete there")
async def where(interaction: discord.Interaction) -> None:
    channel = interaction.channel
    if interaction.guild is None:
        here = f"dm {channel.id} {channel.type.name} app={interaction.app_permissions.value} user={interaction.user.id}"
    else:
        here = f"{channel.id} {channel.name} nsfw={channel.is_nsfw()}"
    await interaction.response.defer(thinking=True)
    await interaction.followup.send(here)  # fills the thinking message
    extra = await interaction.followup.send("more", wait=True)
    await extra.edit(content="more, edited")
    posted = await channel.send("posted")
    reply = await posted.reply("a reply")
    await posted.add_reaction("✅")
    await reply.edit(content="a reply, edited")
    await posted.delete()


@app_commands.command(name="server", description="Say which server, channel or thread it runs in, with what rights")
async def server(interaction: discord.Interaction) -> None:
    channel = interaction.channel
    await interaction.response.send_message(
        f"guild={interaction.guild_id} locale={interaction.guild_locale} "
        f"manage={interaction.permissions.manage_messages} app={interaction.app_permissions.value} "
        f"{type(channel).__name__} {channel.type.name} "
        f"parent={getattr(channel, 'parent_id', None)} nsfw={channel.is_nsfw()}")


@app_commands.command(name="look", description="Describe the channel, role and mentionable picked")
async def look(interaction: discord.Interaction, channel: discord.TextChannel, role: discord.Role | None = None,
               someone: discord.Member | discord.Role | None = None) -> None:
    text = f"{channel.id} {channel.name} nsfw={channel.is_nsfw()}"
    if role is not None:
        text += f" role={role.name}"
    if someone is not None:
        text += f" {type(someone).__name__}={someone.id}"
    await interaction.response.send_message(text, ephemeral=True)


@app_commands.command(name="ignore", description="Never answers")
async def ignore(interaction: discord.Interaction) -> None:
    pass


jobs = app_commands.Group(name="jobs", description="Manage jobs", guild_only=True,
                          default_permissions=discord.Permissions(manage_messages=True))
jobs_admin = app_commands.Group(name="admin", description="Moderation", parent=jobs)


@jobs_admin.command(name="purge", description="Remove jobs")
async def purge(interaction: discord.Interaction, count: int) -> None:
    cache = interaction.channel.permissions_for(interaction.user)
    await interaction.response.send_message(
        f"count={count} manage={interaction.permissions.manage_messages} cache={cache.manage_messages} "
        f"app={interaction.app_permissions.manage_messages}", ephemeral=True)


@app_commands.context_menu(name="Dream info")
async def dream_info(interaction: discord.Interaction, message: discord.Message) -> None:
    await interaction.response.send_message(
        f"{message.id} {message.author.id} {len(message.attachments)} {message.content!r}", ephemeral=True)


@app_commands.context_menu(name="Wave")
async def wave(interaction: discord.Interaction, member: discord.Member) -> None:
    await interaction.response.send_message(f"waved at {member.id}", ephemeral=True)


class Probe(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default())  # messages and reactions, not message content
        self.tree = app_commands.CommandTree(self)
        for command in (paint, slow, legacy, secret, where, server, look, ignore, jobs, dream_info, wave, ask):
            self.tree.add_command(command)
        self.raw_reactions: list[discord.RawReactionActionEvent] = []
        self.cached_reactions: list[tuple[str, int]] = []
        self.seen: list[discord.Message] = []
        self.errors: list[Exception] = []
        self.go = asyncio.Event()

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)

    async def on_reaction_add(self, reaction: discord.Reaction, user: discord.abc.User) -> None:
        self.cached_reactions.append((str(reaction.emoji), user.id))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.user_id == self.user.id:
            return
        self.raw_reactions.append(payload)
        channel = self.get_channel(payload.channel_id)
        message = channel.get_partial_message(payload.message_id)
        try:
            if payload.emoji.name == "🔁":
                await message.add_reaction("✅")
                await channel.send(f"again for <@{payload.user_id}>", reference=message,
                                   allowed_mentions=discord.AllowedMentions(users=[discord.Object(payload.user_id)]))
            elif payload.emoji.name == "🗑️":
                await message.delete()
            elif payload.emoji.name == "📩":
                await payload.member.send("a private hello")
        except discord.HTTPException as error:
            self.errors.append(error)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def probe(fake: FakeDiscord):
    patch = pytest.MonkeyPatch()
    patch.setattr(discord.http.Route, "BASE", fake.api_base)
    patch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    gallery = fake.text_channel("gallery", nsfw=True)  # made before the bot identifies: it comes in GUILD_CREATE
    fake.thread(gallery, "making of")  # in GUILD_CREATE's threads
    fake.add_guild("Annex", locale="fr")  # unavailable in READY, then its own GUILD_CREATE
    client = Probe()
    task = asyncio.create_task(client.start("fake-token"))
    deadline = time.monotonic() + 20
    while not (fake.identified.is_set() and "paint" in fake.commands):
        if task.done() or time.monotonic() > deadline:
            await client.close()
            patch.undo()
            raise AssertionError(f"the probe client did not come up: {task.exception() if task.done() else 'timeout'}")
        await asyncio.sleep(0.02)
    yield client
    await client.close()
    await task
    patch.undo()


async def eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def rest(fake: FakeDiscord, method: str, path: str, **kwargs) -> tuple[int, dict | list | None]:
    """A raw call, as a client that does not check anything would make it."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, fake.api_base + path, **kwargs) as response:
            body = await response.read()
            return response.status, json.loads(body) if body else None


def with_file(payload: dict) -> aiohttp.FormData:
    """A message payload with one picture attached, as discord.py sends it."""
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps(payload), content_type="application/json")
    form.add_field("files[0]", png(), filename="f.png", content_type="image/png")
    return form


def is_callback(reply: Reply) -> bool:
    return reply.kind == "callback"


# -- commands --------------------------------------------------------------------------------------


async def test_message_and_user_commands_and_subcommand_groups_are_registered(probe: Probe, fake: FakeDiscord) -> None:
    info = fake.command("Dream info", 3)
    assert info["type"] == 3 and info["description"] == "" and fake.command("Wave", 2)["type"] == 2
    [group] = fake.commands["jobs"]["options"]
    assert (group["name"], group["type"], [o["type"] for o in group["options"]]) == ("admin", 2, [1])
    assert fake.commands["jobs"]["default_member_permissions"] == str(MANAGE_MESSAGES)


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ({"name": "long", "type": 1, "description": "x" * 101}, ("0", "description")),
        ({"name": "Upper", "type": 1, "description": "d"}, ("0", "name")),
        ({"name": "menu", "type": 3, "description": "menus have none"}, ("0", "description")),
        ({"name": "order", "type": 1, "description": "d", "options": [
            {"name": "a", "description": "d", "type": 3},
            {"name": "b", "description": "d", "type": 3, "required": True}]}, ("0", "options", "1", "required")),
        ({"name": "mixed", "type": 1, "description": "d", "options": [
            {"name": "sub", "description": "d", "type": 1}, {"name": "b", "description": "d", "type": 3}]},
         ("0", "options")),
        ({"name": "deep", "type": 1, "description": "d", "options": [{"name": "g", "description": "d", "type": 2,
          "options": [{"name": "g2", "description": "d", "type": 2}]}]}, ("0", "options", "0", "options")),
    ],
)
async def test_registration_refuses_what_discord_refuses(probe: Probe, fake: FakeDiscord, command: dict,
                                                         where: tuple) -> None:
    before = dict(fake.commands)
    status, body = await rest(fake, "PUT", f"/applications/{fake.application_id}/commands", json=[command])
    assert status == 400 and body["code"] == 50035
    node = body["errors"]
    for key in where:
        node = node[key]
    assert node  # the error sits where Discord puts it
    assert fake.commands == before


# -- attachments as options ------------------------------------------------------------------------


async def test_an_attachment_option_is_fetched_from_the_fake_cdn(probe: Probe, fake: FakeDiscord) -> None:
    picture = png()
    upload = fake.attachment(picture, filename="fox.png")
    interaction = await fake.invoke("paint", prompt="fox", image=upload)
    answer = await interaction.wait_for(is_callback)
    assert answer.payload["type"] == 4 and answer.message_id == interaction.message_id

    option = interaction.payload["data"]["options"][1]
    assert option == {"name": "image", "type": 11, "value": str(upload.id)}
    assert interaction.payload["data"]["resolved"]["attachments"][str(upload.id)]["url"] == upload.url
    assert upload.fetches == 1

    message = fake.message(interaction.message_id)
    assert message.content == f"fox: fox.png {len(picture)} image/png 3x2 read {len(picture)}"
    assert [(a.filename, a.data) for a in message.attachments] == [("result.png", picture)]
    assert message.custom_ids == ["update", "defer", "new", "pick"] and not message.ephemeral
    assert message.interaction_metadata["id"] == str(interaction.id)


async def test_a_test_can_lie_about_size_and_type_and_pass_plain_bytes(probe: Probe, fake: FakeDiscord) -> None:
    liar = fake.attachment(b"not an image", filename="x.png", size=999_999_999, content_type="image/png")
    answer = await (await fake.invoke("paint", prompt="lie", image=liar)).wait_for(is_callback)
    assert answer.content == "lie: x.png 999999999 image/png NonexNone read 12"

    answer = await (await fake.invoke("paint", prompt="raw", image=png(5, 4))).wait_for(is_callback)
    assert answer.content.startswith("raw: image.png ") and "image/png 5x4" in answer.content


async def test_a_gone_attachment_answers_404(probe: Probe, fake: FakeDiscord) -> None:
    upload = fake.attachment(png())
    upload.gone = True
    answer = await (await fake.invoke("paint", prompt="x", image=upload)).wait_for(is_callback)
    assert answer.content == "gone" and answer.ephemeral and upload.fetches == 1


# -- buttons and selects ---------------------------------------------------------------------------


async def painted(fake: FakeDiscord, prompt: str = "cat") -> int:
    interaction = await fake.invoke("paint", prompt=prompt)
    await interaction.wait_for(is_callback)
    return interaction.message_id


async def test_an_update_message_answer_edits_the_clicked_message(probe: Probe, fake: FakeDiscord) -> None:
    message_id = await painted(fake)
    clicker = fake.user("clicker")
    click = await fake.click(message_id, "update", user=clicker)
    answer = await click.wait_for(is_callback)
    assert answer.payload["type"] == 7 and answer.message_id == click.message_id == message_id
    assert click.payload["data"] == {"custom_id": "update", "component_type": 2}
    assert click.payload["message"]["id"] == str(message_id)

    message = fake.message(message_id)
    assert (message.content, message.components, message.edits) == ("updated by clicker", [], 1)
    assert [a.filename for a in message.attachments] == ["result.png"]  # an edit keeps what it does not name
    with pytest.raises(AssertionError, match="no component 'update'"):
        await fake.click(message_id, "update")


async def test_a_deferred_update_then_an_edit_and_a_private_followup(probe: Probe, fake: FakeDiscord) -> None:
    message_id = await painted(fake)
    click = await fake.click(message_id, "defer")
    followup = await click.wait_for(lambda r: r.kind == "followup")
    assert [r.kind for r in click.replies] == ["callback", "edit", "followup"]
    assert click.replies[0].payload["type"] == 6 and click.replies[1].message_id == message_id
    assert fake.message(message_id).content == "edited after defer"

    private = fake.message(followup.message_id)
    assert private.id != message_id and private.ephemeral and private.content == "only you"
    assert private.interaction_metadata["interacted_message_id"] == str(message_id)


async def test_a_button_can_answer_with_a_new_message(probe: Probe, fake: FakeDiscord) -> None:
    message_id = await painted(fake)
    click = await fake.click(message_id, "new")
    answer = await click.wait_for(is_callback)
    assert answer.payload["type"] == 4 and click.message_id not in (None, message_id)
    assert fake.message(click.message_id).content == f"new from {message_id}"


async def test_a_select_menu_choice(probe: Probe, fake: FakeDiscord) -> None:
    message_id = await painted(fake)
    choice = await fake.select(message_id, "pick", ["b"])
    await choice.wait_for(is_callback)
    assert choice.payload["data"] == {"custom_id": "pick", "component_type": 3, "values": ["b"]}
    assert fake.message(message_id).content == "picked b"
    with pytest.raises(AssertionError, match="offers"):
        await fake.select(message_id, "pick", ["z"])


# -- modals ----------------------------------------------------------------------------------------


async def test_a_button_opens_a_modal_and_the_member_submits_it(probe: Probe, fake: FakeDiscord) -> None:
    command = await fake.invoke("ask", button=True)
    await command.wait_for(is_callback)
    asker = fake.user("asker")
    click = await fake.click(command.message_id, "ask", user=asker)
    shown = await click.wait_for(is_callback)
    assert shown.payload["type"] == 9 and click.message_id is None  # a modal is no message
    assert (click.modal["custom_id"], click.modal["title"]) == ("ask-modal", "Tell me more")
    assert click.modal_values == {"name": "Ada", "note": ""}
    with pytest.raises(AssertionError, match="only asker sees"):
        await fake.submit(click, {"note": "x"}, user=fake.user("snoop"))
    with pytest.raises(AssertionError, match="is required"):
        await fake.submit(click, {"name": ""})
    with pytest.raises(AssertionError, match="takes 0 to 20 characters"):
        await fake.submit(click, {"name": "x" * 21})
    with pytest.raises(AssertionError, match="no input"):
        await fake.submit(click, {"age": "3"})

    submit = await fake.submit(click, {"note": "likes foxes"})  # the name as pre-filled
    answer = await submit.wait_for(is_callback)
    assert submit.type == 5 and submit.user == asker and submit.modal_of is click
    assert submit.payload["data"] == {"custom_id": "ask-modal", "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": "name", "value": "Ada"}]},
        {"type": 1, "components": [{"type": 4, "custom_id": "note", "value": "likes foxes"}]}]}
    assert submit.payload["message"]["id"] == str(command.message_id)  # the message whose button opened it
    assert answer.payload["type"] == 4 and answer.content == f"asker: 'Ada' 'likes foxes' on {command.message_id}"
    assert click.modal_closed
    with pytest.raises(AssertionError, match="submitted and closed"):
        await fake.submit(click, {"note": "twice"})


async def test_a_command_answers_with_a_modal_submitted_without_a_message(probe: Probe, fake: FakeDiscord) -> None:
    command = await fake.invoke("ask")
    await command.wait_for(is_callback)
    submit = await fake.submit(command, {"name": "Grace"})
    answer = await submit.wait_for(is_callback)
    assert "message" not in submit.payload and answer.content == "member: 'Grace' '' on None"
    assert submit.channel_id == command.channel_id


async def test_a_modal_cannot_answer_a_modal_submit_or_a_deferred_interaction(probe: Probe, fake: FakeDiscord) -> None:
    command = await fake.invoke("ask")
    await command.wait_for(is_callback)
    probe.errors.clear()
    submit = await fake.submit(command, {"name": "again"})
    answer = await submit.wait_for(is_callback)
    assert answer.content == "no modal on a modal" and submit.modal is None
    [error] = probe.errors
    assert isinstance(error, discord.HTTPException) and error.status == 400 and error.code == 50035
    probe.errors.clear()

    deferred = await fake.invoke("ignore")
    callback = f"/interactions/{deferred.id}/{deferred.token}/callback"
    assert (await rest(fake, "POST", callback, json={"type": 5}))[0] == 200
    status, body = await rest(fake, "POST", callback, json={"type": 9, "data": AskModal().to_dict()})
    assert (status, body["code"], deferred.modal) == (400, 40060, None)


def text_input(**changes) -> dict:
    return {"type": 4, "custom_id": "f", "style": 1, "label": "Field", **changes}


@pytest.mark.parametrize(
    ("modal", "where"),
    [
        ({"title": "t" * 46}, ("data", "title")),
        ({"custom_id": "c" * 101}, ("data", "custom_id")),
        ({"components": []}, ("data", "components")),
        ({"components": [{"type": 1, "components": [text_input(custom_id=f"f{i}")]} for i in range(6)]},
         ("data", "components")),
        ({"components": [text_input()]}, ("data", "components", "0", "type")),
        ({"components": [{"type": 1, "components": [text_input(), text_input(custom_id="g")]}]},
         ("data", "components", "0", "components")),
        ({"components": [{"type": 1, "components": [text_input(label="l" * 46)]}]},
         ("data", "components", "0", "components", "0", "label")),
        ({"components": [{"type": 1, "components": [text_input(max_length=4001)]}]},
         ("data", "components", "0", "components", "0", "max_length")),
        ({"components": [{"type": 1, "components": [text_input(style=3)]}]},
         ("data", "components", "0", "components", "0", "style")),
        ({"components": [{"type": 1, "components": [text_input(max_length=5, value="too long")]}]},
         ("data", "components", "0", "components", "0", "value")),
        ({"components": [{"type": 1, "components": [text_input(min_length=3, value="ab")]}]},
         ("data", "components", "0", "components", "0", "value")),
        ({"components": [{"type": 1, "components": [text_input(placeholder="p" * 101)]}]},
         ("data", "components", "0", "components", "0", "placeholder")),
        ({"components": [{"type": 1, "components": [text_input()]}, {"type": 1, "components": [text_input()]}]},
         ("data", "components", "1", "components", "0", "custom_id")),
    ],
)
async def test_modals_discord_refuses(probe: Probe, fake: FakeDiscord, modal: dict, where: tuple) -> None:
    interaction = await fake.invoke("ignore")
    data = {"custom_id": "m", "title": "Title", "components": [{"type": 1, "components": [text_input()]}], **modal}
    status, body = await rest(fake, "POST", f"/interactions/{interaction.id}/{interaction.token}/callback",
                              json={"type": 9, "data": data})
    assert status == 400 and body["code"] == 50035
    node = body["errors"]
    for key in where:
        node = node[key]
    assert node["_errors"]  # the error sits where Discord puts it
    assert interaction.modal is None and not interaction.replies
    status, _ = await rest(fake, "POST", f"/interactions/{interaction.id}/{interaction.token}/callback",
                           json={"type": 9, "data": {**data, "components": [{"type": 1, "components": [text_input()]}],
                                                     "title": "Title", "custom_id": "m"}})
    assert status == 200 and interaction.modal["custom_id"] == "m"  # a good one is still taken


# -- defers, followups and deletions ---------------------------------------------------------------


async def test_the_first_followup_after_a_defer_fills_the_thinking_message(probe: Probe, fake: FakeDiscord) -> None:
    interaction = await fake.invoke("slow")
    await interaction.wait_for(lambda r: r.kind == "delete" and r.message_id == interaction.message_id)
    assert [r.kind for r in interaction.replies] == ["callback", "followup", "followup", "delete", "delete"]
    first, second = (fake.message(r.message_id) for r in interaction.replies[1:3])
    # Discord keeps the visibility chosen when deferring, whatever the first followup asks for.
    assert first.id == interaction.message_id and first.content == "first" and not first.ephemeral
    assert not first.loading and first.deleted
    assert second.ephemeral and second.deleted and {first.id, second.id} <= fake.deleted
    assert interaction.followup_ids == [second.id]


async def test_webhooks_exist_only_once_the_interaction_is_answered(probe: Probe, fake: FakeDiscord) -> None:
    interaction = await fake.invoke("ignore")
    webhook = f"/webhooks/{fake.application_id}/{interaction.token}"
    callback = f"/interactions/{interaction.id}/{interaction.token}/callback"
    assert (await rest(fake, "POST", webhook, json={"content": "hi"}))[1]["code"] == 10015
    assert (await rest(fake, "POST", callback, json={"type": 6}))[1]["code"] == 50035  # not a component
    assert (await rest(fake, "POST", callback, json={"type": 4, "data": {}}))[1]["code"] == 50006  # empty

    status, body = await rest(fake, "POST", callback, json={"type": 5})
    assert status == 200 and body["resource"]["message"]["flags"] & 128  # loading
    assert body["interaction"]["response_message_id"] == str(interaction.message_id)
    assert (await rest(fake, "POST", callback, json={"type": 5}))[1]["code"] == 40060
    status, original = await rest(fake, "GET", f"{webhook}/messages/@original")
    assert status == 200 and original["id"] == str(interaction.message_id)
    assert (await rest(fake, "GET", f"{webhook}/messages/123"))[1]["code"] == 10008


async def test_the_answers_the_dream_bot_gives_are_recorded_as_before(probe: Probe, fake: FakeDiscord) -> None:
    posted = await fake.invoke("legacy", mode="post")
    result = await posted.wait_for(lambda r: r.kind == "edit" and bool(r.files))
    assert [r.kind for r in posted.replies] == ["callback", "edit", "edit"] and posted.replies[1].content == "queued"
    assert posted.replies[0].payload["type"] == 5 and not posted.replies[0].ephemeral
    assert result.content == "done" and result.files[0].data.startswith(b"\x89PNG")
    message = fake.message(result.message_id)
    assert message.id == posted.message_id and message.content == "done" and message.edits == 2

    refused = await fake.invoke("legacy", mode="refuse")
    answer = await refused.wait_for(lambda r: r.kind == "followup")
    assert [r.kind for r in refused.replies] == ["callback", "delete", "followup"] and answer.ephemeral
    assert fake.message(answer.message_id).ephemeral  # a new message: the thinking one was deleted

    private = await fake.invoke("legacy", mode="private")
    answer = await private.wait_for(lambda r: r.kind == "followup")
    assert answer.ephemeral and fake.message(answer.message_id).ephemeral and answer.content == "registered"

    member = fake.user("patient")
    late = await fake.invoke("legacy", user=member, mode="late")
    await late.wait_for(lambda r: r.kind == "edit")
    fake.expire(late)
    probe.go.set()
    message = await fake.channel_messages.wait_for(lambda m: m.content.endswith("done"))
    assert message.content == f"<@{member['id']}> done" and len(message.files) == 1
    assert [str(u) for u in message.payload["allowed_mentions"]["users"]] == [member["id"]]
    assert fake.message(message.message_id).mentions == [member["id"]]


# -- reactions -------------------------------------------------------------------------------------


async def test_a_reaction_reaches_the_bot_which_reacts_and_replies(probe: Probe, fake: FakeDiscord) -> None:
    message_id = await painted(fake, "owl")
    member = fake.user("reactor")
    event = await fake.react(message_id, "🔁", user=member)
    assert event["emoji"] == {"id": None, "name": "🔁"} and event["member"]["user"] == member

    reply = await fake.channel_messages.wait_for(lambda r: r.kind == "message" and "again" in r.content)
    assert fake.reactions[message_id] == ["✅"]
    assert fake.message(message_id).reactions == {"🔁": [member["id"]], "✅": [fake.bot_user["id"]]}
    answer = fake.message(reply.message_id)
    assert answer.type == 19 and answer.message_reference["message_id"] == str(message_id)
    assert answer.mentions == [member["id"], fake.bot_user["id"]]  # discord.py pings the replied-to author
    raw = probe.raw_reactions[-1]
    assert (raw.message_id, raw.user_id, raw.member.id) == (message_id, int(member["id"]), int(member["id"]))
    # The bot's own answers reached it as MESSAGE_CREATE, so discord.py had the message cached.
    assert ("🔁", int(member["id"])) in probe.cached_reactions


async def test_a_reaction_can_make_the_bot_delete_its_message(probe: Probe, fake: FakeDiscord) -> None:
    message_id = await painted(fake)
    await fake.react(message_id, "🗑️")
    await eventually(lambda: message_id in fake.deleted)
    assert fake.message(message_id).deleted
    assert ("MESSAGE_DELETE", {"id": str(message_id), "channel_id": str(fake.channel_id),
                               "guild_id": str(fake.guild_id)}) in fake.events
    with pytest.raises(AssertionError, match="deleted"):
        await fake.click(message_id, "update")


async def test_a_reaction_can_make_the_bot_write_a_direct_message(probe: Probe, fake: FakeDiscord) -> None:
    member = fake.user("pen pal")
    await fake.react(await painted(fake), "📩", user=member)
    letter = await fake.dm(member).wait_for(lambda r: r.kind == "message")
    assert letter.content == "a private hello"
    assert fake.message(letter.message_id).channel_id == fake.dm_channels[member["id"]]


async def test_the_bot_needs_permission_to_react_and_to_delete_others_messages(probe: Probe, fake: FakeDiscord) -> None:
    posted = await fake.post("a member's words")
    channel = f"/channels/{fake.channel_id}/messages/{posted.id}"
    assert (await rest(fake, "DELETE", channel))[1]["code"] == 50013  # no Manage Messages
    fake.app_permissions = DEFAULT_PERMISSIONS & ~ADD_REACTIONS
    try:
        assert (await rest(fake, "PUT", f"{channel}/reactions/%E2%9C%85/@me"))[1]["code"] == 50013
    finally:
        fake.app_permissions = DEFAULT_PERMISSIONS
    assert (await rest(fake, "PUT", f"{channel}/reactions/%E2%9C%85/@me"))[0] == 204
    assert fake.reactions[posted.id] == ["✅"]
    assert (await rest(fake, "PATCH", channel, json={"content": "mine now"}))[1]["code"] == 50005


# -- context menus and members' messages -----------------------------------------------------------


async def test_a_message_command_gets_the_target_message(probe: Probe, fake: FakeDiscord) -> None:
    member = fake.user("poster")
    posted = await fake.post("look at this", user=member, attachments=[png()])
    interaction = await fake.invoke_message_command("Dream info", posted.id, user=member)
    answer = await interaction.wait_for(is_callback)
    assert interaction.payload["data"]["target_id"] == str(posted.id) and interaction.payload["data"]["type"] == 3
    # Interactions carry the content even though the bot lacks the message content intent.
    assert answer.content == f"{posted.id} {member['id']} 1 'look at this'" and answer.ephemeral
    assert fake.message(interaction.message_id).type == 23


async def test_members_messages_reach_the_bot_without_content_unless_it_is_mentioned(
    probe: Probe, fake: FakeDiscord
) -> None:
    hidden = await fake.post("just chatting")
    shown = await fake.post(f"<@{fake.bot_user['id']}> hello")
    await eventually(lambda: {hidden.id, shown.id} <= {m.id for m in probe.seen})
    seen = {m.id: m.content for m in probe.seen}
    assert seen[hidden.id] == "" and seen[shown.id] == shown.content


async def test_a_user_command_gets_the_target_member(probe: Probe, fake: FakeDiscord) -> None:
    target = fake.user("target")
    answer = await (await fake.invoke_user_command("Wave", target)).wait_for(is_callback)
    assert answer.content == f"waved at {target['id']}"


# -- members' permissions --------------------------------------------------------------------------


async def test_members_permissions_reach_the_interaction_and_the_bots_cache(probe: Probe, fake: FakeDiscord) -> None:
    moderators = fake.role("Moderators", MANAGE_MESSAGES)
    boss = fake.user("boss")
    members = {
        "plain": (fake.user("plain"), False),
        "granted": (fake.user("granted", permissions=MANAGE_MESSAGES), True),
        "by role": (fake.user("moderator", roles=[moderators]), True),
        "owner": (boss, True),
    }
    owner = fake.guild_owner_id
    fake.guild_owner_id = boss["id"]
    try:
        for name, (user, manages) in members.items():
            interaction = await fake.invoke("jobs admin purge", user=user, count=3)
            answer = await interaction.wait_for(is_callback)
            assert answer.content == f"count=3 manage={manages} cache={manages} app=False", name
            assert bool(int(interaction.payload["member"]["permissions"]) & MANAGE_MESSAGES) is manages
    finally:
        fake.guild_owner_id = owner


# -- what Discord refuses in messages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"content": "x" * 2001}, 50035),
        ({"content": ""}, 50006),
        ({"content": "hi", "message_reference": {"message_id": "1"}}, 50035),
        ({"content": "hi", "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "x", "custom_id": "c" * 101}]}]}, 50035),
        ({"content": "hi", "components": [{"type": 2, "style": 1, "label": "x", "custom_id": "loose"}]}, 50035),
    ],
)
async def test_channel_messages_discord_refuses(probe: Probe, fake: FakeDiscord, payload: dict, code: int) -> None:
    status, body = await rest(fake, "POST", f"/channels/{fake.channel_id}/messages", json=payload)
    assert (status, body["code"]) == (400, code)


async def test_a_reply_to_a_missing_message_can_go_without_the_reference(probe: Probe, fake: FakeDiscord) -> None:
    status, body = await rest(fake, "POST", f"/channels/{fake.channel_id}/messages", json={
        "content": "hi", "message_reference": {"message_id": "1", "fail_if_not_exists": False}})
    assert status == 200 and "message_reference" not in body and body["type"] == 0


async def test_an_upload_over_the_limit_is_refused(probe: Probe, fake: FakeDiscord) -> None:
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps({"content": "big"}), content_type="application/json")
    form.add_field("files[0]", b"x" * 11, filename="big.png", content_type="image/png")
    limit = fake.upload_limit
    fake.upload_limit = 10
    try:
        status, body = await rest(fake, "POST", f"/channels/{fake.channel_id}/messages", data=form)
    finally:
        fake.upload_limit = limit
    assert (status, body["code"]) == (413, 40005)


async def test_an_edit_keeps_the_attachments_it_lists_and_adds_new_files(probe: Probe, fake: FakeDiscord) -> None:
    def form(payload: dict, *files: tuple[str, bytes]) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("payload_json", json.dumps(payload), content_type="application/json")
        for index, (name, content) in enumerate(files):
            data.add_field(f"files[{index}]", content, filename=name, content_type="image/png")
        return data

    channel = f"/channels/{fake.channel_id}/messages"
    status, body = await rest(fake, "POST", channel, data=form(
        {"content": "two", "attachments": [{"id": 0, "filename": "a.png"}, {"id": 1, "filename": "b.png"}]},
        ("a.png", b"A"), ("b.png", b"B")))
    assert status == 200 and [a["filename"] for a in body["attachments"]] == ["a.png", "b.png"]
    keep = body["attachments"][1]["id"]
    status, body = await rest(fake, "PATCH", f"{channel}/{body['id']}", data=form(
        {"attachments": [{"id": keep}, {"id": 0, "filename": "c.png"}]}, ("c.png", b"C")))
    message = fake.message(body["id"])
    assert [(a.filename, a.data) for a in message.attachments] == [("b.png", b"B"), ("c.png", b"C")]
    assert message.content == "two" and message.edits == 1


async def test_removing_a_members_reaction_needs_manage_messages(probe: Probe, fake: FakeDiscord) -> None:
    message_id = await painted(fake)
    member = fake.user("fan")
    event = await fake.react(message_id, "blob:123", user=member)
    assert event["emoji"] == {"id": "123", "name": "blob", "animated": False}
    route = f"/channels/{fake.channel_id}/messages/{message_id}/reactions/blob:123/{member['id']}"
    assert (await rest(fake, "DELETE", route))[1]["code"] == 50013
    fake.app_permissions = DEFAULT_PERMISSIONS | MANAGE_MESSAGES
    try:
        assert (await rest(fake, "DELETE", route))[0] == 204
    finally:
        fake.app_permissions = DEFAULT_PERMISSIONS
    assert fake.message(message_id).reactions["blob:123"] == []
    removal = await fake.unreact(message_id, "🔁", member)  # nothing to take back: the event is still sent
    assert removal["user_id"] == member["id"] and "member" not in removal


async def test_intents_are_recorded_and_can_be_enforced(probe: Probe, fake: FakeDiscord) -> None:
    assert fake.intents == discord.Intents.default().value
    message_id = await painted(fake)
    seen = len(probe.raw_reactions)
    fake.strict_intents, fake.intents = True, fake.intents & ~GUILD_MESSAGE_REACTIONS
    try:
        await fake.react(message_id, "🔁")
    finally:
        fake.strict_intents, fake.intents = False, discord.Intents.default().value
    assert fake.events[-1][0] == "MESSAGE_REACTION_ADD (dropped: not subscribed)"
    await fake.react(message_id, "🔀")  # not strict: sent whatever the bot asked for
    await eventually(lambda: any(r.emoji.name == "🔀" for r in probe.raw_reactions[seen:]))
    assert [r.emoji.name for r in probe.raw_reactions[seen:]] == ["🔀"]


# -- channels, DMs and option types ----------------------------------------------------------------


async def run_where(fake: FakeDiscord, **kwargs) -> tuple[Interaction, Interaction]:
    """/where, done: the interaction, and what the bot did in its channel outside it."""
    interaction = await fake.invoke("where", **kwargs)
    channel = fake.messages_in(interaction.channel_id)
    await channel.wait_for(lambda r: r.kind == "delete" and r.at > interaction.sent_at)
    return interaction, channel


async def test_channels_made_before_the_bot_identifies_come_in_guild_create(probe: Probe, fake: FakeDiscord) -> None:
    gallery = discord.utils.get(probe.get_all_channels(), name="gallery")
    assert gallery is not None and gallery.is_nsfw() and gallery.id in fake.channels
    assert not any(data.get("id") == str(gallery.id) for event, data in fake.events if event.startswith("CHANNEL"))
    status, body = await rest(fake, "GET", f"/channels/{gallery.id}")
    assert status == 200 and (body["name"], body["nsfw"], body["type"]) == ("gallery", True, 0)
    assert (await rest(fake, "GET", "/channels/123"))[1]["code"] == 10003


async def test_later_channels_and_nsfw_changes_reach_the_bot_before_the_next_event(
    probe: Probe, fake: FakeDiscord
) -> None:
    late = fake.text_channel("late")
    assert probe.get_channel(late) is None
    interaction, _ = await run_where(fake, in_channel=late)
    assert fake.message(interaction.message_id).content == f"{late} late nsfw=False"
    assert interaction.payload["channel_id"] == str(late) and interaction.payload["channel"]["name"] == "late"
    fake.set_nsfw(late, True)
    interaction, _ = await run_where(fake, in_channel=late)
    assert fake.message(interaction.message_id).content == f"{late} late nsfw=True"
    assert interaction.payload["channel"]["nsfw"] and probe.get_channel(late).is_nsfw()
    assert [event for event, data in fake.events if data.get("id") == str(late)] == ["CHANNEL_CREATE", "CHANNEL_UPDATE"]

    fake.set_nsfw(fake.channel_id, True)
    try:
        interaction, channel = await run_where(fake)
        assert fake.message(interaction.message_id).content == f"{fake.channel_id} general nsfw=True"
        assert channel is fake.channel_messages and (await rest(fake, "GET", f"/channels/{fake.channel_id}"))[1]["nsfw"]
    finally:
        fake.set_nsfw(fake.channel_id, False)
    with pytest.raises(AssertionError, match="no text channel"):
        await fake.invoke("where", in_channel=123)


async def test_the_bot_posts_replies_reacts_edits_and_deletes_in_any_channel(probe: Probe, fake: FakeDiscord) -> None:
    lounge = fake.text_channel("lounge")
    interaction, channel = await run_where(fake, in_channel=lounge)
    answer, extra = (fake.message(r.message_id) for r in interaction.replies if r.kind == "followup")
    assert answer.id == interaction.message_id and answer.channel_id == extra.channel_id == lounge
    assert extra.content == "more, edited" and answer.content == f"{lounge} lounge nsfw=False"
    assert [r.kind for r in channel.replies] == ["message", "message", "edit", "delete"]
    posted, reply = (fake.message(r.message_id) for r in channel.replies[:2])
    assert posted.channel_id == reply.channel_id == lounge and posted.deleted
    assert posted.reactions == {"✅": [fake.bot_user["id"]]} and reply.content == "a reply, edited"
    assert reply.message_reference == {"type": 0, "message_id": str(posted.id), "channel_id": str(lounge),
                                       "guild_id": str(fake.guild_id)}
    assert not any(r.message_id in (posted.id, reply.id) for r in fake.channel_messages.replies)

    said = await fake.post("hello there", in_channel=lounge)  # a member's message, and a reaction to it
    await fake.react(said.id, "🔁")
    again = await fake.messages_in(lounge).wait_for(lambda r: "again" in r.content)
    assert fake.message(again.message_id).message_reference["message_id"] == str(said.id)
    assert fake.reactions[said.id] == ["✅"] and said.channel_id == lounge


async def test_buttons_and_message_commands_act_where_the_message_is(probe: Probe, fake: FakeDiscord) -> None:
    studio = fake.text_channel("studio")
    painting = await fake.invoke("paint", prompt="dune", in_channel=studio)
    await painting.wait_for(is_callback)
    assert fake.message(painting.message_id).channel_id == studio
    click = await fake.click(painting.message_id, "new")
    await click.wait_for(is_callback)
    assert click.payload["channel_id"] == str(click.channel_id) == str(studio)
    assert fake.message(click.message_id).channel_id == studio
    choice = await fake.select(painting.message_id, "pick", ["a"])
    await choice.wait_for(is_callback)
    assert choice.payload["channel"]["name"] == "studio" and fake.message(painting.message_id).content == "picked a"
    menu = await fake.invoke_message_command("Dream info", painting.message_id)
    await menu.wait_for(is_callback)
    assert menu.payload["channel_id"] == str(studio) and fake.message(menu.message_id).channel_id == studio


async def test_a_command_in_a_dm_comes_as_discord_sends_it(probe: Probe, fake: FakeDiscord) -> None:
    hermit = fake.user("hermit")
    interaction, channel = await run_where(fake, user=hermit, in_dm=True)
    dm = fake.dm_channels[hermit["id"]]
    payload = interaction.payload
    assert "guild_id" not in payload and "member" not in payload and payload["user"] == hermit
    assert (payload["channel_id"], payload["channel"]["type"], payload["context"]) == (str(dm), 1, 1)
    assert payload["app_permissions"] == str(DM_APP_PERMISSIONS)
    assert payload["authorizing_integration_owners"] == {"0": "0"}
    answer, extra = (fake.message(r.message_id) for r in interaction.replies if r.kind == "followup")
    assert answer.content == f"dm {dm} private app={DM_APP_PERMISSIONS} user={hermit['id']}"
    assert answer.channel_id == extra.channel_id == dm and extra.content == "more, edited"
    webhook = f"/webhooks/{fake.application_id}/{interaction.token}"
    status, original = await rest(fake, "GET", f"{webhook}/messages/@original")
    assert status == 200 and "guild_id" not in original
    assert channel is fake.dm(hermit) and [r.kind for r in channel.replies] == ["message", "message", "edit", "delete"]
    reply = fake.message(channel.replies[1].message_id)
    assert reply.channel_id == dm and reply.message_reference["channel_id"] == str(dm)
    assert "guild_id" not in reply.message_reference
    with pytest.raises(AssertionError, match="not offered in DMs"):
        await fake.invoke("jobs admin purge", user=hermit, in_dm=True, count=1)

    private = await fake.invoke("secret", user=hermit, in_dm=True)  # a button in the DM: only hermit is there
    await private.wait_for(is_callback)
    click = await fake.click(private.message_id, "private-edit")
    await click.wait_for(is_callback)
    assert click.user == hermit and "guild_id" not in click.payload and click.payload["channel_id"] == str(dm)
    assert fake.message(private.message_id).content == "edited for hermit"
    said = await fake.post("psst", in_channel=dm)  # hermit writes to the bot
    await eventually(lambda: said.id in {m.id for m in probe.seen})
    seen = next(m for m in probe.seen if m.id == said.id)
    assert seen.guild is None and seen.author.id == int(hermit["id"]) and said.author == hermit


async def test_channel_role_and_mentionable_options_are_resolved(probe: Probe, fake: FakeDiscord) -> None:
    painters = fake.role("Painters")
    member = fake.user("looker", roles=[painters], permissions=MANAGE_MESSAGES)
    art = fake.text_channel("art", nsfw=True)
    interaction = await fake.invoke("look", user=member, channel=art, role=painters, someone=member)
    answer = await interaction.wait_for(is_callback)
    assert answer.content == f"{art} art nsfw=True role=Painters Member={member['id']}"
    data = interaction.payload["data"]
    assert data["options"] == [{"name": "channel", "type": 7, "value": str(art)},
                               {"name": "role", "type": 8, "value": painters["id"]},
                               {"name": "someone", "type": 9, "value": member["id"]}]
    channel = data["resolved"]["channels"][str(art)]
    assert {k: channel[k] for k in ("id", "name", "type", "nsfw", "parent_id", "permissions")} == {
        "id": str(art), "name": "art", "type": 0, "nsfw": True, "parent_id": None,
        "permissions": str(fake.permissions_of(member))}
    assert data["resolved"]["roles"] == {painters["id"]: painters} and member["id"] in data["resolved"]["members"]

    interaction = await fake.invoke("look", channel=str(fake.channel_id), someone=painters["id"])
    answer = await interaction.wait_for(is_callback)
    assert answer.content == f"{fake.channel_id} general nsfw=False Role={painters['id']}"
    assert interaction.payload["data"]["options"][1] == {"name": "someone", "type": 9, "value": painters["id"]}


async def test_buttons_on_ephemeral_messages_work_for_the_member_who_got_them(probe: Probe, fake: FakeDiscord) -> None:
    whisperer = fake.user("whisperer")
    command = await fake.invoke("secret", user=whisperer)
    await command.wait_for(is_callback)
    original = fake.message(command.message_id)
    assert original.ephemeral and original.custom_ids == ["private-edit", "private-answer"]
    with pytest.raises(AssertionError, match="only whisperer sees"):
        await fake.click(original.id, "private-edit", user=fake.user("snoop"))
    with pytest.raises(AssertionError, match="ephemeral"):
        await fake.react(original.id, "👍", user=whisperer)

    click = await fake.click(original.id, "private-answer")  # the recipient, by default
    answer = await click.wait_for(is_callback)
    assert click.user == whisperer and click.payload["message"]["flags"] & EPHEMERAL
    assert answer.payload["type"] == 4 and answer.ephemeral and fake.message(click.message_id).ephemeral
    assert answer.content == f"answered {original.id}"

    click = await fake.click(original.id, "private-edit", user=whisperer)
    answer = await click.wait_for(is_callback)
    assert answer.payload["type"] == 7 and click.message_id == original.id
    assert (original.content, original.components, original.edits, original.ephemeral) == (
        "edited for whisperer", [], 1, True)
    assert not any(event.startswith("MESSAGE") and data.get("id") == str(original.id) for event, data in fake.events)

    command = await fake.invoke("secret", user=whisperer, followup=True)
    reply = await command.wait_for(lambda r: r.kind == "followup")
    private = fake.message(reply.message_id)
    assert private.ephemeral and command.followup_ids == [private.id] and private.custom_ids
    click = await fake.click(private.id, "private-edit")
    answer = await click.wait_for(is_callback)
    assert answer.payload["type"] == 7 and (private.content, private.components) == ("edited for whisperer", [])


# -- several servers -------------------------------------------------------------------------------


async def test_servers_and_threads_made_before_the_bot_identifies_come_with_ready(
    probe: Probe, fake: FakeDiscord
) -> None:
    annex = discord.utils.get(probe.guilds, name="Annex")
    assert annex is not None and annex.id in fake.guilds and annex.id != fake.guild_id
    assert annex.preferred_locale == discord.Locale.french
    assert [c.id for c in annex.text_channels] == [fake.guilds[annex.id].channel_id]
    gallery = discord.utils.get(probe.get_all_channels(), name="gallery")
    thread = discord.utils.get(probe.get_guild(fake.guild_id).threads, name="making of")
    assert thread is not None and thread.parent is gallery and thread.is_nsfw()  # nsfw from its parent
    assert not any(data.get("id") in (str(annex.id), str(thread.id)) for event, data in fake.events
                   if event in ("GUILD_CREATE", "THREAD_CREATE"))


async def test_a_second_server_has_its_own_members_permissions_and_locale(probe: Probe, fake: FakeDiscord) -> None:
    guild_id = fake.add_guild("Second Lab", locale="de")
    await eventually(lambda: probe.get_guild(guild_id) is not None)  # at once, not with the next event
    assert [event for event, data in fake.events if data.get("id") == str(guild_id)] == ["GUILD_CREATE"]
    lobby = fake.guilds[guild_id].channel_id
    moderator = fake.user("moderator of two")  # a plain member of the first server…
    fake.join(moderator, guild_id, permissions=MANAGE_MESSAGES)  # …who moderates the second
    fake.guilds[guild_id].app_permissions = DEFAULT_PERMISSIONS | MANAGE_MESSAGES

    here = await fake.invoke("server", user=moderator, in_channel=lobby)
    answer = await here.wait_for(is_callback)
    assert answer.content == (f"guild={guild_id} locale=de manage=True app={DEFAULT_PERMISSIONS | MANAGE_MESSAGES} "
                              f"TextChannel text parent=None nsfw=False")
    payload = here.payload
    assert (payload["guild_id"], payload["guild_locale"], payload["authorizing_integration_owners"]) == (
        str(guild_id), "de", {"0": str(guild_id)})
    assert payload["member"]["user"] == moderator and fake.message(here.message_id).channel_id == lobby
    first = await (await fake.invoke("server", user=moderator)).wait_for(is_callback)
    assert first.content.startswith(f"guild={fake.guild_id} locale=en-US manage=False app={DEFAULT_PERMISSIONS} ")
    purge = await fake.invoke("jobs admin purge", user=moderator, in_channel=lobby, count=1)
    assert (await purge.wait_for(is_callback)).content == "count=1 manage=True cache=True app=True"
    with pytest.raises(AssertionError, match="not a member of server"):
        await fake.invoke("server", user=fake.user("outsider"), in_channel=lobby)

    interaction, channel = await run_where(fake, user=moderator, in_channel=lobby)  # the bot answers and posts there
    assert [r.kind for r in channel.replies] == ["message", "message", "edit", "delete"]
    posted, reply = (fake.message(r.message_id) for r in channel.replies[:2])
    assert posted.channel_id == reply.channel_id == lobby and posted.reactions == {"✅": [fake.bot_user["id"]]}
    assert reply.message_reference["guild_id"] == str(guild_id)
    deleted = {"id": str(posted.id), "channel_id": str(lobby), "guild_id": str(guild_id)}
    assert ("MESSAGE_DELETE", deleted) in fake.events

    painting = await fake.invoke("paint", user=moderator, prompt="alps", in_channel=lobby)
    await painting.wait_for(is_callback)
    click = await fake.click(painting.message_id, "new")  # by a new member of the second server
    await click.wait_for(is_callback)
    assert click.payload["guild_id"] == str(guild_id) and click.user["id"] in fake.guilds[guild_id].members
    assert click.user["id"] not in fake.members and fake.message(click.message_id).channel_id == lobby
    menu = await fake.invoke_message_command("Dream info", painting.message_id, user=moderator)
    await menu.wait_for(is_callback)
    assert menu.payload["guild_id"] == str(guild_id) and fake.message(menu.message_id).channel_id == lobby
    await fake.react(painting.message_id, "🔁", user=moderator)
    again = await fake.messages_in(lobby).wait_for(lambda r: "again" in r.content)
    raw = probe.raw_reactions[-1]
    assert (raw.guild_id, raw.channel_id, raw.member.id) == (guild_id, lobby, int(moderator["id"]))
    assert fake.message(again.message_id).message_reference["guild_id"] == str(guild_id)


async def test_guild_commands_belong_to_their_server_and_global_ones_to_all(probe: Probe, fake: FakeDiscord) -> None:
    guild_id = fake.add_guild("Commands Lab")
    route = f"/applications/{fake.application_id}/guilds/{guild_id}/commands"
    status, body = await rest(fake, "PUT", route, json=[{"name": "local", "description": "Only here", "type": 1}])
    assert status == 200 and body[0]["guild_id"] == str(guild_id)
    assert fake.command("local", guild_id=guild_id)["id"] == body[0]["id"]
    assert (await rest(fake, "GET", route))[1] == body
    with pytest.raises(AssertionError, match="no command 'local'"):
        await fake.invoke("local")  # the first server has no such command
    assert fake.command("paint", guild_id=guild_id) is fake.command("paint")  # global: in every server
    first = f"/applications/{fake.application_id}/guilds/{fake.guild_id}/commands"
    assert (await rest(fake, "GET", first))[1] == []
    status, body = await rest(fake, "PUT", f"/applications/{fake.application_id}/guilds/123/commands", json=[])
    assert (status, body["code"]) == (403, 50001)  # a server the bot is not in


# -- threads ---------------------------------------------------------------------------------------


async def test_a_thread_interaction_comes_from_the_thread_and_follows_its_parent(
    probe: Probe, fake: FakeDiscord
) -> None:
    parent = fake.text_channel("workshop")
    thread_id = fake.thread(parent, "ideas")
    await eventually(lambda: probe.get_channel(thread_id) is not None)  # THREAD_CREATE, at once
    created = next(data for event, data in fake.events if event == "THREAD_CREATE" and data["id"] == str(thread_id))
    assert created["newly_created"] and created["parent_id"] == str(parent)
    thread = probe.get_channel(thread_id)
    assert isinstance(thread, discord.Thread) and thread.parent_id == parent and thread.guild.id == fake.guild_id

    interaction = await fake.invoke("server", in_channel=thread_id)
    answer = await interaction.wait_for(is_callback)
    assert answer.content.endswith(f" Thread public_thread parent={parent} nsfw=False")
    channel = interaction.payload["channel"]
    assert (interaction.payload["channel_id"], channel["type"], channel["parent_id"], channel["guild_id"]) == (
        str(thread_id), 11, str(parent), str(fake.guild_id))
    assert not channel["thread_metadata"]["archived"] and fake.message(interaction.message_id).channel_id == thread_id

    fake.set_nsfw(parent, True)
    interaction = await fake.invoke("server", in_channel=thread_id)
    answer = await interaction.wait_for(is_callback)
    assert answer.content.endswith("nsfw=True") and interaction.payload["channel"]["nsfw"]
    assert (await rest(fake, "GET", f"/channels/{thread_id}"))[1]["nsfw"]
    with pytest.raises(AssertionError, match="is a thread"):
        fake.set_nsfw(thread_id, False)

    private = fake.thread(parent, "secret plans", private=True)
    interaction = await fake.invoke("server", in_channel=private)
    answer = await interaction.wait_for(is_callback)
    assert answer.content.endswith(f" Thread private_thread parent={parent} nsfw=True")
    assert interaction.payload["channel"]["type"] == 12
    assert probe.get_channel(private).me is not None  # the bot was added to it


async def test_the_bot_posts_reacts_edits_and_deletes_in_a_thread(probe: Probe, fake: FakeDiscord) -> None:
    parent = fake.text_channel("forge")
    thread_id = fake.thread(parent, "drafts")
    fake.app_permissions = DEFAULT_PERMISSIONS & ~SEND_MESSAGES  # a thread needs Send Messages in Threads instead
    try:
        interaction, channel = await run_where(fake, in_channel=thread_id)
    finally:
        fake.app_permissions = DEFAULT_PERMISSIONS
    assert fake.message(interaction.message_id).content == f"{thread_id} drafts nsfw=False"
    assert channel is fake.messages_in(thread_id) and not fake.messages_in(parent).replies
    assert [r.kind for r in channel.replies] == ["message", "message", "edit", "delete"]
    posted, reply = (fake.message(r.message_id) for r in channel.replies[:2])
    assert posted.channel_id == reply.channel_id == thread_id and posted.deleted
    assert posted.reactions == {"✅": [fake.bot_user["id"]]} and reply.content == "a reply, edited"
    assert reply.message_reference == {"type": 0, "message_id": str(posted.id), "channel_id": str(thread_id),
                                       "guild_id": str(fake.guild_id)}

    said = await fake.post("in the thread", in_channel=thread_id)
    await fake.react(said.id, "🔁")
    again = await fake.messages_in(thread_id).wait_for(lambda r: "again" in r.content)
    assert fake.message(again.message_id).channel_id == thread_id and fake.reactions[said.id] == ["✅"]

    fake.app_permissions = DEFAULT_PERMISSIONS & ~SEND_MESSAGES_IN_THREADS
    try:
        assert (await rest(fake, "POST", f"/channels/{thread_id}/messages", json={"content": "x"}))[1]["code"] == 50013
        assert (await rest(fake, "POST", f"/channels/{parent}/messages", json={"content": "x"}))[0] == 200
    finally:
        fake.app_permissions = DEFAULT_PERMISSIONS


# -- the upload hook -------------------------------------------------------------------------------


async def test_the_upload_hook_holds_back_the_answer_to_an_upload(probe: Probe, fake: FakeDiscord) -> None:
    held: list[Message] = []
    release = asyncio.Event()

    async def hold(message: Message) -> None:
        held.append(message)
        await release.wait()

    channel = probe.get_channel(fake.channel_id)
    fake.upload_hook = hold
    try:
        await asyncio.wait_for(channel.send("no file"), 5)  # never held
        assert not held
        sending = asyncio.create_task(channel.send("a file", file=discord.File(io.BytesIO(png()), "held.png")))
        await eventually(lambda: bool(held))
        await asyncio.sleep(0.2)
        assert not sending.done()  # the client is still waiting for Discord's answer…
        message = held[0]  # …though the message is there, as stored, and recorded
        assert message is fake.message(message.id) and [a.filename for a in message.attachments] == ["held.png"]
        assert fake.channel_messages.replies[-1].message_id == message.id
        release.set()
        assert (await asyncio.wait_for(sending, 5)).id == message.id
    finally:
        fake.upload_hook = None
        release.set()


async def test_the_upload_hook_sees_every_interaction_upload_and_nothing_else(probe: Probe, fake: FakeDiscord) -> None:
    held: list[Message] = []

    async def note(message: Message) -> None:
        held.append(message)

    fake.upload_hook = note
    try:
        painting = await fake.invoke("paint", prompt="hooked")  # a callback with a file
        await painting.wait_for(is_callback)
        posted = await fake.invoke("legacy", mode="post")  # a defer, a file-less edit, an @original edit with a file
        await posted.wait_for(lambda r: r.kind == "edit" and bool(r.files))
        assert [(m.id, m.content) for m in held] == [(painting.message_id, "hooked"), (posted.message_id, "done")]

        ignored = await fake.invoke("ignore")  # answered by hand: a followup with a file, and edits
        webhook = f"/webhooks/{fake.application_id}/{ignored.token}"
        await rest(fake, "POST", f"/interactions/{ignored.id}/{ignored.token}/callback", json={"type": 4,
                   "data": {"content": "plain"}})
        status, body = await rest(fake, "POST", webhook, data=with_file({"content": "with a file"}))
        assert status == 200 and held[-1].id == int(body["id"]) and held[-1].content == "with a file"
        assert (await rest(fake, "PATCH", f"{webhook}/messages/@original", json={"content": "edited"}))[0] == 200
        assert len(held) == 3

        channel = f"/channels/{fake.channel_id}/messages"  # the bot's own message in a channel, edited
        status, body = await rest(fake, "POST", channel, json={"content": "text only"})
        assert (await rest(fake, "PATCH", f"{channel}/{body['id']}", json={"content": "still text"}))[0] == 200
        assert len(held) == 3
        edit = with_file({"content": "now a picture"})
        assert (await rest(fake, "PATCH", f"{channel}/{body['id']}", data=edit))[0] == 200
        assert (held[-1].id, held[-1].content, len(held)) == (int(body["id"]), "now a picture", 4)
    finally:
        fake.upload_hook = None
