"""Loading SD_MODEL, SD_UPSCALER and the safety classifier (`engine.loading`), through the real
`from_pretrained` path on the tiny model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from engine.loading import ModelLoadError, model_name, resolve_device, resolve_dtype
from engine.pipeline import Engine
from engine.safety import CheckpointSafetyChecker, OpenNSFWSafetyChecker


def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(settings(tiny_model))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_loads_on_cpu_with_the_offline_classifier(engine: Engine) -> None:
    assert engine.device == torch.device("cpu") and engine.dtype == torch.float32
    assert engine.model == "tiny" and engine.native_size == 64
    assert isinstance(engine.safety, OpenNSFWSafetyChecker)


def test_auto_device_and_dtype_follow_the_hardware() -> None:
    device = resolve_device("auto")
    assert device.type == (
        "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    )
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_checkpoint_safety_checker_is_used_when_shipped(flagging_model: Path) -> None:
    engine = Engine.load(settings(flagging_model))
    assert isinstance(engine.safety, CheckpointSafetyChecker)
    assert engine.pipe.safety_checker is None  # scored by us, not blacked out by the pipeline
    result = engine.generate(1, GenerateRequest(prompt="a fox", seed=5, num_images=2, num_inference_steps=3))
    assert result.all_flagged and all(image.nsfw_score > 0 for image in result.images)
    assert all(image.data == b"" for image in result.images)
    # Kept for a channel that shows flagged images, the image itself is intact (not blacked out).
    kept = engine.generate(1, GenerateRequest(prompt="a fox", seed=5, num_inference_steps=3, keep_flagged=True))
    assert kept.all_flagged and pixels(kept.images[0].data).std() > 1


def test_safety_checker_setting_is_obeyed(tiny_model: Path, flagging_model: Path) -> None:
    assert isinstance(Engine.load(settings(flagging_model, sd_safety_checker="opennsfw")).safety, OpenNSFWSafetyChecker)
    with pytest.raises(ModelLoadError, match="SD_SAFETY_CHECKER=checkpoint, but .* ships no safety checker"):
        Engine.load(settings(tiny_model, sd_safety_checker="checkpoint"))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no-such-thing", "is not an existing folder or checkpoint file, nor a model hub id"),
        ("someone/not-downloadable", "could not load SD_MODEL 'someone/not-downloadable'"),
    ],
)
def test_bad_model_settings_say_why(model: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        Engine.load(settings(model))


def test_bad_model_files_and_folders_say_why(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="is not a .safetensors or .ckpt checkpoint"):
        Engine.load(settings(tmp_path / "notes.txt"))
    with pytest.raises(ModelLoadError, match="has no model_index.json"):
        Engine.load(settings(tmp_path))
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"could not load SD_MODEL '.*broken.safetensors': not a safetensors file"):
        Engine.load(settings(tmp_path / "broken.safetensors"))
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"could not load SD_MODEL '.*broken\.ckpt': not a PyTorch checkpoint "
                                             r"this engine can read safely \(Unsupported operand"):
        Engine.load(settings(tmp_path / "broken.ckpt"))


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("stabilityai/stable-diffusion-xl-base-1.0", "stable-diffusion-xl-base-1.0"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5"),
        ("/models/sd-v1.5/", "sd-v1.5"),
        ("/models/dreamshaper_8.safetensors", "dreamshaper_8"),
        ("C:/models/v2-1_768.ckpt", "v2-1_768"),
    ],
)
def test_model_names_members_see(source: str, name: str) -> None:
    assert model_name(source) == name
