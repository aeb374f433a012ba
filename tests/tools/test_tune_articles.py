"""Teaching a shapes model "an" (`tools.tune_articles`): the tuned model has train_shapes' tokenizer,
reads every other prompt exactly as before, starts "an" as "a", trains that one row only, repeatably."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from engine.tiny import byte_level_tokenizer
from tools import shapes
from tools.train_shapes import TOKENS, build_text_encoder, build_tokenizer
from tools.tune_articles import MODEL
from tools.tune_articles import main as tune

# The words of the captions before "an": "a" before every colour, as the bundled model was first trained.
OLD_WORDS = sorted({"a", "on", "background", "shape", *shapes.COLOURS, *shapes.SHAPES, *shapes.BACKGROUNDS})
# (Not "tan" or "cyan": a word that ends in "an" now ends in the "an" token, as in a model trained from scratch.)
PROMPTS = ["a red circle on a white background", "a orange square", "purple", "", "a sunny banana, blue sky",
           "circle on a gray background"]


@pytest.fixture(scope="module")
def old_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model with a tokenizer that has no "an" and a random text encoder for it."""
    folder = tmp_path_factory.mktemp("old") / "shapes"
    shutil.copytree(MODEL, folder)
    tokenizer = byte_level_tokenizer(TOKENS, OLD_WORDS)
    torch.manual_seed(0)
    shutil.rmtree(folder / "tokenizer")
    shutil.rmtree(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    build_text_encoder(tokenizer).to(torch.float16).save_pretrained(folder / "text_encoder")
    return folder


def run(model: Path, out: Path, *options: str) -> Path:
    assert tune([str(out), "--model", str(model), "--images", "8", "--batch", "4", "--no-evaluate", *options]) == 0
    return out


def read(model: Path, prompt: str) -> torch.Tensor:
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(model / "text_encoder", dtype=torch.float32)
    ids = tokenizer(prompt, padding="max_length", max_length=TOKENS, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder(ids)[0]


def test_untrained_every_prompt_reads_as_before_and_an_as_a(old_model: Path, tmp_path: Path) -> None:
    new = run(old_model, tmp_path / "new", "--steps", "0")
    assert CLIPTokenizer.from_pretrained(new / "tokenizer").get_vocab() == build_tokenizer().get_vocab()
    assert CLIPTokenizer.from_pretrained(old_model / "tokenizer").tokenize("an") == ["a", "n</w>"]
    for prompt in PROMPTS:
        assert torch.equal(read(new, prompt), read(old_model, prompt)), prompt
    assert torch.equal(read(new, "an orange circle on a white background"),
                       read(old_model, "a orange circle on a white background"))
    assert not torch.equal(read(old_model, "an orange circle on a white background"),
                           read(old_model, "a orange circle on a white background"))


def test_training_moves_the_new_row_only_and_repeats_with_its_seed(old_model: Path, tmp_path: Path) -> None:
    start = load_file(str(run(old_model, tmp_path / "start", "--steps", "0") / "text_encoder" / "model.safetensors"))
    a, b = (run(old_model, tmp_path / name, "--steps", "2") for name in ("a", "b"))
    assert (a / "text_encoder" / "model.safetensors").read_bytes() == \
        (b / "text_encoder" / "model.safetensors").read_bytes()
    tuned = load_file(str(a / "text_encoder" / "model.safetensors"))
    [table] = [name for name in tuned if name.endswith("token_embedding.weight")]
    an = build_tokenizer().convert_tokens_to_ids("an</w>")
    moved = (tuned[table] != start[table]).any(dim=1).nonzero().flatten().tolist()
    assert moved == [an]
    assert all(torch.equal(tuned[name], start[name]) for name in tuned if name != table)
    for part in ("unet", "vae"):  # written as they were
        [source] = (old_model / part).glob("*.safetensors")
        assert (a / part / source.name).read_bytes() == source.read_bytes(), part


def test_a_model_that_already_has_an_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to tune"):
        run(MODEL, tmp_path / "again")
    assert not (tmp_path / "again").exists()
