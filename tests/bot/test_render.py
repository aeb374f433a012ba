"""What members read, as plain strings (`bot.render`): no Discord needed."""

from __future__ import annotations

from types import SimpleNamespace

from bot import render
from dreambot.relay import WorkerStatus
from dreambot.request import GenerateRequest
from dreambot.wire import GenerateResult, ImageResult


def result(**fields) -> GenerateResult:
    image = ImageResult(data=b"x", seed=5, nsfw_content_detected=False, nsfw_score=0.0)
    return GenerateResult(job_id=1, images=(image,), seed=5, width=64, height=64, model="tiny",
                          timings={"total": 1.0}, **fields)


def details(text: str) -> str:
    return text.splitlines()[-1]


def test_a_summary_names_its_mode_once() -> None:
    inpaint = GenerateRequest(prompt="a cat", mode="inpaint", image=b"i", mask=b"m", seed=5)
    said = details(render.summary(2, inpaint, result(), origin=render.origin("inpaint", 1)))
    assert said.startswith("inpainting of job 1 · strength 1 · ") and said.count("inpainting") == 1
    direct = details(render.summary(2, inpaint, result()))
    assert direct.startswith("inpainting, strength 1 · ")
    vary = GenerateRequest(prompt="a cat", mode="img2img", image=b"i", strength=0.5, seed=5)
    assert details(render.summary(3, vary, result(), origin=render.origin("vary", 1, 0))).startswith(
        "variation of job 1, image 1 · strength 0.5 · ")
    reroll = details(render.summary(3, vary, result(), origin=render.origin("reroll", 1)))
    assert reroll.startswith("re-roll of job 1 · img2img, strength 0.5")  # a re-roll may be of any mode
    upscale = GenerateRequest(prompt="a cat", mode="upscale", image=b"i", seed=5)
    assert details(render.summary(4, upscale, result(), origin=render.origin("upscale", 1, 0))).startswith(
        "upscale of job 1, image 1 · 2× · ")
    left = GenerateRequest(prompt="a cat", mode="outpaint", image=b"i", direction="left", amount=16, seed=5)
    assert details(render.summary(5, left, result(), origin=render.origin("left", 1, 0))).startswith(
        "extension to the left of job 1, image 1 · 16 px · ")
    assert details(render.summary(5, left, result())).startswith("outpainted 16 px left · ")


def test_times_are_discord_timestamps_each_member_reads_in_their_own_zone() -> None:
    assert render.when("2026-12-01T10:00:00.000Z") == "<t:1796119200:f>"
    assert render.when("2026-12-01T10:00:00.000Z", "R") == "<t:1796119200:R>"
    job = SimpleNamespace(id=3, user_id=9, status="done", created_at="2026-12-01T10:00:00.000Z",
                          request=GenerateRequest(prompt="a cat", seed=1), width=64, height=64, model="tiny",
                          engine_seconds=1.0, error=None, message_id=None, channel_id=None, deleted_at=None,
                          shown_status="done", guild_id=None, prompt_tokens=None, prompt_chunks=None)
    assert "<t:1796119200:f> (<t:1796119200:R>)" in render.info(job)
    assert "UTC" not in render.info(job)
    assert "<t:1796119200:R>" in render.history([job], total=1, page=0, pages=1, whose="Your")


def test_a_cold_start_is_said_in_the_queued_notice() -> None:
    assert render.queued(4, 0, starting=("shapes", 21.6)) == (
        "📦 Job 4 is next: the image engine is starting, loading the model shapes (about 22 s)…")
    assert render.queued(4, 0, starting=("shapes", 0.0)).endswith("(any moment now)…")
    assert render.queued(4, 0, starting=("shapes", None)).endswith("loading the model shapes…")
    assert render.queued(5, 2, 40.0, starting=("shapes", 21.6)) == (
        "🎨 Job 5 is queued: 2 jobs ahead of yours, about 40 s to wait.\n"
        "📦 The image engine is starting: loading the model shapes.")
    assert render.queued(4, 0) == "🎨 Job 4 is next: starting shortly…"


def job_row(request: GenerateRequest, **fields) -> SimpleNamespace:
    return SimpleNamespace(**{"id": 3, "user_id": 9, "status": "done", "created_at": "2026-12-01T10:00:00.000Z",
                              "request": request, "width": 64, "height": 64, "model": "tiny", "engine_seconds": 1.0,
                              "error": None, "prompt_tokens": None, "prompt_chunks": None, **fields})


