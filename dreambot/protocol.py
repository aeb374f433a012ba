"""The messages the bot and the engine process exchange, and the rules a request must follow.

Imports neither torch nor discord: both sides (and the tests) share it. Field names follow
diffusers (`prompt`, `negative_prompt`, `num_inference_steps`, `guidance_scale`, ...).
"""

from __future__ import annotations

import base64
import json
import math
import unicodedata
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

# What a job does with its inputs. Every mode runs on the one loaded model.
MODES = ("txt2img", "img2img", "inpaint", "outpaint", "upscale", "interpolate")
# How much of the input image a mode repaints (diffusers' `strength`) unless the member says.
DEFAULT_STRENGTH = {"img2img": 0.75, "inpaint": 1.0, "outpaint": 1.0, "upscale": 0.35}
DIRECTIONS = ("left", "right", "up", "down", "all")


def default_outpaint_amount(length: int) -> int:
    """How far outpainting extends a side of `length` pixels unless told: a quarter of it, in
    whole multiples of 8, within the 8-512 a request allows."""
    return min(512, max(8, length // 4 // 8 * 8))

DEFAULT_FRAMES = 8

# Each safety classifier's scale: an image is flagged when its score is above the threshold, so a
# lower threshold is stricter. (default, lowest allowed, highest allowed); servers choose within.
# opennsfw: open_nsfw's NSFW probability. checkpoint: the CLIP checker's highest concept margin
# (cosine similarity minus the concept's own threshold; diffusers flags above 0).
SAFETY_THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "opennsfw": (0.5, 0.05, 0.95),
    "checkpoint": (0.0, -0.1, 0.1),
}


def _visible(text: str) -> str:
    """The text without invisible characters (zero-width spaces and joiners, controls) and spaces."""
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc", "Mn"))


class InvalidRequest(ValueError):
    """A request a user can fix; the message says what to change."""


@dataclass(frozen=True)
class Limits:
    max_steps: int = 50
    max_width: int = 1024
    max_height: int = 1024
    max_images: int = 4
    max_prompt_length: int = 1000
    max_frames: int = 16


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    negative_prompt: str = ""
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    # None: the model's native size (512 for SD 1.x, 768 for SD 2.x, 1024 for SDXL); modes that
    # start from an image use the image's size (outpaint: plus the new strip; upscale: twice it).
    width: int | None = None
    height: int | None = None
    # None: the engine picks one; image i of a job uses seed + i, so each can be re-made alone.
    seed: int | None = None
    scheduler: str = DEFAULT_SAMPLER
    num_images: int = 1
    mode: str = "txt2img"
    # PNG bytes: the picture to start from (all modes but txt2img and interpolate) and, for
    # inpainting, the mask (white = repaint), already the image's size.
    image: bytes | None = None
    mask: bytes | None = None
    # Share of the picture repainted, 0-1 (None: DEFAULT_STRENGTH of the mode).
    strength: float | None = None
    # Outpainting: which side(s) to extend, by how many pixels.
    direction: str = "all"
    amount: int = 0
    # Interpolation: frames from (prompt, seed) to (end_prompt, end_seed); a None end keeps the start.
    end_prompt: str | None = None
    end_seed: int | None = None
    frames: int = DEFAULT_FRAMES
    # The style preset whose text was added to the prompts, shown with the result.
    style: str = ""
    # Safety: flag images scoring above this (None: the classifier's default, SAFETY_THRESHOLDS).
    nsfw_threshold: float | None = None
    # A flagged image's bytes come back only if the channel may show it (spoiler/off in an
    # age-restricted channel); otherwise they never leave the engine.
    keep_flagged: bool = False
    # The picture this job starts from was flagged, or was made from a flagged one: every picture
    # the job makes counts as flagged, whatever its own score (the bot knows a picture's history;
    # the engine sees only its pixels).
    source_flagged: bool = False

    @property
    def denoising_strength(self) -> float | None:
        """The strength the engine uses, or None for modes that start from noise."""
        if self.mode not in DEFAULT_STRENGTH:
            return None
        return DEFAULT_STRENGTH[self.mode] if self.strength is None else self.strength

    def validated(self, limits: Limits) -> GenerateRequest:
        """Return the request if it is within `limits`, else raise InvalidRequest saying what to change."""
        prompt = self.prompt.strip()
        if not _visible(prompt):
            raise InvalidRequest("The prompt is empty: describe the image you want.")
        end_prompt = self.end_prompt.strip() if self.end_prompt is not None else None
        for name, text in (("prompt", prompt), ("negative prompt", self.negative_prompt),
                           ("end prompt", end_prompt or "")):
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
        for name, seed in (("Seed", self.seed), ("End seed", self.end_seed)):
            if seed is not None and not 0 <= seed <= MAX_SEED:
                raise InvalidRequest(f"{name} must be between 0 and {MAX_SEED} (got {seed}).")
        if self.scheduler not in SAMPLERS:
            raise InvalidRequest(f"Unknown sampler {self.scheduler!r}; choose one of: {', '.join(SAMPLERS)}.")
        if not 1 <= self.num_images <= limits.max_images:
            raise InvalidRequest(f"Count must be between 1 and {limits.max_images} (got {self.num_images}).")
        if self.mode not in MODES:
            raise InvalidRequest(f"Unknown mode {self.mode!r}; choose one of: {', '.join(MODES)}.")
        needs_image = self.mode not in ("txt2img", "interpolate")
        if needs_image and self.image is None:
            raise InvalidRequest(f"{self.mode} needs an image to start from.")
        if not needs_image and self.image is not None:
            raise InvalidRequest(f"{self.mode} does not take an image.")
        if (self.mask is not None) != (self.mode == "inpaint"):
            raise InvalidRequest("Inpainting needs a mask." if self.mode == "inpaint" else
                                 f"{self.mode} does not take a mask.")
        if self.strength is not None and not 0 < self.strength <= 1:
            raise InvalidRequest(f"Strength must be above 0 and at most 1 (got {self.strength:g}).")
        strength = self.denoising_strength
        if strength is not None and int(self.num_inference_steps * strength) < 1:
            # diffusers runs int(steps * strength) of the steps: none at all would fail.
            raise InvalidRequest(
                f"At strength {strength:g}, {self.num_inference_steps} steps leave no step to run; "
                f"use at least {math.ceil(1 / strength)} steps or a higher strength."
            )
        if self.mode == "outpaint":
            if self.direction not in DIRECTIONS:
                raise InvalidRequest(f"Unknown direction {self.direction!r}; choose one of: {', '.join(DIRECTIONS)}.")
            if not 8 <= self.amount <= 512 or self.amount % 8:
                raise InvalidRequest(f"The outpainting amount must be a multiple of 8 from 8 to 512 pixels "
                                     f"(got {self.amount}).")
        if self.mode == "interpolate":
            if not 2 <= self.frames <= limits.max_frames:
                raise InvalidRequest(f"Frames must be between 2 and {limits.max_frames} (got {self.frames}).")
            if self.num_images != 1:
                raise InvalidRequest("An interpolation makes one animation; leave the count at 1.")
            if (end_prompt in (None, prompt)) and self.end_seed in (None, self.seed):
                raise InvalidRequest("An interpolation needs an end prompt or an end seed that differs from the start.")
        return replace(self, prompt=prompt, negative_prompt=self.negative_prompt.strip(), end_prompt=end_prompt)


@dataclass(frozen=True)
class ImageResult:
    # A PNG, or for an interpolation an animated GIF (`format`); empty when the image was flagged
    # and the request did not ask to keep flagged images.
    data: bytes
    seed: int
    nsfw_content_detected: bool
    # The safety classifier's own number, on its scale (SAFETY_THRESHOLDS).
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

    @property
    def all_flagged(self) -> bool:
        return all(image.nsfw_content_detected for image in self.images)


@dataclass(frozen=True)
class Progress:
    job_id: int
    step: int
    total: int
    # Now and then (every couple of seconds), a small JPEG of the picture so far: a cheap
    # linear latent-to-RGB approximation, not a VAE decode.
    preview: bytes | None = None


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
    """Bot to engine: compatible jobs (same `batch_key`) run as one pipeline call. Each job gets its
    own Progress, and its own GenerateResult or EngineError, as if it had run alone; each image is
    the one its job would give alone with its seed."""

    jobs: tuple[Job, ...]


def batch_key(request: GenerateRequest) -> tuple | None:
    """Jobs with equal keys can share one pipeline call; None: this job runs alone. Only text to
    image: the other modes' inputs differ from job to job."""
    if request.mode != "txt2img":
        return None
    return (request.width, request.height, request.num_inference_steps, request.scheduler, request.guidance_scale)


Message = Job | Batch | Cancel | GenerateResult | Progress | EngineError | Ready | Fatal

_TYPES: dict[str, type] = {
    "job": Job,
    "batch": Batch,
    "cancel": Cancel,
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


def infotext(request: GenerateRequest, *, seed: int, width: int, height: int, model: str, upscaler: str = "") -> str:
    """Generation parameters in the text AUTOMATIC1111 writes into a PNG's `parameters` chunk;
    `upscaler` names the dedicated upscaler that made an upscale (which has no strength)."""
    lines = [request.prompt]
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    fields = (f"Steps: {request.num_inference_steps}, Sampler: {request.scheduler}, "
              f"CFG scale: {request.guidance_scale:g}, Seed: {seed}, Size: {width}x{height}, Model: {model}")
    if request.denoising_strength is not None and not upscaler:
        fields += f", Denoising strength: {request.denoising_strength:g}"
    if request.mode != "txt2img":
        fields += f", Mode: {request.mode}"
    if request.mode == "outpaint":
        fields += f", Outpaint: {request.direction} {request.amount}"
    if request.mode == "interpolate":
        end_seed = seed if request.end_seed is None else request.end_seed
        # Quoted as AUTOMATIC1111 quotes values that hold its separators.
        fields += f", End prompt: {json.dumps(request.end_prompt or request.prompt)}, End seed: {end_seed}, " \
                  f"Frames: {request.frames}"
    if upscaler:
        fields += f", Upscaler: {upscaler}"
    if request.style:
        fields += f", Style: {request.style}"
    lines.append(fields)
    return "\n".join(lines)
