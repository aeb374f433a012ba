"""The models a server offers: SD_MODEL, and every model in MODELS_DIR (each diffusers folder and
each single checkpoint file), named by folder or file stem, with what `models.toml` beside them says
of each (a display name, a description, its own defaults). The bot lists and checks them; the
engine loads them by name.

Reads only folder listings, JSON configs, safetensors headers and the TOML file, so it imports
neither torch nor discord.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from dreambot import families
from dreambot.errors import InvalidRequest
from dreambot.request import MIN_SIZE, SAMPLERS, Limits

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
CONFIG_FILE = "models.toml"
# The longest negative prompt models.toml may give a model (MAX_PROMPT_LENGTH's default).
MAX_NEGATIVE = 1000
# The `aspect` option's ratios, in the order the bot offers them.
ASPECTS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9")
# How far a size may be from the asked ratio (the sides are whole multiples of 8 or 64).
ASPECT_TOLERANCE = 0.05
# A model hub id as the engine takes one: org/name (`is_hub_id`).
HUB_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")
# The pipeline SD_UPSCALER must be (the engine loads it as one).
UPSCALER_PIPELINE = "StableDiffusionLatentUpscalePipeline"
# The model class SD_PREVIEW_DECODER and SDXL_PREVIEW_DECODER must be (TAESD's, in diffusers).
PREVIEW_DECODER_CLASS = "AutoencoderTiny"
# An engine's start, before one was measured (`start_estimate`). The fixed part: starting Python,
# importing torch, diffusers and transformers and initialising the device take 5-15 s on the
# machines this project runs on (the upper end: a first CUDA start). The rate: reading safetensors
# from a local SSD and moving them to the device runs at several hundred MB/s with a warm page cache;
# 100 MB/s errs on the long side for a cold cache, a hard disk or a network share, and for a single
# checkpoint file, which is converted as it loads. An SD 1.5 in float16 (2 GB): about 35 s.
START_FIXED_SECONDS = 15.0
START_BYTES_PER_SECOND = 100e6


class ModelsError(ValueError):
    """MODELS_DIR's models.toml cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Defaults:
    """A model's own defaults (models.toml), used where the member and the command say nothing.
    Few-step models (LCM, Turbo, Lightning) need theirs: few steps, low guidance, their sampler."""

    width: int | None = None
    height: int | None = None
    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None
    # A1111's CLIP skip: 2 reads the prompt from the text encoder's second-to-last layer.
    clip_skip: int | None = None
    # Another VAE for this model: a diffusers folder or a .safetensors file, relative to MODELS_DIR,
    # or a model hub id (madebyollin/sdxl-vae-fp16-fix: SDXL's VAE, safe in float16).
    vae: str | None = None
    negative_prompt: str | None = None


@dataclass(frozen=True)
class Model:
    """One model of the catalogue."""

    name: str  # what members and moderators type: the folder's name or the file's stem
    source: str  # what the engine loads: a path, a built-in name or a model hub id
    family: str | None = None  # `dreambot.families`; None until known (a hub id, a .ckpt)
    title: str = ""  # models.toml's display name
    description: str = ""
    defaults: Defaults = field(default_factory=Defaults)
    native: int | None = None  # the side it was trained at, in pixels, when known without loading it
    prediction: str | None = None  # "v_prediction" or "epsilon", when known (SD 2.x comes as both)

    @property
    def family_label(self) -> str:
        """Its family as members read it ("SD 2.x (v)"); "" while unknown."""
        return families.label(self.family, self.prediction) if self.family else ""

    @property
    def label(self) -> str:
        """How a member sees it: the display name and the family, e.g. "Anime v3 · SD 1.x"."""
        return " · ".join(part for part in (self.title or self.name, self.family_label) if part)

    @property
    def size(self) -> tuple[int | None, int | None]:
        """Its default width and height: models.toml's, else its native square, else the engine's."""
        return (self.defaults.width or self.native, self.defaults.height or self.native)

    @property
    def pixels(self) -> int:
        """Its native pixel count, which `aspect` keeps."""
        width, height = self.size
        side = self.native or families.NATIVE.get(self.family or "", 512)
        return (width or side) * (height or side)


