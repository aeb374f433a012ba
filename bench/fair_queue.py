"""Reliability and fairness of the bot's fair queue (bot.queue.FairQueue), driven directly: no
Discord, no engine, no asyncio.

    python bench/fair_queue.py [--jobs 1000] [--members 100] [--max-per-member 3] [--max-queued 100]
                               [--load 2] [--retries 3] [--seed 1]

A simulation in whole ticks. Every member gets at least one job and the rest are shared out
unevenly (weights 1/rank: a few members send many, most send a few); each member's jobs come in
bursts of 1 to 12 at random ticks, spread so that jobs arrive `--load` times as fast as one
worker finishes them (above 1 the queue fills and its caps refuse jobs). Each tick: the running
job finishes when its time is up (`done`), the tick's bursts are submitted in order (`submit`;
`QueueFull` is counted by its message, digits folded, and with `--retries N` the job is sent again
`retry_after` ticks later), and an idle worker pops the next job (`next`). Jobs take 1 to 4
ticks. The queue is built as FairQueue(max_per_member=..., max_queued=..., cooldown_seconds=0).

Printed: jobs submitted, refused (by reason), run, and lost (accepted but never started, started
twice, or an id the queue never took: must be 0), and fairness for jobs whose member had no other
job queued or running when it was submitted: how many jobs started between its submit and its
start ("turns"), against the number of other members with jobs waiting at that moment, which
round robin promises as the bound. Also counted: ticks the queue handed out nothing while it held
jobs, and jobs accepted past either cap. Exit status 0 when all of those are 0 and nothing is
lost, 1 otherwise, 2 if the queue cannot be imported.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MAX_BURST = 12
DURATIONS = (1, 2, 3, 4)


@dataclass
class Report:
    submitted: int = 0  # distinct jobs
    attempts: int = 0  # submit calls, retries included
    refusals: Counter = field(default_factory=Counter)  # reason -> submit calls refused
    refused: int = 0  # jobs refused on their last attempt
    accepted: int = 0
    run: int = 0
    lost: int = 0
    duplicates: int = 0  # a job popped twice
    unknown: int = 0  # an id popped that the queue never accepted
    idle_with_work: int = 0  # ticks the queue popped nothing while jobs waited
    over_member_cap: int = 0  # accepted while the member already had max_per_member queued or running
    over_queue_cap: int = 0  # accepted while max_queued jobs were already waiting
    length_at_end: int = 0
    waits: list[int] = field(default_factory=list)  # turns, for jobs whose member had nothing else in
    bounds: list[int] = field(default_factory=list)  # other members waiting at their submit
    positions: list[int] = field(default_factory=list)  # position() at their submit
    ticks: int = 0

    @property
    def ok(self) -> bool:
        """Nothing lost or stuck, no cap overrun, no job waited past the round-robin bound."""
        return not (self.lost or self.length_at_end or self.idle_with_work or self.over_member_cap
                    or self.over_queue_cap or self.over_bound)

    @property
    def over_bound(self) -> list[int]:
        return [wait - bound for wait, bound in zip(self.waits, self.bounds) if wait > bound]


def workload(jobs: int, members: int, load: float, rng: random.Random) -> tuple[list[tuple[int, int, int]], dict]:
    """(tick, member, job id) submissions in order, and each job's duration in ticks."""
    if jobs < members:
        raise SystemExit("--jobs must be at least --members (every member sends a job)")
    weights = [1 / rank for rank in range(1, members + 1)]
    counts = [1] * members
    for member in rng.choices(range(members), weights=weights, k=jobs - members):
        counts[member] += 1
    durations = {job: rng.choice(DURATIONS) for job in range(1, jobs + 1)}
    horizon = max(1, round(sum(durations.values()) / load))
    submissions, job_ids = [], iter(range(1, jobs + 1))
    for member, count in enumerate(counts):
        while count:
            burst = min(count, rng.randint(1, MAX_BURST))
            tick = rng.randrange(horizon)
            submissions += [(tick, member, next(job_ids)) for _ in range(burst)]
            count -= burst
    submissions.sort(key=lambda s: s[0])  # stable: a burst stays in order
    return submissions, durations