def test_info_says_how_the_prompt_was_read_and_never_cuts_it_silently() -> None:
    short = job_row(GenerateRequest(prompt="a cat", seed=1), prompt_tokens=2, prompt_chunks=1)
    assert "Read whole: 2 tokens, in 1 chunk of the text encoder's length" in render.info(short)
    assert not render.prompts_clipped(short)
    words = " ".join(f"word{i}" for i in range(150))  # 1039 characters
    long = job_row(GenerateRequest(prompt=words, negative_prompt="blurry", seed=1), prompt_tokens=300,
                   prompt_chunks=4)
    text = render.info(long)
    assert "300 tokens, in 4 chunks" in text and "in full in the attached file" in text and len(text) <= 2000
    assert render.prompts_clipped(long) and words in render.prompts_file(long)
    assert "Negative prompt: blurry" in render.prompts_file(long)
    assert "Read whole" not in render.info(job_row(GenerateRequest(prompt="a cat", seed=1)))  # unknown: unsaid


def test_a_summary_too_short_for_the_prompt_says_where_it_is_whole() -> None:
    words = " ".join(f"word{i}" for i in range(400))
    text = render.summary(8, GenerateRequest(prompt=words, seed=5), result())
    assert len(text) <= 2000 and "`/info job:8` gives them whole" in text
    assert "/info" not in render.summary(8, GenerateRequest(prompt="a cat", seed=5), result())


def test_a_refusals_reason_is_the_job_members_alone() -> None:
    barred = job_row(GenerateRequest(prompt="a cat", seed=1), status="failed",
                     error="refused: A moderator has barred you from using Dreambot in this server.")
    assert "barred" in render.info(barred, mine=True)
    other = render.info(barred, mine=False)
    assert "barred" not in other and "Error: stopped under this server's rules" in other
    crashed = job_row(GenerateRequest(prompt="a cat", seed=1), status="failed",
                      error="internal: OSError: /home/op/models/x.safetensors is broken")
    assert "/home/op" not in render.info(crashed) and "something went wrong on our side" in render.info(crashed)


def test_workers_list_says_each_workers_state_and_what_to_do_without_any() -> None:
    """/mod workers: name, device, models, busy or idle (not with which job: any server's moderators
    read it), jobs done, last seen; an operator's name cannot break out of its code span."""
    def worker(name: str, models: tuple[str, ...], lease=None, seen: float = 100.0):
        status = WorkerStatus(session=name, name=name, device="cuda:0", model="sd15", dtype="float16",
                              safety_checker="opennsfw", protocol=3, models=models)
        return SimpleNamespace(name=name, status=status, lease=lease, busy=lease is not None, last_seen=seen)

    busy = worker("gpu`1", ("sd15", "sdxl"), lease=SimpleNamespace(outcomes={12: None}), seen=95.0)
    text = render.workers_list([worker("gpu-2", ("sd15",)), busy], {"gpu-2": 7}, 103.0, remote=True,
                               lease_seconds=15)
    lines = text.splitlines()
    assert lines[0] == "**Workers** (2; one is lost after 15 s of silence)"
    assert lines[1] == "• `gpu-2` · `cuda:0` · models: sd15 · idle · 7 job(s) done · last seen 3 s ago"
    assert lines[2] == ("• `gpuˋ1` · `cuda:0` · models: sd15, sdxl · busy · 0 job(s) done · "
                        "last seen 8 s ago")
    assert "No worker is connected" in render.workers_list([], {}, 0.0, remote=True, lease_seconds=15)
    assert "NATS_URL" in render.workers_list([], {}, 0.0, remote=False, lease_seconds=0)


def test_worker_news_for_the_mod_log() -> None:
    assert render.worker_joined("gpu-1", "cuda:0", "sd15") == (
        "🟢 Worker `gpu-1` joined: `sd15` on `cuda:0`; it takes jobs now.")
    assert render.worker_lost("gpu-1", "worker gpu-1 said nothing for 15 s").startswith(
        "🔴 Worker `gpu-1` was lost (worker gpu-1 said nothing for 15 s). A job it held goes back to the front")
    assert "stopped by its operator" in render.worker_left("gpu-1")


def test_a_queued_job_with_no_worker_connected_says_it_waits_for_one() -> None:
    assert render.queued(4, 0, starting=(render.NO_WORKER, None)) == (
        "⏳ Job 4 is next: no image worker is connected right now; it starts as soon as one is.")
    assert render.queued(4, 2, 30.0, starting=(render.NO_WORKER, None)).startswith(
        "⏳ Job 4 is queued (2 jobs ahead): no image worker")
