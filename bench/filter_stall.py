"""Does the prompt filter stall the bot? A bystander's /dream defer latency, idle and while a hostile
member sends prompts that are costly to filter, against a server list of 500 words and patterns.

    python bench/filter_stall.py [--model shapes] [--probes 60] [--interval 0.1] [--hostile 2]
                                 [--steps 4] [--set NAME=VALUE ...]

The fake Discord runs in this process and `python -m bot` against it (see bench/harness.py). The
server's owner first adds 500 terms with `/mod words` (MAX_TERMS): words, `\\bword\\d+` patterns,
and the costliest patterns the rules accept (`[^x]{100}qj` and the like), and also tries
`[^x]{1000}y`, the pattern of the review that found the stall (the rules now refuse it; the
script says whether it got in). Then a bystander sends `--probes` /dream, one every `--interval`
seconds, and the script records each one's defer latency: from the fake dispatching the
interaction to the bot's first callback (the "thinking…" acknowledgment, which Discord wants
within 3 s). It does so twice, side by side in one run:

  idle     nobody else uses the bot
  hostile  `--hostile` members send, each as soon as the bot answered the last, a prompt of
           989 of U+FDFA and U+FDFB (18 and 8 characters once spelled out) then a blocked term,
           with a negative prompt of 1000 of them, or a 1000-character ordinary prompt ending with
           the blocked term and a 1000-character ordinary negative prompt. The blocked term comes
           last in the server's list, so a filter that stops at the first term found tries all the
           others first.

Every hostile prompt is refused by the filter, so none reaches the engine: what slows the
bystander is the filter, and the bot's handling of the hostile interactions. Also printed: how
long the bystander waited for the bot's answer past the defer (its place in the queue), which
includes its own filter check, and what the hostile prompts were answered, how fast. No figure is
checked against a target.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Iterator

from harness import (
    LoopLag,
    Reply,
    add_bot_options,
    described,
    dream,
    engine_line,
    first_callback,
    machine,
    members,
    ms,
    percentile,
    queue_room,
    running_bot,
    settings_from,
)

TERMS = 500
# The costliest patterns the rules accept: counts at the repetition limit, a Unicode class.
# None matches an ordinary prompt, so each is tried on the whole of every text.
COSTLY = [r"[^x]{100}qj", r"(.*qj){100}", r"(?:e|t)*e(?:e|t){99}q", r"\pL[^x]{60}qj", r"(\S+\s+){50}qq"]
REVIEWED = r"[^x]{1000}y"  # the review found it freezing the bot for 2.6 s per prompt
# What every hostile prompt ends with: a pattern, which the bot's store lists after every word,
# and this one after every other pattern (in alphabetical order), so a filter that stops at the
# first term found has tried all the others first.
BLOCKED = "zzgorefest"
FILLER = ("a detailed oil painting of a lighthouse on a rocky coast at dusk, dramatic clouds, warm light, "
          "crashing waves, seagulls, high detail, ")


def word_list() -> list[tuple[str, bool]]:
    """(term, is a pattern) × 500, in the order they are added."""
    rng = random.Random(3)
    letters = "bcdfghjmpqrvwxz"  # no vowels: nothing an ordinary prompt says
    terms: list[tuple[str, bool]] = [*((p, True) for p in COSTLY), (REVIEWED, True)]
    while len(terms) < TERMS - 1:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(6, 10)))
        terms.append((rf"\b{word}\d+", True) if len(terms) % 5 == 0 else (word, False))
    return [*terms, (BLOCKED, True)]


def hostile_prompts(rng: random.Random) -> Iterator[dict[str, str]]:
    """The hostile member's /dream options, endlessly. The expanding ones differ every time (U+FDFB
    among them), as RE2's cache would otherwise keep what it learnt of the last one."""
    ordinary = (FILLER * 10)[:1000 - len(BLOCKED) - 1] + f" {BLOCKED}"

    def expanding(length: int) -> str:
        return "".join(rng.choice("\ufdfa\ufdfa\ufdfa\ufdfb") for _ in range(length))

    while True:
        yield {"prompt": expanding(1000 - len(BLOCKED) - 1) + f" {BLOCKED}", "negative": expanding(1000)}
        yield {"prompt": ordinary, "negative": (FILLER * 10)[:1000]}


async def last_word(interaction, timeout: float = 120.0) -> Reply:
    """What the bot said past its defer: a refusal, or the queued notice."""
    return await interaction.wait_for(lambda r: r.kind != "callback" and bool(r.content), timeout)


