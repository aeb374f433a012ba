"""The Engine (`engine.pipeline`): a job alone, shared pipeline calls (`generate_batch`), cancelling
between steps, previews, out of memory, and each picture's safety flag."""

from __future__ import annotations

import io
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreambot.request import GenerateRequest, InvalidRequest
from dreambot.settings import EngineSettings
from dreambot.wire import EngineError, GenerateResult, Job
from engine import imaging
from engine.pipeline import Engine
from engine.progress import JobCancelled
from engine.server import OOM_MESSAGE, protocol_error


def answered(engine: Engine, jobs: list[Job], report=None) -> list:
    """What the server sends for each job of a batch: its result, or the protocol error of what
    stopped it. `report(job_id, step, total, preview)` hears every job's steps."""
    progress = {job.job_id: partial(report, job.job_id) for job in jobs} if report else None
    outcomes = engine.generate_batch(jobs, progress)
    return [protocol_error(job.job_id, outcome) if isinstance(outcome, Exception) else outcome
            for job, outcome in zip(jobs, outcomes, strict=True)]


def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(settings(tiny_model))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


# Three compatible jobs (one batch_key): other prompts, negative prompts, seeds and counts.
BATCH = [
    GenerateRequest(prompt="a red fox", seed=7, num_inference_steps=4, keep_flagged=True),
    GenerateRequest(prompt="a blue whale in the sea", negative_prompt="blurry", seed=123, num_images=2,
                    num_inference_steps=4, keep_flagged=True),
    GenerateRequest(prompt="a green tree", seed=99, num_inference_steps=4, keep_flagged=True),
]


def solo_and_batched(engine: Engine, requests: list[GenerateRequest]) -> tuple[list, list]:
    solo = [engine.generate(job_id, request) for job_id, request in enumerate(requests, start=1)]
    batched = answered(engine, [Job(job_id, request) for job_id, request in enumerate(requests, start=1)])
    return solo, batched


def test_a_batch_is_one_pipeline_call_and_gives_each_job_its_solo_images(engine: Engine) -> None:
    batch_sizes = []
    hook = engine.pipe.unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    try:
        batched = answered(engine, [Job(job_id, r) for job_id, r in enumerate(BATCH, start=1)])
    finally:
        hook.remove()
    assert set(batch_sizes) == {2 * 4} and len(batch_sizes) == 4  # 4 images with guidance, 4 steps: one call
    solo = [engine.generate(job_id, request) for job_id, request in enumerate(BATCH, start=1)]
    assert [r.job_id for r in batched] == [1, 2, 3]
    for alone, together in zip(solo, batched, strict=True):
        assert isinstance(together, GenerateResult)
        assert [i.seed for i in together.images] == [i.seed for i in alone.images]
        for a, b in zip(alone.images, together.images, strict=True):
            # Float32 kernels round differently at another batch size (see the float64 test below):
            # at most one level of 255, in a handful of values.
            difference = np.abs(pixels(a.data) - pixels(b.data))
            assert difference.max() <= 1 and (difference > 0).mean() < 0.001
            parameters = Image.open(io.BytesIO(b.data)).text["parameters"]
            assert parameters == Image.open(io.BytesIO(a.data)).text["parameters"]


def test_batched_images_are_exactly_the_solo_ones_when_rounding_cannot_show(tiny_model: Path) -> None:
    # In float64 the kernels' batch-size-dependent rounding stays far below one level of 255: what
    # remains is the batching itself (generators, prompts, guidance, the split), which must be exact.
    engine = Engine.load(settings(tiny_model))
    engine.pipe.to(torch.float64)
    requests = [replace(r, scheduler="Euler a") for r in BATCH]  # a sampler that adds noise every step
    solo, batched = solo_and_batched(engine, requests)
    for alone, together in zip(solo, batched, strict=True):
        assert [i.data for i in together.images] == [i.data for i in alone.images]


