"""Full-size random-weight Stable Diffusion models, for benchmarks on a machine with no model hub.

    python bench/full_size.py sd15 /tmp/sd15 [--dtype float16]
    python bench/full_size.py sdxl /tmp/sdxl

Each is its family's stock configs (engine/configs) at their real sizes (SD 1.5: an 860M UNet,
CLIP-L; SDXL: a 2.6B UNet, CLIP-L and bigG), with random weights and a byte-level tokenizer
(`engine.tiny.byte_level_tokenizer`): the same shapes and the same arithmetic per step as the real
model, so its speed and memory are the real model's. Its pictures are noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import diffusers  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from engine.checkpoint import stock_config, token_ids  # noqa: E402
from engine.tiny import byte_level_tokenizer  # noqa: E402

# Bench name -> the family in engine/configs, and its native size in pixels.
FAMILIES = {"sd15": ("sd1", 512), "sdxl": ("sdxl", 1024)}


def native_size(name: str) -> int:
    return FAMILIES[name][1]


def build(name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
          seed: int = 0) -> DiffusionPipeline:
    """The full-size model `name` ("sd15" or "sdxl") with random weights drawn from `seed`,
    its parameters made directly on `device` in `dtype`."""
    family = FAMILIES[name][0]
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            def text_encoder(component: str, tokenizer):
                config = stock_config(family, component)
                config.update(token_ids(tokenizer))
                cls = CLIPTextModelWithProjection if component == "text_encoder_2" else CLIPTextModel
                return cls(CLIPTextConfig.from_dict(config))

            unet = UNet2DConditionModel.from_config(stock_config(family, "unet"))
            vae = AutoencoderKL.from_config(stock_config(family, "vae"))
            scheduler_config = stock_config(family, "scheduler")
            scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
            if family == "sdxl":
                tokenizer, tokenizer_2 = byte_level_tokenizer(), byte_level_tokenizer(pad="!")
                return StableDiffusionXLPipeline(
                    vae=vae, text_encoder=text_encoder("text_encoder", tokenizer),
                    text_encoder_2=text_encoder("text_encoder_2", tokenizer_2), tokenizer=tokenizer,
                    tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
                    add_watermarker=False)
            tokenizer = byte_level_tokenizer()
            return StableDiffusionPipeline(
                vae=vae, text_encoder=text_encoder("text_encoder", tokenizer), tokenizer=tokenizer, unet=unet,
                scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    finally:
        torch.set_default_dtype(previous)


def write(name: str, folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
          ) -> Path:
    """Save the full-size model `name` as a diffusers folder (safetensors) that
    `from_pretrained(folder)` and SD_MODEL load; returns the folder."""
    folder = Path(folder)
    build(name, dtype, device).save_pretrained(folder)
    family = FAMILIES[name][0]
    config = json.dumps(stock_config(family, "scheduler"), indent=2)  # as the stock folder holds it
    (folder / "scheduler" / "scheduler_config.json").write_text(config + "\n", encoding="utf-8")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(FAMILIES))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()
    started = time.perf_counter()
    write(args.model, args.folder, getattr(torch, args.dtype))
    print(f"wrote {args.model} to {args.folder} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
