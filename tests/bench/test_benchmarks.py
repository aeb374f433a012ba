"""The benchmark scripts: they start, and bench/fair_queue.py tells a fair queue from an unfair or lossy one."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import OrderedDict, deque
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


fair_queue = load("fair_queue")


class Refused(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RoundRobin:
    """Members take turns in the order they first queued; each turn runs their oldest job."""

    def __init__(self, *, max_per_member: int, max_queued: int, cooldown_seconds: float) -> None:
        self.max_per_member, self.max_queued = max_per_member, max_queued
        self.turns: OrderedDict[int, deque[int]] = OrderedDict()
        self.member: dict[int, int] = {}
        self.running: set[int] = set()

    def submit(self, job_id: int, member_id: int) -> None:
        if sum(m == member_id for m in self.member.values()) >= self.max_per_member:
            raise Refused(f"you have {self.max_per_member} jobs", 5)
        if len(self.member) - len(self.running) >= self.max_queued:
            raise Refused(f"the queue is full ({self.max_queued})", 5)
        self.turns.setdefault(member_id, deque()).append(job_id)
        self.member[job_id] = member_id

    def next(self) -> int | None:
        if not self.turns:
            return None
        member_id, jobs = next(iter(self.turns.items()))
        job_id = jobs.popleft()
        if jobs:
            self.turns.move_to_end(member_id)
        else:
            del self.turns[member_id]
        self.running.add(job_id)
        return job_id

    def done(self, job_id: int) -> None:
        self.running.discard(job_id)
        self.member.pop(job_id, None)

    def position(self, job_id: int) -> int:
        rounds = [list(jobs) for jobs in self.turns.values()]
        order = [jobs[i] for i in range(max(map(len, rounds), default=0)) for jobs in rounds if i < len(jobs)]
        return order.index(job_id) if job_id in order else 0

    def __len__(self) -> int:
        return len(self.member)


class FirstComeFirstServed(RoundRobin):
    def __init__(self, **caps) -> None:
        super().__init__(**caps)
        self.line: deque[int] = deque()

    def submit(self, job_id: int, member_id: int) -> None:
        super().submit(job_id, member_id)
        self.line.append(job_id)

    def next(self) -> int | None:
        if not self.line:
            return None
        job_id = self.line.popleft()
        self.turns[self.member[job_id]].remove(job_id)
        if not self.turns[self.member[job_id]]:
            del self.turns[self.member[job_id]]
        self.running.add(job_id)
        return job_id


class DropsOneJob(RoundRobin):
    def submit(self, job_id: int, member_id: int) -> None:
        super().submit(job_id, member_id)
        if job_id == 500:
            self.turns[member_id].remove(job_id)
            if not self.turns[member_id]:
                del self.turns[member_id]


def test_a_round_robin_queue_passes_under_real_contention():
    report = fair_queue.simulate(RoundRobin, Refused)
    assert report.ok
    assert report.accepted + report.refused == report.submitted == 1000
    assert report.run == report.accepted > 300
    assert len(report.waits) > 50 and max(report.bounds) >= 10  # many members waited together


def test_first_come_first_served_is_caught_making_members_wait_past_their_turn():
    report = fair_queue.simulate(FirstComeFirstServed, Refused)
    assert report.lost == 0
    assert report.over_bound and not report.ok


def test_a_queue_that_loses_a_job_is_caught():
    report = fair_queue.simulate(DropsOneJob, Refused)
    assert report.lost == 1 and report.run == report.accepted - 1
    assert not report.ok


def test_the_bots_fair_queue():
    from bot.queue import FairQueue, QueueFull

    assert fair_queue.simulate(FairQueue, QueueFull).ok


@pytest.mark.parametrize("script", ["loop_lag", "defer_latency", "throughput", "batching", "fair_queue",
                                    "filter_stall"])
def test_every_script_explains_itself(script):
    shown = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--help"], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "usage:" in shown.stdout and "--" in shown.stdout


def test_model_switches_groups_by_model_and_keeps_the_bound(capsys: pytest.CaptureFixture) -> None:
    switches = load("model_switches")
    assert switches.main(["--jobs", "300", "--members", "20"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| ")}
    assert rows["round robin"][-2].strip() == "1" and rows["grouped by model"][-2].strip() == "1"
