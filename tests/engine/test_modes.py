"""The image modes (`engine.modes`) do what they mean, checked on the trained shapes model with its
oracle; and what an inpainting checkpoint or a dedicated upscaler changes, on tiny models.

Each test uses a handful of 64x64 pictures and fixed seeds, and compares with margins.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreambot.request import GenerateRequest, InvalidRequest
from dreambot.settings import EngineSettings
from engine import modes
from engine.loading import ModelLoadError
from engine.pipeline import Engine
from engine.progress import quiet
from tests.support.models import tiny_sdxl_model
from tools import shapes


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model="shapes"))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def drawn(colour: str, shape: str, background: str, seed: int = 0) -> Image.Image:
    return shapes.draw(colour, shape, background, random.Random(seed))


def run(engine: Engine, **fields) -> list[bytes]:
    request = GenerateRequest(**{"num_inference_steps": 20, "guidance_scale": 5.0, "seed": 1, **fields})
    return [image.data for image in engine.generate(0, request).images]


def test_img2img_moves_away_from_its_input_as_strength_rises(engine: Engine) -> None:
    source = drawn("red", "square", "gray")
    distances = []
    for strength in (0.2, 0.5, 0.9):
        out = run(engine, prompt="a blue square on a gray background", mode="img2img", image=png(source),
                  strength=strength, num_images=3)
        distances.append(np.mean([np.abs(pixels(o) - np.asarray(source, np.float32)).mean() for o in out]))
        assert Image.open(io.BytesIO(out[0])).size == (64, 64)
    assert distances[0] < distances[1] < distances[2], distances
    # Strong enough, the picture takes the prompt's colour.
    strong = run(engine, prompt="a blue square on a gray background", mode="img2img", image=png(source),
                 strength=0.9, num_images=3)
    assert sum(shapes.classify(Image.open(io.BytesIO(o)))[0] == "blue" for o in strong) >= 2


def test_img2img_is_deterministic_given_its_seed(engine: Engine) -> None:
    source = png(drawn("green", "circle", "white"))
    first = run(engine, prompt="a green circle on a white background", mode="img2img", image=source, strength=0.6)
    again = run(engine, prompt="a green circle on a white background", mode="img2img", image=source, strength=0.6)
    assert first == again


def test_inpainting_repaints_the_mask_to_the_prompt_and_keeps_the_rest(engine: Engine) -> None:
    source = Image.new("RGB", (64, 64), shapes.BACKGROUNDS["white"])
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 40, 64))  # repaint the left part
    out = run(engine, prompt="a red circle on a white background", mode="inpaint", image=png(source),
              mask=png(mask), num_images=3)
    keep = np.asarray(mask) == 0
    for data in out:
        result = pixels(data)
        assert np.array_equal(result[keep], np.asarray(source, np.float32)[keep])  # untouched, exactly
        painted = result[:, :40]
        red = np.linalg.norm(painted - np.asarray(shapes.COLOURS["red"], np.float32), axis=-1) < 90
        assert red.sum() > 40, "the masked area should now hold the prompt's red shape"


def test_outpainting_keeps_the_original_and_fills_the_new_strip(engine: Engine) -> None:
    source = drawn("yellow", "circle", "blue")
    out = run(engine, prompt="a yellow circle on a blue background", mode="outpaint", image=png(source),
              direction="right", amount=32, num_images=2)
    for data in out:
        result = pixels(data)
        assert result.shape == (64, 96, 3)
        assert np.array_equal(result[:, :64], np.asarray(source, np.float32))
        strip = result[:, 64:]
        # The background continues into the new strip, which is painted, not a copy of the edge.
        blue = np.linalg.norm(strip - np.asarray(shapes.BACKGROUNDS["blue"], np.float32), axis=-1) < 90
        assert blue.mean() > 0.5
        assert strip.std(axis=(0, 1)).max() > 2


def test_outpainting_all_sides_grows_the_canvas(engine: Engine) -> None:
    out = run(engine, prompt="a green square on a black background", mode="outpaint",
              image=png(drawn("green", "square", "black")), direction="all", amount=16)
    assert Image.open(io.BytesIO(out[0])).size == (96, 96)


def test_a_variation_stays_close_to_its_source_and_a_re_roll_does_not(engine: Engine) -> None:
    prompt = "a purple triangle on a white background"
    source = run(engine, prompt=prompt, seed=5)[0]
    near, far = [], []
    for seed in (11, 12, 13):
        variation = run(engine, prompt=prompt, mode="img2img", image=source, strength=0.5, seed=seed)[0]
        reroll = run(engine, prompt=prompt, seed=seed)[0]
        near.append(np.abs(pixels(variation) - pixels(source)).mean())
        far.append(np.abs(pixels(reroll) - pixels(source)).mean())
    assert np.mean(near) < 0.6 * np.mean(far), (near, far)


def test_upscaling_doubles_the_size_and_keeps_the_picture(engine: Engine) -> None:
    source = run(engine, prompt=shapes.caption("orange", "square", "black"), seed=3)[0]
    [big] = run(engine, prompt=shapes.caption("orange", "square", "black"), mode="upscale", image=source, seed=3)
    image = Image.open(io.BytesIO(big))
    assert image.size == (128, 128)
    small = np.asarray(image.resize((64, 64), Image.Resampling.BOX), np.float32)
    assert np.abs(small - pixels(source)).mean() < 25
    assert shapes.classify(image)[::2] == shapes.classify(Image.open(io.BytesIO(source)))[::2]


def frames_of(data: bytes) -> list[Image.Image]:
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.info.get("loop") == 0
    out = []
    for index in range(gif.n_frames):
        gif.seek(index)
        out.append(gif.convert("RGB"))
    return out


def test_interpolation_passes_from_the_first_prompt_to_the_second(engine: Engine) -> None:
    request = GenerateRequest(prompt="a red circle on a white background",
                              end_prompt="a blue circle on a white background", mode="interpolate", frames=5, seed=4,
                              num_inference_steps=20, guidance_scale=5.0)
    [result] = engine.generate(0, request).images
    assert result.format == "gif"
    frames = frames_of(result.data)
    assert len(frames) == 5 and frames[0].size == (64, 64)
    assert shapes.classify(frames[0])[0] == "red" and shapes.classify(frames[-1])[0] == "blue"
    # Frame 0 is the txt2img picture of the first prompt and seed (up to the GIF's palette).
    [still] = run(engine, prompt="a red circle on a white background", seed=4)
    assert np.abs(np.asarray(frames[0], np.float32) - pixels(still)).mean() < 6


def test_interpolation_between_seeds_changes_the_picture_gradually(engine: Engine) -> None:
    request = GenerateRequest(prompt="a green square on a gray background", mode="interpolate", frames=4, seed=1,
                              end_seed=2, num_inference_steps=20, guidance_scale=5.0)
    frames = [np.asarray(f, np.float32) for f in frames_of(engine.generate(0, request).images[0].data)]
    steps = [np.abs(b - a).mean() for a, b in zip(frames, frames[1:])]
    assert np.abs(frames[-1] - frames[0]).mean() > max(steps) * 0.9  # the ends differ more than neighbours


# On tiny models: interpolation exactly (SD 1.x and SDXL), and what an inpainting checkpoint or a
# dedicated upscaler changes in the modes.
def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


def interpolated_and_stills(engine: Engine, request: GenerateRequest) -> tuple[list[bytes], list[bytes]]:
    """The interpolation's frames, and the txt2img pictures of its ends' (prompt, seed), as pixels."""
    frames = modes.interpolate(engine, [request], quiet).pictures[0]
    ends = [(request.prompt, request.seed), (request.end_prompt or request.prompt, request.end_seed)]
    stills = [modes.txt2img(engine, [GenerateRequest(prompt=prompt, negative_prompt=request.negative_prompt, seed=seed,
                                                     num_inference_steps=request.num_inference_steps,
                                                     guidance_scale=request.guidance_scale,
                                                     scheduler=request.scheduler)], quiet).pictures[0][0]
              for prompt, seed in ends]
    return [frame.tobytes() for frame in frames], [still.tobytes() for still in stills]


@pytest.mark.parametrize("negative", ["", "blurry, (dark:1.2)"])
def test_sdxl_interpolation_runs_from_one_txt2img_picture_to_the_other(
        tmp_path_factory: pytest.TempPathFactory, negative: str) -> None:
    engine = Engine.load(settings(tiny_sdxl_model(tmp_path_factory)))
    # Both ends' embeddings and pooled embeddings move, and an empty negative is zeros, as in txt2img.
    request = GenerateRequest(prompt="a red fox", end_prompt="a (blue:1.3) cat, at night", negative_prompt=negative,
                              mode="interpolate", seed=4, end_seed=7, frames=3, num_inference_steps=3,
                              guidance_scale=5.0, scheduler="Euler")
    frames, (first, last) = interpolated_and_stills(engine, request)
    assert frames[0] == first and frames[-1] == last
    assert frames[1] not in (first, last)
    [gif] = engine.generate(0, request).images
    assert gif.format == "gif" and len(frames_of(gif.data)) == 3


def test_interpolation_with_an_ancestral_sampler_starts_at_its_txt2img_picture(tiny_model: Path) -> None:
    # A sampler that adds noise at every step draws it from the seed's generator, as txt2img does.
    engine = Engine.load(settings(tiny_model))
    request = GenerateRequest(prompt="a red fox", end_prompt="a blue cat", mode="interpolate", seed=4, end_seed=7,
                              frames=3, num_inference_steps=3, scheduler="Euler a")
    frames, (first, _) = interpolated_and_stills(engine, request)
    assert frames[0] == first
    assert interpolated_and_stills(engine, request)[0] == frames  # repeatable


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
    from tests.support.models import write_tiny_upscaler

    upscaler = write_tiny_upscaler(tmp_path / "tiny-up")
    engine = Engine.load(settings(tiny_model, sd_upscaler=str(upscaler)))
    source = engine.generate(1, GenerateRequest(prompt="a cat", seed=3, num_inference_steps=3)).images[0].data
    steps = []
    request = GenerateRequest(prompt="a cat", mode="upscale", image=source, seed=3, num_inference_steps=4)
    result = engine.generate(2, request, lambda step, total, preview: steps.append((step, total)))
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
