"""Workers on other hosts: throughput as stand-in workers are added, and what killing them loses.

    python -m bench.workers [--workers 1,2,4,8,16] [--seconds 1.0] [--jobs-per-worker 8] [--members 8]
                            [--lease 5] [--chaos-jobs 500] [--chaos-workers 8] [--chaos-seconds 0.2]
                            [--chaos-lease 2] [--kill-every 1,2] [--freeze-share 0.25] [--seed 1]
                            [--workdir DIR] [--quick]

(`python bench/workers.py` works too.) A real nats-server on a free loopback port
(tests/support/nats.py), and in this process the bot's side as `python -m bot` builds it with
NATS_URL set: the store, the fair queue (`bot.queue.JobQueue`) and its `bot.workers.WorkerHub`
(tests/support/workers.py's Rig). The workers are processes of `python -m bench.stand_in_worker`:
the real `engine.worker.Worker` (pulls, leases, heartbeats, results kept until the bot takes them)
in front of an engine that sleeps `--seconds` per picture and answers with a small PNG (no model,
no torch).

Scaling: for each count N in `--workers`, a fresh Rig (fresh database) and N fresh workers; once
all N have joined, N × `--jobs-per-worker` one-picture jobs from `--members` members are recorded,
then queued at once, and the time runs from the first submit to the last outcome. Printed: images
per minute, the scaling efficiency (images/min at N ÷ (N × images/min at 1); target >= 0.9 at 16),
the time each job took beyond its `--seconds` (the per-job cost of the transport, the queue and the
store), the CPU seconds the bot's side (this process) and the workers used during the timed part,
how long the workers took to join, and to be gone once sent SIGTERM (until the hub knows none), and
the workers the hub lost (silent past `--lease`) or saw join more than once (noted apart: a worker
seen again after it said it stopped): all 0 on a quiet machine. The next count starts only once the
hub knows no worker.

Chaos: `--chaos-jobs` jobs over `--chaos-workers` workers (`--chaos-seconds` per picture; the bot
loses a silent worker after `--chaos-lease` seconds); every `--kill-every` seconds (uniform in the
range) a random worker is killed with SIGKILL and a new one, under a new name, started in its place,
until every job has an outcome; `--freeze-share` of those times the worker is instead stopped with
SIGSTOP for 1.5 leases + 0.5 s and then let go on (SIGCONT): the bot has lost it and given its job to
another, and whatever it sends under the old lease must be refused. A job whose worker was lost
runs once more (the queue's one retry), so a job that loses two workers fails as crashed: counted
apart. Printed:
  lost: a job with no outcome within the time allowed, or whose row in the store does not agree
      with its outcome (a result: 'delivering', with the stand-in's model; a failure: 'failed');
  posted twice: a job whose result the queue took more than once (`Store.finish_job` is called
      when a result comes in, and the real bot posts what it records there), and a job for which
      the hub accepted a result more than once (a lease's outcome set by a result);
and from the workers' own logs ("answered job N"): jobs made by more than one worker (a worker
killed after making a result but before the bot took it, or a lease that lapsed: the work is done
again, never posted again), and the answers the hub refused, by reason.

The bot's side logs into bot.log in the working directory (a temporary one, removed at the end,
unless `--workdir`), beside each worker's log. Exit status 0 when nothing is lost or posted twice
and every scaling job got its picture, 1 otherwise. No timing is asserted.
`--quick`: 1, 2 and 4 workers at 0.3 s per picture, and 100 chaos jobs over 4 workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python bench/workers.py` puts bench/ on the path, not the repository

from bot.outcome import Failure, FailureKind  # noqa: E402
from bot.store import UNDELIVERED  # noqa: E402
from dreambot.wire import GenerateResult, Job  # noqa: E402
from tests.support.nats import NatsServer  # noqa: E402
from tests.support.workers import Rig, WorkerProcess  # noqa: E402

MODEL = "stand-in"
ANSWERED = re.compile(r"answered job (\d+)")
COMMAND = [sys.executable, "-m", "bench.stand_in_worker"]


@dataclass
class Scale:
    workers: int
    jobs: int
    pictures: int
    seconds: float  # first submit to last outcome
    per_picture: float  # the stand-in's sleep
    bot_cpu: float
    workers_cpu: float
    failed: int  # outcomes that were not a result (must be 0)
    join_seconds: float
    leave_seconds: float
    lost: int = 0  # workers the hub lost (silent past the lease) during the run and the stop
    rejoined: int = 0  # joins past the first of each worker: after being lost, or after it said it stopped
    after_stop: int = 0  # of those, joins of a worker the hub had heard stop (a message that overtook another)

    @property
    def per_minute(self) -> float:
        return self.pictures / self.seconds * 60

    @property
    def overhead_per_job(self) -> float:
        """Seconds each job took beyond the stand-in's sleep, on average over one worker's jobs."""
        return (self.seconds - self.jobs / self.workers * self.per_picture) / (self.jobs / self.workers)


@dataclass
class Chaos:
    jobs: int
    workers: int
    per_picture: float
    lease: float
    seconds: float = 0.0
    kills: int = 0
    kills_holding: int = 0  # kills of a worker that held a lease then (as the hub saw it)
    freezes: int = 0  # SIGSTOP past the lease, then SIGCONT
    freezes_holding: int = 0
    delivered: int = 0  # outcome a GenerateResult, row 'delivering'
    crashed_twice: int = 0  # failed as crashed after its one retry
    failed_otherwise: list[str] = field(default_factory=list)
    unresolved: list[int] = field(default_factory=list)  # no outcome in time
    store_disagrees: list[str] = field(default_factory=list)
    resolved_twice: int = 0  # a ticket whose future was set twice (impossible by construction; counted)
    finished_twice: list[int] = field(default_factory=list)  # Store.finish_job called more than once
    accepted_twice: list[int] = field(default_factory=list)  # the hub set a lease's outcome from a result twice
    retried: int = 0  # jobs handed out more than once (a lost worker's, or never sent)
    verdicts: Counter = field(default_factory=Counter)  # the hub's answers to results offered
    answered_lines: int = 0  # "answered job N" in the stand-ins' logs
    made_by_several: int = 0  # jobs answered by more than one stand-in
    made_never_taken: int = 0  # answers (job, worker) the hub never accepted

    @property
    def lost(self) -> int:
        return len(self.unresolved) + len(self.store_disagrees)

    @property
    def posted_twice(self) -> int:
        return len(set(self.finished_twice) | set(self.accepted_twice)) + self.resolved_twice


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process, from /proc; 0 if it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stand_in(name: str, nats: NatsServer, workdir: Path, seconds: float) -> WorkerProcess:
    return WorkerProcess(name, nats.url, workdir, MODEL, command=COMMAND, STAND_IN_SECONDS=str(seconds),
                         PYTHONPATH=str(REPO), LOG_LEVEL="INFO")


async def queue_jobs(rig: Rig, count: int, members: int, tag: str) -> tuple[list, float]:
    """Record `count` jobs (outside the clock), then queue them all at once; the tickets and the time
    of the first submit."""
    assert rig.store is not None and rig.queue is not None
    jobs = []
    for index in range(count):
        user = 1 + index % members
        job_id = await rig.record(f"{tag} job {index}", user=user, seed=index, steps=2)
        row = await rig.store.get_job(job_id)
        assert row is not None
        jobs.append((Job(job_id, row.request), user))
    started = time.monotonic()
    tickets = [rig.queue.submit(job, user, check=False) for job, user in jobs]
    return tickets, started


async def stop_all(rig: Rig, processes: list[WorkerProcess], timeout: float = 30.0) -> float:
    """SIGTERM every worker, then wait until the hub has heard each leave (or lost it); seconds taken."""
    assert rig.hub is not None
    started = time.monotonic()
    await asyncio.gather(*(process.stop() for process in processes))
    deadline = time.monotonic() + timeout
    while rig.hub.workers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if rig.hub.workers:
        raise RuntimeError(f"{len(rig.hub.workers)} worker(s) still known to the hub {timeout:.0f} s after SIGTERM")
    return time.monotonic() - started


async def scale(workdir: Path, nats: NatsServer, count: int, *, seconds: float, jobs_per_worker: int, members: int,
                lease: float) -> Scale:
    workdir.mkdir(parents=True, exist_ok=True)
    rig = await Rig(workdir, nats, lease_seconds=lease).start()
    assert rig.hub is not None
    joins: Counter = Counter()
    lost: list[str] = []
    stopped: set[str] = set()
    after_stop: list[str] = []

    def heard_join(worker) -> None:
        joins.update([worker.name])
        if worker.name in stopped:
            after_stop.append(worker.name)

    rig.hub.on_joined = heard_join
    rig.hub.on_lost = lambda worker, reason: lost.append(worker.name)
    rig.hub.on_left = lambda worker, reason: stopped.add(worker.name)
    processes = [stand_in(f"n{count}-w{index}", nats, workdir, seconds) for index in range(count)]
    try:
        joining = time.monotonic()
        for process in processes:
            await process.start()
        await rig.wait_for_workers(count)
        joined = time.monotonic() - joining
        await asyncio.sleep(0.5)  # every worker's first pull is in
        cpu_workers = {process.process.pid: process_cpu(process.process.pid) for process in processes}  # type: ignore
        cpu_bot = own_cpu()
        tickets, started = await queue_jobs(rig, count * jobs_per_worker, members, f"n{count}")
        outcomes = await asyncio.wait_for(asyncio.gather(*(ticket.result for ticket in tickets)),
                                          60 + 10 * jobs_per_worker * seconds)
        elapsed = time.monotonic() - started
        cpu_bot = own_cpu() - cpu_bot
        cpu_used = sum(process_cpu(pid) - before for pid, before in cpu_workers.items())
        left = await stop_all(rig, processes)
    finally:
        for process in processes:
            process.kill()
        await rig.close()
    return Scale(workers=count, jobs=len(tickets), pictures=sum(len(o.images) for o in outcomes
                                                                 if isinstance(o, GenerateResult)),
                 seconds=elapsed, per_picture=seconds, bot_cpu=cpu_bot, workers_cpu=cpu_used,
                 failed=sum(not isinstance(o, GenerateResult) for o in outcomes), join_seconds=joined,
                 leave_seconds=left, lost=len(lost), rejoined=sum(joins.values()) - len(joins),
                 after_stop=len(after_stop))


async def chaos(workdir: Path, nats: NatsServer, *, jobs: int = 500, workers: int = 8, seconds: float = 0.2,
                lease: float = 2.0, kill_every: tuple[float, float] = (1.0, 2.0), freeze_share: float = 0.25,
                members: int = 20, seed: int = 1, timeout: float = 600.0) -> Chaos:
    """`jobs` jobs over `workers` stand-ins while, every `kill_every` seconds, a random one is SIGKILLed and
    replaced (or, `freeze_share` of the time, stopped with SIGSTOP for longer than its lease and then let go
    on); what became of each job, as the queue, the hub, the store and the stand-ins saw it."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = Chaos(jobs=jobs, workers=workers, per_picture=seconds, lease=lease)
    rig = await Rig(workdir, nats, lease_seconds=lease).start()
    try:
        await disrupted(rig, report, kill_every=kill_every, freeze_share=freeze_share, members=members,
                        rng=random.Random(seed), timeout=timeout)
    finally:
        await rig.close()
    return report


