"""`python -m engine serve`: the JSON-lines protocol the bot drives."""

from __future__ import annotations

import io
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreambot import wire
from dreambot.request import GenerateRequest
from dreambot.wire import (
    PROTOCOL_VERSION,
    Batch,
    Cancel,
    EngineError,
    Fatal,
    GenerateResult,
    Job,
    Loaded,
    Progress,
    Ready,
)
from engine.server import Finishing, HeldJobs


def serve(model: Path | str, jobs: list[Job | bytes]) -> list[wire.Message]:
    lines = b"".join(job if isinstance(job, bytes) else wire.encode(job) for job in jobs)
    done = subprocess.run([sys.executable, "-m", "engine", "serve"], input=lines, capture_output=True, timeout=300,
                          env={**os.environ, "SD_MODEL": str(model)})
    assert done.returncode in (0, 1), done.stderr.decode()
    return [wire.decode(line) for line in done.stdout.splitlines()]


def test_ready_progress_result_and_errors_keep_it_serving(tiny_model: Path) -> None:
    messages = serve(tiny_model, [
        Job(1, GenerateRequest(prompt="a fox", seed=3, num_inference_steps=4)),
        Job(2, GenerateRequest(prompt="a fox", seed=3, width=100)),  # diffusers refuses: not a multiple of 8
        Job(3, GenerateRequest(prompt="a cat", seed=4, num_inference_steps=3, num_images=2)),
    ])
    assert messages[0] == Ready(model="tiny", device="cpu", dtype="float32", safety_checker="opennsfw",
                               protocol=PROTOCOL_VERSION)
    progress = [(m.step, m.total) for m in messages if isinstance(m, Progress) and m.job_id == 1]
    # 0: started; then the steps, as often as PROGRESS_SECONDS lets them, and always the last.
    assert progress[0] == (0, 4) and progress[-1] == (4, 4) and progress == sorted(set(progress))
    results = {m.job_id: m for m in messages if isinstance(m, GenerateResult | EngineError)}
    assert isinstance(results[1], GenerateResult) and results[1].images[0].data.startswith(b"\x89PNG")
    assert isinstance(results[2], EngineError) and "100" in results[2].message
    assert isinstance(results[3], GenerateResult) and [i.seed for i in results[3].images] == [4, 5]
    # Nothing but protocol lines on stdout, whatever the libraries print.
    assert all(isinstance(m, Ready | Loaded | Progress | GenerateResult | EngineError) for m in messages)


def test_a_model_that_is_not_there_stops_it_with_one_line_before_loading_anything(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "engine", "serve"], input=b"", capture_output=True, timeout=60,
                          env={**os.environ, "SD_MODEL": str(tmp_path / "missing")})
    line = (f"invalid settings: SD_MODEL '{tmp_path / 'missing'}' does not exist (looked for {tmp_path / 'missing'}): "
            "point it at a diffusers folder or a .safetensors or .ckpt file, or give a model hub id such as org/name")
    assert done.returncode == 2 and done.stderr.decode().splitlines() == [line]
    assert [wire.decode(out) for out in done.stdout.splitlines()] == [Fatal(message=line)]  # the bot's reason


