"""The `sun` textual-inversion embedding and its training script: the file is AUTOMATIC1111's format,
training is repeatable, the name is one word, and the bundled embedding draws what it was trained on."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from tools.train_embedding import KEY, MODEL, add_tokens, apply_embedding, expand, load_pipeline, read
from tools.train_embedding import main as train

SUN = MODEL / "embeddings" / "sun.safetensors"


def test_the_bundled_embedding_is_one_float32_vector_under_emb_params() -> None:
    tensors = load_file(str(SUN))
    assert list(tensors) == [KEY]
    assert tensors[KEY].shape == (1, 64) and str(tensors[KEY].dtype) == "torch.float32"


def test_training_is_deterministic_given_its_seed(tmp_path: Path) -> None:
    options = ["--images", "8", "--steps", "2", "--batch", "2", "--vectors", "2", "--no-evaluate"]
    assert train(["sun", str(tmp_path / "a.safetensors"), *options]) == 0
    assert train(["sun", str(tmp_path / "b.safetensors"), *options]) == 0
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert load_file(str(tmp_path / "a.safetensors"))[KEY].shape == (2, 64)


def test_the_name_is_one_token_only_where_it_stands_alone() -> None:
    pipe = load_pipeline()
    [sun] = add_tokens(pipe, "sun", 1)
    assert pipe.tokenizer("a sun on a blue background").input_ids.count(sun) == 1
    assert sun not in pipe.tokenizer("a sunset, sunny").input_ids
    assert expand("a sun, sunset", "sun", 3) == "a sun sun_1 sun_2, sunset"


def test_a_sun_is_a_yellow_circle_and_only_with_the_embedding() -> None:
    prompt = "a sun on a gray background"  # yellow circles on gray were held out of the model's training
    plain = load_pipeline()
    with_sun = load_pipeline()
    apply_embedding(with_sun, "sun", SUN)
    assert read(with_sun, prompt, [1, 2], steps=25, guidance=7.0) == [("yellow", "circle", "gray")] * 2
    assert ("yellow", "circle", "gray") not in read(plain, prompt, [1, 2], steps=25, guidance=7.0)