async def disrupted(rig: Rig, report: Chaos, *, kill_every: tuple[float, float], freeze_share: float, members: int,
                    rng: random.Random, timeout: float) -> None:
    """The chaos run on a started Rig, into `report`."""
    assert rig.hub is not None and rig.store is not None
    hub, store, nats, workdir, seconds = rig.hub, rig.store, rig.nats, rig.workdir, report.per_picture

    # Count what reaches the bot: each result the hub accepts into a lease's outcome, each hand-out,
    # and each result the queue records (the real bot posts what it records).
    accepted: Counter = Counter()
    handed: Counter = Counter()
    finished: Counter = Counter()
    taken_from: set[tuple[int, str]] = set()  # (job, worker name) whose result the hub accepted
    take, hand_out, finish_job = hub._take, hub.hand_out, store.finish_job

    async def counted_take(worker, token, job_id, message, session=""):
        lease_now = hub._leases.get(token)
        future = lease_now.outcomes.get(job_id) if lease_now is not None else None
        was_done = future is None or future.done()
        verdict = await take(worker, token, job_id, message, session)
        report.verdicts[verdict] += 1
        if not was_done and future.done() and isinstance(future.result(), GenerateResult):  # type: ignore[union-attr]
            accepted[job_id] += 1
            taken_from.add((job_id, lease_now.worker.name))  # type: ignore[union-attr]
        return verdict

    async def counted_hand_out(worker, jobs_, on_progress):
        for job in jobs_:
            handed[job.job_id] += 1
        return await hand_out(worker, jobs_, on_progress)

    async def counted_finish(job_id, result):
        finished[job_id] += 1
        await finish_job(job_id, result)

    hub._take = counted_take  # type: ignore[method-assign]
    hub.hand_out = counted_hand_out  # type: ignore[method-assign]
    store.finish_job = counted_finish  # type: ignore[method-assign]

    names = iter(f"chaos-{index}" for index in range(10**6))
    live: list[WorkerProcess] = []
    every: list[WorkerProcess] = []

    async def launch() -> None:
        process = await stand_in(next(names), nats, workdir, seconds).start()
        live.append(process)
        every.append(process)

    try:
        for _ in range(report.workers):
            await launch()
        await rig.wait_for_workers(report.workers)
        tickets, started = await queue_jobs(rig, report.jobs, members, "chaos")
        resolutions: Counter = Counter()
        for ticket in tickets:
            ticket.result.add_done_callback(lambda _, job_id=ticket.job.job_id: resolutions.__setitem__(
                job_id, resolutions[job_id] + 1))
        pending = {ticket.result for ticket in tickets}

        def holding(process: WorkerProcess) -> bool:
            return any(worker.name == process.name and worker.lease is not None for worker in hub.workers.values())

        async def thaw(process: WorkerProcess) -> None:
            await asyncio.sleep(freeze_for)
            if process.process is not None and process.process.returncode is None:
                process.process.send_signal(signal.SIGCONT)
            frozen.discard(process)

        async def killer() -> None:
            while True:
                await asyncio.sleep(rng.uniform(*kill_every))
                candidates = [process for process in live if process not in frozen]
                if not candidates:
                    continue
                victim = rng.choice(candidates)
                if rng.random() < freeze_share:  # silent past its lease, then back: its late answers are refused
                    report.freezes += 1
                    report.freezes_holding += holding(victim)
                    frozen.add(victim)
                    victim.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                    thawing.append(asyncio.create_task(thaw(victim)))
                    continue
                live.remove(victim)
                report.kills += 1
                report.kills_holding += holding(victim)
                victim.kill()
                await launch()

        frozen: set[WorkerProcess] = set()
        thawing: list[asyncio.Task] = []
        freeze_for = 1.5 * report.lease + 0.5
        killing = asyncio.create_task(killer())
        try:
            await asyncio.wait(pending, timeout=timeout)
        finally:
            killing.cancel()
            await asyncio.gather(killing, return_exceptions=True)
            await asyncio.gather(*thawing, return_exceptions=True)  # every frozen worker runs again
        report.seconds = time.monotonic() - started
        await asyncio.sleep(1.0)  # a thawed worker's late answers arrive now (they must be refused)
        await stop_all(rig, live)
    finally:
        for process in every:
            process.kill()
        for process in every:
            if process.process is not None:
                await process.process.wait()

    for ticket in tickets:
        job_id = ticket.job.job_id
        if not ticket.result.done():
            report.unresolved.append(job_id)
            continue
        result = ticket.result.result()
        row = await store.get_job(job_id)
        if isinstance(result, GenerateResult):
            report.delivered += 1
            if row is None or row.status != UNDELIVERED or row.model != MODEL:
                report.store_disagrees.append(f"job {job_id}: a result, row {row and row.status}")
        else:
            assert isinstance(result, Failure)
            if result.kind is FailureKind.CRASHED:
                report.crashed_twice += 1
            else:
                report.failed_otherwise.append(f"job {job_id}: {result.kind}: {result.message}")
            if row is None or row.status != "failed":
                report.store_disagrees.append(f"job {job_id}: {result.kind}, row {row and row.status}")
    report.resolved_twice = sum(count > 1 for count in resolutions.values())
    report.finished_twice = sorted(job_id for job_id, count in finished.items() if count > 1)
    report.accepted_twice = sorted(job_id for job_id, count in accepted.items() if count > 1)
    report.retried = sum(count > 1 for count in handed.values())
    made: dict[int, set[str]] = defaultdict(set)
    for process in every:
        for match in ANSWERED.finditer(process.log()):
            report.answered_lines += 1
            made[int(match.group(1))].add(process.name)
    report.made_by_several = sum(len(by) > 1 for by in made.values())
    report.made_never_taken = sum((job_id, name) not in taken_from for job_id, by in made.items() for name in by)


