"""Seconds per picture on a CPU host: a few-step setup (LCM, 4 steps, guidance 1) vs the ordinary one
(DPM++ 2M, 25 steps, guidance 7), side by side in one run, through the engine's own path.

    python bench/few_steps.py [--size 512] [--rounds 1] [--steps-few 4] [--steps-many 25]
                              [--sampler-few LCM] [--guidance-few 1] [--sampler-many "DPM++ 2M"]
                              [--guidance-many 7] [--model ID_OR_PATH] [--device cpu] [--threads N]
    python bench/few_steps.py --smoke        # a tiny model at 64x64: checks the plumbing in seconds

Model: an SD 1.5-architecture model with random weights built in code (bench/full_size.py: the stock
configs at full size, so the real arithmetic per step; the pictures are noise), saved as a diffusers
folder in a temporary directory (about 4 GB in float32, removed at the end); `--model` puts a real
model (a hub id or a diffusers folder) in its place, and `--smoke` a tiny one (engine/tiny.py).

Both setups run in this process on one `engine.pipeline.Engine` (`Engine.load(EngineSettings(...))`)
and `engine.generate` with a `GenerateRequest` each, as `python -m engine generate` does: a fresh
sampler per job, the pipeline, the safety check and a PNG of the picture (kept even if the classifier
flags the noise, so that every picture is encoded). Guidance <= 1 runs no unconditional pass and
encodes no negative prompt (`engine.prompts.guided`): one UNet pass of batch 1 per step, where
guidance 7 runs batch 2. Each setup first makes one untimed warm-up picture (2 steps: every kernel at
the timed shapes); then each round makes one picture per setup, the order alternating (few first in
odd rounds, many first in even ones), one seed per round shared by both.

It prints the machine, the model and settings, a line per round, then per setup: seconds per picture
(over the rounds), the pipeline's and the safety check and PNG's share as the engine times itself,
and the UNet calls of one picture (calls x batch); then the ratio many / few.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import PROMPTS, machine, thread_settings

from dreambot.request import SAMPLERS

PROMPT = PROMPTS[0]
NEGATIVE = "blurry, lowres, watermark"  # encoded only where guided: the few-step setup leaves it out
WARM_STEPS = 2
SMOKE_SIZE = 64  # engine/tiny.py's native size


@dataclass(frozen=True)
class Setup:
    name: str
    sampler: str
    steps: int
    guidance: float


@dataclass
class Measured:
    """One setup's timed pictures."""

    seconds: list[float] = field(default_factory=list)  # wall time of each engine.generate
    pipeline: list[float] = field(default_factory=list)  # the engine's own "generate" timing
    finishing: list[float] = field(default_factory=list)  # its "safety" timing: the check and the PNG
    unet_batches: list[int] = field(default_factory=list)  # the last picture's UNet calls, by batch size

    @property
    def per_picture(self) -> float:
        return sum(self.seconds) / len(self.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny random model at 64x64 (engine/tiny.py): checks that both setups run, in seconds")
    parser.add_argument("--size", type=int, default=None, help="width and height (default 512; smoke 64)")
    parser.add_argument("--rounds", type=int, default=1, help="timed pictures per setup, the order alternating")
    parser.add_argument("--steps-few", type=int, default=4)
    parser.add_argument("--steps-many", type=int, default=25)
    parser.add_argument("--sampler-few", default="LCM", choices=SAMPLERS)
    parser.add_argument("--sampler-many", default="DPM++ 2M", choices=SAMPLERS)
    parser.add_argument("--guidance-few", type=float, default=1.0, help="<= 1: no unconditional pass")
    parser.add_argument("--guidance-many", type=float, default=7.0)
    parser.add_argument("--model", help="a real model (hub id or diffusers folder) instead of random weights")
    parser.add_argument("--device", default="cpu", help="SD_DEVICE (default cpu: this measures a CPU host)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, one per core); 1 keeps figures repeatable on a "
                             "machine shared with other work")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    size = args.size or (SMOKE_SIZE if args.smoke else 512)
    os.environ.update(thread_settings(args.threads))  # before torch starts: OpenMP reads it once
    few = Setup("few", args.sampler_few, args.steps_few, args.guidance_few)
    many = Setup("many", args.sampler_many, args.steps_many, args.guidance_many)

    print(f"few steps: seconds per {size}x{size} picture through the engine (Engine.generate: pipeline, safety "
          f"check, PNG), a few-step setup vs the ordinary one, side by side in one run")
    if args.smoke:
        print("SMOKE RUN: a tiny random-weight model; its figures only show that both setups run")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="dreambot-few-steps-") as tmp:
        source, what, written = prepare(args, Path(tmp))
        return measure(args, size, few, many, source, what, written)


