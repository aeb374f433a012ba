"""The samplers members choose from (`engine.samplers`), on the tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from dreambot.request import SAMPLERS, GenerateRequest
from dreambot.settings import EngineSettings
from engine.pipeline import Engine


def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(settings(tiny_model))


EXPECTED_SCHEDULERS = {
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", True),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", False),
    "Euler a": ("EulerAncestralDiscreteScheduler", False),
    "Euler": ("EulerDiscreteScheduler", False),
    "DDIM": ("DDIMScheduler", False),
    "UniPC": ("UniPCMultistepScheduler", False),
    "LMS": ("LMSDiscreteScheduler", False),
    "Heun": ("HeunDiscreteScheduler", False),
    "LCM": ("LCMScheduler", False),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_and_reports_its_steps(engine: Engine, sampler: str) -> None:
    steps: list[tuple[int, int]] = []
    result = engine.generate(1, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=4, scheduler=sampler),
                             lambda i, n, preview: steps.append((i, n)))
    assert [i for i, _ in steps] == list(range(1, len(steps) + 1)) and steps[-1][0] == steps[-1][1]
    name, karras = EXPECTED_SCHEDULERS[sampler]
    assert type(engine.pipe.scheduler).__name__ == name
    assert bool(engine.pipe.scheduler.config.get("use_karras_sigmas", False)) is karras
    assert Image.open(io.BytesIO(result.images[0].data)).size == (64, 64)


def test_a_sampler_does_not_depend_on_the_previous_job(engine: Engine) -> None:
    def make(name: str) -> bytes:
        request = GenerateRequest(prompt="a fox", seed=2, num_inference_steps=6, scheduler=name)
        return engine.generate(1, request).images[0].data

    plain = make("DPM++ 2M")
    karras = make("DPM++ 2M Karras")
    assert karras != plain
    for name in SAMPLERS:
        first = make(name)
        make("DPM++ 2M Karras")
        assert make(name) == first, name
    assert make("DPM++ 2M") == plain
