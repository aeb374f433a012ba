"""Prompts encoded as AUTOMATIC1111 encodes them (`engine.prompts`): weights on the text encoder's
output, no length limit, and unweighted short prompts exactly as diffusers encodes them; on SD 1.x
(the tiny model, the shapes model) and SDXL (the tiny SDXL: both text encoders, the pooled
embedding)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from dreambot.wire import Job
from engine import modes, prompts
from engine.pipeline import Engine
from engine.progress import quiet
from tests.support.models import tiny_sdxl_model

SCENE = "a red circle on a blue background"
# Far past CLIP's 75 tokens: what follows it used to be cut without a word.
FILLER = ", ".join(["plain simple shape picture"] * 25)


@pytest.fixture(scope="module")
def shapes() -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model="shapes"))


@pytest.fixture(scope="module")
def tiny(tiny_model: Path) -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_model)))


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(EngineSettings(_env_file=None, sd_model=str(tiny_sdxl_model(tmp_path_factory))))


def picture(engine: Engine, prompt: str, **options) -> bytes:
    """The picture's pixels (its PNG's text names the prompt as written)."""
    request = GenerateRequest(prompt=prompt, seed=3, num_inference_steps=8, keep_flagged=True, **options)
    return Image.open(io.BytesIO(engine.generate(0, request).images[0].data)).tobytes()


def test_an_unweighted_prompt_encodes_as_diffusers_encodes_it(tiny: Engine) -> None:
    pipe = tiny.pipe
    for text in ("a red fox, detailed and blurry", ""):
        theirs, _ = pipe.encode_prompt(text, tiny.device, 1, False)
        assert torch.equal(prompts.encode(pipe, text, tiny.device), theirs)
    texts, negatives = ["a red fox", "a blue cat on a mat"], ["blurry", ""]
    for negative in (negatives, None):  # diffusers encodes no negative as ""
        theirs = pipe.encode_prompt(texts, tiny.device, 1, True, negative)
        ours = prompts.arguments(pipe, texts, negative or ["", ""], tiny.device)
        assert list(ours) == ["prompt_embeds", "negative_prompt_embeds"]
        # Equal but for float rounding: ours encodes each text alone, diffusers the batch, and some
        # CPUs' kernels round differently at another batch size.
        torch.testing.assert_close(ours["prompt_embeds"], theirs[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours["negative_prompt_embeds"], theirs[1], rtol=1e-5, atol=1e-5)


def test_long_prompts_are_chunked_and_padded_to_one_length(tiny: Engine) -> None:
    pipe = tiny.pipe
    size = pipe.tokenizer.model_max_length
    assert prompts.count(pipe, SCENE) == 1 and prompts.count(pipe, f"{SCENE}, {FILLER}") >= 2
    assert prompts.count(pipe, "a BREAK b BREAK c") == 3
    given = prompts.arguments(pipe, [f"{SCENE}, {FILLER}"], [""], tiny.device)
    long, short = given["prompt_embeds"], given["negative_prompt_embeds"]
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
    alone = [tiny.generate(k, request) for k, request in enumerate(requests)]
    together = tiny.generate_batch([Job(k, request) for k, request in enumerate(requests)])
    assert [result.images[0].data for result in together] == [r.images[0].data for r in alone]  # type: ignore
    # Each result says how its own prompt was read (/info shows it): the long one whole, in chunks.
    tokens, chunks = prompts.reading(tiny.pipe, f"a fox, {FILLER}")  # type: ignore[misc]
    assert chunks >= 2 and tokens > 75 * (chunks - 1)
    assert [(r.prompt_tokens, r.prompt_chunks) for r in alone] == [prompts.reading(tiny.pipe, "a fox"),
                                                                   (tokens, chunks)]
    assert [(r.prompt_tokens, r.prompt_chunks) for r in together] == [(r.prompt_tokens, r.prompt_chunks)  # type: ignore
                                                                      for r in alone]


# SDXL: both text encoders' penultimate hidden states side by side, the second's pooled embedding.
# The tiny SDXL's tokenizers spell by bytes: this is 123 tokens, two chunks.
LONG = f"{SCENE}, " + ", ".join(["a plain shape"] * 7)
SDXL_KEYS = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]


def test_an_unweighted_sdxl_prompt_encodes_as_diffusers_encodes_it(sdxl: Engine) -> None:
    pipe, device = sdxl.pipe, sdxl.device
    assert prompts.weighted(pipe) and pipe.tokenizer.pad_token_id != pipe.tokenizer_2.pad_token_id
    for text, negative in (("a red fox, detailed", ""), ("a red fox, detailed", "blurry, ugly"), ("", "")):
        # An empty negative is diffusers' None: zeros, as `force_zeros_for_empty_prompt` says.
        theirs = pipe.encode_prompt(text, device=device, negative_prompt=negative or None)
        ours = prompts.arguments(pipe, [text], [negative], device)
        assert list(ours) == SDXL_KEYS
        assert all(torch.equal(ours[key], tensor) for key, tensor in zip(SDXL_KEYS, theirs, strict=True)), text
    assert ours["prompt_embeds"].shape == \
        (1, 77, pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size)
    # Several prompts in one call: as diffusers encodes them together, and each as alone. (diffusers'
    # own pooled embeddings of a batch differ from its single ones in the last bits: ours are the single.)
    texts = ["a red fox", "a blue cat on a mat", "a fox"]
    for negatives in (["blurry", "ugly, bad", "dark"], None):
        theirs = pipe.encode_prompt(texts, device=device, negative_prompt=negatives)
        ours = prompts.arguments(pipe, texts, negatives or ["", "", ""], device)
        # Equal but for float rounding: ours encodes each text alone, diffusers the batch, and some
        # CPUs' kernels round differently at another batch size.
        torch.testing.assert_close(ours["prompt_embeds"], theirs[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours["negative_prompt_embeds"], theirs[1], rtol=1e-5, atol=1e-5)
        assert all(torch.allclose(ours[key], tensor, atol=1e-5) for key, tensor in zip(SDXL_KEYS, theirs, strict=True))
        alone = [pipe.encode_prompt(text, device=device, negative_prompt=negative)
                 for text, negative in zip(texts, negatives or [None] * 3, strict=True)]
        for index, key in enumerate(SDXL_KEYS):
            assert torch.equal(ours[key], torch.cat([one[index] for one in alone])), key


def test_sdxl_weights_change_both_encoders_embeddings_but_not_the_pooled_one(sdxl: Engine) -> None:
    pipe, device = sdxl.pipe, sdxl.device
    width = pipe.text_encoder.config.hidden_size
    plain = prompts.arguments(pipe, ["red circle on a blue background"], ["green"], device)
    one = prompts.arguments(pipe, ["(red circle:1.0) on a blue background"], ["(green:1.0)"], device)
    assert all(torch.equal(one[key], plain[key]) for key in SDXL_KEYS)
    weighted = prompts.arguments(pipe, ["(red:1.4) circle on a blue background"], ["(green:1.5)"], device)
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        assert not torch.equal(weighted[key][..., :width], plain[key][..., :width])  # clip_l's part
        assert not torch.equal(weighted[key][..., width:], plain[key][..., width:])  # clip_g's part
    # A1111's: the pooled embedding is the unweighted text's.
    assert torch.equal(weighted["pooled_prompt_embeds"], plain["pooled_prompt_embeds"])


def test_a_long_sdxl_prompt_has_two_chunks_and_the_first_ones_pooled_embedding(sdxl: Engine) -> None:
    pipe, device = sdxl.pipe, sdxl.device
    long = LONG
    assert prompts.count(pipe, long) == 2 and prompts.count(pipe, SCENE) == 1
    given = prompts.arguments(pipe, [long], ["blurry"], device)
    assert given["prompt_embeds"].shape[:2] == given["negative_prompt_embeds"].shape[:2] == (1, 154)
    # diffusers cuts the prompt to its first chunk: that chunk, and its pooled embedding, are ours.
    cut, _, pooled, _ = pipe.encode_prompt(long, device=device, do_classifier_free_guidance=False)
    assert torch.equal(given["prompt_embeds"][:, :77], cut) and torch.equal(given["pooled_prompt_embeds"], pooled)
    assert not torch.equal(given["prompt_embeds"][:, 77:], prompts.encode(pipe, "", device))
    # The short negative is padded with an empty chunk; an empty one is zeros all along.
    short = prompts.encode(pipe, "blurry", device)
    assert torch.equal(given["negative_prompt_embeds"][:, :77], short)
    assert torch.equal(given["negative_prompt_embeds"][:, 77:], prompts.encode(pipe, "", device))
    nothing = prompts.arguments(pipe, [long], [""], device)
    assert nothing["negative_prompt_embeds"].shape == (1, 154, short.shape[2])
    assert not nothing["negative_prompt_embeds"].any() and not nothing["negative_pooled_prompt_embeds"].any()


def test_sdxl_pictures_take_long_weighted_prompts_and_jobs_share_calls(sdxl: Engine) -> None:
    long = f"(red:1.3) circle, [blue] {LONG}"
    assert prompts.count(sdxl.pipe, long) == prompts.count(sdxl.pipe, f"{long}, yellow triangle") == 2
    # Jobs sharing a call: each job's prompt arguments are those it gets alone (an empty negative is
    # zeros, as alone).
    texts = [("a fox", ""), ("a (fox:1.2)", "blurry"), ("a [fox]", "dark")]
    requests = [GenerateRequest(prompt=text, negative_prompt=negative) for text, negative in texts]
    shared = modes._prompts(sdxl, sdxl.pipe, requests)
    assert list(shared) == SDXL_KEYS
    for index, request in enumerate(requests):
        alone = modes._prompts(sdxl, sdxl.pipe, [request])
        assert alone.pop("num_images_per_prompt") == 1
        assert all(torch.equal(shared[key][index:index + 1], alone[key]) for key in alone)
    # Pictures: the words past the first chunk count; alone and sharing a call, the same pictures.
    # (Not always to the last bit: the CPU's arithmetic on a batch can round the UNet's sums
    # otherwise than on one picture.)
    requests = [GenerateRequest(prompt=text, negative_prompt="dark", seed=5, num_inference_steps=2, keep_flagged=True)
                for text in (long, f"{long}, yellow triangle")]
    alone = [np.asarray(Image.open(io.BytesIO(sdxl.generate(k, request).images[0].data)), dtype=int)
             for k, request in enumerate(requests)]
    assert alone[0].shape == (sdxl.native_size, sdxl.native_size, 3)
    assert not np.array_equal(alone[0], alone[1])
    together = sdxl.generate_batch([Job(k, request) for k, request in enumerate(requests)])
    for one, result in zip(alone, together, strict=True):
        picture = np.asarray(Image.open(io.BytesIO(result.images[0].data)), dtype=int)  # type: ignore[union-attr]
        assert np.abs(picture - one).max() <= 2


def test_sdxl_img2img_and_inpainting_take_the_encoded_prompts(sdxl: Engine) -> None:
    source, mask = Image.new("RGB", (64, 64), "gray"), Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    files = []
    for image in (source, mask):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.append(buffer.getvalue())
    for options in ({"mode": "img2img"}, {"mode": "inpaint", "mask": files[1]}):
        request = GenerateRequest(prompt=f"a (red:1.2) {LONG}", negative_prompt="blurry", image=files[0], seed=5,
                                  num_inference_steps=2, strength=1.0, keep_flagged=True, **options)
        [result] = sdxl.generate(0, request).images
        assert Image.open(io.BytesIO(result.data)).size == (64, 64)


# CLIP skip (`Engine.clip_skip`, A1111's count: 1 = the last layer, no skip).
def test_clip_skip_reads_an_earlier_layer_through_the_final_layer_norm(tiny: Engine) -> None:
    pipe, device, text = tiny.pipe, tiny.device, "a red fox, detailed"
    # 1: the encoder's output, as diffusers encodes it (its clip_skip None).
    plain = prompts.encode(pipe, text, device, clip_skip=1)
    assert torch.equal(plain, pipe.encode_prompt(text, device, 1, False)[0])
    assert torch.equal(prompts.encode(pipe, text, device), plain)
    # 2: A1111's, one layer earlier through the final layer norm; diffusers' clip_skip=1 means the same
    # (but diffusers 0.42 cannot run it beside transformers 5: it looks for `text_model.final_layer_norm`).
    ids = pipe.tokenizer(text, padding="max_length", return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states
        theirs = pipe.text_encoder.final_layer_norm(hidden[-2])
    skipped = prompts.encode(pipe, text, device, clip_skip=2)
    assert torch.equal(skipped, theirs) and not torch.allclose(skipped, plain, atol=1e-3)
    # Weights and padding apply as without a skip: a negative as long as a long prompt.
    given = prompts.arguments(pipe, [f"(red:1.3) fox, {FILLER}"], ["blurry"], device, clip_skip=2)
    assert given["negative_prompt_embeds"].shape == given["prompt_embeds"].shape
    assert torch.equal(given["negative_prompt_embeds"][:, :77], prompts.encode(pipe, "blurry", device, clip_skip=2))
    for out_of_range in (0, pipe.text_encoder.config.num_hidden_layers + 1):
        with pytest.raises(ValueError, match=f"CLIP skip {out_of_range} is out of range"):
            prompts.encode(pipe, text, device, clip_skip=out_of_range)


def test_sdxl_clip_skip_is_diffusers_clip_skip_plus_one(sdxl: Engine) -> None:
    pipe, device = sdxl.pipe, sdxl.device
    # SDXL reads the penultimate layer unskipped; diffusers' clip_skip counts from there. diffusers
    # skips for the prompt only; a negative skips too, as in A1111 (one encoder setting for both).
    ours = prompts.arguments(pipe, ["a red fox"], ["blurry"], device, clip_skip=2)
    prompt_embeds, _, pooled, _ = pipe.encode_prompt("a red fox", device=device, clip_skip=1)
    negative_embeds, _, negative_pooled, _ = pipe.encode_prompt("blurry", device=device, clip_skip=1)
    assert torch.equal(ours["prompt_embeds"], prompt_embeds) and torch.equal(ours["pooled_prompt_embeds"], pooled)
    assert torch.equal(ours["negative_prompt_embeds"], negative_embeds)
    assert torch.equal(ours["negative_pooled_prompt_embeds"], negative_pooled)
    plain = prompts.arguments(pipe, ["a red fox"], ["blurry"], device)
    assert not torch.equal(ours["prompt_embeds"], plain["prompt_embeds"])
    assert torch.equal(ours["pooled_prompt_embeds"], plain["pooled_prompt_embeds"])  # the pooled one never skips
    # An empty negative is zeros, whatever the skip.
    nothing = prompts.arguments(pipe, ["a red fox"], [""], device, clip_skip=2)
    assert not nothing["negative_prompt_embeds"].any() and not nothing["negative_pooled_prompt_embeds"].any()


def test_the_engines_clip_skip_changes_the_pictures_of_every_mode(tiny: Engine) -> None:
    skipping = dataclasses.replace(tiny, clip_skip=2)
    assert picture(skipping, SCENE) != picture(tiny, SCENE)
    source = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(source, format="PNG")
    assert picture(skipping, SCENE, mode="img2img", image=source.getvalue()) != \
        picture(tiny, SCENE, mode="img2img", image=source.getvalue())
    # Interpolation too: its first frame is the txt2img picture with the same skip.
    still = GenerateRequest(prompt=SCENE, seed=3, num_inference_steps=8)
    frames = modes.interpolate(skipping, [dataclasses.replace(still, mode="interpolate", end_seed=9, frames=2)],
                               quiet).pictures[0]
    assert frames[0].tobytes() == modes.txt2img(skipping, [still], quiet).pictures[0][0].tobytes()
    assert frames[0].tobytes() != modes.txt2img(tiny, [still], quiet).pictures[0][0].tobytes()
