"""Operator CLI for the engine: `generate` a PNG without Discord, write a `tiny-model`, or `serve` the bot."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from dreambot import wildcards
from dreambot.models import ASPECTS, Model, ModelsError, aspect_size, name_of
from dreambot.request import (
    DEFAULT_FRAMES,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    DIRECTIONS,
    MAX_SEED,
    SAMPLERS,
    GenerateRequest,
    InvalidRequest,
    Limits,
    Mode,
)
from dreambot.settings import EngineSettings, load

# The operator is not bound by the limits a Discord server sets for its members.
CLI_LIMITS = Limits(max_steps=1000, max_width=4096, max_height=4096, max_images=16, max_prompt_length=10_000,
                    max_frames=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="make image(s) with the configured model (SD_MODEL) and write PNGs")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True, type=Path, help="PNG file; with --count N, FILE-1.png … FILE-N.png")
    gen.add_argument("--negative", help="negative prompt (default: the model's, models.toml)")
    gen.add_argument("--steps", type=int, help=f"default: the model's (models.toml), else {DEFAULT_STEPS}")
    gen.add_argument("--guidance", type=float, help=f"CFG scale; default: the model's, else {DEFAULT_GUIDANCE:g}")
    gen.add_argument("--seed", type=int, help="random when omitted; image i uses seed + i")
    gen.add_argument("--width", type=int, help="default: the model's size (models.toml), else its native size")
    gen.add_argument("--height", type=int, help="default: the model's size (models.toml), else its native size")
    gen.add_argument("--aspect", choices=ASPECTS, help="instead of width and height: this ratio at the model's "
                     "native pixel count")
    gen.add_argument("--sampler", choices=SAMPLERS, metavar="NAME",
                     help=f"one of: {', '.join(SAMPLERS)} (default: the model's, else {DEFAULT_SAMPLER})")
    gen.add_argument("--count", type=int, default=1, help="number of images")
    gen.add_argument("--model", help="a model of MODELS_DIR by name, or a folder, checkpoint file or hub id "
                     "(default: SD_MODEL)")
    modes = gen.add_argument_group("modes (default: text to image)")
    modes.add_argument("--image", type=Path, help="start from this picture (image to image); sides multiples of 8")
    modes.add_argument("--strength", type=float, help="with --image: how much to repaint, 0-1")
    modes.add_argument("--mask", type=Path, help="with --image: inpaint where this mask is white")
    modes.add_argument("--outpaint", choices=DIRECTIONS, help="with --image: extend it on this side (or all)")
    modes.add_argument("--amount", type=int, default=64, help="with --outpaint: pixels to add (default 64)")
    modes.add_argument("--upscale", action="store_true", help="with --image: make it twice the size")
    modes.add_argument("--end-prompt", help="interpolate to this prompt; writes an animated GIF")
    modes.add_argument("--end-seed", type=int, help="interpolate to this seed; writes an animated GIF")
    modes.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="interpolation frames (default 8)")

    tiny = commands.add_parser(
        "tiny-model",
        help="write a tiny random-weight model of a Stable Diffusion family (a diffusers folder of ~4 MB, or one "
        ".safetensors checkpoint) for smoke tests",
        description="Write a tiny random-weight Stable Diffusion model: by default an SD 1.x diffusers folder at DIR; "
        "--family picks SD 1.x (sd1), its inpainting variant with a 9-channel UNet (sd1-inpaint), SD 2.x with "
        "v-prediction (sd2) or SDXL (sdxl). With --single-file it writes one checkpoint DIR.safetensors in the "
        "original layout model sites publish instead. Either loads offline, 64 px native, and runs in a fraction of "
        "a second on a CPU, but its images are noise: it tests the plumbing, not the pictures. Use it with "
        "SD_MODEL=DIR (or SD_MODEL=DIR.safetensors).",
    )
    tiny.add_argument("directory", type=Path, metavar="DIR", help="the folder to write (with --single-file: the file)")
    # engine.tiny.FAMILIES, spelt out so that parsing the command line does not import torch.
    tiny.add_argument("--family", choices=("sd1", "sd1-inpaint", "sd2", "sdxl"), default="sd1",
                      help="sd1 (default): SD 1.x; sd1-inpaint: SD 1.x inpainting; sd2: SD 2.x, v-prediction; "
                      "sdxl: SDXL")
    tiny.add_argument("--single-file", action="store_true",
                      help="write one .safetensors checkpoint in the original layout instead of a diffusers folder")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights")

    commands.add_parser("serve", help="serve jobs on stdin/stdout (the bot starts this; not for direct use)")

    args = parser.parse_args(argv)
    _quiet_libraries()
    # Served, the bot stamps each line as it logs it; alone, the operator wants the time.
    stamp = "" if args.command == "serve" else "%(asctime)s "
    logging.basicConfig(level=logging.INFO, format=stamp + "%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    if args.command == "tiny-model":
        from dreambot.families import LABELS
        from engine.tiny import write_tiny_model

        written = write_tiny_model(args.directory, args.seed, family=args.family, single_file=args.single_file)
        print(f"wrote a tiny random-weight {LABELS[args.family]} model to {written}")
        return 0
    if args.command == "serve":
        from engine.server import serve

        return serve(load(EngineSettings))
    return _generate(args)


def _generate(args: argparse.Namespace) -> int:
    settings = load(EngineSettings)
    try:
        catalogue = settings.catalogue()
    except ModelsError as error:
        print(f"error: MODELS_DIR {error}", file=sys.stderr)
        return 2
    model = catalogue.get(args.model)  # by name; else what --model names is a model of its own
    if model is None:
        if not Path(args.model).expanduser().exists() and args.model.count("/") != 1:
            print(f"error: there is no model named {args.model!r} ({catalogue.offered()} in MODELS_DIR "
                  f"{settings.models_dir} or SD_MODEL), nor a folder or file of that name", file=sys.stderr)
            return 2
        model = Model(name=name_of(args.model), source=args.model)
    own = model.defaults
    try:
        if args.aspect and (args.width or args.height):
            raise InvalidRequest("give --aspect or --width and --height, not both.")
        width, height = aspect_size(args.aspect, model.pixels, CLI_LIMITS) if args.aspect else \
            (args.width or model.size[0], args.height or model.size[1])
        inputs = _inputs(args)
        drawn_over = inputs.get("mode", Mode.TXT2IMG).needs_image  # the picture's own size
        # Wildcards and {a|b} choices are picked by the seed, so it is chosen first.
        seed = secrets.randbelow(MAX_SEED + 1) if args.seed is None else args.seed
        folder = settings.wildcards_dir
        request = GenerateRequest(
            prompt=wildcards.expand(args.prompt, seed, folder),
            negative_prompt=wildcards.expand(args.negative if args.negative is not None else
                                             own.negative_prompt or "", seed, folder, "negative prompt"),
            model=model.name,
            num_inference_steps=args.steps or own.steps or DEFAULT_STEPS,
            guidance_scale=DEFAULT_GUIDANCE if args.guidance is None and own.guidance is None else
            args.guidance if args.guidance is not None else own.guidance,
            width=None if drawn_over else width,
            height=None if drawn_over else height,
            seed=seed,
            scheduler=args.sampler or own.sampler or DEFAULT_SAMPLER,
            num_images=args.count,
            strength=args.strength,
            direction=args.outpaint or "all",
            amount=args.amount if args.outpaint else 0,
            end_prompt=wildcards.expand(args.end_prompt, seed, folder, "end prompt") if args.end_prompt else None,
            end_seed=args.end_seed,
            frames=args.frames,
            **inputs,
        ).validated(CLI_LIMITS)
    except InvalidRequest as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from engine.loading import ModelLoadError
    from engine.pipeline import Engine
    from engine.progress import Preview

    try:
        engine = Engine.load(settings, model, installed=settings.installed(catalogue))
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with tqdm(total=request.num_inference_steps, unit="step", desc="generating") as bar:

        def progress(step: int, total: int, preview: Preview) -> None:
            bar.total = total
            bar.update(step - bar.n)

        try:
            result = engine.generate(0, request, progress)
        except InvalidRequest as error:
            print(f"\nerror: {error}", file=sys.stderr)
            return 2

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(result.images, start=1):
        path = out if len(result.images) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}")
        if image.format != "png" and path.suffix.lower() != f".{image.format}":
            path = path.with_suffix(f".{image.format}")
        if image.nsfw_content_detected:
            print(f"image {i} (seed {image.seed}) was flagged by the safety checker "
                  f"(score {image.nsfw_score}); not written")
            continue
        path.write_bytes(image.data)
        print(f"wrote {path} (seed {image.seed}, {result.width}x{result.height}, {result.timings['total']:.1f} s)")
    return 0 if not result.all_flagged else 3


def _inputs(args: argparse.Namespace) -> dict:
    """The mode and its input pictures (as PNG bytes) from the command line."""
    import io

    from PIL import Image, UnidentifiedImageError

    if args.end_prompt is not None or args.end_seed is not None:
        return {"mode": Mode.INTERPOLATE}
    if args.image is None:
        for flag, given in (("--mask", args.mask), ("--outpaint", args.outpaint), ("--upscale", args.upscale),
                            ("--strength", args.strength)):
            if given:
                raise InvalidRequest(f"{flag} needs --image.")
        return {}

    def read(path: Path, what: str, mode: str) -> tuple[bytes, tuple[int, int]]:
        try:
            with Image.open(path) as opened:
                image = opened.convert(mode)
        except (OSError, UnidentifiedImageError) as error:
            raise InvalidRequest(f"cannot read {what} {path}: {error}") from error
        if image.width % 8 or image.height % 8:
            raise InvalidRequest(f"{what} {path} is {image.width}x{image.height}; its sides must be multiples of 8.")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), image.size

    image, size = read(args.image, "the image", "RGB")
    if args.mask is not None:
        mask, mask_size = read(args.mask, "the mask", "L")
        if mask_size != size:
            raise InvalidRequest(f"the mask is {mask_size[0]}x{mask_size[1]} but the image is {size[0]}x{size[1]}.")
        return {"mode": Mode.INPAINT, "image": image, "mask": mask}
    mode = Mode.OUTPAINT if args.outpaint else Mode.UPSCALE if args.upscale else Mode.IMG2IMG
    return {"mode": mode, "image": image}


def _quiet_libraries() -> None:
    # Their import-time notices (no torchvision, deprecations) are noise for an operator.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


if __name__ == "__main__":
    sys.exit(main())
