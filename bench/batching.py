"""Throughput with batching off vs on: the same burst of compatible /dream jobs through the whole
bot with MAX_BATCH=1 and with MAX_BATCH=4, side by side in one run.

    python bench/batching.py [--model shapes] [--jobs 16] [--members 4] [--steps 20] [--size N]
                             [--batch 4] [--rounds 1] [--set NAME=VALUE ...]

The fake Discord runs in this process; each setting gets a fresh `python -m bot` (fresh engine,
fresh database). After one untimed warm-up job, `--jobs` /dream interactions are sent at once
from `--members` members, all compatible for batching (same size, steps, sampler and guidance:
GenerateRequest.batch_key), each with its own prompt and seed; the time runs from the first
invoke to the last posted picture. With `--rounds N` the settings alternate (off first in odd
rounds) and the ratio is over the totals.

Batching promises that each picture is the one its job gives alone with its seed: the script
compares every job's picture between the two settings and prints the largest pixel difference
(0: identical). A bot that has no MAX_BATCH yet ignores the setting, so both runs are the same
and the ratio is about 1. If the bot logs "batch of K" when it sends a batch, the sizes are
counted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import time
from collections import Counter

from harness import (
    PROMPTS,
    CpuMeter,
    add_bot_options,
    described,
    dream,
    engine_line,
    machine,
    members,
    not_posted,
    outcome,
    outcomes,
    pictures,
    queue_room,
    running_bot,
    settings_from,
)
from PIL import Image, ImageChops

BATCH_LINE = re.compile(r"batch of (\d+)", re.IGNORECASE)


async def burst(args: argparse.Namespace, settings: dict[str, str]) -> dict:
    async with running_bot(args.model, **settings) as (fake, bot):
        people = members(fake, args.members)
        options = dict(steps=args.steps, width=args.size, height=args.size, guidance=args.guidance,
                       sampler=args.sampler)
        warm = await outcome(await dream(fake, people[0], PROMPTS[0], seed=10_000, **options), 600)
        if not warm.posted:
            raise SystemExit(f"the warm-up job posted no picture: {warm.text!r}")
        log_before = len(bot.log())
        meter = CpuMeter(bot)
        sent = [await dream(fake, people[i % len(people)], PROMPTS[i % len(PROMPTS)], seed=1 + i, **options)
                for i in range(args.jobs)]
        results = await outcomes(sent, args.timeout)
        meter.stop()
        done = [r.at for r in results if r.at is not None]
        wall = (max(done) if done else time.monotonic()) - sent[0].sent_at
        batches = Counter(int(k) for k in BATCH_LINE.findall(bot.log()[log_before:]))
        return {"seconds": wall, "images": sum(r.images for r in results), "not_posted": not_posted(results),
                "cpu": meter.summary(wall), "engine": engine_line(bot), "batches": batches,
                "pictures": [pictures(i) for i in sent]}


def difference(a: bytes, b: bytes) -> int:
    """The largest difference of any channel of any pixel between two pictures (255 if sizes differ)."""
    first, second = (Image.open(io.BytesIO(data)).convert("RGB") for data in (a, b))
    if first.size != second.size:
        return 255
    return max(high for _, high in ImageChops.difference(first, second).getextrema())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bot_options(parser)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="width and height (default: the model's native size)")
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--batch", type=int, default=4, help="MAX_BATCH of the batching run")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two settings this many times")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a burst's results")
    args = parser.parse_args()
    if args.batch < 2:
        parser.error("--batch is the batching run's MAX_BATCH: 2 or more")
    common = {**queue_room(args.jobs + 1, args.members), **settings_from(args.set, args.threads)}
    labels = {1: "MAX_BATCH=1 (off)", args.batch: f"MAX_BATCH={args.batch}"}

    print(f"batching: images per minute for one burst of {args.jobs} compatible /dream jobs through the whole bot, "
          f"batching off vs on, in one run")
    print(f"machine: {machine()}")
    runs: dict[int, list[dict]] = {1: [], args.batch: []}
    for round_ in range(args.rounds):
        order = (1, args.batch) if round_ % 2 == 0 else (args.batch, 1)
        for size in order:
            run = asyncio.run(burst(args, {**common, "MAX_BATCH": str(size)}))
            runs[size].append(run)
            print(f"round {round_ + 1}, {labels[size]}: {run['images']} images in {run['seconds']:.2f} s "
                  f"({run['images'] / run['seconds'] * 60:.1f}/min); CPU {run['cpu']}; batches logged "
                  f"{dict(sorted(run['batches'].items())) or 'none'}; not posted: {run['not_posted']}")

    first = runs[1][0]
    print(f"model {args.model}: {first['engine']}; {args.jobs} jobs x 1 image, {args.steps} steps, {args.sampler}, "
          f"guidance {args.guidance:g}, {f'{args.size}x{args.size}' if args.size else 'native size'}, from "
          f"{args.members} members; bot settings: {described(common)} plus MAX_BATCH")
    rates = {size: sum(r["images"] for r in rs) / sum(r["seconds"] for r in rs) * 60 for size, rs in runs.items()}
    print(f"{'':<22}{'images/min':>12}{'s/image':>10}")
    for size, rate in rates.items():
        print(f"{labels[size]:<22}{rate:>12.1f}{60 / rate if rate else float('inf'):>10.3f}")
    print(f"MAX_BATCH={args.batch} / MAX_BATCH=1: {rates[args.batch] / rates[1]:.3f}")
    pairs = [(a, b) for a, b in zip(first["pictures"], runs[args.batch][0]["pictures"]) if a and b]
    if pairs:
        worst = max(difference(x, y) for a, b in pairs for x, y in zip(a, b))
        print(f"same job, same seed, off vs on: largest pixel difference {worst} of 255 over {len(pairs)} jobs "
              f"(0: identical pictures)")
    logged = sum(sum(r["batches"].values()) for r in runs[args.batch])
    if not logged:
        print(f"the bot logged no batch with MAX_BATCH={args.batch}: if it has no batching yet, the two runs are "
              f"the same bot and the ratio shows only the noise")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
