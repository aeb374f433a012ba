"""LoRAs (`engine.loras`): loaded by name from LORA_DIR in diffusers' and kohya's formats, on for
exactly the job that names them, off again after, and every bad name or file refused clearly."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from dreambot.errors import InvalidRequest
from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from dreambot.wire import Job
from engine import loras
from engine.pipeline import Engine
from tests.support.loras import write_lora


@pytest.fixture(scope="module")
def folder(tiny_model: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    write_lora(tiny_model, folder / "glow.safetensors", seed=1)
    write_lora(tiny_model, folder / "glow_kohya.safetensors", seed=1, kohya=True)  # the same weights
    write_lora(tiny_model, folder / "ink.safetensors", seed=2)
    safetensors.torch.save_file({"model.diffusion_model.x.weight": torch.ones(2, 2)}, str(folder / "odd.safetensors"))
    torch.save({"a": torch.ones(1)}, folder / "pickled.ckpt")  # not a LoRA file type: never opened
    return folder


@pytest.fixture(scope="module")
def engine(tiny_model: Path, folder: Path) -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model), lora_dir=folder))


def request(prompt: str, seed: int = 3) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, seed=seed, num_inference_steps=2, keep_flagged=True)


def pixels(engine: Engine, prompt: str, seed: int = 3) -> bytes:
    return Image.open(io.BytesIO(engine.generate(0, request(prompt, seed)).images[0].data)).tobytes()


def test_only_safetensors_files_are_loras_and_a_name_is_its_file_stem(engine: Engine) -> None:
    assert list(engine.loras.catalogue.loras) == ["glow", "glow_kohya", "ink", "odd"]


def test_a_lora_changes_the_picture_and_leaves_nothing_behind(tiny_model: Path, folder: Path) -> None:
    engine = Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model), lora_dir=folder))
    before = pixels(engine, "a red fox")  # no LoRA was ever loaded
    glowing = pixels(engine, "a red fox <lora:glow:1>")
    assert glowing != before
    assert pixels(engine, "a red fox") == before  # the next job without it: bit for bit as before
    assert pixels(engine, "a red fox <lora:glow:0>") == before  # weight 0 is no LoRA
    assert pixels(engine, "a red fox <lora:glow:0.5>") not in (before, glowing)
    assert pixels(engine, "a red fox <lora:GLOW>") == glowing  # weight 1 by default; any case
    assert pixels(engine, "<lora:glow:1> a red fox") == glowing  # the tag is not text, wherever it stands
    both = pixels(engine, "a red fox <lora:glow:1> <lora:ink:1>")
    assert both not in (before, glowing, pixels(engine, "a red fox <lora:ink:1>"))


def test_a_kohya_file_from_a_model_site_draws_what_the_same_weights_in_diffusers_format_draw(engine: Engine) -> None:
    assert pixels(engine, "a fox <lora:glow_kohya:0.8>") == pixels(engine, "a fox <lora:glow:0.8>")


def test_jobs_with_different_loras_never_share_a_call_and_each_is_as_if_alone(engine: Engine) -> None:
    prompts = ["a fox <lora:glow:1>", "a fox", "a fox <lora:ink:1>", "a fox <lora:glow:1>"]
    alone = [pixels(engine, prompt) for prompt in prompts]
    results = engine.generate_batch([Job(k, request(prompt)) for k, prompt in enumerate(prompts)])
    together = [Image.open(io.BytesIO(result.images[0].data)).tobytes() for result in results]
    def apart(a: bytes, b: bytes) -> np.ndarray:
        return np.abs(np.frombuffer(a, np.uint8).astype(int) - np.frombuffer(b, np.uint8).astype(int))

    for k, (one, other) in enumerate(zip(alone, together, strict=True)):
        # As tests/engine/test_pipeline.py: float32 kernels round differently at another batch size,
        # a few levels of 255 (the two jobs with the same LoRA share a call: up to 4 levels in 44 % of
        # the values on this machine's CPU in December 2026, 1 level in a handful before); a wrong
        # LoRA would change the whole picture, as far as another prompt's picture is.
        difference = apart(one, other)
        nearest_other = min(apart(alone[j], other).mean() for j in range(len(prompts)) if prompts[j] != prompts[k])
        assert difference.max() <= 8 and difference.mean() < nearest_other / 10, (difference.mean(), nearest_other)


def test_the_cache_keeps_a_few_loaded_and_reloads_what_it_let_go(tiny_model: Path, folder: Path, monkeypatch) -> None:
    engine = Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model), lora_dir=folder))
    monkeypatch.setattr(loras, "CACHED", 1)
    glow, ink = pixels(engine, "a fox <lora:glow:1>"), pixels(engine, "a fox <lora:ink:1>")
    assert list(engine.loras.loaded) == ["ink"]
    assert pixels(engine, "a fox <lora:glow:1>") == glow and list(engine.loras.loaded) == ["glow"]
    assert pixels(engine, "a fox <lora:ink:1>") == ink
    both = pixels(engine, "a fox <lora:glow:1> <lora:ink:1>")  # one job's LoRAs stay, whatever the cache holds
    monkeypatch.setattr(loras, "CACHED", 8)
    assert pixels(engine, "a fox <lora:glow:1> <lora:ink:1>") == both


def test_an_unknown_name_is_refused_naming_what_is_installed(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match=r"no LoRA named “nope” \(installed: glow, glow_kohya, ink, odd\)"):
        engine.generate(0, request("a fox <lora:nope:1>"))


def test_a_file_that_is_not_a_lora_for_this_model_is_refused_without_its_path(engine: Engine, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.loras"), pytest.raises(InvalidRequest) as refused:
        engine.generate(0, request("a fox <lora:odd:1>"))
    assert "“odd” cannot be used with this server's model" in str(refused.value)
    assert "odd.safetensors" not in str(refused.value) and "odd.safetensors" in caplog.text  # the path is the log's
    assert pixels(engine, "a fox <lora:glow:1>") == pixels(engine, "a fox <lora:glow_kohya:1>")  # and all still works
    before = pixels(engine, "a fox")
    with pytest.raises(InvalidRequest):  # the first loads and is on, the second fails: the first goes off too
        engine.generate(0, request("a fox <lora:ink:1> <lora:odd:1>"))
    assert pixels(engine, "a fox") == before


def test_a_lora_installed_after_the_start_is_found(tiny_model: Path, tmp_path: Path) -> None:
    engine = Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model), lora_dir=tmp_path))
    write_lora(tiny_model, tmp_path / "late.safetensors", seed=5)
    assert pixels(engine, "a fox <lora:late:1>") != pixels(engine, "a fox")


def test_the_bundled_outline_lora_draws_hollow_shapes_and_leaves_nothing_behind() -> None:
    from tools import shapes  # the oracle: colour, shape, background, and whether the shape is hollow

    engine = Engine.load(EngineSettings(_env_file=None, sd_model="shapes"))
    assert "outline" in engine.loras.catalogue.loras  # the shapes model brings it, as it brings `sun`
    prompt = "a red circle on a white background"

    def drawn(text: str, seed: int) -> Image.Image:
        request = GenerateRequest(prompt=text, seed=seed, keep_flagged=True)
        return Image.open(io.BytesIO(engine.generate(0, request).images[0].data))

    for seed in (1, 2):
        before = drawn(prompt, seed)
        ring = drawn(f"{prompt} <lora:outline:1>", seed)
        assert shapes.classify(ring) == ("red", "circle", "white") and shapes.hollow(ring) is True
        assert shapes.classify(before)[1:] == ("circle", "white") and shapes.hollow(before) is False
        assert drawn(f"{prompt} <lora:outline:0>", seed).tobytes() == before.tobytes()  # weight 0: filled, as before
        assert drawn(prompt, seed).tobytes() == before.tobytes()  # and nothing of it stays behind
