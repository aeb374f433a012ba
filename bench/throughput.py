"""Images per minute through the whole bot vs a bare diffusers loop on the same model, side by side.

    python bench/throughput.py [--model shapes] [--jobs 20] [--steps 20] [--members 4] [--rounds 1]
                               [--size N] [--sampler "DPM++ 2M"] [--guidance 7] [--device auto] [--dtype auto]
                               [--max-batch 1] [--threads N] [--slice 0.5] [--set NAME=VALUE ...]

Three contenders make the same pictures (same model, prompts, seeds, size, steps, guidance, sampler):

- Whole bot: the fake Discord runs in this process and `python -m bot` (with its engine process)
  against it. After one untimed warm-up job, `--jobs` /dream interactions are sent at once from
  `--members` members (one picture each); its time runs from the first invoke to the last posted
  PNG. The bot runs with MAX_BATCH=1 unless `--max-batch`, so that every contender makes one
  picture per pipeline call (bench/batching.py measures batching), and with queue limits that
  admit the burst.
- Bare loop: a `python` process that loads the model with StableDiffusionPipeline (`from_pretrained`,
  or `from_single_file` for a checkpoint file) on the device and dtype the engine resolves, with
  the engine's scheduler class for the sampler and its progress bar off, and calls the pipeline
  once per picture (one untimed warm-up call first). Nothing else: no safety check, no PNG, no
  IPC, no Discord.
- Engine loop: a `python` process that runs `engine.pipeline.Engine.generate` for the same jobs (a
  fresh scheduler per job, the pipeline, the safety classifier, the PNG, one after another), so
  the gap splits into what the engine adds and what the bot adds.

All three run at once, in turns (`--slice`, default 0.5 s): each turn one contender's processes run
and the others' are stopped (SIGSTOP), so every contender meets the same machine. A shared host's
speed drifts by 10-20 % within a minute (bench/throughput.py measured the same 40 pictures of the
bare loop at 29.6 and 35.7 s four minutes apart): timed one after another, that drift, not the
bot, decides the ratio. Each contender's time is the sum of its own turns between its start and
its end. `--slice 0` runs them one after another instead (each to its end, in turn). On a GPU, work
a stopped process already queued on the device finishes in the next turn: there the figures carry
that bleed, for every contender alike.

The ratio bot/bare (target >= 0.97) is what the bot costs on top of the pipeline. With
`--rounds N` the turns start with another contender each round, and the ratio is over the totals.
Also printed: CPU seconds of the fake, the bot and the engine during the timed burst.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import suppress

from harness import (
    PROMPTS,
    REPO,
    CpuMeter,
    add_bot_options,
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
    tail,
    thread_settings,
)

# One process's loop over the jobs: `bare` (StableDiffusionPipeline alone) or `engine` (Engine.generate).
# It says "ready" once loaded and warmed up, starts on a line from stdin, and ends with a JSON line.
LOOP = r'''
import json, sys, time

import torch

spec = json.loads(sys.argv[1])
source = spec["model"]
if spec["which"] == "bare":
    from bench.bare import bare_pipeline

    pipe, device, dtype = bare_pipeline(source, spec["device"], spec["dtype"], spec["sampler"])
    size = spec["size"] or pipe.unet.config.sample_size * pipe.vae_scale_factor
    about = {"size": size, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
             "scheduler": type(pipe.scheduler).__name__, "safety_checker": pipe.safety_checker is not None}

    def one(prompt, seed):
        pipe(prompt=prompt, num_inference_steps=spec["steps"], guidance_scale=spec["guidance"], width=size,
             height=size, generator=torch.Generator(device).manual_seed(seed), output_type="pil").images[0]
        return {}
else:
    from dreambot.request import GenerateRequest
    from dreambot.settings import EngineSettings
    from engine.pipeline import Engine

    engine = Engine.load(EngineSettings(_env_file=None, sd_model=source, sd_device=spec["device"],
                                        sd_dtype=spec["dtype"]))
    device = engine.device
    about = {"engine_safety": engine.safety.name}

    def one(prompt, seed):
        request = GenerateRequest(prompt=prompt, num_inference_steps=spec["steps"], guidance_scale=spec["guidance"],
                                  seed=seed, width=spec["size"], height=spec["size"], scheduler=spec["sampler"])
        return engine.generate(0, request).timings

one(spec["prompts"][0], spec["seeds"][0] + 10_000)  # warm-up, untimed
if device.type == "cuda":
    torch.cuda.synchronize()
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()  # the same clock as the parent's
split = {}
for prompt, seed in zip(spec["prompts"], spec["seeds"]):
    for name, seconds in one(prompt, seed).items():
        split[name] = split.get(name, 0.0) + seconds
if device.type == "cuda":
    torch.cuda.synchronize()
ended = time.monotonic()
print(json.dumps({"started": started, "ended": ended, "split": split, "images": len(spec["prompts"]),
                  "threads": torch.get_num_threads(), **about}), flush=True)
'''


class Turns:
    """Runs the contenders in turns of `slice_seconds`: each turn, one contender's processes run
    and the others' are stopped (SIGSTOP / SIGCONT). Records each turn, so that a contender's own
    time between two moments (`own`) counts only its turns. With `slice_seconds` 0 a turn lasts
    until the contender is `done`."""

    def __init__(self, slice_seconds: float) -> None:
        self.slice = slice_seconds
        self.pids: dict[str, list[int]] = {}
        self.turns: list[tuple[str, float, float]] = []  # (contender, start, end), monotonic
        self._done: dict[str, asyncio.Event] = {}

    def add(self, name: str, pids: Iterable[int | None]) -> None:
        self.pids[name] = [pid for pid in pids if pid is not None]
        self._done[name] = asyncio.Event()
        self._signal(name, signal.SIGSTOP)

    def done(self, name: str) -> None:
        self._done[name].set()

    async def run(self, first: int = 0) -> None:
        """Turns until every contender is done, starting with the `first` one added."""
        order = list(self.pids)
        order = order[first % len(order):] + order[:first % len(order)]
        while waiting := [name for name in order if not self._done[name].is_set()]:
            for name in waiting:
                if self._done[name].is_set():
                    continue
                self._signal(name, signal.SIGCONT)
                started = time.monotonic()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._done[name].wait(), self.slice or None)
                if len(waiting) > 1 or self._done[name].is_set():
                    self._signal(name, signal.SIGSTOP)
                self.turns.append((name, started, time.monotonic()))

    def release(self) -> None:
        for name in self.pids:
            self._signal(name, signal.SIGCONT)

    def own(self, name: str, start: float, end: float) -> float:
        """Seconds of `name`'s turns between `start` and `end`."""
        return sum(max(0.0, min(e, end) - max(s, start)) for who, s, e in self.turns if who == name)

    def count(self, name: str) -> int:
        return sum(who == name for who, _, _ in self.turns)

    def _signal(self, name: str, sig: signal.Signals) -> None:
        for pid in self.pids[name]:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)


