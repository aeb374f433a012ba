"""The six modes, one function each, written as diffusers writes a pipeline: numbered steps from the
request's inputs to pictures. `MODES` dispatches on the request's `Mode`.

Every mode takes the engine, the requests of one pipeline call (several only where `Mode.batches`)
and a `Progress`, and returns what it `Made`. The safety check and encoding are the engine's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from dreambot.request import GenerateRequest, InvalidRequest, Mode
from engine import imaging, prompts, samplers
from engine.progress import Progress

if TYPE_CHECKING:
    from engine.pipeline import Engine
    from engine.speed import PreviewDecoder

@dataclass(frozen=True)
class Made:
    """What one pipeline call made, per request: its pictures, and what it brought in to be scored
    with them. What a job brings in: the input picture, whole and in parts (`imaging.parts`: its
    content without padding, and windows of it), so that a flagged region cannot hide in a larger
    picture; and what the result keeps of it pixel-exact, on its own (for inpainting, the kept
    region: a small region kept in a large repainted canvas counts)."""

    pictures: list[list[Image.Image]]
    brought: list[list[Image.Image]]
    width: int
    height: int
    # The dedicated upscaler that made the pictures, named in their parameters; "" for none.
    upscaler: str = ""


def txt2img(engine: Engine, requests: list[GenerateRequest], progress: Progress) -> Made:
    # 1. inputs: the prompts (several jobs' in one call), the size
    request = requests[0]
    _refuse_on_an_inpainting_model(engine)
    width, height = request.width or engine.native_size, request.height or engine.native_size

    # 2. scheduler and generators
    pipe, generator = _sampling(engine, Mode.TXT2IMG, requests, (width, height))

    # 3. pipeline call
    images = pipe(
        **_denoising(engine, pipe, requests, generator, progress),
        width=width,
        height=height,
    ).images

    # 4. paste back: nothing to keep; each job gets its own pictures
    counts = [r.num_images for r in requests]
    pictures = [images[sum(counts[:k]):sum(counts[:k + 1])] for k in range(len(counts))]
    return Made(pictures, [[] for _ in requests], width, height)


def img2img(engine: Engine, requests: list[GenerateRequest], progress: Progress) -> Made:
    # 1. inputs: the picture to start from
    [request] = requests
    _refuse_on_an_inpainting_model(engine)
    source = imaging.open_rgb(request.image)
    brought = [source, *imaging.parts(source)]

    # 2. scheduler and generators
    pipe, generator = _sampling(engine, Mode.IMG2IMG, requests, source.size)

    # 3. pipeline call
    images = pipe(
        **_denoising(engine, pipe, requests, generator, progress),
        image=source,
        strength=request.denoising_strength,
    ).images

    # 4. paste back: nothing is kept exactly
    return Made([images], [brought], *source.size)


def inpaint(engine: Engine, requests: list[GenerateRequest], progress: Progress) -> Made:
    # 1. inputs: the picture, the mask (white: repaint) and what is kept of the picture
    [request] = requests
    source = imaging.open_rgb(request.image)
    mask = imaging.open_mask(request.mask, source.size)
    brought = [source, *imaging.parts(source)]
    kept = imaging.kept_region(source, mask)
    if kept is not None:
        brought.append(kept)

    # 2. scheduler and generators
    pipe, generator = _sampling(engine, Mode.INPAINT, requests, source.size)

    # 3. pipeline call
    images = pipe(
        **_denoising(engine, pipe, requests, generator, progress),
        image=source,
        mask_image=mask,
        width=source.width,
        height=source.height,
        strength=request.denoising_strength,
    ).images

    # 4. paste back what the mask keeps
    return Made([_pasted_back(images, source, mask)], [brought], *source.size)


def outpaint(engine: Engine, requests: list[GenerateRequest], progress: Progress) -> Made:
    # 1. inputs: the picture, and the larger canvas with the strip to paint (and the seam)
    [request] = requests
    source = imaging.open_rgb(request.image)
    brought = [source, *imaging.parts(source)]  # the source is all the result keeps of it
    canvas, mask, strip = imaging.outpaint_canvas(source, request.direction, request.amount)

    # 2. scheduler and generators
    pipe, generator = _sampling(engine, Mode.OUTPAINT, requests, canvas.size)

    # 3. pipeline call
    images = pipe(
        **_denoising(engine, pipe, requests, generator, progress),
        image=canvas,
        mask_image=mask,
        width=canvas.width,
        height=canvas.height,
        strength=request.denoising_strength,
    ).images

    # 4. paste back the original picture, outside the new strip
    return Made([_pasted_back(images, canvas, strip)], [brought], *canvas.size)


def upscale(engine: Engine, requests: list[GenerateRequest], progress: Progress) -> Made:
    """Twice the size: with the operator's dedicated upscaler (SD_UPSCALER) when there is one,
    otherwise the img2img "hires fix" on the loaded model."""
    if engine.upscaler is not None:
        return _latent_upscale(engine, requests, progress)

    # 1. inputs: the picture, at twice its size
    [request] = requests
    _refuse_on_an_inpainting_model(engine)
    source = imaging.open_rgb(request.image)
    brought = [source, *imaging.parts(source)]
    larger = source.resize((source.width * 2, source.height * 2), Image.Resampling.LANCZOS)

    # 2. scheduler and generators
    pipe, generator = _sampling(engine, Mode.UPSCALE, requests, larger.size)

    # 3. pipeline call
    images = pipe(
        **_denoising(engine, pipe, requests, generator, progress),
        image=larger,
        strength=request.denoising_strength,
    ).images

    # 4. paste back: nothing is kept exactly
    return Made([images], [brought], *larger.size)


def _latent_upscale(engine: Engine, requests: list[GenerateRequest], progress: Progress) -> Made:
    """Upscaling with the dedicated latent upscaler, which works best unguided, as its authors run it."""
    # 1. inputs: the picture, once per picture to make
    [request] = requests
    source = imaging.open_rgb(request.image)
    brought = [source, *imaging.parts(source)]
    count = request.num_images

    # 2. scheduler and generators: the upscaler's own scheduler, whatever the sampler
    pipe = engine.upscaler
    engine.speed.decoding(pipe, count, source.width * 2, source.height * 2)
    generator = samplers.generators(engine.device, request.seeds())
    family = latent_family(pipe)
    decoder = engine.speed.preview_decoder(family)

    def report(index: int, timestep, latents: torch.Tensor) -> None:  # its legacy step callback
        progress(index + 1, request.num_inference_steps, Previews(latents, family, decoder))

    # 3. pipeline call
    images = pipe(
        prompt=[request.prompt] * count,
        negative_prompt=[request.negative_prompt] * count if request.negative_prompt else None,
        image=[source] * count,
        num_inference_steps=request.num_inference_steps,
        guidance_scale=0.0,
        generator=generator,
        callback=report,
        output_type="pil",
    ).images

    # 4. paste back: nothing is kept exactly
    return Made([images], [brought], images[0].width, images[0].height, upscaler=engine.upscaler_name)


@torch.no_grad()
def interpolate(engine: Engine, requests: list[GenerateRequest], progress: Progress) -> Made:
    """Frames from (prompt, seed) to (end prompt, end seed): the text embeddings (and SDXL's pooled
    ones) move in a straight line, the starting noise along a great circle (slerp), so every
    frame's noise stays as large as real noise. Frame 0 is exactly the txt2img picture of (prompt, seed)."""
    # 1. inputs: both ends' prompt embeddings, the negative's, the size
    [request] = requests
    pipe = engine.pipeline(Mode.INTERPOLATE)
    if engine.inpainting_only:
        raise InvalidRequest(f"This server's model ({engine.model}) is an inpainting model: it cannot animate.")
    width, height = request.width or engine.native_size, request.height or engine.native_size
    engine.speed.decoding(pipe, 1, width, height)  # one frame per call
    # Unguided, no negative prompt is encoded, so its length pads nothing (as in every other mode).
    guided = prompts.guided(pipe, request.guidance_scale)
    ends = [request.prompt, request.end_prompt or request.prompt]
    # Both ends as long, so that the line between them exists.
    negatives = [request.negative_prompt] if guided else []
    length = prompts.count(pipe, *ends, *negatives, embeddings=engine.embeddings)
    (start, pooled_start), (end, pooled_end) = (
        prompts.encode_pooled(pipe, text, engine.device, length, engine.embeddings, clip_skip=engine.clip_skip)
        for text in ends
    )
    negative, negative_pooled = prompts.encode_negative(
        pipe, request.negative_prompt, engine.device, (start, pooled_start), length, engine.embeddings,
        clip_skip=engine.clip_skip,
    ) if guided else (None, None)

    # 2. scheduler and generators: the end's starting noise (the start's, a fresh scheduler and
    # generator for each frame, below)
    shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    end_seed = request.seed if request.end_seed is None else request.end_seed

    def noise(seed: int) -> tuple[torch.Tensor, list[torch.Generator]]:
        generator = samplers.generators(engine.device, [seed])
        return randn_tensor(shape, generator=generator, device=engine.device, dtype=start.dtype), generator

    noise_end, _ = noise(end_seed)

    # 3. pipeline call, once per frame
    frames = []
    for frame in range(request.frames):
        t = frame / (request.frames - 1)
        pipe.scheduler = samplers.scheduler(engine.sampler_config, request)
        # The start seed's generator, left past its noise as txt2img leaves it: a sampler that adds
        # noise at every step (Euler a) adds txt2img's, in every frame.
        noise_start, generator = noise(request.seed)
        pooled = {} if pooled_start is None else {  # SDXL's
            "pooled_prompt_embeds": torch.lerp(pooled_start, pooled_end, t),
            "negative_pooled_prompt_embeds": negative_pooled,
        }
        frames.append(pipe(
            prompt_embeds=torch.lerp(start, end, t),
            negative_prompt_embeds=negative,
            **pooled,
            latents=imaging.slerp(noise_start, noise_end, t),
            generator=generator,
            width=width,
            height=height,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            callback_on_step_end=_reporting(engine, progress, pipe, frame=frame, frames=request.frames),
            output_type="pil",
        ).images[0])

    # 4. paste back: nothing is kept; the frames are one animation
    return Made([frames], [[]], width, height)


