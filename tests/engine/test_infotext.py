"""The generation parameters written into every PNG, as AUTOMATIC1111 writes them."""

from __future__ import annotations

from dreambot.request import GenerateRequest
from engine.infotext import infotext

PNG = b"\x89PNG fake bytes"


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