@dataclass(frozen=True)
class Catalogue:
    """The models, by name; `default` is the one a job gets when nobody chose."""

    models: dict[str, Model]
    default: str

    def get(self, name: str | None) -> Model | None:
        """The model of that name, in any case; None for an unknown name. None or "": the default."""
        if not name:
            return self.models[self.default]
        return self.models.get(name) or next((m for n, m in self.models.items() if n.lower() == name.lower()), None)

    def resolve(self, name: str | None, shown: Callable[[str], bool] = lambda name: True) -> Model:
        """`get`, or InvalidRequest naming the installed models that `shown` lets this member see."""
        model = self.get(name)
        if model is None:
            raise InvalidRequest(f"There is no model named “{(name or '')[:100]}” ({self.offered(shown=shown)}). "
                                 "See /models.")
        return model

    def offered(self, most: int = 10, shown: Callable[[str], bool] = lambda name: True) -> str:
        names = [name for name in self.models if shown(name)]
        more = f", and {len(names) - most} more" if len(names) > most else ""
        return "installed: " + (", ".join(names[:most]) or "none here") + more

    def __iter__(self):
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)


@dataclass(frozen=True)
class Place:
    """What a server and a channel say about models (/mod model): their defaults, and the models
    the channel allows (None: every one)."""

    server_model: str | None = None
    channel_model: str | None = None
    allowed: tuple[str, ...] | None = None

    def allows(self, name: str) -> bool:
        return self.allowed is None or name.lower() in {allowed.lower() for allowed in self.allowed}

    def refusal(self, name: str) -> str:
        return (f"The model “{name}” is not used in this channel; its moderators allow "
                f"{', '.join(self.allowed or ()) or 'no model'} here.")


def scan(models_dir: Path, sd_model: str, *, sd_model_set: bool = True, builtin: dict[str, Path] | None = None
         ) -> Catalogue:
    """The catalogue: every model in `models_dir`, described by its models.toml, and SD_MODEL.

    SD_MODEL is the default model: a name in the folder, or a model of its own (a path, a built-in
    name, a hub id). Left unset (`sd_model_set`) while the folder holds models, the default is
    models.toml's `default`, else the first model by name. Raises ModelsError for a bad models.toml.
    """
    config = _read_config(models_dir)
    found: dict[str, Model] = {}
    if models_dir.is_dir():
        for path in sorted(models_dir.iterdir(), key=lambda p: p.name.lower()):
            model = _model_at(path)
            if model is None:
                continue
            if model.name.lower() in {name.lower() for name in found}:
                log.warning("model %s: another model has its name; skipped", path)
                continue
            found[model.name] = model
    for name, table in config.get("models", {}).items():
        if "source" in table and name.lower() in {n.lower() for n in found}:
            raise ModelsError(f"{models_dir / CONFIG_FILE}: [models.{name}] has a source, but {models_dir} already "
                              "holds a model of that name; rename one of them")
        if "source" in table:  # a model kept elsewhere: a hub id, another folder
            source = str(table["source"])
            path = models_dir / source
            if not path.exists():  # a hub id (or a path the engine's host has)
                found[name] = Model(name=name, source=source)
            elif (model := _model_at(path, name)) is not None:
                found[name] = model
            else:
                raise ModelsError(f"{models_dir / CONFIG_FILE}: [models.{name}] source {source!r} is not a Stable "
                                  "Diffusion folder or checkpoint")
    for name, table in config.get("models", {}).items():
        model = next((m for n, m in found.items() if n.lower() == name.lower()), None)
        if model is None:
            raise ModelsError(f"{models_dir / CONFIG_FILE}: [models.{name}] names no model in {models_dir} "
                              "(give it a source, or use a folder's or file's name)")
        found[model.name] = _described(model, table, models_dir / CONFIG_FILE)

    if sd_model_set or not found:
        own = next((m for m in found.values() if m.name.lower() == sd_model.lower()), None)
        if own is None:  # SD_MODEL is a model of its own
            path = Path(sd_model).expanduser()
            if not path.exists() and builtin and sd_model in builtin:
                path = builtin[sd_model]
            own = _model_at(path, name_of(sd_model)) if path.exists() else None
            own = own or Model(name=name_of(sd_model), source=sd_model)
            own = replace(own, source=sd_model)
            if own.name.lower() in {name.lower() for name in found}:
                raise ModelsError(f"SD_MODEL {sd_model!r} has the name of a model in {models_dir}; "
                                  f"set SD_MODEL={own.name} to use that one, or rename it")
            found = {own.name: own, **found}
        default = own.name
    else:
        wanted = config.get("default")
        if wanted is not None:
            named = next((m for m in found.values() if m.name.lower() == str(wanted).lower()), None)
            if named is None:
                raise ModelsError(f"{models_dir / CONFIG_FILE}: default = {wanted!r} names no model")
            default = named.name
        else:
            default = next(iter(found))
    return Catalogue(dict(sorted(found.items(), key=lambda item: item[0].lower())), default)


