"""Textual-inversion embeddings (`engine.embeddings`): every file in EMBEDDINGS_DIR loads by its
name, is used where that name is a word of a prompt, and nothing unsafe is ever unpickled; on SD 1.x
(the tiny model) and SDXL (the tiny SDXL: clip_l and clip_g, in both text encoders)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image

from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from engine import prompts
from engine.embeddings import Embeddings
from engine.pipeline import Engine
from engine.tiny import SDXL_WIDTHS
from tests.support.models import tiny_sdxl_model


class NotATensor:
    """What a malicious .pt could hold: unpickling it would run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def folder(tiny_model: Path, tmp_path_factory) -> Path:
    width = 32  # the tiny model's text encoder (engine/tiny.py)
    folder = tmp_path_factory.mktemp("embeddings")
    generator = torch.Generator().manual_seed(0)
    safetensors.torch.save_file({"emb_params": torch.randn(2, width, generator=generator)},
                                str(folder / "glowing.safetensors"))  # A1111's safetensors, two vectors
    torch.save({"string_to_param": {"*": torch.randn(1, width, generator=generator)}, "name": "fuzzy", "step": 9},
               folder / "fuzzy.pt")  # A1111's .pt
    torch.save({"<inky>": torch.randn(width, generator=generator)}, folder / "inky.bin")  # diffusers'
    torch.save({"string_to_param": {"*": NotATensor()}}, folder / "unsafe.pt")
    safetensors.torch.save_file({"emb_params": torch.randn(1, width * 2)}, str(folder / "wide.safetensors"))
    safetensors.torch.save_file({"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)},
                                str(folder / "sdxl.safetensors"))
    (folder / "notes.txt").write_text("not an embedding")
    return folder


@pytest.fixture(scope="module")
def engines(tiny_model: Path, folder: Path, tmp_path_factory) -> tuple[Engine, Engine]:
    empty = tmp_path_factory.mktemp("none")
    with_them = Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model), embeddings_dir=folder))
    without = Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model), embeddings_dir=empty))
    return with_them, without


def pixels(engine: Engine, prompt: str, negative: str = "") -> bytes:
    request = GenerateRequest(prompt=prompt, negative_prompt=negative, seed=4, num_inference_steps=2,
                              keep_flagged=True)
    return Image.open(io.BytesIO(engine.generate(0, request).images[0].data)).tobytes()


def test_every_kind_of_file_loads_by_name_and_the_rest_is_skipped_with_a_reason(tiny_model: Path, folder: Path,
                                                                                caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.embeddings"):
        engine = Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model), embeddings_dir=folder))
    assert {name: len(tokens) for name, tokens in engine.embeddings.tokens.items()} == \
        {"glowing": 2, "fuzzy": 1, "inky": 1}
    said = caplog.text
    assert "unsafe.pt cannot be read safely (weights only)" in said  # and nothing was run
    assert "wide.safetensors has vectors 64 wide; this model's text encoder takes 32" in said
    assert "sdxl.safetensors is an SDXL embedding" in said


def test_a_name_is_used_as_a_whole_word_only() -> None:
    words = Embeddings({"sun": ["<embedding:sun:0>"], "easynegative": ["<e:0>", "<e:1>"]})
    assert words.spell("a sun, sunset, sun-dried, (Sun:1.2) and easynegative") == \
        "a <embedding:sun:0>, sunset, sun-dried, (<embedding:sun:0>:1.2) and <e:0><e:1>"


def test_an_embedding_changes_the_picture_only_where_it_is_named(engines: tuple[Engine, Engine]) -> None:
    with_them, without = engines
    for prompt, negative in (("a red fox", ""), ("a fuzzier fox", "blurry")):
        assert pixels(with_them, prompt, negative) == pixels(without, prompt, negative)
    for prompt, negative in (("a glowing fox", ""), ("a fox", "fuzzy"), ("an inky fox", "")):
        assert pixels(with_them, prompt, negative) != pixels(without, prompt, negative)
    # Weighted like any word.
    assert pixels(with_them, "a (glowing:1.5) fox") != pixels(with_them, "a glowing fox")


