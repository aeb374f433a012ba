"""The request rules the bot and the engine share."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dreambot.request import (
    MAX_SEED,
    SAFETY_SCALES,
    SAMPLERS,
    GenerateRequest,
    InvalidRequest,
    Limits,
    Mode,
    picture_seed,
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
    with pytest.raises(InvalidRequest) as caught:  # an unknown mode is refused as the request is made
        GenerateRequest(**{"prompt": "a red fox", **changes}).validated(LIMITS)
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


def test_the_eight_samplers_members_know() -> None:
    assert set(SAMPLERS) >= {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC", "LMS", "Heun"}


def test_only_text_to_image_jobs_with_the_same_settings_share_a_batch() -> None:
    base = GenerateRequest(prompt="a fox", seed=1, num_images=2)
    same = [base, replace(base, prompt="a cat", negative_prompt="blur", seed=9, num_images=1, style="anime",
                          nsfw_threshold=0.2, keep_flagged=True)]
    assert len({request.batch_key() for request in same}) == 1
    for change in ({"num_inference_steps": 30}, {"scheduler": "Euler a"}, {"guidance_scale": 5.0}, {"width": 64}):
        assert replace(base, **change).batch_key() != base.batch_key()
    assert replace(base, mode="img2img", image=b"png").batch_key() is None


def test_a_request_is_stored_as_it_was_made() -> None:
    request = GenerateRequest(prompt="a fox", mode="inpaint", image=PNG, mask=PNG, strength=0.4, seed=3,
                              style="anime", nsfw_threshold=0.2, source_flagged=True)
    text = request.to_json()
    assert b"PNG" not in text.encode() and "image" in text  # the pictures are files, not JSON
    again = GenerateRequest.from_json(text, image=PNG, mask=PNG)
    assert again == request and again.mode is Mode.INPAINT
    # A newer release's field is left out rather than refused; an unknown mode is refused clearly.
    assert GenerateRequest.from_json(text.replace('"prompt"', '"future": 1, "prompt"'), image=PNG, mask=PNG) == request
    with pytest.raises(InvalidRequest, match="Unknown mode 'sketch'"):
        GenerateRequest.from_json(text.replace('"inpaint"', '"sketch"'))


def test_each_picture_has_its_own_seed() -> None:
    assert GenerateRequest(prompt="p", seed=MAX_SEED - 1, num_images=3).seeds() == [MAX_SEED - 1, MAX_SEED, 0]
    assert picture_seed(5, 2) == 7


def test_a_threshold_is_checked_on_its_classifier_scale() -> None:
    scale = SAFETY_SCALES["opennsfw"]
    assert scale.check(None) == scale.default and scale.check(0.2) == 0.2
    assert not scale.allows(0.01) and scale.allows(scale.lowest) and scale.allows(scale.highest)
    with pytest.raises(InvalidRequest, match="between 0.05 and 0.95 for the opennsfw classifier"):
        scale.check(0.99)
