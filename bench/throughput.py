"""Images per minute through the whole bot vs a bare diffusers loop on the same model, side by side.

    python bench/throughput.py [--model shapes] [--jobs 20] [--steps 20] [--members 4] [--rounds 1]
                               [--size N] [--sampler "DPM++ 2M"] [--guidance 7] [--device auto] [--dtype auto]
                               [--max-batch 1] [--threads N] [--set NAME=VALUE ...]

Whole bot: the fake Discord runs in this process and `python -m bot` (with its engine process)
against it. After one untimed warm-up job, `--jobs` /dream interactions are sent at once from
`--members` members (one picture each, fixed seeds, explicit steps, guidance and sampler; the
model's native size unless `--size`); the time runs from the first invoke to the last posted PNG.
The bot runs with MAX_BATCH=1 unless `--max-batch`, so that both sides make one picture per
pipeline call (bench/batching.py measures batching), and with queue limits that admit the burst.

Bare loop: a fresh `python` process loads the same model with StableDiffusionPipeline
(`from_pretrained`, or `from_single_file` for a checkpoint file), on the device and dtype the
engine resolves, with the engine's scheduler class for the sampler, the same torch threads, progress bar disabled, and
calls the pipeline once per image with the same prompts, seeds, size, steps and guidance (one
untimed warm-up call first). Nothing else: no safety check, no PNG, no IPC, no Discord.
The same process then times the engine's own loop (`engine.pipeline.Engine.generate` for the
same jobs: a fresh scheduler per job, the pipeline, the safety classifier, the PNG), so the gap
splits into what the engine adds and what the bot adds.

The ratio bot/bare (target >= 0.97) is what the bot costs on top of the pipeline. With
`--rounds N` the two alternate (bot first in odd rounds, bare first in even ones) and the ratio
is over the totals. Also printed: CPU seconds of the fake, the bot and the engine during the
timed burst, and the engine's own time per job as the bot recorded it (engine_seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

from harness import (
    PROMPTS,
    CpuMeter,
    add_bot_options,
    busy_seconds,
    clean_environment,
    described,
    dream,
    engine_line,
    machine,
    members,
    not_posted,
    outcomes,
    queue_room,
    running_bot,
    settings_from,
    thread_settings,
)

BARE = r'''
import json, sys, time
import torch
from diffusers import StableDiffusionPipeline
from pathlib import Path
from engine.loading import BUILTIN_MODELS, resolve_device, resolve_dtype
from engine.samplers import SCHEDULERS

spec = json.loads(sys.argv[1])
source = spec["model"]
path = Path(source).expanduser()
if source in BUILTIN_MODELS and not path.exists():
    path = BUILTIN_MODELS[source]
device = resolve_device(spec["device"])
dtype = resolve_dtype(spec["dtype"], device)
if path.is_file():
    pipe = StableDiffusionPipeline.from_single_file(str(path), dtype=dtype)
else:
    pipe = StableDiffusionPipeline.from_pretrained(str(path) if path.exists() else source, dtype=dtype)
pipe.to(device)
pipe.set_progress_bar_config(disable=True)
scheduler_cls, overrides = SCHEDULERS[spec["sampler"]]
pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **overrides)
size = spec["size"] or pipe.unet.config.sample_size * pipe.vae_scale_factor

def one(prompt, seed):
    return pipe(prompt=prompt, num_inference_steps=spec["steps"], guidance_scale=spec["guidance"], width=size,
                height=size, generator=torch.Generator(device).manual_seed(seed), output_type="pil").images[0]

one(spec["prompts"][0], spec["seeds"][0] + 10_000)  # warm-up, untimed
if device.type == "cuda":
    torch.cuda.synchronize()
started = time.perf_counter()
for prompt, seed in zip(spec["prompts"], spec["seeds"]):
    one(prompt, seed)
if device.type == "cuda":
    torch.cuda.synchronize()
bare_seconds = time.perf_counter() - started
pipe_scheduler, has_checker = pipe.scheduler, pipe.safety_checker is not None
del pipe

# The engine's own loop, in this process: what `python -m engine serve` does per job (a fresh
# scheduler, the pipeline, the safety classifier, the PNG), without the bot, IPC or Discord.
from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from engine.pipeline import Engine

engine = Engine.load(EngineSettings(_env_file=None, sd_model=source, sd_device=spec["device"], sd_dtype=spec["dtype"]))
def request(prompt, seed):
    return GenerateRequest(prompt=prompt, num_inference_steps=spec["steps"], guidance_scale=spec["guidance"],
                           seed=seed, width=spec["size"], height=spec["size"], scheduler=spec["sampler"])
engine.generate(0, request(spec["prompts"][0], spec["seeds"][0] + 10_000))  # warm-up, untimed
started = time.perf_counter()
split = {}
for i, (prompt, seed) in enumerate(zip(spec["prompts"], spec["seeds"]), 1):
    for name, seconds in engine.generate(i, request(prompt, seed)).timings.items():
        split[name] = split.get(name, 0.0) + seconds
engine_seconds = time.perf_counter() - started
print(json.dumps({"seconds": bare_seconds, "engine_seconds": engine_seconds, "engine_split": split,
                  "images": len(spec["prompts"]),
                  "size": size, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                  "scheduler": type(pipe_scheduler).__name__, "threads": torch.get_num_threads(),
                  "safety_checker": has_checker, "engine_safety": engine.safety.name}))
'''


def bare(args: argparse.Namespace, prompts: list[str], seeds: list[int]) -> dict:
    spec = dict(model=args.model, device=args.device, dtype=args.dtype, sampler=args.sampler, steps=args.steps,
                guidance=args.guidance, size=args.size, prompts=prompts, seeds=seeds)
    machine, ours, started = busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    out = subprocess.run([sys.executable, "-c", BARE, json.dumps(spec)], capture_output=True, text=True,
                         env={**clean_environment(), **thread_settings(args.threads)})
    if out.returncode:
        raise SystemExit(f"the bare diffusers loop failed:\n{out.stderr[-4000:]}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = children.ru_utime + children.ru_stime - ours.ru_utime - ours.ru_stime
    others = max(0.0, busy_seconds() - machine - used) / (time.monotonic() - started)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "others": others}


async def whole_bot(args: argparse.Namespace, prompts: list[str], seeds: list[int]) -> dict:
    async with running_bot(args.model, **bot_settings(args)) as (fake, bot):
        people = members(fake, args.members)
        options = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, width=args.size,
                       height=args.size)
        warm = await dream(fake, people[0], prompts[0], seed=seeds[0] + 10_000, **options)
        [warmed] = await outcomes([warm], args.timeout)
        if not warmed.posted:
            raise SystemExit(f"the warm-up job posted no picture: {warmed.text!r}")
        meter = CpuMeter(bot)
        sent = [await dream(fake, people[i % len(people)], prompt, seed=seed, **options)
                for i, (prompt, seed) in enumerate(zip(prompts, seeds))]
        results = await outcomes(sent, args.timeout)
        meter.stop()
        done = [r.at for r in results if r.at is not None]
        wall = (max(done) if done else time.monotonic()) - sent[0].sent_at
        rows = [row for row in bot.jobs() if row["seed"] in set(seeds)]
        return {"seconds": wall, "images": sum(r.images for r in results), "jobs": len(results),
                "not_posted": not_posted(results), "cpu": meter.summary(wall), "engine": engine_line(bot),
                "engine_seconds": sum(row["engine_seconds"] or 0 for row in rows),
                "sizes": sorted({f"{row['width']}x{row['height']}" for row in rows})}


def bot_settings(args: argparse.Namespace) -> dict[str, str]:
    settings = {"SD_DEVICE": args.device, "SD_DTYPE": args.dtype, "MAX_STEPS": str(max(args.steps, 50)),
                "MAX_BATCH": str(args.max_batch), **queue_room(args.jobs + 1, args.members)}
    if args.size:
        settings.update(MAX_WIDTH=str(max(args.size, 1024)), MAX_HEIGHT=str(max(args.size, 1024)))
    return {**settings, **settings_from(args.set, args.threads)}


def per_minute(run: dict) -> float:
    return run["images"] / run["seconds"] * 60 if run["seconds"] > 0 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bot_options(parser)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="width and height (default: the model's native size)")
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--device", default="auto", help="SD_DEVICE for both")
    parser.add_argument("--dtype", default="auto", help="SD_DTYPE for both")
    parser.add_argument("--max-batch", type=int, default=1,
                        help="the bot's MAX_BATCH (default 1: one job per pipeline call, like the bare loop)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate bot and bare this many times")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a burst's results")
    args = parser.parse_args()

    print("throughput: images per minute through the whole bot (fake Discord -> posted PNG) vs a bare "
          "diffusers loop, same model, size, steps, sampler, guidance, prompts and seeds, in one run")
    print(f"machine: {machine()}")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.jobs)]
    seeds = [1000 + i for i in range(args.jobs)]
    bots, bares = [], []
    for round_ in range(args.rounds):
        order = ("bot", "bare") if round_ % 2 == 0 else ("bare", "bot")
        for which in order:
            if which == "bot":
                bots.append(asyncio.run(whole_bot(args, prompts, seeds)))
            else:
                bares.append(bare(args, prompts, seeds))
        b, r = bots[-1], bares[-1]
        print(f"round {round_ + 1} ({' then '.join(order)}): bot {b['images']} images in {b['seconds']:.2f} s, "
              f"bare loop {r['images']} in {r['seconds']:.2f} s, engine loop {r['images']} in "
              f"{r['engine_seconds']:.2f} s; bot / bare {per_minute(b) / per_minute(r):.3f}")
        print(f"  bot: CPU during the burst: {b['cpu']}; engine_seconds recorded by the bot "
              f"{b['engine_seconds']:.2f} s = {b['engine_seconds'] / b['seconds']:.0%} of the wall time; "
              f"jobs that posted nothing: {b['not_posted']}")
        names = {"generate": "pipeline", "safety": "safety check and PNG"}
        split = ", ".join(f"{names.get(name, name)} {seconds:.2f} s" for name, seconds in r["engine_split"].items())
        print(f"  engine loop, as Engine.generate times itself: {split}; other processes used {r['others']:.2f} "
              f"cores on average while the bare and engine loops ran (model loading included)")

    b0, r0 = bots[0], bares[0]
    print(f"model {args.model}: bot's {b0['engine']}, sizes recorded {', '.join(b0['sizes'])}; bare loop "
          f"{r0['size']}x{r0['size']} on {r0['device']} ({r0['dtype']}), {r0['scheduler']}, {r0['threads']} torch "
          f"threads, pipeline safety checker {'on' if r0['safety_checker'] else 'none'}; engine loop safety "
          f"checker {r0['engine_safety']}")
    print(f"{args.jobs} jobs x 1 image, {args.steps} steps, {args.sampler}, guidance {args.guidance:g}, "
          f"{args.members} members, {args.rounds} round(s), one untimed warm-up image each")
    print(f"bot settings: {described(bot_settings(args))}")
    images = sum(r["images"] for r in bares)
    rates = {
        "whole bot": sum(b["images"] for b in bots) / sum(b["seconds"] for b in bots) * 60,
        "engine loop (no bot)": images / sum(r["engine_seconds"] for r in bares) * 60,
        "bare diffusers loop": images / sum(r["seconds"] for r in bares) * 60,
    }
    print(f"{'':<24}{'images/min':>12}{'s/image':>10}{'/ bare':>9}")
    for name, rate in rates.items():
        print(f"{name:<24}{rate:>12.1f}{60 / rate if rate else float('inf'):>10.3f}"
              f"{rate / rates['bare diffusers loop']:>9.3f}")
    print(f"bot / bare: {rates['whole bot'] / rates['bare diffusers loop']:.3f} (target >= 0.97)")
    print(f"engine loop / bare: {rates['engine loop (no bot)'] / rates['bare diffusers loop']:.3f} (what the engine "
          f"adds: safety check, PNG, a scheduler per job, and their effect on the pipeline)")
    print(f"bot / engine loop: {rates['whole bot'] / rates['engine loop (no bot)']:.3f} (what the bot adds: IPC, "
          f"queue, store, Discord)")
    lost = sum(b["jobs"] for b in bots) - sum(b["images"] for b in bots)
    return 1 if lost else 0

if __name__ == "__main__":
    raise SystemExit(main())