def software() -> str:
    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    server = subprocess.run([shutil.which("nats-server") or "nats-server", "--version"], capture_output=True,
                            text=True).stdout.strip()
    return f"{server or 'nats-server ?'}, nats-py {v('nats-py')}"


def print_scaling(runs: list[Scale], lease: float, members: int) -> None:
    base = runs[0].per_minute / runs[0].workers
    print(f"scaling: {runs[0].per_picture:g} s per picture, {runs[0].jobs // runs[0].workers} one-picture jobs per "
          f"worker from {members} members, lease {lease:g} s; each count with a fresh queue, store and workers")
    print(f"{'workers':>7} {'jobs':>5} {'seconds':>8} {'images/min':>11} {'efficiency':>10} {'cost/job':>9} "
          f"{'bot CPU':>8} {'workers CPU':>12} {'join':>6} {'leave':>6} {'lost':>5} {'rejoined':>8}")
    for run in runs:
        efficiency = run.per_minute / (run.workers * base)
        print(f"{run.workers:>7} {run.jobs:>5} {run.seconds:>7.2f}s {run.per_minute:>11.1f} {efficiency:>10.3f} "
              f"{run.overhead_per_job * 1000:>7.0f}ms {run.bot_cpu:>7.2f}s {run.workers_cpu:>11.2f}s "
              f"{run.join_seconds:>5.1f}s {run.leave_seconds:>5.1f}s {run.lost:>5} {run.rejoined:>8}"
              + (f"  ({run.after_stop} seen again after it said it stopped)" if run.after_stop else "")
              + (f"  ({run.failed} failed!)" if run.failed else ""))


