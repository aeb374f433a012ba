"""A tiny random-weight Stable Diffusion, and a tiny SDXL, in diffusers folder format, for smoke
tests and the test suite.

Built the way diffusers' own tests build dummy components, but with a 4-block VAE so the latent
geometry is the real one (scale factor 8). Its images are noise: it checks plumbing, not meaning.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

# Latent side 8 -> 64 px images by default: fast on a CPU.
SAMPLE_SIZE = 8


def byte_level_tokenizer(max_length: int = 77, words: list[str] = (), pad: str = "<|endoftext|>") -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes: any text encodes, offline, with no vocab file.

    Each of `words` gets a merge chain of its own, so it becomes one token. It pads with `pad`: the
    end token, as SD 1.x's tokenizer does, or "!" (token 0), as SDXL's second tokenizer does.
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


def _text_config(tokenizer: CLIPTokenizer, width: int, projection: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=projection,
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=SAMPLE_SIZE * 8,
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    text_encoder = CLIPTextModel(_text_config(tokenizer, 32))
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = _vae()
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Save the tiny model (about 4 MB) to `directory`; it loads with `from_pretrained(directory)`."""
    directory = Path(directory)
    build_tiny_pipeline(seed).save_pretrained(directory)
    return directory


# The tiny SDXL's text encoders: widths of their own (SDXL's are 768 and 1280), so that each
# encoder's part of the concatenated embeddings, and an embedding file's clip_l and clip_g, show.
SDXL_WIDTHS = (32, 48)


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A tiny SDXL: two CLIP text encoders (the second with a projection, for the pooled embedding),
    the second tokenizer padding with "!" as SDXL's does, and a UNet taking SDXL's added
    conditioning (the pooled embedding and the six size numbers)."""
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = byte_level_tokenizer(), byte_level_tokenizer(pad="!")
    projection = 32
    text_encoder = CLIPTextModel(_text_config(tokenizer, SDXL_WIDTHS[0]))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, SDXL_WIDTHS[1], projection))
    time_width = 8
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=sum(SDXL_WIDTHS),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_width,
        projection_class_embeddings_input_dim=6 * time_width + projection,
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def write_tiny_sdxl_model(directory: str | Path, seed: int = 0) -> Path:
    """Save the tiny SDXL (a few MB) to `directory`; it loads with `from_pretrained(directory)`."""
    directory = Path(directory)
    build_tiny_sdxl_pipeline(seed).save_pretrained(directory)
    return directory