MODES: dict[Mode, Callable[[Engine, list[GenerateRequest], Progress], Made]] = {
    Mode.TXT2IMG: txt2img,
    Mode.IMG2IMG: img2img,
    Mode.INPAINT: inpaint,
    Mode.OUTPAINT: outpaint,
    Mode.UPSCALE: upscale,
    Mode.INTERPOLATE: interpolate,
}
assert set(MODES) == set(Mode), "every mode needs a function"


def _sampling(engine: Engine, mode: Mode, requests: list[GenerateRequest], size: tuple[int, int]
              ) -> tuple[DiffusionPipeline, list[torch.Generator]]:
    """Step 2 of a mode: its pipeline with a fresh scheduler for the jobs' sampler, its VAE set for
    pictures of that (width, height) size (`Speed.decoding`), and one random generator per picture,
    seeded as each picture's seed says."""
    pipe = engine.pipeline(mode)
    pipe.scheduler = samplers.scheduler(engine.sampler_config, requests[0])
    engine.speed.decoding(pipe, sum(r.num_images for r in requests), *size)
    return pipe, samplers.generators(engine.device, [seed for r in requests for seed in r.seeds()])


def _denoising(engine: Engine, pipe: DiffusionPipeline, requests: list[GenerateRequest],
               generator: list[torch.Generator], progress: Progress) -> dict:
    """The arguments every mode's pipeline call shares: the prompts, steps, guidance, generators
    and progress; each mode adds its own inputs."""
    request = requests[0]  # jobs sharing a call share these (`GenerateRequest.batch_key`)
    return {
        **_prompts(engine, pipe, requests),
        "num_inference_steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
        "generator": generator,
        "callback_on_step_end": _reporting(engine, progress, pipe),
        "output_type": "pil",
    }