def name_of(source: str) -> str:
    """The name a model is known by: its folder's name, its file's stem, or a hub id's last part."""
    path = Path(source.rstrip("/\\"))
    return path.stem if path.suffix.lower() in CHECKPOINT_SUFFIXES else (path.name or source)


def is_hub_id(source: str) -> bool:
    """Whether a source that is no local path reads as a model hub id (org/name), which the engine
    downloads: one slash, no leading ".", "/" or "~", no backslash, no checkpoint suffix (x.safetensors
    is a file that is missing, not a repository)."""
    return HUB_ID.fullmatch(source) is not None and not source.lower().endswith(CHECKPOINT_SUFFIXES)


def source_problem(source: str, builtin: dict[str, Path] | None = None) -> str | None:
    """What keeps `source` (SD_MODEL, a models.toml source) from loading as a Stable Diffusion model,
    in words for an operator (what is wrong, then what to do), or None. A diffusers folder must have
    its model_index.json, be of a known family and hold the parts it names; a .safetensors file must
    be a whole checkpoint of a known family (its header says); a .ckpt is a pickle, which only the
    engine opens. A hub id passes as it is (the engine downloads it; nothing here can tell)."""
    path = Path(source).expanduser()
    if not path.exists() and builtin and source in builtin:
        path = builtin[source]
    if path.is_dir():
        return _folder_problem(path)
    if path.is_file():
        return _file_problem(path)
    if path.exists():
        return "is neither a folder nor a file: point it at a diffusers folder or a .safetensors or .ckpt file"
    if is_hub_id(source):
        return None
    return (f"does not exist (looked for {path.absolute()}): point it at a diffusers folder or a .safetensors or "
            ".ckpt file, or give a model hub id such as org/name")


def upscaler_problem(source: str) -> str | None:
    """The same for SD_UPSCALER, which the engine loads as a diffusers latent upscaler: a folder
    (whose model_index.json names that pipeline) or a hub id; None when it looks usable."""
    path = Path(source).expanduser()
    if path.is_dir():
        kind = families.pipeline_class_of_folder(path)
        if not (path / "model_index.json").is_file():
            return ("is a folder without model_index.json, so not a diffusers model: point it at the folder of a "
                    "latent upscaler such as stabilityai/sd-x2-latent-upscaler")
        if kind != UPSCALER_PIPELINE:
            return (f"is a diffusers folder of another kind ({kind or 'no pipeline named'}), not a latent upscaler "
                    f"({UPSCALER_PIPELINE}) such as stabilityai/sd-x2-latent-upscaler")
        return _parts_problem(path)
    if path.exists():
        return ("is a file: it takes the folder of a diffusers latent upscaler or a model hub id such as "
                "stabilityai/sd-x2-latent-upscaler")
    if is_hub_id(source):
        return None
    return (f"does not exist (looked for {path.absolute()}): point it at the folder of a latent upscaler, give a "
            "model hub id such as stabilityai/sd-x2-latent-upscaler, or leave it empty")


