"""The Edit button end to end: `python -m bot` (tiny model) through the loopback fake Discord. Its
form comes pre-filled from the job, its submit runs the job again with the prompts and seed typed,
as a reply to the result; and every rule that guards a re-roll guards this path too, at the button
and again at the submit (each test names the rule it exercises)."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.requests import typed_seed
from dreambot.request import MAX_SEED, InvalidRequest
from tests.support.bot_process import BotProcess, until
from tests.support.fake_discord import FakeDiscord, Interaction, Message, Reply

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Each member may start one job per 10 minutes here: the queue's limits per member, met by the form too.
COOLDOWN = "600"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, tiny_model: Path, tmp_path_factory):
    process = BotProcess(fake, tmp_path_factory.mktemp("edit-bot"), tiny_model, COOLDOWN_SECONDS=COOLDOWN)
    await process.start()
    yield process
    await process.stop()


def rows(bot: BotProcess, where: str = "1", *args) -> list[dict]:
    return bot.jobs(where, *args)


def is_callback(reply: Reply) -> bool:
    return reply.kind == "callback"


async def posted_job(bot: BotProcess, interaction: Interaction) -> dict:
    """The job a command started, once its result is posted (`message_id` set): only then has it buttons."""
    await until(lambda: any(r["message_id"] for r in rows(bot, "interaction_id = ?", interaction.id)), 120)
    return rows(bot, "interaction_id = ?", interaction.id)[0]


async def result_replying_to(fake: FakeDiscord, message_id: int, timeout: float = 120) -> Message:
    """The bot's message that replies to `message_id` once it carries its picture."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(fake.messages.values()):
            reference = message.message_reference or {}
            if str(reference.get("message_id")) == str(message_id) and any(
                    a.filename.startswith("dream-") for a in message.attachments):
                return message
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no result replied to {message_id}")


async def open_form(fake: FakeDiscord, job: dict, user: dict) -> Interaction:
    click = await fake.click(job["message_id"], f"dream:edit:{job['id']}", user=user)
    answer = await click.wait_for(is_callback)
    assert answer.payload["type"] == 9, answer.content  # the form, not a message
    return click


async def refusal(fake: FakeDiscord, form: Interaction, values: dict[str, str], user: dict | None = None) -> str:
    submit = await fake.submit(form, values, user=user)
    answer = await submit.wait_for(is_callback)
    assert answer.ephemeral and answer.payload["type"] == 4, answer.payload  # only the member reads it
    return answer.content


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def source(bot: BotProcess, fake: FakeDiscord) -> dict:
    """A posted result with a style and a negative prompt, made by its author in the default channel."""
    author = fake.user("author")
    interaction = await fake.invoke("dream", author, prompt="a red fox", negative="blurry", style="watercolor",
                                    seed=5, steps=2)
    job = await posted_job(bot, interaction)
    return {**job, "author": author}


async def test_a_typed_seed_is_a_whole_number_in_range_or_nothing() -> None:  # no Discord needed
    assert typed_seed(" 77 ") == 77 and typed_seed(str(MAX_SEED)) == MAX_SEED
    assert 0 <= typed_seed("") <= MAX_SEED
    for bad in ("abc", "-1", str(MAX_SEED + 1), "1.5", "١٢", "1e3"):
        with pytest.raises(InvalidRequest, match="leave it empty for a random one"):
            typed_seed(bad)


