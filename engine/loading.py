"""Loading what the operator configured: SD_MODEL (a diffusers folder, a single checkpoint file, a
built-in name or a hub id), the pipeline each mode calls, SD_UPSCALER, the preview decoders and the
safety classifier."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    StableDiffusionLatentUpscalePipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from dreambot import families
from dreambot.request import Mode
from dreambot.settings import BUILTIN_MODELS
from engine import checkpoint
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
            return load_single_file(path, dtype)
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


def load_single_file(path: Path, dtype: torch.dtype) -> DiffusionPipeline:
    """A single .safetensors/.ckpt checkpoint in the original layout, loaded without the model hub:
    its family told from its weights, its configs the family's stock ones (engine/configs) with what
    the weights and the file's metadata say, a .ckpt unpickling tensors only."""
    try:
        found = checkpoint.inspect(path)
    except checkpoint.CheckpointError as error:
        raise ModelLoadError(f"could not load SD_MODEL {str(path)!r}: {error}") from None
    cls = StableDiffusionXLPipeline if families.base_of(found.family) == "sdxl" else StableDiffusionPipeline
    # A single file carries no safety checker; the SD 1.x configs name one, so say there is none.
    without = {} if cls is StableDiffusionXLPipeline else {"safety_checker": None, "feature_extractor": None,
                                                            "requires_safety_checker": False}
    with tempfile.TemporaryDirectory(prefix="dreambot-config-") as folder:
        try:
            checkpoint.config_folder(found, Path(folder))
        except checkpoint.CheckpointError as error:
            raise ModelLoadError(f"could not load SD_MODEL {str(path)!r}: {error}") from None
        pipe = cls.from_single_file(str(path), config=folder, local_files_only=True, dtype=dtype, **without)
    _check_complete(pipe, path)
    log.info("%s is %s", path.name, families.label(found.family, pipe.scheduler.config.get("prediction_type")))
    return pipe


def _check_complete(pipe: DiffusionPipeline, path: Path) -> None:
    # diffusers leaves a weight the file lacks on the meta device, to fail at the first picture.
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            missing = [key for key, weight in component.state_dict().items() if weight.device.type == "meta"]
            if missing:
                raise ModelLoadError(f"SD_MODEL file {str(path)!r} lacks {len(missing)} weight(s) of its {name} "
                                     f"(such as {missing[0]}); it is damaged or of an unusual layout")


def load_vae(source: str, pipe: DiffusionPipeline, dtype: torch.dtype) -> AutoencoderKL:
    """A model's own VAE in place of its checkpoint's: a diffusers folder (a VAE's, or a model's with
    a vae/ subfolder), a single .safetensors/.ckpt VAE in the original layout, loaded offline with
    the config of the VAE it replaces, or a VAE's model hub id (madebyollin/sdxl-vae-fp16-fix)."""
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            subfolder = "vae" if (path / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(str(path), subfolder=subfolder, dtype=dtype)
        if not path.exists() and _is_hub_id(source):
            return AutoencoderKL.from_pretrained(source, dtype=dtype)
        if not path.is_file() or path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise ModelLoadError(f"VAE {source!r} is not an existing folder nor a .safetensors or .ckpt file, "
                                 "nor a model hub id")
        # A .ckpt is read here, tensors only, and handed over as a state dict.
        weights = str(path) if path.suffix.lower() == ".safetensors" else checkpoint.read_ckpt(path)
        with tempfile.TemporaryDirectory(prefix="dreambot-config-") as folder:
            pipe.vae.save_config(Path(folder) / "vae")
            return AutoencoderKL.from_single_file(weights, config=folder, subfolder="vae", local_files_only=True,
                                                  dtype=dtype)
    except ModelLoadError:
        raise
    except checkpoint.CheckpointError as error:
        raise ModelLoadError(f"could not load the VAE {source!r}: {error}") from None
    except Exception as error:  # as for SD_MODEL: the operator needs the one line
        raise ModelLoadError(f"could not load the VAE {source!r}: {type(error).__name__}: {error}") from error


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


def load_preview_decoder(setting: str, source: str, dtype: torch.dtype, device: torch.device) -> AutoencoderTiny:
    """SD_PREVIEW_DECODER or SDXL_PREVIEW_DECODER (`setting`): a tiny decoder (TAESD), as a folder or
    a model hub id."""
    path = Path(source).expanduser()
    if not path.is_dir() and not _is_hub_id(source):
        raise ModelLoadError(f"{setting} {source!r} is not an existing folder nor a model hub id like org/name")
    try:
        decoder = AutoencoderTiny.from_pretrained(str(path) if path.is_dir() else source, dtype=dtype)
    except Exception as error:  # as for SD_MODEL: the operator needs the one line
        raise ModelLoadError(f"could not load {setting} {source!r}: {type(error).__name__}: {error}") from error
    return decoder.to(device).eval()


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
