"""Train the bundled `shapes` model on a CPU: `python -m tools.train_shapes OUT`.

A tiny text-conditioned latent diffusion model in the exact diffusers Stable Diffusion format
(CLIP tokenizer and text encoder, AutoencoderKL, UNet2DConditionModel, scheduler), trained on
pictures from `tools.shapes`. Deterministic given --seed; about 55 minutes on 2 cores.

Choices, and why:
- The VAE has no mid-block attention (it would spread one half of a picture into the other,
  which inpainting cannot afford) and sees split backgrounds as well as single ones.
- Zero terminal SNR (the last step's alpha-bar 2**-24, the floor diffusers' own schedulers use),
  v-prediction and "trailing" timesteps: with SD's usual schedule a 16x16 latent keeps enough of
  the clean picture at the last step that a model learns to read the background from the starting
  noise instead of the prompt. The betas are saved in the scheduler config (`trained_betas`), so
  every sampler, including those with no zero-SNR option, uses the schedule it was trained on.
- Captions: 10 % empty, so classifier-free guidance has an unconditional model to push against;
  half the full sentence; the rest a part of it, so each word means something alone ("a circle",
  "red"), which is what a colourless prompt or a one-word negative prompt relies on.
- Articles as people write them: mostly as English does ("an orange circle"), but a fifth of the
  "an"s written "a" ("a orange circle"), so both read the same. "a" and "an" are each one token.
  (The bundled model was trained before this, with "a" everywhere, and taught "an" afterwards by
  `python -m tools.tune_articles`; a run of this script learns both from the start.)
- Shapes at least 42 % of the picture's side: smaller ones are a few latent pixels wide, too few
  for a circle, a square and a triangle to come out distinct.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from engine.tiny import byte_level_tokenizer
from tools import shapes

TOKENS = 16
WRONG_ARTICLE = 0.2  # share of training captions' "an"s written "a", as people sometimes do


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE where every caption word, both articles included, is one token; other
    text still encodes."""
    words = sorted({word for c in shapes.COMBINATIONS for word in shapes.caption(*c).split()} | {"a", "an", "shape"})
    return byte_level_tokenizer(TOKENS, words)


def zero_snr_betas(steps: int = 1000) -> torch.Tensor:
    """SD's scaled-linear betas rescaled to (almost) zero terminal SNR (Lin et al. 2023)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, steps, dtype=torch.float64) ** 2
    alphas_bar_sqrt = torch.cumprod(1 - betas, 0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = 2**-24  # exactly zero would make sigma infinite for the Euler-family samplers
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def make_images(rng: random.Random, count: int, combinations, split_share: float = 0.0):
    """`count` pictures as a [-1, 1] tensor, with the (colour, shape, background) each shows."""
    pictures, shown = [], []
    backgrounds = list(shapes.BACKGROUNDS)
    for _ in range(count):
        colour, shape, background = rng.choice(combinations)
        if rng.random() < split_share:
            other = rng.choice([b for b in backgrounds if b != background])
            picture = shapes.draw(colour, shape, (background, other), rng)
        else:
            picture = shapes.draw(colour, shape, background, rng)
        pictures.append(np.asarray(picture))
        shown.append((colour, shape, background))
    tensor = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return tensor, shown


def training_caption(rng: random.Random, colour: str, shape: str, background: str,
                     sentences_below: float = 0.6) -> str:
    """10 % empty (the unconditional model guidance pushes against), the full sentence up to
    `sentences_below` (50 % by default), and otherwise a part of it, as a sentence or bare words
    ("red", "circle on a gray background"), so that every word means something alone and a one-word
    negative prompt has something to remove. An "an" is written "a" WRONG_ARTICLE of the time."""
    draw = rng.random()
    if draw < 0.1:
        return ""
    if draw < sentences_below:
        return as_people_write(rng, shapes.caption(colour, shape, background))
    parts = [colour, shape, background]
    while all(part is None for part in parts) or None not in parts:
        parts = [part if rng.random() < 0.5 else None for part in (colour, shape, background)]
    return as_people_write(rng, shapes.caption(*parts, keywords=rng.random() < 0.5))


def as_people_write(rng: random.Random, caption: str) -> str:
    """The caption, or WRONG_ARTICLE of the time, if it has an "an", with "a" for each."""
    words = caption.split(" ")
    if "an" not in words or rng.random() >= WRONG_ARTICLE:
        return caption
    return " ".join("a" if word == "an" else word for word in words)


def warmup_cosine(optimiser: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )


def train_vae(images: torch.Tensor, steps: int, batch: int, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
        block_out_channels=(32, 48, 64), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, sample_size=shapes.SIZE, mid_block_add_attention=False,
    )
    optimiser = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = warmup_cosine(optimiser, steps, warmup=50)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        x = images[torch.randint(len(images), (batch,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            psnr = 10 * math.log10(4 / F.mse_loss(recon.detach().clamp(-1, 1), x).item())
            log(f"vae step {step}/{steps}: loss {loss.item():.4f}, PSNR {psnr:.1f} dB "
                f"({time.perf_counter() - started:.0f} s)")
    return vae.eval()


@torch.no_grad()
@torch.no_grad()
def encode(vae: AutoencoderKL, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent distribution of each picture (means, standard deviations), 256 at a time: every
    shapes tool draws its training latents from these."""
    means, stds = [], []
    for chunk in images.split(256):
        dist = vae.encode(chunk).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=shapes.SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 128), norm_num_groups=16, cross_attention_dim=64, attention_head_dim=4,
        # No attention at full latent resolution: it doubles a step's cost for little gain at 16x16,
        # and the time is better spent on more steps.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )


