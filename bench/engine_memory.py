"""Engine resident memory: text-to-image only vs every mode, side by side in one run.

    python bench/engine_memory.py [--model shapes] [--size 64] [--sd15-like]

Each scenario runs in a fresh `python` process that loads the engine, generates, and reports its
resident set size (VmRSS and the peak VmHWM from /proc/self/status). The "every mode" process runs
txt2img, img2img, inpaint, outpaint, upscale and interpolate on the same engine. `--sd15-like`
benchmarks a random-weight model with SD 1.5's UNet and text encoder sizes (built once in a temp
folder), so that a second copy of the weights would show: about 3.4 GB for the UNet in float32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIO = r'''
import io, json, sys
from PIL import Image
from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from engine.pipeline import Engine

def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}

model, size, every = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "every"
engine = Engine.load(EngineSettings(_env_file=None, sd_model=model))
loaded = rss()
base = dict(num_inference_steps=4, guidance_scale=5.0, seed=1, width=size, height=size)
picture = engine.generate(0, GenerateRequest(prompt="a red circle on a blue background", **base)).images[0].data
for _ in range(2):
    engine.generate(0, GenerateRequest(prompt="a red circle on a blue background", **base))
if every:
    mask = Image.new("L", (size, size), 0); mask.paste(255, (0, 0, size // 2, size))
    buffer = io.BytesIO(); mask.save(buffer, format="PNG")
    common = dict(num_inference_steps=4, guidance_scale=5.0, seed=1, prompt="a red circle on a blue background")
    for fields in (dict(mode="img2img", image=picture), dict(mode="inpaint", image=picture, mask=buffer.getvalue()),
                   dict(mode="outpaint", image=picture, direction="right", amount=size // 4),
                   dict(mode="upscale", image=picture), dict(mode="interpolate", end_seed=2, frames=3,
                                                                width=size, height=size)):
        engine.generate(0, GenerateRequest(**common, **fields))
    pipes = {mode: engine.pipeline(mode) for mode in ("txt2img", "img2img", "inpaint")}
    shared = all(p.unet is engine.pipe.unet and p.vae is engine.pipe.vae and p.text_encoder is engine.pipe.text_encoder
                 for p in pipes.values())
else:
    shared = None
print(json.dumps({"loaded": loaded, "after": rss(), "shared_weights": shared}))
'''


def sd15_like(folder: Path) -> str:
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline()  # the tiny VAE and scheduler; SD 1.5-sized UNet and text encoder
    torch.manual_seed(0)
    tokenizer = pipe.tokenizer
    unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=pipe.unet.config.sample_size)  # 860 M
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    StableDiffusionPipeline(vae=pipe.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return str(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sd15-like", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = sd15_like(Path(tmp) / "sd15-like") if args.sd15_like else args.model
        results = {}
        for scenario in ("txt2img", "every"):
            out = subprocess.run([sys.executable, "-c", SCENARIO, model, str(args.size), scenario],
                                 capture_output=True, text=True, check=True)
            results[scenario] = json.loads(out.stdout.strip().splitlines()[-1])
    name = "SD 1.5-sized random model" if args.sd15_like else args.model
    print(f"engine resident memory, {name}, {args.size}x{args.size}, 4 steps, CPU")
    print(f"{'scenario':<28}{'RSS loaded':>12}{'RSS after':>12}{'peak':>12}")
    for scenario, label in (("txt2img", "txt2img only"), ("every", "every mode")):
        r = results[scenario]
        print(f"{label:<28}{r['loaded']['VmRSS']:>10.0f} M{r['after']['VmRSS']:>10.0f} M{r['after']['VmHWM']:>10.0f} M")
    ratio = results["every"]["after"]["VmRSS"] / results["txt2img"]["after"]["VmRSS"]
    peak = results["every"]["after"]["VmHWM"] / results["txt2img"]["after"]["VmHWM"]
    print(f"every mode / txt2img only: RSS {ratio:.3f}, peak {peak:.3f} (target <= 1.10)")
    print(f"img2img and inpaint pipelines share the UNet, VAE and text encoder objects: "
          f"{results['every']['shared_weights']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
