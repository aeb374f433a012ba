"""Speed on a GPU: the attention the UNet and VAE use, their memory format, torch.compile (SD_COMPILE)
and its warm-up, VAE tiling and slicing by size, and the tiny decoders that draw progress previews."""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch._dynamo
from diffusers import AutoencoderTiny, DiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from PIL import Image
from torch.fx.experimental import _config as fx_config

from dreambot.models import Model
from dreambot.request import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, GenerateRequest, Mode
from dreambot.settings import EngineSettings
from engine import imaging, loading
from engine.modes import latent_family

if TYPE_CHECKING:
    from engine.pipeline import Engine

log = logging.getLogger(__name__)

# SD_ATTENTION: PyTorch's scaled_dot_product_attention (diffusers' default), or diffusers' own
# matrix products, for comparison and for old setups.
ATTENTION: dict[str, type] = {"sdpa": AttnProcessor2_0, "classic": AttnProcessor}
# torch.compile's backend. A name, or a callable backend: tests count compilations with one
# (inductor takes minutes on a CPU).
COMPILE_BACKEND: str | Callable = "inductor"
# Graphs torch.compile keeps of one function before it runs it uncompiled. Every UNet of a class
# shares its forward: each model, a batch of one and of several, and sizes that are not multiples
# of 64 pixels (another branch in the UNet) take one each; torch's default of 8 would run out.
RECOMPILE_LIMIT = 64
WARM_UP_STEPS = 2
# Which setting names the preview decoder of which latents (`engine.modes.latent_family`).
PREVIEW_SETTINGS = {"sd": "SD_PREVIEW_DECODER", "sdxl": "SDXL_PREVIEW_DECODER"}


@dataclass(frozen=True)
class PreviewDecoder:
    """An operator's tiny decoder (TAESD, diffusers' AutoencoderTiny): one picture's latents, as the
    pipeline holds them between steps, decoded into a small JPEG of the picture so far."""

    vae: AutoencoderTiny

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> bytes:
        with upcast(self.vae):
            parameter = next(self.vae.parameters())
            decoded = self.vae.decode(latents[None].to(parameter.device, parameter.dtype)).sample[0]
        pixels = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        return imaging.preview(Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()))


