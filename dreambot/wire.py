"""The wire format between the bot and an engine process: the messages, one JSON line each.

Imports neither torch nor discord. Both sides check `PROTOCOL_VERSION` at `Ready`, so a bot and an
engine from different releases refuse each other with a clear message instead of misreading.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field

from dreambot.request import GenerateRequest

# Raise on any change a peer of the previous version would misread. 2: prompts carry A1111's syntax
# and <lora:…> tags, which an engine of version 1 would draw as words. 3: jobs name their model;
# engines say which models they hold (Loaded) and when a job waits for one to load.
PROTOCOL_VERSION = 3


@dataclass(frozen=True)
class ImageResult:
    # A PNG, or for an interpolation an animated GIF (`format`); empty when the image was flagged
    # and the request did not ask to keep flagged images.
    data: bytes
    seed: int
    nsfw_content_detected: bool
    # The safety classifier's own number, on its scale (`request.SAFETY_SCALES`).
    nsfw_score: float
    format: str = "png"


@dataclass(frozen=True)
class GenerateResult:
    job_id: int
    images: tuple[ImageResult, ...]
    seed: int
    width: int
    height: int
    model: str
    # Seconds spent per phase: "generate" (denoise + decode), "safety", "total".
    timings: dict[str, float] = field(default_factory=dict)
    # Modes that start from a picture: the highest safety score of what the job brought in (the
    # picture, whole and in parts, and what the result keeps of it pixel-exact, on its own). Above the
    # threshold, every picture of the job is flagged. None for modes with no input picture.
    source_score: float | None = None
    # How the prompt was read: its tokens, and the chunks of the text encoder's length (75 for CLIP)
    # they took; None where the model's prompts are not read in chunks.
    prompt_tokens: int | None = None
    prompt_chunks: int | None = None

    @property
    def all_flagged(self) -> bool:
        return all(image.nsfw_content_detected for image in self.images)


@dataclass(frozen=True)
class Progress:
    """A job's progress: step 0 (not loading) when the engine starts it, then the steps made, at
    most every `engine.server.PROGRESS_SECONDS` (a quarter of a second), and always its last."""

    job_id: int
    step: int
    total: int
    # Now and then (every couple of seconds), a small JPEG of the picture so far: a cheap
    # linear latent-to-RGB approximation, not a VAE decode.
    preview: bytes | None = None
    # Before the first step: the job waits while the engine loads its model (this one), which
    # took `seconds` last time (None: never loaded yet).
    loading: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class EngineError:
    job_id: int
    message: str
    # "invalid" (the request breaks a rule), "cancelled" (a Cancel arrived), "oom" (the device ran
    # out of memory; the engine freed it and carries on), "internal" (a bug or a failed load)
    kind: str = "internal"


@dataclass(frozen=True)
class Cancel:
    """Bot to engine: stop job `job_id` between two denoising steps (it ends with an EngineError of
    kind "cancelled"); ignored if that job is not running."""

    job_id: int


@dataclass(frozen=True)
class Ready:
    model: str
    device: str
    dtype: str
    safety_checker: str
    # The engine's PROTOCOL_VERSION; the bot refuses an engine that speaks another one.
    protocol: int = 0


@dataclass(frozen=True)
class Loaded:
    """Engine to bot, after Ready and whenever it changes: the models the engine holds in memory,
    the most recently used last (the bot sends jobs to an engine that holds their model)."""

    models: tuple[str, ...]


@dataclass(frozen=True)
class Fatal:
    """The engine cannot serve at all (the model failed to load); it exits after sending this."""

    message: str


@dataclass(frozen=True)
class Job:
    """A request as it travels to the engine: the request and the id of its row in the store."""

    job_id: int
    request: GenerateRequest


@dataclass(frozen=True)
class Batch:
    """Bot to engine: compatible jobs (same `GenerateRequest.batch_key`) run as one pipeline call. Each job gets its
    own Progress, and its own GenerateResult or EngineError, as if it had run alone; each image is
    the one its job would give alone with its seed."""

    jobs: tuple[Job, ...]


Message = Job | Batch | Cancel | GenerateResult | Progress | EngineError | Ready | Loaded | Fatal

_TYPES: dict[str, type] = {
    "job": Job,
    "batch": Batch,
    "cancel": Cancel,
    "result": GenerateResult,
    "progress": Progress,
    "error": EngineError,
    "ready": Ready,
    "loaded": Loaded,
    "fatal": Fatal,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


def encode(message: Message) -> bytes:
    """One message as one line of JSON (bytes are base64)."""
    body = asdict(message)
    if isinstance(message, GenerateResult):
        for image in body["images"]:
            image["data"] = _b64(image["data"])
    for job in [body] if isinstance(message, Job) else body["jobs"] if isinstance(message, Batch) else []:
        for key in ("image", "mask"):
            job["request"][key] = _b64(job["request"][key])
    if isinstance(message, Progress):
        body["preview"] = _b64(body["preview"])
    return json.dumps({"type": _NAMES[type(message)], **body}, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    data = json.loads(line)
    cls = _TYPES[data.pop("type")]
    if cls is Job:
        return _job(data)
    if cls is Batch:
        return Batch(jobs=tuple(_job(job) for job in data["jobs"]))
    if cls is Progress:
        data["preview"] = _unb64(data.get("preview"))
    if cls is Loaded:
        data["models"] = tuple(data["models"])
    if cls is GenerateResult:
        data["images"] = tuple(ImageResult(**{**image, "data": _unb64(image["data"])}) for image in data["images"])
    return cls(**data)


def _job(data: dict) -> Job:
    request = data["request"]
    for key in ("image", "mask"):
        request[key] = _unb64(request[key])
    return Job(job_id=data["job_id"], request=GenerateRequest(**request))


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


