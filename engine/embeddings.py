"""Textual-inversion embeddings (A1111's, and diffusers'): every `.safetensors`, `.pt` and `.bin`
file in EMBEDDINGS_DIR (and the bundled model's own `embeddings/`), loaded at start by file stem.
A name is used where it appears as a word of a prompt or negative prompt (`easynegative`), as in
AUTOMATIC1111; "sunset" does not contain the embedding `sun`.

Files from outside are never unpickled unsafely: safetensors, or `torch.load(weights_only=True)`.
SD 1.x and 2.x (one CLIP text encoder: a file of one tensor) and SDXL (two: a file with `clip_l`
for the first and `clip_g` for the second, installed in both tokenizers under the same token
names). A file made for another model family, or another encoder's width, is skipped with a log
line saying why.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch
from diffusers import DiffusionPipeline
from tokenizers import AddedToken
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dreambot.adapters import nameable

log = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".pt", ".bin")
# What SDXL embedding files call the vectors for each text encoder: CLIP ViT-L, OpenCLIP ViT-bigG.
SDXL_KEYS = ("clip_l", "clip_g")


class EmbeddingError(ValueError):
    """A file that is not an embedding this model can use; the message says why."""


@dataclass
class Embeddings:
    """The embeddings installed in a pipeline's tokenizer and text encoder: name -> the tokens of
    its vectors. The tokens are spelled so that no prompt can type them (`<embedding:name:0>`); a
    name in a prompt becomes them only as a whole word (`spell`)."""

    tokens: dict[str, list[str]] = field(default_factory=dict)
    _words: re.Pattern | None = field(default=None, repr=False)
    _by_lower: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def spell(self, text: str) -> str:
        """The text with each embedding's name, as a whole word in any case, replaced by its tokens."""
        if not self.tokens:
            return text
        if self._words is None:  # CLIP reads "Sun" as "sun": so does the match
            names = sorted(self.tokens, key=len, reverse=True)
            self._words = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")(?![\w-])", re.I)
            self._by_lower = {name.lower(): tokens for name, tokens in self.tokens.items()}
        return self._words.sub(lambda match: "".join(self._by_lower[match[1].lower()]), text)


def text_encoders(pipe: DiffusionPipeline) -> list[tuple[str, PreTrainedTokenizerBase, PreTrainedModel]]:
    """The pipeline's CLIP tokenizers and text encoders, each named as an embedding file names its
    vectors: SDXL's `clip_l` (text_encoder) and `clip_g` (text_encoder_2); "" for the one of SD 1.x
    and 2.x. Empty when the pipeline has none."""
    first = getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)
    second = getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None)
    if second[1] is None:
        return [("", *first)] if None not in first else []
    return [(key, *pair) for key, pair in zip(SDXL_KEYS, (first, second), strict=True) if None not in pair]


def vectors(path: Path) -> dict[str, torch.Tensor]:
    """An embedding file's vectors, (count, width), by text encoder: {"": vectors} for one encoder,
    A1111's (`string_to_param` in a .pt, `emb_params` in a .safetensors) or diffusers' (one tensor
    under the token's name); {"clip_l": ..., "clip_g": ...} for SDXL's two."""
    if path.suffix == ".safetensors":
        data: dict = safetensors.torch.load_file(str(path), device="cpu")
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a pickle that needs more than tensors: never run it
            raise EmbeddingError(f"cannot be read safely (weights only): {error}") from None
    if isinstance(data, torch.Tensor):
        tensors = {"": data}
    elif not isinstance(data, dict):
        raise EmbeddingError(f"holds a {type(data).__name__}, not an embedding")
    elif "string_to_param" in data:
        tensors = {"": next(iter(data["string_to_param"].values()))}
    elif "emb_params" in data:
        tensors = {"": data["emb_params"]}
    elif set(SDXL_KEYS) & set(data):
        missing = [key for key in SDXL_KEYS if key not in data]
        if missing:
            raise EmbeddingError(f"holds an SDXL embedding without {' or '.join(missing)}: "
                                 "SDXL needs both clip_l and clip_g")
        tensors = {key: data[key] for key in SDXL_KEYS}
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        tensors = {"": next(iter(data.values()))}
    else:
        raise EmbeddingError(f"holds no embedding that this bot knows (keys: {', '.join(map(str, data))[:200]})")
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise EmbeddingError(f"holds a {type(tensor).__name__} where its {key or 'vectors'} should be")
        if tensor.ndim == 1:
            tensor = tensors[key] = tensor.unsqueeze(0)
        if tensor.ndim != 2 or not 1 <= tensor.shape[0] <= 75:
            raise EmbeddingError(f"has {key or 'vectors'} of shape {tuple(tensor.shape)}, not (count, width)")
    if len({tensor.shape[0] for tensor in tensors.values()}) > 1:
        counts = " and ".join(f"{tensor.shape[0]} {key} vectors" for key, tensor in tensors.items())
        raise EmbeddingError(f"has {counts}: they must be as many")
    return {key: tensor.float() for key, tensor in tensors.items()}


