"""Tiny random-weight Stable Diffusion models of each family (SD 1.x, its inpainting variant, SD 2.x
with v-prediction, SDXL), for smoke tests and the test suite: a diffusers folder, or one checkpoint
file in the original layout model sites publish.

Each is its family's stock configs (engine/configs) at tiny sizes, built the way diffusers' own tests
build dummy components, but with a 4-block VAE so the latent geometry is the real one (scale factor
8). The configs a single file's weights give (`engine.checkpoint.derive`) are exactly these. Its
images are noise: it checks plumbing, not meaning.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from dreambot import families
from engine.checkpoint import stock_config, token_ids, write_single_file

# The families there is a tiny model of.
FAMILIES = ("sd1", "sd1-inpaint", "sd2", "sdxl")
# Latent side 8 -> 64 px images by default: fast on a CPU.
SAMPLE_SIZE = 8
TEXT_WIDTH = 32
# The tiny SDXL's text encoders: widths of their own (SDXL's are 768 and 1280), so that each
# encoder's part of the concatenated embeddings, and an embedding file's clip_l and clip_g, show.
SDXL_WIDTHS = (32, 48)
SDXL_PROJECTION = 32  # the pooled embedding's width (SDXL's: 1280)
SDXL_TIME_WIDTH = 8  # each size number's embedding (SDXL's: 256)


def byte_level_tokenizer(max_length: int = 77, words: list[str] = (), pad: str = "<|endoftext|>") -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes: any text encodes, offline, with no vocab file.

    Each of `words` gets a merge chain of its own, so it becomes one token. It pads with `pad`: the
    end token, as SD 1.x's tokenizer does, or "!" (token 0), as SD 2.x's and SDXL's second do.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {symbol: i for i, symbol in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
                vocab.setdefault(current + piece, len(vocab))
            current += piece
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=pad)


def _tokenizer(family: str, component: str) -> CLIPTokenizer:
    # Padding as the stock tokenizer's does ("!" for SD 2.x and SDXL's second).
    pad = "!" if (families.base_of(family), component) in {("sd2", "text_encoder"),
                                                           ("sdxl", "text_encoder_2")} else "<|endoftext|>"
    return byte_level_tokenizer(pad=pad)


def _text_encoder(family: str, component: str, tokenizer: CLIPTokenizer, width: int) -> CLIPTextModel:
    config = stock_config(family, component)
    config.update(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, **token_ids(tokenizer))
    if component == "text_encoder_2":
        config["projection_dim"] = SDXL_PROJECTION
        return CLIPTextModelWithProjection(CLIPTextConfig.from_dict(config)).to(torch.float32)
    return CLIPTextModel(CLIPTextConfig.from_dict(config)).to(torch.float32)


def _unet(family: str) -> UNet2DConditionModel:
    base = families.base_of(family)
    config = stock_config(family, "unet")
    config.update(
        sample_size=SAMPLE_SIZE,
        in_channels=families.INPAINTING_CHANNELS if families.is_inpainting(family) else 4,
        block_out_channels=[32, 64],
        layers_per_block=1,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=sum(SDXL_WIDTHS) if base == "sdxl" else TEXT_WIDTH,
    )
    if base != "sd1":  # SD 1.x keeps its 8 heads per block; SD 2.x and SDXL have 64-wide heads, at least 4
        config["attention_head_dim"] = [4, 4]
    if base == "sdxl":
        config.update(transformer_layers_per_block=[1, 1], addition_time_embed_dim=SDXL_TIME_WIDTH,
                      projection_class_embeddings_input_dim=6 * SDXL_TIME_WIDTH + SDXL_PROJECTION)
    return UNet2DConditionModel.from_config(config)


def _vae(family: str) -> AutoencoderKL:
    config = stock_config(family, "vae")
    config.update(block_out_channels=[8, 8, 8, 8], layers_per_block=1, norm_num_groups=8,
                  sample_size=SAMPLE_SIZE * 8)
    return AutoencoderKL.from_config(config)


def _scheduler(family: str):
    config = stock_config(family, "scheduler")
    return getattr(diffusers, config["_class_name"]).from_config(config)


def build_tiny(family: str = "sd1", seed: int = 0) -> DiffusionPipeline:
    """The tiny model of a family (one of FAMILIES), its random weights drawn from `seed`."""
    if family not in FAMILIES:
        raise ValueError(f"no tiny model of family {family!r}; there are: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    if families.base_of(family) == "sdxl":
        tokenizer, tokenizer_2 = _tokenizer(family, "text_encoder"), _tokenizer(family, "text_encoder_2")
        text_encoder = _text_encoder(family, "text_encoder", tokenizer, SDXL_WIDTHS[0])
        text_encoder_2 = _text_encoder(family, "text_encoder_2", tokenizer_2, SDXL_WIDTHS[1])
        return StableDiffusionXLPipeline(
            vae=_vae(family), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=_unet(family), scheduler=_scheduler(family),
            force_zeros_for_empty_prompt=True, add_watermarker=False,
        )
    tokenizer = _tokenizer(family, "text_encoder")
    text_encoder = _text_encoder(family, "text_encoder", tokenizer, TEXT_WIDTH)
    cls = StableDiffusionInpaintPipeline if families.is_inpainting(family) else StableDiffusionPipeline
    return cls(
        vae=_vae(family), text_encoder=text_encoder, tokenizer=tokenizer, unet=_unet(family),
        scheduler=_scheduler(family), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny SD 1.x."""
    return build_tiny("sd1", seed)


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """The tiny SDXL: two CLIP text encoders (the second with a projection, for the pooled embedding),
    the second tokenizer padding with "!" as SDXL's does, and a UNet taking SDXL's added
    conditioning (the pooled embedding and the six size numbers)."""
    return build_tiny("sdxl", seed)


