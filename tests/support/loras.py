"""Tiny random LoRAs for a model built in code, in diffusers' format or in kohya's (the A1111 format
model sites publish), holding the same weights, so a test can tell that both load alike."""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

RANK = 4
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def lora_weights(model: Path, seed: int) -> dict[str, torch.Tensor]:
    """Random LoRA weights for the model's UNet attention, in diffusers' format (`unet.….lora_A.weight`),
    large enough to change a picture plainly."""
    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGETS, init_lora_weights=False))
    state = get_peft_model_state_dict(unet)
    return {f"unet.{key}": (value * 4).float().contiguous() for key, value in state.items()}


def as_kohya(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights as kohya's trainer writes them: `lora_unet_<path_with_underscores>.lora_down.weight`,
    `.lora_up.weight` and `.alpha` (here the rank, so the scale is 1 as in diffusers' file)."""
    kohya: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        module, kind = key.removeprefix("unet.").rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.lora_down.weight" if kind.startswith("A") else f"{name}.lora_up.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(float(RANK))
    return kohya


def write_lora(model: Path, path: Path, seed: int = 0, *, kohya: bool = False,
               metadata: dict[str, str] | None = None) -> Path:
    weights = lora_weights(model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(as_kohya(weights) if kohya else weights, str(path), metadata=metadata)
    return path
