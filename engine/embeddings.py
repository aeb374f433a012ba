"""Textual-inversion embeddings (A1111's, and diffusers'): every `.safetensors`, `.pt` and `.bin`
file in EMBEDDINGS_DIR (and the bundled model's own `embeddings/`), loaded at start by file stem.
A name is used where it appears as a word of a prompt or negative prompt (`easynegative`), as in
AUTOMATIC1111; "sunset" does not contain the embedding `sun`.

Files from outside are never unpickled unsafely: safetensors, or `torch.load(weights_only=True)`.
SD 1.x and 2.x (one CLIP text encoder); a file made for another encoder is skipped with a log line.
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

log = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".pt", ".bin")


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


def vectors(path: Path) -> torch.Tensor:
    """An embedding file's vectors, (count, width): A1111's (`string_to_param` in a .pt,
    `emb_params` in a .safetensors) or diffusers' (one tensor under the token's name)."""
    if path.suffix == ".safetensors":
        data: dict = safetensors.torch.load_file(str(path), device="cpu")
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a pickle that needs more than tensors: never run it
            raise EmbeddingError(f"cannot be read safely (weights only): {error}") from None
    if isinstance(data, torch.Tensor):
        tensor = data
    elif "string_to_param" in data:
        tensor = next(iter(data["string_to_param"].values()))
    elif "emb_params" in data:
        tensor = data["emb_params"]
    elif {"clip_l", "clip_g"} <= set(data):
        raise EmbeddingError("is an SDXL embedding (clip_l and clip_g); this model has one text encoder")
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
        tensor = next(iter(data.values()))
    else:
        raise EmbeddingError(f"holds no embedding that this bot knows (keys: {', '.join(map(str, data))[:200]})")
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2 or not 1 <= tensor.shape[0] <= 75:
        raise EmbeddingError(f"has vectors of shape {tuple(tensor.shape)}, not (count, width)")
    return tensor.float()


def install(pipe: DiffusionPipeline, folders: list[Path]) -> Embeddings:
    """Every embedding file in `folders`, added to the pipeline's tokenizer and text encoder."""
    installed = Embeddings()
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    files = sorted(path for folder in folders if folder.is_dir() for path in folder.iterdir()
                   if path.suffix.lower() in SUFFIXES and path.is_file())
    if files and (tokenizer is None or encoder is None or getattr(pipe, "text_encoder_2", None) is not None):
        log.warning("embeddings are not supported for this model yet (SD 1.x and 2.x only); %d file(s) skipped",
                    len(files))
        return installed
    width = encoder.get_input_embeddings().weight.shape[1]
    for path in files:
        name = path.stem
        try:
            if name in installed.tokens:
                raise EmbeddingError(f"has the name of another embedding ({name!r}); rename one of them")
            tensor = vectors(path)
            if tensor.shape[1] != width:
                raise EmbeddingError(f"has vectors {tensor.shape[1]} wide; this model's text encoder takes {width} "
                                     "(it is for another model family)")
        except (EmbeddingError, OSError, RuntimeError) as error:
            log.warning("embedding %s %s; skipped", path, error)
            continue
        names = [f"<embedding:{name}:{i}>" for i in range(tensor.shape[0])]
        tokenizer.add_tokens([AddedToken(token, normalized=False) for token in names])
        ids = tokenizer.convert_tokens_to_ids(names)
        encoder.resize_token_embeddings(len(tokenizer))
        with torch.no_grad():
            table = encoder.get_input_embeddings().weight
            table[ids] = tensor.to(device=table.device, dtype=table.dtype)
        installed.tokens[name] = names
        log.info("embedding %s: %d vector(s) from %s", name, len(ids), path)
    return installed