def test_the_bundled_sun_embedding_draws_a_yellow_circle() -> None:
    from tools import shapes  # the oracle: colour, shape and background of a picture

    engine = Engine.load(EngineSettings(_env_file=None, sd_model="shapes"))
    assert list(engine.embeddings.tokens) == ["sun"]
    seen = []
    for background in ("white", "black", "gray", "blue"):
        for seed in (1, 2):
            request = GenerateRequest(prompt=f"a sun on a {background} background", seed=seed, keep_flagged=True)
            image = Image.open(io.BytesIO(engine.generate(0, request).images[0].data))
            seen.append(shapes.classify(image) == ("yellow", "circle", background))
    assert sum(seen) >= 7, seen


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory) -> Path:
    clip_l, clip_g = SDXL_WIDTHS  # the tiny SDXL's text encoders (engine/tiny.py)
    folder = tmp_path_factory.mktemp("sdxl-embeddings")
    generator = torch.Generator().manual_seed(0)
    safetensors.torch.save_file({"clip_l": torch.randn(2, clip_l, generator=generator),
                                 "clip_g": torch.randn(2, clip_g, generator=generator)},
                                str(folder / "glowing.safetensors"))
    torch.save({"clip_l": torch.randn(clip_l, generator=generator), "clip_g": torch.randn(clip_g, generator=generator)},
               folder / "inky.pt")  # one vector each, as 1-d tensors
    safetensors.torch.save_file({"clip_l": torch.randn(1, clip_l)}, str(folder / "half.safetensors"))
    safetensors.torch.save_file({"clip_l": torch.randn(1, clip_l), "clip_g": torch.randn(1, clip_g * 2)},
                                str(folder / "wide.safetensors"))
    safetensors.torch.save_file({"clip_l": torch.randn(1, clip_l), "clip_g": torch.randn(2, clip_g)},
                                str(folder / "uneven.safetensors"))
    safetensors.torch.save_file({"emb_params": torch.randn(1, clip_l)}, str(folder / "sd1.safetensors"))
    torch.save({"string_to_param": {"*": NotATensor()}}, folder / "unsafe.pt")
    return folder


def test_sdxl_embeddings_go_into_both_text_encoders_and_the_rest_is_skipped_with_a_reason(
        tmp_path_factory, sdxl_folder: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.embeddings"):
        engine = Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_sdxl_model(tmp_path_factory)),
                                            embeddings_dir=sdxl_folder))
    assert {name: len(tokens) for name, tokens in engine.embeddings.tokens.items()} == {"glowing": 2, "inky": 1}
    said = caplog.text
    assert "half.safetensors holds an SDXL embedding without clip_g" in said
    assert "wide.safetensors has clip_g vectors 96 wide; this model's text encoder for clip_g takes 48" in said
    assert "uneven.safetensors has 1 clip_l vectors and 2 clip_g vectors" in said
    assert "sd1.safetensors is an embedding for one text encoder (SD 1.x or 2.x); this SDXL model has two" in said
    assert "unsafe.pt cannot be read safely (weights only)" in said

    # Each tokenizer has the same token names, each encoder its own vectors for them.
    pipe, device = engine.pipe, engine.device
    saved = safetensors.torch.load_file(str(sdxl_folder / "glowing.safetensors"))
    spelled = engine.embeddings.spell("a glowing fox")
    for key, tokenizer, encoder in (("clip_l", pipe.tokenizer, pipe.text_encoder),
                                    ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer.convert_tokens_to_ids(engine.embeddings.tokens["glowing"])
        assert torch.equal(encoder.get_input_embeddings().weight[ids], saved[key])
        assert [token for token, _ in prompts.chunks(pipe, "a glowing fox", engine.embeddings, tokenizer)[0]] == \
            tokenizer(spelled, add_special_tokens=False).input_ids
        assert set(ids) <= set(tokenizer(spelled, add_special_tokens=False).input_ids)

    # A name changes both encoders' part of the embeddings; weighted like any word.
    width = pipe.text_encoder.config.hidden_size
    named, plain = (prompts.encode(pipe, "a glowing fox", device, embeddings=which)
                    for which in (engine.embeddings, Embeddings()))
    assert not torch.equal(named[..., :width], plain[..., :width])
    assert not torch.equal(named[..., width:], plain[..., width:])
    assert torch.equal(prompts.encode(pipe, "a fox", device, embeddings=engine.embeddings),
                       prompts.encode(pipe, "a fox", device))
    assert not torch.equal(prompts.encode(pipe, "a (glowing:1.5) fox", device, embeddings=engine.embeddings), named)
    request = GenerateRequest(prompt="an inky fox", negative_prompt="glowing", seed=4, num_inference_steps=2,
                              keep_flagged=True)
    assert engine.generate(0, request).images
