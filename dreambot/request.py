"""A generation request and the rules it must follow: modes, samplers, limits, seeds, safety scales.

Imports neither torch nor discord: the bot and the engine (and the tests) share it. Field names
follow diffusers (`prompt`, `negative_prompt`, `num_inference_steps`, `guidance_scale`, ...).
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum

from dreambot import prompt as prompt_syntax
from dreambot.errors import InvalidRequest

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
    "LCM",
)
# Not Karras: its sigmas break down on zero-terminal-SNR models such as the bundled `shapes`.
DEFAULT_SAMPLER = "DPM++ 2M"
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.0
MIN_SIZE = 64
MAX_SEED = 2**32 - 1



class Mode(StrEnum):
    """What a job does with its inputs."""

    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    OUTPAINT = "outpaint"
    UPSCALE = "upscale"
    INTERPOLATE = "interpolate"

    @property
    def needs_image(self) -> bool:
        """Whether the mode starts from a picture (and only these take one)."""
        return self not in (Mode.TXT2IMG, Mode.INTERPOLATE)

    @property
    def needs_mask(self) -> bool:
        return self is Mode.INPAINT

    @property
    def default_strength(self) -> float | None:
        """How much of the input picture the mode repaints (diffusers' `strength`) unless the member
        says; None for modes that start from noise."""
        return _DEFAULT_STRENGTH.get(self)

    @property
    def batches(self) -> bool:
        """Whether jobs of this mode can share one pipeline call: only text to image, whose inputs
        do not differ from job to job."""
        return self is Mode.TXT2IMG

    @property
    def file_format(self) -> str:
        """What its pictures are: an interpolation is one animated GIF."""
        return "gif" if self is Mode.INTERPOLATE else "png"


_DEFAULT_STRENGTH = {Mode.IMG2IMG: 0.75, Mode.INPAINT: 1.0, Mode.OUTPAINT: 1.0, Mode.UPSCALE: 0.35}
DIRECTIONS = ("left", "right", "up", "down", "all")


def default_outpaint_amount(length: int) -> int:
    """How far outpainting extends a side of `length` pixels unless told: a quarter of it, in
    whole multiples of 8, within the 8-512 a request allows."""
    return min(512, max(8, length // 4 // 8 * 8))

DEFAULT_FRAMES = 8



@dataclass(frozen=True)
class SafetyScale:
    """A safety classifier's scale: an image is flagged when its score is above the threshold, so a
    lower threshold is stricter. Servers choose a threshold from `lowest` to `highest`."""

    classifier: str
    default: float
    lowest: float
    highest: float

    def allows(self, threshold: float) -> bool:
        return self.lowest <= threshold <= self.highest

    def check(self, threshold: float | None) -> float:
        """The threshold to use (the default for None), or InvalidRequest if it is off this scale."""
        if threshold is None:
            return self.default
        if not self.allows(threshold):
            raise InvalidRequest(f"The safety threshold must be between {self.lowest:g} and {self.highest:g} for "
                                 f"the {self.classifier} classifier (got {threshold:g}).")
        return threshold


# opennsfw: open_nsfw's NSFW probability. checkpoint: the CLIP checker's highest concept margin
# (cosine similarity minus the concept's own threshold; diffusers flags above 0).
SAFETY_SCALES: dict[str, SafetyScale] = {
    "opennsfw": SafetyScale("opennsfw", default=0.5, lowest=0.05, highest=0.95),
    "checkpoint": SafetyScale("checkpoint", default=0.0, lowest=-0.1, highest=0.1),
}


def picture_seed(seed: int, index: int) -> int:
    """Picture `index` of a job uses the job's seed + index, so each can be made again alone."""
    return (seed + index) % (MAX_SEED + 1)


def _visible(text: str) -> str:
    """The text without invisible characters (zero-width spaces and joiners, controls) and spaces."""
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc", "Mn"))


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
    # The model, by its catalogue name (`dreambot.models`); "": the engine's default model.
    model: str = ""
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
    mode: Mode = Mode.TXT2IMG
    # PNG bytes: the picture to start from (all modes but txt2img and interpolate) and, for
    # inpainting, the mask (white = repaint), already the image's size.
    image: bytes | None = None
    mask: bytes | None = None
    # Share of the picture repainted, 0-1 (None: the mode's `default_strength`).
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
    # Safety: flag images scoring above this (None: the classifier's default, `SAFETY_SCALES`)...
    nsfw_threshold: float | None = None
    # ...on this classifier's scale: a model whose engine scores with another uses its own default.
    nsfw_scale: str | None = None
    # A flagged image's bytes come back only if the channel may show it (spoiler/off in an
    # age-restricted channel); otherwise they never leave the engine.
    keep_flagged: bool = False
    # The picture this job starts from was flagged, or was made from a flagged one: every picture
    # the job makes counts as flagged, whatever its own score (the bot knows a picture's history;
    # the engine sees only its pixels).
    source_flagged: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):  # from JSON (the wire, the store): the enum, or a clear refusal
            try:
                object.__setattr__(self, "mode", Mode(self.mode))
            except ValueError:
                raise InvalidRequest(f"Unknown mode {self.mode!r}; choose one of: {', '.join(Mode)}.") from None

    @property
    def denoising_strength(self) -> float | None:
        """The strength the engine uses, or None for modes that start from noise."""
        if self.mode.default_strength is None:
            return None
        return self.mode.default_strength if self.strength is None else self.strength

    @property
    def loras(self) -> tuple[prompt_syntax.Lora, ...]:
        """The LoRAs the prompt's `<lora:NAME:W>` tags ask for, those of weight 0 left out (they
        change nothing)."""
        return tuple(lora for lora in prompt_syntax.loras(self.prompt) if lora.weight != 0)

    def seeds(self) -> list[int]:
        """The seed of each picture the job makes (`picture_seed`)."""
        assert self.seed is not None, "the bot picks the seed before recording the job"
        return [picture_seed(self.seed, index) for index in range(self.num_images)]

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share one pipeline call; None: this job runs alone."""
        if not self.mode.batches:
            return None
        try:  # one call runs one set of LoRAs: jobs with different sets never share it
            loras = tuple(sorted(self.loras))
        except InvalidRequest:
            return None  # a job from before LoRA tags whose text reads as a broken tag: alone, and refused there
        return (self.model, self.width, self.height, self.num_inference_steps, self.scheduler, self.guidance_scale,
                loras)

    def to_json(self) -> str:
        """The request as stored with its job, without its pictures (they are files, `bot.images`)."""
        return json.dumps({**asdict(self), "image": None, "mask": None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, image: bytes | None = None, mask: bytes | None = None) -> GenerateRequest:
        """A stored request as it was recorded, with its pictures put back. Keys this version does
        not know (a newer one wrote them) are left out."""
        known = {f.name for f in fields(cls)}
        data = {key: value for key, value in json.loads(text).items() if key in known}
        return cls(**{**data, "image": image, "mask": mask})

    def validated(self, limits: Limits) -> GenerateRequest:
        """Return the request if it is within `limits`, else raise InvalidRequest saying what to change."""
        prompt = self.prompt.strip()
        if not _visible(prompt):
            raise InvalidRequest("The prompt is empty: describe the image you want.")
        end_prompt = self.end_prompt.strip() if self.end_prompt is not None else None
        for name, text in (("prompt", prompt), ("negative prompt", self.negative_prompt),
                           ("end prompt", end_prompt or "")):
            length = len(prompt_syntax.without_loras(text))  # a LoRA tag is not text the encoder reads
            if length > limits.max_prompt_length:
                raise InvalidRequest(f"The {name} is {length} characters long; the limit is "
                                     f"{limits.max_prompt_length}.")
            prompt_syntax.parse(text, name)  # A1111's weights and brackets: refused here, never queued
            if name != "prompt" and prompt_syntax.loras(text, name):
                raise InvalidRequest(f"LoRA tags go in the prompt, not the {name}: move <lora:…> there.")
        prompt_syntax.loras(prompt)
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
        if self.mode.needs_image and self.image is None:
            raise InvalidRequest(f"{self.mode} needs an image to start from.")
        if not self.mode.needs_image and self.image is not None:
            raise InvalidRequest(f"{self.mode} does not take an image.")
        if (self.mask is not None) != self.mode.needs_mask:
            raise InvalidRequest("Inpainting needs a mask." if self.mode.needs_mask else
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
        if self.mode is Mode.OUTPAINT:
            if self.direction not in DIRECTIONS:
                raise InvalidRequest(f"Unknown direction {self.direction!r}; choose one of: {', '.join(DIRECTIONS)}.")
            if not 8 <= self.amount <= 512 or self.amount % 8:
                raise InvalidRequest(f"The outpainting amount must be a multiple of 8 from 8 to 512 pixels "
                                     f"(got {self.amount}).")
        if self.mode is Mode.INTERPOLATE:
            if not 2 <= self.frames <= limits.max_frames:
                raise InvalidRequest(f"Frames must be between 2 and {limits.max_frames} (got {self.frames}).")
            if self.num_images != 1:
                raise InvalidRequest("An interpolation makes one animation; leave the count at 1.")
            if (end_prompt in (None, prompt)) and self.end_seed in (None, self.seed):
                raise InvalidRequest("An interpolation needs an end prompt or an end seed that differs from the start.")
        return replace(self, prompt=prompt, negative_prompt=self.negative_prompt.strip(), end_prompt=end_prompt)


