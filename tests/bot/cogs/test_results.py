"""Image modes and result controls end to end: `python -m bot` with the tiny model, driven through
the loopback fake Discord with attachments, buttons, reactions and the message command.

The tiny model draws noise; what each mode means is checked on the shapes model in
tests/engine/test_modes.py. Here: the right job runs, from the right picture, for the right
member, and its result lands where it should with the controls that start the next one.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time

import pytest
from PIL import Image

from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord, Interaction, Message, Reply

pytestmark = pytest.mark.asyncio(loop_scope="module")

MANAGE_MESSAGES = 1 << 13


def rows(bot: BotProcess, where: str = "1", *args) -> list[dict]:
    return bot.jobs(where, *args)


def picture(size=(64, 64), colour=(200, 40, 40), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def posted(reply: Reply) -> bool:
    return reply.kind == "edit" and bool(reply.files)


async def dream(fake: FakeDiscord, user: dict | None = None, **options) -> tuple[Interaction, Message]:
    interaction = await fake.invoke("dream", user=user, **{"prompt": "a red fox", "steps": 3, **options})
    await interaction.wait_for(posted)
    return interaction, fake.message(interaction.message_id)


async def result_replying_to(fake: FakeDiscord, message_id: int, timeout: float = 60) -> Message:
    """The bot's message that replies to `message_id` once it carries its picture."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(fake.messages.values()):
            reference = message.message_reference or {}
            if str(reference.get("message_id")) == str(message_id) and message.attachments:
                return message
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no result replied to {message_id}")


async def job_of(bot: BotProcess, message: Message) -> sqlite3.Row:
    for _ in range(100):
        found = rows(bot, "message_id = ?", message.id)
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no job recorded for message {message.id}")


async def test_every_command_is_registered(bot: BotProcess, fake: FakeDiscord) -> None:
    for name in ("dream", "inpaint", "outpaint", "interpolate", "info"):
        fake.command(name)
    fake.command("Dream info", type=3)
    options = {o["name"]: o for o in fake.command("dream")["options"]}
    assert options["image"]["type"] == 11 and options["strength"]["type"] == 10
    assert {c["value"] for c in options["style"]["choices"]} >= {"photograph", "watercolor", "pixel art"}
    outpaint = {o["name"]: o for o in fake.command("outpaint")["options"]}
    assert {c["value"] for c in outpaint["direction"]["choices"]} == {"left", "right", "up", "down", "all"}


async def test_a_result_carries_its_buttons(bot: BotProcess, fake: FakeDiscord) -> None:
    _, single = await dream(fake, seed=1)
    job = await job_of(bot, single)
    assert single.custom_ids == [f"dream:vary:{job['id']}:0", f"dream:upscale:{job['id']}:0",
                                 f"dream:reroll:{job['id']}", f"dream:edit:{job['id']}", f"dream:delete:{job['id']}",
                                 *(f"dream:{side}:{job['id']}:0" for side in ("left", "right", "up", "down"))]
    _, several = await dream(fake, seed=2, count=3)
    job = await job_of(bot, several)
    labels = [several.component(custom_id)["label"] for custom_id in several.custom_ids]
    assert labels == ["V1", "V2", "V3", "U1", "U2", "U3", "Re-roll", "Edit", "Delete"]
    assert several.custom_ids[1] == f"dream:vary:{job['id']}:1"


async def test_re_roll_vary_and_upscale_by_button_reply_to_the_result(bot: BotProcess, fake: FakeDiscord) -> None:
    _, source = await dream(fake, seed=5, count=2)
    parent = await job_of(bot, source)
    clicker = fake.user("clicker")

    click = await fake.click(source.id, f"dream:reroll:{parent['id']}", user=clicker)
    await click.wait_for(lambda r: r.kind == "callback")
    assert click.replies[0].payload["type"] == 6  # acknowledged without a message of its own
    reroll = await result_replying_to(fake, source.id)
    assert f"<@{clicker['id']}>" in reroll.content and clicker["id"] in reroll.mentions
    row = await job_of(bot, reroll)
    assert (row["action"], row["parent_job_id"], row["user_id"]) == ("reroll", parent["id"], int(clicker["id"]))
    assert row["seed"] != parent["seed"] and row["num_images"] == 2 and "re-roll of job" in reroll.content

    await fake.click(source.id, f"dream:vary:{parent['id']}:1", user=clicker)
    await fake.click(source.id, f"dream:upscale:{parent['id']}:1", user=clicker)
    for _ in range(600):
        children = rows(bot, "parent_job_id = ? AND message_id IS NOT NULL", parent["id"])
        if len(children) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(children) == 3, [dict(row) for row in rows(bot, "parent_job_id = ?", parent["id"])]
    by_action = {row["action"]: row for row in children}
    vary, upscale = by_action["vary"], by_action["upscale"]
    assert (vary["mode"], vary["parent_image"], vary["strength"]) == ("img2img", 1, 0.5)
    assert (upscale["mode"], upscale["parent_image"], upscale["seed"]) == ("upscale", 1, parent["seed"] + 1)
    big = fake.message(upscale["message_id"])
    assert Image.open(io.BytesIO(big.attachments[0].data)).size == (128, 128)
    assert "upscale of job" in big.content and "image 2" in big.content


