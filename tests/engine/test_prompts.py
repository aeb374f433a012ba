"""Prompts encoded as AUTOMATIC1111 encodes them (`engine.prompts`): weights on the text encoder's
output, no length limit, and unweighted short prompts exactly as diffusers encodes them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from dreambot.wire import Job
from engine import prompts
from engine.pipeline import Engine

SCENE = "a red circle on a blue background"
# Far past CLIP's 75 tokens: what follows it used to be cut without a word.
FILLER = ", ".join(["plain simple shape picture"] * 25)


@pytest.fixture(scope="module")
def shapes() -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model="shapes"))


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model)))


def picture(engine: Engine, prompt: str, **options) -> bytes:
    """The picture's pixels (its PNG's text names the prompt as written)."""
    request = GenerateRequest(prompt=prompt, seed=3, num_inference_steps=8, keep_flagged=True, **options)
    return Image.open(io.BytesIO(engine.generate(0, request).images[0].data)).tobytes()


def test_an_unweighted_prompt_encodes_as_diffusers_encodes_it(tiny: Engine) -> None:
    pipe = tiny.pipe
    for text in ("a red fox, detailed and blurry", ""):
        theirs, _ = pipe.encode_prompt(text, tiny.device, 1, False)
        assert torch.equal(prompts.encode(pipe, text, tiny.device), theirs)


def test_long_prompts_are_chunked_and_padded_to_one_length(tiny: Engine) -> None:
    pipe = tiny.pipe
    size = pipe.tokenizer.model_max_length
    assert prompts.count(pipe, SCENE) == 1 and prompts.count(pipe, f"{SCENE}, {FILLER}") >= 2
    assert prompts.count(pipe, "a BREAK b BREAK c") == 3
    long, short = prompts.embedded(pipe, [f"{SCENE}, {FILLER}"], [""], tiny.device)
    assert long.shape == short.shape and long.shape[1] == size * prompts.count(pipe, f"{SCENE}, {FILLER}")


def test_a_weight_of_one_changes_nothing_and_another_weight_changes_the_picture(shapes: Engine) -> None:
    plain = picture(shapes, SCENE)
    assert picture(shapes, "(a red circle:1.0) on a blue background") == plain
    weighted = picture(shapes, "(red:1.4) circle on a blue background")
    assert weighted != picture(shapes, "red circle on a blue background")
    assert picture(shapes, SCENE, negative_prompt="(green:1.5)") != picture(shapes, SCENE, negative_prompt="green")


def test_words_past_the_encoders_length_change_the_picture(shapes: Engine) -> None:
    long = f"{SCENE}, {FILLER}"
    assert picture(shapes, long) != picture(shapes, f"{long}, yellow triangle")
    assert picture(shapes, "a red circle BREAK on a blue background") != picture(shapes, SCENE)


def test_jobs_with_prompts_of_other_lengths_still_get_their_own_pictures(tiny: Engine) -> None:


    requests = [GenerateRequest(prompt=text, seed=5, num_inference_steps=2, keep_flagged=True)
                for text in ("a fox", f"a fox, {FILLER}")]
    alone = [tiny.generate(k, request).images[0].data for k, request in enumerate(requests)]
    together = tiny.generate_batch([Job(k, request) for k, request in enumerate(requests)])
    assert [result.images[0].data for result in together] == alone  # type: ignore[union-attr]
