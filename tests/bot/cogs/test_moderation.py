"""/mod end to end: `python -m bot` (tiny model) through the loopback fake Discord. Who may use each
moderator command, the prompt filter, bans, the mod-log and the audit trail."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
import pytest_asyncio

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Interaction

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGE_GUILD = 1 << 5
REFUSED = "Only members with the Manage Server permission or this server's moderator role can use /mod."


def rows(bot: BotProcess, sql: str, *args) -> list[sqlite3.Row]:
    with sqlite3.connect(bot.database) as db:
        db.row_factory = sqlite3.Row
        return db.execute(sql, args).fetchall()


def audit(bot: BotProcess) -> list[tuple]:
    return [tuple(row) for row in rows(bot, "SELECT actor_id, action, target, old_value, new_value FROM audit_log "
                                            "ORDER BY id")]


async def answer(interaction: Interaction) -> str:
    """The text the member reads: the first reply with content."""
    return (await interaction.wait_for(lambda reply: bool(reply.content))).content


async def private_answer(interaction: Interaction) -> str:
    reply = await interaction.wait_for(lambda reply: bool(reply.content) and reply.ephemeral)
    return reply.content


@pytest.fixture(scope="module")
def people(fake: FakeDiscord) -> dict[str, dict]:
    mods = fake.role("Dream mods")
    return {
        "member": fake.user("member"),
        "moderator role": fake.user("modrole", roles=[mods]),
        "manage server": fake.user("admin", permissions=MANAGE_GUILD),
        "owner": fake.owner,
        "_role": mods,
    }


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def modlog(fake: FakeDiscord, bot: BotProcess, people) -> int:
    """A mod-log channel and the moderator role, set up by the server's owner."""
    channel = fake.text_channel("mod-log")
    assert "now reports to" in await answer(await fake.invoke("mod modlog", people["owner"], channel=channel))
    assert "can now use /mod" in await answer(await fake.invoke("mod role", people["owner"], role=people["_role"]))
    return channel


async def test_mod_is_one_group_hidden_from_members_and_dms(bot: BotProcess, fake: FakeDiscord) -> None:
    mod = fake.command("mod")
    assert mod["default_member_permissions"] == str(MANAGE_GUILD)
    assert mod.get("contexts") == [0] or mod.get("dm_permission") is False
    assert {option["name"] for option in mod["options"]} == {
        "filter", "words", "adapters", "model", "modlog", "role", "ban", "unban", "history", "audit", "workers"}
    for name in ("history", "forget"):
        fake.command(name)


# Each moderator command in a form that changes nothing (or undoes itself), and what it answers.
CALLS = [
    ("mod filter", {}, "Safety filter"),
    ("mod words", {"action": "list"}, "blocked in this server"),
    ("mod modlog", {}, "Mod-log:"),
    ("mod role", {}, "Moderator role:"),
    ("mod ban", {"member": "target"}, "can no longer use Dreambot"),
    ("mod unban", {"member": "target"}, "was not barred"),
    ("mod history", {"member": "target"}, "Dreambot history"),
    ("mod filter", {"mode": "block"}, "safety filter mode is now **block**"),
    ("mod words", {"action": "add", "word": "matrixword"}, "`matrixword`"),
    ("mod words", {"action": "remove", "word": "matrixword"}, "`matrixword`"),
    ("mod audit", {}, "moderation changes"),
]


@pytest.mark.parametrize("who", ["member", "moderator role", "manage server", "owner"])
@pytest.mark.parametrize(("command", "options", "expected"), CALLS, ids=[c[0] for c in CALLS])
async def test_the_permission_matrix(bot: BotProcess, fake: FakeDiscord, people, modlog, who: str, command: str,
                                     options: dict, expected: str) -> None:
    target = fake.user("target")
    options = {key: target if value == "target" else value for key, value in options.items()}
    before = audit(bot)
    text = await answer(await fake.invoke(command, people[who], **options))
    if who == "member":
        assert text == REFUSED
        assert audit(bot) == before  # and nothing changed
    else:
        assert expected in text and text != REFUSED


@pytest.mark.parametrize(("who", "allowed"), [("member", False), ("moderator role", False),
                                              ("manage server", True), ("owner", True)])