async def test_reactions_do_what_the_buttons_do(bot: BotProcess, fake: FakeDiscord) -> None:
    _, source = await dream(fake, seed=9)
    parent = await job_of(bot, source)
    member = fake.user("reacting member")
    await fake.react(source.id, "🔁", user=member)
    reroll = await result_replying_to(fake, source.id)
    row = await job_of(bot, reroll)
    assert (row["action"], row["parent_job_id"], row["user_id"]) == ("reroll", parent["id"], int(member["id"]))

    await fake.react(reroll.id, "⬆️", user=member)
    upscaled = await result_replying_to(fake, reroll.id)
    assert (await job_of(bot, upscaled))["action"] == "upscale"
    await fake.react(source.id, "👍", user=member)  # any other reaction is just a reaction
    await asyncio.sleep(0.5)
    assert len(rows(bot, "parent_job_id = ?", parent["id"])) == 1


async def test_a_quick_picture_is_upscaled_with_the_steps_its_strength_needs(bot: BotProcess,
                                                                             fake: FakeDiscord) -> None:
    _, source = await dream(fake, seed=15, steps=2)  # 0.35 of 2 steps would leave none to run
    parent = await job_of(bot, source)
    await fake.click(source.id, f"dream:upscale:{parent['id']}:0")
    upscaled = await job_of(bot, await result_replying_to(fake, source.id))
    assert (upscaled["mode"], upscaled["num_inference_steps"]) == ("upscale", 3)


async def test_only_the_owner_or_a_moderator_can_delete(bot: BotProcess, fake: FakeDiscord) -> None:
    author, stranger = fake.user("author"), fake.user("stranger")
    moderator = fake.user("moderator", permissions=MANAGE_MESSAGES)
    _, first = await dream(fake, user=author, seed=11)
    job = await job_of(bot, first)

    refused = await fake.click(first.id, f"dream:delete:{job['id']}", user=stranger)
    answer = await refused.wait_for(lambda r: r.kind == "callback")
    assert answer.ephemeral and "Only the member who made this picture" in answer.content
    await fake.react(first.id, "🗑️", user=stranger)
    dm = await fake.dm(stranger).wait_for(lambda r: True)
    assert "Only the member who made this picture" in dm.content
    assert not fake.message(first.id).deleted

    await fake.click(first.id, f"dream:delete:{job['id']}", user=author)
    for _ in range(100):
        if fake.message(first.id).deleted:
            break
        await asyncio.sleep(0.05)
    assert fake.message(first.id).deleted and rows(bot, "id = ?", job["id"])[0]["deleted_at"]

    _, second = await dream(fake, user=author, seed=12)
    await fake.react(second.id, "🗑️", user=moderator)
    for _ in range(100):
        if fake.message(second.id).deleted:
            break
        await asyncio.sleep(0.05)
    assert fake.message(second.id).deleted


async def test_a_button_of_an_unknown_job_gets_a_clear_answer(bot: BotProcess, fake: FakeDiscord) -> None:
    _, message = await dream(fake, seed=13)
    job = await job_of(bot, message)
    with sqlite3.connect(bot.database) as db:
        db.execute("DELETE FROM jobs WHERE id = ?", (job["id"],))
    click = await fake.click(message.id, f"dream:reroll:{job['id']}")
    answer = await click.wait_for(lambda r: r.kind == "callback")
    assert answer.ephemeral and f"Job {job['id']} is not in Dreambot's history" in answer.content


