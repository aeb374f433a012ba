"""Many models in Discord: the `model` option and its suggestions, /models, /mod model (a server's
and a channel's default, a channel's allowed models), /settings (a member's own defaults), the
precedence between them, the `aspect` option, and all of it after a restart.

Which rule guards each path to a model a channel does not allow:
- the command's option: `bot.requests.pick_model` refuses it (⚠️, nothing queued);
- a member's own default, a server's: `pick_model` passes over it to one the channel allows;
- a button on an older result, and a job queued before the channel changed: `Moderation.check_model`
  in `admit` and in `JobRunner.gate`.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from engine.tiny import write_tiny_model
from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord, Interaction, Reply
from tests.support.models import tiny_sdxl_model

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGE_GUILD = 1 << 5


@pytest.fixture(scope="module")
def models_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model, folder / "tiny")
    shutil.copytree(tiny_sdxl_model(tmp_path_factory), folder / "xl")
    write_tiny_model(folder / "sd2", family="sd2", single_file=True)  # a single file, in the original layout
    (folder / "models.toml").write_text(
        'default = "tiny"\n'
        '[models.xl]\nname = "Tiny XL"\ndescription = "Two text encoders, tiny."\nsteps = 3\nguidance = 4\n'
        '[models.tiny]\nname = "Tiny"\nsteps = 2\n', encoding="utf-8")
    return folder


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, models_dir: Path, tmp_path_factory):
    # SD_MODEL left unset: models.toml's default is the bot's.
    process = BotProcess(fake, tmp_path_factory.mktemp("bot"), "", MODELS_DIR=str(models_dir))
    await process.start()
    yield process
    await process.stop()


@pytest.fixture(scope="module")
def moderator(fake: FakeDiscord) -> dict:
    return fake.user("models-admin", permissions=MANAGE_GUILD)


def posted(reply: Reply) -> bool:
    return reply.kind == "edit" and any(f.filename.startswith("dream-") for f in reply.files)


def size(reply: Reply) -> tuple[int, int]:
    [upload] = [f for f in reply.files if f.filename.startswith("dream-")]
    return Image.open(io.BytesIO(upload.data)).size


async def private_answer(interaction: Interaction) -> str:
    return (await interaction.wait_for(lambda reply: bool(reply.content) and reply.ephemeral)).content


async def model_of(bot: BotProcess, interaction: Interaction) -> str:
    """The model the job of this command ran on, once its result is posted."""
    await interaction.wait_for(posted)
    [row] = bot.jobs("interaction_id = ?", interaction.id)
    return row["model"]


async def test_every_generating_command_takes_a_model_with_suggestions(bot: BotProcess, fake: FakeDiscord) -> None:
    for name in ("dream", "inpaint", "outpaint", "interpolate"):
        options = {o["name"]: o for o in fake.command(name)["options"]}
        assert options["model"]["type"] == 3 and options["model"]["autocomplete"] is True
    aspects = {o["name"]: o for o in fake.command("dream")["options"]}["aspect"]
    assert [c["value"] for c in aspects["choices"]] == ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9"]
    every = await fake.autocomplete("dream", "model", "", prompt="a fox")
    assert [c["value"] for c in every] == ["sd2", "tiny", "xl"]
    assert every[0]["name"] == "sd2 · SD 2.x (v)"  # the family, from the file's weights and metadata
    assert every[1]["name"] == "Tiny · SD 1.x (default)"  # models.toml's display name, the family, the default
    assert every[2]["name"] == "Tiny XL · SDXL [xl]"
    assert [c["value"] for c in await fake.autocomplete("inpaint", "model", "XL")] == ["xl"]


async def test_a_job_runs_on_the_model_it_names_with_that_models_defaults(bot: BotProcess, fake: FakeDiscord) -> None:
    default = await fake.invoke("dream", prompt="a fox", seed=1)
    chosen = await fake.invoke("dream", prompt="a fox", seed=1, model="XL")  # any case, as typed
    assert await model_of(bot, default) == "tiny" and await model_of(bot, chosen) == "xl"
    rows = {row["model"]: row for row in bot.jobs()}
    assert rows["tiny"]["num_inference_steps"] == 2 and rows["xl"]["num_inference_steps"] == 3  # models.toml
    assert rows["xl"]["guidance_scale"] == 4.0
    single = await fake.invoke("dream", prompt="a fox", seed=1, steps=2, model="sd2")
    assert await model_of(bot, single) == "sd2"  # a single file, loaded offline
    unknown = await fake.invoke("dream", prompt="a fox", model="nope")
    assert "There is no model named “nope” (installed: sd2, tiny, xl)" in await private_answer(unknown)


async def test_buttons_reuse_the_jobs_model(bot: BotProcess, fake: FakeDiscord) -> None:
    first = await fake.invoke("dream", prompt="a fox", seed=2, model="xl")
    await first.wait_for(posted)
    [row] = bot.jobs("interaction_id = ?", first.id)
    await until(lambda: bot.jobs("id = ?", row["id"])[0]["message_id"] is not None)
    message_id = bot.jobs("id = ?", row["id"])[0]["message_id"]
    await fake.click(message_id, f"dream:reroll:{row['id']}")
    await until(lambda: any(r["parent_job_id"] == row["id"] and r["status"] == "done" for r in bot.jobs()))
    [child] = [r for r in bot.jobs() if r["parent_job_id"] == row["id"]]
    assert child["model"] == "xl"


async def test_aspect_gives_the_ratio_at_the_models_pixel_count(bot: BotProcess, fake: FakeDiscord) -> None:
    wide = await fake.invoke("dream", prompt="a fox", seed=3, aspect="16:9", model="xl")
    width, height = size(await wide.wait_for(posted))
    assert abs(width / height / (16 / 9) - 1) <= 0.05
    # The tiny models are 64×64: 16:9 at that count would be 85×48, under the 64-pixel minimum side;
    # the picture grows to keep the ratio (real models' sizes: tests/dreambot/test_models.py).
    assert (width, height) == (112, 64)
    both = await fake.invoke("dream", prompt="a fox", aspect="16:9", width=128)
    assert "aspect ratio or a width and height, not both" in await private_answer(both)


async def test_precedence_option_member_channel_server(bot: BotProcess, fake: FakeDiscord, moderator: dict) -> None:
    member = fake.user("chooser")
    channel = fake.text_channel("anime")
    answer = await private_answer(await fake.invoke("mod model", moderator, action="default", model="xl"))
    assert "default model of this server is now **xl**" in answer
    assert await model_of(bot, await fake.invoke("dream", member, prompt="a fox", seed=4)) == "xl"  # the server's
    await private_answer(await fake.invoke("mod model", moderator, action="default", model="tiny", channel=channel))
    in_channel = await fake.invoke("dream", member, in_channel=channel, prompt="a fox", seed=4)
    assert await model_of(bot, in_channel) == "tiny"  # the channel's over the server's
    panel = await fake.invoke("settings", member, model="xl", steps=4)
    assert "Model: **Tiny XL · SDXL** (yours)" in await private_answer(panel)
    mine = await fake.invoke("dream", member, in_channel=channel, prompt="a fox", seed=4)
    assert await model_of(bot, mine) == "xl"  # the member's over the channel's
    assert bot.jobs("interaction_id = ?", mine.id)[0]["num_inference_steps"] == 4  # theirs over the model's
    option = await fake.invoke("dream", member, in_channel=channel, prompt="a fox", seed=4, model="tiny", steps=2)
    assert await model_of(bot, option) == "tiny"  # the option over everything
    audit = await private_answer(await fake.invoke("mod audit", moderator))
    assert f"default model <\\#{channel}\\>: \\(none\\) → tiny" in audit
    assert "default model: \\(none\\) → xl" in audit


async def test_a_channel_restriction_holds_on_every_path(bot: BotProcess, fake: FakeDiscord, moderator: dict) -> None:
    member = fake.user("restricted")
    channel = fake.text_channel("only-tiny")
    answer = await private_answer(await fake.invoke("mod model", moderator, action="allow", model="tiny",
                                                    channel=channel))
    assert "now allows tiny" in answer
    refused = await fake.invoke("dream", member, in_channel=channel, prompt="a fox", model="xl")
    assert "not used in this channel; its moderators allow tiny here" in await private_answer(refused)
    assert not bot.jobs("interaction_id = ?", refused.id)  # nothing queued
    await private_answer(await fake.invoke("settings", member, model="xl"))
    fallback = await fake.invoke("dream", member, in_channel=channel, prompt="a fox", seed=5)
    assert await model_of(bot, fallback) == "tiny"  # their own default is passed over here
    suggested = await fake.autocomplete("dream", "model", "", member, in_channel=channel)
    assert [c["value"] for c in suggested] == ["tiny"]
    # A result made on xl elsewhere, brought into the channel through a button: refused there too.
    elsewhere = await fake.invoke("dream", member, prompt="a fox", seed=5)
    assert await model_of(bot, elsewhere) == "xl"
    [row] = bot.jobs("interaction_id = ?", elsewhere.id)
    await private_answer(await fake.invoke("mod model", moderator, action="disallow", model="xl",
                                           channel=fake.channel_id))
    await until(lambda: bot.jobs("id = ?", row["id"])[0]["message_id"] is not None)
    click = await fake.click(bot.jobs("id = ?", row["id"])[0]["message_id"], f"dream:reroll:{row['id']}", member)
    assert "not used in this channel" in await private_answer(click)
    await fake.invoke("mod model", moderator, action="allow-all", channel=fake.channel_id)


async def test_a_job_queued_before_the_restriction_is_stopped_as_it_starts(bot: BotProcess, fake: FakeDiscord,
                                                                          moderator: dict) -> None:
    """The rule that guards this path: the start-of-job gate (`JobRunner.gate` → `check_model`)."""
    channel = fake.text_channel("closing-soon")
    blocker = await fake.invoke("dream", fake.user("busy"), prompt="keeps the engine busy", steps=50, width=512,
                                height=512, model="tiny")
    await until(lambda: [r["status"] for r in bot.jobs("interaction_id = ?", blocker.id)] == ["running"])
    waiting = await fake.invoke("dream", fake.user("patient"), in_channel=channel, prompt="a fox", model="xl")
    await waiting.wait_for(lambda reply: "ahead of yours" in reply.content)
    await private_answer(await fake.invoke("mod model", moderator, action="allow", model="tiny", channel=channel))
    told = await waiting.wait_for(lambda reply: "The model “xl” is not used in this channel" in reply.content,
                                  timeout=120)
    assert not told.files
    assert bot.jobs("interaction_id = ?", waiting.id)[0]["status"] == "failed"


async def test_the_settings_panel_changes_and_forget_erases(bot: BotProcess, fake: FakeDiscord) -> None:
    member = fake.user("panel")
    panel = await fake.invoke("settings", member, model="tiny")
    reply = await panel.wait_for(lambda r: bool(r.content) and r.ephemeral)
    assert "Model: **Tiny · SD 1.x** (yours)" in reply.content
    message_id = reply.message_id
    changed = await fake.select(message_id, "settings:aspect", ["16:9"], member)
    assert "**16:9** (yours)" in (await changed.wait_for(lambda r: "16:9" in (r.content or ""))).content
    await fake.click(message_id, "settings:steps:5", member)
    await until(lambda: bot_settings(bot, member).get("steps") is not None)
    assert bot_settings(bot, member) == {"model": "tiny", "aspect": "16:9", "steps": 7}  # the model's 2, plus 5
    await fake.select(message_id, "settings:model", ["-"], member)  # back to the channel's or server's
    await until(lambda: "model" not in bot_settings(bot, member))
    bad = await fake.invoke("settings", member, steps=60)
    assert "Steps must be between 1 and 50" in await private_answer(bad)
    question = await (await fake.invoke("forget", member)).wait_for(lambda r: bool(r.content) and r.ephemeral)
    await fake.click(question.message_id, f"forget:{member['id']}:erase", member)
    await until(lambda: bot_settings(bot, member) == {})  # /forget erases a member's defaults too


def bot_settings(bot: BotProcess, user: dict) -> dict:
    connection = sqlite3.connect(f"file:{bot.database}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute("SELECT settings FROM member_settings WHERE user_id = ?",
                                 (int(user["id"]),)).fetchone()
    finally:
        connection.close()
    return json.loads(row[0]) if row else {}


async def test_models_lists_the_catalogue(bot: BotProcess, fake: FakeDiscord) -> None:
    text = await private_answer(await fake.invoke("models"))
    assert "**tiny** — Tiny · SD 1.x · 64×64 · 2 steps" in text
    assert "**xl** — Tiny XL · SDXL · 64×64 · 3 steps · loaded now" in text
    assert "Two text encoders, tiny." in text


async def test_settings_survive_a_restart(bot: BotProcess, fake: FakeDiscord, moderator: dict) -> None:
    member = fake.user("returning")
    channel = fake.text_channel("after-restart")
    await private_answer(await fake.invoke("mod model", moderator, action="default", model="tiny", channel=channel))
    await private_answer(await fake.invoke("settings", member, sampler="Euler"))
    await bot.stop()
    await bot.start()
    job = await fake.invoke("dream", member, in_channel=channel, prompt="a fox", seed=6)
    assert await model_of(bot, job) == "tiny"
    assert bot.jobs("interaction_id = ?", job.id)[0]["scheduler"] == "Euler"