def preview_decoder_problem(source: str, example: str = "madebyollin/taesd") -> str | None:
    """The same for SD_PREVIEW_DECODER and SDXL_PREVIEW_DECODER, which the engine loads as diffusers'
    AutoencoderTiny (TAESD): a folder whose config.json names that class, with its weights, or a hub
    id. `example`: the hub id the message suggests."""
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            config = None
        kind = config.get("_class_name") if isinstance(config, dict) else None
        if kind != PREVIEW_DECODER_CLASS:
            found = f"of {kind}" if kind else "without a readable config.json"
            return (f"is a folder {found}, not a tiny decoder ({PREVIEW_DECODER_CLASS}): point it at a folder such "
                    f"as a download of {example}, give that hub id, or leave it empty")
        if not any(child.name.endswith(families.WEIGHT_FILES) for child in path.iterdir()):
            return "holds no weights beside its config.json: the copy or download is incomplete; copy it again"
        return None
    if path.exists():
        return f"is a file: it takes a tiny decoder's folder or a model hub id such as {example}"
    if is_hub_id(source):
        return None
    return (f"does not exist (looked for {path.absolute()}): point it at a tiny decoder's folder, give a model hub "
            f"id such as {example}, or leave it empty")


def _folder_problem(path: Path) -> str | None:
    if not (path / "model_index.json").is_file():
        try:
            inside = sorted(child.name for child in path.iterdir()
                            if (child / "model_index.json").is_file() or child.suffix.lower() in CHECKPOINT_SUFFIXES)
        except OSError as error:
            return f"cannot be read ({error.strerror or error})"
        hint = (f"; it holds models ({', '.join(inside[:3])}{', …' if len(inside) > 3 else ''}): to offer them, "
                "set MODELS_DIR to this folder instead") if inside else ""
        return ("is a folder without model_index.json, so not a diffusers model: point it at the folder that holds "
                f"model_index.json, or at a .safetensors or .ckpt file{hint}")
    if families.family_of_folder(path) is None:
        kind = families.pipeline_class_of_folder(path) or "no pipeline named"
        return (f"is a diffusers folder of another kind ({kind}), not a Stable Diffusion 1.x, 2.x or XL model with "
                "its text encoder")
    return _parts_problem(path)


def _parts_problem(path: Path) -> str | None:
    missing = families.missing_parts(path)
    if missing:
        return (f"lacks {', '.join(missing)}, which its model_index.json names: the copy or download is incomplete; "
                "copy or download it again")
    return None


