"""bench/few_steps.py, the CPU host's few-step figure, kept working: `--smoke` runs both setups end to end
through the engine on a tiny model, and the few-step one runs unguided (one UNet pass of batch 1 per step)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "few_steps.py"
# A table line: setup, sampler (may hold spaces), steps, guidance, UNet calls (calls x batch), s/picture,
# pipeline s, safety+PNG s.
ROW = re.compile(r"^(?P<setup>few|many) +(?P<sampler>\S.*?) +(?P<steps>\d+) +(?P<guidance>[0-9.]+) +"
                 r"(?P<calls>\d+) x (?P<batch>\d+) +(?P<seconds>[0-9.]+) +(?P<pipeline>[0-9.]+) +"
                 r"(?P<finishing>[0-9.]+)$", re.M)


def test_smoke_times_both_setups_and_the_few_step_one_skips_the_unconditional_pass():
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1", "--rounds", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert re.search(r"^machine: .+ cores, .+ torch ", out, re.M)
    assert "SMOKE RUN" in out and "64x64 picture" in out
    rows = {m["setup"]: m for m in ROW.finditer(out)}
    assert set(rows) == {"few", "many"}, out
    few, many = rows["few"], rows["many"]
    assert (few["sampler"], few["steps"], float(few["guidance"])) == ("LCM", "4", 1.0)
    assert (many["sampler"], many["steps"], float(many["guidance"])) == ("DPM++ 2M", "25", 7.0)
    # Unguided: one UNet call of batch 1 per step; guided: the unconditional pass doubles the batch.
    assert (few["calls"], few["batch"]) == ("4", "1") and (many["calls"], many["batch"]) == ("25", "2")
    for row in (few, many):
        assert float(row["seconds"]) > 0 and float(row["pipeline"]) > 0 and float(row["finishing"]) > 0
        # The table prints each figure to the millisecond: two parts rounded up and the whole rounded
        # down can exceed it by 1.5 ms, which is 2 % of a smoke picture.
        assert float(row["pipeline"]) + float(row["finishing"]) <= float(row["seconds"]) * 1.01 + 0.0015
    rounds = re.findall(r"^round (\d) \((few|many) then (few|many)\): few ([0-9.]+) s, many ([0-9.]+) s", out, re.M)
    assert [(r[0], r[1], r[2]) for r in rounds] == [("1", "few", "many"), ("2", "many", "few")]
    ratio = re.search(r"^many / few: ([0-9.]+) \(seconds per picture\)$", out, re.M)
    assert ratio and float(ratio.group(1)) > 0
    assert abs(float(ratio.group(1)) - float(many["seconds"]) / float(few["seconds"])) < 0.05 * float(ratio.group(1))
