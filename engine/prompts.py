"""Step 1 of every mode, for the text: prompts encoded as AUTOMATIC1111 encodes them.

Each weighted run of the prompt (`dreambot.prompt`) is tokenized on its own; the tokens are cut
into chunks of the encoder's length less its start and end tokens (75 for CLIP), a BREAK starting
a new chunk; each chunk is encoded alone, each token's embedding scaled by its weight and the
chunk's mean restored; the chunks are joined along the sequence. Nothing is cut: a prompt past 75
tokens simply has more chunks. A prompt, its negative and every prompt sharing a pipeline call are
padded with empty chunks to the same length. Unweighted prompts of one chunk encode exactly as
diffusers encodes them.

SD 1.x and 2.x: the text encoder's output. SDXL, as diffusers' `encode_prompt` and A1111 do: each
chunk through both text encoders, each encoder's penultimate hidden states (each tokenizer padding
with its own token) weighted on their own and the two joined along the width; the pooled
embedding is the second encoder's, of the first chunk, unweighted (A1111's). An empty negative
prompt is zeros where the pipeline says so (`force_zeros_for_empty_prompt`), as diffusers and
A1111 make it: per prompt, so that a job sharing a call gets the picture it gets alone.

CLIP skip (A1111's, `clip_skip`: the engine's per-model setting, 1 = no skip) reads the prompt from
an earlier layer of the text encoder. SD 1.x and 2.x as A1111: the hidden states `clip_skip` from
the end, through the encoder's final layer norm; 1 is the encoder's output. SDXL as diffusers: the
hidden states `clip_skip + 1` from the end, with no layer norm; 1 is the penultimate layer, as
always. diffusers' own `clip_skip` counts the layers skipped, one less: its None is our 1, its 1
our 2; and it skips for the prompt only, where A1111 (and this module) skips for the negative
prompt too. The pooled embedding never changes.
"""

from __future__ import annotations

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from transformers import PreTrainedTokenizerBase

from dreambot.prompt import parse
from engine.embeddings import Embeddings, text_encoders

NONE = Embeddings()

_SDXL = (StableDiffusionXLPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline)


def sdxl(pipe: DiffusionPipeline) -> bool:
    """Whether this is an SDXL pipeline (txt2img, img2img or inpainting): two text encoders and a
    pooled embedding."""
    return isinstance(pipe, _SDXL)


def weighted(pipe: DiffusionPipeline) -> bool:
    """Whether this pipeline's prompts are encoded here: SD 1.x/2.x (one CLIP text encoder) and SDXL."""
    if sdxl(pipe):
        return bool(text_encoders(pipe))
    return getattr(pipe, "text_encoder_2", None) is None and len(text_encoders(pipe)) == 1


def chunks(pipe: DiffusionPipeline, text: str, embeddings: Embeddings = NONE,
           tokenizer: PreTrainedTokenizerBase | None = None) -> list[list[tuple[int, float]]]:
    """The prompt's (token, weight) pairs in chunks of the encoder's length less 2; at least one.
    An embedding's name, as a word, stands for its vectors' tokens. With the pipeline's first
    tokenizer unless told another (SDXL's second, whose tokens differ only in their padding)."""
    tokenizer = tokenizer or text_encoders(pipe)[0][1]
    size = tokenizer.model_max_length - 2
    cut: list[list[tuple[int, float]]] = [[]]
    for fragment in parse(text):
        if fragment.text is None:  # BREAK
            if cut[-1]:
                cut.append([])
            continue
        spelled = embeddings.spell(fragment.text)
        for token in tokenizer(spelled, add_special_tokens=False, truncation=False).input_ids:
            if len(cut[-1]) == size:
                cut.append([])
            cut[-1].append((token, fragment.weight))
    return cut


def reading(pipe: DiffusionPipeline, text: str, embeddings: Embeddings = NONE) -> tuple[int, int] | None:
    """How a prompt is read: its tokens and the chunks they take (BREAKs included); None for a
    pipeline whose prompts are not encoded here."""
    if not weighted(pipe):
        return None
    cut = chunks(pipe, text, embeddings)
    return sum(len(chunk) for chunk in cut), len(cut)


def count(pipe: DiffusionPipeline, *texts: str, embeddings: Embeddings = NONE) -> int:
    """How many chunks the longest of `texts` takes (jobs sharing a call must agree on it)."""
    return max(len(chunks(pipe, text, embeddings, tokenizer)) for text in texts
               for _, tokenizer, _ in text_encoders(pipe))


@torch.no_grad()
def encode(pipe: DiffusionPipeline, text: str, device: torch.device, length: int = 1,
           embeddings: Embeddings = NONE, *, clip_skip: int = 1) -> torch.Tensor:
    """The prompt's embeddings, (1, chunks × the encoder's length, width), padded to `length` chunks."""
    return encode_pooled(pipe, text, device, length, embeddings, clip_skip=clip_skip)[0]


