"""Single-file checkpoints in the original layout model sites publish (`model.diffusion_model.*`,
`first_stage_model.*`, the text encoders under `cond_stage_model.*` or `conditioner.embedders.*`):
reading one safely, the diffusers config folder that loads it without the model hub, and writing one
from a diffusers pipeline (how the tiny test models become single files)."""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

from dreambot import families

CONFIGS = Path(__file__).resolve().parent / "configs"
# CLIP's BPE vocabulary (49408 tokens), shared by every family's tokenizers.
CLIP_TOKENIZER = CONFIGS / "clip-tokenizer"
CLIP_VOCAB = 49408
# engine.tiny's byte-level vocabulary: 256 bytes, the same as word ends, and the two specials.
BYTE_LEVEL_VOCAB = 2 * 256 + 2

# The shipped stock folder each family loads with, and what differs from it for the families
# shipped no folder of (stabilityai/stable-diffusion-2-inpainting: epsilon, 512 px; the SDXL
# inpainting UNet differs from the base only in its input channels, which come from the weights).
STOCK: dict[str, tuple[str, dict[str, dict]]] = {
    "sd1": ("sd1", {}),
    "sd1-inpaint": ("sd1-inpaint", {}),
    "sd2": ("sd2", {}),
    "sd2-inpaint": ("sd2", {"scheduler": {"prediction_type": "epsilon"}, "unet": {"sample_size": 64},
                            "vae": {"sample_size": 512}}),
    "sdxl": ("sdxl", {}),
    "sdxl-inpaint": ("sdxl", {}),
}
assert set(STOCK) == set(families.NAMES)

UNET = "model.diffusion_model."
VAE = "first_stage_model."
# Each base family's text encoders: (component, layout, prefix in the original checkpoint).
TEXT_ENCODERS: dict[str, list[tuple[str, str, str]]] = {
    "sd1": [("text_encoder", "clip", "cond_stage_model.transformer.")],
    "sd2": [("text_encoder", "openclip", "cond_stage_model.model.")],
    "sdxl": [("text_encoder", "clip", "conditioner.embedders.0.transformer."),
             ("text_encoder_2", "openclip", "conditioner.embedders.1.model.")],
}
TOKENIZER_OF = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}


class CheckpointError(ValueError):
    """A checkpoint file cannot be read safely, or is not one this engine loads; says why in a line."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds, read without building any model: its tensors' shapes, its
    safetensors metadata and the family they make."""

    path: Path
    family: str
    shapes: dict[str, tuple[int, ...]]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def prediction_type(self) -> str | None:
        return families.prediction_type_of(self.metadata)


def inspect(path: Path) -> Checkpoint:
    """Read a .safetensors header (or a .ckpt, unpickling tensors and plain containers only) and
    tell its family; raises CheckpointError."""
    if path.suffix.lower() == ".safetensors":
        try:
            shapes, metadata = families.read_safetensors_header(path)
        except families.CheckpointHeaderError as error:
            raise CheckpointError(str(error)) from None
    else:
        shapes, metadata = {key: tuple(tensor.shape) for key, tensor in read_ckpt(path).items()}, {}
    family = families.family_of(shapes)
    if family is None:
        raise CheckpointError(f"not a Stable Diffusion 1.x, 2.x or XL checkpoint ({_what_it_holds(shapes)})")
    return Checkpoint(path=path, family=family, shapes=shapes, metadata=metadata)


def read_ckpt(path: Path) -> dict[str, torch.Tensor]:
    """A .ckpt's state dict, read with `torch.load(weights_only=True)`: tensors and plain containers
    only, so a pickled object that would run code is refused before anything runs."""
    try:
        # mmap: the tensors stay on disk until used (only the zip format, torch's since 1.6, allows it).
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        found = next((line for line in lines if "GLOBAL" in line or "global" in line or "reduce" in line), None)
        if found:  # torch's weights-only unpickler met a class or function to import or call
            raise CheckpointError(f"it holds pickled Python objects besides tensors ({found}); refused without "
                                  f"unpickling them. Convert it to .safetensors with a tool you trust") from None
        detail = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
        raise CheckpointError(f"not a PyTorch checkpoint this engine can read safely ({detail})") from None
    except Exception as error:  # torch raises many kinds for a file that is no checkpoint at all
        raise CheckpointError(f"not a readable PyTorch checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'unreadable'})") from None
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"it holds no state dict (but a pickled {type(state).__name__})")
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _what_it_holds(shapes: Mapping[str, tuple[int, ...]]) -> str:
    if not shapes:
        return "it holds no tensors"
    tops = sorted({".".join(key.split(".")[:2]) for key in shapes})
    shown = ", ".join(tops[:4]) + (", …" if len(tops) > 4 else "")
    conv_in = shapes.get(families.UNET_IN)
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] not in (4, families.INPAINTING_CHANNELS):
        return f"its UNet takes {conv_in[1]} input channels; found {shown}"
    return f"found {shown}"


