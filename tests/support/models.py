"""Test models: the tiny one, a tiny one whose own CLIP safety checker flags every image, a tiny
upscaler and a tiny SDXL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

from engine.tiny import build_tiny_pipeline


def write_flagging_model(directory: Path) -> Path:
    """The tiny model plus a tiny `StableDiffusionSafetyChecker` whose thresholds every image exceeds.

    Loaded through `from_pretrained` like any SD 1.x checkpoint that ships a checker, so it drives
    the real "checkpoint's own safety checker" path end to end.
    """
    pipe = build_tiny_pipeline()
    torch.manual_seed(1)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        # score = cosine - threshold: with thresholds of -1 every image scores above 0.
        checker.concept_embeds_weights.fill_(-1.0)
    features = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe.register_modules(safety_checker=checker, feature_extractor=features)
    pipe.register_to_config(requires_safety_checker=True)
    pipe.save_pretrained(directory)
    return directory


def write_tiny_upscaler(directory: Path) -> Path:
    """A tiny random-weight 2x latent upscaler in the layout of stabilityai/sd-x2-latent-upscaler
    (the component shapes diffusers' own tests use), for SD_UPSCALER."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionLatentUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.tiny import byte_level_tokenizer

    torch.manual_seed(2)
    tokenizer = byte_level_tokenizer()
    unet = UNet2DConditionModel(
        act_fn="gelu", attention_head_dim=8, norm_num_groups=None, block_out_channels=[32, 32, 64, 64],
        time_cond_proj_dim=160, conv_in_kernel=1, conv_out_kernel=1, cross_attention_dim=32,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        in_channels=8, mid_block_type=None, only_cross_attention=False, out_channels=5,
        resnet_time_scale_shift="scale_shift", time_embedding_type="fourier", timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
    )
    vae = AutoencoderKL(block_out_channels=[32, 32, 64, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
        hidden_act="quick_gelu", projection_dim=512,
    ))
    StableDiffusionLatentUpscalePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                         scheduler=EulerDiscreteScheduler(prediction_type="sample")
                                         ).save_pretrained(directory)
    return directory


_sdxl: list[Path] = []


def tiny_sdxl_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL (`engine.tiny.write_tiny_sdxl_model`), written once per test run whichever
    module's fixture asks first."""
    if not _sdxl:
        from engine.tiny import write_tiny_sdxl_model

        _sdxl.append(write_tiny_sdxl_model(tmp_path_factory.mktemp("models") / "tiny-sdxl"))
    return _sdxl[0]
