"""`python -m engine serve`: the engine process the bot starts and supervises.

Reads one JSON job per line on stdin and writes progress, results and errors as JSON lines
(see `dreambot.protocol`). The protocol stream gets fd 1 to itself: whatever a library prints
goes to stderr, which the bot logs.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import BinaryIO

from dreambot import protocol
from dreambot.protocol import EngineError, Fatal, InvalidRequest, Job, Progress, Ready
from dreambot.settings import EngineSettings

log = logging.getLogger("engine")


def serve(settings: EngineSettings, stdin: BinaryIO | None = None) -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = stdin or sys.stdin.buffer

    def send(message: protocol.Message) -> None:
        out.write(protocol.encode(message))
        out.flush()

    from engine.pipeline import Engine  # after the fd swap: importing torch may print

    try:
        engine = Engine.load(settings)
    except Exception as error:
        log.exception("the engine could not start")
        send(Fatal(message=str(error)))
        return 1
    send(Ready(model=engine.model, device=str(engine.device), dtype=str(engine.dtype).removeprefix("torch."),
               safety_checker=engine.safety.name))

    for line in stdin:
        if not line.strip():
            continue
        job = protocol.decode(line)
        if not isinstance(job, Job):
            log.error("ignoring a message that is not a job: %r", line[:200])
            continue
        try:
            result = engine.generate(
                job.job_id,
                job.request,
                on_step=lambda step, total: send(Progress(job_id=job.job_id, step=step, total=total)),
            )
        except InvalidRequest as error:
            send(EngineError(job_id=job.job_id, message=str(error), kind="invalid"))
        except Exception as error:
            log.error("job %s failed:\n%s", job.job_id, traceback.format_exc())
            send(EngineError(job_id=job.job_id, message=f"{type(error).__name__}: {error}"))
        else:
            send(result)
    return 0
