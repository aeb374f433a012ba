"""Train a LoRA for the bundled `shapes` model: `python -m tools.train_lora NAME OUT`.

A LoRA (Hu et al. 2021) adds a small low-rank update to some of a frozen model's layers; loaded at
a weight, it scales that update. The bundled `engine/models/shapes/loras/outline.safetensors` makes
the model draw every shape as an outline, a line a few pixels wide in the shape's colour with the
background showing inside, where the model alone fills it; at weight 0 it is the model as it was.
It was made with `python -m tools.train_lora outline engine/models/shapes/loras/outline.safetensors`
(the defaults: seed 0, rank 4, 1500 steps of 32 pictures): 6.9 minutes to the file on 2 cores shared
with other work (6.7 of them the 1500 steps), 7.8 with the evaluation below. The file (0.75 MB) is
diffusers' LoRA format, loaded with the public API: `pipe.load_lora_weights(path,
adapter_name="outline")`, then `pipe.set_adapters(["outline"], adapter_weights=[weight])`.
Deterministic given --seed on one machine.

Choices, and why:
- PEFT, as diffusers' `train_text_to_image_lora.py` does it: `unet.add_adapter(LoraConfig(...))`,
  saved with `StableDiffusionPipeline.save_lora_weights`. What is saved is PEFT's own state dict
  (`get_peft_model_state_dict`, keys `unet.<module>.lora_A.weight` / `lora_B.weight`), not that
  script's `convert_state_dict_to_diffusers` of it: that renames the attention layers' keys to the
  old `lora.down`/`lora.up` and leaves the convolutions' as they are, and diffusers' loader, finding
  PEFT keys, then takes the whole file for PEFT's and silently skips every attention layer. The
  tests check that `load_lora_weights` puts every tensor of the file into the model, unchanged.
  UNet only: what changes is how a shape is painted, not what the words mean.
- Targets: the attention projections (to_q, to_k, to_v, to_out.0), the transformer blocks'
  proj_in/proj_out and feed-forward, and the resnets' convolutions (conv1, conv2): 106 layers.
  Hollowing a shape is a spatial change, a line along its edge and background inside it, which a
  3x3 convolution sees and a projection of one latent pixel does not; the model's first level
  (16 x 16 latents) has no attention at all, only resnets. Rank 4 (181 k parameters, a 0.75 MB
  float32 file), alpha equal to the rank (scale 1); A from a seeded Gaussian and B zero, so the
  LoRA starts as no change at all.
- The loss is `tools.train_shapes`' loss: v-prediction on its zero-terminal-SNR schedule (read back
  from the model's scheduler config), uniform timesteps, min-SNR-5 weights; AdamW at 2e-3 with a
  5 % warm-up and cosine decay, gradients clipped at 1. 1500 steps of 32: 1200 gave about as much
  (88 against 91 hollow of 96 for 2000), a step is ~0.25 s on 2 idle cores.
- Pictures: 2048 `tools.shapes.draw(..., outline=True)` of the training combinations, at every
  size and place the model knows; the held-out ones are never drawn, as outlines either. The line
  is STROKE = 4 px at 64 px, one latent pixel, a compromise the model's frozen VAE (trained on
  filled shapes only) imposes: encoded and decoded by it, pictures with 4 px lines still read
  hollow in 84 % of cases and in the right colour in 76 %; 3 px lines, 89 % and 65 % (a thin line
  blurs into the background's colour); 5 px, 76 % and 82 % (small shapes, triangles most, keep
  little inside).
- Captions in the model's own style: 10 % empty (classifier-free guidance pushes away from the
  unconditional prediction, so that must be an outline too, or guidance would push the fill back
  in), 70 % the full sentence, the rest a part of it. No trigger word: the LoRA itself is the
  switch, and a prompt means at weight 1 what it means at weight 0.
- What the VAE allows: the LoRA changes the UNet, the latents it draws, but the frozen VAE turns
  them into colours, and thin lines come back from it shifted. Encoding and decoding 18 outlines
  of each colour on each background: yellow and orange lines on black, gray or blue come back
  orange or red (6 of 108 keep their colour), blue lines on white purple; red, green and purple
  lines, and yellow and orange ones on white, keep their colour (15 to 18 of 18). So "a yellow
  square on a black background" comes out an orange outline at weight 1: the VAE's limit, not the
  LoRA's.

Evaluation (`--no-evaluate` skips it): the model loaded afresh, the LoRA loaded as the engine does,
PROMPTS at 25 steps, guidance 7 (as `tools.train_embedding`'s), --eval-seeds seeds each, read by
`tools.shapes.classify` and `tools.shapes.hollow` at weight 1 and weight 0; then whether the
pictures at weight 0, and after `disable_lora()`, are byte for byte the model's own. The bundled
file, 16 seeds a prompt:

    prompt                                                weight 1                    weight 0
                                                          hollow   hollow, right      hollow   right
                                                                   colour and bg
    a red circle on a white background                    16       16                 0        16
    a blue square on a gray background                    16       16                 0        16
    a purple triangle on a white background               12       12                 0        16
    a orange circle on a white background (held out)      16       16                 0        16
    a yellow square on a black background (held out)      16        0 (orange)        0        16
    a green triangle on a gray background (held out)      16       16                 0        16
    all                                                   92/96    76/96              0/96     96/96

At weight 1, 72/96 show the prompt's colour, shape and background (88/96 the right shape: thin or
broken triangles are sometimes read as circles or squares). At weight 0 all 96 pictures, and all
96 after `disable_lora()`, are byte for byte those of the model without the LoRA.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image

from tools import shapes, train_shapes
from tools.train_embedding import MODEL, load_pipeline, log
from tools.train_shapes import encode, noise_levels, v_loss, warmup_cosine

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2")
# The evaluation's prompts: a training combination of each shape, then a held-out one of each.
PROMPTS = [("red", "circle", "white"), ("blue", "square", "gray"), ("purple", "triangle", "white"),
           ("orange", "circle", "white"), ("yellow", "square", "black"), ("green", "triangle", "gray")]


def training_caption(rng: random.Random, colour: str, shape: str, background: str) -> str:
    """10 % empty, 70 % the full sentence, otherwise a part of it, as a sentence or bare words:
    `tools.train_shapes`' captions with more full sentences."""
    return train_shapes.training_caption(rng, colour, shape, background, sentences_below=0.8)