def broken_copy(model: Path, where: Path) -> Path:
    """The model with its UNet's weights damaged (shaped like a model, but it cannot load)."""
    shutil.copytree(model, where)
    (where / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not really weights")
    return where


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_a_model_that_cannot_load_is_one_line_and_its_traceback_is_for_debugging(tiny_model: Path, tmp_path: Path,
                                                                                 level: str) -> None:
    model = broken_copy(tiny_model, tmp_path / "broken")
    done = subprocess.run([sys.executable, "-m", "engine", "serve"], input=b"", capture_output=True, timeout=300,
                          env={**os.environ, "SD_MODEL": str(model), "LOG_LEVEL": level})
    [fatal] = [wire.decode(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1 and isinstance(fatal, Fatal)
    assert fatal.message.startswith(f"could not load SD_MODEL '{model}': ") and "\n" not in fatal.message
    log = done.stderr.decode()
    assert f"ERROR engine: the engine could not start: {fatal.message}" in log
    assert ("Traceback" in log) is (level == "DEBUG")


EVERY_STEP = "import engine.server\nengine.server.PROGRESS_SECONDS = 0.0\n"


class Served:
    """`python -m engine serve` driven line by line through its pipes, as the bot drives it.

    `setup` runs in the engine process first (to lower a constant or break the model on purpose)."""

    def __init__(self, model: Path, log: Path, setup: str = "") -> None:
        code = f"import sys\n{setup}\nfrom engine.__main__ import main\nsys.exit(main(['serve']))"
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log.open("wb"), env={**os.environ, "SD_MODEL": str(model)})
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert isinstance(self.next(), Ready)
        assert self.next() == Loaded(models=(model.name,))  # the default model, loaded at start

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, *messages: wire.Message) -> None:
        self.process.stdin.write(b"".join(wire.encode(m) for m in messages))
        self.process.stdin.flush()

    def next(self, timeout: float = 120) -> wire.Message:
        line = self._lines.get(timeout=timeout)
        assert line is not None, f"the engine exited early:\n{self.log.read_text()}"
        return wire.decode(line)

    def until_answered(self, *job_ids: int) -> list[wire.Message]:
        """Messages up to the result or error of each of `job_ids`."""
        messages, waiting = [], set(job_ids)
        while waiting:
            messages.append(message := self.next())
            if isinstance(message, GenerateResult | EngineError):
                waiting.discard(message.job_id)
        return messages

    def close(self) -> tuple[int, list[wire.Message]]:
        """End of input: the exit code and what the engine said before it exited."""
        self.process.stdin.close()
        code = self.process.wait(timeout=300)
        rest = []
        while (line := self._lines.get(timeout=10)) is not None:
            rest.append(wire.decode(line))
        return code, rest


def answers(messages: list[wire.Message]) -> dict[int, GenerateResult | EngineError]:
    return {m.job_id: m for m in messages if isinstance(m, GenerateResult | EngineError)}


def test_cancel_stops_the_job_between_steps_and_the_engine_carries_on(tiny_model: Path, tmp_path: Path) -> None:
    engine = Served(tiny_model, tmp_path / "engine.log")
    engine.send(Job(1, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=500)))
    first = engine.next()
    assert isinstance(first, Progress) and (first.job_id, first.step) == (1, 0)  # started
    engine.send(Cancel(99), Cancel(1))  # a cancel for a job the engine does not hold is ignored
    messages = engine.until_answered(1)
    assert messages[-1] == EngineError(job_id=1, message="cancelled", kind="cancelled")
    assert max(m.step for m in [first, *messages] if isinstance(m, Progress)) < 100  # long before the end

    # The next job runs; a late cancel for the finished one, or one for another id, changes nothing.
    engine.send(Job(2, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=30)))
    assert isinstance(engine.next(), Progress)
    engine.send(Cancel(1), Cancel(3))
    assert isinstance(engine.until_answered(2)[-1], GenerateResult)

    # A job cancelled before its turn never starts; the one before it is not disturbed.
    engine.send(Job(3, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=20)),
                Job(4, GenerateRequest(prompt="a cat", seed=1, num_inference_steps=20)), Cancel(4))
    messages = engine.until_answered(3, 4)
    assert isinstance(answers(messages)[3], GenerateResult)
    assert answers(messages)[4].kind == "cancelled" and not [m for m in messages if getattr(m, "job_id", 0) == 4
                                                             and isinstance(m, Progress)]

    # End of input while a job runs: the job is finished, then the engine exits cleanly.
    engine.send(Job(5, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=40)))
    assert isinstance(engine.next(), Progress)
    code, rest = engine.close()
    assert code == 0 and isinstance(answers(rest)[5], GenerateResult)


def test_step_reports_go_out_at_most_every_progress_seconds_and_the_start_and_end_always(tiny_model: Path,
                                                                                        tmp_path: Path) -> None:
    engine = Served(tiny_model, tmp_path / "engine.log", setup="import engine.server\n"
                                                                "engine.server.PROGRESS_SECONDS = 3600.0\n")
    engine.send(Job(1, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=6)),
                Job(2, GenerateRequest(prompt="a fox", seed=2, num_inference_steps=6, keep_flagged=True)))
    messages = engine.until_answered(1, 2)
    for job_id in (1, 2):
        assert [(m.step, m.total) for m in messages if isinstance(m, Progress) and m.job_id == job_id] == \
            [(0, 6), (6, 6)]
    assert engine.close()[0] == 0
    # With no wait between reports, every step is reported (EVERY_STEP, as the tests below use it).
    engine = Served(tiny_model, tmp_path / "again.log", setup=EVERY_STEP)
    engine.send(Job(3, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=6)))
    assert [m.step for m in engine.until_answered(3) if isinstance(m, Progress)] == [0, 1, 2, 3, 4, 5, 6]
    assert engine.close()[0] == 0


PREVIEWS_AND_ONE_OUT_OF_MEMORY = """
import torch
import engine.server
from engine.pipeline import Engine

engine.server.PREVIEW_SECONDS = 0.0
load = Engine.load.__func__

def load_then_fail_once(cls, settings, model=None, **shared):
    engine = load(cls, settings, model, **shared)
    unet = engine.pipe.unet
    def out_of_memory(*args, **kwargs):
        del unet.forward
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    unet.forward = out_of_memory
    return engine

Engine.load = classmethod(load_then_fail_once)
"""