def print_chaos(report: Chaos, kill_every: tuple[float, float]) -> None:
    print(f"chaos: {report.jobs} jobs over {report.workers} stand-ins ({report.per_picture:g} s per picture), lease "
          f"{report.lease:g} s; a random worker SIGKILLed every {kill_every[0]:g}-{kill_every[1]:g} s and replaced "
          f"under a new name, or frozen (SIGSTOP) past its lease and let go on: {report.kills} kills "
          f"({report.kills_holding} of a worker holding a job), {report.freezes} freezes ({report.freezes_holding} "
          f"holding a job); {report.seconds:.1f} s to the last outcome")
    rows = [
        ("delivered (a result; its row 'delivering')", report.delivered, ""),
        ("failed after two lost workers (crashed)", report.crashed_twice, "the queue's one retry, spent"),
        ("failed otherwise", len(report.failed_otherwise), "; ".join(report.failed_otherwise[:3])),
        ("lost (must be 0)", report.lost, f"no outcome {len(report.unresolved)}, store disagrees "
                                          f"{len(report.store_disagrees)}" + (f": {report.store_disagrees[:3]}"
                                                                              if report.store_disagrees else "")),
        ("posted twice (must be 0)", report.posted_twice, f"recorded twice {len(report.finished_twice)}, accepted "
                                                           f"twice by the hub {len(report.accepted_twice)}, "
                                                           f"resolved twice {report.resolved_twice}"),
        ("jobs handed out more than once", report.retried, "a lost worker's job, or one it never got"),
        ("jobs made by more than one stand-in", report.made_by_several, "work done again, never posted again"),
        ("answers made but never taken", report.made_never_taken,
         f"of {report.answered_lines} 'answered job' lines: killed before the hand-over, or a lapsed lease"),
    ]
    for label, value, note in rows:
        print(f"  {label:<44}{value:>6}" + (f"   ({note})" if note else ""))
    verdicts = ", ".join(f"{count} {verdict}" for verdict, count in report.verdicts.most_common())
    print(f"  results offered to the hub: {verdicts or 'none'}")