def draw_pictures(rng: random.Random, count: int) -> tuple[torch.Tensor, list[tuple[str, str, str]]]:
    """`count` outlines of training combinations as a [-1, 1] tensor, with the combination each shows."""
    shown = [rng.choice(shapes.TRAINING) for _ in range(count)]
    pictures = [np.asarray(shapes.draw(*combination, rng, outline=True)) for combination in shown]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1, shown


def train(pipe: StableDiffusionPipeline, *, rank: int, images: int, steps: int, batch: int, lr: float,
          seed: int) -> dict[str, torch.Tensor]:
    """The trained LoRA layers, PEFT's state dict of the UNet; `pipe.unet` is left with them."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer, text_encoder, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    for model in (text_encoder, unet, vae):
        model.requires_grad_(False).eval()
    # A from a seeded Gaussian, B zero: the update starts at nothing. Only the LoRA layers train.
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(TARGETS)))
    params = [p for p in unet.parameters() if p.requires_grad]
    log(f"LoRA rank {rank} on {sum(1 for n, _ in unet.named_modules() if n.endswith('.lora_A'))} layers: "
        f"{sum(p.numel() for p in params) / 1e3:.0f} k parameters")

    log(f"drawing and encoding {images} outlines of {len(shapes.TRAINING)} combinations")
    pictures, shown = draw_pictures(rng, images)
    means, stds = encode(vae, pictures)
    scaling = vae.config.scaling_factor

    # The schedule the model was trained on, from the betas its scheduler config carries.
    alphas_bar, snr = noise_levels(torch.tensor(pipe.scheduler.config.trained_betas, dtype=torch.float64))
    length = tokenizer.model_max_length

    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = warmup_cosine(optimiser, max(1, steps), warmup=max(1, steps // 20))
    generator = torch.Generator().manual_seed(seed + 1)
    unet.train()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(len(means), (batch,), generator=generator)
        x0 = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)) * scaling
        captions = [training_caption(rng, *shown[i]) for i in index.tolist()]
        input_ids = tokenizer(captions, padding="max_length", max_length=length, truncation=True,
                              return_tensors="pt").input_ids
        with torch.no_grad():
            context = text_encoder(input_ids)[0]
        loss = v_loss(unet, x0, context, alphas_bar, snr, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            elapsed = time.perf_counter() - started
            log(f"step {step}/{steps}: loss {loss.item():.4f} "
                f"({elapsed:.0f} s, ~{elapsed / step * (steps - step) / 60:.1f} min left)")
    unet.eval()
    return get_peft_model_state_dict(unet)


def save(layers: dict[str, torch.Tensor], out: Path) -> None:
    """Write the UNet's LoRA layers as diffusers does, float32, to the file `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    layers = {key: value.detach().float().contiguous() for key, value in layers.items()}
    StableDiffusionPipeline.save_lora_weights(out.parent, unet_lora_layers=layers, weight_name=out.name,
                                              safe_serialization=True)


def load(pipe: StableDiffusionPipeline, path: Path, name: str, weight: float = 1.0) -> None:
    """Load the LoRA at `path` into `pipe` as the engine does, under `name`, at `weight`."""
    pipe.load_lora_weights(str(path), adapter_name=name)
    pipe.set_adapters([name], adapter_weights=[weight])


