"""The benchmark scripts: they start, and bench/fair_queue.py tells a fair queue from an unfair or lossy one."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
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
                                    "filter_stall", "check_overlap"])
def test_every_script_explains_itself(script):
    shown = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--help"], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "usage:" in shown.stdout and "--" in shown.stdout


def test_check_overlap_times_each_way_of_checking_the_same_pictures() -> None:
    """One block of one picture each way, on the bundled model: a row per way, none's ratio 1."""
    shown = subprocess.run([sys.executable, str(BENCH / "check_overlap.py"), "--blocks", "1", "--pictures", "1",
                            "--steps", "2"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    rows = {line[:18].strip(): [float(figure) for figure in line[18:].split()]
            for line in shown.stdout.splitlines() if line[:18].strip() in ("none", "in line", "thread", "process")}
    assert set(rows) == {"none", "in line", "thread", "process"}, shown.stdout
    assert rows["none"][2] == 1.0
    for seconds, per_second, ratio in rows.values():
        assert seconds > 0 and per_second > 0 and ratio > 0
    assert "safety checker opennsfw" in shown.stdout  # the bundled model ships none: the engine's open_nsfw


def test_model_switches_groups_by_model_and_keeps_the_bound(capsys: pytest.CaptureFixture) -> None:
    switches = load("model_switches")
    assert switches.main(["--jobs", "300", "--members", "20"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| ")}
    assert rows["round robin"][-2].strip() == "1" and rows["grouped by model"][-2].strip() == "1"


def process_state(pid: int) -> str:
    """"stopped" (SIGSTOP) or "going" (running, or sleeping in its own time), from /proc."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return "stopped" if state in "Tt" else "going"


async def settled(processes: list, state: str) -> set[str]:
    """The processes' states once they are all in `state` (a stop takes effect when its process next
    runs), or as they are after a second."""
    for _ in range(100):
        states = {process_state(process.pid) for process in processes}
        if states == {state}:
            break
        await asyncio.sleep(0.01)
    return states


async def test_throughput_runs_its_contenders_in_turns_and_counts_each_ones_own():
    """bench/throughput.py's `Turns`: one contender's processes run at a time, the others are
    stopped; a contender's time is its own turns only; a done one gets no more turns."""
    sys.path.insert(0, str(BENCH))  # throughput.py imports its neighbour harness.py
    turns_of = load("throughput").Turns
    sleepers = [await asyncio.create_subprocess_exec("sleep", "60") for _ in range(2)]
    try:
        turns = turns_of(0.2)
        turns.add("a", [sleepers[0].pid])
        turns.add("b", [sleepers[1].pid, None])  # a process not started is skipped
        assert await settled(sleepers, "stopped") == {"stopped"}  # stopped from the start
        seen: list[list[str]] = []
        a_done = 0.0

        def states() -> list[str]:
            return sorted(process_state(sleeper.pid) for sleeper in sleepers)

        async def watch() -> None:
            nonlocal a_done
            for _ in range(20):
                await asyncio.sleep(0.05)
                now = states()
                for _ in range(10):  # caught in a switch? a stop takes effect when its process next runs
                    if now == ["going", "stopped"]:
                        break
                    await asyncio.sleep(0.005)
                    now = states()
                seen.append(now)
            turns.done("a")
            a_done = time.monotonic()
            await asyncio.sleep(0.5)
            turns.done("b")

        await asyncio.gather(turns.run(first=1), watch())
        assert seen == [["going", "stopped"]] * 20  # one running, the other stopped, all along
        names = [who for who, _, _ in turns.turns]
        assert names[:3] == ["b", "a", "b"]  # `first` picks who starts
        assert all(start < a_done for who, start, _ in turns.turns if who == "a")  # none once done
        assert names[-1] == "b"  # alone at the end, it went on
        start, end = turns.turns[0][1], turns.turns[-1][2]
        own = turns.own("a", start, end) + turns.own("b", start, end)
        assert own == pytest.approx(end - start, abs=0.05)  # every moment is someone's turn
        assert turns.own("b", start, start + 0.1) == pytest.approx(0.1, abs=0.01)  # b's first turn
        assert turns.own("a", start, start + 0.1) == 0
        turns.release()
        assert await settled(sleepers, "going") == {"going"}
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            await sleeper.wait()