class ScoreAll:
    """A stand-in classifier on open_nsfw's scale: every image scores `score`."""

    name = "opennsfw"

    def __init__(self, score: float) -> None:
        self.score = score

    def scores(self, images):
        return [self.score] * len(images)


def test_each_job_of_a_batch_keeps_its_own_safety_rules(engine: Engine, monkeypatch) -> None:
    monkeypatch.setattr(engine, "safety", ScoreAll(0.6))
    base = {"prompt": "a fox", "seed": 1, "num_inference_steps": 2}
    answers = answered(engine, [
        Job(1, GenerateRequest(**base, nsfw_threshold=0.5)),
        Job(2, GenerateRequest(**base, nsfw_threshold=0.7)),
        Job(3, GenerateRequest(**base, nsfw_threshold=0.5, keep_flagged=True)),
        Job(4, GenerateRequest(**base, nsfw_threshold=0.99)),  # out of bounds: refused, the others run
    ])
    flagged, shown, kept, refused = answers
    assert flagged.images[0].nsfw_content_detected and flagged.images[0].data == b""
    assert not shown.images[0].nsfw_content_detected and shown.images[0].data.startswith(b"\x89PNG")
    assert kept.images[0].nsfw_content_detected and kept.images[0].data.startswith(b"\x89PNG")
    assert isinstance(refused, EngineError) and refused.kind == "invalid" and refused.job_id == 4
    assert "between 0.05 and 0.95" in refused.message


def test_jobs_that_cannot_share_a_call_still_get_their_answers_in_order(engine: Engine) -> None:
    other_size = GenerateRequest(prompt="a fox", seed=1, num_inference_steps=2, width=96)
    answers = answered(engine, [Job(1, BATCH[0]), Job(2, other_size), Job(3, BATCH[2])])
    assert [a.job_id for a in answers] == [1, 2, 3] and all(isinstance(a, GenerateResult) for a in answers)
    assert answers[1].width == 96


@pytest.fixture(scope="module")
def inputs() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    return {"image": png(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))), "mask": png(mask)}


MODES = {
    "txt2img": {},
    "img2img": {"mode": "img2img", "strength": 1.0},
    "inpaint": {"mode": "inpaint"},
    "outpaint": {"mode": "outpaint", "direction": "right", "amount": 16},
    "upscale": {"mode": "upscale", "strength": 1.0},
    "interpolate": {"mode": "interpolate", "end_seed": 9, "frames": 3},
}


def cancel_at(step: int, seen: list[tuple[int, int, int]]):
    def on_step(job_id: int, at: int, total: int, preview) -> None:
        seen.append((job_id, at, total))
        if at == step:
            raise JobCancelled

    return on_step


@pytest.mark.parametrize("mode", [*MODES, "latent upscaler"])
def test_a_cancel_stops_every_mode_between_two_steps(engine: Engine, inputs, mode: str, tiny_model: Path,
                                                     tmp_path: Path) -> None:
    fields = MODES.get(mode, MODES["upscale"])
    if mode == "latent upscaler":
        from tests.support.models import write_tiny_upscaler

        engine = Engine.load(settings(tiny_model, sd_upscaler=str(write_tiny_upscaler(tmp_path / "up"))))
    if fields.get("mode") in ("img2img", "inpaint", "outpaint", "upscale"):
        fields = {**fields, "image": inputs["image"]}
    if fields.get("mode") == "inpaint":
        fields = {**fields, "mask": inputs["mask"]}
    request = GenerateRequest(prompt="a cat", seed=1, num_inference_steps=10, **fields)
    seen: list[tuple[int, int, int]] = []
    [answer] = answered(engine, [Job(5, request)], cancel_at(2, seen))
    assert answer == EngineError(job_id=5, message="cancelled", kind="cancelled")
    assert [at for _, at, _ in seen] == [1, 2] and seen[0][2] >= 10  # not one step more
    # The engine is none the worse for it.
    [again] = answered(engine, [Job(6, request)])
    assert isinstance(again, GenerateResult) and again.job_id == 6


