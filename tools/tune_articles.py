"""Teach a shapes model the article "an": `python -m tools.tune_articles OUT [--model MODEL]`.

The bundled model was trained with "a" before every word ("a orange circle"), and its tokenizer had
no "an": "an orange circle" reached the text encoder as "a", "n" and the rest, and came out red.
This gives the model `tools.train_shapes`' tokenizer, which has "an" as one token, and trains that
token's input embedding, starting from "a"'s, on pictures captioned as `tools.train_shapes` captions
them ("an orange circle", sometimes "a orange circle"). The bundled model was made with
`python -m tools.tune_articles engine/models/shapes --threads 2` (the defaults: seed 0, 200 steps
of 16 pictures): 45 s of training on 2 idle cores (9 minutes with other work on them), then the
`tools.evaluate_shapes` report. OUT may be MODEL itself; only its tokenizer and text encoder are
rewritten (fp16). Deterministic given --seed on one machine.

Choices, and why:
- Only the new rows train, as in textual inversion (`tools.train_embedding`): the UNet, the VAE and
  every other row and layer of the text encoder stay as they were, bit for bit, so every prompt
  without "an" draws exactly what it drew before, and the `outline` LoRA (in the UNet) and the `sun`
  embedding (read by the text encoder), both trained against these weights, still mean what they
  meant. Training the whole text encoder would move every prompt's meaning a little.
- Token ids: every other word's id moves by one ("an" sorts between "a" and "background"), so rows
  are copied by token, not by position; the tokenizer is exactly the one a from-scratch run builds.
  One thing does change besides "an" itself: other text ending in "an" ("tan", "cyan"), which
  spells its letters out, now ends in the "an" token, as it would in a model trained from scratch.
- "an" starts as "a": before any training "an orange circle" already reads as "a orange circle".
  The training then makes it "an" from pictures: only pictures whose caption can hold an "an" (the
  orange ones, of the training combinations; the held-out ones stay unseen) give its row a gradient.
- The loss is `tools.train_shapes`' loss: v-prediction on the model's own zero-terminal-SNR schedule
  (its scheduler config's betas), uniform timesteps, min-SNR-5 weights; AdamW with a 5 % warm-up and
  cosine decay.

The bundled model before and after (`python -m tools.evaluate_shapes`, guidance 5, 20 steps, 4 seeds
a prompt): "an orange circle on a white background" came out red 4 times of 4 and is orange 4 of 4;
"an orange ..." over all 12 orange combinations, 0 of 48 orange before, 48 of 48 after; "a orange"
48 of 48 both times. "a COLOUR circle on a white background" is that colour 4 of 4 for every colour
before and after. The evaluation's captions now say "an orange", so its colour score went from 0.80
to 1.00 on held-out and on seen combinations; read with the old captions it was 1.00 before too, and
shape and background did not move (held out 0.90 and 1.00, seen 1.00 and 1.00). Untrained (--steps
0) the figures are already these: "an" as a copy of "a" reads as "a" does. The training moves it
off "a" (cosine 0.96) towards what "an" is in these pictures, which 4 seeds a prompt cannot tell.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTextModel, CLIPTokenizer

from tools import shapes
from tools.train_shapes import (
    build_text_encoder,
    build_tokenizer,
    encode,
    make_images,
    noise_levels,
    training_caption,
    v_loss,
    warmup_cosine,
)

MODEL = Path(__file__).resolve().parent.parent / "engine" / "models" / "shapes"
# Which known token each new one starts from.
STARTS = {"an</w>": "a</w>"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def grow(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> tuple[CLIPTokenizer, CLIPTextModel, list[int]]:
    """`tools.train_shapes`' tokenizer and a text encoder for it that reads every old token as
    `text_encoder` did and each new one as its STARTS token; the new tokens' ids."""
    new = build_tokenizer()
    old_vocab, new_vocab = tokenizer.get_vocab(), new.get_vocab()
    if missing := sorted(set(old_vocab) - set(new_vocab)):
        raise ValueError(f"the model's tokenizer has tokens train_shapes' has not ({missing[:5]}): not a shapes model")
    added = sorted((token for token in new_vocab if token not in old_vocab), key=new_vocab.get)
    if not added:
        raise ValueError("the model's tokenizer already has every word train_shapes' has: nothing to tune")
    if unknown := [token for token in added if token not in STARTS]:
        raise ValueError(f"no starting token for the new tokens {unknown}: add them to STARTS")

    grown = build_text_encoder(new)
    table = next(name for name, p in grown.named_parameters() if p is grown.get_input_embeddings().weight)
    order = [old_vocab[STARTS.get(token, token)] for token in sorted(new_vocab, key=new_vocab.get)]
    rows = text_encoder.get_input_embeddings().weight.detach()[order].clone()
    grown.load_state_dict({**text_encoder.state_dict(), table: rows})
    return new, grown, [new_vocab[token] for token in added]


