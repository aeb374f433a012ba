"""The engine on the tiny model, loaded through the real `from_pretrained` path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreambot.request import SAMPLERS, GenerateRequest, InvalidRequest
from dreambot.settings import EngineSettings
from engine.pipeline import Engine, ModelLoadError, model_name, resolve_device, resolve_dtype
from engine.safety import CheckpointSafetyChecker, OpenNSFWSafetyChecker


def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(settings(tiny_model))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_loads_on_cpu_with_the_offline_classifier(engine: Engine) -> None:
    assert engine.device == torch.device("cpu") and engine.dtype == torch.float32
    assert engine.model == "tiny" and engine.native_size == 64
    assert isinstance(engine.safety, OpenNSFWSafetyChecker)


def test_auto_device_and_dtype_follow_the_hardware() -> None:
    device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


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


EXPECTED_SCHEDULERS = {
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", True),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", False),
    "Euler a": ("EulerAncestralDiscreteScheduler", False),
    "Euler": ("EulerDiscreteScheduler", False),
    "DDIM": ("DDIMScheduler", False),
    "UniPC": ("UniPCMultistepScheduler", False),
    "LMS": ("LMSDiscreteScheduler", False),
    "Heun": ("HeunDiscreteScheduler", False),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_and_reports_its_steps(engine: Engine, sampler: str) -> None:
    steps: list[tuple[int, int]] = []
    result = engine.generate(1, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=4, scheduler=sampler),
                             on_step=lambda i, n: steps.append((i, n)))
    assert [i for i, _ in steps] == list(range(1, len(steps) + 1)) and steps[-1][0] == steps[-1][1]
    name, karras = EXPECTED_SCHEDULERS[sampler]
    assert type(engine.pipe.scheduler).__name__ == name
    assert bool(engine.pipe.scheduler.config.get("use_karras_sigmas", False)) is karras
    assert Image.open(io.BytesIO(result.images[0].data)).size == (64, 64)


def test_a_sampler_does_not_depend_on_the_previous_job(engine: Engine) -> None:
    def make(name: str) -> bytes:
        request = GenerateRequest(prompt="a fox", seed=2, num_inference_steps=6, scheduler=name)
        return engine.generate(1, request).images[0].data

    plain = make("DPM++ 2M")
    karras = make("DPM++ 2M Karras")
    assert karras != plain
    for name in SAMPLERS:
        first = make(name)
        make("DPM++ 2M Karras")
        assert make(name) == first, name
    assert make("DPM++ 2M") == plain


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


def test_checkpoint_safety_checker_is_used_when_shipped(flagging_model: Path) -> None:
    engine = Engine.load(settings(flagging_model))
    assert isinstance(engine.safety, CheckpointSafetyChecker)
    assert engine.pipe.safety_checker is None  # scored by us, not blacked out by the pipeline
    result = engine.generate(1, GenerateRequest(prompt="a fox", seed=5, num_images=2, num_inference_steps=3))
    assert result.all_flagged and all(image.nsfw_score > 0 for image in result.images)
    assert all(image.data == b"" for image in result.images)
    # Kept for a channel that shows flagged images, the image itself is intact (not blacked out).
    kept = engine.generate(1, GenerateRequest(prompt="a fox", seed=5, num_inference_steps=3, keep_flagged=True))
    assert kept.all_flagged and pixels(kept.images[0].data).std() > 1


def test_checkpoint_scores_agree_with_diffusers(flagging_model: Path) -> None:
    engine = Engine.load(settings(flagging_model))
    checker = engine.safety._checker
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8))
              for i in range(8)]
    clip_input = engine.safety._features(images, return_tensors="pt").pixel_values
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn(checker.concept_embeds.shape, generator=torch.Generator().manual_seed(0)))
        embeds = checker.visual_projection(checker.vision_model(clip_input)[1])
        cos = torch.nn.functional.normalize(embeds, dim=-1) @ torch.nn.functional.normalize(checker.concept_embeds, dim=-1).T
        # One threshold between the 4th and 5th image's best match: diffusers flags half of them.
        best = cos.max(dim=1).values.sort().values
        checker.concept_embeds_weights.fill_(float(best[3] + best[4]) / 2)
        checker.special_care_embeds_weights.fill_(2.0)
    _, diffusers_flags = checker(clip_input=clip_input, images=[np.zeros((4, 4, 3)) for _ in images])
    ours = [score > 0 for score in engine.safety.scores(images)]
    assert ours == list(diffusers_flags) and any(ours) and not all(ours)


def test_safety_checker_setting_is_obeyed(tiny_model: Path, flagging_model: Path) -> None:
    assert isinstance(Engine.load(settings(flagging_model, sd_safety_checker="opennsfw")).safety, OpenNSFWSafetyChecker)
    with pytest.raises(ModelLoadError, match="SD_SAFETY_CHECKER=checkpoint, but .* ships no safety checker"):
        Engine.load(settings(tiny_model, sd_safety_checker="checkpoint"))


def test_open_nsfw_scores_plain_pictures_low() -> None:
    checker = OpenNSFWSafetyChecker()
    scores = checker.scores([Image.new("RGB", (256, 256), colour) for colour in ("white", "navy", "forestgreen")])
    assert all(0 <= score < 0.2 for score in scores)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no-such-thing", "is not an existing folder or checkpoint file, nor a model hub id"),
        ("someone/not-downloadable", "could not load SD_MODEL 'someone/not-downloadable'"),
    ],
)
def test_bad_model_settings_say_why(model: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        Engine.load(settings(model))


def test_bad_model_files_and_folders_say_why(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="is not a .safetensors or .ckpt checkpoint"):
        Engine.load(settings(tmp_path / "notes.txt"))
    with pytest.raises(ModelLoadError, match="has no model_index.json"):
        Engine.load(settings(tmp_path))
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not load SD_MODEL"):
        Engine.load(settings(tmp_path / "broken.safetensors"))


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("stabilityai/stable-diffusion-xl-base-1.0", "stable-diffusion-xl-base-1.0"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5"),
        ("/models/sd-v1.5/", "sd-v1.5"),
        ("/models/dreamshaper_8.safetensors", "dreamshaper_8"),
        ("C:/models/v2-1_768.ckpt", "v2-1_768"),
    ],
)
def test_model_names_members_see(source: str, name: str) -> None:
    assert model_name(source) == name


def test_an_inpainting_checkpoint_inpaints_and_refuses_the_rest(tmp_path: Path) -> None:
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    from engine.tiny import build_tiny_pipeline

    tiny = build_tiny_pipeline()
    unet = UNet2DConditionModel(**{**tiny.unet.config, "in_channels": 9})  # latents + mask + masked picture
    StableDiffusionInpaintPipeline(vae=tiny.vae, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer, unet=unet,
                                   scheduler=tiny.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False).save_pretrained(tmp_path / "inpainting")
    engine = Engine.load(settings(tmp_path / "inpainting"))
    assert engine.inpainting_only

    source = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    png = {}
    for name, picture in (("image", source), ("mask", mask)):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        png[name] = buffer.getvalue()
    result = engine.generate(1, GenerateRequest(prompt="a cat", mode="inpaint", seed=1, num_inference_steps=3, **png))
    out = np.asarray(Image.open(io.BytesIO(result.images[0].data)).convert("RGB"))
    assert (out[:, 40:] == (200, 40, 40)).all()  # kept exactly where the mask is black
    outpainted = engine.generate(2, GenerateRequest(prompt="a cat", mode="outpaint", image=png["image"], direction="up",
                                                    amount=16, seed=1, num_inference_steps=3))
    assert (outpainted.width, outpainted.height) == (64, 80)
    with pytest.raises(InvalidRequest, match="is an inpainting model: it can only inpaint and outpaint"):
        engine.generate(3, GenerateRequest(prompt="a cat", num_inference_steps=3))


def test_a_dedicated_upscaler_serves_the_upscale_mode(tiny_model: Path, tmp_path: Path) -> None:
    from tests.models import write_tiny_upscaler

    upscaler = write_tiny_upscaler(tmp_path / "tiny-up")
    engine = Engine.load(settings(tiny_model, sd_upscaler=str(upscaler)))
    source = engine.generate(1, GenerateRequest(prompt="a cat", seed=3, num_inference_steps=3)).images[0].data
    steps = []
    request = GenerateRequest(prompt="a cat", mode="upscale", image=source, seed=3, num_inference_steps=4)
    result = engine.generate(2, request, on_step=lambda step, total: steps.append((step, total)))
    image = Image.open(io.BytesIO(result.images[0].data))
    assert image.size == (128, 128) and image.text["parameters"].endswith("Mode: upscale, Upscaler: tiny-up")
    assert "Denoising strength" not in image.text["parameters"]  # the upscaler has none
    assert steps[-1] == (4, 4)
    assert engine.generate(3, request).images[0].data == result.images[0].data  # repeatable with its seed
    # Without one, upscaling is the img2img "hires fix" on SD_MODEL.
    plain = Engine.load(settings(tiny_model)).generate(4, request)
    assert "Upscaler" not in Image.open(io.BytesIO(plain.images[0].data)).text["parameters"]
    with pytest.raises(ModelLoadError, match="could not load SD_UPSCALER"):
        Engine.load(settings(tiny_model, sd_upscaler=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="SD_UPSCALER 'nonsense' is not an existing folder"):
        Engine.load(settings(tiny_model, sd_upscaler="nonsense"))
