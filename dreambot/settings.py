"""Settings, read from the environment and `.env`: one typed object per process.

Every field here is listed in `.env.example` and in the README's table; keep the three together.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dreambot import models
from dreambot.adapters import Catalogue, Installed
from dreambot.request import Limits

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# The models that come with the project, by the name SD_MODEL gives them; each may carry its own
# `loras/` and `embeddings/`, used in addition to LORA_DIR and EMBEDDINGS_DIR.
BUILTIN_MODELS = {"shapes": Path(__file__).resolve().parent.parent / "engine" / "models" / "shapes"}


class StartupError(ValueError):
    """A setting that would keep the engine from ever starting: the message names the setting, says
    what is wrong and how to fix it (`EngineSettings.checked_catalogue`)."""


class EngineSettings(BaseSettings):
    """What the engine process (and `python -m engine`) needs."""

    model_config = SettingsConfigDict(env_file=".env", env_ignore_empty=True, extra="ignore")

    # The default model: a name in MODELS_DIR, a diffusers folder, a checkpoint file, a built-in
    # name (shapes) or a model hub id. Unset while MODELS_DIR holds models: models.toml's default.
    sd_model: str = DEFAULT_MODEL
    # More models: each diffusers folder and .safetensors/.ckpt file in it, named by folder or file
    # stem, described by an optional models.toml there (display names, descriptions, defaults).
    models_dir: Path = Path("data/models")
    # How many GB of loaded models an engine keeps (least recently used ones are unloaded);
    # unset: sized to the device (most of a GPU's memory, a third of the RAM on a CPU).
    model_cache_gb: float | None = Field(None, gt=0, le=4096)
    sd_device: str = "auto"
    sd_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    sd_safety_checker: Literal["auto", "checkpoint", "opennsfw"] = "auto"
    # A dedicated 2x upscaler for the Upscale button (e.g. stabilityai/sd-x2-latent-upscaler);
    # None: resize, then an img2img pass with SD_MODEL ("hires fix").
    sd_upscaler: str | None = None
    # Speed on a GPU (README, "Speed on a GPU"). The attention the UNet and VAE use: PyTorch's
    # scaled_dot_product_attention (diffusers' AttnProcessor2_0), or diffusers' plain AttnProcessor.
    sd_attention: Literal["sdpa", "classic"] = "sdpa"
    # The UNet and VAE in channels-last memory format; auto: on CUDA only.
    sd_channels_last: Literal["auto", "on", "off"] = "auto"
    # torch.compile the UNet and the VAE decoder, for every size, warmed up at start (minutes on a GPU).
    sd_compile: bool = False
    # A picture above this many pixels is decoded (and an input picture encoded) in tiles; 0: never.
    sd_vae_tile_pixels: int = Field(1536 * 1536, ge=0)
    # A call whose pictures together exceed this many pixels decodes them one at a time; 0: never.
    sd_vae_slice_pixels: int = Field(4 * 1024 * 1024, ge=0)
    # A tiny decoder (diffusers' AutoencoderTiny: a folder or a hub id, e.g. madebyollin/taesd) that
    # draws the progress previews of SD 1.x/2.x models; None: a linear approximation of the latents.
    sd_preview_decoder: str | None = None
    # The same for SDXL models (madebyollin/taesdxl).
    sdxl_preview_decoder: str | None = None
    # Textual-inversion embeddings (.safetensors, .pt, .bin), used by file name as a prompt's word.
    embeddings_dir: Path = Path("data/embeddings")
    # LoRAs (.safetensors, kohya/A1111 or diffusers format), used by file name: <lora:NAME:WEIGHT>.
    lora_dir: Path = Path("data/loras")
    # Wildcards: WILDCARDS_DIR/name.txt, one choice per line, named in a prompt as __name__.
    wildcards_dir: Path = Path("data/wildcards")
    # Both processes log at this level; at DEBUG the engine adds the traceback of a model that fails to load.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Several hosts: the NATS server that carries jobs between the bot and `python -m engine worker`
    # processes (nats://host:4222, tls://host:4222; user:password@ in the URL, or NATS_CREDS). Set
    # for the bot, it starts no engine of its own and sends every job to workers.
    nats_url: str | None = None
    # A NATS credentials file (a user JWT and its nkey seed, `nsc generate creds`) instead of a password.
    nats_creds: Path | None = None

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str | None) -> str | None:
        if value is not None and not all(re.fullmatch(r"(nats|tls|ws|wss)://\S+", url.strip())
                                         for url in value.split(",")):
            raise ValueError("must be a NATS server URL such as nats://gpu-hub:4222 or tls://gpu-hub:4222 "
                             "(several separated by commas)")
        return value

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in (self.nats_url or "").split(",") if url.strip()]

    def catalogue(self) -> models.Catalogue:
        """The models this server offers (`dreambot.models.scan`); raises models.ModelsError."""
        return models.scan(self.models_dir, self.sd_model, sd_model_set="sd_model" in self.model_fields_set,
                           builtin=BUILTIN_MODELS)

    def watched_catalogue(self) -> models.Watched:
        """The catalogue, kept up to date as models are added (`models.Watched.current`)."""
        return models.Watched(self.models_dir, self.catalogue)

    def checked_catalogue(self) -> models.Watched:
        """`watched_catalogue`, once the default model, SD_UPSCALER and the preview decoders are known
        to be there and shaped like models: a wrong path is found at start, not at each member's job.
        Reads folders, JSON configs and safetensors headers only, so both processes check before
        loading anything.
        Raises StartupError naming the setting, what is wrong and what to do."""
        try:
            watched = self.watched_catalogue()
        except models.ModelsError as error:
            raise StartupError(f"MODELS_DIR {error}") from None
        catalogue = watched.current()
        default = catalogue.resolve(None)
        if default.source == self.sd_model:  # SD_MODEL is a model of its own (a path, a built-in, a hub id)
            problem = models.source_problem(self.sd_model, BUILTIN_MODELS)
            missing = problem and not Path(self.sd_model).expanduser().exists()
            if missing and not re.search(r"[/\\~]", self.sd_model) and "." not in self.sd_model:
                # A bare word: a model's name, misspelt or not installed, rather than a path.
                others = [model.name for model in catalogue if model is not default]
                installed = ", ".join(others[:10]) + (", …" if len(others) > 10 else "")
                problem = (f"names no model in MODELS_DIR {self.models_dir} (installed: {installed or 'none'}), "
                           "nor a folder or file here, nor a model hub id such as org/name: set SD_MODEL to one of "
                           "those")
            if problem:
                raise StartupError(f"SD_MODEL {self.sd_model!r} {problem}")
        elif problem := models.source_problem(default.source, BUILTIN_MODELS):  # a model of MODELS_DIR
            named = f"SD_MODEL {self.sd_model!r}" if "sd_model" in self.model_fields_set else \
                f"MODELS_DIR {self.models_dir}: the default model {default.name!r}"
            raise StartupError(f"{named} (source {default.source!r}) {problem}")
        if self.sd_upscaler and (problem := models.upscaler_problem(self.sd_upscaler)):
            raise StartupError(f"SD_UPSCALER {self.sd_upscaler!r} {problem}")
        for name, decoder, example in (("SD_PREVIEW_DECODER", self.sd_preview_decoder, "madebyollin/taesd"),
                                       ("SDXL_PREVIEW_DECODER", self.sdxl_preview_decoder, "madebyollin/taesdxl")):
            if decoder and (problem := models.preview_decoder_problem(decoder, example)):
                raise StartupError(f"{name} {decoder!r} {problem}")
        return watched

    def bundled(self, what: str, source: str | None = None) -> list[Path]:
        """The folder of `what` (embeddings, loras) that comes inside a model's own folder (SD_MODEL's
        unless `source` says), such as the built-in shapes model's, if there is one."""
        source = self.sd_model if source is None else source
        path = Path(source).expanduser()
        if not path.exists() and source in BUILTIN_MODELS:
            path = BUILTIN_MODELS[source]
        folder = path / what
        return [folder] if path.is_dir() and folder.is_dir() else []

    def adapters(self) -> Catalogue:
        """The LoRAs and embeddings installed: the models' own, then the folders'."""
        return self.installed().current()

    def installed(self, catalogue: models.Catalogue | None = None) -> Installed:
        """The same, kept up to date as files are added (`Installed.current`): the folders of the
        models of `catalogue` (the one the caller holds; else scanned now), then LORA_DIR's and
        EMBEDDINGS_DIR's."""
        if catalogue is None:
            try:
                catalogue = self.catalogue()
            except models.ModelsError:
                catalogue = None
        sources = [model.source for model in catalogue] if catalogue is not None else [self.sd_model]

        def every(what: str) -> list[Path]:
            return [folder for source in sources for folder in self.bundled(what, source)]
        return Installed([*every("loras"), self.lora_dir], [*every("embeddings"), self.embeddings_dir])

    @field_validator("sd_device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
        return value


class BotSettings(EngineSettings):
    """What `python -m bot` needs: the engine's settings plus Discord, the database and the limits."""

    discord_token: SecretStr
    discord_guild_id: int | None = None
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    database_path: Path = Path("data/dreambot.sqlite3")
    images_dir: Path = Path("data/images")
    styles_file: Path | None = None
    max_steps: int = Field(50, ge=1, le=500)
    max_width: int = Field(1024, ge=64, le=4096)
    max_height: int = Field(1024, ge=64, le=4096)
    max_images: int = Field(4, ge=1, le=10)
    max_prompt_length: int = Field(1000, ge=1, le=6000)
    max_frames: int = Field(16, ge=2, le=64)
    max_attachment_mb: float = Field(10.0, gt=0, le=25)
    max_attachment_megapixels: float = Field(40.0, gt=0, le=200)
    # Stored pictures (results, and the inputs Re-roll needs) are deleted after this many days; 0 keeps them.
    image_retention_days: float = Field(30.0, ge=0, le=3650)
    # The queue: jobs per member (queued + running), jobs queued in all, seconds between a
    # member's jobs, the most a job may take, and how many compatible jobs run as one batch.
    max_jobs_per_member: int = Field(3, ge=1, le=100)
    max_queue: int = Field(100, ge=1, le=10000)
    cooldown_seconds: float = Field(0.0, ge=0, le=3600)
    job_timeout_seconds: float = Field(600.0, ge=10, le=86400)
    max_batch: int = Field(4, ge=1, le=16)
    # One engine process per device, e.g. "cuda:0,cuda:1"; empty: one engine on SD_DEVICE.
    sd_devices: str | None = None
    # With NATS_URL: a job handed to a worker goes back to the queue when the worker has said nothing
    # (no progress, no heartbeat: killed, host lost, network cut) for this long.
    worker_lease_seconds: float = Field(15.0, ge=2, le=600)
    # Every this many seconds, log the event loop's lag (p50/p99/max); 0: off. For bench/loop_lag.py.
    loop_probe_seconds: float = Field(0.0, ge=0, le=3600)

    @field_validator("discord_token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value

    @field_validator("sd_devices")
    @classmethod
    def _devices(cls, value: str | None) -> str | None:
        if value is None:
            return None
        devices = [device.strip() for device in value.split(",")]
        if not all(re.fullmatch(r"cpu|mps|cuda(:\d+)?", device) for device in devices):
            raise ValueError("must be devices separated by commas, such as cuda:0,cuda:1")
        if len(set(devices)) != len(devices):
            raise ValueError("names a device twice")
        return ",".join(devices)

    @property
    def devices(self) -> list[str]:
        """The device of each engine process."""
        return self.sd_devices.split(",") if self.sd_devices else [self.sd_device]

    @field_validator("discord_api_base", "discord_gateway_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"(https?|wss?)://[^/\s]+", value):
            raise ValueError("must be an absolute URL such as http://127.0.0.1:8080/api/v10")
        return value

    @property
    def limits(self) -> Limits:
        return Limits(
            max_steps=self.max_steps,
            max_width=self.max_width,
            max_height=self.max_height,
            max_images=self.max_images,
            max_prompt_length=self.max_prompt_length,
            max_frames=self.max_frames,
        )


class WorkerSettings(EngineSettings):
    """What `python -m engine worker` needs: the engine's settings, NATS_URL and its name."""

    nats_url: str  # required here: a worker only ever talks to the bot through NATS
    # How the worker appears in /mod workers and the mod-log; default: the host's name and the device.
    worker_name: str | None = Field(None, min_length=1, max_length=64)


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S]) -> S:
    """Build the settings, or stop the process with one line naming each bad variable."""
    try:
        return cls()
    except ValidationError as error:
        _exit(error)


def describe(error: ValidationError) -> str:
    """One line naming each bad variable and what is wrong, never echoing its value."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        name = str(item["loc"][0]).upper() if item["loc"] else "settings"
        message = "is required but not set" if item["type"] == "missing" else item["msg"]
        problems.append(f"{name} {message.removeprefix('Value error, ')}")
    return "invalid settings: " + "; ".join(problems)


def _exit(error: ValidationError) -> NoReturn:
    print(describe(error), file=sys.stderr)
    raise SystemExit(2)


def setting_names() -> frozenset[str]:
    """Every environment variable the bot or the engine reads: what tests and benchmarks clear so
    that a developer's shell or .env cannot change the process under test."""
    return frozenset(name.upper() for cls in (BotSettings, WorkerSettings) for name in cls.model_fields)
