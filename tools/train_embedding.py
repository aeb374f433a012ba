"""Train a textual-inversion embedding for the bundled `shapes` model: `python -m tools.train_embedding NAME OUT`.

Textual inversion (Gal et al. 2022) teaches a frozen model a new word by training nothing but that
word's input embedding. Here the word is `sun` and the pictures are yellow circles, so that "a sun
on a blue background" draws a yellow circle on blue, a word the model never saw, learned from
pictures alone. The bundled `engine/models/shapes/embeddings/sun.safetensors` was made with
`python -m tools.train_embedding sun engine/models/shapes/embeddings/sun.safetensors` (the engine
installs every file in the model's `embeddings/` folder at start). Deterministic given --seed on one
machine; under a minute on 2 idle cores, training and evaluation together.

Choices, and why:
- The name is added to the tokenizer as `AddedToken(name, single_word=True, normalized=False)`: it
  is one token wherever it stands alone, while "sunset" still encodes as its bytes. With
  `--vectors N` the name stands for N tokens (NAME, NAME_1, ... NAME_{N-1}), as AUTOMATIC1111 does.
- Only the new rows train; the text encoder, UNet and VAE stay frozen, so every other prompt draws
  exactly what it drew before. The rows start from a neutral word's embedding ("shape": "a shape"
  is the model's phrase for any colour and any shape), not from "yellow" or "circle", so that what
  the vectors end up meaning comes from the pictures (untrained, `--steps 0`, "a sun on a BG
  background" is a yellow circle on BG 1 time in 16).
- The loss is `tools.train_shapes`' loss: v-prediction on its zero-terminal-SNR schedule (read back
  from the model's scheduler config), uniform timesteps, min-SNR-5 weights.
- Pictures are `tools.shapes` yellow circles of every size and place it draws, on all four
  backgrounds, captioned in the model's own style: mostly the full sentence, otherwise "a sun" or
  bare words, so the name means "yellow circle" whatever the rest of the prompt says. No empty
  captions: without the name in it, a caption gives its rows no gradient.
- The output is AUTOMATIC1111's safetensors embedding format: one key, "emb_params", a float32
  tensor of shape (vectors, hidden size); diffusers' `load_textual_inversion` reads it too.
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken

from tools import shapes
from tools.train_shapes import encode, noise_levels, v_loss, warmup_cosine

MODEL = Path(__file__).resolve().parent.parent / "engine" / "models" / "shapes"
KEY = "emb_params"
COLOUR, SHAPE = "yellow", "circle"  # what the pictures show, and what the evaluation expects


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_pipeline(model: Path | str = MODEL) -> StableDiffusionPipeline:
    """The model as diffusers loads it, in float32: it is saved in fp16, which a CPU runs slowly."""
    pipe = StableDiffusionPipeline.from_pretrained(str(model), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def token_names(name: str, vectors: int) -> list[str]:
    return [name] + [f"{name}_{i}" for i in range(1, vectors)]


def expand(prompt: str, name: str, vectors: int) -> str:
    """The prompt with the name, where it stands alone, replaced by its tokens (only if vectors > 1)."""
    if vectors == 1:
        return prompt
    return re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", " ".join(token_names(name, vectors)), prompt)


def add_tokens(pipe: StableDiffusionPipeline, name: str, vectors: int) -> list[int]:
    """Add the name's tokens to the tokenizer and a row each to the text encoder; their ids."""
    names = token_names(name, vectors)
    # single_word: "sunset" keeps encoding as bytes; normalized=False: matched on the text as written.
    added = pipe.tokenizer.add_tokens([AddedToken(n, single_word=True, normalized=False) for n in names])
    if added != vectors:
        raise ValueError(f"{name!r} is already a token of this tokenizer")
    # No mean resizing: every new row is set (from the file, or by training) right after.
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)
    return pipe.tokenizer.convert_tokens_to_ids(names)


def apply_embedding(pipe: StableDiffusionPipeline, name: str, path: Path) -> int:
    """Teach a pipeline the embedding saved at `path` under `name`; the number of vectors."""
    vectors = load_file(str(path))[KEY]
    ids = add_tokens(pipe, name, len(vectors))
    weight = pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = vectors.to(weight.dtype)
    return len(vectors)


def training_caption(rng: random.Random, name: str, background: str) -> str:
    """60 % the full sentence, 20 % "a sun", 20 % bare words ("sun", "sun blue background")."""
    draw = rng.random()
    if draw < 0.6:
        return f"a {name} on a {background} background"
    if draw < 0.8:
        return f"a {name}"
    return name if rng.random() < 0.5 else f"{name} {background} background"


def draw_pictures(rng: random.Random, count: int) -> tuple[torch.Tensor, list[str]]:
    """`count` yellow circles as a [-1, 1] tensor, backgrounds in turn, with the background each shows."""
    backgrounds = list(itertools.islice(itertools.cycle(shapes.BACKGROUNDS), count))
    pictures = [np.asarray(shapes.draw(COLOUR, SHAPE, background, rng)) for background in backgrounds]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1, backgrounds