async def add_terms(fake, owner: dict) -> tuple[int, list[str]]:
    """Add the list with /mod words, a few at a time; returns (accepted, refusals of the rest)."""
    accepted, refused = 0, []
    terms = word_list()
    for start in range(0, len(terms), 10):
        batch = terms[start:start + 10]
        sent = [await fake.invoke("mod words", owner, action="add", word=term, **({"pattern": True} if pattern else {}))
                for term, pattern in batch]
        for (term, _), interaction in zip(batch, sent, strict=True):
            text = (await interaction.wait_for(lambda r: bool(r.content), 120)).content  # answered, not deferred
            if "now refused" in text:
                accepted += 1
            else:
                refused.append(f"{term}: {text.splitlines()[0][:160]}")
    return accepted, refused


async def bystander(fake, member: dict, count: int, interval: float, steps: int) -> tuple[list[float], list[float]]:
    """`count` /dream, `interval` apart: each one's defer latency, and its answer past the defer."""
    defers, answers = [], []
    for i in range(count):
        interaction = await dream(fake, member, f"a red circle on a white background {i}", steps=steps, seed=i)
        await interaction.wait_for(lambda r: r.kind == "callback", 60)
        defers.append(first_callback(interaction))
        answers.append((await last_word(interaction)).at - interaction.sent_at)
        await asyncio.sleep(interval)
    return defers, answers


async def hostile(fake, member: dict, stop: asyncio.Event, answered: dict[str, list[float]]) -> None:
    """Send the hostile prompts in turn until `stop`; `answered`: each answer's latencies."""
    prompts = hostile_prompts(random.Random(member["id"]))
    while not stop.is_set():
        interaction = await fake.invoke("dream", member, **next(prompts))
        reply = await last_word(interaction)
        answered.setdefault(reply.content.splitlines()[0][:100], []).append(reply.at - interaction.sent_at)


def row(name: str, values: list[float]) -> str:
    return (f"{name:<22}{len(values):>5}{ms(percentile(values, 50)):>11}{ms(percentile(values, 99)):>11}"
            f"{ms(max(values, default=float('nan'))):>11}")


async def measure(args: argparse.Namespace, settings: dict[str, str]) -> int:
    async with running_bot(args.model, **settings) as (fake, bot):
        started = time.monotonic()
        accepted, refused = await add_terms(fake, fake.owner)
        adding = time.monotonic() - started
        bystanding, *attackers = members(fake, 1 + args.hostile)
        await last_word(await dream(fake, bystanding, "a warm-up circle", steps=args.steps, seed=0))

        own = LoopLag().start()
        idle, idle_answers = await bystander(fake, bystanding, args.probes, args.interval, args.steps)
        stop, answered = asyncio.Event(), {}
        attacking = [asyncio.create_task(hostile(fake, member, stop, answered)) for member in attackers]
        await asyncio.sleep(1.0)  # the attack is under way
        loaded, loaded_answers = await bystander(fake, bystanding, args.probes, args.interval, args.steps)
        stop.set()
        await asyncio.gather(*attacking)
        await own.stop()

    print(f"model {args.model}: {engine_line(bot)}; bot settings: {described(settings)}")
    print(f"/mod words: {accepted} of {TERMS} terms added in {adding:.1f} s; refused: "
          + ("; ".join(refused) or "none"))
    print(f"this process's own loop lag (the fake's; inside every latency): {own.summary()}")
    print(f"{'bystander /dream':<22}{'n':>5}{'p50':>11}{'p99':>11}{'max':>11}")
    print(row("defer, idle", idle))
    print(row("defer, hostile", loaded))
    print(row("answer, idle", idle_answers))
    print(row("answer, hostile", loaded_answers))
    for name, base, under in (("defer", idle, loaded), ("answer", idle_answers, loaded_answers)):
        print(f"{name} hostile/idle: p50 × {percentile(under, 50) / percentile(base, 50):.2f}, "
              f"p99 × {percentile(under, 99) / percentile(base, 99):.2f}")
    print(f"hostile prompts answered: {sum(map(len, answered.values()))} by {args.hostile} members, each answered in")
    for text, latencies in answered.items():
        print(f"  p50 {ms(percentile(latencies, 50))}, p99 {ms(percentile(latencies, 99))}: "
              f"{len(latencies)} × {text!r}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bot_options(parser)
    parser.add_argument("--probes", type=int, default=60, help="bystander /dream per phase")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between the bystander's /dream")
    parser.add_argument("--hostile", type=int, default=2, help="hostile members sending at once")
    parser.add_argument("--steps", type=int, default=4, help="steps of the bystander's jobs")
    args = parser.parse_args()
    settings = {**queue_room(2 * args.probes + 1, 1), **settings_from(args.set, args.threads)}

    print("filter stall: a bystander's /dream defer latency, idle and while hostile members send prompts that are "
          f"costly to filter, with {TERMS} blocked words and patterns")
    print(f"machine: {machine()}")
    return asyncio.run(measure(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