def _file_problem(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        return "is a file but not a .safetensors or .ckpt checkpoint: point it at one, or at a diffusers folder"
    try:
        if path.stat().st_size == 0:
            return "is an empty file (an interrupted download?): download it again"
        if suffix == ".ckpt":
            return None  # a pickle: only the engine unpickles it (tensors only) and learns its family then
        shapes, _ = families.read_safetensors_header(path)
    except (OSError, families.CheckpointHeaderError) as error:
        reason = (error.strerror or str(error)) if isinstance(error, OSError) else str(error)
        return f"cannot be read as a checkpoint ({reason}): download it again"
    if families.family_of(shapes) is None:
        return ("is not a whole Stable Diffusion 1.x, 2.x or XL checkpoint (a VAE, a LoRA, a refiner or another kind "
                "of model?): point it at a model's checkpoint")
    return None


def weights_on_disk(source: str, builtin: dict[str, Path] | None = None) -> int | None:
    """The bytes of weights a start reads for a local model: the file, or each part's weights once
    (.safetensors over .bin, the full-precision files over variants such as model.fp16.safetensors,
    as the engine loads them); None for a hub id or anything missing."""
    path = Path(source).expanduser()
    if not path.exists() and builtin and source in builtin:
        path = builtin[source]
    try:
        if path.is_file():
            return path.stat().st_size
        if not path.is_dir():
            return None
        total = 0
        for part in (child for child in path.iterdir() if child.is_dir() and child.name not in ("loras", "embeddings")):
            files = [f for f in part.iterdir() if f.name.endswith(families.WEIGHT_FILES) and f.is_file()]
            chosen = [f for f in files if f.suffix == ".safetensors"] or files
            plain = [f for f in chosen if len(f.suffixes) == 1] or chosen
            total += sum(f.stat().st_size for f in plain)
        return total
    except OSError:
        return None


def start_estimate(source: str, builtin: dict[str, Path] | None = None) -> float | None:
    """About how long an engine takes from its start to Ready with this default model, before one
    was ever measured: a fixed cost plus its weights at a conservative read rate; None for a hub id
    (a download takes what the network allows)."""
    size = weights_on_disk(source, builtin)
    return None if size is None else START_FIXED_SECONDS + size / START_BYTES_PER_SECOND


def _model_at(path: Path, name: str | None = None) -> Model | None:
    """The model a folder or a checkpoint file holds; None for anything else (a VAE, notes)."""
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            return None
        family = families.family_of_folder(path)
        if family is None:  # a diffusers folder of another kind: an upscaler, a VAE alone
            log.info("%s is not a Stable Diffusion model; not offered", path)
            return None
        return Model(name=name or path.name, source=str(path), family=family,
                     native=families.native_size_of_folder(path),
                     prediction=families.prediction_type_of_folder(path))
    if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        family, native, prediction = None, None, None
        if path.suffix.lower() == ".safetensors":
            try:
                shapes, metadata = families.read_safetensors_header(path)
            except (OSError, families.CheckpointHeaderError) as error:
                log.warning("%s cannot be read as a checkpoint (%s); not offered", path, error)
                return None
            family = families.family_of(shapes)
            if family is None:  # a VAE, a LoRA, an upscaler
                log.info("%s is not a Stable Diffusion checkpoint; not offered", path)
                return None
            # What its ModelSpec metadata says, else its family's.
            prediction = families.prediction_type_of(metadata)
            native = families.resolution_of(metadata) or families.native_size(family, prediction)
        return Model(name=name or path.stem, source=str(path), family=family, native=native, prediction=prediction)
    return None


def _read_config(models_dir: Path) -> dict:
    path = models_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelsError(f"cannot read {path}: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ModelsError(f"{path} is not valid TOML: {error}") from error
    unknown = set(data) - {"default", "models"}
    if unknown:
        raise ModelsError(f"{path}: unknown keys {sorted(unknown)} (use default = \"name\" and [models.NAME] tables)")
    if not isinstance(data.get("models", {}), dict) or not all(
            isinstance(table, dict) for table in data.get("models", {}).values()):
        raise ModelsError(f"{path}: each model is a table, such as [models.my-model] with name = \"...\"")
    return data


_DEFAULT_KEYS = {f.name for f in fields(Defaults)}
_KEYS = {"name", "description", "source", "size", *_DEFAULT_KEYS}


def _described(model: Model, table: dict, path: Path) -> Model:
    """The model with its models.toml table's name, description and defaults, each checked."""
    where = f"{path}: [models.{model.name}]"
    unknown = set(table) - _KEYS
    if unknown:
        raise ModelsError(f"{where} has unknown keys {sorted(unknown)} (use {', '.join(sorted(_KEYS))})")
    values = {key: table[key] for key in _DEFAULT_KEYS & set(table)}
    if "size" in table:
        values["width"] = values["height"] = table["size"]

    def check(ok: bool, key: str, want: str) -> None:
        if not ok:
            raise ModelsError(f"{where}: {key} must be {want} (got {table.get(key, values.get(key))!r})")

    for key in ("width", "height"):
        if key in values:
            value = values[key]
            shown = "size" if "size" in table else key
            check(_whole(value) and 64 <= value <= 4096 and value % 8 == 0, shown, "a multiple of 8 from 64 to 4096")
    if "steps" in values:
        check(_whole(values["steps"]) and 1 <= values["steps"] <= 500, "steps", "a whole number from 1 to 500")
    if "guidance" in values:
        check(isinstance(values["guidance"], int | float) and not isinstance(values["guidance"], bool)
              and 0 <= values["guidance"] <= 30, "guidance", "a number from 0 to 30")
        values["guidance"] = float(values["guidance"])
    if "sampler" in values:
        check(values["sampler"] in SAMPLERS, "sampler", f"one of {', '.join(SAMPLERS)}")
    if "clip_skip" in values:
        check(_whole(values["clip_skip"]) and 1 <= values["clip_skip"] <= 12, "clip_skip",
              "a whole number from 1 to 12")
    for key in ("vae", "negative_prompt"):
        if key in values:
            check(isinstance(values[key], str), key, "text")
    if "negative_prompt" in values:
        check(len(values["negative_prompt"]) <= MAX_NEGATIVE, "negative_prompt",
              f"at most {MAX_NEGATIVE} characters")
    if values.get("vae"):
        folder = path.parent.resolve()
        vae = (folder / values["vae"]).resolve()
        # A path inside MODELS_DIR; failing that, a hub id (madebyollin/sdxl-vae-fp16-fix, say).
        if vae.exists() or not is_hub_id(values["vae"]):
            check(vae.is_relative_to(folder) and (vae.is_dir() or vae.suffix.lower() in CHECKPOINT_SUFFIXES)
                  and vae.exists(), "vae", f"a VAE folder, .safetensors or .ckpt file inside {path.parent}, or a "
                  "model hub id such as madebyollin/sdxl-vae-fp16-fix")
            values["vae"] = str(vae)
    for key in ("name", "description"):
        if key in table:
            check(isinstance(table[key], str) and len(table[key]) <= (100 if key == "name" else 300), key,
                  "text of at most 100 characters" if key == "name" else "text of at most 300 characters")
    return replace(model, title=table.get("name", ""), description=table.get("description", ""),
                   defaults=Defaults(**values))


def _whole(value: object) -> bool:
    """A whole number in TOML: an integer, not a boolean (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def aspect_size(aspect: str, pixels: int, limits: Limits | None = None) -> tuple[int, int]:
    """A width and height of ratio `aspect` ("16:9") with about `pixels` pixels, within the limits:
    sides in multiples of 64 where that keeps the ratio within 5 %, else of 8 (small models). A
    side is never below 64 pixels (MIN_SIZE): a tiny model's picture grows to keep the ratio."""
    if aspect not in ASPECTS:
        raise InvalidRequest(f"Unknown aspect ratio {aspect!r}; choose one of: {', '.join(ASPECTS)}.")
    across, down = (int(part) for part in aspect.split(":"))
    ratio = across / down
    most_w, most_h = (limits.max_width, limits.max_height) if limits else (4096, 4096)
    width, height = math.sqrt(pixels * ratio), math.sqrt(pixels / ratio)
    grow = max(1.0, MIN_SIZE / min(width, height))  # no side under the smallest a request takes
    shrink = min(1.0, most_w / (width * grow), most_h / (height * grow))  # nor over this server's limits
    width, height = width * grow * shrink, height * grow * shrink
    best = (MIN_SIZE, MIN_SIZE)
    for unit in (64, 32, 16, 8):
        w = max(MIN_SIZE, min(most_w // unit * unit, round(width / unit) * unit))
        h = max(MIN_SIZE, min(most_h // unit * unit, round(height / unit) * unit))
        best = (w, h)
        if abs((w / h) / ratio - 1) <= ASPECT_TOLERANCE:
            break
    return best


class Watched:
    """The catalogue, scanned again when MODELS_DIR or its models.toml changes (a model added,
    removed or renamed changes the folder's modification time). A models.toml broken meanwhile is
    logged and the catalogue before it kept; at start it raises ModelsError."""

    def __init__(self, models_dir: Path, rescan: Callable[[], Catalogue]) -> None:
        self._folder = models_dir
        self._rescan = rescan
        self._stamps = self._stamp()
        self._catalogue = rescan()

    def current(self) -> Catalogue:
        stamps = self._stamp()
        if stamps != self._stamps:
            self._stamps = stamps
            try:
                self._catalogue = self._rescan()
            except ModelsError as error:
                log.error("%s; still offering the models from before", error)
        return self._catalogue

    def _stamp(self) -> tuple[int | None, ...]:
        stamps: list[int | None] = []
        for path in (self._folder, self._folder / CONFIG_FILE):
            try:
                stamps.append(path.stat().st_mtime_ns)
            except OSError:
                stamps.append(None)
        return tuple(stamps)