@torch.no_grad()
def encode_pooled(pipe: DiffusionPipeline, text: str, device: torch.device, length: int = 1,
                  embeddings: Embeddings = NONE, *, clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt's embeddings, (1, chunks × the encoder's length, width: both encoders' on SDXL),
    padded to `length` chunks, read `clip_skip` layers from the end; and SDXL's pooled embedding,
    (1, projection), of the first chunk (None for SD 1.x/2.x)."""
    xl = sdxl(pipe)
    pooled = None
    joined = []
    encoders = text_encoders(pipe)
    for _, tokenizer, encoder in encoders:
        layers = encoder.config.num_hidden_layers
        if not 1 <= clip_skip <= layers:
            raise ValueError(f"CLIP skip {clip_skip} is out of range: this model's text encoder has {layers} layers")
        cut = chunks(pipe, text, embeddings, tokenizer)
        cut += [[] for _ in range(length - len(cut))]
        size = tokenizer.model_max_length
        use_mask = not xl and getattr(encoder.config, "use_attention_mask", False)
        encoded = []
        for index, chunk in enumerate(cut):
            tokens = [tokenizer.bos_token_id, *(token for token, _ in chunk), tokenizer.eos_token_id]
            weights = [1.0, *(weight for _, weight in chunk), 1.0]
            padding = size - len(tokens)
            tokens += [tokenizer.pad_token_id] * padding
            weights += [1.0] * padding
            ids = torch.tensor([tokens], device=device)
            if xl:  # diffusers' `StableDiffusionXLPipeline.encode_prompt`, for one chunk
                output = encoder(ids, output_hidden_states=True)
                if index == 0 and output[0].ndim == 2:  # the encoder with a projection: its pooled output
                    pooled = output[0]
                z = output.hidden_states[-(clip_skip + 1)]
            else:
                mask = torch.tensor([[1] * (size - padding) + [0] * padding], device=device) if use_mask else None
                if clip_skip == 1:
                    z = encoder(ids, attention_mask=mask)[0]
                else:
                    z = encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states[-clip_skip]
                    z = _final_layer_norm(encoder)(z)
            if any(weight != 1.0 for weight in weights):
                original_mean = z.mean()
                z = z * torch.tensor(weights, device=z.device, dtype=z.dtype).reshape(1, -1, 1)
                z = z * (original_mean / z.mean())
            encoded.append(z)
        joined.append(torch.cat(encoded, dim=1))
    # diffusers' dtype: the (last) text encoder's.
    embeds = torch.cat(joined, dim=-1).to(dtype=encoders[-1][2].dtype, device=device)
    return embeds, None if pooled is None else pooled.to(device=device)


def _final_layer_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    # transformers 5 has CLIPTextModel's layers on the model itself; before, under `text_model`
    # (which diffusers 0.42's own clip_skip still expects).
    return getattr(encoder, "text_model", encoder).final_layer_norm


@torch.no_grad()
def encode_negative(pipe: DiffusionPipeline, text: str, device: torch.device,
                    like: tuple[torch.Tensor, torch.Tensor | None], length: int = 1, embeddings: Embeddings = NONE,
                    *, clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A negative prompt's `encode_pooled`; an empty one zeros shaped `like` (a positive prompt's)
    where the pipeline says so (SDXL's `force_zeros_for_empty_prompt`), as diffusers and A1111 make it."""
    if not text and sdxl(pipe) and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        embeds, pooled = like
        return torch.zeros_like(embeds), None if pooled is None else torch.zeros_like(pooled)
    return encode_pooled(pipe, text, device, length, embeddings, clip_skip=clip_skip)


def guided(pipe: DiffusionPipeline, guidance_scale: float) -> bool:
    """Whether a call at this guidance runs the unconditional pass (diffusers'
    `do_classifier_free_guidance`): guidance above 1, on a UNet that does not take the guidance as
    an input (an LCM-distilled one does: `time_cond_proj_dim`). Unguided, each step is one UNet pass
    and the negative prompt plays no part: it is neither encoded nor counted in the prompts' length."""
    return guidance_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def arguments(pipe: DiffusionPipeline, prompts: list[str], negatives: list[str] | None, device: torch.device,
              embeddings: Embeddings = NONE, *, clip_skip: int = 1) -> dict[str, torch.Tensor]:
    """The prompt arguments of a pipeline call making one picture per entry of `prompts` (with the
    negative at the same place), all padded to one length: `prompt_embeds` and
    `negative_prompt_embeds`, and on SDXL `pooled_prompt_embeds` and `negative_pooled_prompt_embeds`.
    `negatives` None: an unguided call (`guided`), given the prompts' arguments only."""
    length = count(pipe, *prompts, *(negatives or ()), embeddings=embeddings)
    positive = [encode_pooled(pipe, text, device, length, embeddings, clip_skip=clip_skip) for text in prompts]
    negative = [encode_negative(pipe, text, device, positive[0], length, embeddings, clip_skip=clip_skip)
                for text in negatives or ()]
    given = {"prompt_embeds": torch.cat([embeds for embeds, _ in positive])}
    if negative:
        given["negative_prompt_embeds"] = torch.cat([embeds for embeds, _ in negative])
    if positive[0][1] is not None:
        given["pooled_prompt_embeds"] = torch.cat([pooled for _, pooled in positive])
        if negative:
            given["negative_pooled_prompt_embeds"] = torch.cat([pooled for _, pooled in negative])
    return given
