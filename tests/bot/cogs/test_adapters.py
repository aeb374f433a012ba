"""LoRAs and embeddings in Discord: the `lora` option and its suggestions, /loras, /mod adapters, and
the rules that hold on every path (the command, the tag typed in the prompt, a re-roll button)."""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
from pathlib import Path

import pytest
import pytest_asyncio
import safetensors.torch
import torch
from PIL import Image

from bot.views import ADAPTERS_PAGE_SIZE
from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord, Interaction, Reply
from tests.support.loras import write_lora

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGE_GUILD = 1 << 5
EXTRA = ADAPTERS_PAGE_SIZE  # enough LoRAs for a second page


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, tiny_model: Path, tmp_path_factory):
    loras, embeddings = tmp_path_factory.mktemp("loras"), tmp_path_factory.mktemp("embeddings")
    write_lora(tiny_model, loras / "glow.safetensors", seed=1,
               metadata={"modelspec.trigger_phrase": "glowing, neon", "modelspec.description": "Everything glows."})
    write_lora(tiny_model, loras / "ink.safetensors", seed=2, kohya=True)
    for n in range(EXTRA):
        shutil.copy(loras / "ink.safetensors", loras / f"zz{n}.safetensors")
    safetensors.torch.save_file({"emb_params": torch.randn(1, 32)}, str(embeddings / "fuzzy.safetensors"))
    process = BotProcess(fake, tmp_path_factory.mktemp("bot"), tiny_model, LORA_DIR=str(loras),
                         EMBEDDINGS_DIR=str(embeddings))
    await process.start()
    yield process
    await process.stop()


@pytest.fixture(scope="module")
def moderator(fake: FakeDiscord) -> dict:
    return fake.user("admin", permissions=MANAGE_GUILD)


def posted(reply: Reply) -> bool:
    return reply.kind == "edit" and any(f.filename.startswith("dream-") for f in reply.files)


async def private_answer(interaction: Interaction) -> str:
    return (await interaction.wait_for(lambda reply: bool(reply.content) and reply.ephemeral)).content


def pixels(reply: Reply) -> bytes:
    [upload] = [f for f in reply.files if f.filename.startswith("dream-")]
    return Image.open(io.BytesIO(upload.data)).tobytes()


async def test_generating_commands_take_a_lora_with_suggestions(bot: BotProcess, fake: FakeDiscord) -> None:
    for name in ("dream", "inpaint", "outpaint", "interpolate"):
        options = {o["name"]: o for o in fake.command(name)["options"]}
        assert options["lora"]["type"] == 3 and options["lora"]["autocomplete"] is True
        assert (options["lora_weight"]["type"], options["lora_weight"]["min_value"],
                options["lora_weight"]["max_value"]) == (10, -2, 3)
    every = await fake.autocomplete("dream", "lora", "", prompt="a fox")
    assert [c["value"] for c in every] == ["glow", "ink", *(f"zz{n}" for n in range(EXTRA))]
    assert every[0]["name"] == "glow · glowing, neon"  # its trigger words, from the file's metadata
    assert [c["value"] for c in await fake.autocomplete("dream", "lora", "NEON")] == ["glow"]  # by trigger word
    assert [c["value"] for c in await fake.autocomplete("outpaint", "lora", "Ink")] == ["ink"]


async def test_the_lora_option_adds_the_tag_and_changes_the_picture(bot: BotProcess, fake: FakeDiscord) -> None:
    plain = await fake.invoke("dream", prompt="a fox", seed=3, steps=2)
    with_lora = await fake.invoke("dream", prompt="a fox", seed=3, steps=2, lora="glow", lora_weight=0.5)
    typed = await fake.invoke("dream", prompt="a fox <lora:glow:0.5>", seed=3, steps=2)
    plain_result, lora_result, typed_result = [await i.wait_for(posted) for i in (plain, with_lora, typed)]
    assert pixels(lora_result) != pixels(plain_result)
    assert pixels(lora_result) == pixels(typed_result)  # the option is the tag, as if typed
    [job] = bot.jobs("interaction_id = ?", with_lora.id)
    assert job["prompt"] == "a fox <lora:glow:0.5>"
    [upload] = [f for f in lora_result.files if f.filename.startswith("dream-")]
    assert Image.open(io.BytesIO(upload.data)).text["parameters"].startswith("a fox <lora:glow:0.5>\n")


@pytest.mark.parametrize(("options", "message"), [
    ({"prompt": "a fox <lora:nope:1>"}, "⚠️ There is no LoRA named “nope” (installed: glow, ink, zz0"),
    ({"prompt": "a fox", "lora": "nope"}, "⚠️ There is no LoRA named “nope” (installed: glow, ink, zz0"),
    ({"prompt": "a fox", "lora": "x:3>"}, "There is no LoRA named “x:3>”: pick one from the list"),
    ({"prompt": "a fox", "lora_weight": 0.5}, "lora_weight is the weight of a LoRA: choose one in the lora option"),
    ({"prompt": "a fox <lora:glow:7>"}, "“<lora:glow:7>” has the weight 7; a LoRA's weight goes from -2 to 3"),
    ({"prompt": "a fox <lora:glow", "seed": 1}, "the LoRA tag “<lora:glow” is never closed"),
    ({"prompt": "a fox", "negative": "<lora:ink:1>"}, "LoRA tags go in the prompt, not the negative prompt"),
])
async def test_bad_loras_get_a_private_message_and_nothing_is_queued(bot: BotProcess, fake: FakeDiscord,
                                                                     options: dict, message: str) -> None:
    before = len(bot.jobs())
    interaction = await fake.invoke("dream", **options)
    assert message in await private_answer(interaction)
    assert len(bot.jobs()) == before


