"""Load a Stable Diffusion pipeline once and turn requests into checked PNGs."""

from __future__ import annotations

import io
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoPipelineForText2Image,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dreambot.protocol import (
    MAX_SEED,
    SAMPLERS,
    GenerateRequest,
    GenerateResult,
    ImageResult,
    InvalidRequest,
    infotext,
)
from dreambot.settings import EngineSettings
from engine.safety import CheckpointSafetyChecker, OpenNSFWSafetyChecker, SafetyChecker

log = logging.getLogger(__name__)

# Sampler name -> (scheduler class, config overrides); names as AUTOMATIC1111 shows them.
SCHEDULERS: dict[str, tuple[type, dict]] = {
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Euler": (EulerDiscreteScheduler, {}),
    "DDIM": (DDIMScheduler, {"clip_sample": False}),  # as AUTOMATIC1111; the default would clip latents
    "UniPC": (UniPCMultistepScheduler, {}),
    "LMS": (LMSDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
}
assert tuple(SCHEDULERS) == SAMPLERS, "engine and protocol must offer the same samplers"

StepCallback = Callable[[int, int], None]


# Models that ship inside the package, loadable offline by name (SD_MODEL=shapes).
BUILTIN_MODELS = {"shapes": Path(__file__).resolve().parent / "models" / "shapes"}


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
    if path.suffix.lower() in (".safetensors", ".ckpt"):
        return path.stem
    return path.name or source


def load_pipeline(source: str, dtype: torch.dtype) -> DiffusionPipeline:
    """SD_MODEL as a diffusers folder, a single .safetensors/.ckpt file, a built-in name or a model hub id."""
    path = Path(source).expanduser()
    if source in BUILTIN_MODELS and not path.exists():
        path = BUILTIN_MODELS[source]
    try:
        if path.is_file():
            if path.suffix.lower() not in (".safetensors", ".ckpt"):
                raise ModelLoadError(f"SD_MODEL file {source!r} is not a .safetensors or .ckpt checkpoint")
            cls = StableDiffusionXLPipeline if _is_sdxl_checkpoint(path) else StableDiffusionPipeline
            return cls.from_single_file(str(path), dtype=dtype)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelLoadError(f"SD_MODEL folder {source!r} has no model_index.json (not a diffusers model)")
            return AutoPipelineForText2Image.from_pretrained(str(path), dtype=dtype)
        if source.count("/") != 1 or source.startswith((".", "/", "~")):
            raise ModelLoadError(
                f"SD_MODEL {source!r} is not an existing folder or checkpoint file, nor a model hub id like org/name"
            )
        return AutoPipelineForText2Image.from_pretrained(source, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as error:  # diffusers raises many kinds; the operator needs the one line
        raise ModelLoadError(f"could not load SD_MODEL {source!r}: {type(error).__name__}: {error}") from error


def _is_sdxl_checkpoint(path: Path) -> bool:
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


@dataclass
class Engine:
    pipe: DiffusionPipeline
    safety: SafetyChecker
    device: torch.device
    dtype: torch.dtype
    model: str
    # The checkpoint's own scheduler config: every job's sampler is built from it, so one job's
    # sampler options (Karras sigmas, say) never leak into the next.
    scheduler_config: dict

    @classmethod
    def load(cls, settings: EngineSettings) -> Engine:
        device = resolve_device(settings.sd_device)
        dtype = resolve_dtype(settings.sd_dtype, device)
        pipe = load_pipeline(settings.sd_model, dtype)
        pipe.to(device)
        safety = _pick_safety_checker(pipe, settings.sd_safety_checker, settings.sd_model)
        pipe.set_progress_bar_config(disable=True)
        log.info("loaded %s on %s (%s), safety checker: %s", settings.sd_model, device, dtype, safety.name)
        return cls(pipe=pipe, safety=safety, device=device, dtype=dtype, model=model_name(settings.sd_model),
                   scheduler_config=dict(pipe.scheduler.config))

    @property
    def native_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    def generate(self, job_id: int, request: GenerateRequest, on_step: StepCallback | None = None) -> GenerateResult:
        started = time.perf_counter()
        seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
        width = request.width or self.native_size
        height = request.height or self.native_size
        seeds = [(seed + i) % (MAX_SEED + 1) for i in range(request.num_images)]
        # MPS generators are not reproducible; diffusers recommends CPU generators there.
        generator_device = "cpu" if self.device.type == "mps" else self.device
        generators = [torch.Generator(generator_device).manual_seed(s) for s in seeds]

        scheduler_cls, overrides = SCHEDULERS[request.scheduler]
        scheduler = scheduler_cls.from_config(self.scheduler_config, **overrides)
        scheduler.set_timesteps(request.num_inference_steps)
        timesteps = scheduler.timesteps.tolist()
        if scheduler_cls is DPMSolverMultistepScheduler and timesteps.count(timesteps[0]) > 1:
            # Karras sigmas on a zero-terminal-SNR schedule can repeat the first timestep, and then
            # this solver starts one step late; diffusers would fail at the end with an IndexError.
            raise InvalidRequest(
                f"The {request.scheduler} sampler cannot run {request.num_inference_steps} steps on this model "
                f"(its noise schedule repeats steps); choose another sampler."
            )
        self.pipe.scheduler = scheduler

        def step_end(pipe, step, timestep, tensors):
            if on_step is not None:
                on_step(step + 1, pipe.num_timesteps)
            return {}

        images = self.pipe(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or None,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            width=width,
            height=height,
            num_images_per_prompt=request.num_images,
            generator=generators,
            callback_on_step_end=step_end,
            output_type="pil",
        ).images
        generated = time.perf_counter()
        verdicts = self.safety.check(images)
        checked = time.perf_counter()

        results = tuple(
            ImageResult(
                png=_png(image, infotext(request, seed=s, width=width, height=height, model=self.model)),
                seed=s,
                nsfw_content_detected=verdict.flagged,
                nsfw_score=verdict.score,
            )
            for image, s, verdict in zip(images, seeds, verdicts, strict=True)
        )
        return GenerateResult(
            job_id=job_id,
            images=results,
            seed=seed,
            width=width,
            height=height,
            model=self.model,
            timings={
                "generate": round(generated - started, 3),
                "safety": round(checked - generated, 3),
                "total": round(time.perf_counter() - started, 3),
            },
        )


def _pick_safety_checker(pipe: DiffusionPipeline, setting: str, source: str) -> SafetyChecker:
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


def _png(image: Image.Image, parameters: str) -> bytes:
    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