async def test_only_manage_server_chooses_the_moderator_role(bot: BotProcess, fake: FakeDiscord, people, modlog,
                                                             who: str, allowed: bool) -> None:
    text = await answer(await fake.invoke("mod role", people[who], role=people["_role"]))
    if allowed:
        assert "can now use /mod" in text
    else:
        assert text in (REFUSED, "Only members with the Manage Server permission can choose the moderator role.")
    assert rows(bot, "SELECT moderator_role_id FROM guild_settings")[0][0] == int(people["_role"]["id"])


async def test_a_blocked_word_refuses_the_prompt_without_echoing_it(bot: BotProcess, fake: FakeDiscord, people,
                                                                    modlog) -> None:
    mod = people["moderator role"]
    assert "are now refused" in await answer(await fake.invoke("mod words", mod, action="add", word="Gore"))
    jobs_before = len(rows(bot, "SELECT id FROM jobs"))
    member = fake.user("artist")
    for prompt in ("a GÖRE scene", "ｇｏｒｅ everywhere", "g\u200bore", "gоre (Cyrillic o)", "g0re"):
        text = await private_answer(await fake.invoke("dream", member, prompt=prompt, steps=2))
        assert "moderators have blocked" in text and "gore" not in text.lower(), prompt
    assert len(rows(bot, "SELECT id FROM jobs")) == jobs_before  # nothing recorded, nothing queued
    # The negative prompt and the style's words are checked too.
    text = await private_answer(await fake.invoke("dream", member, prompt="a fox", negative="gore", steps=2))
    assert "moderators have blocked" in text
    # Whole words only: "gorestyle" is another word.
    done = await fake.invoke("dream", member, prompt="a gorestyle fox", steps=2)
    await done.wait_for(lambda reply: bool(reply.files))
    # The mod-log names the member, the term and the prompt.
    log = fake.messages_in(modlog)
    refused = [reply.content for reply in log.replies if "was refused" in reply.content]
    assert refused and f"<@{member['id']}>" in refused[0] and "`gore`" in refused[0]


async def test_a_style_whose_words_are_blocked_is_refused(bot: BotProcess, fake: FakeDiscord, people, modlog) -> None:
    owner = people["owner"]
    await answer(await fake.invoke("mod words", owner, action="add", word="watercolor painting"))
    text = await private_answer(await fake.invoke("dream", fake.user("painter"), prompt="a fox", style="watercolor",
                                                  steps=2))
    assert "moderators have blocked" in text
    assert "no longer blocked" in await answer(await fake.invoke("mod words", owner, action="remove",
                                                                 word="Watercolor  painting"))


async def test_patterns_are_validated_when_added(bot: BotProcess, fake: FakeDiscord, people, modlog) -> None:
    mod = people["manage server"]
    for pattern, why in [("(a", "never closed"), ("(?=x)y", "lookahead"), (r"(a)\1", "backreferences"),
                         ("a*", "empty string")]:
        text = await answer(await fake.invoke("mod words", mod, action="add", word=pattern, pattern=True))
        assert text.startswith("⚠️ The pattern") and why in text, pattern
    assert "are now refused" in await answer(await fake.invoke("mod words", mod, action="add",
                                                               word=r"\d+\s*yo\b", pattern=True))
    text = await private_answer(await fake.invoke("dream", fake.user("m"), prompt="a 12 yo wizard", steps=2))
    assert "moderators have blocked" in text
    listing = await answer(await fake.invoke("mod words", mod, action="list"))
    assert "`gore`" in listing and r"`\d+\s*yo\b`" in listing
    assert [row[0] for row in rows(bot, "SELECT term FROM blocked_terms WHERE kind = 'pattern'")] == [r"\d+\s*yo\b"]