async def test_info_shows_everything_needed_to_make_it_again(bot: BotProcess, fake: FakeDiscord) -> None:
    _, message = await dream(fake, seed=21, negative="blurry", style="watercolor")
    job = await job_of(bot, message)
    assert "Style watercolor" in message.content
    for interaction in (await fake.invoke("info", job=job["id"]),
                        await fake.invoke_message_command("Dream info", message.id)):
        answer = await interaction.wait_for(lambda r: r.kind == "callback")
        assert answer.ephemeral
        for part in (f"Job {job['id']}", "a red fox, watercolor", "blurry", "Seed 21", "3 steps", "Style watercolor",
                     "Read whole: ", " tokens, in 1 chunk of the text encoder's length"):
            assert part in answer.content
        assert not answer.files
    # A prompt too long for the message comes whole in a file; the summary says where it is.
    words = " ".join(f"word{i}" for i in range(135))  # 969 characters: past what /info shows of a prompt
    _, long = await dream(fake, prompt=words, seed=22)
    assert f"`/info job:{(await job_of(bot, long))['id']}` gives them whole" not in long.content  # it fits there
    answer = await (await fake.invoke_message_command("Dream info", long.id)).wait_for(lambda r: r.kind == "callback")
    assert "in full in the attached file" in answer.content and " chunks of the text encoder's length" in answer.content
    assert words in answer.files[0].data.decode()
    unknown = await fake.invoke("info", job=999999)
    assert "There is no job 999999" in (await unknown.wait_for(lambda r: r.kind == "callback")).content
    stranger_message = await fake.post("just chatting")
    menu = await fake.invoke_message_command("Dream info", stranger_message.id)
    assert "not a Dreambot result" in (await menu.wait_for(lambda r: r.kind == "callback")).content


async def test_image_to_image_from_an_attachment(bot: BotProcess, fake: FakeDiscord) -> None:
    attachment = fake.attachment(picture((100, 70)), "holiday.png")
    interaction = await fake.invoke("dream", prompt="a red fox", steps=4, seed=3, strength=0.5, image=attachment)
    result = await interaction.wait_for(posted)
    queued = interaction.replies[1]
    assert "cropped from 100×70 to 96×64" in queued.content
    image = Image.open(io.BytesIO(result.files[0].data))
    assert image.size == (96, 64) and "Denoising strength: 0.5, Mode: img2img" in image.text["parameters"]
    assert "img2img, strength 0.5" in result.content and attachment.fetches == 1
    row = rows(bot, "interaction_id = ?", interaction.id)[0]
    assert row["mode"] == "img2img" and row["strength"] == 0.5


async def test_inpaint_outpaint_and_interpolate(bot: BotProcess, fake: FakeDiscord) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    source = picture((64, 64), (30, 200, 30))
    inpaint = await fake.invoke("inpaint", image=fake.attachment(source), mask=fake.attachment(buffer.getvalue()),
                                prompt="a cat", steps=3, seed=1)
    result = Image.open(io.BytesIO((await inpaint.wait_for(posted)).files[0].data)).convert("RGB")
    assert result.getpixel((60, 10)) == (30, 200, 30)  # outside the mask: the original, exactly

    outpaint = await fake.invoke("outpaint", image=fake.attachment(source), prompt="a cat", direction="right",
                                 amount=32, steps=3, seed=1)
    wide = Image.open(io.BytesIO((await outpaint.wait_for(posted)).files[0].data))
    assert wide.size == (96, 64) and wide.convert("RGB").getpixel((10, 10)) == (30, 200, 30)

    frames = await fake.invoke("interpolate", prompt="a cat", end_prompt="a dog", frames=3, steps=2, seed=4)
    reply = await frames.wait_for(posted)
    [upload] = reply.files
    gif = Image.open(io.BytesIO(upload.data))
    assert upload.filename.endswith(".gif") and gif.format == "GIF" and gif.n_frames == 3
    message = fake.message(frames.message_id)
    assert [c.split(":")[1] for c in message.custom_ids] == ["reroll", "edit", "delete"]
    assert "**a cat** → **a dog**" in reply.content and "3 frames" in reply.content