def _refuse_on_an_inpainting_model(engine: Engine) -> None:
    if engine.inpainting_only:
        raise InvalidRequest(f"This server's model ({engine.model}) is an inpainting model: it can only inpaint and "
                             "outpaint. Use /inpaint or /outpaint.")


def _prompts(engine: Engine, pipe: DiffusionPipeline, requests: list[GenerateRequest]) -> dict:
    """The prompt arguments of a pipeline call for one job, or for several sharing it: embeddings
    with AUTOMATIC1111's weights and no length limit (`engine.prompts`) where the pipeline's text
    encoders are CLIP's (SD 1.x/2.x, SDXL with its pooled embeddings), else the texts."""
    if prompts.weighted(pipe):
        # At guidance 1 or less no negative prompt is encoded: the pipeline would not use it. (Jobs
        # sharing a call share their guidance, `GenerateRequest.batch_key`.)
        guided = prompts.guided(pipe, requests[0].guidance_scale)
        if len(requests) == 1:
            [request] = requests
            return {**prompts.arguments(pipe, [request.prompt], [request.negative_prompt] if guided else None,
                                        engine.device, engine.embeddings, clip_skip=engine.clip_skip),
                    "num_images_per_prompt": request.num_images}
        each = [r for r in requests for _ in range(r.num_images)]  # one prompt per picture
        return prompts.arguments(pipe, [r.prompt for r in each], [r.negative_prompt for r in each] if guided else None,
                                 engine.device, engine.embeddings, clip_skip=engine.clip_skip)
    if len(requests) == 1:
        [request] = requests
        return {"prompt": request.prompt, "negative_prompt": request.negative_prompt or None,
                "num_images_per_prompt": request.num_images}
    # One prompt per picture: diffusers takes a single images-per-prompt count for all prompts.
    # An empty negative prompt encodes exactly as diffusers' default for None.
    return {"prompt": [r.prompt for r in requests for _ in range(r.num_images)],
            "negative_prompt": [r.negative_prompt for r in requests for _ in range(r.num_images)]
            if any(r.negative_prompt for r in requests) else None}


