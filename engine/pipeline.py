"""Load a Stable Diffusion pipeline once and turn requests into checked PNGs."""

from __future__ import annotations

import gc
import io
import logging
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionLatentUpscalePipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.infotext import infotext

from dreambot.request import MAX_SEED, SAFETY_SCALES, SAMPLERS, GenerateRequest, InvalidRequest

from dreambot.wire import EngineError, GenerateResult, ImageResult, Job
from dreambot.settings import EngineSettings
from engine import imaging
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

# (step, total): the CLI's progress bar.
StepCallback = Callable[[int, int], None]
# generate_batch's (job_id, step, total, preview): `preview()` renders the job's first picture so
# far as a small JPEG (None where the model has no cheap preview); it may raise JobCancelled.
JobStepCallback = Callable[[int, int, int, Callable[[], bytes | None]], None]
# Inside one pipeline call: (step, total, preview), `preview(i)` renders image i of the call's batch.
_Progress = Callable[[int, int, Callable[[int], bytes | None]], None]

OOM_MESSAGE = "The GPU ran out of memory for this job: try a smaller size or fewer images."
_SDXL_PIPELINES = (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline)


class JobCancelled(Exception):
    """Raised by a step callback to stop its job between two denoising steps: diffusers lets it
    through, so the call ends at once with no VAE decode, in every mode."""


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
    # SD_UPSCALER's pipeline, when the operator configured one, and its name.
    upscaler: StableDiffusionLatentUpscalePipeline | None = None
    upscaler_name: str = ""
    _pipes: dict[str, DiffusionPipeline] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, settings: EngineSettings) -> Engine:
        device = resolve_device(settings.sd_device)
        dtype = resolve_dtype(settings.sd_dtype, device)
        pipe = load_pipeline(settings.sd_model, dtype)
        pipe.to(device)
        safety = _pick_safety_checker(pipe, settings.sd_safety_checker, settings.sd_model)
        pipe.set_progress_bar_config(disable=True)
        upscaler = _load_upscaler(settings.sd_upscaler, dtype, device) if settings.sd_upscaler else None
        log.info("loaded %s on %s (%s), safety checker: %s%s", settings.sd_model, device, dtype, safety.name,
                 f", upscaler: {settings.sd_upscaler}" if upscaler else "")
        return cls(pipe=pipe, safety=safety, device=device, dtype=dtype, model=model_name(settings.sd_model),
                   scheduler_config=dict(pipe.scheduler.config), upscaler=upscaler,
                   upscaler_name=model_name(settings.sd_upscaler) if upscaler else "")

    @property
    def native_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    def pipeline(self, mode: str) -> DiffusionPipeline:
        """The pipeline for a mode, built once from the loaded one's components (no second copy of
        the weights). Inpainting with a regular 4-channel UNet works through diffusers' latent
        blending; an inpainting checkpoint's 9-channel UNet is used as such."""
        if mode not in self._pipes:
            if mode in ("txt2img", "interpolate"):
                self._pipes[mode] = self.pipe
            elif mode in ("img2img", "upscale"):
                self._pipes[mode] = AutoPipelineForImage2Image.from_pipe(self.pipe)
            else:
                self._pipes[mode] = AutoPipelineForInpainting.from_pipe(self.pipe)
            self._pipes[mode].set_progress_bar_config(disable=True)
        return self._pipes[mode]

    def _scheduler(self, request: GenerateRequest):
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
        return scheduler

    def generate(self, job_id: int, request: GenerateRequest, on_step: StepCallback | None = None) -> GenerateResult:
        """One job alone; raises InvalidRequest for a request this engine cannot serve."""
        progress = None if on_step is None else lambda step, total, preview: on_step(step, total)
        return self._generate([Job(job_id, request)], progress)[0]

    def generate_batch(self, jobs: list[Job],
                       on_step: JobStepCallback | None = None) -> list[GenerateResult | EngineError]:
        """Answer each job as if it ran alone: its GenerateResult or an EngineError (invalid, cancelled,
        oom, internal), in the order given. Jobs with equal `batch_key`s share one pipeline call;
        `on_step` raising JobCancelled stops that job, and the call itself once no job in it is left."""
        groups: dict[object, list[int]] = {}
        for index, job in enumerate(jobs):
            key = job.request.batch_key()
            groups.setdefault(("alone", index) if key is None else key, []).append(index)
        answers: dict[int, GenerateResult | EngineError] = {}
        for indexes in groups.values():
            runnable = []
            for index in indexes:
                try:
                    self.nsfw_threshold(jobs[index].request)  # one member's bad threshold fails only that job
                except InvalidRequest as error:
                    answers[index] = EngineError(job_id=jobs[index].job_id, message=str(error), kind="invalid")
                else:
                    runnable.append(index)
            if runnable:
                answers.update(zip(runnable, self._answer([jobs[i] for i in runnable], on_step), strict=True))
        return [answers[index] for index in range(len(jobs))]

    def _answer(self, jobs: list[Job], on_step: JobStepCallback | None) -> list[GenerateResult | EngineError]:
        """Run compatible jobs as one call and turn what can go wrong into each job's EngineError. When
        several jobs run out of memory together, each runs again alone: only one too big alone fails."""
        cancelled: set[int] = set()  # positions in `jobs`
        firsts = [sum(job.request.num_images for job in jobs[:k]) for k in range(len(jobs))]

        def progress(step: int, total: int, preview: Callable[[int], bytes | None]) -> None:
            for k, job in enumerate(jobs):
                if k in cancelled or on_step is None:
                    continue
                try:
                    on_step(job.job_id, step, total, lambda first=firsts[k]: preview(first))
                except JobCancelled:
                    cancelled.add(k)  # the others go on; its pictures are dropped at the end
            if len(cancelled) == len(jobs):
                raise JobCancelled

        def failed(message: str, kind: str) -> list[EngineError]:
            return [EngineError(job_id=job.job_id, message=message, kind=kind) for job in jobs]

        out_of_memory = False
        try:
            results = self._generate(jobs, progress, wanted=lambda k: k not in cancelled)
        except JobCancelled:
            return failed("cancelled", "cancelled")
        except InvalidRequest as error:
            return failed(str(error), "invalid")
        except torch.OutOfMemoryError:
            out_of_memory = True
        except Exception as error:
            log.error("job(s) %s failed:\n%s", ", ".join(str(job.job_id) for job in jobs), traceback.format_exc())
            return failed(f"{type(error).__name__}: {error}", "internal")
        if out_of_memory:
            # Only out here: inside the except block the traceback still holds the failed call's
            # frames, and with them its activations.
            free_memory(self.device)
            log.warning("job(s) %s ran out of memory%s", ", ".join(str(job.job_id) for job in jobs),
                        "; running each alone" if len(jobs) > 1 else "")
            if len(jobs) == 1:
                return failed(OOM_MESSAGE, "oom")
            # In order, each with its own progress and cancel; a job cancelled meanwhile stays so.
            return [EngineError(job_id=job.job_id, message="cancelled", kind="cancelled") if k in cancelled
                    else self._answer([job], on_step)[0] for k, job in enumerate(jobs)]
        return [EngineError(job_id=job.job_id, message="cancelled", kind="cancelled") if result is None else result
                for job, result in zip(jobs, results, strict=True)]

    def _generate(self, jobs: list[Job], progress: _Progress | None,
                  wanted: Callable[[int], bool] = lambda k: True) -> list[GenerateResult | None]:
        """One pipeline call for one job of any mode, or for text-to-image jobs of one `batch_key`;
        None for a job no longer `wanted` (its pictures are neither checked nor encoded)."""
        started = time.perf_counter()
        requests = [job.request for job in jobs]
        seeds = [_seeds(request) for request in requests]
        scheduler = self._scheduler(requests[0])  # refuses a sampler that cannot run, before any work
        thresholds = [self.nsfw_threshold(request) for request in requests]  # and a threshold out of bounds
        if requests[0].mode == "interpolate":
            width = requests[0].width or self.native_size
            height = requests[0].height or self.native_size
            pictures = [self._interpolate(requests[0], seeds[0][0], width, height, progress)]
            brought: list[list[Image.Image]] = [[]]
        else:
            pictures, brought, width, height = self._images(requests, seeds, scheduler, progress)
        generated = time.perf_counter()
        return [
            self._result(job, job_seeds, threshold, images, inputs, width, height, started, generated)
            if wanted(k) else None
            for k, (job, job_seeds, threshold, images, inputs)
            in enumerate(zip(jobs, seeds, thresholds, pictures, brought, strict=True))
        ]

    def _result(self, job: Job, seeds: list[int], threshold: float, images: list[Image.Image],
                brought: list[Image.Image], width: int, height: int, started: float,
                generated: float) -> GenerateResult:
        """A job's checked, encoded pictures; a shared call's time counts as each job's own.

        A picture is flagged when it scores above the threshold, and also when what the job started
        from does (`brought`: see `_images`) or came from a flagged picture (`source_flagged`): what
        an image mode keeps of a flagged picture stays flagged, however large the canvas around it."""
        checking = time.perf_counter()
        request, seed = job.request, seeds[0]
        results = []
        source_score = None
        if request.mode == "interpolate":
            # One animation: flagged as a whole if any frame is.
            score = max(self.safety.scores(images))
            parameters = infotext(request, seed=seed, width=width, height=height, model=self.model)
            flagged = score > threshold or request.source_flagged
            data = b"" if flagged and not request.keep_flagged else imaging.gif(images, comment=parameters)
            results.append(ImageResult(data=data, seed=seed, format="gif", nsfw_content_detected=flagged,
                                       nsfw_score=score))
        else:
            # One classifier call for the job: its pictures, then what it brought in.
            scores = self.safety.scores(images + brought)
            scores, source_scores = scores[:len(images)], scores[len(images):]
            source_score = max(source_scores) if source_scores else None
            from_flagged = request.source_flagged or (source_score is not None and source_score > threshold)
            for image, s, score in zip(images, seeds, scores, strict=True):
                upscaled_by = self.upscaler_name if request.mode == "upscale" and self.upscaler is not None else ""
                parameters = infotext(request, seed=s, width=width, height=height, model=self.model,
                                      upscaler=upscaled_by)
                flagged = score > threshold or from_flagged
                # A flagged image the channel may not show is never encoded, let alone sent.
                data = b"" if flagged and not request.keep_flagged else _png(image, parameters)
                results.append(ImageResult(data=data, seed=s, nsfw_content_detected=flagged, nsfw_score=score))
        checked = time.perf_counter()
        return GenerateResult(
            job_id=job.job_id,
            images=tuple(results),
            seed=seed,
            width=width,
            height=height,
            model=self.model,
            source_score=source_score,
            timings={
                "generate": round(generated - started, 3),
                "safety": round(checked - checking, 3),
                "total": round(time.perf_counter() - started, 3),
            },
        )

    def nsfw_threshold(self, request: GenerateRequest) -> float:
        """The request's safety threshold, within the bounds of this engine's classifier."""
        return SAFETY_SCALES[self.safety.name].check(request.nsfw_threshold)

    def _generators(self, seeds: list[int]) -> list[torch.Generator]:
        # MPS generators are not reproducible; diffusers recommends CPU generators there.
        device = "cpu" if self.device.type == "mps" else self.device
        return [torch.Generator(device).manual_seed(s) for s in seeds]

    @property
    def inpainting_only(self) -> bool:
        """An inpainting checkpoint: its UNet also takes the mask and the masked picture (9 channels)."""
        return self.pipe.unet.config.in_channels != 4

    def _images(self, requests: list[GenerateRequest], seeds: list[list[int]], scheduler, progress: _Progress | None
                ) -> tuple[list[list[Image.Image]], list[list[Image.Image]], int, int]:
        """Run one pipeline call for the requests (several only for text to image); return each
        request's finished pictures, what it brought in to be scored with them, and their size.

        What a job brings in: the input picture, whole and in parts (`imaging.parts`: its content
        without padding, and windows of it), so that a flagged region cannot hide in a larger
        picture; and what the result keeps of it pixel-exact, on its own: for outpainting that is
        the input itself; for inpainting, the kept region (`imaging.kept_region`), so that a small
        region kept in a large repainted canvas counts."""
        request = requests[0]
        if request.mode == "upscale" and self.upscaler is not None:
            return self._upscale(request, seeds[0], progress)
        if self.inpainting_only and request.mode not in ("inpaint", "outpaint"):
            raise InvalidRequest(f"This server's model ({self.model}) is an inpainting model: it can only inpaint and "
                                 "outpaint. Use /inpaint or /outpaint.")
        assert len(requests) == 1 or request.mode == "txt2img", "only text to image jobs share a call"
        pipe = self.pipeline(request.mode)
        pipe.scheduler = scheduler
        options: dict = {}
        finish = None
        brought: list[Image.Image] = []
        if request.mode == "txt2img":
            width, height = request.width or self.native_size, request.height or self.native_size
            options = {"width": width, "height": height}
        else:
            source = imaging.open_rgb(request.image)
            brought += [source, *imaging.parts(source)]
            if request.mode == "upscale":
                source = source.resize((source.width * 2, source.height * 2), Image.Resampling.LANCZOS)
            if request.mode == "inpaint":
                mask = paste = imaging.open_mask(request.mask, source.size)
                kept = imaging.kept_region(source, mask)
                if kept is not None:
                    brought.append(kept)
            elif request.mode == "outpaint":
                source, mask, paste = imaging.outpaint_canvas(source, request.direction, request.amount)
            width, height = source.size
            options = {"image": source, "strength": request.denoising_strength}
            if request.mode in ("inpaint", "outpaint"):
                options.update(mask_image=mask, width=width, height=height)
                # The pipeline repaints through the VAE, which blurs what it keeps: paste the kept
                # pixels back exactly, and blend the repainted ones into them over a few pixels.
                original, blend = source, imaging.feathered(paste)

                def finish(image: Image.Image) -> Image.Image:
                    return Image.composite(image, original, blend)

        if len(requests) == 1:
            prompts = {"prompt": request.prompt, "negative_prompt": request.negative_prompt or None,
                       "num_images_per_prompt": request.num_images}
        else:
            # One prompt per image: diffusers takes a single images-per-prompt count for all prompts.
            # An empty negative prompt encodes exactly as diffusers' default for None.
            prompts = {"prompt": [r.prompt for r in requests for _ in range(r.num_images)],
                       "negative_prompt": [r.negative_prompt for r in requests for _ in range(r.num_images)]
                       if any(r.negative_prompt for r in requests) else None}
        family = _latent_family(pipe)

        def step_end(pipe, step, timestep, tensors):
            if progress is not None:
                latents = tensors["latents"]
                progress(step + 1, pipe.num_timesteps, lambda i: _preview(latents[i], family))
            return {}

        # One generator per image, seeded as its job alone would seed it: the starting noise (and
        # any noise a sampler adds) of image i comes from its own generator, whatever the batch.
        images = pipe(
            **prompts,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            generator=self._generators([seed for job_seeds in seeds for seed in job_seeds]),
            callback_on_step_end=step_end,
            output_type="pil",
            **options,
        ).images
        if finish is not None:
            images = [finish(image) for image in images]
        counts = [len(job_seeds) for job_seeds in seeds]
        pictures = [images[sum(counts[:k]):sum(counts[:k + 1])] for k in range(len(counts))]
        return pictures, [brought] if len(requests) == 1 else [[] for _ in requests], width, height

    def _upscale(self, request: GenerateRequest, seeds: list[int], progress: _Progress | None):
        """Twice the size with the operator's dedicated upscaler (a latent upscaler, which works
        best unguided, as its authors run it)."""
        source = imaging.open_rgb(request.image)
        total = request.num_inference_steps
        family = _latent_family(self.upscaler)

        def step(index: int, timestep, latents) -> None:
            if progress is not None:
                progress(index + 1, total, lambda i: _preview(latents[i], family))

        images = self.upscaler(
            prompt=[request.prompt] * len(seeds),
            negative_prompt=[request.negative_prompt] * len(seeds) if request.negative_prompt else None,
            image=[source] * len(seeds),
            num_inference_steps=request.num_inference_steps,
            guidance_scale=0.0,
            generator=self._generators(seeds),
            callback=step,
            output_type="pil",
        ).images
        return [images], [[source, *imaging.parts(source)]], images[0].width, images[0].height

    @torch.no_grad()
    def _interpolate(self, request: GenerateRequest, seed: int, width: int, height: int,
                     progress: _Progress | None) -> list[Image.Image]:
        """Frames from (prompt, seed) to (end prompt, end seed): the text embeddings move in a
        straight line, the starting noise along a great circle (slerp), so every frame's noise
        stays as large as real noise. Frame 0 is exactly the txt2img picture of (prompt, seed)."""
        pipe = self.pipe
        if self.inpainting_only:
            raise InvalidRequest(f"This server's model ({self.model}) is an inpainting model: it cannot animate.")
        if isinstance(pipe, StableDiffusionXLPipeline):
            raise InvalidRequest("Interpolation is not available for SDXL models yet.")
        guided = request.guidance_scale > 1
        start, negative = pipe.encode_prompt(request.prompt, self.device, 1, guided, request.negative_prompt or None)
        end, _ = pipe.encode_prompt(request.end_prompt or request.prompt, self.device, 1, guided,
                                    request.negative_prompt or None)
        shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
        end_seed = seed if request.end_seed is None else request.end_seed
        noise_start, noise_end = (
            randn_tensor(shape, generator=self._generators([s]), device=self.device, dtype=start.dtype)
            for s in (seed, end_seed)
        )
        family = _latent_family(pipe)
        frames = []
        for frame in range(request.frames):
            t = frame / (request.frames - 1)
            pipe.scheduler = self._scheduler(request)

            def step_end(pipe, step, timestep, tensors, frame=frame):
                if progress is not None:  # some samplers take more steps than asked (Heun: 2n - 1)
                    latents = tensors["latents"]
                    progress(frame * pipe.num_timesteps + step + 1, request.frames * pipe.num_timesteps,
                             lambda i: _preview(latents[i], family))
                return {}

            frames.append(pipe(
                prompt_embeds=torch.lerp(start, end, t),
                negative_prompt_embeds=negative if guided else None,
                latents=imaging.slerp(noise_start, noise_end, t),
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                width=width,
                height=height,
                callback_on_step_end=step_end,
                output_type="pil",
            ).images[0])
        return frames


