"""bench/gpu.py, the one command for a GPU, kept working on a CPU: `--smoke` runs every row end to end with
tiny models, `--plan` lists the rows without running them, `--only` picks rows, and a row that fails or does
not fit the budget is said to."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def gpu_bench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def planned(out: str) -> list[str]:
    return re.findall(r"^row +(\S+)", out, re.M)


def results(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])["gpu_bench"]


# A table line past its name (20 characters) and configuration (40): batch, images/s, s/image, / diffusers,
# peak GiB.
FIGURES = re.compile(r" *(?P<batch>\d+) +(?P<rate>[0-9.]+) +[0-9.]+ +([0-9.]+|-) +([0-9.]+|-) ")


def table_rates(out: str) -> dict[str, list[float]]:
    """Images/s as the tables print them, by row key (the first column of a row's first line, the batch
    and images/s columns of its lines)."""
    rates: dict[str, list[float]] = {}
    model = key = None
    for line in out.splitlines():
        if line.startswith(("SD 1.5: ", "SDXL: ")):
            model = "sd15" if line.startswith("SD 1.5") else "sdxl"
        elif model and re.fullmatch(r"  [a-z-]* *", line[:22]) and (figures := FIGURES.match(line[62:])):
            key = f"{model}:{line[2:22].strip()}" if line[2:22].strip() else key
            rates.setdefault(key, []).append(float(figures["rate"]))
        elif not line.strip():
            model = None
    return rates


@pytest.fixture(scope="module")
def smoke() -> subprocess.CompletedProcess:
    return gpu_bench("--smoke")


def test_the_plan_lists_every_row_and_runs_nothing():
    shown = gpu_bench("--plan", timeout=120)
    assert shown.returncode == 0, shown.stderr
    rows = planned(shown.stdout)
    assert len(rows) == 17 and "throughput" in rows
    assert {"sd15:diffusers", "sd15:engine", "sdxl:compile", "sdxl:preview-decoder"} <= set(rows)
    assert re.findall(r"^prepare +(\S+)", shown.stdout, re.M) == ["sd15:prepare", "sdxl:prepare"]
    assert "images/s" not in shown.stdout and "total wall time" not in shown.stdout  # nothing ran
    assert "would be skipped: over the budget" in shown.stdout  # the default budget holds less than all


def test_only_selects_rows_by_key_by_name_and_by_model():
    shown = gpu_bench("--plan", "--only", "compile,sdxl,sd15:vae-tiling", timeout=120)
    assert shown.returncode == 0, shown.stderr
    rows = planned(shown.stdout)
    assert set(rows) == {"sd15:compile", "sd15:vae-tiling", "sdxl:diffusers", "sdxl:engine", "sdxl:attention-classic",
                         "sdxl:channels-last", "sdxl:vae-tiling", "sdxl:vae-slicing", "sdxl:preview-decoder",
                         "sdxl:compile"}
    refused = gpu_bench("--plan", "--only", "sd15:turbo", timeout=120)
    assert refused.returncode == 2 and "no row sd15:turbo" in refused.stderr


def test_smoke_runs_every_planned_row_with_positive_images_per_second(smoke: subprocess.CompletedProcess):
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    rows = planned(gpu_bench("--smoke", "--plan", timeout=120).stdout)
    ran = results(smoke.stdout)
    assert ran["smoke"] is True and ran["device"] == "cpu"
    by_key = {row["key"]: row for row in ran["rows"]}
    printed = table_rates(smoke.stdout)
    for key in rows:
        if key == "throughput":
            continue
        row = by_key[key]
        assert row["status"] == "ok", (key, row)
        assert [b["batch"] for b in row["batches"]] == [1, 2]
        assert all(b["images_per_second"] > 0 and b["images"] == b["batch"] * b["calls"] for b in row["batches"])
        assert len(printed[key]) == 2 and all(rate > 0 for rate in printed[key]), key
    assert set(printed) == {key for key in rows if key != "throughput"}
    assert "SMOKE RUN" in smoke.stdout and re.search(r"^total wall time: [0-9.]+ s", smoke.stdout, re.M)


def test_smoke_rows_ran_with_their_setting(smoke: subprocess.CompletedProcess):
    """Each option row's engine said it used that option (engine.speed's log), and the defaults row did not."""
    by_key = {row["key"]: row for row in results(smoke.stdout)["rows"]}
    said = {key: " ".join(row.get("log", [])) for key, row in by_key.items()}
    assert "PyTorch SDPA" in said["sd15:engine"] and "channels-last: off" in said["sd15:engine"]
    assert "classic" in said["sd15:attention-classic"] and "classic" in said["sdxl:attention-classic"]
    assert "channels-last: on" in said["sdxl:channels-last"]
    assert "compiled the UNet" in said["sd15:compile"] and "compiled the UNet" not in said["sd15:engine"]
    assert "sd15-preview" in said["sd15:preview-decoder"] and "sdxl-preview" in said["sdxl:preview-decoder"]
    assert by_key["sd15:diffusers"]["batches"][0]["steps"] == 3  # PNDM: one step more than the 2 asked
    assert by_key["sd15:engine"]["batches"][0]["steps"] == 2


def test_smoke_measures_the_whole_bot_against_the_bare_loop(smoke: subprocess.CompletedProcess):
    throughput = results(smoke.stdout)["throughput"]
    assert throughput["status"] == "ok", throughput
    assert throughput["bot_over_bare"] > 0 and throughput["engine_over_bare"] > 0
    printed = re.search(r"^bot / bare: ([0-9.]+)$", smoke.stdout, re.M)
    assert printed and float(printed.group(1)) == pytest.approx(throughput["bot_over_bare"], abs=0.001)


def test_only_runs_the_selected_rows_and_says_which_failed_or_did_not_fit():
    """Three rows picked: one runs, one fails (a preview decoder that does not exist), one is over the budget."""
    run = gpu_bench("--smoke", "--only", "sd15:engine,sd15:preview-decoder,throughput", "--budget", "30",
                    "--preview-decoder", "/nonexistent/taesd")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    ran = results(run.stdout)
    assert {row["key"]: row["status"] for row in ran["rows"]} == {
        "sd15:prepare": "ok", "sd15:engine": "ok", "sd15:preview-decoder": "failed"}
    assert "SD_PREVIEW_DECODER '/nonexistent/taesd'" in next(r["why"] for r in ran["rows"] if r["status"] == "failed")
    assert ran["throughput"]["status"] == "skipped" and "over the budget" in ran["throughput"]["why"]
    assert "rows skipped: throughput; failed: sd15:preview-decoder" in run.stdout
    assert set(table_rates(run.stdout)) == {"sd15:engine"}