# ------------------------------------------------------------------------------------------------
# The config folder a checkpoint loads with: the family's stock configs, and what its weights say.
# ------------------------------------------------------------------------------------------------


def stock_config(family: str, component: str) -> dict:
    """A component's config (the JSON dict) of the family's stock model, as shipped in engine/configs."""
    folder, changes = STOCK[family]
    name = "scheduler/scheduler_config.json" if component == "scheduler" else f"{component}/config.json"
    config = json.loads((CONFIGS / folder / name).read_text(encoding="utf-8"))
    # Where it was saved from, and by which diffusers: diffusers would read a stock config's old version
    # as licence to "correct" a sample size below 64 (old SD 1.x configs said 32), the tiny models' 8.
    for key in ("_diffusers_version", "_name_or_path"):
        config.pop(key, None)
    return {**config, **changes.get(component, {})}


def heads(width: int) -> int:
    """Attention heads of a text encoder, or of an SD 2.x / SDXL UNet block, whose width is `width`:
    64 channels each (CLIP-L 12, OpenCLIP-H 16, bigG 20; UNet blocks of 320, 640, 1280: 5, 10, 20),
    and at least 4 (the weights cannot tell heads apart; narrower widths are the tiny test models')."""
    return max(4, width // 64)


def norm_groups(widths: list[int]) -> int:
    """GroupNorm groups: 32 as in every real model, fewer when the widths do not divide by 32 (the
    tiny test models' VAE); the weights cannot tell, so this is the rule both sides keep."""
    return math.gcd(32, *widths)


def derive(checkpoint: Checkpoint) -> dict[str, dict]:
    """Each component's config fields that its weights determine (sizes, depths, block kinds),
    plus the attention heads and norm groups by the rules above."""
    shapes, base = checkpoint.shapes, families.base_of(checkpoint.family)
    derived = {"unet": _unet_fields(shapes, base), "vae": _vae_fields(shapes)}
    for component, layout, prefix in TEXT_ENCODERS[base]:
        reader = _clip_fields if layout == "clip" else _openclip_fields
        derived[component] = reader(shapes, prefix, base, component)
    if base == "sdxl":
        # The added conditioning: the pooled embedding (text_encoder_2's projection) and six size numbers.
        unet = derived["unet"]
        unet["addition_time_embed_dim"] = (unet["projection_class_embeddings_input_dim"]
                                           - derived["text_encoder_2"]["projection_dim"]) // 6
    return derived


def _indices(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> list[int]:
    """The numbers n of `prefix`n.… among the keys."""
    found = {key[len(prefix):].split(".", 1)[0] for key in shapes if key.startswith(prefix)}
    return sorted(int(n) for n in found if n.isdigit())


def _unet_fields(shapes: Mapping[str, tuple[int, ...]], base: str) -> dict:
    blocks = _indices(shapes, UNET + "input_blocks.")
    downsamplers = [n for n in blocks if f"{UNET}input_blocks.{n}.0.op.weight" in shapes]
    per_level = (downsamplers[0] if downsamplers else len(blocks)) - 1
    firsts = [1 + level * (per_level + 1) for level in range(len(downsamplers) + 1)]
    widths = [shapes[f"{UNET}input_blocks.{n}.0.out_layers.3.weight"][0] for n in firsts]
    attention = [f"{UNET}input_blocks.{n}.1.proj_in.weight" in shapes for n in firsts]
    depths = [len(_indices(shapes, f"{UNET}input_blocks.{n}.1.transformer_blocks.")) or 1 for n in firsts]
    cross = next(shape for key, shape in sorted(shapes.items())
                 if key.startswith(UNET) and key.endswith("attn2.to_k.weight"))
    proj_in = next(shapes[f"{UNET}input_blocks.{n}.1.proj_in.weight"] for n, yes in zip(firsts, attention) if yes)
    fields = {
        "in_channels": shapes[families.UNET_IN][1],
        "out_channels": shapes[UNET + "out.2.weight"][0],
        "block_out_channels": widths,
        "layers_per_block": per_level,
        "down_block_types": ["CrossAttnDownBlock2D" if yes else "DownBlock2D" for yes in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if yes else "UpBlock2D" for yes in reversed(attention)],
        "cross_attention_dim": cross[1],
        "use_linear_projection": len(proj_in) == 2,  # a Linear; SD 1.x's is a 1×1 convolution
        "norm_num_groups": norm_groups(widths),
    }
    if base != "sd1":  # SD 1.x: 8 heads in every block, as its stock config says
        fields["attention_head_dim"] = [heads(width) for width in widths]
    if base == "sdxl" or any(depth != 1 for depth in depths):
        fields["transformer_layers_per_block"] = depths
    if UNET + "label_emb.0.0.weight" in shapes:
        fields["projection_class_embeddings_input_dim"] = shapes[UNET + "label_emb.0.0.weight"][1]
    return fields


def _vae_fields(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    levels = _indices(shapes, VAE + "encoder.down.")
    per_level = len(_indices(shapes, VAE + "encoder.down.0.block."))
    widths = [shapes[f"{VAE}encoder.down.{level}.block.0.conv2.weight"][0] for level in levels]
    return {
        "in_channels": shapes[VAE + "encoder.conv_in.weight"][1],
        "out_channels": shapes[VAE + "decoder.conv_out.weight"][0],
        "latent_channels": shapes[VAE + "decoder.conv_in.weight"][1],
        "block_out_channels": widths,
        "layers_per_block": per_level,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "norm_num_groups": norm_groups(widths),
    }


def _text_fields(vocab: int, width: int, positions: int, layers: int, intermediate: int) -> dict:
    return {"vocab_size": vocab, "hidden_size": width, "max_position_embeddings": positions,
            "num_hidden_layers": layers, "intermediate_size": intermediate, "num_attention_heads": heads(width)}


def _clip_fields(shapes: Mapping[str, tuple[int, ...]], prefix: str, base: str, component: str) -> dict:
    text = prefix + "text_model."
    vocab, width = shapes[text + "embeddings.token_embedding.weight"]
    return _text_fields(vocab, width, shapes[text + "embeddings.position_embedding.weight"][0],
                        len(_indices(shapes, text + "encoder.layers.")),
                        shapes[text + "encoder.layers.0.mlp.fc1.weight"][0])


def _openclip_fields(shapes: Mapping[str, tuple[int, ...]], prefix: str, base: str, component: str) -> dict:
    vocab, width = shapes[prefix + "token_embedding.weight"]
    blocks = len(_indices(shapes, prefix + "transformer.resblocks."))
    # SD 2.x reads the penultimate layer of OpenCLIP's: diffusers keeps one block fewer than the file holds.
    fields = _text_fields(vocab, width, shapes[prefix + "positional_embedding"][0],
                          blocks - 1 if base == "sd2" else blocks,
                          shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0])
    if component == "text_encoder_2":  # SDXL's pooled embedding goes through the projection
        fields["projection_dim"] = shapes[prefix + "text_projection"][1]
    return fields


def config_folder(checkpoint: Checkpoint, into: Path) -> Path:
    """Write the diffusers config folder `from_single_file(config=…)` loads `checkpoint` with: the
    family's stock configs, what its weights determine, and what its ModelSpec metadata says (native
    resolution, prediction type). Raises CheckpointError for a vocabulary no tokenizer here knows."""
    folder, _ = STOCK[checkpoint.family]
    shutil.copytree(CONFIGS / folder, into, dirs_exist_ok=True)
    configs = {component: stock_config(checkpoint.family, component)
               for component in ("unet", "vae", "scheduler", *(c for c, _, _ in
                                                                 TEXT_ENCODERS[families.base_of(checkpoint.family)]))}
    try:
        derived = derive(checkpoint)
    except (KeyError, IndexError, StopIteration, ValueError) as error:
        raise CheckpointError(f"its {families.LABELS[checkpoint.family]} weights are incomplete or of an unusual "
                              f"layout ({type(error).__name__}: {error})") from None
    for component, fields in derived.items():
        configs[component].update(fields)
    prediction = checkpoint.prediction_type
    if prediction:
        configs["scheduler"]["prediction_type"] = prediction
    side = families.resolution_of(checkpoint.metadata)
    if side is None and prediction:
        side = families.native_size(checkpoint.family, prediction)
    if side is not None:
        scale = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
        configs["unet"]["sample_size"] = side // scale
        configs["vae"]["sample_size"] = side
    for component, text in TOKENIZER_OF.items():
        if component in configs:
            configs[component].update(_tokenizer(into / text, configs[component]["vocab_size"], component))
    for component, config in configs.items():
        name = "scheduler/scheduler_config.json" if component == "scheduler" else f"{component}/config.json"
        (into / name).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return into


def _tokenizer(folder: Path, vocab: int, component: str) -> dict:
    """Complete the stock tokenizer folder (its configs only) with the vocabulary the text encoder
    was trained on; return what its text encoder's config must say of that tokenizer's tokens."""
    if vocab == CLIP_VOCAB:
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(CLIP_TOKENIZER / name, folder / name)
        return {}
    if vocab != BYTE_LEVEL_VOCAB:
        raise CheckpointError(f"its {component} has a vocabulary of {vocab} tokens; only CLIP's {CLIP_VOCAB} "
                              f"(and the tiny test models' {BYTE_LEVEL_VOCAB}) are known")
    from engine.tiny import byte_level_tokenizer  # engine.tiny builds on this module

    special = json.loads((folder / "special_tokens_map.json").read_text(encoding="utf-8"))
    pad = special["pad_token"]
    tokenizer = byte_level_tokenizer(pad=pad["content"] if isinstance(pad, dict) else pad)
    shutil.rmtree(folder)
    tokenizer.save_pretrained(folder)
    return token_ids(tokenizer)


def token_ids(tokenizer) -> dict:
    """The special tokens' ids a CLIP text encoder's config carries, for a tokenizer of its own."""
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


# ------------------------------------------------------------------------------------------------
# diffusers -> original layout. Ported from diffusers' own scripts
# scripts/convert_diffusers_to_original_stable_diffusion.py and
# scripts/convert_diffusers_to_original_sdxl.py (Apache-2.0, © the HuggingFace team), with their
# hard-coded block counts (4 levels of 2 layers, SDXL's 3) generalised to the config's, so that the
# tiny models convert too, and with SDXL's text projection written as the original layout holds it.
# ------------------------------------------------------------------------------------------------

UNET_RENAMES = [
    # (stable-diffusion, HF Diffusers)
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"),
    ("out.2.bias", "conv_out.bias"),
    # SDXL's added conditioning
    ("label_emb.0.0.weight", "add_embedding.linear_1.weight"),
    ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
    ("label_emb.0.2.weight", "add_embedding.linear_2.weight"),
    ("label_emb.0.2.bias", "add_embedding.linear_2.bias"),
]
UNET_RESNET_PARTS = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]


def _unet_prefixes(config: Mapping) -> list[tuple[str, str]]:
    """(stable-diffusion prefix, diffusers prefix) of every block, for this UNet's levels and layers."""
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    down_attention = ["CrossAttn" in kind for kind in config["down_block_types"]]
    up_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    step = per_level + 1  # an input level's layers, then its downsampler; an output level's layers
    pairs = []
    for i in range(levels):
        for j in range(per_level):
            pairs.append((f"input_blocks.{step * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attention[i]:
                pairs.append((f"input_blocks.{step * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(per_level + 1):
            pairs.append((f"output_blocks.{step * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attention[i]:
                pairs.append((f"output_blocks.{step * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            pairs.append((f"input_blocks.{step * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            # The upsampler follows the level's last layer: after its attention when it has one.
            pairs.append((f"output_blocks.{step * i + per_level}.{2 if up_attention[i] else 1}.",
                          f"up_blocks.{i}.upsamplers.0."))
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        pairs.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return pairs


def unet_to_original(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    renames = {hf: sd for sd, hf in UNET_RENAMES}
    prefixes = _unet_prefixes(config)
    converted = {}
    for key, tensor in state.items():
        name = renames.get(key, key)
        if "resnets" in name:
            for sd_part, hf_part in UNET_RESNET_PARTS:
                name = name.replace(hf_part, sd_part)
        for sd_prefix, hf_prefix in prefixes:
            if name.startswith(hf_prefix):
                name = sd_prefix + name[len(hf_prefix):]
                break
        converted[name] = tensor
    return converted


def _vae_prefixes(config: Mapping) -> list[tuple[str, str]]:
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    pairs = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"),
             ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(levels):
        for j in range(per_level):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < levels - 1:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{levels - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        # The decoder's levels are numbered the other way round, and have one layer more.
        for j in range(per_level + 1):
            pairs.append((f"decoder.up.{levels - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        pairs.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    return pairs


VAE_ATTENTION_PARTS = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."),
                       ("proj_out.", "to_out.0.")]


def vae_to_original(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    pairs = _vae_prefixes(config)
    converted = {}
    for key, tensor in state.items():
        name = key
        for sd_part, hf_part in pairs:
            name = name.replace(hf_part, sd_part)
        if "attentions" in key:
            for sd_part, hf_part in VAE_ATTENTION_PARTS:
                name = name.replace(hf_part, sd_part)
            if tensor.ndim == 2:  # the original's attention projections are 1×1 convolutions
                tensor = tensor.reshape(*tensor.shape, 1, 1)
        converted[name] = tensor
    return converted


OPENCLIP_PARTS = [
    # (stable-diffusion, HF Diffusers)
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    (".c_fc.", ".fc1."),
    (".c_proj.", ".fc2."),
    (".attn", ".self_attn"),
    ("ln_final.", "text_model.final_layer_norm."),
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
]
_OPENCLIP_PROTECTED = {re.escape(hf): sd for sd, hf in OPENCLIP_PARTS}
_OPENCLIP_PATTERN = re.compile("|".join(_OPENCLIP_PROTECTED))


def _with_text_model(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 saves CLIPTextModel without its `text_model.` level; the original has it.
    return {key if key.startswith(("text_model.", "text_projection")) else f"text_model.{key}": tensor
            for key, tensor in state.items()}


def clip_to_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI's CLIP (SD 1.x, SDXL's first encoder): stored as transformers names it."""
    return {key: tensor for key, tensor in _with_text_model(state).items() if not key.endswith("position_ids")}


def openclip_to_original(state: Mapping[str, torch.Tensor], spare_block: bool = False) -> dict[str, torch.Tensor]:
    """OpenCLIP (SD 2.x, SDXL's second encoder): fused q/k/v (`in_proj_*`), its own names, the text
    projection as a matrix applied from the right. With `spare_block`, one zero block after the last:
    SD 2.x checkpoints hold OpenCLIP's every block, though SD 2.x reads the penultimate one's output."""
    converted: dict[str, torch.Tensor] = {}
    fused: dict[str, list] = {}
    for key, tensor in _with_text_model(state).items():
        if key.endswith("position_ids"):
            continue
        if key == "text_projection.weight":
            converted["text_projection"] = tensor.T.contiguous()
            continue
        match = re.search(r"\.self_attn\.([qkv])_proj\.(weight|bias)$", key)
        if match:
            stem = key[: match.start()] + ".self_attn"
            fused.setdefault(f"{stem}|{match.group(2)}", [None, None, None])["qkv".index(match.group(1))] = tensor
            continue
        converted[_OPENCLIP_PATTERN.sub(lambda m: _OPENCLIP_PROTECTED[re.escape(m.group(0))], key)] = tensor
    for stem_kind, parts in fused.items():
        stem, kind = stem_kind.split("|")
        name = _OPENCLIP_PATTERN.sub(lambda m: _OPENCLIP_PROTECTED[re.escape(m.group(0))], stem)
        converted[f"{name}.in_proj_{kind}"] = torch.cat(parts)
    if spare_block:
        last = max(int(key.split(".")[2]) for key in converted if key.startswith("transformer.resblocks."))
        head = f"transformer.resblocks.{last}."
        converted.update({f"transformer.resblocks.{last + 1}.{key[len(head):]}": torch.zeros_like(tensor)
                          for key, tensor in list(converted.items()) if key.startswith(head)})
    return converted


def to_original(pipe: DiffusionPipeline, family: str) -> dict[str, torch.Tensor]:
    """A diffusers pipeline's weights in the original single-file layout of its family."""
    base = families.base_of(family)
    state = {UNET + key: tensor for key, tensor in unet_to_original(pipe.unet.state_dict(), pipe.unet.config).items()}
    state.update({VAE + key: tensor for key, tensor in vae_to_original(pipe.vae.state_dict(), pipe.vae.config).items()})
    for component, layout, prefix in TEXT_ENCODERS[base]:
        weights = getattr(pipe, component).state_dict()
        converted = clip_to_original(weights) if layout == "clip" else openclip_to_original(weights, base == "sd2")
        state.update({prefix + key: tensor for key, tensor in converted.items()})
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


def write_single_file(pipe: DiffusionPipeline, family: str, path: Path,
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Save a pipeline as one .safetensors checkpoint in the original layout (suffix added if missing)."""
    if path.suffix.lower() != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(to_original(pipe, family), str(path), metadata=dict(metadata or {}))
    return path
