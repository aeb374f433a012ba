"""Model switches and fairness of the bot's fair queue (bot.queue.FairQueue) on a mixed stream of
jobs for several models, with and without grouping by model; no Discord, no engine, no asyncio.

    python bench/model_switches.py [--jobs 600] [--members 40] [--engines 1] [--load 0.6]
        [--job-seconds 4] [--switch-seconds 15] [--cap 10] [--seed 1]

A simulation in seconds. Each member has a model they mostly use (two models, "sd15" and "sdxl",
about two members in three on the first) and asks for the other one job in five; jobs arrive at
random (Poisson) at `--load` times what the engines can do at best, each member's capped at
`--cap` queued or running (MAX_JOBS_PER_MEMBER; jobs past it are refused and counted). Each
engine holds one model (the worst case: two models that do not fit in its memory together); a job
for another model first costs `--switch-seconds` to load it.

Run twice on the same stream: plain round robin (`FairQueue.next()`), and grouped (`FairQueue.
next(prefer=...)` preferring the jobs of a model the engine holds, as `bot.queue.JobQueue` does).
Printed for each: jobs run, model switches, the share of jobs that found their model loaded, the
wait from submit to start (mean, 95th percentile, max), and the fairness check: while a member
waits, how many times any one other member was served since that member's own last turn (round
robin's bound is 1: a job never waits for two jobs of the same other member). Exit status 0 when
the grouped run keeps that bound and switches less often per job run than plain round robin, 1
otherwise. (Jobs past a member's cap are refused, so a run that switches less runs more of them.)
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bot.queue import FairQueue, QueueFull  # noqa: E402

MODELS = ("sd15", "sdxl")


@dataclass
class Run:
    jobs: int = 0
    refused: int = 0
    switches: int = 0
    found_loaded: int = 0
    waits: list[float] = field(default_factory=list)
    worst_repeat: int = 0  # the most times one other member was served while a member waited

    @property
    def rate(self) -> float:
        return self.switches / max(self.jobs, 1)

    def row(self, name: str) -> str:
        waits = sorted(self.waits)
        p95 = waits[int(0.95 * (len(waits) - 1))] if waits else 0.0
        mean = statistics.fmean(waits) if waits else 0.0
        return (f"| {name} | {self.jobs} | {self.switches} ({self.rate:.2f} per job) | "
                f"{self.found_loaded / max(self.jobs, 1):.0%} | {mean:.0f} s | {p95:.0f} s | "
                f"{max(waits, default=0):.0f} s | {self.worst_repeat} |")


def stream(args: argparse.Namespace) -> list[tuple[float, int, str]]:
    """(arrival time, member, model) for every job, the same for both runs."""
    rng = random.Random(args.seed)
    favourite = {member: MODELS[0] if rng.random() < 2 / 3 else MODELS[1] for member in range(args.members)}
    best = args.engines / args.job_seconds  # jobs per second with no switch at all
    t, jobs = 0.0, []
    for _ in range(args.jobs):
        t += rng.expovariate(best * args.load)
        member = rng.randrange(args.members)
        model = favourite[member] if rng.random() < 0.8 else next(m for m in MODELS if m != favourite[member])
        jobs.append((t, member, model))
    return jobs


def simulate(jobs: list[tuple[float, int, str]], args: argparse.Namespace, grouped: bool) -> Run:
    run = Run()
    fair = FairQueue(max_per_member=args.cap, max_queued=1000)
    model_of: dict[int, str] = {}
    member_of: dict[int, int] = {}
    submitted: dict[int, float] = {}
    held = [MODELS[i % len(MODELS)] for i in range(args.engines)]
    free_at = [0.0] * args.engines
    served_since: dict[int, Counter] = {}  # waiting member -> services of each other member since its turn
    events: list[tuple[float, int, int, object]] = []  # (time, order, kind, data): 0 finish, 1 arrival
    for order, (t, member, model) in enumerate(jobs):
        heapq.heappush(events, (t, order, 1, (order, member, model)))
    order = len(jobs)

    def start_jobs(now: float) -> None:
        nonlocal order
        for engine in range(args.engines):
            if free_at[engine] > now:
                continue
            prefer = (lambda job, e=engine: model_of[job] == held[e]) if grouped else None
            job = fair.next(prefer)
            if job is None:
                return
            member = member_of[job]
            for other, counts in served_since.items():
                if other != member:
                    counts[member] += 1
                    run.worst_repeat = max(run.worst_repeat, counts[member])
            served_since.pop(member, None)
            if member in {member_of[queued] for queued in fair.order()}:
                served_since[member] = Counter()  # still waiting, with its next job
            cost = args.job_seconds
            if model_of[job] != held[engine]:
                run.switches += 1
                held[engine] = model_of[job]
                cost += args.switch_seconds
            else:
                run.found_loaded += 1
            run.jobs += 1
            run.waits.append(now - submitted[job])
            free_at[engine] = now + cost
            order += 1
            heapq.heappush(events, (free_at[engine], order, 0, job))

    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == 0:
            fair.done(data)
        else:
            job, member, model = data
            try:
                fair.submit(job, member)
            except QueueFull:
                run.refused += 1
            else:
                model_of[job], member_of[job], submitted[job] = model, member, now
                served_since.setdefault(member, Counter())
        start_jobs(now)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--engines", type=int, default=1)
    parser.add_argument("--load", type=float, default=0.6, help="arrivals as a share of the engines' best rate")
    parser.add_argument("--job-seconds", type=float, default=4.0)
    parser.add_argument("--switch-seconds", type=float, default=15.0)
    parser.add_argument("--cap", type=int, default=10, help="jobs a member may have queued or running")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    jobs = stream(args)
    plain, grouped = simulate(jobs, args, grouped=False), simulate(jobs, args, grouped=True)
    print(f"{args.jobs} jobs ({plain.refused} and {grouped.refused} refused at the cap) from {args.members} "
          f"members for {len(MODELS)} models, {args.engines} engine(s) holding "
          f"one model each; a job {args.job_seconds:g} s, a switch {args.switch_seconds:g} s, load {args.load:g}, "
          f"seed {args.seed}")
    print("| policy | jobs run | switches | found their model loaded | mean wait | p95 wait | max wait | "
          "most services of one other member while waiting |")
    print("|---|---|---|---|---|---|---|---|")
    print(plain.row("round robin"))
    print(grouped.row("grouped by model"))
    ok = grouped.worst_repeat <= 1 and grouped.rate < plain.rate
    print("fairness bound kept, fewer switches" if ok else "FAILED: the bound is broken or no switch was saved")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
