"""The safety classifiers (`engine.safety`) score as their reference does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreambot.settings import EngineSettings
from engine.pipeline import Engine
from engine.safety import OpenNSFWSafetyChecker


def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


def test_checkpoint_scores_agree_with_diffusers(flagging_model: Path) -> None:
    engine = Engine.load(settings(flagging_model))
    checker = engine.safety._checker
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8))
              for i in range(8)]
    clip_input = engine.safety._features(images, return_tensors="pt").pixel_values
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        checker.concept_embeds.copy_(torch.randn(checker.concept_embeds.shape, generator=generator))
        embeds = checker.visual_projection(checker.vision_model(clip_input)[1])
        normalize = torch.nn.functional.normalize
        cos = normalize(embeds, dim=-1) @ normalize(checker.concept_embeds, dim=-1).T
        # One threshold between the 4th and 5th image's best match: diffusers flags half of them.
        best = cos.max(dim=1).values.sort().values
        checker.concept_embeds_weights.fill_(float(best[3] + best[4]) / 2)
        checker.special_care_embeds_weights.fill_(2.0)
    _, diffusers_flags = checker(clip_input=clip_input, images=[np.zeros((4, 4, 3)) for _ in images])
    ours = [score > 0 for score in engine.safety.scores(images)]
    assert ours == list(diffusers_flags) and any(ours) and not all(ours)


def test_open_nsfw_scores_plain_pictures_low() -> None:
    checker = OpenNSFWSafetyChecker()
    scores = checker.scores([Image.new("RGB", (256, 256), colour) for colour in ("white", "navy", "forestgreen")])
    assert all(0 <= score < 0.2 for score in scores)
