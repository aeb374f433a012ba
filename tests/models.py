"""Test models: the tiny one, and a tiny one whose own CLIP safety checker flags every image."""

from __future__ import annotations

from pathlib import Path

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
