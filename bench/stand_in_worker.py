"""A stand-in for `python -m engine worker`, for bench/workers.py: the real NATS side (`engine.worker.Worker`,
unchanged: pulls, leases, heartbeats, results kept until the bot takes them, SIGTERM) in front of an
engine that loads no model and draws nothing. Each job sleeps a fixed time per picture, reports two
steps of progress, and answers with one small PNG per picture (64×64, made once) under the request's
seed; a job the bot cancelled is answered as cancelled, as the real engine answers it.

    NATS_URL=nats://127.0.0.1:4222 WORKER_NAME=w1 python -m bench.stand_in_worker [--seconds 1.0]

STAND_IN_SECONDS (or `--seconds`): seconds per picture (default 1.0). It never imports torch
(`--check-imports` says so and exits). Each result handed to the Worker is logged as "answered job N"
(the line bench/workers.py counts).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dreambot.settings import WorkerSettings, load  # noqa: E402
from dreambot.wire import PROTOCOL_VERSION, EngineError, GenerateResult, ImageResult, Job, Progress, Ready  # noqa: E402
from engine.worker import Worker, configure_logging  # noqa: E402

log = logging.getLogger("bench.stand_in_worker")

MODEL = "stand-in"
SIZE = 64
STEPS_REPORTED = 2  # progress messages per job, as a real engine sends one per denoising step
HEAVY = ("torch", "diffusers", "transformers")


def picture() -> bytes:
    """One small real PNG, the same for every job."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), (200, 90, 40)).save(out, format="PNG")
    return out.getvalue()


def answer(job: Job, worker: Worker, png: bytes, seconds: float) -> None:
    """Run one job: `seconds` per picture, split into STEPS_REPORTED steps with a Progress after each."""
    request = job.request
    seed = request.seed if request.seed is not None else 0
    seeds = request.seeds() if request.seed is not None else [seed] * request.num_images
    pictures = max(len(seeds), 1)
    for step in range(1, STEPS_REPORTED + 1):
        if worker.held.cancelled(job.job_id):
            worker.from_engine(EngineError(job_id=job.job_id, message="cancelled", kind="cancelled"))
            log.info("cancelled job %d", job.job_id)
            return
        time.sleep(seconds * pictures / STEPS_REPORTED)
        worker.from_engine(Progress(job_id=job.job_id, step=step, total=STEPS_REPORTED))
    images = tuple(ImageResult(data=png, seed=each, nsfw_content_detected=False, nsfw_score=0.0) for each in seeds)
    spent = seconds * pictures
    worker.from_engine(GenerateResult(job_id=job.job_id, images=images, seed=seed, width=SIZE, height=SIZE,
                                      model=MODEL, timings={"generate": spent, "total": spent}))
    log.info("answered job %d", job.job_id)


def run_jobs(worker: Worker, seconds: float, hang: bool = False) -> None:
    """The engine's thread: the jobs of each lease in turn, until a None comes (`hang`: an engine
    stuck in its first step, deaf to cancels)."""
    png = picture()
    while (jobs := worker.work.get()) is not None:
        while hang:
            time.sleep(3600)
        for job in jobs:
            answer(job, worker, png, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stand_in_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("STAND_IN_SECONDS", "1.0")),
                        help="seconds per picture (default: STAND_IN_SECONDS, else 1.0)")
    parser.add_argument("--hang", action="store_true", help="never finish a job, nor stop one (a stuck engine)")
    parser.add_argument("--stuck-seconds", type=float, default=None,
                        help="exit this long after the bot voids a lease the engine does not stop (default: "
                        "engine.worker.STUCK_SECONDS)")
    parser.add_argument("--check-imports", action="store_true",
                        help="print whether torch, diffusers or transformers were imported, and exit (0: none)")
    args = parser.parse_args(argv)
    if args.check_imports:
        picture()  # what a job needs, imported
        heavy = [name for name in HEAVY if name in sys.modules]
        print("heavy modules imported:", ", ".join(heavy) or "none")
        return 1 if heavy else 0
    settings = load(WorkerSettings)
    configure_logging(settings.log_level)
    name = settings.worker_name or f"stand-in-{os.getpid()}"
    ready = Ready(model=MODEL, device="none", dtype="none", safety_checker="opennsfw", protocol=PROTOCOL_VERSION)
    worker = Worker(settings, name, ready, (MODEL,), **({"stuck_seconds": args.stuck_seconds}
                                                         if args.stuck_seconds is not None else {}))
    log.info("stand-in worker %s: %.3f s per picture, no model (heavy modules imported: %s)", name, args.seconds,
             ", ".join(module for module in HEAVY if module in sys.modules) or "none")
    return worker.serve(lambda: run_jobs(worker, args.seconds, args.hang))


if __name__ == "__main__":
    raise SystemExit(main())
