"""The Stable Diffusion families a model belongs to (SD 1.x, 2.x, XL and their inpainting variants),
told from a checkpoint's tensor names and shapes (a safetensors header is enough) or from a diffusers
folder's JSON configs. Imports neither torch nor diffusers: the bot reads its models with it too."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

NAMES = ("sd1", "sd1-inpaint", "sd2", "sd2-inpaint", "sdxl", "sdxl-inpaint")
LABELS = {
    "sd1": "SD 1.x",
    "sd1-inpaint": "SD 1.x inpainting",
    "sd2": "SD 2.x",
    "sd2-inpaint": "SD 2.x inpainting",
    "sdxl": "SDXL",
    "sdxl-inpaint": "SDXL inpainting",
}
# The side each family's stock checkpoint was trained at. SD 2.x comes as 768 px v-prediction (2.0-v,
# 2.1) and as 512 px epsilon ("base"); the weights cannot tell them apart, a config or metadata can.
NATIVE = {"sd1": 512, "sd1-inpaint": 512, "sd2": 768, "sd2-inpaint": 512, "sdxl": 1024, "sdxl-inpaint": 1024}
SD2_EPSILON_NATIVE = 512

# The original (CompVis / Stability) checkpoint layout: one key that each part is known by.
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"  # [width, in_channels, 3, 3]
VAE_OUT = "first_stage_model.decoder.conv_out.weight"
CLIP = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"  # SD 1.x: OpenAI CLIP
OPEN_CLIP = "cond_stage_model.model.token_embedding.weight"  # SD 2.x: OpenCLIP ViT-H
SDXL_CLIP = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
SDXL_OPEN_CLIP = "conditioner.embedders.1.model.token_embedding.weight"  # OpenCLIP ViT-bigG
INPAINTING_CHANNELS = 9  # latents, mask, masked picture

# The parts of a diffusers folder that hold weights (the tokenizers and the scheduler are configs
# alone), and the weight files diffusers and transformers read, sharded ones included.
WEIGHTED_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "safety_checker", "image_encoder")
WEIGHT_FILES = (".safetensors", ".bin")

# safetensors' own limit on its JSON header; real checkpoints' headers are a few hundred kB.
MAX_HEADER_BYTES = 100_000_000


class CheckpointHeaderError(ValueError):
    """A file is not a readable safetensors file; the message says what is wrong with it."""


def base_of(family: str) -> str:
    """"sd1", "sd2" or "sdxl": the family without its inpainting variant."""
    return family.removesuffix("-inpaint")


def is_inpainting(family: str) -> bool:
    return family.endswith("-inpaint")


def label(family: str, prediction_type: str | None = None) -> str:
    """How members see a family, e.g. "SD 1.x", "SD 2.x (v)", "SDXL inpainting"."""
    text = LABELS[family]
    return f"{text} (v)" if prediction_type == "v_prediction" else text


def native_size(family: str, prediction_type: str | None = None) -> int:
    """The side a family's models work best at; SD 2.x's depends on its prediction type, when known."""
    if base_of(family) == "sd2" and prediction_type == "epsilon":
        return SD2_EPSILON_NATIVE
    return NATIVE[family]


def family_of(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """The family of a checkpoint in the original layout (a .safetensors/.ckpt from a model site),
    from its tensor names and shapes; None when it is not a whole Stable Diffusion 1.x, 2.x or XL
    (a VAE, a LoRA, an SDXL refiner, a UNet alone, a pix2pix UNet, another kind of model)."""
    unet_in = shapes.get(UNET_IN)
    if unet_in is None or len(unet_in) != 4 or VAE_OUT not in shapes:
        return None
    if SDXL_CLIP in shapes and SDXL_OPEN_CLIP in shapes:
        base = "sdxl"
    elif OPEN_CLIP in shapes:
        base = "sd2"
    elif CLIP in shapes:
        base = "sd1"
    else:
        return None
    channels = unet_in[1]
    if channels == 4:
        return base
    return f"{base}-inpaint" if channels == INPAINTING_CHANNELS else None


def read_safetensors_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """A safetensors file's tensor shapes and its `__metadata__`, read from the JSON header alone
    (an 8-byte little-endian length, then that many bytes of JSON); raises CheckpointHeaderError."""
    path = Path(path)
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise CheckpointHeaderError("too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise CheckpointHeaderError(f"not a safetensors file (its header would be {length} bytes)")
        raw = file.read(length)
    if len(raw) < length:
        raise CheckpointHeaderError("cut short: its safetensors header is incomplete")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointHeaderError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointHeaderError("not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    shapes = {}
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(side, int) and side >= 0 for side in shape):
            raise CheckpointHeaderError(f"not a safetensors file (tensor {name!r} has no shape)")
        shapes[name] = tuple(shape)
    if not isinstance(metadata, dict):
        metadata = {}
    return shapes, {str(key): str(value) for key, value in metadata.items()}


def read_safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """The tensor shapes a .safetensors file holds, by name; None when it cannot be read as one
    (`read_safetensors_header` says why)."""
    try:
        return read_safetensors_header(path)[0]
    except (OSError, CheckpointHeaderError):
        return None


# Stability's model metadata standard (github.com/Stability-AI/ModelSpec): optional keys in a
# safetensors header that say what the weights cannot, such as the resolution and prediction type.
def prediction_type_of(metadata: Mapping[str, str]) -> str | None:
    """"v_prediction" or "epsilon" when a checkpoint's ModelSpec metadata says; else None."""
    said = metadata.get("modelspec.prediction_type", "").strip().lower()
    if said in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if said in ("epsilon", "eps"):
        return "epsilon"
    architecture = metadata.get("modelspec.architecture", "")
    if architecture.startswith("stable-diffusion-v2-"):
        return "v_prediction" if architecture.endswith("-v") else "epsilon"
    return None


