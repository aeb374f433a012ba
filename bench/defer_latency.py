"""Defer latency under a burst: 200 /dream interactions from 50 members, sent as fast as possible.

    python bench/defer_latency.py [--model shapes] [--jobs 200] [--members 50] [--steps 20] [--size N]
                                  [--spread 0] [--drain] [--set NAME=VALUE ...]

The fake Discord runs in this process and `python -m bot` against it. After one untimed warm-up
job, `--jobs` /dream interactions go out back to back (member i % `--members`, no pause between
them; `--spread S` sends them evenly over S seconds instead), while the engine starts on the
first ones. For each interaction the fake records when it
dispatched INTERACTION_CREATE (`Interaction.sent_at`) and when each of the bot's answers reached
it (`Reply.at`, both monotonic):

  defer          the first callback (the "thinking…" deferral; Discord allows 3 s)
  queued notice  the first message edit (the place in the queue the member then reads)

Target: defer p99 < 250 ms. The bot runs with queue limits that admit the whole burst. With
`--drain` the script also waits for every job and counts the ones that posted no picture. The lag
of this process's own loop (the fake's, which handles every request of the burst) is printed as a
control: it is inside every latency here.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from harness import (
    PROMPTS,
    LoopLag,
    add_bot_options,
    described,
    dream,
    engine_line,
    first_callback,
    machine,
    members,
    ms,
    not_posted,
    outcome,
    outcomes,
    percentile,
    queue_room,
    running_bot,
    settings_from,
)

DISCORD_ACK_LIMIT = 3.0


def first_edit(interaction) -> float | None:
    reply = next((r for r in interaction.replies if r.kind in ("edit", "followup")), None)
    return None if reply is None else reply.at - interaction.sent_at


async def measure(args: argparse.Namespace, settings: dict[str, str]) -> int:
    async with running_bot(args.model, **settings) as (fake, bot):
        people = members(fake, args.members)
        options = dict(steps=args.steps, width=args.size, height=args.size)
        await outcome(await dream(fake, people[0], PROMPTS[0], seed=0, **options), 600)

        own = LoopLag().start()
        started = time.monotonic()
        sent = []
        for i in range(args.jobs):
            if args.spread:  # the i-th goes out at i/jobs of the spread
                await asyncio.sleep(max(0.0, started + args.spread * i / args.jobs - time.monotonic()))
            sent.append(await dream(fake, people[i % len(people)], PROMPTS[i % len(PROMPTS)], seed=1 + i, **options))
        sending = time.monotonic() - started
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not all(first_edit(i) is not None for i in sent):
            await asyncio.sleep(0.05)
        answered = time.monotonic() - started
        await own.stop()
        results = await outcomes(sent, args.timeout) if args.drain else None
        rows = bot.jobs()

    defers = [d for d in map(first_callback, sent) if d is not None]
    notices = [d for d in map(first_edit, sent) if d is not None]
    print(f"model {args.model}: {engine_line(bot)}; /dream of {args.steps} steps, "
          f"{f'{args.size}x{args.size}' if args.size else 'native size'}; bot settings: {described(settings)}")
    how = f"spread over {args.spread:g} s" if args.spread else "back to back"
    print(f"{args.jobs} interactions from {args.members} members sent {how} in {sending * 1000:.0f} ms "
          f"(after one warm-up job); all answered {answered:.2f} s after the first; jobs recorded "
          f"{len(rows) - 1}; this process's own loop lag meanwhile {own.summary()}")
    print(f"{'':<16}{'n':>5}{'min':>11}{'p50':>11}{'p99':>11}{'max':>11}{f'> {DISCORD_ACK_LIMIT:g} s':>8}")
    for name, values in (("defer", defers), ("queued notice", notices)):
        print(f"{name:<16}{len(values):>5}{ms(min(values, default=float('nan'))):>11}{ms(percentile(values, 50)):>11}"
              f"{ms(percentile(values, 99)):>11}{ms(max(values, default=float('nan'))):>11}"
              f"{sum(v > DISCORD_ACK_LIMIT for v in values):>8}")
    if defers:
        print(f"defer of the first interaction sent {ms(first_callback(sent[0]) or float('nan'))}, of the last "
              f"{ms(first_callback(sent[-1]) or float('nan'))}")
    missing = args.jobs - len(defers)
    if missing:
        print(f"{missing} interactions got no callback within {args.timeout:g} s")
    print(f"defer p99 {ms(percentile(defers, 99))} (target < 250 ms)")
    if results is not None:
        posted = sum(r.posted for r in results)
        print(f"drained: {posted} of {args.jobs} jobs posted their picture; not posted: {not_posted(results)}")
        missing += args.jobs - posted
    return 1 if missing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bot_options(parser)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="width and height (default: the model's native size)")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="send the burst evenly over this many seconds (default 0: back to back)")
    parser.add_argument("--drain", action="store_true", help="wait for every job's picture too")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for answers (and pictures)")
    args = parser.parse_args()
    settings = {**queue_room(args.jobs + 1, args.members), **settings_from(args.set, args.threads)}

    print(f"defer latency: time from the fake dispatching each of {args.jobs} /dream interactions to the bot's "
          f"first answer, with a burst queued from {args.members} members")
    print(f"machine: {machine()}")
    return asyncio.run(measure(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