async def test_the_form_is_pre_filled_and_its_edit_replies_to_the_result(bot: BotProcess, fake: FakeDiscord,
                                                                          source: dict) -> None:
    source_message = fake.message(source["message_id"])
    assert f"dream:edit:{source['id']}" in source_message.custom_ids
    editor = fake.user("editor")
    form = await open_form(fake, source, editor)
    assert form.modal["title"] == f"Edit job {source['id']}"
    # The stored prompts, the style's words already in them; the job's own seed.
    assert form.modal_values == {"prompt": source["prompt"], "negative": source["negative_prompt"], "seed": "5"}
    assert source["prompt"].count("watercolor painting") == 1 and "blurry" in source["negative_prompt"]

    edited_prompt = source["prompt"].replace("a red fox", "a blue fox")
    submit = await fake.submit(form, {"prompt": edited_prompt, "seed": "77"})
    assert (await submit.wait_for(is_callback)).payload["type"] == 6  # no answer of its own: the result replies
    result = await result_replying_to(fake, source["message_id"])
    assert "a blue fox" in result.content and f"edit of job {source['id']}" in result.content
    assert f"<@{editor['id']}>" in result.content and editor["id"] in result.mentions
    [row] = rows(bot, "parent_job_id = ?", source["id"])  # one job for one submit
    assert (row["action"], row["user_id"], row["seed"], row["message_id"]) == (
        "edit", int(editor["id"]), 77, result.id)
    assert row["prompt"] == edited_prompt and row["prompt"].count("watercolor painting") == 1  # no style twice
    for same in ("negative_prompt", "style", "model", "mode", "num_inference_steps", "guidance_scale", "scheduler",
                 "num_images", "width", "height"):
        assert row[same] == source[same], same
    assert f"dream:edit:{row['id']}" in result.custom_ids  # an edit can be edited again
    with pytest.raises(AssertionError, match="submitted and closed"):
        await fake.submit(form, {"seed": "78"})


@pytest.mark.parametrize(("values", "expected"), [
    ({"seed": "abc"}, "The seed must be a whole number from 0 to 4294967295, not “abc”"),
    ({"seed": "-1"}, "not “-1”; leave it empty for a random one"),
    ({"seed": "4294967296"}, "not “4294967296”"),
    ({"prompt": "   "}, "prompt"),  # request.validated: a prompt of blanks says nothing
    ({"prompt": "a fox <lora:nosuch:1>"}, "There is no LoRA named “nosuch”"),  # the LoRA tags it names
    ({"negative": "blurry <lora:nosuch:1>"}, "LoRA tags go in the prompt"),
])
async def test_a_bad_edit_is_refused_privately_and_nothing_runs(bot: BotProcess, fake: FakeDiscord, source: dict,
                                                                values: dict, expected: str) -> None:
    """bot.requests.edited (the seed, the request's limits) and JobRunner.admit (the LoRAs)."""
    before = len(rows(bot))
    form = await open_form(fake, source, fake.user("typo"))
    assert expected in await refusal(fake, form, values)
    assert len(rows(bot)) == before


async def test_a_member_who_may_not_see_the_job_gets_no_form(bot: BotProcess, fake: FakeDiscord,
                                                             source: dict) -> None:
    """moderation.may_reach, before the form is built: a raw client can put any job's Edit button on a
    message of its own in another channel; the job is not there for it, and its prompt is never sent."""
    elsewhere = fake.text_channel("elsewhere")
    outsider = fake.user("outsider")
    forged = await fake.post("look, a button", outsider, in_channel=elsewhere)
    custom_id = f"dream:edit:{source['id']}"
    forged.components = [{"type": 1, "components": [{"type": 2, "style": 2, "label": "Edit", "custom_id": custom_id}]}]
    click = await fake.click(forged.id, custom_id, user=outsider)
    answer = await click.wait_for(is_callback)
    assert click.modal is None and answer.ephemeral
    assert answer.content == (f"Job {source['id']} is not in Dreambot's history (any more), so there is nothing "
                              "to edit here.")
    assert "fox" not in str(click.replies)


async def test_the_prompt_filter_and_a_ban_hold_at_the_submit(bot: BotProcess, fake: FakeDiscord,
                                                              source: dict) -> None:
    """JobRunner.admit on the submit: the server's blocked words (in the prompt and the negative prompt),
    and a member barred after opening the form."""
    owner, before = fake.owner, len(rows(bot))
    words = await fake.invoke("mod words", owner, action="add", word="gore")
    await words.wait_for(lambda reply: "are now refused" in reply.content)
    try:
        for field, text in (("prompt", "a fox covered in gore"), ("negative", "no gore please")):
            form = await open_form(fake, source, fake.user(f"filtered {field}"))
            answer = await refusal(fake, form, {field: text})
            assert "moderators have blocked" in answer and "gore" not in answer  # the term is never echoed
    finally:
        removed = await fake.invoke("mod words", owner, action="remove", word="gore")
        await removed.wait_for(lambda reply: bool(reply.content))

    barred = fake.user("barred")
    form = await open_form(fake, source, barred)
    ban = await fake.invoke("mod ban", owner, member=barred)
    await ban.wait_for(lambda reply: "can no longer use Dreambot" in reply.content)
    try:
        assert "barred you from using Dreambot" in await refusal(fake, form, {"seed": "9"})
    finally:
        unban = await fake.invoke("mod unban", owner, member=barred)
        await unban.wait_for(lambda reply: bool(reply.content))
    assert len(rows(bot)) == before