async def run(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.workers.split(",")]
    low, high = (float(x) for x in args.kill_every.split(","))
    kill_every = (low, high)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(workdir / "bot.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("nats").setLevel(logging.CRITICAL)
        nats = NatsServer(workdir).start()
        try:
            runs = []
            for count in counts:
                runs.append(await scale(workdir / f"n{count}", nats, count, seconds=args.seconds,
                                        jobs_per_worker=args.jobs_per_worker, members=args.members, lease=args.lease))
            print_scaling(runs, args.lease, args.members)
            report = None
            if args.chaos_jobs:
                report = await chaos(workdir / "chaos", nats, jobs=args.chaos_jobs, workers=args.chaos_workers,
                                     seconds=args.chaos_seconds, lease=args.chaos_lease, kill_every=kill_every,
                                     freeze_share=args.freeze_share, seed=args.seed)
                print_chaos(report, kill_every)
        finally:
            nats.stop()
            logging.getLogger().removeHandler(handler)
            handler.close()
    last = runs[-1]
    efficiency = last.per_minute / (last.workers * runs[0].per_minute / runs[0].workers)
    ok = not any(run.failed for run in runs) and (report is None or report.lost == report.posted_twice == 0)
    print(f"summary: {last.per_minute:.1f} images/min with {last.workers} workers, efficiency {efficiency:.3f} "
          f"(target >= 0.9 at 16)" + (f"; chaos: lost {report.lost}, posted twice {report.posted_twice}, "
                                      f"{report.crashed_twice} failed after two lost workers, {report.kills} kills"
                                      if report else ""))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,4,8,16", help="worker counts, comma-separated (the first is the "
                        "base of the efficiency)")
    parser.add_argument("--seconds", type=float, default=1.0, help="stand-in seconds per picture (a GPU's 1-2 s)")
    parser.add_argument("--jobs-per-worker", type=int, default=8)
    parser.add_argument("--members", type=int, default=8, help="members the scaling jobs come from")
    parser.add_argument("--lease", type=float, default=5.0, help="WORKER_LEASE_SECONDS of the scaling runs")
    parser.add_argument("--chaos-jobs", type=int, default=500, help="0: no chaos run")
    parser.add_argument("--chaos-workers", type=int, default=8)
    parser.add_argument("--chaos-seconds", type=float, default=0.2)
    parser.add_argument("--chaos-lease", type=float, default=2.0)
    parser.add_argument("--kill-every", default="1,2", help="MIN,MAX seconds between kills")
    parser.add_argument("--freeze-share", type=float, default=0.25,
                        help="the share of kills that are a SIGSTOP past the lease, then SIGCONT, instead")
    parser.add_argument("--workdir", type=Path, help="keep the logs and databases here (default: a temporary "
                        "folder, removed)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1, 2 and 4 workers at 0.3 s; 100 chaos jobs over 4")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.seconds, args.jobs_per_worker = "1,2,4", 0.3, 4
        args.chaos_jobs, args.chaos_workers, args.chaos_seconds, args.kill_every = 100, 4, 0.1, "0.5,1"
    from bench.harness import machine

    print("workers over NATS: stand-in workers (python -m bench.stand_in_worker: engine.worker.Worker, no model) "
          "on a loopback nats-server; the bot's queue, WorkerHub and store in this process")
    print(f"machine: {machine()}; {software()}")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
