"""A few-step setup for CPU hosts: the LCM sampler at 1 to 8 steps, guidance 1 or less running one
UNet pass per step (no negative prompt encoded), and a model's few-step defaults in models.toml.
On the tiny model, loaded through `from_pretrained` like any diffusers folder."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreambot.models import scan
from dreambot.request import GenerateRequest, InvalidRequest, Mode
from dreambot.settings import EngineSettings
from dreambot.wire import GenerateResult, Job
from engine.pipeline import Engine
from tests.support.models import tiny_sdxl_model

PROMPT = "a red fox in the snow"
# Over one chunk of 75 tokens: guided, it would pad the prompt to two chunks.
LONG_NEGATIVE = ", ".join(["blurry, lowres, bad anatomy, watermark"] * 12)


def settings(model: Path | str) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model))


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(settings(tiny_model))


@dataclass
class Calls:
    """What the UNet and the text encoder were called with."""

    unet_batches: list[int] = field(default_factory=list)
    encoded: list[list[int]] = field(default_factory=list)  # token ids, per text encoder call


@contextmanager
def watched(engine: Engine) -> Iterator[Calls]:
    calls = Calls()

    def unet(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls.unet_batches.append(int(args[0].shape[0]))

    def encoder(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs["input_ids"]
        calls.encoded.extend(row.tolist() for row in ids)

    hooks = [engine.pipe.unet.register_forward_pre_hook(unet, with_kwargs=True),
             engine.pipe.text_encoder.register_forward_pre_hook(encoder, with_kwargs=True)]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


def pixels(result: GenerateResult) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16) for image in result.images]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_the_lcm_sampler_makes_a_picture_in_1_to_8_steps(engine: Engine, steps: int) -> None:
    reported: list[tuple[int, int]] = []
    with watched(engine) as calls:
        result = engine.generate(1, GenerateRequest(prompt=PROMPT, seed=3, num_inference_steps=steps, scheduler="LCM",
                                                    guidance_scale=1.0), lambda i, n, preview: reported.append((i, n)))
    assert type(engine.pipe.scheduler).__name__ == "LCMScheduler"
    # From pure noise (the last training timestep) down, one UNet pass per step.
    timesteps = engine.pipe.scheduler.timesteps.tolist()
    assert len(timesteps) == steps and timesteps[0] == 999 and timesteps == sorted(timesteps, reverse=True)
    assert calls.unet_batches == [1] * steps
    assert reported == [(i, steps) for i in range(1, steps + 1)]
    [picture] = pixels(result)
    assert picture.shape == (64, 64, 3) and picture.std() > 1  # a picture, not a flat field
    assert f"Steps: {steps}, Sampler: LCM, CFG scale: 1," in Image.open(
        io.BytesIO(result.images[0].data)).text["parameters"]


def test_the_lcm_sampler_is_repeatable_and_its_steps_matter(engine: Engine) -> None:
    def make(steps: int, seed: int = 5) -> np.ndarray:
        request = GenerateRequest(prompt=PROMPT, seed=seed, num_inference_steps=steps, scheduler="LCM",
                                  guidance_scale=1.0)
        return pixels(engine.generate(0, request))[0]

    four = make(4)
    assert np.array_equal(make(4), four)  # its noise between steps comes from the job's generator
    assert not np.array_equal(make(2), four) and not np.array_equal(make(4, seed=6), four)


def test_the_lcm_sampler_refuses_more_steps_than_its_schedule_holds(engine: Engine) -> None:
    # Its steps are picked from the 50 of its `original_inference_steps`; diffusers would raise a ValueError.
    with pytest.raises(InvalidRequest, match="The LCM sampler runs at most 50 steps \\(got 51\\)"):
        engine.generate(0, GenerateRequest(prompt=PROMPT, seed=1, num_inference_steps=51, scheduler="LCM"))
    assert engine.generate(0, GenerateRequest(prompt=PROMPT, seed=1, num_inference_steps=50, scheduler="LCM")).images


@pytest.mark.parametrize("sampler", ["LCM", "Euler a", "DPM++ 2M"])
def test_guidance_1_runs_one_unet_pass_per_step_and_encodes_no_negative_prompt(engine: Engine, sampler: str) -> None:
    def make(guidance: float, negative: str) -> tuple[GenerateResult, Calls]:
        request = GenerateRequest(prompt=PROMPT, negative_prompt=negative, seed=9, num_inference_steps=4,
                                  scheduler=sampler, guidance_scale=guidance, num_images=2)
        with watched(engine) as calls:
            return engine.generate(0, request), calls

    unguided, calls = make(1.0, "blurry, lowres")
    assert calls.unet_batches == [2] * 4  # one pass per step, its batch the two pictures
    [prompt_ids] = calls.encoded  # the prompt alone
    guided, guided_calls = make(7.0, "blurry, lowres")
    assert guided_calls.unet_batches == [4] * 4  # the unconditional pass doubles the batch
    assert guided_calls.encoded[0] == prompt_ids and len(guided_calls.encoded) == 2  # the prompt, then the negative

    # Unguided, the negative prompt plays no part: not even a long one's length pads the prompt.
    for negative in ("", LONG_NEGATIVE):
        other, other_calls = make(1.0, negative)
        assert other_calls.encoded == [prompt_ids]
        assert all(np.array_equal(a, b) for a, b in zip(pixels(other), pixels(unguided), strict=True)), negative
    # Guided, it does (so the comparison above could fail).
    other_guided, _ = make(7.0, "")
    assert not np.array_equal(pixels(other_guided)[0], pixels(guided)[0])


def test_guidance_0_is_unguided_too(engine: Engine) -> None:
    request = GenerateRequest(prompt=PROMPT, negative_prompt="blurry", seed=2, num_inference_steps=2,
                              scheduler="Euler a", guidance_scale=0.0)
    with watched(engine) as calls:
        zero = pixels(engine.generate(0, request))[0]
    assert calls.unet_batches == [1, 1] and len(calls.encoded) == 1
    # Below 1 diffusers runs no guidance at all: 0 and 1 make the same picture.
    assert np.array_equal(zero, pixels(engine.generate(0, GenerateRequest(
        prompt=PROMPT, seed=2, num_inference_steps=2, scheduler="Euler a", guidance_scale=1.0)))[0])


def test_unguided_jobs_share_a_call_whatever_their_negative_prompts(engine: Engine) -> None:
    # Jobs share a call when their prompts take as many chunks; unguided, the negative's do not count.
    base = dict(seed=4, num_inference_steps=3, scheduler="LCM", guidance_scale=1.0)
    requests = [GenerateRequest(prompt=PROMPT, negative_prompt=LONG_NEGATIVE, **base),
                GenerateRequest(prompt="a blue cat", **base)]
    with watched(engine) as calls:
        batched = engine.generate_batch([Job(k, r) for k, r in enumerate(requests, start=1)])
    assert calls.unet_batches == [2] * 3  # one call for both jobs
    for request, result in zip(requests, batched, strict=True):
        assert isinstance(result, GenerateResult)
        alone = pixels(engine.generate(0, request))[0]
        # Batched CPU kernels round differently (tests/engine/test_pipeline.py); the picture is the same.
        assert np.abs(pixels(result)[0] - alone).mean() < 1.0


@pytest.fixture(scope="module")
def source(engine: Engine) -> dict[str, bytes]:
    picture = engine.generate(0, GenerateRequest(prompt=PROMPT, seed=1, num_inference_steps=2)).images[0].data
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    return {"image": picture, "mask": png(mask)}


@pytest.mark.parametrize(("mode", "fields", "calls", "size"), [
    ("txt2img", {}, 4, (64, 64)),
    ("img2img", {"strength": 0.5}, 2, (64, 64)),  # int(4 x 0.5) of the steps
    ("inpaint", {"strength": 1.0}, 4, (64, 64)),
    ("outpaint", {"direction": "right", "amount": 16}, 4, (80, 64)),
    ("upscale", {"strength": 0.5}, 2, (128, 128)),
    ("interpolate", {"end_prompt": "a blue cat", "end_seed": 2, "frames": 3}, 3 * 4, (64, 64)),
])
def test_every_mode_runs_unguided_with_the_lcm_sampler(engine: Engine, source: dict[str, bytes], mode: str,
                                                         fields: dict, calls: int, size: tuple[int, int]) -> None:
    inputs = {key: source[key] for key, needed in (("image", Mode(mode).needs_image), ("mask", Mode(mode).needs_mask))
              if needed}
    request = GenerateRequest(prompt=PROMPT, negative_prompt="blurry", mode=mode, seed=6, num_inference_steps=4,
                              scheduler="LCM", guidance_scale=1.0, **inputs, **fields)
    with watched(engine) as watching:
        result = engine.generate(0, request)
    assert watching.unet_batches == [1] * calls
    # Neither the negative prompt nor (interpolating) anything but the two ends is encoded.
    assert len(watching.encoded) == (2 if mode == "interpolate" else 1)
    [made] = result.images
    picture = Image.open(io.BytesIO(made.data))
    assert picture.size == size and made.format == ("gif" if mode == "interpolate" else "png")


def test_unguided_interpolation_is_not_padded_to_a_long_negative_prompt(engine: Engine) -> None:
    def frames(negative: str) -> tuple[list[np.ndarray], Calls]:
        request = GenerateRequest(prompt=PROMPT, negative_prompt=negative, mode="interpolate", end_prompt="a blue cat",
                                  end_seed=2, frames=2, seed=6, num_inference_steps=2, scheduler="LCM",
                                  guidance_scale=1.0)
        with watched(engine) as calls:
            result = engine.generate(0, request)
        gif = Image.open(io.BytesIO(result.images[0].data))
        made = []
        for index in range(gif.n_frames):
            gif.seek(index)
            made.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
        return made, calls

    plain, plain_calls = frames("")
    long, long_calls = frames(LONG_NEGATIVE)
    # Each end one chunk, as with no negative prompt at all (padded to the negative's chunks, each end would take
    # six on this byte-level tokenizer).
    assert len(plain_calls.encoded) == len(long_calls.encoded) == 2
    assert all(np.array_equal(a, b) for a, b in zip(long, plain, strict=True))


def test_sdxl_runs_unguided_with_the_lcm_sampler(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = Engine.load(settings(tiny_sdxl_model(tmp_path_factory)))
    with watched(engine) as calls:
        result = engine.generate(0, GenerateRequest(prompt=PROMPT, negative_prompt="blurry", seed=1,
                                                    num_inference_steps=2, scheduler="LCM", guidance_scale=1.0))
    assert calls.unet_batches == [1, 1] and len(calls.encoded) == 1  # the first text encoder: the prompt alone
    assert pixels(result)[0].shape[2] == 3


def test_a_models_toml_with_few_step_defaults_serves_them(tiny_model: Path, tmp_path: Path, monkeypatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    from engine.__main__ import main

    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "fast")
    (models / "models.toml").write_text('[models.fast]\nname = "Fast drafts"\nsteps = 4\nsampler = "LCM"\n'
                                        'guidance = 1\n')
    defaults = scan(models, "fast").get("fast").defaults
    assert (defaults.steps, defaults.sampler, defaults.guidance) == (4, "LCM", 1.0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELS_DIR", str(models))
    monkeypatch.setenv("SD_MODEL", "fast")
    assert main(["generate", "--model", "fast", "--prompt", "a fox", "--seed", "1", "--out", "fox.png"]) == 0, \
        capsys.readouterr().err
    parameters = Image.open(tmp_path / "fox.png").text["parameters"]
    assert "Steps: 4, Sampler: LCM, CFG scale: 1, Seed: 1," in parameters
