"""Loading what the operator configured: SD_MODEL (a diffusers folder, a single checkpoint file, a
built-in name or a hub id), the pipeline each mode calls, SD_UPSCALER and the safety classifier."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    StableDiffusionLatentUpscalePipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from dreambot.request import Mode
from dreambot.settings import BUILTIN_MODELS
from engine.safety import CheckpointSafetyChecker, OpenNSFWSafetyChecker, SafetyChecker

log = logging.getLogger(__name__)

# Models that ship inside the package, loadable offline by name (SD_MODEL=shapes).
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


class ModelLoadError(RuntimeError):
    """SD_MODEL (or a setting that goes with it) cannot be served; the message says why."""


def resolve_device(setting: str) -> torch.device:
    if setting != "auto":
        return torch.device(setting)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting != "auto":
        return getattr(torch, setting)
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def model_name(source: str) -> str:
    """The short name shown to members and written into the PNG: a folder's, file's or repo's name."""
    path = Path(source.rstrip("/\\"))
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return path.stem
    return path.name or source


def load_pipeline(source: str, dtype: torch.dtype) -> DiffusionPipeline:
    """SD_MODEL as a diffusers folder, a single .safetensors/.ckpt file, a built-in name or a model hub id."""
    path = Path(source).expanduser()
    if source in BUILTIN_MODELS and not path.exists():
        path = BUILTIN_MODELS[source]
    try:
        if path.is_file():
            if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
                raise ModelLoadError(f"SD_MODEL file {source!r} is not a .safetensors or .ckpt checkpoint")
            cls = StableDiffusionXLPipeline if is_sdxl_checkpoint(path) else StableDiffusionPipeline
            return cls.from_single_file(str(path), dtype=dtype)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(f"SD_MODEL folder {source!r} has no model_index.json (not a diffusers model)")
            return AutoPipelineForText2Image.from_pretrained(str(path), dtype=dtype)
        if not _is_hub_id(source):
            raise ModelLoadError(
                f"SD_MODEL {source!r} is not an existing folder or checkpoint file, nor a model hub id like org/name"
            )
        return AutoPipelineForText2Image.from_pretrained(source, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as error:  # diffusers raises many kinds; the operator needs the one line
        raise ModelLoadError(f"could not load SD_MODEL {source!r}: {type(error).__name__}: {error}") from error


def is_sdxl_checkpoint(path: Path) -> bool:
    # SDXL checkpoints carry a second text encoder under conditioner.embedders.1.
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = f.keys()
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # an old pickled checkpoint: those predate SDXL
            log.info("could not read %s's keys safely; loading it as SD 1.x/2.x", path.name)
            return False
        keys = state.get("state_dict", state).keys()
    return any(key.startswith("conditioner.embedders.1.") for key in keys)


def _is_hub_id(source: str) -> bool:
    return source.count("/") == 1 and not source.startswith((".", "/", "~"))


# The diffusers pipeline each mode calls, built from the loaded one's components; None: the loaded
# text-to-image pipeline itself.
MODE_PIPELINES: dict[Mode, type | None] = {
    Mode.TXT2IMG: None,
    Mode.INTERPOLATE: None,
    Mode.IMG2IMG: AutoPipelineForImage2Image,
    Mode.UPSCALE: AutoPipelineForImage2Image,
    Mode.INPAINT: AutoPipelineForInpainting,
    Mode.OUTPAINT: AutoPipelineForInpainting,
}
assert set(MODE_PIPELINES) == set(Mode), "every mode needs a pipeline"


def mode_pipeline(pipe: DiffusionPipeline, mode: Mode) -> DiffusionPipeline:
    """The pipeline for a mode, sharing the loaded one's components (no second copy of the weights).
    Inpainting with a regular 4-channel UNet works through diffusers' latent blending; an
    inpainting checkpoint's 9-channel UNet is used as such."""
    cls = MODE_PIPELINES[mode]
    if cls is None:
        return pipe
    built = cls.from_pipe(pipe)
    built.set_progress_bar_config(disable=True)
    return built


def load_upscaler(source: str, dtype: torch.dtype, device: torch.device) -> StableDiffusionLatentUpscalePipeline:
    """SD_UPSCALER: a diffusers latent upscaler, as a folder or a model hub id."""
    path = Path(source).expanduser()
    if not path.is_dir() and not _is_hub_id(source):
        raise ModelLoadError(f"SD_UPSCALER {source!r} is not an existing folder nor a model hub id like org/name")
    try:
        upscaler = StableDiffusionLatentUpscalePipeline.from_pretrained(str(path) if path.is_dir() else source,
                                                                        dtype=dtype)
    except Exception as error:  # as for SD_MODEL: the operator needs the one line
        raise ModelLoadError(f"could not load SD_UPSCALER {source!r}: {type(error).__name__}: {error}") from error
    upscaler.to(device)
    upscaler.set_progress_bar_config(disable=True)
    return upscaler


def pick_safety_checker(pipe: DiffusionPipeline, setting: str, source: str) -> SafetyChecker:
    """SD_SAFETY_CHECKER: the checkpoint's own checker ("checkpoint", or "auto" when it ships one)
    or open_nsfw. Either way the pipeline's own pass is switched off: the engine scores images itself."""
    own = getattr(pipe, "safety_checker", None)
    features = getattr(pipe, "feature_extractor", None)
    if own is not None:
        # We score images ourselves; the pipeline's own pass would only black them out.
        pipe.safety_checker = None
    if setting == "opennsfw" or (setting == "auto" and own is None):
        return OpenNSFWSafetyChecker()
    if own is None or features is None:
        raise ModelLoadError(f"SD_SAFETY_CHECKER=checkpoint, but {source!r} ships no safety checker")
    return CheckpointSafetyChecker(own, features)
