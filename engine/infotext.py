"""Generation parameters in AUTOMATIC1111's text, as written into a PNG's `parameters` chunk."""

from __future__ import annotations

import json

from dreambot.request import GenerateRequest, Mode


def infotext(request: GenerateRequest, *, seed: int, width: int, height: int, model: str, upscaler: str = "") -> str:
    """Generation parameters in the text AUTOMATIC1111 writes into a PNG's `parameters` chunk;
    `upscaler` names the dedicated upscaler that made an upscale (which has no strength)."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields = (f"Steps: {request.num_inference_steps}, Sampler: {request.scheduler}, "
              f"CFG scale: {request.guidance_scale:g}, Seed: {seed}, Size: {width}x{height}, Model: {model}")
    if request.denoising_strength is not None and not upscaler:
        fields += f", Denoising strength: {request.denoising_strength:g}"
    if request.mode is not Mode.TXT2IMG:
        fields += f", Mode: {request.mode}"
    if request.mode is Mode.OUTPAINT:
        fields += f", Outpaint: {request.direction} {request.amount}"
    if request.mode is Mode.INTERPOLATE:
        end_seed = seed if request.end_seed is None else request.end_seed
        # Quoted as AUTOMATIC1111 quotes values that hold its separators.
        fields += f", End prompt: {json.dumps(request.end_prompt or request.prompt)}, End seed: {end_seed}, " \
                  f"Frames: {request.frames}"
    if upscaler:
        fields += f", Upscaler: {upscaler}"
    if request.style:
        fields += f", Style: {request.style}"
    lines.append(fields)
    return "\n".join(lines)


def prompts_of(text: str) -> tuple[str, str] | None:
    """The prompt and negative prompt of parameters AUTOMATIC1111 (or Dreambot) wrote: the prompt's
    lines, then "Negative prompt: …", then a last line of fields starting with "Steps: ". None
    when the text is not such parameters."""
    lines = text.split("\n")
    if len(lines) < 2 or not lines[-1].startswith("Steps: "):
        return None
    said = lines[:-1]
    for index, line in enumerate(said):
        if line.startswith("Negative prompt: "):
            return "\n".join(said[:index]), "\n".join([line.removeprefix("Negative prompt: "), *said[index + 1:]])
    return "\n".join(said), ""
