"""The wire format between the bot and an engine process."""

from __future__ import annotations

from dreambot import wire
from dreambot.request import GenerateRequest
from dreambot.wire import (
    PROTOCOL_VERSION,
    Batch,
    Cancel,
    EngineError,
    Fatal,
    GenerateResult,
    ImageResult,
    Job,
    Progress,
    Ready,
)


def test_every_message_survives_the_wire() -> None:
    messages = [
        Job(job_id=3, request=GenerateRequest(prompt="ünïcode ✨", negative_prompt="n", seed=5, width=64)),
        Job(job_id=4, request=GenerateRequest(prompt="p", mode="inpaint", image=b"\x89PNG\x00\xff", mask=b"\x00\x01",
                                              strength=0.5, style="anime")),
        Job(job_id=5, request=GenerateRequest(prompt="p", mode="interpolate", end_prompt="q", end_seed=9, frames=3)),
        Progress(job_id=3, step=2, total=20),
        Progress(job_id=3, step=4, total=20, preview=b"\xff\xd8\xff\x00"),
        Cancel(job_id=3),
        Batch(jobs=(Job(job_id=6, request=GenerateRequest(prompt="a", seed=1, nsfw_threshold=0.3)),
                    Job(job_id=7, request=GenerateRequest(prompt="b", seed=2, keep_flagged=True)))),
        Job(job_id=8, request=GenerateRequest(prompt="p", mode="img2img", image=b"\x89PNG", source_flagged=True)),
        GenerateResult(job_id=3, images=(ImageResult(data=b"\x89PNG\x00\xff", seed=5, nsfw_content_detected=True,
                                                     nsfw_score=0.91),),
                       seed=5, width=64, height=64, model="tiny", timings={"total": 0.5}),
        GenerateResult(job_id=5, images=(ImageResult(data=b"GIF89a\x00", seed=5, nsfw_content_detected=False,
                                                     nsfw_score=0.1, format="gif"),),
                       seed=5, width=64, height=64, model="tiny"),
        GenerateResult(job_id=8, images=(ImageResult(data=b"", seed=5, nsfw_content_detected=True, nsfw_score=0.02),),
                       seed=5, width=64, height=96, model="tiny", source_score=0.61),
        EngineError(job_id=3, message="boom", kind="internal"),
        Ready(model="tiny", device="cpu", dtype="float32", safety_checker="opennsfw", protocol=PROTOCOL_VERSION),
        Fatal(message="no such model"),
    ]
    for message in messages:
        line = wire.encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert wire.decode(line) == message
