"""What the safety check and PNG of each picture cost the denoising, in line or beside it.

    python bench/check_overlap.py [--model shapes] [--blocks 8] [--pictures 3] [--steps 20] [--size N]
                                  [--sampler "DPM++ 2M"] [--guidance 7] [--safety auto] [--threads 1]

One process loads the model as bench/throughput.py's bare loop does (StableDiffusionPipeline, the
engine's scheduler for the sampler, on the device and dtype the engine resolves) and the safety
checker the engine would pick for it (SD_SAFETY_CHECKER's rule, `--safety`), and makes pictures in
blocks of `--pictures`, each block in each of four ways, the ways' order reversed from one block
to the next so that the machine's drift falls on all of them alike:

- none: the pictures alone (the bare loop);
- in line: each picture scored and encoded as a PNG with its parameters before the next is begun
  (what `Engine.generate` does, and the engine did before `engine.server.Finishing`);
- thread: each picture scored and encoded on a second thread while the next one is made, one
  picture waiting at most (what `engine.server.Finishing` does);
- process: the same in a second process, which shares no interpreter lock with the denoising.

It prints each way's seconds and its pictures per second over none's: what the check costs the
pictures in line, and what it still costs them from beside (the two share the machine's caches
and memory; the thread also its interpreter lock). The ratio bench/throughput.py measures for the
whole bot can be no better than the thread's here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import threading
import time
from collections.abc import Callable

from harness import PROMPTS, machine

WAYS = ("none", "in line", "thread", "process")


def load(spec: dict):
    """The bare pipeline and the engine's safety checker for it."""
    import torch
    from bare import bare_pipeline

    from engine.loading import pick_safety_checker
    from engine.pipeline import quiet_library_progress_bars

    quiet_library_progress_bars()
    torch.set_num_threads(spec["threads"])
    pipe, device, _ = bare_pipeline(spec["model"], spec["device"], spec["dtype"], spec["sampler"])
    safety = pick_safety_checker(pipe, spec["safety"], spec["model"])
    return pipe, safety, device


def finisher(safety) -> Callable:
    """Score one picture and encode it as the engine does (`engine.finishing.Unchecked.finish`)."""
    from engine import imaging

    def finish(image) -> None:
        [score] = safety.scores([image])
        imaging.png(image, f"a picture, score {score}")

    return finish


def checking_process(spec: dict, pictures: multiprocessing.Queue, done: multiprocessing.Queue) -> None:
    """The second process's loop: pictures in (mode, size, bytes), one True out for each checked."""
    from PIL import Image

    _, safety, _ = load(spec)
    finish = finisher(safety)
    done.put(True)  # loaded
    while (picture := pictures.get()) is not None:
        mode, size, data = picture
        finish(Image.frombytes(mode, size, data))
        done.put(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes", help="a built-in name (shapes), folder, file or hub id")
    parser.add_argument("--blocks", type=int, default=8, help="blocks of pictures made each way")
    parser.add_argument("--pictures", type=int, default=3, help="pictures per block")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="width and height (default: the model's own)")
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--safety", default="auto", choices=["auto", "checkpoint", "opennsfw"],
                        help="SD_SAFETY_CHECKER")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each process (default 1)")
    args = parser.parse_args(argv)
    spec = {"model": args.model, "device": args.device, "dtype": args.dtype, "sampler": args.sampler,
            "safety": args.safety, "threads": args.threads}
    print("check overlap: the safety check and PNG of each picture, none, in line, on a thread beside the "
          "denoising, or in a process beside it, in one run")
    print(f"machine: {machine()}")

    import torch

    pipe, safety, device = load(spec)
    finish = finisher(safety)
    size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor

    def make(index: int):
        return pipe(prompt=PROMPTS[index % len(PROMPTS)], num_inference_steps=args.steps,
                    guidance_scale=args.guidance, width=size, height=size,
                    generator=torch.Generator(device).manual_seed(index), output_type="pil").images[0]

    # The thread: as engine.server.Finishing, a hand-off of one picture.
    handed: queue.Queue = queue.Queue(maxsize=1)

    def finishing() -> None:
        while (image := handed.get()) is not None:
            finish(image)
            handed.task_done()

    thread = threading.Thread(target=finishing, name="finishing", daemon=True)
    thread.start()
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch or onnxruntime state forked
    to_process: multiprocessing.Queue = context.Queue(maxsize=1)
    from_process: multiprocessing.Queue = context.Queue()
    process = context.Process(target=checking_process, args=(spec, to_process, from_process), daemon=True)
    process.start()
    from_process.get()  # loaded

    def block(way: str, first: int) -> float:
        started = time.perf_counter()
        sent = 0
        for index in range(first, first + args.pictures):
            image = make(index)
            if way == "in line":
                finish(image)
            elif way == "thread":
                handed.put(image)
            elif way == "process":
                to_process.put((image.mode, image.size, image.tobytes()))
                sent += 1
        handed.join()
        for _ in range(sent):
            from_process.get()
        return time.perf_counter() - started

    for way in WAYS:  # warm-up, untimed: each way's first picture and check
        block(way, 10_000)
    seconds = dict.fromkeys(WAYS, 0.0)
    for number in range(args.blocks):
        for way in (WAYS if number % 2 == 0 else WAYS[::-1]):
            seconds[way] += block(way, number * args.pictures)
    handed.put(None)
    to_process.put(None)
    process.join(timeout=30)

    pictures = args.blocks * args.pictures
    print(f"model {args.model}: {size}x{size} on {device}, {args.steps} steps, {args.sampler}, guidance "
          f"{args.guidance:g}, safety checker {safety.name}, {args.threads} torch thread(s) in each process; "
          f"{args.blocks} blocks of {args.pictures} pictures each way")
    print(f"{'':18}{'seconds':>9}{'pictures/s':>12}{'/ none':>9}")
    for way in WAYS:
        print(f"{way:18}{seconds[way]:9.2f}{pictures / seconds[way]:12.3f}{seconds['none'] / seconds[way]:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