def _pasted_back(images: list[Image.Image], original: Image.Image, repainted: Image.Image) -> list[Image.Image]:
    """The pipeline repaints through the VAE, which blurs what it keeps: paste the kept pixels back
    exactly, and blend the `repainted` (white) ones into them over a few pixels."""
    blend = imaging.feathered(repainted)
    return [Image.composite(image, original, blend) for image in images]


def _reporting(engine: Engine, progress: Progress, pipe: DiffusionPipeline, *, frame: int = 0, frames: int = 1
               ) -> Callable[..., dict]:
    """diffusers' `callback_on_step_end`, reporting each step to `progress`; an interpolation's
    frames count as one run of `frames` times the steps."""
    family = latent_family(pipe)
    decoder = engine.speed.preview_decoder(family)

    def on_step_end(pipe: DiffusionPipeline, step: int, timestep, tensors: dict) -> dict:
        # The pipeline's own count: some samplers take more steps than asked (Heun: 2n - 1).
        steps = pipe.num_timesteps
        progress(frame * steps + step + 1, frames * steps, Previews(tensors["latents"], family, decoder))
        return {}

    return on_step_end


_SDXL_PIPELINES = (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline)


def latent_family(pipe: DiffusionPipeline) -> str | None:
    """Which linear latent-to-RGB approximation fits this pipeline's latents; None: none does
    (not the 4 latent channels of SD 1.x/2.x and SDXL)."""
    vae = getattr(pipe, "vae", None)
    if vae is None or vae.config.latent_channels != 4:
        return None
    return "sdxl" if isinstance(pipe, _SDXL_PIPELINES) else "sd"


@dataclass(frozen=True)
class Previews:
    """A `Preview` of a call's latents at one step: rendered only when asked."""

    latents: torch.Tensor
    family: str | None
    # The operator's tiny decoder for these latents (SD_PREVIEW_DECODER); None: the linear approximation.
    decoder: PreviewDecoder | None = None

    def __call__(self, index: int) -> bytes | None:
        if self.decoder is not None:
            return self.decoder(self.latents[index])
        return None if self.family is None else imaging.latent_preview(self.latents[index], self.family)
