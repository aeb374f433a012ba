"""The engine: a Stable Diffusion pipeline loaded once, jobs run through their mode (`engine.modes`),
alone or several in one call, and what they make checked for safety and encoded."""

from __future__ import annotations

import functools
import gc
import logging
import secrets
import time
import traceback
from collections.abc import Container, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, StableDiffusionLatentUpscalePipeline
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from dreambot.adapters import Catalogue, Installed
from dreambot.models import Model
from dreambot.request import MAX_SEED, SAFETY_SCALES, GenerateRequest, InvalidRequest, Mode
from dreambot.settings import EngineSettings
from dreambot.wire import GenerateResult, Job
from engine import loading, prompts, samplers
from engine.embeddings import Embeddings, text_encoders
from engine.embeddings import install as install_embeddings
from engine.finishing import Unchecked
from engine.loras import Loras
from engine.modes import MODES
from engine.progress import JobCancelled, Preview, Progress, quiet
from engine.safety import SafetyChecker
from engine.speed import Speed, speed_up, warm_up

log = logging.getLogger(__name__)

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
    embeddings: Embeddings = field(default_factory=Embeddings)
    loras: Loras = field(default_factory=lambda: Loras(Catalogue()))
    # A1111's CLIP skip: which of the text encoder's layers the prompt is read from (1: the last).
    clip_skip: int = 1
    # SD_ATTENTION, SD_CHANNELS_LAST, SD_COMPILE as applied, VAE tiling and slicing, preview decoders.
    speed: Speed = field(default_factory=Speed)
    _pipes: dict[Mode, DiffusionPipeline] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, settings: EngineSettings, model: Model | None = None,
             upscaler: StableDiffusionLatentUpscalePipeline | None = None, installed: Installed | None = None
             ) -> Engine:
        """The engine of one model of the catalogue (SD_MODEL's unless told), with its own defaults
        (clip skip, VAE), its own embeddings and the installed LoRAs. `upscaler`: SD_UPSCALER's
        pipeline, and `installed`: the LoRAs and embeddings, when the caller has them already (every
        model of an engine shares one of each)."""
        quiet_library_progress_bars()
        model = model or Model(name=loading.model_name(settings.sd_model), source=settings.sd_model)
        device = loading.resolve_device(settings.sd_device)
        dtype = loading.resolve_dtype(settings.sd_dtype, device)
        pipe = loading.load_pipeline(model.source, dtype)
        if model.defaults.vae:
            pipe.vae = loading.load_vae(model.defaults.vae, pipe, dtype)
        clip_skip = model.defaults.clip_skip or 1
        layers = min((encoder.config.num_hidden_layers for _, _, encoder in text_encoders(pipe)), default=None)
        if layers is not None and clip_skip > layers:  # found now, not at the first member's job
            raise loading.ModelLoadError(f"models.toml: clip_skip = {clip_skip} for {model.name}, whose text encoder "
                                         f"has {layers} layers")
        pipe.to(device)
        safety = loading.pick_safety_checker(pipe, settings.sd_safety_checker, model.name)
        pipe.set_progress_bar_config(disable=True)
        speed = speed_up(pipe, settings, device, dtype)
        if upscaler is None and settings.sd_upscaler:
            upscaler = loading.load_upscaler(settings.sd_upscaler, dtype, device)
        embeddings = install_embeddings(pipe, [*settings.bundled("embeddings", model.source),
                                               Path(settings.embeddings_dir)])
        installed = installed or settings.installed()
        catalogue = installed.current()
        log.info("loaded %s on %s (%s), safety checker: %s%s; %d LoRA(s) installed", model.name, device, dtype,
                 safety.name, f", upscaler: {settings.sd_upscaler}" if upscaler else "", len(catalogue.loras))
        engine = cls(pipe=pipe, safety=safety, device=device, dtype=dtype, model=model.name,
                     scheduler_config=dict(pipe.scheduler.config), upscaler=upscaler,
                     upscaler_name=loading.model_name(settings.sd_upscaler) if upscaler else "",
                     embeddings=embeddings, loras=Loras(catalogue, rescan=installed.current), clip_skip=clip_skip,
                     speed=speed)
        if speed.compiled:
            warm_up(engine, model)
        return engine

    @property
    def native_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    @property
    def inpainting_only(self) -> bool:
        """An inpainting checkpoint: its UNet also takes the mask and the masked picture (9 channels)."""
        return self.pipe.unet.config.in_channels != 4

    @functools.cached_property
    def sampler_config(self) -> str:
        """`scheduler_config` as `engine.samplers` takes it (`samplers.config_text`)."""
        return samplers.config_text(self.scheduler_config)

    def pipeline(self, mode: Mode) -> DiffusionPipeline:
        """The pipeline a mode calls (`loading.mode_pipeline`), built once."""
        if mode not in self._pipes:
            self._pipes[mode] = loading.mode_pipeline(self.pipe, Mode(mode))
        return self._pipes[mode]

    def nsfw_threshold(self, request: GenerateRequest) -> float:
        """The request's safety threshold, within the bounds of this engine's classifier; its default
        when the threshold was set on another classifier's scale (models differ in their classifier:
        a checkpoint's own, or open_nsfw)."""
        scale = SAFETY_SCALES[self.safety.name]
        if request.nsfw_scale not in (None, self.safety.name):
            return scale.default
        return scale.check(request.nsfw_threshold)

    def generate(self, job_id: int, request: GenerateRequest, progress: Progress = quiet) -> GenerateResult:
        """One job alone (the CLI's, a benchmark's); raises what stops it, InvalidRequest for a request
        this engine cannot serve."""
        [made] = self._generate([Job(job_id, request)], progress)
        assert made is not None
        return made.finish()

    def generate_batch(self, jobs: list[Job], progress: Mapping[int, Progress] | None = None
                       ) -> list[GenerateResult | Exception]:
        """`make_batch`, each job's pictures then checked and encoded in turn (`Unchecked.finish`)."""
        return [finished(made) for made in self.make_batch(jobs, progress)]

    def make_batch(self, jobs: list[Job], progress: Mapping[int, Progress] | None = None
                   ) -> list[Unchecked | Exception]:
        """Run each job as if it ran alone, in the order given, up to its pictures: answers each with
        its pictures `Unchecked` (not yet scored or encoded, `engine.finishing`), or the exception that
        stopped it (the server tells the bot, `engine.server.protocol_error`). Jobs with equal
        `batch_key`s share one pipeline call; a job's `progress` (by job id) raising JobCancelled
        stops that job, and the call itself once no job in it is left."""
        groups: dict[object, list[int]] = {}
        for index, job in enumerate(jobs):
            key = job.request.batch_key()
            if key is not None and prompts.weighted(self.pipe):
                # Prompts of another length would pad this job's: each picture must be what it is alone.
                # (Unguided, its negative prompt is not encoded, nor counted: `prompts.guided`.)
                guided = prompts.guided(self.pipe, job.request.guidance_scale)
                texts = (job.request.prompt, job.request.negative_prompt) if guided else (job.request.prompt,)
                key = (key, prompts.count(self.pipe, *texts, embeddings=self.embeddings))
            groups.setdefault(("alone", index) if key is None else key, []).append(index)
        answers: dict[int, Unchecked | Exception] = {}
        for indexes in groups.values():
            runnable = []
            for index in indexes:
                try:
                    self.nsfw_threshold(jobs[index].request)  # one member's bad threshold fails only that job
                except InvalidRequest as error:
                    answers[index] = error
                else:
                    runnable.append(index)
            if runnable:
                answers.update(zip(runnable, self._together([jobs[i] for i in runnable], progress or {}),
                                   strict=True))
        return [answers[index] for index in range(len(jobs))]

    def _together(self, jobs: list[Job], progress: Mapping[int, Progress]) -> list[Unchecked | Exception]:
        """Run compatible jobs as one call, each job's failure answered as such. When several jobs
        run out of memory together, each runs again alone: only one too big alone fails."""
        cancelled: set[int] = set()  # positions in `jobs`
        firsts = [sum(job.request.num_images for job in jobs[:k]) for k in range(len(jobs))]

        def call_progress(step: int, total: int, preview: Preview) -> None:
            for k, job in enumerate(jobs):
                if k in cancelled:
                    continue
                try:  # the job's own pictures: its first is picture firsts[k] of the call
                    progress.get(job.job_id, quiet)(step, total, lambda i, k=k: preview(firsts[k] + i))
                except JobCancelled:
                    cancelled.add(k)  # the others go on; its pictures are dropped at the end
            if len(cancelled) == len(jobs):
                raise JobCancelled

        out_of_memory = False
        try:
            results = self._generate(jobs, call_progress, dropped=cancelled)
        except torch.OutOfMemoryError:
            out_of_memory = True
        except Exception as error:
            if not isinstance(error, JobCancelled | InvalidRequest):  # a bug, ours or a library's
                log.error("job(s) %s failed:\n%s", _ids(jobs), traceback.format_exc())
            return [error for _ in jobs]
        if not out_of_memory:
            return [JobCancelled() if result is None else result for result in results]
        # Only out here: inside the except block the traceback still holds the failed call's
        # frames, and with them its activations.
        free_memory(self.device)
        log.warning("job(s) %s ran out of memory%s", _ids(jobs), "; running each alone" if len(jobs) > 1 else "")
        if len(jobs) == 1:
            return [torch.OutOfMemoryError()]
        # In order, each with its own progress and cancel; a job cancelled meanwhile stays so.
        return [JobCancelled() if k in cancelled else self._together([job], progress)[0]
                for k, job in enumerate(jobs)]

    def _generate(self, jobs: list[Job], progress: Progress,
                  dropped: Container[int] = ()) -> list[Unchecked | None]:
        """One pipeline call, through the jobs' mode (several jobs only where `Mode.batches`); None
        for a job whose position is in `dropped` by then (its pictures are neither checked nor encoded)."""
        started = time.perf_counter()
        requests = [_seeded(job.request) for job in jobs]
        mode = requests[0].mode
        assert len(requests) == 1 or mode.batches, f"{mode} jobs do not share a call"
        samplers.check(self.sampler_config, requests[0])  # refuses a sampler that cannot run, before any work
        thresholds = [self.nsfw_threshold(request) for request in requests]  # and a threshold out of bounds
        with self.loras.applied(self.pipe, requests[0].loras):  # jobs sharing a call share their LoRAs
            made = MODES[mode](self, requests, progress)
        seconds = time.perf_counter() - started
        return [
            Unchecked(job_id=job.job_id, request=request, threshold=threshold, images=images, brought=brought,
                      width=made.width, height=made.height, model=self.model, upscaler=made.upscaler,
                      safety=self.safety, seconds=seconds,
                      reading=prompts.reading(self.pipe, request.prompt, self.embeddings))
            if k not in dropped else None
            for k, (job, request, threshold, images, brought)
            in enumerate(zip(jobs, requests, thresholds, made.pictures, made.brought, strict=True))
        ]


def quiet_library_progress_bars() -> None:
    """Turn off the libraries' own progress bars (loading components, weights, downloads): the
    engine reports progress through its one callback, which the CLI draws as its bar and the server
    sends to the bot; theirs would only clutter the terminal, or the bot's log."""
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # and huggingface_hub's, for downloads


def _seeded(request: GenerateRequest) -> GenerateRequest:
    """The request with a seed: the bot picks one before it records the job; the CLI may not."""
    return request if request.seed is not None else replace(request, seed=secrets.randbelow(MAX_SEED + 1))


def finished(made: Unchecked | GenerateResult | Exception) -> GenerateResult | Exception:
    """A job's pictures checked and encoded; or what stopped it (there, or before)."""
    if not isinstance(made, Unchecked):
        return made
    try:
        return made.finish()
    except Exception as error:
        log.error("job %s failed in its safety check or encoding:\n%s", made.job_id, traceback.format_exc())
        return error


def _ids(jobs: list[Job]) -> str:
    return ", ".join(str(job.job_id) for job in jobs)


def free_memory(device: torch.device) -> None:
    """Give back what a failed job held, so the next one starts from a clean device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