def tune(pipe: StableDiffusionPipeline, ids: list[int], *, images: int, steps: int, batch: int, lr: float,
         seed: int) -> None:
    """Train the input-embedding rows `ids` of `pipe`'s text encoder, nothing else, in place."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer, text_encoder, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    for model in (text_encoder, unet, vae):
        model.requires_grad_(False).eval()
    embedding = text_encoder.get_input_embeddings()
    rows = torch.nn.Parameter(embedding.weight[ids].detach().clone())
    slot = torch.full((embedding.num_embeddings,), -1)
    slot[ids] = torch.arange(len(ids))

    # The frozen table looks every token up; a hook puts the trainable rows in where the new ids are,
    # so nothing else can move and the gradient reaches only `rows`.
    def substitute(module, inputs, output):
        index = slot[inputs[0]]
        return torch.where((index >= 0)[..., None], rows[index.clamp(min=0)], output)

    hook = embedding.register_forward_hook(substitute)
    words = {token.removesuffix("</w>") for token in tokenizer.convert_ids_to_tokens(ids)}
    combinations = [c for c in shapes.TRAINING if set(shapes.caption(*c).split()) & words]
    log(f"drawing and encoding {images} pictures of the {len(combinations)} training combinations "
        f"whose captions have {sorted(words)}")
    pictures, shown = make_images(rng, images, combinations)
    means, stds = encode(vae, pictures)
    scaling = vae.config.scaling_factor

    alphas_bar, snr = noise_levels(torch.tensor(pipe.scheduler.config.trained_betas, dtype=torch.float64))

    optimiser = torch.optim.AdamW([rows], lr=lr, weight_decay=0.0)
    schedule = warmup_cosine(optimiser, max(1, steps), warmup=max(1, steps // 20))
    generator = torch.Generator().manual_seed(seed + 1)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(len(means), (batch,), generator=generator)
        x0 = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)) * scaling
        captions = [training_caption(rng, *shown[i]) for i in index.tolist()]
        input_ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
        loss = v_loss(unet, x0, text_encoder(input_ids)[0], alphas_bar, snr, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            elapsed = time.perf_counter() - started
            log(f"step {step}/{steps}: loss {loss.item():.4f} ({elapsed:.0f} s, "
                f"~{elapsed / step * (steps - step) / 60:.1f} min left)")

    hook.remove()
    with torch.no_grad():
        embedding.weight[ids] = rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.tune_articles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write the model to (may be --model itself)")
    parser.add_argument("--model", type=Path, default=MODEL, help="diffusers folder (default: the bundled shapes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=1024, help="training pictures")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false",
                        help="skip the prompt-following report at the end")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    # float32: the model is saved in fp16, which a CPU runs slowly; fp16 -> fp32 -> fp16 is exact.
    pipe = StableDiffusionPipeline.from_pretrained(str(args.model), dtype=torch.float32)
    pipe.tokenizer, pipe.text_encoder, ids = grow(pipe.tokenizer, pipe.text_encoder)
    tune(pipe, ids, images=args.images, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed)

    if args.out.resolve() != args.model.resolve():
        shutil.copytree(args.model, args.out, dirs_exist_ok=True)
    shutil.rmtree(args.out / "tokenizer")
    shutil.rmtree(args.out / "text_encoder")
    pipe.tokenizer.save_pretrained(args.out / "tokenizer")
    pipe.text_encoder.to(torch.float16).save_pretrained(args.out / "text_encoder")
    log(f"wrote {args.out} after {(time.perf_counter() - started) / 60:.1f} min")
    if args.evaluate:
        from tools.evaluate_shapes import evaluate

        evaluate(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