# ModelSpec metadata (github.com/Stability-AI/ModelSpec), as trainers write it into a checkpoint:
# what the weights cannot say, here the tiny native size and SD 2.x's prediction type.
ARCHITECTURES = {"sd1": "stable-diffusion-v1", "sd1-inpaint": "stable-diffusion-v1",
                 "sd2": "stable-diffusion-v2-768-v", "sdxl": "stable-diffusion-xl-v1-base"}


def model_spec(family: str, seed: int = 0) -> dict[str, str]:
    prediction = stock_config(family, "scheduler").get("prediction_type", "epsilon")
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURES[family],
        "modelspec.implementation": "sgm" if families.base_of(family) == "sdxl"
        else "https://github.com/Stability-AI/stablediffusion",
        "modelspec.title": f"tiny random {families.LABELS[family]} (engine.tiny, seed {seed})",
        "modelspec.resolution": f"{SAMPLE_SIZE * 8}x{SAMPLE_SIZE * 8}",
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
    }


def write_tiny_model(directory: str | Path, seed: int = 0, family: str = "sd1", single_file: bool = False) -> Path:
    """Save a family's tiny model (a few MB) as a diffusers folder at `directory`, which loads with
    `from_pretrained(directory)`; or, with `single_file`, as one .safetensors checkpoint in the
    original layout (".safetensors" added to the name if missing). Returns the path written."""
    pipe = build_tiny(family, seed)
    if single_file:
        return write_single_file(pipe, family, Path(directory), model_spec(family, seed))
    directory = Path(directory)
    pipe.save_pretrained(directory)
    # The scheduler's config as the stock model's folder holds it: what it leaves out stays the default of
    # whichever sampler a job builds from it, as with the real model (save_pretrained writes every value).
    config = json.dumps(stock_config(family, "scheduler"), indent=2)
    (directory / "scheduler" / "scheduler_config.json").write_text(config + "\n", encoding="utf-8")
    return directory


def write_tiny_sdxl_model(directory: str | Path, seed: int = 0) -> Path:
    """Save the tiny SDXL (a few MB) to `directory`; it loads with `from_pretrained(directory)`."""
    return write_tiny_model(directory, seed, "sdxl")
