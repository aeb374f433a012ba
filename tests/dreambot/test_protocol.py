"""The request rules and the wire format the bot and the engine share."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dreambot import protocol
from dreambot.protocol import (
    SAMPLERS,
    Batch,
    Cancel,
    EngineError,
    Fatal,
    GenerateRequest,
    GenerateResult,
    ImageResult,
    InvalidRequest,
    Job,
    Limits,
    Progress,
    Ready,
    batch_key,
    infotext,
)

LIMITS = Limits(max_steps=50, max_width=1024, max_height=768, max_images=4, max_prompt_length=100)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt": "   "}, "The prompt is empty"),
        ({"prompt": "\u200b\u2060\ufeff \u200d"}, "The prompt is empty"),  # only invisible characters
        ({"prompt": "x" * 101}, "The prompt is 101 characters long; the limit is 100"),
        ({"negative_prompt": "y" * 101}, "The negative prompt is 101 characters long"),
        ({"num_inference_steps": 0}, "Steps must be between 1 and 50 (got 0)"),
        ({"num_inference_steps": 51}, "Steps must be between 1 and 50 (got 51)"),
        ({"guidance_scale": -1.0}, "Guidance must be between 0 and 30 (got -1)"),
        ({"guidance_scale": 31.0}, "Guidance must be between 0 and 30"),
        ({"width": 1032}, "Width must be between 64 and 1024 pixels (got 1032)"),
        ({"height": 776}, "Height must be between 64 and 768 pixels (got 776)"),
        ({"width": 56}, "Width must be between 64 and 1024"),
        ({"width": 100}, "Width must be a multiple of 8 (got 100; try 96 or 104)"),
        ({"height": 513}, "Height must be a multiple of 8 (got 513; try 512 or 520)"),
        ({"seed": -1}, "Seed must be between 0 and 4294967295"),
        ({"seed": 2**32}, "Seed must be between 0 and 4294967295"),
        ({"scheduler": "Euler b"}, "Unknown sampler 'Euler b'; choose one of: DPM++ 2M Karras"),
        ({"num_images": 0}, "Count must be between 1 and 4 (got 0)"),
        ({"num_images": 5}, "Count must be between 1 and 4 (got 5)"),
    ],
)
def test_invalid_requests_say_what_to_change(changes: dict, message: str) -> None:
    request = GenerateRequest(**{"prompt": "a red fox", **changes})
    with pytest.raises(InvalidRequest) as caught:
        request.validated(LIMITS)
    assert message in str(caught.value)


PNG = b"\x89PNG fake bytes"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "sketch"}, "Unknown mode 'sketch'; choose one of: txt2img, img2img"),
        ({"mode": "img2img"}, "img2img needs an image to start from"),
        ({"image": PNG}, "txt2img does not take an image"),
        ({"mode": "img2img", "image": PNG, "mask": PNG}, "img2img does not take a mask"),
        ({"mode": "inpaint", "image": PNG}, "Inpainting needs a mask"),
        ({"mode": "img2img", "image": PNG, "strength": 0.0}, "Strength must be above 0 and at most 1 (got 0)"),
        ({"mode": "img2img", "image": PNG, "strength": 1.5}, "Strength must be above 0 and at most 1 (got 1.5)"),
        ({"mode": "img2img", "image": PNG, "strength": 0.2, "num_inference_steps": 4},
         "At strength 0.2, 4 steps leave no step to run; use at least 5 steps"),
        ({"mode": "outpaint", "image": PNG, "direction": "north", "amount": 64}, "Unknown direction 'north'"),
        ({"mode": "outpaint", "image": PNG, "amount": 12}, "multiple of 8 from 8 to 512 pixels (got 12)"),
        ({"mode": "outpaint", "image": PNG, "amount": 0}, "(got 0)"),
        ({"mode": "interpolate", "end_prompt": "a dog", "frames": 1}, "Frames must be between 2 and 16 (got 1)"),
        ({"mode": "interpolate", "end_prompt": "a dog", "frames": 17}, "Frames must be between 2 and 16 (got 17)"),
        ({"mode": "interpolate", "end_prompt": "a dog", "num_images": 2}, "leave the count at 1"),
        ({"mode": "interpolate", "seed": 3}, "needs an end prompt or an end seed that differs"),
        ({"mode": "interpolate", "seed": 3, "end_seed": 3, "end_prompt": " a red fox "}, "needs an end prompt"),
        ({"mode": "interpolate", "end_prompt": "x" * 101}, "The end prompt is 101 characters long"),
        ({"mode": "interpolate", "end_prompt": "a dog", "end_seed": -2}, "End seed must be between 0"),
    ],
)
def test_invalid_mode_requests_say_what_to_change(changes: dict, message: str) -> None:
    request = GenerateRequest(**{"prompt": "a red fox", **changes})
    with pytest.raises(InvalidRequest) as caught:
        request.validated(LIMITS)
    assert message in str(caught.value)


def test_each_mode_has_its_strength() -> None:
    assert GenerateRequest(prompt="p").denoising_strength is None
    assert GenerateRequest(prompt="p", mode="img2img", image=PNG).denoising_strength == 0.75
    assert GenerateRequest(prompt="p", mode="upscale", image=PNG).denoising_strength == 0.35
    assert GenerateRequest(prompt="p", mode="inpaint", image=PNG, mask=PNG, strength=0.6).denoising_strength == 0.6
    valid = GenerateRequest(prompt="p", mode="interpolate", end_prompt=" q ", end_seed=4, frames=16).validated(LIMITS)
    assert valid.end_prompt == "q"


def test_valid_request_is_trimmed_and_kept() -> None:
    request = GenerateRequest(prompt="  a red fox ", negative_prompt=" blurry ", width=512, height=768, seed=0,
                              scheduler="Euler a", num_images=4, num_inference_steps=50, guidance_scale=0)
    valid = request.validated(LIMITS)
    assert (valid.prompt, valid.negative_prompt) == ("a red fox", "blurry")
    assert (valid.width, valid.height, valid.seed, valid.num_images) == (512, 768, 0, 4)


def test_every_message_survives_the_wire() -> None:
    messages = [
        Job(job_id=3, request=GenerateRequest(prompt="ünïcode ✨", negative_prompt="n", seed=5, width=64)),
        Job(job_id=4, request=GenerateRequest(prompt="p", mode="inpaint", image=b"\x89PNG\x00\xff", mask=b"\x00\x01",
                                              strength=0.5, style="anime")),
        Job(job_id=5, request=GenerateRequest(prompt="p", mode="interpolate", end_prompt="q", end_seed=9, frames=3)),
        Progress(job_id=3, step=2, total=20),
        Progress(job_id=3, step=4, total=20, preview=b"\xff\xd8\xff\x00"),
        Cancel(job_id=3),
        Batch(jobs=(Job(job_id=6, request=GenerateRequest(prompt="a", seed=1, nsfw_threshold=0.3)),
                    Job(job_id=7, request=GenerateRequest(prompt="b", seed=2, keep_flagged=True)))),
        Job(job_id=8, request=GenerateRequest(prompt="p", mode="img2img", image=b"\x89PNG", source_flagged=True)),
        GenerateResult(job_id=3, images=(ImageResult(data=b"\x89PNG\x00\xff", seed=5, nsfw_content_detected=True,
                                                     nsfw_score=0.91),),
                       seed=5, width=64, height=64, model="tiny", timings={"total": 0.5}),
        GenerateResult(job_id=5, images=(ImageResult(data=b"GIF89a\x00", seed=5, nsfw_content_detected=False,
                                                     nsfw_score=0.1, format="gif"),),
                       seed=5, width=64, height=64, model="tiny"),
        GenerateResult(job_id=8, images=(ImageResult(data=b"", seed=5, nsfw_content_detected=True, nsfw_score=0.02),),
                       seed=5, width=64, height=96, model="tiny", source_score=0.61),
        EngineError(job_id=3, message="boom", kind="internal"),
        Ready(model="tiny", device="cpu", dtype="float32", safety_checker="opennsfw"),
        Fatal(message="no such model"),
    ]
    for message in messages:
        line = protocol.encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert protocol.decode(line) == message


def test_infotext_is_what_automatic1111_writes() -> None:
    request = GenerateRequest(prompt="a red fox", negative_prompt="blurry, dark", num_inference_steps=20,
                              guidance_scale=7.5, scheduler="Euler a")
    assert infotext(request, seed=7, width=512, height=768, model="sd15") == (
        "a red fox\n"
        "Negative prompt: blurry, dark\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 512x768, Model: sd15"
    )
    no_negative = GenerateRequest(prompt="a cat", guidance_scale=7.0)
    assert infotext(no_negative, seed=1, width=64, height=64, model="tiny").splitlines()[1].startswith("Steps: 25,")


def test_infotext_names_the_mode_and_its_options() -> None:
    img2img = GenerateRequest(prompt="a cat", mode="img2img", image=PNG, strength=0.4, style="anime")
    assert infotext(img2img, seed=1, width=64, height=64, model="m").splitlines()[1].endswith(
        "Model: m, Denoising strength: 0.4, Mode: img2img, Style: anime")
    outpaint = GenerateRequest(prompt="a cat", mode="outpaint", image=PNG, direction="left", amount=64)
    assert "Denoising strength: 1, Mode: outpaint, Outpaint: left 64" in infotext(
        outpaint, seed=1, width=64, height=64, model="m")
    frames = GenerateRequest(prompt="a cat", mode="interpolate", end_prompt="a dog, at night", frames=4)
    assert 'End prompt: "a dog, at night", End seed: 1, Frames: 4' in infotext(
        frames, seed=1, width=64, height=64, model="m")


def test_the_eight_samplers_members_know() -> None:
    assert set(SAMPLERS) >= {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC", "LMS", "Heun"}


def test_only_text_to_image_jobs_with_the_same_settings_share_a_batch() -> None:
    base = GenerateRequest(prompt="a fox", seed=1, num_images=2)
    same = [base, replace(base, prompt="a cat", negative_prompt="blur", seed=9, num_images=1, style="anime",
                          nsfw_threshold=0.2, keep_flagged=True)]
    assert len({batch_key(request) for request in same}) == 1
    for change in ({"num_inference_steps": 30}, {"scheduler": "Euler a"}, {"guidance_scale": 5.0}, {"width": 64}):
        assert batch_key(replace(base, **change)) != batch_key(base)
    assert batch_key(replace(base, mode="img2img", image=b"png")) is None