def test_cancelling_one_job_of_a_batch_lets_the_others_finish(engine: Engine) -> None:
    seen: list[tuple[int, int, int]] = []

    def on_step(job_id: int, step: int, total: int, preview) -> None:
        seen.append((job_id, step, total))
        if job_id == 2 and step == 1:
            raise JobCancelled

    answers = answered(engine, [Job(job_id, r) for job_id, r in enumerate(BATCH, start=1)], on_step)
    assert answers[1] == EngineError(job_id=2, message="cancelled", kind="cancelled")
    assert isinstance(answers[0], GenerateResult) and isinstance(answers[2], GenerateResult)
    assert [step for job_id, step, _ in seen if job_id == 2] == [1]  # no progress after its cancel
    assert [step for job_id, step, _ in seen if job_id == 3] == [1, 2, 3, 4]
    # When every job of the call is cancelled, the call itself stops.
    seen.clear()
    answers = answered(engine, [Job(1, BATCH[0]), Job(3, BATCH[2])], cancel_at(2, seen))
    assert [a.kind for a in answers] == ["cancelled", "cancelled"] and max(step for _, step, _ in seen) == 2


def test_previews_are_small_jpegs_of_each_jobs_first_image(engine: Engine) -> None:
    previews: dict[int, list[bytes]] = {}
    requests = [GenerateRequest(prompt="a fox", seed=3, num_images=2, width=96, height=64, num_inference_steps=3),
                GenerateRequest(prompt="a fox", seed=4, width=96, height=64, num_inference_steps=3)]

    def on_step(job_id: int, step: int, total: int, preview) -> None:
        previews.setdefault(job_id, []).append(preview(0))

    answered(engine, [Job(1, requests[0]), Job(2, requests[1])], on_step)
    assert len(previews[1]) == len(previews[2]) == 3
    for data in previews[1] + previews[2]:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == (128, 85)  # the picture's shape, longest side 128
    assert previews[1][-1] != previews[2][-1]  # each its own job's picture


def test_the_latent_preview_reads_the_channels_as_colours() -> None:
    # SD's fourth latent channel is (inverted) blue-yellow: strongly negative reads as blue.
    latents = torch.zeros(4, 8, 8)
    latents[3] = -1.5
    rgb = np.asarray(Image.open(io.BytesIO(imaging.latent_preview(latents, "sd"))).convert("RGB"), dtype=float)
    red, green, blue = rgb.reshape(-1, 3).mean(axis=0)
    assert blue > 240 and red < 180 and green < blue
    grey = np.asarray(Image.open(io.BytesIO(imaging.latent_preview(torch.zeros(4, 16, 8), "sd"))))
    assert grey.shape == (128, 64, 3) and np.abs(grey.astype(int) - 128).max() <= 2
    sdxl = np.asarray(Image.open(io.BytesIO(imaging.latent_preview(torch.zeros(4, 8, 8), "sdxl"))), dtype=int)
    assert sdxl[..., 0].mean() > sdxl[..., 1].mean()  # SDXL's bias tints the zero latent


def test_out_of_memory_is_answered_and_the_next_job_works(engine: Engine, monkeypatch) -> None:
    request = GenerateRequest(prompt="a fox", seed=2, num_inference_steps=3, keep_flagged=True)
    before = engine.generate(1, request).images[0].data
    forward = engine.pipe.unet.forward

    def out_of_memory(*args, **kwargs):
        monkeypatch.setattr(engine.pipe.unet, "forward", forward)  # once
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine.pipe.unet, "forward", out_of_memory)
    [failed] = answered(engine, [Job(2, request)])
    assert failed == EngineError(job_id=2, message=OOM_MESSAGE, kind="oom")
    [after] = answered(engine, [Job(4, request)])
    assert after.images[0].data == before