async def test_the_queues_limits_per_member_hold_at_the_submit(bot: BotProcess, fake: FakeDiscord,
                                                               source: dict) -> None:
    """JobQueue.check: the author started the source job a moment ago, and this server's cooldown holds."""
    before = len(rows(bot))
    form = await open_form(fake, source, source["author"])
    assert "before your next job (this server's cooldown)" in await refusal(fake, form, {"seed": "10"})
    assert len(rows(bot)) == before


async def test_a_job_started_from_a_flagged_picture_is_edited_only_where_flagged_pictures_show(
        bot: BotProcess, fake: FakeDiscord, source: dict) -> None:
    """Actions.start, as for a re-roll: the flag of the picture a job started from follows its edits, so
    in a channel whose filter blocks flagged pictures (this one) the edit is refused."""
    flag = "UPDATE jobs SET request = json_set(request, '$.source_flagged', json(?)) WHERE id = ?"
    with sqlite3.connect(bot.database) as db:
        db.execute(flag, ("true", source["id"]))
    try:
        form = await open_form(fake, source, fake.user("flag follower"))
        assert (f"Job {source['id']} started from a picture the safety filter flagged, so it can only be edited in "
                "an age-restricted channel") in await refusal(fake, form, {"seed": "11"})
    finally:
        with sqlite3.connect(bot.database) as db:
            db.execute(flag, ("false", source["id"]))
    assert not rows(bot, "parent_job_id = ? AND user_id = ?", source["id"], int(form.user["id"]))


async def test_a_deleted_or_erased_jobs_form_is_refused(bot: BotProcess, fake: FakeDiscord) -> None:
    """Actions.reach and Actions.edit: the job is looked up again at the submit; a deleted result, or a job
    gone from the history, runs nothing."""
    author = fake.user("deleter")
    job = await posted_job(bot, await fake.invoke("dream", author, prompt="a short-lived fox", seed=3, steps=2))
    first, second = await open_form(fake, job, author), await open_form(fake, job, author)
    await fake.click(job["message_id"], f"dream:delete:{job['id']}", user=author)
    await until(lambda: fake.message(job["message_id"]).deleted and rows(bot, "id = ?", job["id"])[0]["deleted_at"])
    assert await refusal(fake, first, {"seed": "1"}) == (
        f"Job {job['id']}'s result was deleted, so there is nothing to edit any more.")
    with sqlite3.connect(bot.database) as db:
        db.execute("DELETE FROM jobs WHERE id = ?", (job["id"],))
    assert f"Job {job['id']} is not in Dreambot's history" in await refusal(fake, second, {"seed": "1"})
    assert not rows(bot, "parent_job_id = ?", job["id"])


async def test_a_form_opened_before_a_restart_runs_an_image_to_image_job_with_a_new_seed(
        bot: BotProcess, fake: FakeDiscord) -> None:
    """The form's custom id carries the job: a submit after a restart is routed to it all the same. The
    source's input picture comes with the edit; an empty seed is a new random one."""
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 200, 30)).save(picture, format="PNG")
    author = fake.user("painter")
    job = await posted_job(bot, await fake.invoke("dream", author, prompt="a green field", seed=8, steps=4,
                                                  strength=0.5, image=fake.attachment(picture.getvalue())))
    assert job["mode"] == "img2img"
    form = await open_form(fake, job, fake.user("restarter"))
    await bot.stop()
    await bot.start()
    await fake.submit(form, {"prompt": "a green field at night", "seed": ""})
    result = await result_replying_to(fake, job["message_id"])
    [row] = rows(bot, "parent_job_id = ?", job["id"])
    assert (row["action"], row["mode"], row["strength"], row["prompt"]) == (
        "edit", "img2img", 0.5, "a green field at night")
    assert row["seed"] != job["seed"] and 0 <= row["seed"] <= MAX_SEED
    [picture_out] = [a for a in result.attachments if a.filename.startswith("dream-")]
    assert Image.open(io.BytesIO(picture_out.data)).size == (64, 64)
