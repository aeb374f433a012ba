"""`python -m engine serve`: the JSON-lines protocol the bot drives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dreambot import protocol
from dreambot.protocol import EngineError, Fatal, GenerateRequest, GenerateResult, Job, Progress, Ready


def serve(model: Path | str, jobs: list[Job | bytes]) -> list[protocol.Message]:
    lines = b"".join(job if isinstance(job, bytes) else protocol.encode(job) for job in jobs)
    done = subprocess.run([sys.executable, "-m", "engine", "serve"], input=lines, capture_output=True, timeout=300,
                          env={**os.environ, "SD_MODEL": str(model)})
    assert done.returncode in (0, 1), done.stderr.decode()
    return [protocol.decode(line) for line in done.stdout.splitlines()]


def test_ready_progress_result_and_errors_keep_it_serving(tiny_model: Path) -> None:
    messages = serve(tiny_model, [
        Job(1, GenerateRequest(prompt="a fox", seed=3, num_inference_steps=4)),
        Job(2, GenerateRequest(prompt="a fox", seed=3, width=100)),  # diffusers refuses: not a multiple of 8
        Job(3, GenerateRequest(prompt="a cat", seed=4, num_inference_steps=3, num_images=2)),
    ])
    assert messages[0] == Ready(model="tiny", device="cpu", dtype="float32", safety_checker="opennsfw")
    progress = [m for m in messages if isinstance(m, Progress) and m.job_id == 1]
    assert [(p.step, p.total) for p in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    results = {m.job_id: m for m in messages if isinstance(m, GenerateResult | EngineError)}
    assert isinstance(results[1], GenerateResult) and results[1].images[0].data.startswith(b"\x89PNG")
    assert isinstance(results[2], EngineError) and "100" in results[2].message
    assert isinstance(results[3], GenerateResult) and [i.seed for i in results[3].images] == [4, 5]
    # Nothing but protocol lines on stdout, whatever the libraries print.
    assert all(isinstance(m, Ready | Progress | GenerateResult | EngineError) for m in messages)


def test_a_model_that_cannot_load_is_reported_once(tmp_path: Path) -> None:
    messages = serve(tmp_path / "missing", [])
    assert len(messages) == 1 and isinstance(messages[0], Fatal)
    assert "is not an existing folder or checkpoint file" in messages[0].message
