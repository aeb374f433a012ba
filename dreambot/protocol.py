"""The messages the bot and the engine process exchange, and the rules a request must follow.

Imports neither torch nor discord: both sides (and the tests) share it. Field names follow
diffusers (`prompt`, `negative_prompt`, `num_inference_steps`, `guidance_scale`, ...).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, replace

# Sampler names as members know them (AUTOMATIC1111's), in the order the bot offers them.
SAMPLERS: tuple[str, ...] = (
    "DPM++ 2M Karras",
    "DPM++ 2M",
    "Euler a",
    "Euler",
    "DDIM",
    "UniPC",
    "LMS",
    "Heun",
)
# Not Karras: its sigmas break down on zero-terminal-SNR models such as the bundled `shapes`.
DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.0
MIN_SIZE = 64
MAX_SEED = 2**32 - 1


class InvalidRequest(ValueError):
    """A request a user can fix; the message says what to change."""


@dataclass(frozen=True)
class Limits:
    max_steps: int = 50
    max_width: int = 1024
    max_height: int = 1024
    max_images: int = 4
    max_prompt_length: int = 1000


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    negative_prompt: str = ""
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    # None: the model's native size (512 for SD 1.x, 768 for SD 2.x, 1024 for SDXL).
    width: int | None = None
    height: int | None = None
    # None: the engine picks one; image i of a job uses seed + i, so each can be re-made alone.
    seed: int | None = None
    scheduler: str = DEFAULT_SAMPLER
    num_images: int = 1

    def validated(self, limits: Limits) -> GenerateRequest:
        """Return the request if it is within `limits`, else raise InvalidRequest saying what to change."""
        prompt = self.prompt.strip()
        if not prompt:
            raise InvalidRequest("The prompt is empty: describe the image you want.")
        for name, text in (("prompt", prompt), ("negative prompt", self.negative_prompt)):
            if len(text) > limits.max_prompt_length:
                raise InvalidRequest(
                    f"The {name} is {len(text)} characters long; the limit is {limits.max_prompt_length}."
                )
        if not 1 <= self.num_inference_steps <= limits.max_steps:
            raise InvalidRequest(f"Steps must be between 1 and {limits.max_steps} (got {self.num_inference_steps}).")
        if not 0 <= self.guidance_scale <= 30:
            raise InvalidRequest(f"Guidance must be between 0 and 30 (got {self.guidance_scale:g}).")
        for name, value, most in (("Width", self.width, limits.max_width), ("Height", self.height, limits.max_height)):
            if value is None:
                continue
            if not MIN_SIZE <= value <= most:
                raise InvalidRequest(f"{name} must be between {MIN_SIZE} and {most} pixels (got {value}).")
            if value % 8:
                lower, upper = value - value % 8, value - value % 8 + 8
                raise InvalidRequest(f"{name} must be a multiple of 8 (got {value}; try {lower} or {upper}).")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidRequest(f"Seed must be between 0 and {MAX_SEED} (got {self.seed}).")
        if self.scheduler not in SAMPLERS:
            raise InvalidRequest(f"Unknown sampler {self.scheduler!r}; choose one of: {', '.join(SAMPLERS)}.")
        if not 1 <= self.num_images <= limits.max_images:
            raise InvalidRequest(f"Count must be between 1 and {limits.max_images} (got {self.num_images}).")
        return replace(self, prompt=prompt, negative_prompt=self.negative_prompt.strip())


@dataclass(frozen=True)
class ImageResult:
    png: bytes
    seed: int
    nsfw_content_detected: bool
    # The safety classifier's own number: open_nsfw's probability, or the CLIP checker's highest
    # concept margin (flagged above 0).
    nsfw_score: float


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

    @property
    def all_flagged(self) -> bool:
        return all(image.nsfw_content_detected for image in self.images)


@dataclass(frozen=True)
class Progress:
    job_id: int
    step: int
    total: int


@dataclass(frozen=True)
class EngineError:
    job_id: int
    message: str
    # "invalid" (the request breaks a rule), "internal" (a bug or a failed load)
    kind: str = "internal"


@dataclass(frozen=True)
class Ready:
    model: str
    device: str
    dtype: str
    safety_checker: str


@dataclass(frozen=True)
class Fatal:
    """The engine cannot serve at all (the model failed to load); it exits after sending this."""

    message: str


@dataclass(frozen=True)
class Job:
    """A request as it travels to the engine: the request and the id of its row in the store."""

    job_id: int
    request: GenerateRequest


Message = Job | GenerateResult | Progress | EngineError | Ready | Fatal

_TYPES: dict[str, type] = {
    "job": Job,
    "result": GenerateResult,
    "progress": Progress,
    "error": EngineError,
    "ready": Ready,
    "fatal": Fatal,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


def encode(message: Message) -> bytes:
    """One message as one line of JSON (bytes are base64)."""
    body = asdict(message)
    if isinstance(message, GenerateResult):
        for image in body["images"]:
            image["png"] = base64.b64encode(image["png"]).decode("ascii")
    return json.dumps({"type": _NAMES[type(message)], **body}, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    data = json.loads(line)
    cls = _TYPES[data.pop("type")]
    if cls is Job:
        return Job(job_id=data["job_id"], request=GenerateRequest(**data["request"]))
    if cls is GenerateResult:
        data["images"] = tuple(
            ImageResult(**{**image, "png": base64.b64decode(image["png"])}) for image in data["images"]
        )
    return cls(**data)


def infotext(request: GenerateRequest, *, seed: int, width: int, height: int, model: str) -> str:
    """Generation parameters in the text AUTOMATIC1111 writes into a PNG's `parameters` chunk."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    lines.append(
        f"Steps: {request.num_inference_steps}, Sampler: {request.scheduler}, "
        f"CFG scale: {request.guidance_scale:g}, Seed: {seed}, Size: {width}x{height}, Model: {model}"
    )
    return "\n".join(lines)