def _fitted(tensors: dict[str, torch.Tensor], encoders: list[tuple[str, PreTrainedTokenizerBase, PreTrainedModel]]
            ) -> list[torch.Tensor]:
    """The file's vectors for each of the model's text encoders, in their order, or EmbeddingError
    saying why they do not fit (another model family, another width)."""
    keys = [key for key, _, _ in encoders]
    if set(tensors) == {""} and keys != [""]:
        raise EmbeddingError("is an embedding for one text encoder (SD 1.x or 2.x); this SDXL model has two "
                             "and needs an SDXL embedding (clip_l and clip_g)")
    if "" not in tensors and keys == [""]:
        raise EmbeddingError("is an SDXL embedding (clip_l and clip_g); this model has one text encoder")
    fitted = []
    for key, _, encoder in encoders:
        tensor, width = tensors[key], encoder.get_input_embeddings().weight.shape[1]
        if tensor.shape[1] != width:
            what = f"has {key} vectors" if key else "has vectors"
            which = f"text encoder for {key}" if key else "text encoder"
            raise EmbeddingError(f"{what} {tensor.shape[1]} wide; this model's {which} takes {width} "
                                 "(it is for another model family)")
        fitted.append(tensor)
    return fitted


def install(pipe: DiffusionPipeline, folders: list[Path]) -> Embeddings:
    """Every embedding file in `folders`, added to the pipeline's tokenizers and text encoders (on
    SDXL, clip_l's vectors to the first and clip_g's to the second, under the same token names)."""
    installed = Embeddings()
    encoders = text_encoders(pipe)
    files = sorted(path for folder in folders if folder.is_dir() for path in folder.iterdir()
                   if path.suffix.lower() in SUFFIXES and path.is_file())
    if files and not encoders:
        log.warning("embeddings need a CLIP text encoder, which this model lacks; %d file(s) skipped", len(files))
        return installed
    for path in files:
        name = path.stem
        try:
            if name.lower() in (other.lower() for other in installed.tokens):
                raise EmbeddingError(f"has the name of another embedding ({name!r}); rename one of them")
            if not nameable(name):  # the bot's rule (`dreambot.adapters`): what it lists, the engine loads
                raise EmbeddingError("has a name no prompt can write (no < > : or surrounding spaces)")
            fitted = _fitted(vectors(path), encoders)
        except (EmbeddingError, OSError, RuntimeError) as error:
            log.warning("embedding %s %s; skipped", path, error)
            continue
        names = [f"<embedding:{name}:{i}>" for i in range(fitted[0].shape[0])]
        for (_, tokenizer, encoder), tensor in zip(encoders, fitted, strict=True):
            tokenizer.add_tokens([AddedToken(token, normalized=False) for token in names])
            ids = tokenizer.convert_tokens_to_ids(names)
            encoder.resize_token_embeddings(len(tokenizer))
            with torch.no_grad():
                table = encoder.get_input_embeddings().weight
                table[ids] = tensor.to(device=table.device, dtype=table.dtype)
        installed.tokens[name] = names
        log.info("embedding %s: %d vector(s) from %s", name, len(names), path)
    return installed