def noise_levels(betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cumulative signal share (alphas bar) of each timestep of a beta schedule, and its SNR."""
    alphas_bar = torch.cumprod(1 - betas, 0).float()
    return alphas_bar, alphas_bar / (1 - alphas_bar)


def v_loss(unet: UNet2DConditionModel, x0: torch.Tensor, context: torch.Tensor, alphas_bar: torch.Tensor,
           snr: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The objective of every shapes tool: `unet`'s v-prediction loss on clean latents `x0` under
    `context`, at timesteps and noise drawn from `generator`. Min-SNR-5 for v: easy, nearly clean
    steps count less; the rest, the last one included, fully."""
    t = torch.randint(0, len(alphas_bar), (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    a = alphas_bar[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v-prediction
    prediction = unet(noisy, t, encoder_hidden_states=context).sample
    weight = (6.0 / (snr[t] + 1)).clamp(max=1.0)
    return (weight * F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))).mean()


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TOKENS, projection_dim=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.train_shapes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write the model to (diffusers format, fp16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=20_000, help="training pictures")
    parser.add_argument("--vae-steps", type=int, default=900)
    parser.add_argument("--steps", type=int, default=4400, help="UNet + text encoder steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                        help="skip the prompt-following report at the end")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    started = time.perf_counter()

    log(f"drawing {args.images} pictures of {len(shapes.TRAINING)} combinations "
        f"({len(shapes.HELD_OUT)} held out)")
    images, shown = make_images(rng, args.images, shapes.TRAINING)
    vae_images, _ = make_images(rng, 4000, shapes.TRAINING, split_share=0.4)
    vae = train_vae(torch.cat([images[:4000], vae_images]), args.vae_steps, 16, args.seed)

    means, stds = encode(vae, images)
    scaling = 1.0 / means.std().item()
    vae.register_to_config(scaling_factor=scaling)
    log(f"encoded {len(images)} pictures to {tuple(means.shape[1:])} latents; scaling factor {scaling:.4f}")

    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(tokenizer)
    unet = build_unet()

    betas = zero_snr_betas()
    alphas_bar, snr = noise_levels(betas)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    log(f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters, text encoder "
        f"{sum(p.numel() for p in text_encoder.parameters()) / 1e6:.2f} M, VAE "
        f"{sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M")
    optimiser = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-2)
    schedule = warmup_cosine(optimiser, args.steps, warmup=100)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    generator = torch.Generator().manual_seed(args.seed + 1)
    unet_started = time.perf_counter()
    for step in range(1, args.steps + 1):
        index = torch.randint(len(means), (args.batch,), generator=generator)
        x0 = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)) * scaling
        captions = [training_caption(rng, *shown[i]) for i in index.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=TOKENS, truncation=True,
                        return_tensors="pt").input_ids
        loss = v_loss(unet, x0, text_encoder(ids)[0], alphas_bar, snr, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        decay = min(0.995, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for e, p in zip(ema.parameters(), live.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)
        if step % 100 == 0 or step == args.steps:
            elapsed = time.perf_counter() - unet_started
            log(f"unet step {step}/{args.steps}: loss {loss.item():.4f} "
                f"({elapsed:.0f} s, ~{elapsed / step * (args.steps - step) / 60:.0f} min left)")

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=betas.tolist(), prediction_type="v_prediction",
        timestep_spacing="trailing", steps_offset=1, algorithm_type="dpmsolver++",
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=ema_text.eval(), tokenizer=tokenizer, unet=ema_unet.eval(), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(args.out)
    log(f"wrote {args.out} after {(time.perf_counter() - started) / 60:.1f} min")
    if args.evaluate:
        from tools.evaluate_shapes import evaluate

        evaluate(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