def train(pipe: StableDiffusionPipeline, name: str, *, vectors: int, init_token: str, images: int, steps: int,
          batch: int, lr: float, seed: int) -> torch.Tensor:
    """The trained (vectors, hidden) embedding; `pipe` is left with its tokens added and rows set."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer, text_encoder, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    for model in (text_encoder, unet, vae):
        model.requires_grad_(False).eval()

    init_ids = tokenizer(init_token, add_special_tokens=False).input_ids
    if len(init_ids) != 1:
        raise ValueError(f"--init-token {init_token!r} is {len(init_ids)} tokens, not one")
    ids = add_tokens(pipe, name, vectors)
    embedding = text_encoder.get_input_embeddings()
    rows = torch.nn.Parameter(embedding.weight[init_ids[0]].detach().clone().repeat(vectors, 1))
    first = ids[0]  # added tokens get consecutive ids

    # The frozen table looks every token up; a hook puts the trainable rows in where the new ids are,
    # so nothing else can move and the gradient reaches only `rows`.
    def substitute(module, inputs, output):
        mask = inputs[0] >= first
        return torch.where(mask[..., None], rows[(inputs[0] - first).clamp(min=0)], output)

    hook = embedding.register_forward_hook(substitute)

    log(f"drawing and encoding {images} pictures of {COLOUR} {SHAPE}s")
    pictures, backgrounds = draw_pictures(rng, images)
    means, stds = encode(vae, pictures)
    scaling = vae.config.scaling_factor

    # The schedule the model was trained on, from the betas its scheduler config carries.
    alphas_bar, snr = noise_levels(torch.tensor(pipe.scheduler.config.trained_betas, dtype=torch.float64))
    length = tokenizer.model_max_length

    optimiser = torch.optim.AdamW([rows], lr=lr, weight_decay=0.0)
    schedule = warmup_cosine(optimiser, max(1, steps), warmup=max(1, steps // 20))  # --steps 0: the start alone
    generator = torch.Generator().manual_seed(seed + 1)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(len(means), (batch,), generator=generator)
        x0 = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)) * scaling
        captions = [expand(training_caption(rng, name, backgrounds[i]), name, vectors) for i in index.tolist()]
        input_ids = tokenizer(captions, padding="max_length", max_length=length, truncation=True,
                              return_tensors="pt").input_ids
        loss = v_loss(unet, x0, text_encoder(input_ids)[0], alphas_bar, snr, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            elapsed = time.perf_counter() - started
            log(f"step {step}/{steps}: loss {loss.item():.4f}, |rows| {rows.norm(dim=1).mean().item():.3f} "
                f"({elapsed:.0f} s, ~{elapsed / step * (steps - step) / 60:.1f} min left)")

    hook.remove()
    with torch.no_grad():
        embedding.weight[ids] = rows
    return rows.detach().clone().float()


@torch.no_grad()
def read(pipe: StableDiffusionPipeline, prompt: str, seeds: list[int], steps: int, guidance: float) -> list[tuple]:
    """What the oracle sees in the pictures of `prompt`, one per seed."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    images = pipe([prompt] * len(seeds), num_inference_steps=steps, guidance_scale=guidance,
                  generator=generators).images
    return [shapes.classify(image) for image in images]


def evaluate(name: str, path: Path, model: Path | str = MODEL, seeds: int = 4, steps: int = 25,
             guidance: float = 7.0) -> tuple[int, int]:
    """Generate "a NAME on a BG background" from a freshly loaded model with the embedding, then
    without it (the name as plain bytes); print and return how many came out a yellow circle on BG."""
    scores = []
    for label, embedded in (("with the embedding", True), ("control, no embedding", False)):
        pipe = load_pipeline(model)
        vectors = apply_embedding(pipe, name, path) if embedded else 1
        hits, total, seen_all = 0, 0, []
        for background in shapes.BACKGROUNDS:
            prompt = f"a {name} on a {background} background"
            seen = read(pipe, expand(prompt, name, vectors), list(range(seeds)), steps, guidance)
            good = sum(s == (COLOUR, SHAPE, background) for s in seen)
            hits, total = hits + good, total + len(seen)
            seen_all += seen
            print(f"  {label}: {prompt!r}: {good}/{len(seen)} {COLOUR} {SHAPE} on {background}"
                  f"  {[' '.join(str(x) for x in s) for s in seen]}", flush=True)
        colours = sum(s[0] == COLOUR for s in seen_all)
        circles = sum(s[1] == SHAPE for s in seen_all)
        print(f"{label}: {hits}/{total} right ({colours}/{total} {COLOUR}, {circles}/{total} {SHAPE}s; "
              f"{steps} steps, guidance {guidance:g})", flush=True)
        scores.append(hits)
    return scores[0], scores[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.train_embedding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="sun", help="the new word (default: sun)")
    parser.add_argument("out", nargs="?", type=Path, help="safetensors file to write "
                        "(default: engine/models/shapes/embeddings/NAME.safetensors)")
    parser.add_argument("--model", type=Path, default=MODEL, help="diffusers folder (default: the bundled shapes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vectors", type=int, default=1, help="embedding vectors the name stands for")
    parser.add_argument("--init-token", default="shape", help="one-token word whose embedding the rows start from")
    parser.add_argument("--images", type=int, default=1024, help="training pictures")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--eval-seeds", type=int, default=4, help="pictures per background in the evaluation")
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                        help="skip the report at the end")
    args = parser.parse_args(argv)
    out = args.out or args.model / "embeddings" / f"{args.name}.safetensors"

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pipe = load_pipeline(args.model)
    rows = train(pipe, args.name, vectors=args.vectors, init_token=args.init_token, images=args.images,
                 steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({KEY: rows.contiguous()}, str(out))
    log(f"wrote {out} ({out.stat().st_size} bytes, {KEY} {tuple(rows.shape)}) "
        f"after {(time.perf_counter() - started) / 60:.1f} min")
    if args.evaluate:
        evaluate(args.name, out, args.model, seeds=args.eval_seeds)
        log(f"done after {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