def simulate(queue_cls, refusal: type[Exception], *, jobs: int = 1000, members: int = 100, max_per_member: int = 3,
             max_queued: int = 100, load: float = 2.0, retries: int = 3, seed: int = 1) -> Report:
    rng = random.Random(seed)
    submissions, durations = workload(jobs, members, load, rng)
    queue = queue_cls(max_per_member=max_per_member, max_queued=max_queued, cooldown_seconds=0)
    report = Report(submitted=jobs)
    pending: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # tick -> (member, job, attempt)
    for tick, member, job in submissions:
        pending[tick].append((member, job, 0))
    member_of: dict[int, int] = {}
    waiting: dict[int, set[int]] = defaultdict(set)  # member -> accepted jobs not yet started
    running_of: Counter = Counter()  # member -> jobs running (0 or 1 with one worker)
    started: set[int] = set()
    at_submit: dict[int, tuple[int, int, int]] = {}  # job -> (pops so far, bound, position) if alone
    pops = 0
    running: tuple[int, int] | None = None  # (job, finishes at tick)
    tick = stalled = 0
    while pending or running or any(waiting.values()):
        if running and running[1] <= tick:
            queue.done(running[0])
            running_of[member_of[running[0]]] -= 1
            running = None
        for member, job, attempt in pending.pop(tick, []):
            report.attempts += 1
            alone = not waiting[member] and not running_of[member]
            try:
                queue.submit(job, member)
            except refusal as error:
                report.refusals[re.sub(r"\d+", "N", str(error))] += 1
                if attempt < retries:
                    later = getattr(error, "retry_after", None)
                    pending[tick + max(1, math.ceil(later or 1))].append((member, job, attempt + 1))
                else:
                    report.refused += 1
                continue
            report.accepted += 1
            report.over_member_cap += len(waiting[member]) + running_of[member] >= max_per_member
            report.over_queue_cap += sum(map(len, waiting.values())) >= max_queued
            member_of[job] = member
            if alone:
                others = sum(1 for m, w in waiting.items() if w and m != member)
                at_submit[job] = (pops, others, queue.position(job))
            waiting[member].add(job)
        if running is None:
            job = queue.next()
            if job is None:
                report.idle_with_work += any(waiting.values())
            elif job not in member_of:
                report.unknown += 1
            elif job in started:
                report.duplicates += 1
            else:
                started.add(job)
                waiting[member_of[job]].discard(job)
                running_of[member_of[job]] += 1
                if job in at_submit:
                    popped_before, bound, position = at_submit[job]
                    report.waits.append(pops - popped_before)
                    report.bounds.append(bound)
                    report.positions.append(position)
                pops += 1
                running = (job, tick + durations[job])
        stalled = stalled + 1 if running is None and any(waiting.values()) else 0
        if stalled > 1000 and not pending:  # the queue holds jobs it no longer hands out
            break
        tick += 1
    report.ticks = tick
    report.run = len(started)
    report.lost = report.accepted - len(started) + report.duplicates + report.unknown
    report.length_at_end = len(queue)
    return report


def percentile(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] if ordered else math.nan


def print_report(report: Report, args: argparse.Namespace, name: str) -> None:
    print(f"fair queue: {args.jobs} jobs from {args.members} members through {name}(max_per_member="
          f"{args.max_per_member}, max_queued={args.max_queued}, cooldown_seconds=0), one worker")
    print(f"simulation: seed {args.seed}; jobs per member weighted 1/rank, at least 1; bursts of 1-{MAX_BURST} at "
          f"random ticks, offered load {args.load:g}; jobs take {DURATIONS[0]}-{DURATIONS[-1]} ticks; refused jobs "
          f"retried {args.retries} time(s) after retry_after; {report.ticks} ticks")
    print(f"{'jobs submitted':<44}{report.submitted:>7}   ({report.attempts} submit calls)")
    print(f"{'  refused (on their last attempt)':<44}{report.refused:>7}")
    for reason, count in report.refusals.most_common():
        print(f"      {count:>5} submit calls: {reason}")
    print(f"{'  accepted':<44}{report.accepted:>7}")
    print(f"{'  run':<44}{report.run:>7}")
    print(f"{'  lost (must be 0)':<44}{report.lost:>7}   (never started {report.accepted - report.run}, "
          f"popped twice {report.duplicates}, unknown ids {report.unknown})")
    print(f"{'queue length at the end':<44}{report.length_at_end:>7}")
    print(f"{'ticks with jobs waiting and nothing popped':<44}{report.idle_with_work:>7}")
    print(f"{'accepted past max_per_member':<44}{report.over_member_cap:>7}   (queued + running)")
    print(f"{'accepted past max_queued':<44}{report.over_queue_cap:>7}   (waiting)")
    waits, bounds, over = report.waits, report.bounds, report.over_bound
    print(f"fairness: {len(waits)} jobs whose member had no other job queued or running at submit")
    print(f"  turns waited (jobs started between submit and start): p50 {percentile(waits, 50):g}, "
          f"p99 {percentile(waits, 99):g}, max {max(waits, default=0)}")
    print(f"  round-robin bound (other members with jobs waiting at submit): p50 {percentile(bounds, 50):g}, "
          f"p99 {percentile(bounds, 99):g}, max {max(bounds, default=0)}")
    print(f"  waited past the bound: {len(over)} jobs" + (f", by up to {max(over)} turns" if over else ""))
    exact = sum(p == w for p, w in zip(report.positions, waits))
    worst = max((abs(p - w) for p, w in zip(report.positions, waits)), default=0)
    print(f"  position() at submit equals the turns waited for {exact} of {len(waits)} (largest difference {worst})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--max-per-member", type=int, default=3)
    parser.add_argument("--max-queued", type=int, default=100)
    parser.add_argument("--load", type=float, default=2.0, help="arrival rate / service rate")
    parser.add_argument("--retries", type=int, default=3, help="times a refused job is sent again")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:
        from bot.queue import FairQueue, QueueFull
    except ImportError as error:
        print(f"bench/fair_queue.py needs bot.queue.FairQueue and bot.queue.QueueFull, which this checkout does not "
              f"have yet ({error})", file=sys.stderr)
        return 2
    report = simulate(FairQueue, QueueFull, jobs=args.jobs, members=args.members, max_per_member=args.max_per_member,
                      max_queued=args.max_queued, load=args.load, retries=args.retries, seed=args.seed)
    print_report(report, args, "bot.queue.FairQueue")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