def test_previews_and_out_of_memory(tiny_model: Path, tmp_path: Path) -> None:
    engine = Served(tiny_model, tmp_path / "engine.log", setup=PREVIEWS_AND_ONE_OUT_OF_MEMORY)
    engine.send(Job(1, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=4)),
                Job(2, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=4, width=96, keep_flagged=True)),
                Job(3, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=4)))
    messages = engine.until_answered(1, 2, 3)
    out_of_memory = answers(messages)[1]
    assert out_of_memory.kind == "oom" and "try a smaller size or fewer images" in out_of_memory.message
    assert isinstance(answers(messages)[2], GenerateResult)
    progress = [m for m in messages if isinstance(m, Progress) and m.job_id == 2]
    assert [p.step for p in progress] == [0, 1, 2, 3, 4]
    # Every step but the start (0) and the last carries a preview (PREVIEW_SECONDS lowered to 0): the
    # result follows the last.
    assert progress[-1].preview is None
    for p in progress[1:-1]:
        preview = Image.open(io.BytesIO(p.preview))
        assert preview.format == "JPEG" and preview.size == (128, 85)
    # Drawn before the safety check: no preview where flagged images are blocked.
    assert not any(m.preview for m in messages if isinstance(m, Progress) and m.job_id == 3)
    assert "out of memory" in (tmp_path / "engine.log").read_text()
    assert engine.close()[0] == 0


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_a_batch_answers_each_job_with_its_solo_images(tiny_model: Path, tmp_path: Path) -> None:
    requests = [GenerateRequest(prompt="a red fox", seed=7, num_inference_steps=4, keep_flagged=True),
                GenerateRequest(prompt="a blue whale", negative_prompt="blurry", seed=123, num_images=2,
                                num_inference_steps=4, keep_flagged=True),
                GenerateRequest(prompt="a green tree", seed=99, num_inference_steps=4, keep_flagged=True)]
    bad = GenerateRequest(prompt="a fox", seed=1, num_inference_steps=4, nsfw_threshold=2.0)
    engine = Served(tiny_model, tmp_path / "engine.log", setup=EVERY_STEP)
    engine.send(*[Job(job_id, request) for job_id, request in enumerate(requests, start=1)])
    engine.send(Batch(tuple(Job(job_id, request) for job_id, request in enumerate([*requests, bad], start=11))))
    messages = engine.until_answered(1, 2, 3, 11, 12, 13, 14)
    results = answers(messages)
    assert results[14].kind == "invalid" and "safety threshold" in results[14].message
    for job_id in (11, 12, 13):
        progress = [(m.step, m.total) for m in messages if isinstance(m, Progress) and m.job_id == job_id]
        assert progress == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
        alone, together = results[job_id - 10], results[job_id]
        assert [i.seed for i in together.images] == [i.seed for i in alone.images]
        for a, b in zip(alone.images, together.images, strict=True):
            assert np.abs(pixels(a.data) - pixels(b.data)).max() <= 1  # float32 rounding; see test_pipeline
    assert engine.close()[0] == 0


# Job 1's pictures are checked only once the next call's pictures are made (or after 60 s, if
# that never happens: an engine that does not overlap the two); job 2's fail there (a bug, say).
OVERLAP = """
import threading
import engine.finishing, engine.pipeline
made_next = threading.Event()
real_make, real_finish = engine.pipeline.Engine.make_batch, engine.finishing.Unchecked.finish
def make_batch(self, jobs, progress=None):
    try:
        return real_make(self, jobs, progress)
    finally:
        made_next.set() if jobs[0].job_id == 2 else None
def finish(self):
    if self.job_id == 1:
        made_next.wait(60)
    if self.job_id == 2:
        raise RuntimeError("the encoder broke")
    return real_finish(self)
engine.pipeline.Engine.make_batch, engine.finishing.Unchecked.finish = make_batch, finish
"""


def test_the_next_call_denoises_while_the_last_ones_pictures_are_checked(tiny_model: Path, tmp_path: Path) -> None:
    engine = Served(tiny_model, tmp_path / "engine.log", setup=EVERY_STEP + OVERLAP)
    request = GenerateRequest(prompt="a fox", seed=1, num_inference_steps=3)
    other = GenerateRequest(prompt="a fox", seed=2, num_inference_steps=3)
    engine.send(Job(1, request), Batch((Job(2, request), Job(3, other))), Job(4, request), Cancel(4), Job(5, request))
    messages = engine.until_answered(1, 2, 3, 4, 5)
    said = [(m.job_id, m.kind if isinstance(m, EngineError) else "result") for m in messages
            if isinstance(m, GenerateResult | EngineError)]
    # Answered in the order sent, whatever happened to each: one job's failure there stops no other.
    assert said == [(1, "result"), (2, "internal"), (3, "result"), (4, "cancelled"), (5, "result")]
    first = next(i for i, m in enumerate(messages) if isinstance(m, GenerateResult))
    assert [m.step for m in messages[:first] if m.job_id == 2] == [0, 1, 2, 3]  # made while job 1's were checked
    code, rest = engine.close()
    assert code == 0 and not rest


def test_answers_that_cannot_be_sent_stop_the_engine_rather_than_hang_it() -> None:
    def send(message: wire.Message) -> None:
        raise BrokenPipeError("the bot is gone")

    held = HeldJobs()
    finishing = Finishing(held, send)
    result = GenerateResult(job_id=1, images=(), seed=1, width=8, height=8, model="tiny")
    finishing.put([(1, result)])
    with pytest.raises(BrokenPipeError):
        finishing.drain()
    with pytest.raises(BrokenPipeError):  # the job loop stops here, and the engine exits
        finishing.put([(2, result)])
    with pytest.raises(BrokenPipeError):
        finishing.close()
