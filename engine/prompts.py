"""Step 1 of every mode, for the text: prompts encoded as AUTOMATIC1111 encodes them.

Each weighted run of the prompt (`dreambot.prompt`) is tokenized on its own; the tokens are cut
into chunks of the encoder's length less its start and end tokens (75 for CLIP), a BREAK starting
a new chunk; each chunk is encoded alone, each token's embedding scaled by its weight and the
chunk's mean restored; the chunks are joined along the sequence. Nothing is cut: a prompt past 75
tokens simply has more chunks. A prompt, its negative and every prompt sharing a pipeline call are
padded with empty chunks to the same length. Unweighted prompts of one chunk encode exactly as
diffusers encodes them.

SD 1.x and 2.x (one CLIP text encoder). SDXL pipelines still take the prompt text as it is.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from dreambot.prompt import parse
from engine.embeddings import Embeddings

NONE = Embeddings()


def weighted(pipe: DiffusionPipeline) -> bool:
    """Whether this pipeline's prompts are encoded here (one CLIP text encoder)."""
    return getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "text_encoder_2", None) is None \
        and getattr(pipe, "tokenizer", None) is not None


def chunks(pipe: DiffusionPipeline, text: str, embeddings: Embeddings = NONE) -> list[list[tuple[int, float]]]:
    """The prompt's (token, weight) pairs in chunks of the encoder's length less 2; at least one.
    An embedding's name, as a word, stands for its vectors' tokens."""
    tokenizer = pipe.tokenizer
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


def count(pipe: DiffusionPipeline, *texts: str, embeddings: Embeddings = NONE) -> int:
    """How many chunks the longest of `texts` takes (jobs sharing a call must agree on it)."""
    return max(len(chunks(pipe, text, embeddings)) for text in texts)


@torch.no_grad()
def encode(pipe: DiffusionPipeline, text: str, device: torch.device, length: int = 1,
           embeddings: Embeddings = NONE) -> torch.Tensor:
    """The prompt's embeddings, (1, chunks × the encoder's length, width), padded to `length` chunks."""
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    cut = chunks(pipe, text, embeddings)
    cut += [[] for _ in range(length - len(cut))]
    size = tokenizer.model_max_length
    use_mask = getattr(encoder.config, "use_attention_mask", False)
    encoded = []
    for chunk in cut:
        tokens = [tokenizer.bos_token_id, *(token for token, _ in chunk), tokenizer.eos_token_id]
        weights = [1.0, *(weight for _, weight in chunk), 1.0]
        padding = size - len(tokens)
        tokens += [tokenizer.pad_token_id] * padding
        weights += [1.0] * padding
        ids = torch.tensor([tokens], device=device)
        mask = torch.tensor([[1] * (size - padding) + [0] * padding], device=device) if use_mask else None
        z = encoder(ids, attention_mask=mask)[0]
        if any(weight != 1.0 for weight in weights):
            original_mean = z.mean()
            z = z * torch.tensor(weights, device=device, dtype=z.dtype).reshape(1, -1, 1)
            z = z * (original_mean / z.mean())
        encoded.append(z)
    return torch.cat(encoded, dim=1).to(dtype=encoder.dtype, device=device)


def embedded(pipe: DiffusionPipeline, prompts: list[str], negatives: list[str], device: torch.device,
             embeddings: Embeddings = NONE) -> tuple[torch.Tensor, torch.Tensor]:
    """The embeddings of one picture's prompt and negative per entry, all padded to one length."""
    length = count(pipe, *prompts, *negatives, embeddings=embeddings)
    positive = torch.cat([encode(pipe, text, device, length, embeddings) for text in prompts])
    negative = torch.cat([encode(pipe, text, device, length, embeddings) for text in negatives])
    return positive, negative
