"""What a job brings in is classified too: a flagged picture cannot be laundered through an image
mode (a larger canvas, a re-upload, a chain of derived jobs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from dreambot.wire import GenerateResult, Job
from engine import imaging
from engine.pipeline import Engine

RED = (255, 0, 0)
THRESHOLD = 0.5  # open_nsfw's default, which RedShare's scale borrows


class RedShare:
    """A stand-in classifier on open_nsfw's scale that scores by content: the share of pure red
    pixels (the tiny model never paints one). It records the sizes it was asked to score, per call."""

    name = "opennsfw"

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int]]] = []

    def scores(self, images: list[Image.Image]) -> list[float]:
        self.calls.append([image.size for image in images])
        return [share_of_red(image) for image in images]


def share_of_red(image: Image.Image) -> float:
    return round(float((np.asarray(image.convert("RGB")) == RED).all(axis=-1).mean()), 4)


def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    engine = Engine.load(settings(tiny_model))
    engine.safety = RedShare()
    return engine


@pytest.fixture(scope="module")
def upscaling_engine(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    from tests.support.models import write_tiny_upscaler

    upscaler = write_tiny_upscaler(tmp_path_factory.mktemp("models") / "up")
    engine = Engine.load(settings(tiny_model, sd_upscaler=str(upscaler)))
    engine.safety = RedShare()
    return engine


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def picture(*red_boxes: tuple[int, int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    """Noise with no pure red pixel (every value below 255), and pure red in `red_boxes`."""
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    for box in red_boxes:
        image.paste(RED, box)
    return image


def mask(size: tuple[int, int], keep: tuple[int, int, int, int], repaint: tuple[int, int, int, int] | None = None
         ) -> bytes:
    """White (repaint) everywhere but `keep`, and white again inside `repaint`."""
    image = Image.new("L", size, 255)
    image.paste(0, keep)
    if repaint is not None:
        image.paste(255, repaint)
    return png(image)


def run(engine: Engine, **fields) -> GenerateResult:
    request = GenerateRequest(**{"prompt": "a cat", "seed": 3, "num_inference_steps": 3, **fields})
    [answer] = engine.generate_batch([Job(1, request)])
    assert isinstance(answer, GenerateResult), answer
    return answer


def test_outpainting_a_flagged_picture_is_flagged_though_the_larger_canvas_scores_below(engine: Engine) -> None:
    # A 50x50 red centre: 61% of the picture, 27% of the canvas it is outpainted to.
    source = picture((7, 7, 57, 57))
    assert share_of_red(source) == 0.6104
    canvas = imaging.outpaint_canvas(source, "all", 16)[0]
    assert share_of_red(canvas) < THRESHOLD  # scoring the canvas alone would let it through
    fields = {"mode": "outpaint", "image": png(source), "direction": "all", "amount": 16, "num_images": 2}

    withheld = run(engine, **fields)
    assert withheld.source_score == 1.0  # the picture's middle window (32x32) is all red
    for image in withheld.images:
        assert image.nsfw_content_detected and image.data == b""
        assert image.nsfw_score == 0.2713  # its own score, diluted: 2500 red pixels of 96x96

    kept = run(engine, **fields, keep_flagged=True)  # a channel that may show it gets the bytes, still flagged
    for image in kept.images:
        result = opened(image.data)
        assert result.size == (96, 96) and share_of_red(result) == image.nsfw_score < THRESHOLD
        assert image.nsfw_content_detected
        assert np.array_equal(np.asarray(result)[16:80, 16:80], np.asarray(source))  # pasted back exactly


def test_outpainting_a_clean_picture_is_not_flagged(engine: Engine) -> None:
    result = run(engine, mode="outpaint", image=png(picture((20, 20, 40, 40))), direction="all", amount=16)
    assert result.source_score == 0.3906 and not result.images[0].nsfw_content_detected  # its middle window
    assert result.images[0].data.startswith(b"\x89PNG")


@pytest.mark.parametrize("mode", ["img2img", "upscale", "latent upscaler"])
def test_a_picture_made_from_a_flagged_one_is_flagged(engine: Engine, upscaling_engine: Engine, mode: str) -> None:
    used = upscaling_engine if mode == "latent upscaler" else engine
    fields = {"mode": "upscale" if mode == "latent upscaler" else mode, "strength": 1.0}
    if mode == "latent upscaler":
        del fields["strength"]  # the upscaler has none
    flagged = run(used, **fields, image=png(picture((0, 0, 64, 64))))  # all red
    assert flagged.source_score == 1.0
    assert flagged.images[0].nsfw_content_detected and flagged.images[0].data == b""
    assert flagged.images[0].nsfw_score < THRESHOLD  # the new picture alone would pass
    clean = run(used, **fields, image=png(picture((0, 0, 16, 16))))
    assert clean.source_score == 0.25 and not clean.images[0].nsfw_content_detected  # its corner window


def test_inpainting_that_keeps_a_small_flagged_corner_is_flagged(engine: Engine) -> None:
    # A 16x16 red corner is 6% of the picture, but 64% of the 20x20 region the result keeps.
    source = picture((0, 0, 16, 16))
    result = run(engine, mode="inpaint", image=png(source), mask=mask((64, 64), keep=(0, 0, 20, 20)), num_images=2)
    assert result.source_score == 0.64
    for image in result.images:
        assert image.nsfw_content_detected and image.data == b""
        assert image.nsfw_score < 0.07  # the corner (and its seam), diluted in the whole


def test_inpainting_that_repaints_the_flagged_part_away_is_not_flagged_by_it(engine: Engine) -> None:
    # The red 16x16 corner is repainted; the result keeps only the clean L around it (box 20x20).
    # Cropped with the red still in it, that box would score 64%: the repainted part must not count.
    source = picture((0, 0, 16, 16))
    keep = mask((64, 64), keep=(0, 0, 20, 20), repaint=(0, 0, 16, 16))
    result = run(engine, mode="inpaint", image=png(source), mask=keep, keep_flagged=True)
    assert result.source_score == 0.25  # the input picture's corner window; its kept part scores 0
    assert not result.images[0].nsfw_content_detected
    assert result.images[0].nsfw_score < 0.01  # the red is gone (but for a stray pixel the VAE saturates)


def test_the_kept_region_is_cropped_to_its_box_with_the_repainted_part_neutral() -> None:
    source = picture((0, 0, 24, 24))
    kept = imaging.kept_region(source, imaging.open_mask(mask((64, 64), (0, 0, 32, 32), (0, 0, 24, 24)), (64, 64)))
    assert kept.size == (32, 32)
    pixels = np.asarray(kept)
    assert (pixels[:24, :24] == imaging.NEUTRAL).all()
    assert np.array_equal(pixels[24:, :], np.asarray(source)[24:32, :32])
    assert imaging.kept_region(source, Image.new("L", (64, 64), 255)) is None  # nothing kept
    assert imaging.kept_region(source, Image.new("L", (64, 64), 0)) is None  # all kept: the picture itself


MODES = {
    "txt2img": {},
    "img2img": {"mode": "img2img", "strength": 1.0},
    "inpaint": {"mode": "inpaint", "mask": mask((64, 64), keep=(32, 0, 64, 64))},
    "outpaint": {"mode": "outpaint", "direction": "right", "amount": 16},
    "upscale": {"mode": "upscale", "strength": 1.0},
    "interpolate": {"mode": "interpolate", "end_seed": 9, "frames": 2},
}


@pytest.mark.parametrize("mode", MODES)
def test_a_job_from_a_flagged_picture_flags_all_it_makes_in_every_mode(engine: Engine, mode: str) -> None:
    fields = dict(MODES[mode])
    if mode not in ("txt2img", "interpolate"):
        fields["image"] = png(picture())  # clean: only the bot's word makes it flagged
    if mode != "interpolate":
        fields["num_images"] = 2
    flagged = run(engine, **fields, source_flagged=True)
    assert all(image.nsfw_content_detected and image.data == b"" for image in flagged.images)
    assert all(image.nsfw_score < THRESHOLD for image in flagged.images)
    clean = run(engine, **fields)
    assert not any(image.nsfw_content_detected for image in clean.images)
    assert all(image.data for image in clean.images)


def test_in_a_batch_only_the_job_from_a_flagged_picture_is_flagged(engine: Engine) -> None:
    base = GenerateRequest(prompt="a cat", seed=3, num_inference_steps=3)
    derived = GenerateRequest(prompt="a dog", seed=4, num_inference_steps=3, source_flagged=True)
    plain, flagged = engine.generate_batch([Job(1, base), Job(2, derived)])
    assert not plain.images[0].nsfw_content_detected and plain.images[0].data
    assert flagged.images[0].nsfw_content_detected and flagged.images[0].data == b""


def test_text_to_image_scores_only_its_own_pictures(engine: Engine) -> None:
    engine.safety.calls.clear()
    requests = [GenerateRequest(prompt="a cat", seed=3, num_inference_steps=3, num_images=2),
                GenerateRequest(prompt="a dog", seed=4, num_inference_steps=3)]
    answers = engine.generate_batch([Job(1, requests[0]), Job(2, requests[1])])
    assert engine.safety.calls == [[(64, 64)] * 2, [(64, 64)]]  # one call per job, its pictures only
    assert all(answer.source_score is None for answer in answers)
    assert run(engine, mode="interpolate", end_seed=9, frames=2).source_score is None


def test_an_image_mode_scores_its_pictures_and_inputs_in_one_call(engine: Engine) -> None:
    engine.safety.calls.clear()
    run(engine, mode="inpaint", image=png(picture()), mask=mask((64, 64), keep=(0, 0, 20, 20)), num_images=2)
    # 2 pictures, the input whole and in 9 windows, the kept box.
    assert engine.safety.calls == [[(64, 64), (64, 64), (64, 64), *[(32, 32)] * 9, (20, 20)]]


@pytest.mark.parametrize("model", ["tiny_model", "flagging_model"])
def test_the_real_classifiers_score_inputs_of_other_sizes_in_one_call(model: str, request) -> None:
    # open_nsfw, and the checkpoint's own CLIP checker (which flags everything in the flagging model).
    real = Engine.load(settings(request.getfixturevalue(model)))
    result = run(real, mode="inpaint", image=png(picture(size=(96, 64))), mask=mask((96, 64), keep=(0, 0, 40, 24)),
                 keep_flagged=True)
    assert isinstance(result.source_score, float)
    assert result.images[0].nsfw_content_detected == (model == "flagging_model")


# A member's upload is itself a canvas: a flagged region padded with a border, or set beside other
# content, scores low as a whole. The input is scored in parts too (`imaging.parts`).

def padded(region: Image.Image, size: tuple[int, int], at: tuple[int, int],
           colours: tuple[tuple[int, int, int], ...] = ((255, 255, 255),)) -> Image.Image:
    """`region` at `at` on a border of flat colours: one per edge band (left, top, right, bottom) if
    several are given, each band painted over the previous ones, as a layered border would be."""
    image = Image.new("RGB", size, colours[0])
    left, top = at
    right, bottom = left + region.width, top + region.height
    bands = [(0, 0, left, size[1]), (0, 0, size[0], top), (right, 0, size[0], size[1]), (0, bottom, size[0], size[1])]
    for colour, band in zip(colours, bands if len(colours) > 1 else []):
        image.paste(colour, band)
    image.paste(region, at)
    return image


# The whole of each scores at most 0.5 (not above the threshold); each holds a region that scores
# far above it alone.
DILUTED = {
    # (a) a 48x48 region (40x40 red) on a wide border: 4% of the picture, 69% of its content.
    "white border": padded(picture((4, 4, 44, 44), size=(48, 48)), (192, 192), (24, 120)),
    "border of four colours": padded(picture((4, 4, 44, 44), size=(48, 48)), (192, 192), (24, 120),
                                     ((255, 255, 255), (0, 0, 0), (128, 128, 128), (0, 0, 255))),
    # (b) a red half (60x60 of 64x64) beside a clean half: 44% of a 2:1 picture. (Not the half's
    # full height: a band of flat lines at an edge is trimmed as padding, and RedShare, unlike a real
    # classifier, flags a flat colour.)
    "beside clean content": picture((0, 2, 60, 62), size=(128, 64)),
    # A 64x64 red square in a 4:1 strip: 25% of it, 50% of any half-width window.
    "in a strip": picture((144, 0, 208, 64), size=(256, 64)),
}
TURNS = {"as is": None, "mirrored": Image.Transpose.FLIP_LEFT_RIGHT, "flipped": Image.Transpose.FLIP_TOP_BOTTOM,
         "rotated": Image.Transpose.ROTATE_90, "rotated back": Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("turn", TURNS)
@pytest.mark.parametrize("layout", DILUTED)
def test_a_flagged_region_diluted_in_the_upload_is_flagged_however_turned(engine: Engine, layout: str,
                                                                          turn: str) -> None:
    source = DILUTED[layout] if TURNS[turn] is None else DILUTED[layout].transpose(TURNS[turn])
    assert share_of_red(source) <= THRESHOLD  # the upload as a whole would pass
    engine.safety.calls.clear()
    result = run(engine, mode="outpaint", image=png(source), direction="right", amount=16, keep_flagged=True)
    assert result.source_score == {"white border": 0.6944, "border of four colours": 0.6944,
                                   "beside clean content": 0.9375, "in a strip": 1.0}[layout]
    [image] = result.images
    assert image.nsfw_content_detected and image.nsfw_score <= THRESHOLD  # flagged for what it keeps alone
    assert len(engine.safety.calls) == 1 and len(engine.safety.calls[0]) <= 1 + 1 + 15  # one call, parts bounded


CLEAN = {
    "white border": padded(picture((4, 4, 24, 24), size=(48, 48)), (192, 192), (24, 120)),
    "beside clean content": picture((0, 0, 20, 20), size=(128, 64)),
    "flat colour": Image.new("RGB", (64, 64), (200, 150, 120)),
    "gradient": Image.fromarray(np.repeat(np.linspace(0, 255, 64, dtype=np.uint8), 3).reshape(1, 64, 3)
                                .repeat(64, axis=0)),
}


@pytest.mark.parametrize("layout", CLEAN)
def test_a_clean_upload_scored_in_parts_is_not_flagged(engine: Engine, layout: str) -> None:
    result = run(engine, mode="img2img", image=png(CLEAN[layout]), strength=1.0)
    assert result.source_score == {"white border": 0.1736, "beside clean content": 0.1953, "flat colour": 0.0,
                                   "gradient": 0.0}[layout]
    assert not result.images[0].nsfw_content_detected and result.images[0].data


def test_the_parts_of_an_upload_are_bounded_in_number_and_size() -> None:
    strip_on_border = padded(picture(size=(400, 64)), (512, 512), (56, 200))
    crops = imaging.parts(strip_on_border)
    assert [crop.size for crop in crops] == [(400, 64)] + [(64, 64)] * 5 + [(200, 32)] * 9  # the most there are
    assert imaging.parts(CLEAN["flat colour"]) == imaging.parts(CLEAN["gradient"]) == []  # nothing stands out
    assert imaging.parts(picture(size=(48, 48))) == []  # windows under 32 px are left out
    speck = picture(size=(8, 8))
    [grown] = imaging.parts(padded(speck, (192, 192), (184, 0)))  # content under 32 px: grown, inside the picture
    assert grown.size == (32, 32) and np.array_equal(np.asarray(grown)[:8, 24:], np.asarray(speck))
