"""Operator CLI for the engine: `generate` a PNG without Discord, write a `tiny-model`, `serve` the bot on
its own host, or run a `worker` that serves it from any host through NATS."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from PIL import Image

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
from engine.infotext import prompts_of

# The operator is not bound by the limits a Discord server sets for its members.
CLI_LIMITS = Limits(max_steps=1000, max_width=4096, max_height=4096, max_images=16, max_prompt_length=10_000,
                    max_frames=120)
DEFAULT_AMOUNT = 64  # pixels --outpaint adds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="make image(s) with the configured model (SD_MODEL) and write PNGs")
    gen.add_argument("--prompt", help="what to draw (required, unless --image carries the parameters of the job that "
                     "made it: then its prompt, and its negative prompt, are used; an upscale keeps them best)")
    gen.add_argument("--out", required=True, metavar="FILE|DIR/",
                     help="PNG file (with --count N: FILE-1.png … FILE-N.png), or a folder (an existing one, or a "
                     "path ending in /) to write dream-SEED.png into")
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
    modes.add_argument("--amount", type=int, help=f"with --outpaint: pixels to add (default {DEFAULT_AMOUNT})")
    modes.add_argument("--upscale", action="store_true", help="with --image: make it twice the size")
    modes.add_argument("--end-prompt", help="interpolate to this prompt; writes an animated GIF")
    modes.add_argument("--end-seed", type=int, help="interpolate to this seed; writes an animated GIF")
    modes.add_argument("--frames", type=int, help=f"with --end-prompt or --end-seed: frames of the animation "
                       f"(default {DEFAULT_FRAMES})")

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
    commands.add_parser(
        "worker", help="run the bot's jobs from this host, through NATS (NATS_URL; one worker per device)",
        description="Load the model (SD_MODEL, MODELS_DIR) on SD_DEVICE and take the bot's jobs through the NATS "
        "server at NATS_URL (credentials in the URL or NATS_CREDS), as WORKER_NAME (default: host name and "
        "device). It connects outward, so it works behind NAT. Ctrl-C or SIGTERM: it finishes the jobs in hand first.")

    args = parser.parse_args(argv)
    if args.command == "generate":
        _refuse_conflicting_flags(gen, args)  # before anything loads
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
    if args.command == "worker":
        from dreambot.settings import WorkerSettings
        from engine.worker import configure_logging, run

        settings = load(WorkerSettings)
        configure_logging(settings.log_level)
        return run(settings)
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
        if args.upscale and args.strength is not None and settings.sd_upscaler:
            raise InvalidRequest("--strength does not apply to SD_UPSCALER's upscaler, which takes none: drop "
                                 "--strength, or unset SD_UPSCALER to upscale with the model itself.")
        width, height = aspect_size(args.aspect, model.pixels, CLI_LIMITS) if args.aspect else \
            (args.width or model.size[0], args.height or model.size[1])
        prompt, negative = _prompts(args)
        inputs = _inputs(args)
        drawn_over = inputs.get("mode", Mode.TXT2IMG).needs_image  # the picture's own size
        # Wildcards and {a|b} choices are picked by the seed, so it is chosen first.
        seed = secrets.randbelow(MAX_SEED + 1) if args.seed is None else args.seed
        folder = settings.wildcards_dir
        request = GenerateRequest(
            prompt=wildcards.expand(prompt, seed, folder),
            negative_prompt=wildcards.expand(negative if negative is not None else
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
            amount=(DEFAULT_AMOUNT if args.amount is None else args.amount) if args.outpaint else 0,
            end_prompt=wildcards.expand(args.end_prompt, seed, folder, "end prompt") if args.end_prompt else None,
            end_seed=args.end_seed,
            frames=DEFAULT_FRAMES if args.frames is None else args.frames,
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

    out = Path(args.out)
    folder = _names_a_folder(args.out)
    (out if folder else out.parent).mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(result.images, start=1):
        if folder:
            path = _unused(out / f"dream-{image.seed}.{image.format}")
        else:
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


def _refuse_conflicting_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with argparse's error (status 2) for flags that contradict each other, or that mean
    nothing without another: each run does one thing, and a flag is never silently ignored."""
    animating = "--end-prompt" if args.end_prompt is not None else "--end-seed" if args.end_seed is not None else None
    modes = [flag for flag, given in (("--mask", args.mask is not None), ("--outpaint", args.outpaint is not None),
                                      ("--upscale", args.upscale), (animating, animating is not None)) if given]
    if len(modes) > 1 and animating in modes:
        parser.error(f"{modes[0]} and {animating} are different modes, and an animation starts from the prompt "
                     f"alone: give one of them.")
    if len(modes) > 1:
        parser.error(f"{modes[0]} and {modes[1]} are different modes: give one (to do both, run twice, the second "
                     f"with --image set to the first's output).")
    if args.image is None:
        for flag, given, what in (("--mask", args.mask is not None, "the picture to inpaint"),
                                  ("--outpaint", args.outpaint is not None, "the picture to extend"),
                                  ("--upscale", args.upscale, "the picture to enlarge"),
                                  ("--strength", args.strength is not None, "how much of it to repaint")):
            if given:
                parser.error(f"{flag} needs --image ({what}).")
    else:
        if animating:
            parser.error(f"{animating} animates from the prompt and takes no --image: drop one of them.")
        for flag, given in (("--width", args.width), ("--height", args.height), ("--aspect", args.aspect)):
            if given is not None:
                parser.error(f"{flag} does not apply with --image, whose size the result takes (twice it with "
                             f"--upscale, plus --amount with --outpaint): resize the image instead.")
    if args.amount is not None and args.outpaint is None:
        parser.error("--amount needs --outpaint (the side to add those pixels to).")
    if args.frames is not None and not animating:
        parser.error("--frames needs --end-prompt or --end-seed (what the animation moves to).")
    if animating and args.count != 1:
        parser.error(f"--count makes several pictures but {animating} makes one animation: drop --count.")
    if args.aspect and (args.width is not None or args.height is not None):
        parser.error("--aspect and --width/--height both set the size: give --aspect, or --width and --height.")
    if _names_a_folder(args.out) and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} names a folder, but {args.out.rstrip(_SEPARATORS)} is a file: "
                     f"drop the trailing separator to overwrite it.")


