"""The store on a real SQLite file: migrations and the life of a job row."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.store import Migration, Store, bundled_migrations
from dreambot.request import GenerateRequest, Limits
from dreambot.wire import GenerateResult, ImageResult

REQUEST = GenerateRequest(prompt="a red fox", negative_prompt="blurry", num_inference_steps=20, guidance_scale=7.5,
                          width=None, height=None, seed=7, scheduler="Euler a", num_images=2)


async def test_migrates_from_empty_and_rerunning_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "bot.sqlite3"
    store = await Store.open(path)
    newest = bundled_migrations()[-1].version
    assert await store.schema_version() == newest
    job_id = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=4, model="tiny")
    await store.close()

    again = await Store.open(path)
    assert await again.schema_version() == newest
    assert (await again.get_job(job_id)).request.prompt == "a red fox"
    await again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_failing_migration_leaves_nothing_half_done(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    good = bundled_migrations()
    broken = Migration(len(good) + 1, "broken.sql", "CREATE TABLE extra (x INTEGER);\nINSERT INTO nowhere VALUES (1);")
    with pytest.raises(Exception, match="no such table: nowhere"):
        await Store.open(path, good + [broken])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(good)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "jobs" in tables and "extra" not in tables
    store = await Store.open(path)  # and the database is still usable
    assert await store.schema_version() == len(good)
    await store.close()


async def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema version 99, newer than this code"):
        await Store.open(path)


def test_migrations_are_numbered_files_shipped_with_the_package() -> None:
    migrations = bundled_migrations()
    assert migrations[0].name == "0001_jobs.sql"
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))


async def test_job_lifecycle(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    job_id = await store.create_job(REQUEST, user_id=10, guild_id=20, channel_id=30, interaction_id=40, model="tiny")
    job = await store.get_job(job_id)
    assert (job.status, job.user_id, job.guild_id, job.channel_id, job.interaction_id) == ("queued", 10, 20, 30, 40)
    assert job.request == REQUEST and job.created_at and job.started_at is None

    await store.mark_running(job_id)
    assert (await store.get_job(job_id)).status == "running"

    result = GenerateResult(
        job_id=job_id, seed=7, width=512, height=512, model="tiny", timings={"total": 1.25},
        images=(ImageResult(b"png", 7, False, 0.02), ImageResult(b"png", 8, True, 0.97)),
    )
    await store.finish_job(job_id, result)
    assert (await store.get_job(job_id)).status == "delivering"  # made, not yet posted
    assert [job.id for job in await store.undelivered_jobs()] == [job_id]
    await store.delivered(job_id, 555)
    assert await store.undelivered_jobs() == []
    job = await store.get_job(job_id)
    assert (job.status, job.width, job.height, job.message_id) == ("done", 512, 512, 555)
    assert job.nsfw_flags == [False, True] and job.nsfw_scores == [0.02, 0.97]
    assert job.engine_seconds == 1.25 and job.finished_at

    all_flagged = await store.create_job(REQUEST, user_id=10, guild_id=20, channel_id=30, interaction_id=41,
                                         model="tiny")
    flagged = GenerateResult(job_id=all_flagged, seed=7, width=64, height=64, model="tiny",
                             images=(ImageResult(b"png", 7, True, 0.9),))
    await store.finish_job(all_flagged, flagged)
    await store.delivered(all_flagged, None, filtered=True)
    assert (await store.get_job(all_flagged)).status == "filtered"

    failing = await store.create_job(REQUEST, user_id=11, guild_id=None, channel_id=31, interaction_id=42, model="tiny")
    await store.fail_job(failing, "EngineCrashed: exited with code -9")
    job = await store.get_job(failing)
    assert job.status == "failed" and job.error == "EngineCrashed: exited with code -9" and job.guild_id is None

    jobs, total = await store.user_jobs(10)
    assert [job.id for job in jobs] == [all_flagged, job_id] and total == 2
    await store.close()


async def test_jobs_left_unfinished_by_a_previous_run_are_found_and_requeued(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    queued = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=4, model="tiny")
    running = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=5, model="tiny")
    done = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=6, model="tiny")
    await store.mark_running(running)
    await store.finish_job(done, GenerateResult(job_id=done, seed=7, width=64, height=64, model="m", images=()))
    assert [job.id for job in await store.unfinished_jobs()] == [queued, running]
    await store.requeue_job(running)
    assert (await store.get_job(running)).status == "queued" and (await store.get_job(running)).started_at is None
    await store.cancel_job(queued, 9)
    cancelled = await store.get_job(queued)
    assert (cancelled.status, cancelled.cancelled_by, cancelled.shown_status) == ("failed", 9, "cancelled")
    await store.close()


async def test_meta_values(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    assert await store.get_meta("k") is None
    await store.set_meta("k", "one")
    await store.set_meta("k", "two")
    assert await store.get_meta("k") == "two"
    await store.close()


async def test_upgrading_from_the_first_schema_keeps_the_history(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    first = await Store.open(path, bundled_migrations()[:1])
    await first._db.execute(
        "INSERT INTO jobs (user_id, guild_id, prompt, num_inference_steps, guidance_scale, seed, scheduler, "
        "num_images, status, message_id) VALUES (1, 2, 'an old fox', 20, 7.5, 9, 'Euler', 1, 'done', 555)"
    )
    await first.close()

    store = await Store.open(path)
    old = await store.job_for_message(555)
    assert (old.request.prompt, old.request.seed, old.status) == ("an old fox", 9, "done")
    assert (old.request.mode, old.action, old.parent_job_id, old.request.style) == ("txt2img", "dream", None, "")
    await store.close()


async def test_a_job_made_from_another_records_where_it_came_from(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    parent = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=4, model="m")
    upscale = GenerateRequest(prompt="a red fox", seed=8, mode="upscale", image=b"png", style="anime")
    child = await store.create_job(upscale, user_id=5, guild_id=2, channel_id=3, interaction_id=None, model="m",
                                   action="upscale", parent_job_id=parent, parent_image=1)
    row = await store.get_job(child)
    assert (row.user_id, row.action, row.parent_job_id, row.parent_image, row.request.mode) == \
        (5, "upscale", parent, 1, "upscale")
    assert row.with_pictures(b"png") == upscale
    outpaint = GenerateRequest(prompt="p", seed=1, mode="outpaint", image=b"i", direction="left", amount=64)
    row = await store.get_job(await store.create_job(outpaint, user_id=1, guild_id=2, channel_id=3,
                                                     interaction_id=None, model="m"))
    assert row.with_pictures(b"i") == outpaint
    frames = GenerateRequest(prompt="p", seed=1, mode="interpolate", end_prompt="q", end_seed=3, frames=5)
    row = await store.get_job(await store.create_job(frames, user_id=1, guild_id=2, channel_id=3,
                                                     interaction_id=None, model="m"))
    assert row.request == frames
    await store.mark_deleted(row.id)
    assert (await store.get_job(row.id)).deleted_at is not None
    await store.close()


async def test_upgrading_from_the_image_modes_schema_keeps_jobs_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    second = await Store.open(path, bundled_migrations()[:2])
    cursor = await second._db.execute(
        "INSERT INTO jobs (user_id, guild_id, prompt, num_inference_steps, guidance_scale, seed, scheduler, "
        "num_images, status, message_id, mode, action) VALUES (1, 2, 'a red fox', 20, 7.5, 7, 'Euler', 1, 'done', "
        "777, 'img2img', 'vary')"
    )
    job_id = cursor.lastrowid
    await second.set_meta("commands_fingerprint", "abc")
    await second.close()

    store = await Store.open(path)
    row = await store.job_for_message(777)
    assert (row.id, row.request.prompt, row.request.seed, row.request.mode, row.action) == \
        (job_id, "a red fox", 7, "img2img", "vary")
    assert (row.nsfw_mode, row.request.nsfw_threshold) == (None, None)
    assert await store.get_meta("commands_fingerprint") == "abc"
    assert (await store.guild_settings(2)).nsfw_mode == "block"  # a server that set nothing has the defaults
    await store.close()


async def test_every_moderation_change_is_audited_with_old_and_new(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    guild, mod = 2, 50
    assert await store.set_guild_setting(guild, "nsfw_mode", "spoiler", actor_id=mod) == "block"
    assert await store.set_guild_setting(guild, "nsfw_threshold", 0.3, actor_id=mod) is None
    assert await store.set_channel_mode(guild, 30, "off", actor_id=mod) is None
    assert await store.set_channel_mode(guild, 30, None, actor_id=mod) == "off"
    assert await store.add_blocked_term(guild, "word", "gore", actor_id=mod)
    assert not await store.add_blocked_term(guild, "word", "gore", actor_id=mod)  # already there: no audit row
    assert await store.remove_blocked_term(guild, "word", "gore", actor_id=mod)
    assert await store.ban(guild, 9, actor_id=mod, reason="spam")
    assert await store.unban(guild, 9, actor_id=mod)
    assert not await store.unban(guild, 9, actor_id=mod)
    await store.set_guild_setting(guild, "modlog_channel_id", 31, actor_id=mod)
    await store.set_guild_setting(guild, "moderator_role_id", 40, actor_id=mod)
    rows = [(r.actor_id, r.action, r.target, r.old_value, r.new_value) for r in reversed(await store.audit_log(guild))]
    assert rows == [
        (mod, "filter.mode", None, "block", "spoiler"),
        (mod, "filter.threshold", None, None, "0.3"),
        (mod, "filter.mode", "<#30>", None, "off"),
        (mod, "filter.mode", "<#30>", "off", None),
        (mod, "words.add", "word", None, "gore"),
        (mod, "words.remove", "word", "gore", None),
        (mod, "ban", "<@9>", None, "spam"),
        (mod, "unban", "<@9>", "spam", None),
        (mod, "modlog", None, None, "31"),
        (mod, "moderator_role", None, None, "40"),
    ]
    assert all(r.created_at for r in await store.audit_log(guild))
    assert await store.audit_log(guild + 1) == []  # per server
    settings = await store.guild_settings(guild)
    assert (settings.nsfw_mode, settings.nsfw_threshold, settings.channel_modes) == ("spoiler", 0.3, {})
    await store.close()


async def test_forgetting_erases_finished_jobs_and_keeps_their_numbers(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    done = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=4, model="m")
    await store.finish_job(done, GenerateResult(job_id=done, seed=7, width=64, height=64, model="m", images=()))
    await store.delivered(done, 99)
    running = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=5, model="m")
    await store.mark_running(running)
    posting = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=8, model="m")
    await store.finish_job(posting, GenerateResult(job_id=posting, seed=7, width=64, height=64, model="m", images=()))
    other = await store.create_job(REQUEST, user_id=8, guild_id=2, channel_id=3, interaction_id=6, model="m")
    # Another member's job made from one of ours keeps existing, without the link.
    child = await store.create_job(REQUEST, user_id=8, guild_id=2, channel_id=3, interaction_id=7, model="m",
                                   action="vary", parent_job_id=done, parent_image=0)
    assert await store.erase_user_jobs(1) == ([done], 2)  # a job still being posted is kept until it is
    assert await store.get_job(done) is None and await store.was_erased(done)
    assert (await store.get_job(running)).status == "running"
    assert await store.get_job(other) is not None and not await store.was_erased(other)
    assert (await store.get_job(child)).parent_job_id is None
    assert await store.user_jobs(1) == ([await store.get_job(posting), await store.get_job(running)], 2)
    await store.close()


async def test_a_failed_change_leaves_no_audit_row(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    with pytest.raises(sqlite3.IntegrityError):
        await store.set_channel_mode(2, 30, "loud", actor_id=50)  # the schema's CHECK refuses it
    assert await store.audit_log(2) == [] and (await store.guild_settings(2)).channel_modes == {}
    await store.close()


async def test_withholding_flagged_images_after_all(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    ids = []
    for flags in ([True, True], [True, False]):
        job_id = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=None,
                                        model="m", nsfw_mode="off")
        images = tuple(ImageResult(data=b"png", seed=i, nsfw_content_detected=f, nsfw_score=0.9 if f else 0.1)
                       for i, f in enumerate(flags))
        result = GenerateResult(job_id=job_id, seed=7, width=64, height=64, model="m", images=images)
        await store.finish_job(job_id, result)
        await store.withhold_flagged(job_id)
        ids.append(job_id)
    rows = [await store.get_job(job_id) for job_id in ids]
    assert [row.nsfw_mode for row in rows] == ["block", "block"]
    assert [rows[0].shown(0), rows[0].shown(1)] == [False, False]
    assert [rows[1].shown(0), rows[1].shown(1)] == [False, True]
    await store.close()


async def test_upgrading_to_the_delivery_schema_keeps_jobs_links_and_never_reuses_a_number(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    fourth = await Store.open(path, bundled_migrations()[:4])
    insert = ("INSERT INTO jobs (user_id, guild_id, prompt, num_inference_steps, guidance_scale, seed, scheduler, "
              "num_images, status, parent_job_id) VALUES (?, 2, 'a fox', 20, 7, 9, 'Euler', 1, 'done', ?)")
    parent = (await fourth._db.execute(insert, (1, None))).lastrowid
    child = (await fourth._db.execute(insert, (1, parent))).lastrowid
    erased = (await fourth._db.execute(insert, (9, None))).lastrowid
    # /forget as the release of schema 4 did it: the highest number is gone from the table.
    await fourth._db.execute("INSERT INTO erased_jobs (job_id) VALUES (?)", (erased,))
    await fourth._db.execute("DELETE FROM jobs WHERE id = ?", (erased,))
    await fourth.close()

    store = await Store.open(path)
    row = await store.get_job(child)
    assert (row.parent_job_id, row.request.source_flagged, row.source_score) == (parent, False, None)
    newer = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=7, model="m")
    assert newer > erased and await store.was_erased(erased)  # an erased job's number keeps meaning erased
    await store._db.execute("UPDATE jobs SET status = 'delivering' WHERE id = ?", (newer,))  # 0005's status
    with pytest.raises(sqlite3.IntegrityError):
        await store._db.execute("UPDATE jobs SET status = 'posted' WHERE id = ?", (newer,))
    async with store._db.execute("PRAGMA foreign_keys") as cursor:
        assert (await cursor.fetchone())[0] == 1  # switched back on after migrating
    await store.close()


async def test_a_job_started_from_a_flagged_picture_keeps_that_flag(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    request = GenerateRequest(prompt="p", seed=1, mode="outpaint", image=b"i", direction="left", amount=64,
                              source_flagged=True)
    row = await store.get_job(await store.create_job(request, user_id=1, guild_id=2, channel_id=3,
                                                     interaction_id=None, model="m"))
    assert row.request.source_flagged and row.with_pictures(b"i") == request  # a re-roll or a restart keeps it
    await store.close()


async def test_a_write_waits_out_a_database_locked_by_another_program(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    store = await Store.open(path)
    job_id = await store.create_job(REQUEST, user_id=1, guild_id=2, channel_id=3, interaction_id=4, model="m")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an operator's shell holding a write lock past busy_timeout (5 s)
    other.execute("UPDATE meta SET value = value")
    write = asyncio.create_task(store.delivered(job_id, 555))
    await asyncio.sleep(6.5)
    assert not write.done()  # still trying, not failed
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(write, 15)
    assert (await store.get_job(job_id)).message_id == 555
    await store.close()


async def test_a_members_jobs_still_to_run_in_a_server(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    ids = [await store.create_job(REQUEST, user_id=1, guild_id=guild, channel_id=3, interaction_id=None, model="m")
           for guild in (2, 2, 2, 8)]
    await store.mark_running(ids[1])
    await store.fail_job(ids[2], "x")
    assert await store.queued_jobs_of(1, 2) == ids[:2]
    await store.close()


async def test_links_left_dangling_before_a_migration_do_not_stop_it(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    fourth = await Store.open(path, bundled_migrations()[:4])
    insert = ("INSERT INTO jobs (user_id, guild_id, prompt, num_inference_steps, guidance_scale, seed, scheduler, "
              "num_images, status, parent_job_id) VALUES (1, 2, 'a fox', 20, 7, 9, 'Euler', 1, 'done', ?)")
    parent = (await fourth._db.execute(insert, (None,))).lastrowid
    child = (await fourth._db.execute(insert, (parent,))).lastrowid
    await fourth._db.execute("PRAGMA foreign_keys = OFF")  # as an operator's sqlite3 shell has it
    await fourth._db.execute("DELETE FROM jobs WHERE id = ?", (parent,))
    await fourth.close()
    store = await Store.open(path)  # migrates: only violations a migration adds would stop it
    assert (await store.get_job(child)).parent_job_id == parent
    await store.close()


# One job row as each schema version wrote it, its columns and values, and the request it holds.
# An inpainting job of a server with an age-restricted channel (so every request field is set).
OLD_ROWS = {
    1: ("user_id, guild_id, channel_id, prompt, negative_prompt, num_inference_steps, guidance_scale, width, height, "
        "seed, scheduler, num_images, model, status, message_id",
        (1, 2, 3, "a fox", "blur", 20, 7.5, 512, 768, 9, "Euler", 2, "sd15", "done", 555),
        GenerateRequest(prompt="a fox", negative_prompt="blur", num_inference_steps=20, guidance_scale=7.5,
                        width=512, height=768, seed=9, scheduler="Euler", num_images=2)),
    2: ("user_id, guild_id, channel_id, prompt, negative_prompt, num_inference_steps, guidance_scale, width, height, "
        "seed, scheduler, num_images, model, status, message_id, mode, action, parent_job_id, parent_image, strength, "
        "direction, amount, end_prompt, end_seed, frames, style",
        (1, 2, 3, "a fox", "", 20, 7.0, 512, 512, 9, "Euler", 1, "sd15", "done", 555, "outpaint", "left", None, None,
         None, "left", 64, None, None, None, "anime"),
        GenerateRequest(prompt="a fox", num_inference_steps=20, seed=9, scheduler="Euler", mode="outpaint",
                        direction="left", amount=64, style="anime")),
    3: ("user_id, guild_id, channel_id, prompt, negative_prompt, num_inference_steps, guidance_scale, width, height, "
        "seed, scheduler, num_images, model, status, message_id, mode, action, parent_job_id, parent_image, strength, "
        "direction, amount, end_prompt, end_seed, frames, style, nsfw_mode, nsfw_threshold",
        (1, 2, 3, "a fox", "", 20, 7.0, 256, 256, 9, "Euler", 1, "sd15", "done", 555, "interpolate", "interpolate",
         None, None, None, None, None, "a dog", 11, 5, "", "spoiler", 0.3),
        GenerateRequest(prompt="a fox", num_inference_steps=20, width=256, height=256, seed=9, scheduler="Euler",
                        mode="interpolate", end_prompt="a dog", end_seed=11, frames=5, nsfw_threshold=0.3,
                        keep_flagged=True)),
    4: ("user_id, guild_id, channel_id, prompt, negative_prompt, num_inference_steps, guidance_scale, width, height, "
        "seed, scheduler, num_images, model, status, message_id, mode, action, parent_job_id, parent_image, strength, "
        "direction, amount, end_prompt, end_seed, frames, style, nsfw_mode, nsfw_threshold, cancelled_by, "
        "notice_message_id",
        (1, 2, 3, "a fox", "", 20, 7.0, 512, 512, 9, "Euler", 1, "sd15", "queued", None, "img2img", "vary", None, None,
         0.5, None, None, None, None, None, "", "block", None, None, 444),
        GenerateRequest(prompt="a fox", num_inference_steps=20, seed=9, scheduler="Euler", mode="img2img",
                        strength=0.5)),
    5: ("user_id, guild_id, channel_id, prompt, negative_prompt, num_inference_steps, guidance_scale, width, height, "
        "seed, scheduler, num_images, model, status, message_id, mode, action, parent_job_id, parent_image, strength, "
        "direction, amount, end_prompt, end_seed, frames, style, nsfw_mode, nsfw_threshold, cancelled_by, "
        "notice_message_id, source_flagged, source_score",
        (1, 2, 3, "a fox", "", 20, 7.0, 512, 512, 9, "Euler", 1, "sd15", "delivering", None, "inpaint", "inpaint",
         None, None, 0.8, None, None, None, None, None, "", "off", 0.4, None, 444, 1, 0.7),
        GenerateRequest(prompt="a fox", num_inference_steps=20, seed=9, scheduler="Euler", mode="inpaint",
                        strength=0.8, nsfw_threshold=0.4, keep_flagged=True, source_flagged=True)),
    6: ("user_id, guild_id, channel_id, model, status, action, nsfw_mode, width, height, request",
        (1, 2, 3, "sd15", "done", "dream", "block", 64, 64,
         GenerateRequest(prompt="a fox <lora:ink:0.5>", seed=9, width=64, height=64).to_json()),
        GenerateRequest(prompt="a fox <lora:ink:0.5>", seed=9, width=64, height=64)),
    # Schema 7's requests have no model of their own: they ran on the default, as they read back.
    7: ("user_id, guild_id, channel_id, model, status, action, nsfw_mode, width, height, request",
        (1, 2, 3, "sd15", "done", "dream", "block", 64, 64,
         '{"prompt": "a fox", "seed": 9, "width": 64, "height": 64, "mode": "txt2img"}'),
        GenerateRequest(prompt="a fox", seed=9, width=64, height=64)),
    # Schema 8's jobs say nothing of how their prompt was read: /info leaves it unsaid.
    8: ("user_id, guild_id, channel_id, model, status, action, nsfw_mode, width, height, request",
        (1, 2, 3, "sd15", "done", "dream", "block", 64, 64,
         GenerateRequest(prompt="a fox", seed=9, width=64, height=64, model="sd15").to_json()),
        GenerateRequest(prompt="a fox", seed=9, width=64, height=64, model="sd15")),
    # Schema 9's jobs were all run by the bot's own engines: no lease, no worker.
    9: ("user_id, guild_id, channel_id, model, status, action, nsfw_mode, width, height, request",
        (1, 2, 3, "sd15", "done", "dream", "block", 64, 64,
         GenerateRequest(prompt="a fox", seed=9, width=64, height=64, model="sd15").to_json()),
        GenerateRequest(prompt="a fox", seed=9, width=64, height=64, model="sd15")),
}


@pytest.mark.parametrize("version", range(1, len(bundled_migrations())))
async def test_upgrading_from_every_earlier_schema_keeps_each_request_as_it_was(tmp_path: Path, version: int) -> None:
    path = tmp_path / "bot.sqlite3"
    old = await Store.open(path, bundled_migrations()[:version])
    columns, values, expected = OLD_ROWS[version]
    job_id = (await old._db.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(values))})",
                                    values)).lastrowid
    await old.close()

    store = await Store.open(path)
    row = await store.get_job(job_id)
    assert row.request == expected  # read back as it was made, no default applied again
    picture_based = expected.mode.needs_image
    assert row.with_pictures(b"i" if picture_based else None, b"m" if expected.mode.needs_mask else None) \
        .validated(Limits()) is not None
    assert (row.user_id, row.guild_id, row.channel_id, row.model) == (1, 2, 3, "sd15")
    assert (row.prompt_tokens, row.prompt_chunks) == (None, None)  # unknown before schema 9: left unsaid
    assert (row.lease, row.worker) == (None, None)  # before schema 10, no job ran on a worker elsewhere
    assert (row.width, row.height) == values[7:9]  # the size it was made at stays with the result
    # Jobs recorded now carry their request whole, a field of a newer release left out when read.
    newer = await store.create_job(expected, user_id=1, guild_id=2, channel_id=3, interaction_id=None, model="m")
    assert (await store.get_job(newer)).request == expected
    await store.close()


async def test_an_engines_start_is_remembered_per_model_and_device(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    store = await Store.open(path)
    assert await store.engine_start_seconds("/models/anime", "cuda:0") is None
    await store.set_engine_start_seconds("/models/anime", "cuda:0", 41.25)
    await store.set_engine_start_seconds("/models/anime", "cuda:0", 38.5)  # the last start counts
    await store.set_engine_start_seconds("/models/anime", "cpu", 300.0)
    await store.close()
    again = await Store.open(path)  # across a restart of the bot
    assert await again.engine_start_seconds("/models/anime", "cuda:0") == 38.5
    assert await again.engine_start_seconds("/models/anime", "cpu") == 300.0
    assert await again.engine_start_seconds("/models/other", "cuda:0") is None
    await again.close()


async def test_the_servers_with_a_mod_log_are_listed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    await store.set_guild_setting(2, "modlog_channel_id", 21, actor_id=9)
    await store.set_guild_setting(1, "modlog_channel_id", 11, actor_id=9)
    await store.set_guild_setting(3, "nsfw_mode", "off", actor_id=9)  # settings, but no mod-log
    await store.set_guild_setting(4, "modlog_channel_id", 41, actor_id=9)
    await store.set_guild_setting(4, "modlog_channel_id", None, actor_id=9)  # chosen, then turned off
    assert await store.modlog_channels() == {1: 11, 2: 21}
    await store.close()


async def test_the_moderation_reads_kept_in_memory_follow_every_change_at_once(tmp_path: Path) -> None:
    """The rules a command is checked against are read a dozen times per command and kept in memory
    (`Store._kept_read`); a ban, a setting, a LoRA turned off, a member's defaults must each hold
    for the very next read (the gate of a job already queued included)."""
    store = await Store.open(tmp_path / "bot.sqlite3")
    guild, member, moderator, channel = 10, 20, 30, 40
    # Read once each: kept from here on.
    assert await store.get_ban(guild, member) is None
    assert (await store.guild_settings(guild)).nsfw_mode == "block"
    assert await store.channel_models(guild) == {}
    assert await store.disabled_adapters(guild) == []
    assert await store.member_settings(member) == {}

    await store.ban(guild, member, actor_id=moderator, reason="spam")
    assert (await store.get_ban(guild, member)).reason == "spam"
    await store.unban(guild, member, actor_id=moderator)
    assert await store.get_ban(guild, member) is None
    await store.set_guild_setting(guild, "nsfw_mode", "spoiler", actor_id=moderator)
    assert (await store.guild_settings(guild)).nsfw_mode == "spoiler"
    await store.set_channel_mode(guild, channel, "off", actor_id=moderator)
    assert (await store.guild_settings(guild)).channel_modes == {channel: "off"}
    await store.set_channel_models(guild, channel, actor_id=moderator, model="shapes")
    assert (await store.channel_models(guild))[channel].model == "shapes"
    await store.set_adapter_disabled(guild, "lora", "pixel", True, actor_id=moderator)
    assert await store.disabled_adapters(guild) == [("lora", "pixel")]
    await store.set_member_settings(member, {"steps": 12})
    assert await store.member_settings(member) == {"steps": 12}
    await store.erase_user_jobs(member)  # /forget takes the defaults too
    assert await store.member_settings(member) == {}

    # What a caller gets is its own: changing it changes nothing kept.
    (await store.guild_settings(guild)).channel_modes.clear()
    (await store.channel_models(guild)).clear()
    (await store.disabled_adapters(guild)).clear()
    assert (await store.guild_settings(guild)).channel_modes == {channel: "off"}
    assert channel in await store.channel_models(guild)
    assert await store.disabled_adapters(guild) == [("lora", "pixel")]
    await store.close()


async def test_a_read_that_a_change_overlaps_is_not_kept(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "bot.sqlite3")
    reads, go_on = [], asyncio.Event()

    async def read(value: str) -> str:
        reads.append(value)
        await go_on.wait()
        return value

    old = asyncio.create_task(store._kept_read(("x",), lambda: read("before")))
    await asyncio.sleep(0)  # out reading when a change begins and ends
    with store._forgetting():
        pass
    go_on.set()
    assert await old == "before"
    assert await store._kept_read(("x",), lambda: read("after")) == "after"  # read again, not the old one
    assert await store._kept_read(("x",), lambda: read("never")) == "after"  # kept now
    assert reads == ["before", "after"]
    await store.close()


async def test_kept_reads_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.store.KEPT_READS", 2)
    store = await Store.open(tmp_path / "bot.sqlite3")
    for member in (1, 2, 3):  # a ban (or none) per member who sent a command
        assert await store.get_ban(10, member) is None
    assert list(store._kept) == [("ban", 10, 2), ("ban", 10, 3)]  # the oldest went
    await store.close()


async def test_a_change_another_program_makes_is_seen_within_kept_check_seconds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's sqlite3 on the running bot's database: what was kept is forgotten once SQLite
    says another connection committed (checked at most every KEPT_CHECK_SECONDS)."""
    path = tmp_path / "bot.sqlite3"
    store = await Store.open(path)
    assert await store.get_ban(10, 20) is None
    assert await store.get_ban(10, 20) is None  # kept, and the database's version seen
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO bans (guild_id, user_id, banned_by, reason) VALUES (10, 20, 30, 'by hand')")
    monkeypatch.setattr("bot.store.KEPT_CHECK_SECONDS", 3600.0)
    assert await store.get_ban(10, 20) is None  # not looked for yet
    monkeypatch.setattr("bot.store.KEPT_CHECK_SECONDS", 0.0)
    assert (await store.get_ban(10, 20)).reason == "by hand"
    await store.close()


async def test_a_kept_read_goes_with_a_transaction_rolled_back_under_it(tmp_path: Path) -> None:
    """A member's defaults are written without the transaction lock: such a write can land inside
    another coroutine's transaction, and go if that one is rolled back."""
    store = await Store.open(tmp_path / "bot.sqlite3")
    with pytest.raises(RuntimeError):
        async with store._transaction():
            await store.set_member_settings(20, {"steps": 12})
            assert await store.member_settings(20) == {"steps": 12}  # kept
            raise RuntimeError("the transaction fails")
    assert await store.member_settings(20) == {}
    await store.close()