def resolution_of(metadata: Mapping[str, str]) -> int | None:
    """The side a checkpoint was trained at when its ModelSpec metadata says ("768x768"); else None."""
    width, _, height = metadata.get("modelspec.resolution", "").lower().partition("x")
    try:
        side = int(width)
        int(height or width)
    except ValueError:
        return None
    return side if side > 0 else None


def family_of_folder(path: str | Path) -> str | None:
    """The family of a diffusers folder, from model_index.json and its components' configs; None for
    a folder of another kind (an upscaler, a VAE alone, an SDXL refiner, another model)."""
    path = Path(path)
    index = _json(path / "model_index.json")
    name = str(index.get("_class_name", ""))
    if not name.startswith("StableDiffusion") or not _component(index, "text_encoder"):
        return None
    unet = _json(path / "unet" / "config.json")
    if name.startswith("StableDiffusionXL"):
        base = "sdxl" if _component(index, "text_encoder_2") else None
    elif name.removesuffix("Pipeline") in ("StableDiffusion", "StableDiffusionImg2Img", "StableDiffusionInpaint"):
        # SD 2.x's text encoder is OpenCLIP's, whose activation is the exact GELU; OpenAI's CLIP
        # (SD 1.x) uses the quick one.
        text = _json(path / "text_encoder" / "config.json")
        base = "sd2" if text.get("hidden_act") == "gelu" else "sd1"
    else:
        base = None
    channels = unet.get("in_channels", 4)
    if base is None or channels not in (4, INPAINTING_CHANNELS):
        return None
    return f"{base}-inpaint" if channels == INPAINTING_CHANNELS else base


def pipeline_class_of_folder(path: str | Path) -> str:
    """The pipeline a diffusers folder's model_index.json names ("StableDiffusionPipeline"); "" when
    it names none or cannot be read."""
    return str(_json(Path(path) / "model_index.json").get("_class_name", ""))


def missing_parts(path: str | Path) -> list[str]:
    """What a diffusers folder lacks of the parts its model_index.json names, as an operator reads it
    ("unet/", "the weights in vae/"): a half-copied folder or an interrupted download; [] when whole.
    Only the presence of files is checked, not their contents."""
    path = Path(path)
    index = _json(path / "model_index.json")
    missing = []
    for name in sorted(key for key in index if not key.startswith("_") and _component(index, key)):
        folder = path / name
        if not folder.is_dir():
            missing.append(f"{name}/")
        elif name in WEIGHTED_PARTS and not _holds_weights(folder):
            missing.append(f"the weights in {name}/")
    return missing


def _holds_weights(folder: Path) -> bool:
    try:
        return any(file.name.endswith(WEIGHT_FILES) and file.is_file() for file in folder.iterdir())
    except OSError:
        return False


def prediction_type_of_folder(path: str | Path) -> str:
    """What a diffusers folder's scheduler predicts: "epsilon" (most) or "v_prediction" (SD 2.x 768)."""
    return str(_json(Path(path) / "scheduler" / "scheduler_config.json").get("prediction_type", "epsilon"))


def native_size_of_folder(path: str | Path) -> int | None:
    """A diffusers folder's native side in pixels: its UNet's sample size times the VAE's scale
    factor (2 per VAE block after the first); None when its configs do not say."""
    path = Path(path)
    sample_size = _json(path / "unet" / "config.json").get("sample_size")
    blocks = _json(path / "vae" / "config.json").get("block_out_channels", [0] * 4)
    if not isinstance(sample_size, int) or not isinstance(blocks, list) or not blocks:
        return None
    return sample_size * 2 ** (len(blocks) - 1)


def _component(index: Mapping, name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None


def _json(path: Path) -> dict:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


assert set(LABELS) == set(NATIVE) == set(NAMES), "every family needs a label and a native size"
