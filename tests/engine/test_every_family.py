"""Every mode of every tiny model family (`engine.tiny.FAMILIES`) through the real engine: each
family saved as a diffusers folder, loaded by `Engine.load` as an operator's model is, and asked for
each mode it serves (an inpainting model refuses the others); every result the right size and
count, a picture that decodes, and safety-checked. One engine per family serves all its modes; the
family's single checkpoint file serves one mode, as its folder does."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreambot import families
from dreambot.request import SAFETY_SCALES, GenerateRequest, InvalidRequest
from dreambot.settings import EngineSettings
from dreambot.wire import GenerateResult
from engine import prompts
from engine.pipeline import Engine
from engine.tiny import FAMILIES, write_tiny_model

SIZE = 64  # the tiny models' native size
# The safety scale's strictest threshold: the one at which a score is most likely to flag.
THRESHOLD = SAFETY_SCALES["opennsfw"].lowest


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def source_picture() -> Image.Image:
    """A picture with structure in it (a gradient and a block), so that a mode's changes show."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    pixels = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    pixels[16:40, 20:44] = (220, 30, 30)
    return Image.fromarray(pixels)


SOURCE = source_picture()
MASK = Image.new("L", (SIZE, SIZE), 0)
MASK.paste(255, (0, 0, SIZE // 2, SIZE))  # repaint the left half

# Each mode's request fields, and what it makes: (pictures, width, height, format).
MODES: dict[str, tuple[dict, tuple[int, int, int, str]]] = {
    "txt2img": ({"num_images": 2}, (2, SIZE, SIZE, "png")),
    "img2img": ({"image": png(SOURCE), "strength": 0.6}, (1, SIZE, SIZE, "png")),
    "inpaint": ({"image": png(SOURCE), "mask": png(MASK)}, (1, SIZE, SIZE, "png")),
    "outpaint": ({"image": png(SOURCE), "direction": "right", "amount": 32}, (1, SIZE + 32, SIZE, "png")),
    # Without SD_UPSCALER: the img2img "hires fix" at twice the size.
    "upscale": ({"image": png(SOURCE), "strength": 0.5}, (1, 2 * SIZE, 2 * SIZE, "png")),
    "interpolate": ({"end_prompt": "a blue square", "end_seed": 9, "frames": 2}, (1, SIZE, SIZE, "gif")),
}
INPAINTING_MODES = {"inpaint", "outpaint"}


def load(model: Path) -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model=str(model), sd_safety_checker="opennsfw"))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def folder(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("families") / family, family=family)


@pytest.fixture(scope="module")
def engine(folder: Path) -> Engine:
    return load(folder)


def generate(engine: Engine, mode: str, **fields) -> GenerateResult:
    request = GenerateRequest(prompt="a red square", negative_prompt="blurry", mode=mode, seed=3,
                              num_inference_steps=3, nsfw_threshold=THRESHOLD, keep_flagged=True, **fields)
    return engine.generate(0, request)


def pictures(data: bytes, file_format: str) -> list[Image.Image]:
    """The file's pictures (an animation's frames), decoded."""
    image = Image.open(io.BytesIO(data))
    assert image.format == file_format.upper()
    frames = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        frames.append(image.convert("RGB"))
    return frames


def check_safety(engine: Engine, result: GenerateResult) -> None:
    """Each picture carries the classifier's score of that very picture, and is flagged as its score
    (or what the job brought in) says at the threshold."""
    for image in result.images:
        assert 0 <= image.nsfw_score <= 1
        brought = result.source_score is not None and result.source_score > THRESHOLD
        assert image.nsfw_content_detected == (image.nsfw_score > THRESHOLD or brought)
        if image.format == "png":  # lossless: the classifier scores the decoded picture as it scored it
            [picture] = pictures(image.data, "png")
            assert engine.safety.scores([picture]) == [image.nsfw_score]


def test_the_engine_runs_the_family_it_was_given(engine: Engine, family: str) -> None:
    # What makes each family a case of its own: SDXL's pipelines, SD 2.x's v-prediction, an
    # inpainting UNet's 9 input channels.
    assert prompts.sdxl(engine.pipe) == (families.base_of(family) == "sdxl")
    assert engine.inpainting_only == families.is_inpainting(family)
    prediction = "v_prediction" if families.base_of(family) == "sd2" else "epsilon"
    assert engine.scheduler_config.get("prediction_type", "epsilon") == prediction
    assert engine.native_size == SIZE


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_the_family_serves(engine: Engine, family: str, mode: str) -> None:
    fields, (count, width, height, file_format) = MODES[mode]
    if families.is_inpainting(family) and mode not in INPAINTING_MODES:
        with pytest.raises(InvalidRequest, match="is an inpainting model"):
            generate(engine, mode, **fields)
        return
    result = generate(engine, mode, **fields)
    assert (result.width, result.height) == (width, height)
    assert len(result.images) == count
    frames = [frame for image in result.images for frame in pictures(image.data, file_format)]
    assert len(frames) == (fields["frames"] if mode == "interpolate" else count)
    for frame in frames:
        assert frame.size == (width, height)
        assert np.asarray(frame).std() > 1, "a blank picture: the model made NaNs or nothing"
    if mode in INPAINTING_MODES:  # what the mask keeps is the source's, pixel for pixel
        kept = np.asarray(frames[0])[:, SIZE // 2:SIZE] if mode == "inpaint" else np.asarray(frames[0])[:, :SIZE]
        assert np.array_equal(kept, np.asarray(SOURCE)[:, SIZE // 2:] if mode == "inpaint" else np.asarray(SOURCE))
    check_safety(engine, result)


def test_the_single_file_serves_as_the_folder_does(engine: Engine, family: str, tmp_path: Path) -> None:
    single = load(write_tiny_model(tmp_path / family, family=family, single_file=True))
    mode = "inpaint" if families.is_inpainting(family) else "txt2img"
    fields, (count, width, height, file_format) = MODES[mode]
    result = generate(single, mode, **fields)
    assert (result.width, result.height, len(result.images)) == (width, height, count)
    check_safety(single, result)
    # The same weights and configs: the same pictures (their parameters name another model).
    from_folder = generate(engine, mode, **fields)
    assert [np.asarray(pictures(image.data, file_format)[0]).tobytes() for image in result.images] == \
        [np.asarray(pictures(image.data, file_format)[0]).tobytes() for image in from_folder.images]