class Loop:
    """A bare or engine loop process: started, then `ready`, then `go`, then its `result`."""

    def __init__(self, which: str, spec: dict, env: dict[str, str]) -> None:
        self.which, self.spec, self.env = which, {**spec, "which": which}, env
        self.process: asyncio.subprocess.Process | None = None
        self._log = tempfile.TemporaryFile()

    async def start(self) -> Loop:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOOP, json.dumps(self.spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, env=self.env, cwd=REPO)
        return self

    async def ready(self) -> None:
        line = await self._line()
        if line != "ready":
            raise SystemExit(f"the {self.which} loop did not start ({line!r}):\n{self._stderr()}")

    def go(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def result(self) -> dict:
        line = await self._line()
        assert self.process is not None
        await self.process.wait()
        if self.process.returncode or not line.startswith("{"):
            raise SystemExit(f"the {self.which} loop failed:\n{self._stderr()}")
        return json.loads(line)

    def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.kill()

    async def _line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        return (await self.process.stdout.readline()).decode().strip()

    def _stderr(self) -> str:
        self._log.seek(0)
        return tail(self._log.read().decode(errors="replace"))


async def one_round(args: argparse.Namespace, prompts: list[str], seeds: list[int], first: int) -> dict:
    """The three contenders in turns, the `first` of them (bot, bare, engine) first."""
    spec = dict(model=args.model, device=args.device, dtype=args.dtype, sampler=args.sampler, steps=args.steps,
                guidance=args.guidance, size=args.size, prompts=prompts, seeds=seeds)
    env = {**clean_environment(), **thread_settings(args.threads), "PYTHONPATH": str(REPO)}
    loops = {which: Loop(which, spec, env) for which in ("bare", "engine")}
    try:
        for loop in loops.values():
            await loop.start()
        async with running_bot(args.model, **bot_settings(args)) as (fake, bot):
            people = members(fake, args.members)
            options = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, width=args.size,
                           height=args.size)
            warm = await dream(fake, people[0], prompts[0], seed=seeds[0] + 10_000, **options)
            [warmed] = await outcomes([warm], args.timeout)
            if not warmed.posted:
                raise SystemExit(f"the warm-up job posted no picture: {warmed.text!r}")
            for loop in loops.values():
                await loop.ready()

            turns = Turns(args.slice)
            turns.add("bot", [bot.process.pid, bot.engine_pid()])
            for which, loop in loops.items():
                assert loop.process is not None
                turns.add(which, [loop.process.pid])
            try:
                running = asyncio.create_task(turns.run(first))

                async def burst() -> dict:
                    meter = CpuMeter(bot)
                    sent = [await dream(fake, people[i % len(people)], prompt, seed=seed, **options)
                            for i, (prompt, seed) in enumerate(zip(prompts, seeds))]
                    results = await outcomes(sent, args.timeout)
                    turns.done("bot")
                    meter.stop()
                    done = [r.at for r in results if r.at is not None]
                    start, end = sent[0].sent_at, max(done) if done else time.monotonic()
                    return {"start": start, "end": end, "images": sum(r.images for r in results),
                            "jobs": len(results), "not_posted": not_posted(results), "meter": meter}

                async def looped(which: str) -> dict:
                    loops[which].go()
                    try:
                        return await loops[which].result()
                    finally:
                        turns.done(which)

                bot_run, bare_run, engine_run = await asyncio.gather(burst(), looped("bare"), looped("engine"))
                await running
            finally:
                turns.release()
            bot_run["seconds"] = turns.own("bot", bot_run["start"], bot_run["end"])
            meter = bot_run.pop("meter")
            meter.used.pop("other processes")  # the loops, in their turns
            bot_run["cpu"] = meter.summary(bot_run["seconds"])
            bot_run["engine"] = engine_line(bot)
            for run, which in ((bare_run, "bare"), (engine_run, "engine")):
                run["seconds"] = turns.own(which, run["started"], run["ended"])
            return {"bot": bot_run, "bare": bare_run, "engine": engine_run,
                    "turns": {name: turns.count(name) for name in turns.pids}}
    finally:
        for loop in loops.values():
            loop.stop()


