"""The shapes world and its training script: the oracle reads pictures right, outlines as well as filled
shapes, and tells one from the other; captions use articles as people write them; training is repeatable."""

from __future__ import annotations

import random
from pathlib import Path

from tools import shapes
from tools.train_shapes import build_tokenizer, training_caption
from tools.train_shapes import main as train


def test_the_oracle_reads_drawn_pictures() -> None:
    rng = random.Random(5)
    hits = [0, 0, 0]
    for _ in range(300):
        combination = rng.choice(shapes.COMBINATIONS)
        seen = shapes.classify(shapes.draw(*combination, rng))
        hits = [h + (s == c) for h, s, c in zip(hits, seen, combination)]
    assert all(h >= 0.99 * 300 for h in hits), hits


def test_the_oracle_sees_no_shape_on_a_plain_picture() -> None:
    rng = random.Random(1)
    plain = shapes.draw("red", "circle", "white", rng).resize((1, 1)).resize((64, 64))
    assert shapes.classify(plain)[:2] == (None, None)


def test_the_oracle_reads_every_drawn_outline_and_finds_it_hollow() -> None:
    rng = random.Random(7)
    for combination in shapes.COMBINATIONS:
        for _ in range(3):  # sizes and places vary
            outline = shapes.draw(*combination, rng, outline=True)
            assert shapes.classify(outline) == combination, combination
            assert shapes.hollow(outline) is True, combination


def test_the_oracle_finds_every_drawn_filled_shape_not_hollow() -> None:
    rng = random.Random(8)
    for combination in shapes.COMBINATIONS:
        for _ in range(3):
            filled = shapes.draw(*combination, rng)
            # None where the oracle sees no shape at all: a colour jittered to within 80 of its background.
            assert shapes.hollow(filled) is (False if shapes.classify(filled)[1] else None), combination


def test_an_outline_is_the_edge_of_the_shape_the_same_draws_would_fill() -> None:
    import numpy as np

    for seed in range(3):
        filled = np.asarray(shapes.draw("red", "triangle", "white", random.Random(seed)), dtype=float)
        outline = np.asarray(shapes.draw("red", "triangle", "white", random.Random(seed), outline=True), dtype=float)
        white = np.asarray(shapes.BACKGROUNDS["white"], dtype=float)
        painted = np.linalg.norm(outline - white, axis=-1) > 80
        inside = np.linalg.norm(filled - white, axis=-1) > 80
        assert painted.any() and not (painted & ~inside).any()  # the stroke lies within the filled shape
        assert painted.sum() < inside.sum()


def test_the_oracle_sees_nothing_hollow_on_a_plain_picture() -> None:
    plain = shapes.draw("red", "circle", "white", random.Random(1)).resize((1, 1)).resize((64, 64))
    assert shapes.hollow(plain) is None


def test_held_out_combinations_are_never_trained_on() -> None:
    assert not set(shapes.HELD_OUT) & set(shapes.TRAINING)
    assert set(shapes.HELD_OUT) <= set(shapes.COMBINATIONS)
    assert all(colour != background for colour, _, background in shapes.COMBINATIONS)
    # Every word of a held-out caption is still taught by some training caption.
    for colour, shape, background in shapes.HELD_OUT:
        assert any(c == colour for c, _, _ in shapes.TRAINING)
        assert any(s == shape for _, s, _ in shapes.TRAINING)
        assert any(b == background for _, _, b in shapes.TRAINING)


def test_captions_write_the_article_as_english_does() -> None:
    assert shapes.caption("orange", "circle", "white") == "an orange circle on a white background"
    assert shapes.caption("red", "square", "gray") == "a red square on a gray background"
    assert shapes.caption("orange", None, "blue") == "an orange shape on a blue background"
    assert shapes.caption("orange", None, None) == "an orange shape"
    assert shapes.caption(None, "triangle", None) == "a triangle"
    assert shapes.caption(None, None, "black") == "a black background"
    # The rule is the next word's, wherever the article stands, not a list of this world's words.
    assert shapes.caption("red", "circle", "indigo") == "a red circle on an indigo background"
    assert shapes.caption(None, None, "amber") == "an amber background"
    assert shapes.caption(None, "oval", None) == "an oval"
    assert shapes.caption("orange", "circle", "white", keywords=True) == "orange circle white background"


def test_training_captions_write_an_mostly_and_a_sometimes() -> None:
    rng = random.Random(3)
    orange = [training_caption(rng, "orange", "circle", "white") for _ in range(2000)]
    right, wrong = sum(c.startswith("an orange") for c in orange), sum(c.startswith("a orange") for c in orange)
    assert 0.1 < wrong / (right + wrong) < 0.3, (right, wrong)
    assert not any(" an " in f" {training_caption(rng, 'red', 'square', 'gray')} " for _ in range(500))


def test_every_caption_word_is_one_token() -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer("a purple triangle on a gray background").input_ids
    assert len(ids) == 2 + 7
    assert tokenizer("an orange circle on a white background").input_ids[1] != tokenizer("a").input_ids[1]
    assert len(tokenizer("an orange circle on a white background").input_ids) == 2 + 7
    assert tokenizer("another unknown word").input_ids  # other text still encodes, byte by byte


def test_training_is_deterministic_given_its_seed(tmp_path: Path) -> None:
    options = ["--images", "48", "--vae-steps", "2", "--steps", "2", "--batch", "4", "--no-evaluate"]
    assert train([str(tmp_path / "a"), *options]) == 0
    assert train([str(tmp_path / "b"), *options]) == 0
    for part in ("unet", "vae", "text_encoder"):
        [a] = (tmp_path / "a" / part).glob("*.safetensors")
        [b] = (tmp_path / "b" / part).glob("*.safetensors")
        assert a.read_bytes() == b.read_bytes(), part
    assert (tmp_path / "a" / "scheduler" / "scheduler_config.json").read_text() == \
        (tmp_path / "b" / "scheduler" / "scheduler_config.json").read_text()