@torch.no_grad()
def generate(pipe: StableDiffusionPipeline, prompt: str, seeds: list[int], steps: int = 25,
             guidance: float = 7.0) -> list[Image.Image]:
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return pipe([prompt] * len(seeds), num_inference_steps=steps, guidance_scale=guidance,
                generator=generators).images


def read(pipe: StableDiffusionPipeline, prompt: str, seeds: list[int], steps: int = 25,
         guidance: float = 7.0) -> list[tuple[tuple, bool | None]]:
    """What the oracle sees in the pictures of `prompt`, one (classify, hollow) per seed."""
    return [(shapes.classify(image), shapes.hollow(image)) for image in generate(pipe, prompt, seeds, steps, guidance)]


def evaluate(name: str, path: Path, model: Path | str = MODEL, seeds: int = 16, steps: int = 25,
             guidance: float = 7.0) -> dict[float, tuple[int, int, int]]:
    """Generate PROMPTS from a freshly loaded model with the LoRA at weight 1 and at weight 0, and
    print and return, per weight, how many pictures were hollow, how many were hollow in the
    prompt's colour on its background, and how many showed the prompt's colour, shape and
    background. Then say whether weight 0, and `disable_lora`, give the model's own pictures."""
    pipe = load_pipeline(model)
    seed_list = list(range(seeds))
    prompts = {combination: shapes.caption(*combination) for combination in PROMPTS}
    own = {combination: generate(pipe, prompt, seed_list, steps, guidance) for combination, prompt in prompts.items()}
    load(pipe, path, name)
    scores, same = {}, {}
    for weight in (1.0, 0.0):
        pipe.set_adapters([name], adapter_weights=[weight])
        counts = np.zeros(4, dtype=int)
        for combination, prompt in prompts.items():
            images = generate(pipe, prompt, seed_list, steps, guidance)
            if weight == 0.0:
                same[combination] = [a.tobytes() == b.tobytes() for a, b in zip(images, own[combination], strict=True)]
            seen = [(shapes.classify(image), shapes.hollow(image)) for image in images]
            found = (sum(bool(h) for _, h in seen),
                     sum(bool(h) and (s[0], s[2]) == (combination[0], combination[2]) for s, h in seen),
                     sum(s == combination for s, _ in seen), sum(s[1] == combination[1] for s, _ in seen))
            counts += found
            readings = Counter(" ".join(map(str, (*s, "hollow" if h else "filled"))) for s, h in seen)
            held = " (held out)" if combination in shapes.HELD_OUT else ""
            print(f"  weight {weight:g}: {prompt!r}{held}: {found[0]}/{seeds} hollow, {found[1]} of them in the right "
                  f"colour and background; {found[2]} right  {dict(readings.most_common())}", flush=True)
        total = seeds * len(PROMPTS)
        print(f"weight {weight:g}: {counts[0]}/{total} hollow, {counts[1]}/{total} hollow in the right colour on the "
              f"right background; {counts[2]}/{total} the right colour, shape and background ({counts[3]}/{total} "
              f"the right shape); {steps} steps, guidance {guidance:g}", flush=True)
        scores[weight] = (int(counts[0]), int(counts[1]), int(counts[2]))
    pipe.disable_lora()
    disabled = [a.tobytes() == b.tobytes() for combination, prompt in prompts.items()
                for a, b in zip(generate(pipe, prompt, seed_list, steps, guidance), own[combination], strict=True)]
    at_zero = [s for combination in PROMPTS for s in same[combination]]
    print(f"byte for byte the model's own pictures: {sum(at_zero)}/{len(at_zero)} at weight 0, "
          f"{sum(disabled)}/{len(disabled)} after disable_lora()", flush=True)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.train_lora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="outline", help="the LoRA's name (default: outline)")
    parser.add_argument("out", nargs="?", type=Path, help="safetensors file to write "
                        "(default: engine/models/shapes/loras/NAME.safetensors)")
    parser.add_argument("--model", type=Path, default=MODEL, help="diffusers folder (default: the bundled shapes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--images", type=int, default=2048, help="training pictures")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--eval-seeds", type=int, default=16, help="pictures per prompt in the evaluation")
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                        help="skip the report at the end")
    args = parser.parse_args(argv)
    out = args.out or args.model / "loras" / f"{args.name}.safetensors"

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pipe = load_pipeline(args.model)
    layers = train(pipe, rank=args.rank, images=args.images, steps=args.steps, batch=args.batch, lr=args.lr,
                   seed=args.seed)
    save(layers, out)
    log(f"wrote {out} ({out.stat().st_size} bytes, {len(layers)} tensors) "
        f"after {(time.perf_counter() - started) / 60:.1f} min")
    if args.evaluate:
        evaluate(args.name, out, args.model, seeds=args.eval_seeds)
        log(f"done after {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