def bot_settings(args: argparse.Namespace) -> dict[str, str]:
    settings = {"SD_DEVICE": args.device, "SD_DTYPE": args.dtype, "MAX_STEPS": str(max(args.steps, 50)),
                "MAX_BATCH": str(args.max_batch), **queue_room(args.jobs + 1, args.members)}
    if args.size:
        settings.update(MAX_WIDTH=str(max(args.size, 1024)), MAX_HEIGHT=str(max(args.size, 1024)))
    return {**settings, **settings_from(args.set, args.threads)}


def per_minute(images: int, seconds: float) -> float:
    return images / seconds * 60 if seconds > 0 else 0.0


NAMES = ("bot", "bare", "engine")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bot_options(parser)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="width and height (default: the model's native size)")
    parser.add_argument("--sampler", default="DPM++ 2M")
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--device", default="auto", help="SD_DEVICE for all three")
    parser.add_argument("--dtype", default="auto", help="SD_DTYPE for all three")
    parser.add_argument("--max-batch", type=int, default=1,
                        help="the bot's MAX_BATCH (default 1: one job per pipeline call, like the loops)")
    parser.add_argument("--rounds", type=int, default=1, help="run the three side by side this many times")
    parser.add_argument("--slice", type=float, default=0.5,
                        help="seconds of each turn (default 0.5); 0: one contender after another, each to its end")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a burst's results")
    args = parser.parse_args()
    if args.slice < 0:
        parser.error("--slice takes 0 or more seconds")

    print("throughput: images per minute through the whole bot (fake Discord -> posted PNG) vs a bare "
          "diffusers loop and the engine's own loop, same model, size, steps, sampler, guidance, prompts and "
          "seeds, side by side in one run")
    print(f"machine: {machine()}")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.jobs)]
    seeds = [1000 + i for i in range(args.jobs)]
    rounds = []
    for round_ in range(args.rounds):
        run = asyncio.run(one_round(args, prompts, seeds, round_))
        rounds.append(run)
        b, r, e = run["bot"], run["bare"], run["engine"]
        print(f"round {round_ + 1} (turns from the {NAMES[round_ % 3]}): bot {b['images']} images in "
              f"{b['seconds']:.2f} s, bare loop {r['images']} in {r['seconds']:.2f} s, engine loop {e['images']} "
              f"in {e['seconds']:.2f} s; bot / bare {r['seconds'] / b['seconds'] * b['images'] / r['images']:.3f}")
        print(f"  bot: CPU during the burst, in its turns: {b['cpu']}; jobs that posted nothing: {b['not_posted']}; "
              f"turns: {', '.join(f'{name} {count}' for name, count in run['turns'].items())}")

    b0, r0, e0 = rounds[0]["bot"], rounds[0]["bare"], rounds[0]["engine"]
    print(f"model {args.model}: bot's {b0['engine']}; bare loop {r0['size']}x{r0['size']} on {r0['device']} "
          f"({r0['dtype']}), {r0['scheduler']}, {r0['threads']} torch threads, pipeline safety checker "
          f"{'on' if r0['safety_checker'] else 'none'}; engine loop safety checker {e0['engine_safety']}")
    turn = f"turns of {args.slice:g} s" if args.slice else "one after another"
    print(f"{args.jobs} jobs x 1 image, {args.steps} steps, {args.sampler}, guidance {args.guidance:g}, "
          f"{args.members} members, {args.rounds} round(s) of the three in {turn}, one untimed warm-up image each")
    print(f"bot settings: {described(bot_settings(args))}")
    # Engine.generate's own timings hold the other contenders' turns too, wherever they fell: as
    # shares of its time, over every round, they are fair; as seconds they are not.
    split: dict[str, float] = {}
    for run in rounds:
        for name, seconds in run["engine"]["split"].items():
            if name != "total":
                split[name] = split.get(name, 0.0) + seconds
    names = {"generate": "pipeline", "safety": "safety check and PNG"}
    print("engine loop, as Engine.generate times itself: " + ", ".join(
        f"{names.get(name, name)} {seconds / (sum(split.values()) or 1.0):.1%}" for name, seconds in split.items()))
    labels = {"bot": "whole bot", "engine": "engine loop (no bot)", "bare": "bare diffusers loop"}
    rates = {label: per_minute(sum(r[key]["images"] for r in rounds), sum(r[key]["seconds"] for r in rounds))
             for key, label in labels.items()}
    print(f"{'':<24}{'images/min':>12}{'s/image':>10}{'/ bare':>9}")
    for name, rate in rates.items():
        print(f"{name:<24}{rate:>12.1f}{60 / rate if rate else float('inf'):>10.3f}"
              f"{rate / rates['bare diffusers loop']:>9.3f}")
    print(f"bot / bare: {rates['whole bot'] / rates['bare diffusers loop']:.3f} (target >= 0.97)")
    print(f"engine loop / bare: {rates['engine loop (no bot)'] / rates['bare diffusers loop']:.3f} (what the engine "
          f"adds: safety check, PNG, a scheduler per job, and their effect on the pipeline)")
    print(f"bot / engine loop: {rates['whole bot'] / rates['engine loop (no bot)']:.3f} (what the bot adds: IPC, "
          f"queue, store, Discord; and what it gains by checking one picture while the next is made)")
    lost = sum(r["bot"]["jobs"] - r["bot"]["images"] for r in rounds)
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