_SEPARATORS = "".join(filter(None, (os.sep, os.altsep)))


def _names_a_folder(out: str) -> bool:
    """--out names a folder to write into: an existing one, or any path ending in a separator."""
    return out.endswith(tuple(_SEPARATORS)) or Path(out).is_dir()


def _unused(path: Path) -> Path:
    """`path`, or NAME-2.EXT, NAME-3.EXT … if it is taken: a folder collects pictures (the same seed
    with another prompt, say), it never overwrites one."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _prompts(args: argparse.Namespace) -> tuple[str, str | None]:
    """The prompt and negative prompt: those given, else those the --image carries (the parameters
    Dreambot and AUTOMATIC1111 write into a PNG): upscaling or repainting a picture with a prompt
    that does not describe it draws something else into it. InvalidRequest when there is none."""
    if args.prompt is not None:
        return args.prompt, args.negative
    carried = None
    if args.image is not None:
        try:
            with Image.open(args.image) as picture:
                text = getattr(picture, "text", {}).get("parameters")
        except OSError:
            text = None  # an unreadable picture is said when it is read as the input
        carried = prompts_of(text) if text else None
    if carried is None:
        raise InvalidRequest("give --prompt" + (f": {args.image} carries no parameters to take it from."
                                                if args.image is not None else "."))
    print(f"the prompt of {args.image}: {carried[0]!r}" + (f", negative {carried[1]!r}" if carried[1] else ""),
          file=sys.stderr)
    return carried[0], carried[1] if args.negative is None else args.negative


def _inputs(args: argparse.Namespace) -> dict:
    """The mode and its input pictures (as PNG bytes) from the command line."""
    import io

    from PIL import Image, UnidentifiedImageError

    if args.end_prompt is not None or args.end_seed is not None:
        return {"mode": Mode.INTERPOLATE}
    if args.image is None:
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