def memory_for(engine: Engine, monkeypatch, most: int) -> list[int]:
    """Make the UNet run out of memory on more than `most` pictures at once (two rows each, with
    guidance); returns the number of pictures of each UNet call."""
    forward = engine.pipe.unet.forward
    pictures: list[int] = []

    def limited(sample, *args, **kwargs):
        pictures.append(sample.shape[0] // 2)
        if sample.shape[0] > 2 * most:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(engine.pipe.unet, "forward", limited)
    return pictures


@pytest.mark.parametrize("most", [4, 3])
def test_jobs_that_run_out_of_memory_together_run_again_alone(engine: Engine, monkeypatch, most: int) -> None:
    requests = [GenerateRequest(prompt="a fox", seed=11, num_images=4, num_inference_steps=3, keep_flagged=True)] + [
        GenerateRequest(prompt=prompt, seed=seed, num_inference_steps=3, keep_flagged=True)
        for prompt, seed in (("a whale", 5), ("a tree", 6), ("a cat", 7))
    ]
    solo = [engine.generate(job_id, r) for job_id, r in enumerate(requests, start=1)]
    pictures = memory_for(engine, monkeypatch, most)
    steps: list[tuple[int, int]] = []
    answers = answered(engine, [Job(job_id, r) for job_id, r in enumerate(requests, start=1)],
                       lambda job_id, step, total, preview: steps.append((job_id, step)))
    big, *small = answers
    fits = most >= 4
    assert pictures[0] == 7  # first tried together
    if fits:
        assert [i.data for i in big.images] == [i.data for i in solo[0].images]
    else:
        assert big == EngineError(job_id=1, message=OOM_MESSAGE, kind="oom")  # too big even alone
    for alone, answer in zip(solo[1:], small, strict=True):
        assert isinstance(answer, GenerateResult) and answer.job_id == alone.job_id
        assert [i.data for i in answer.images] == [i.data for i in alone.images]  # its solo run exactly
    # Then each alone, in order, with its own progress from step 1.
    assert steps == [(job_id, step) for job_id in ([1, 2, 3, 4] if fits else [2, 3, 4]) for step in (1, 2, 3)]
    assert pictures[1:] == ([4] * 3 if fits else [4]) + [1] * 9


def test_a_cancel_still_reaches_a_job_run_again_alone(engine: Engine, monkeypatch) -> None:
    memory_for(engine, monkeypatch, 1)
    seen: list[tuple[int, int, int]] = []

    def on_step(job_id: int, step: int, total: int, preview) -> None:
        seen.append((job_id, step, total))
        if job_id == 2 and step == 1:
            raise JobCancelled

    requests = [GenerateRequest(prompt=p, seed=1, num_inference_steps=3) for p in ("a fox", "a whale", "a cat")]
    answers = answered(engine, [Job(k, r) for k, r in enumerate(requests, start=1)], on_step)
    assert answers[1] == EngineError(job_id=2, message="cancelled", kind="cancelled")
    assert isinstance(answers[0], GenerateResult) and isinstance(answers[2], GenerateResult)
    assert [step for job_id, step, _ in seen if job_id == 2] == [1]


def test_same_seed_same_image_other_seed_other_image(engine: Engine) -> None:
    request = GenerateRequest(prompt="a red fox", seed=7, num_inference_steps=8)
    first = engine.generate(1, request).images[0].data
    again = engine.generate(2, request).images[0].data
    other = engine.generate(3, GenerateRequest(prompt="a red fox", seed=8, num_inference_steps=8)).images[0].data
    assert first == again
    assert np.abs(pixels(first) - pixels(other)).mean() > 5


def test_prompt_and_negative_prompt_reach_the_model(engine: Engine) -> None:
    base = GenerateRequest(prompt="a red fox", seed=3, num_inference_steps=6)
    images = [
        engine.generate(1, request).images[0].data
        for request in (base, GenerateRequest(prompt="a blue whale", seed=3, num_inference_steps=6),
                        GenerateRequest(prompt="a red fox", negative_prompt="blurry", seed=3, num_inference_steps=6))
    ]
    assert images[0] != images[1] and images[0] != images[2]


def test_every_image_of_a_batch_can_be_made_alone(engine: Engine) -> None:
    batch = engine.generate(1, GenerateRequest(prompt="a cat", seed=40, num_images=3, num_inference_steps=6))
    assert [image.seed for image in batch.images] == [40, 41, 42] and batch.seed == 40
    alone = engine.generate(2, GenerateRequest(prompt="a cat", seed=42, num_inference_steps=6)).images[0]
    # Batched and single matmuls may round differently in the last bit; the picture is the same.
    assert np.abs(pixels(batch.images[2].data) - pixels(alone.data)).max() <= 2


def test_png_carries_the_parameters_chunk(engine: Engine) -> None:
    request = GenerateRequest(prompt="a red fox", negative_prompt="blurry", seed=11, width=96, height=64,
                              num_inference_steps=5, guidance_scale=6.5, scheduler="Euler a")
    result = engine.generate(1, request)
    image = Image.open(io.BytesIO(result.images[0].data))
    assert image.size == (96, 64) and (result.width, result.height) == (96, 64)
    assert image.text["parameters"] == (
        "a red fox\nNegative prompt: blurry\n"
        "Steps: 5, Sampler: Euler a, CFG scale: 6.5, Seed: 11, Size: 96x64, Model: tiny"
    )


class ScoreOnDemand:
    """A stand-in classifier on open_nsfw's scale: image i scores scores[i]."""

    name = "opennsfw"

    def __init__(self, scores: list[float]) -> None:
        self._scores = scores

    def scores(self, images):
        return self._scores[: len(images)]


@pytest.fixture
def scored(engine: Engine):
    original = engine.safety
    engine.safety = ScoreOnDemand([0.1, 0.7, 0.3])
    yield engine
    engine.safety = original


def test_each_image_gets_its_own_flag_and_score(scored: Engine) -> None:
    result = scored.generate(1, GenerateRequest(prompt="a fox", seed=5, num_images=3, num_inference_steps=3))
    assert [i.nsfw_content_detected for i in result.images] == [False, True, False]
    assert [i.nsfw_score for i in result.images] == [0.1, 0.7, 0.3]
    assert not result.all_flagged
    # The flagged image's bytes never leave the engine unless the request may show them.
    assert [bool(i.data) for i in result.images] == [True, False, True]
    kept = scored.generate(1, GenerateRequest(prompt="a fox", seed=5, num_images=3, num_inference_steps=3,
                                              keep_flagged=True))
    assert all(i.data.startswith(b"\x89PNG") for i in kept.images)
    assert pixels(kept.images[1].data).std() > 1


@pytest.mark.parametrize(("threshold", "flags"), [(None, [False, True, False]), (0.2, [False, True, True]),
                                                  (0.05, [True, True, True]), (0.95, [False, False, False])])
def test_the_threshold_decides_what_is_flagged(scored: Engine, threshold, flags) -> None:
    result = scored.generate(1, GenerateRequest(prompt="a fox", seed=5, num_images=3, num_inference_steps=2,
                                                nsfw_threshold=threshold))
    assert [i.nsfw_content_detected for i in result.images] == flags


@pytest.mark.parametrize("threshold", [0.01, 0.99, -0.05])
def test_a_threshold_out_of_bounds_is_refused_before_any_work(scored: Engine, threshold: float) -> None:
    with pytest.raises(InvalidRequest, match="safety threshold must be between 0.05 and 0.95 for the opennsfw"):
        scored.generate(1, GenerateRequest(prompt="a fox", seed=5, num_inference_steps=2, nsfw_threshold=threshold))