async def test_a_banned_member_cannot_dream_or_press_buttons_until_unbanned(bot: BotProcess, fake: FakeDiscord,
                                                                             people, modlog) -> None:
    member, mod = fake.user("troll"), people["moderator role"]
    made = await fake.invoke("dream", member, prompt="a fox", steps=2)
    await made.wait_for(lambda reply: bool(reply.files))
    assert "can no longer use Dreambot" in await answer(
        await fake.invoke("mod ban", mod, member=member, reason="spam"))
    text = await private_answer(await fake.invoke("dream", member, prompt="a fox", steps=2))
    assert text == "🚫 A moderator has barred you from using Dreambot in this server."
    job_id = rows(bot, "SELECT id FROM jobs WHERE user_id = ?", int(member["id"]))[0][0]
    clicked = await fake.click(made.message_id, f"dream:reroll:{job_id}", user=member)
    assert "barred you" in await private_answer(clicked)
    # Others may still use the buttons on the banned member's result.
    other = await fake.click(made.message_id, f"dream:reroll:{job_id}", user=fake.user("friend"))
    await other.wait_for(lambda reply: reply.kind == "callback")
    assert "was already barred" in await answer(await fake.invoke("mod ban", mod, member=member))
    assert "again" in await answer(await fake.invoke("mod unban", mod, member=member))
    again = await fake.invoke("dream", member, prompt="a fox", steps=2)
    await again.wait_for(lambda reply: bool(reply.files))
    assert "You cannot bar yourself." in await answer(await fake.invoke("mod ban", mod, member=mod))
    log = [reply.content for reply in fake.messages_in(modlog).replies]
    assert any("barred" in line and "spam" in line for line in log)
    assert any("use Dreambot again" in line for line in log)


async def test_the_threshold_is_bounded_by_the_classifier_and_recorded_on_jobs(bot: BotProcess, fake: FakeDiscord,
                                                                               people, modlog) -> None:
    mod = people["owner"]
    text = await answer(await fake.invoke("mod filter", mod, threshold=0.99))
    assert "between 0.05 and 0.95" in text and "opennsfw" in text
    assert "above **0.3**" in await answer(await fake.invoke("mod filter", mod, threshold=0.3))
    made = await fake.invoke("dream", fake.user("x"), prompt="a fox", steps=2)
    await made.wait_for(lambda reply: bool(reply.files))
    job = bot.jobs()[-1]
    assert (job["nsfw_threshold"], job["nsfw_mode"]) == (0.3, "block")
    shown = await answer(await fake.invoke("mod filter", mod))
    assert "Threshold: 0.3" in shown and "classifier opennsfw" in shown


async def test_every_change_is_audited_and_reported(bot: BotProcess, fake: FakeDiscord, people, modlog) -> None:
    owner = people["owner"]
    actions = [row[1] for row in audit(bot)]
    for action in ("modlog", "moderator_role", "words.add", "words.remove", "ban", "unban", "filter.threshold"):
        assert action in actions
    assert all(row[0] for row in audit(bot))  # who
    assert all(row["created_at"] for row in rows(bot, "SELECT created_at FROM audit_log"))  # when
    reported = [reply.content for reply in fake.messages_in(modlog).replies]
    assert any("changed the safety filter threshold: 0.5 → 0.3" in line for line in reported)
    assert all(not reply.files for reply in fake.messages_in(modlog).replies)
    listed = await answer(await fake.invoke("mod audit", owner))
    assert "safety threshold" in listed and "barred" in listed


async def test_a_mod_log_channel_the_bot_cannot_post_in_is_refused(bot: BotProcess, fake: FakeDiscord, people,
                                                                   modlog) -> None:
    hidden = fake.text_channel("hidden")
    saved = fake.app_permissions
    fake.app_permissions = saved & ~(1 << 11)  # no Send Messages
    try:
        text = await answer(await fake.invoke("mod modlog", people["owner"], channel=hidden))
    finally:
        fake.app_permissions = saved
        await asyncio.sleep(0)
    assert "cannot post in" in text
    assert rows(bot, "SELECT modlog_channel_id FROM guild_settings")[0][0] == modlog


async def test_moderators_cannot_bar_those_above_them(bot: BotProcess, fake: FakeDiscord, people, modlog) -> None:
    modrole, admin = people["moderator role"], people["manage server"]
    text = await answer(await fake.invoke("mod ban", modrole, member=admin))
    assert "has Manage Server" in text
    other_mod = fake.user("othermod", roles=[people["_role"]])
    assert "Only members with Manage Server can bar a moderator." in await answer(
        await fake.invoke("mod ban", modrole, member=other_mod))
    assert "can no longer use Dreambot" in await answer(await fake.invoke("mod ban", admin, member=other_mod))
    await answer(await fake.invoke("mod unban", admin, member=other_mod))
    everyone = {"id": str(fake.guild_id), "name": "@everyone", "permissions": "0"}
    assert "cannot be the moderator role" in await answer(await fake.invoke("mod role", admin, role=everyone))