def _seeds(request: GenerateRequest) -> list[int]:
    """Image i of a job uses seed + i, so each can be made again alone."""
    seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
    return [(seed + i) % (MAX_SEED + 1) for i in range(request.num_images)]


def _latent_family(pipe: DiffusionPipeline) -> str | None:
    """Which linear latent-to-RGB approximation fits this pipeline's latents; None: none does
    (not the 4 latent channels of SD 1.x/2.x and SDXL)."""
    vae = getattr(pipe, "vae", None)
    if vae is None or vae.config.latent_channels != 4:
        return None
    return "sdxl" if isinstance(pipe, _SDXL_PIPELINES) else "sd"


def _preview(latents: torch.Tensor, family: str | None) -> bytes | None:
    return None if family is None else imaging.latent_preview(latents, family)


def free_memory(device: torch.device) -> None:
    """Give back what a failed job held, so the next one starts from a clean device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _load_upscaler(source: str, dtype: torch.dtype, device: torch.device) -> StableDiffusionLatentUpscalePipeline:
    path = Path(source).expanduser()
    if not path.is_dir() and (source.count("/") != 1 or source.startswith((".", "/", "~"))):
        raise ModelLoadError(f"SD_UPSCALER {source!r} is not an existing folder nor a model hub id like org/name")
    try:
        upscaler = StableDiffusionLatentUpscalePipeline.from_pretrained(str(path) if path.is_dir() else source,
                                                                        dtype=dtype)
    except Exception as error:  # as for SD_MODEL: the operator needs the one line
        raise ModelLoadError(f"could not load SD_UPSCALER {source!r}: {type(error).__name__}: {error}") from error
    upscaler.to(device)
    upscaler.set_progress_bar_config(disable=True)
    return upscaler


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