def prepare(args: argparse.Namespace, work: Path) -> tuple[str, str, float]:
    """The model to load: the given one, or one written to `work`; what it is, and seconds to write it."""
    if args.model:
        return args.model, "given", 0.0
    import full_size

    from engine.tiny import write_tiny_model

    started = time.perf_counter()
    if args.smoke:
        folder = write_tiny_model(work / "sd15", family="sd1")
        what = "tiny SD 1.x with random weights, engine/tiny.py"
    else:
        folder = full_size.write("sd15", work / "sd15")
        what = "SD 1.5 architecture at full size with random weights, bench/full_size.py"
    return str(folder), what, time.perf_counter() - started


def measure(args: argparse.Namespace, size: int, few: Setup, many: Setup, source: str, what: str,
            written: float) -> int:
    import torch

    from dreambot.request import GenerateRequest
    from dreambot.settings import EngineSettings
    from engine import prompts
    from engine.pipeline import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    engine = Engine.load(EngineSettings(_env_file=None, sd_model=source, sd_device=args.device))
    loaded = time.perf_counter() - started
    batches: list[int] = []
    engine.pipe.unet.register_forward_pre_hook(lambda module, inputs: batches.append(int(inputs[0].shape[0])))

    def request(setup: Setup, steps: int, seed: int) -> GenerateRequest:
        return GenerateRequest(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps,
                               guidance_scale=setup.guidance, scheduler=setup.sampler, seed=seed, width=size,
                               height=size, keep_flagged=True)

    def described(setup: Setup) -> str:
        if prompts.guided(engine.pipe, setup.guidance):
            how = "guided: the unconditional pass doubles the UNet's batch, the negative prompt encoded"
        else:
            how = "unguided: one UNet pass per step, no negative prompt encoded"
        return f"{setup.name}: {setup.sampler}, {setup.steps} steps, guidance {setup.guidance:g} ({how})"

    print(f"model: {source} ({what}){f', written in {written:.1f} s' if written else ''}; loaded in {loaded:.1f} s "
          f"on {engine.device} ({str(engine.dtype).removeprefix('torch.')}), {torch.get_num_threads()} torch "
          f"threads, safety checker {engine.safety.name}")
    print(described(few))
    print(described(many))
    print(f"prompt {PROMPT!r}, negative {NEGATIVE!r}; {args.rounds} round(s) of one picture per setup, the order "
          f"alternating; one untimed warm-up picture of {WARM_STEPS} steps per setup first")

    warm = {}
    for setup in (few, many):
        began = time.perf_counter()
        engine.generate(0, request(setup, min(setup.steps, WARM_STEPS), 10_000))
        warm[setup.name] = time.perf_counter() - began
    print(f"warm-up: few {warm['few']:.2f} s, many {warm['many']:.2f} s")

    measured = {setup.name: Measured() for setup in (few, many)}
    for round_ in range(args.rounds):
        order = (few, many) if round_ % 2 == 0 else (many, few)
        for setup in order:
            batches.clear()
            began = time.perf_counter()
            result = engine.generate(round_ + 1, request(setup, setup.steps, 1000 + round_))
            seconds = time.perf_counter() - began
            if not result.images or not result.images[0].data:
                raise SystemExit(f"{setup.name}: the engine gave back no picture")
            m = measured[setup.name]
            m.seconds.append(seconds)
            m.pipeline.append(result.timings.get("generate", 0.0))
            m.finishing.append(result.timings.get("safety", 0.0))
            m.unet_batches = list(batches)
        f, n = measured["few"].seconds[-1], measured["many"].seconds[-1]
        print(f"round {round_ + 1} ({' then '.join(s.name for s in order)}): few {f:.2f} s, many {n:.2f} s; "
              f"many / few {n / f:.2f}")

    print(f"{'setup':<7}{'sampler':<11}{'steps':>6}{'guidance':>10}{'UNet calls':>12}{'s/picture':>11}"
          f"{'pipeline s':>12}{'safety+PNG s':>14}")
    for setup in (few, many):
        m = measured[setup.name]
        print(f"{setup.name:<7}{setup.sampler:<11}{setup.steps:>6}{setup.guidance:>10g}{unet_calls(m.unet_batches):>12}"
              f"{m.per_picture:>11.3f}{sum(m.pipeline) / len(m.pipeline):>12.3f}"
              f"{sum(m.finishing) / len(m.finishing):>14.3f}")
    print(f"many / few: {measured['many'].per_picture / measured['few'].per_picture:.2f} (seconds per picture)")
    return 0


def unet_calls(batches: list[int]) -> str:
    """"4 x 1": four UNet calls of batch 1; mixed batches listed."""
    if batches and len(set(batches)) == 1:
        return f"{len(batches)} x {batches[0]}"
    return "+".join(map(str, batches)) or "0"


if __name__ == "__main__":
    raise SystemExit(main())