async def test_loras_lists_them_with_how_to_use_them_a_page_at_a_time(bot: BotProcess, fake: FakeDiscord) -> None:
    interaction = await fake.invoke("loras")
    first = await interaction.wait_for(lambda reply: reply.ephemeral and bool(reply.content))
    text = first.content
    assert f"{2 + EXTRA} LoRAs, 1 embedding · page 1 of 2" in text
    assert "**glow** (LoRA) · `<lora:glow:1>` in the prompt" in text and "> Everything glows." in text
    assert "Trigger words: `glowing`, `neon`" in text
    message = fake.message(interaction.message_id)
    click = await fake.click(message.id, "adapters:1:next")
    second = (await click.wait_for(lambda reply: reply.kind == "callback")).fields["content"]
    assert "page 2 of 2" in second and "**fuzzy** (embedding) · the word `fuzzy`" in second


async def test_moderators_turn_a_lora_off_on_every_path_and_on_again(bot: BotProcess, fake: FakeDiscord,
                                                                      moderator: dict) -> None:
    earlier = await fake.invoke("dream", prompt="a fox", seed=5, steps=2, lora="glow")
    await earlier.wait_for(posted)
    for _ in range(200):  # the bot records the result's message just after Discord answers
        [job] = bot.jobs("interaction_id = ?", earlier.id)
        if job["message_id"]:
            break
        await asyncio.sleep(0.05)

    member = fake.user("member")
    refused = await fake.invoke("mod adapters", member, action="off", adapter="lora:glow")
    assert "Only members with the Manage Server permission" in await private_answer(refused)
    answer = await private_answer(await fake.invoke("mod adapters", moderator, action="off", adapter="lora:glow"))
    assert "Prompts that use the LoRA **glow** are now refused in this server" in answer
    with sqlite3.connect(bot.database) as db:
        assert db.execute("SELECT actor_id, action, target, old_value, new_value FROM audit_log "
                          "WHERE action LIKE 'adapters.%'").fetchall() == [(int(moderator["id"]), "adapters.off",
                                                                            "lora glow", "on", "off")]

    off = "🚫 The LoRA “glow” is turned off on this server by its moderators."
    for options in ({"prompt": "a fox", "lora": "glow"}, {"prompt": "a fox <lora:GLOW:0.3>"}):
        assert off in await private_answer(await fake.invoke("dream", member, **options))
    # A re-roll of the earlier result: the job keeps its LoRA, and the rule holds there too.
    click = await fake.click(job["message_id"], f"dream:reroll:{job['id']}", user=member)
    assert off in await private_answer(click)
    # Suggestions leave it out; /loras says it is off.
    assert "glow" not in [c["value"] for c in await fake.autocomplete("dream", "lora", "")]
    listing = await private_answer(await fake.invoke("loras"))
    assert "**glow** (LoRA) · turned off in this server" in listing

    answer = await private_answer(await fake.invoke("mod adapters", moderator, action="on", adapter="Glow"))
    assert "Members can use the LoRA **glow** again." in answer
    click = await fake.click(job["message_id"], f"dream:reroll:{job['id']}", user=member)
    await click.wait_for(lambda reply: reply.kind == "callback")
    for _ in range(400):
        children = bot.jobs("parent_job_id = ? AND status = 'done'", job["id"])
        if children:
            break
        await asyncio.sleep(0.05)
    assert children[0]["prompt"] == "a fox <lora:glow:1>"  # re-roll keeps the job's LoRA and weight


async def test_an_embedding_turned_off_refuses_prompts_that_use_its_word(bot: BotProcess, fake: FakeDiscord,
                                                                         moderator: dict) -> None:
    answer = await private_answer(await fake.invoke("mod adapters", moderator, action="off", adapter="fuzzy"))
    assert "the embedding **fuzzy**" in answer
    refused = await fake.invoke("dream", prompt="a fox", negative="(Fuzzy:1.2), blurry")
    assert "🚫 The embedding “fuzzy” is turned off on this server" in await private_answer(refused)
    unknown = await fake.invoke("mod adapters", moderator, action="off", adapter="nothing")
    assert "No LoRA or embedding named “nothing” is installed" in await private_answer(unknown)
    choices = await fake.autocomplete("mod adapters", "adapter", "fu", moderator, action="on")
    assert [(c["name"], c["value"]) for c in choices] == [("fuzzy (embedding, off)", "embedding:fuzzy")]
    answer = await private_answer(await fake.invoke("mod adapters", moderator, action="on", adapter="embedding:fuzzy"))
    assert "Members can use the embedding **fuzzy** again." in answer


async def test_a_queued_job_whose_lora_is_turned_off_meanwhile_does_not_run(bot: BotProcess, fake: FakeDiscord,
                                                                             moderator: dict) -> None:
    """The rule that guards this path: the start-of-job gate (`JobRunner.gate`) checks again."""
    blocker = await fake.invoke("dream", fake.user("first in line"), prompt="keeps the engine busy", steps=50,
                                width=512, height=512)
    await until(lambda: [r["status"] for r in bot.jobs("interaction_id = ?", blocker.id)] == ["running"])
    waiting = await fake.invoke("dream", fake.user("patient"), prompt="a fox", lora="ink", steps=2)
    await waiting.wait_for(lambda reply: "ahead of yours" in reply.content)
    await private_answer(await fake.invoke("mod adapters", moderator, action="off", adapter="ink"))
    told = await waiting.wait_for(lambda reply: "The LoRA “ink” is turned off" in reply.content, timeout=120)
    assert not told.files
    [job] = bot.jobs("interaction_id = ?", waiting.id)
    assert job["status"] == "failed"
    await private_answer(await fake.invoke("mod adapters", moderator, action="on", adapter="ink"))