@dataclass(frozen=True)
class Speed:
    """What `speed_up` did to a model's pipeline, and what each pipeline call then uses: VAE tiling
    and slicing by size (`decoding`), and a preview decoder for its latents, if the operator named one."""

    attention: str = "sdpa"
    channels_last: bool = False
    compiled: bool = False
    # A picture above this many pixels is decoded and encoded in tiles; 0: never.
    tile_pixels: int = 0
    # A call whose pictures together exceed this many pixels decodes them one at a time; 0: never.
    slice_pixels: int = 0
    # By latent family ("sd", "sdxl").
    previews: dict[str, PreviewDecoder] = field(default_factory=dict)

    def decoding(self, pipe: DiffusionPipeline, pictures: int, width: int, height: int) -> None:
        """Before a pipeline call making `pictures` pictures of width × height: its VAE in tiles, one
        picture at a time, or neither. The VAE is shared by every mode's pipeline, so each call sets both."""
        vae = getattr(pipe, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            return
        if 0 < self.tile_pixels < width * height:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        if 0 < self.slice_pixels < pictures * width * height:
            vae.enable_slicing()
        else:
            vae.disable_slicing()

    def preview_decoder(self, family: str | None) -> PreviewDecoder | None:
        return self.previews.get(family) if family else None


def speed_up(pipe: DiffusionPipeline, settings: EngineSettings, device: torch.device, dtype: torch.dtype) -> Speed:
    """The settings' speed-ups applied to a loaded pipeline, on its device: the attention
    (SD_ATTENTION), checked; channels-last (SD_CHANNELS_LAST); torch.compile (SD_COMPILE: `warm_up`
    then compiles); the preview decoder of its family. Every mode's pipeline shares these modules."""
    modules = {"UNet": pipe.unet, "VAE": pipe.vae}
    attention = use_attention(modules, settings.sd_attention)
    channels_last = settings.sd_channels_last == "on" or (settings.sd_channels_last == "auto"
                                                          and device.type == "cuda")
    if channels_last:
        for module in modules.values():
            module.to(memory_format=torch.channels_last)
    if settings.sd_compile:
        compile_models(pipe)
    family = latent_family(pipe)
    previews = {}
    source = {"sd": settings.sd_preview_decoder, "sdxl": settings.sdxl_preview_decoder}.get(family or "")
    if family and source:
        previews[family] = PreviewDecoder(loading.load_preview_decoder(PREVIEW_SETTINGS[family], source, dtype,
                                                                       device))
    log.info("attention: %s; channels-last: %s; compiled: %s; previews: %s", attention,
             "on" if channels_last else "off", "yes (warming up)" if settings.sd_compile else "no",
             source if previews else "the latents' linear approximation")
    return Speed(attention=settings.sd_attention, channels_last=channels_last, compiled=settings.sd_compile,
                 tile_pixels=settings.sd_vae_tile_pixels, slice_pixels=settings.sd_vae_slice_pixels,
                 previews=previews)


def use_attention(modules: dict[str, Any], setting: str) -> str:
    """Every attention layer of `modules` (by name) on SD_ATTENTION's processor, checked: what the
    log says is what runs. Returns it in words, with the layers counted."""
    wanted = ATTENTION[setting]
    for module in modules.values():
        if any(type(processor) is not wanted for processor in module.attn_processors.values()):
            module.set_attn_processor(wanted())
    counts = {name: Counter(type(processor) for processor in module.attn_processors.values())
              for name, module in modules.items()}
    others = {cls.__name__ for count in counts.values() for cls in count if cls is not wanted}
    if others:  # set_attn_processor left some: a model class this engine does not know
        raise loading.ModelLoadError(f"SD_ATTENTION={setting}: some attention layers stay {', '.join(sorted(others))}")
    layers = " and ".join(f"{count[wanted]} {name}" for name, count in counts.items() if count[wanted])
    described = "PyTorch SDPA" if setting == "sdpa" else "classic"
    return f"{described} ({wanted.__name__} in {layers or 'no'} layers)"


def compile_models(pipe: DiffusionPipeline) -> None:
    """torch.compile the UNet and the VAE decoder in place (every mode's pipeline shares them), with
    dynamic shapes: a new size or batch reuses the graph instead of compiling another."""
    # One symbol per dimension: a square warm-up must not tie the width to the height (diffusers' advice).
    fx_config.use_duck_shape = False
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    pipe.unet.compile(backend=COMPILE_BACKEND, dynamic=True)
    pipe.vae.decoder.compile(backend=COMPILE_BACKEND, dynamic=True)
    # A graph holds for one memory layout of its inputs. An input picture's latents come out of the
    # encoder in the picture's layout (channels-last, from PIL): in txt2img's instead, the image modes
    # run the same graphs.
    vae = pipe.vae
    last = vae.quant_conv if getattr(vae, "quant_conv", None) is not None else vae.encoder
    last.register_forward_hook(lambda module, args, output: output.contiguous())


def warm_up(engine: Engine, model: Model) -> float:
    """SD_COMPILE's compilation, at start rather than at a member's first job: a short job at the
    model's native size, with its default guidance and sampler. Returns the seconds it took."""
    started = time.perf_counter()
    size = engine.native_size
    request = GenerateRequest(prompt="warm-up", num_inference_steps=WARM_UP_STEPS, seed=0, keep_flagged=True,
                              guidance_scale=DEFAULT_GUIDANCE if model.defaults.guidance is None
                              else model.defaults.guidance,
                              scheduler=model.defaults.sampler or DEFAULT_SAMPLER)
    if engine.inpainting_only:  # its UNet only inpaints
        request = replace(request, mode=Mode.INPAINT, image=_png(Image.new("RGB", (size, size), imaging.NEUTRAL)),
                          mask=_png(Image.new("L", (size, size), 255)))
    # One picture, then two: torch.compile specialises a dimension of size 1, so the decoder's graph for
    # one picture does not serve a job of several, which would otherwise compile at a member's job.
    engine.generate(0, request)
    engine.generate(0, replace(request, num_images=2))
    seconds = time.perf_counter() - started
    log.info("compiled the UNet and VAE decoder of %s in %.1f s (%d-step warm-ups of one and two pictures at "
             "%d×%d)", engine.model, seconds, WARM_UP_STEPS, size, size)
    return seconds


@contextmanager
def upcast(vae: torch.nn.Module) -> Iterator[None]:
    """diffusers' rule for a VAE called directly: in float32 for the call when it is in float16 and
    its config says it overflows there (`force_upcast`: SDXL's own VAE; not its fp16-fix one)."""
    needed = needs_upcast(vae)
    if needed:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if needed:
            vae.to(torch.float16)


def needs_upcast(vae: torch.nn.Module) -> bool:
    parameter = next(vae.parameters())
    return parameter.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