async def test_from_one_dream_to_every_mode_without_typing_the_prompt_again(bot: BotProcess, fake: FakeDiscord) -> None:
    _, source = await dream(fake, prompt="a tiny lighthouse", seed=41, negative="fog")
    parent = await job_of(bot, source)

    await fake.click(source.id, f"dream:right:{parent['id']}:0")
    extended = await result_replying_to(fake, source.id)
    assert Image.open(io.BytesIO(extended.attachments[0].data)).size == (80, 64)
    row = await job_of(bot, extended)
    assert (row["mode"], row["direction"], row["amount"], row["parent_job_id"]) == \
        ("outpaint", "right", 16, parent["id"])
    assert "extension to the right of job" in extended.content

    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    for command, options in (("inpaint", {"mask": fake.attachment(buffer.getvalue())}),
                             ("outpaint", {"direction": "up"}),
                             ("interpolate", {"end_seed": 7, "frames": 2})):
        interaction = await fake.invoke(command, job=parent["id"], steps=2, **options)
        result = await interaction.wait_for(posted)
        assert "**a tiny lighthouse**" in result.content and "Negative: fog" in result.content, command
        row = rows(bot, "interaction_id = ?", interaction.id)[0]
        assert (row["prompt"], row["parent_job_id"], row["action"]) == ("a tiny lighthouse", parent["id"], command)
    assert row["seed"] == parent["seed"] and row["end_seed"] == 7  # the animation starts from that picture

    # Checked before the public "thinking…": the first answer is the private one.
    neither = await fake.invoke("outpaint", prompt="x")
    answer = await neither.wait_for(lambda r: r.kind == "callback")
    assert answer.ephemeral and "Attach an image, or give the job number" in answer.content
    unknown = await fake.invoke("outpaint", job=987654)
    answer = await unknown.wait_for(lambda r: r.kind == "callback")
    assert answer.ephemeral and "no job 987654" in answer.content

    # A deleted result, to whoever could see it: said as it is (not "no such job").
    author = fake.user("deleting author")
    _, doomed = await dream(fake, user=author, seed=43)
    gone = await job_of(bot, doomed)
    await (await fake.click(doomed.id, f"dream:delete:{gone['id']}", user=author)).wait_for(
        lambda r: r.kind == "callback")
    await until(lambda: rows(bot, "id = ?", gone["id"])[0]["deleted_at"] is not None)
    answer = await (await fake.invoke("outpaint", author, job=gone["id"])).wait_for(lambda r: r.ephemeral)
    assert answer.content == f"⚠️ Job {gone['id']}'s result was deleted, so nothing can start from it."


@pytest.mark.parametrize(
    ("command", "files", "message"),
    [
        ("dream", {"image": (b"hello, not a picture", "notes.txt", {})}, "(notes.txt) is not an image"),
        ("dream", {"image": (picture(fmt="BMP"), "old.bmp", {})}, "is in BMP format, which is not supported"),
        ("dream", {"image": (picture()[:60], "cut.png", {})}, "could not be read as an image"),
        ("dream", {"image": (picture(), "big.png", {"size": 11_000_000})}, "the limit is 10 MB"),
        ("inpaint", {"image": (picture(), "a.png", {}), "mask": (picture(colour=(0, 0, 0)), "m.png", {})},
         "The mask is entirely black"),
        ("inpaint", {"image": (picture(), "a.png", {}), "mask": (picture((64, 128)), "m.png", {})},
         "make the mask the same shape as the image"),
        ("outpaint", {"image": (picture((1024, 1024)), "a.png", {})}, None),
    ],
)
async def test_bad_attachments_get_a_private_answer_and_queue_nothing(
    bot: BotProcess, fake: FakeDiscord, command: str, files: dict, message: str | None
) -> None:
    options = {name: fake.attachment(data, name_, **lie) for name, (data, name_, lie) in files.items()}
    if message is None:  # outpainting a picture already at the size limit: shrunk to make room, and said so
        options["amount"] = 64
    before = len(rows(bot))
    interaction = await fake.invoke(command, prompt="a cat", steps=2, **options)
    if message is None:
        queued = await interaction.wait_for(lambda r: r.kind == "edit" and "resized" in r.content)
        assert "to 896×896" in queued.content
        await interaction.wait_for(posted)
        return
    answer = await interaction.wait_for(lambda r: r.ephemeral and bool(r.content))
    assert message in answer.content
    # A declared size over the limit is refused before anything shows; the rest once the file is read.
    assert answer.kind == ("callback" if "big" in files.get("image", ("", ""))[1] else "followup")
    assert len(rows(bot)) == before


async def test_buttons_and_reactions_work_after_a_restart(bot: BotProcess, fake: FakeDiscord) -> None:
    _, source = await dream(fake, seed=31)
    parent = await job_of(bot, source)
    await bot.stop()
    await bot.start()
    await fake.click(source.id, f"dream:vary:{parent['id']}:0")
    varied = await result_replying_to(fake, source.id)
    assert (await job_of(bot, varied))["action"] == "vary"
    await fake.react(source.id, "🔁")
    for _ in range(600):
        if len(rows(bot, "parent_job_id = ? AND message_id IS NOT NULL", parent["id"])) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(rows(bot, "parent_job_id = ? AND message_id IS NOT NULL", parent["id"])) == 2
    assert {r["action"] for r in rows(bot, "parent_job_id = ?", parent["id"])} == {"vary", "reroll"}
