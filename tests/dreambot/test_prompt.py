"""AUTOMATIC1111's prompt language, parsed as A1111 parses it, refused where A1111 would guess."""

from __future__ import annotations

import re

import pytest

from dreambot.prompt import Fragment, Lora, loras, names_word, parse, read_as
from dreambot.request import GenerateRequest, InvalidRequest, Limits


def weights(prompt: str) -> list[tuple[str | None, float]]:
    return [(fragment.text, round(fragment.weight, 4)) for fragment in parse(prompt)]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a red circle", [("a red circle", 1.0)]),
    ("(a red circle:1.0) on a blue background", [("a red circle on a blue background", 1.0)]),
    ("(red) circle", [("red", 1.1), (" circle", 1.0)]),
    ("((red)) circle", [("red", 1.21), (" circle", 1.0)]),
    ("[red] circle", [("red", round(1 / 1.1, 4)), (" circle", 1.0)]),
    ("(red:1.4) circle", [("red", 1.4), (" circle", 1.0)]),
    ("((red:1.5) circle)", [("red", 1.65), (" circle", 1.1)]),  # nested weights multiply
    ("(red : 0.5)", [("red ", 0.5)]),  # the space is A1111's too; the tokenizer drops it
    (r"a \(literal\) \[word\] back\\slash", [("a (literal) [word] back\\slash", 1.0)]),
    ("(style: anime)", [("style: anime", 1.1)]),  # a colon before words is text, as in A1111
    ("a red circle BREAK on blue", [("a red circle", 1.0), (None, 1.0), ("on blue", 1.0)]),
    ("", [("", 1.0)]),
])
def test_weights_are_read_as_automatic1111_reads_them(prompt: str, expected: list) -> None:
    assert weights(prompt) == expected


@pytest.mark.parametrize(("prompt", "message"), [
    ("(red circle", "opens a bracket it never closes: “(red circle”"),
    ("a [blue background", "opens a bracket it never closes"),
    ("red) circle", "closes a bracket that was never opened: “red)”"),
    ("red] circle", "closes a bracket that was never opened"),
    ("(red:1.2.3)", "has a weight that is not a number"),
    ("(red:4)", "has the weight 4; weights go from 0 to 3"),
    ("(red:-1)", "has the weight -1; weights go from 0 to 3"),
])
def test_bad_brackets_and_weights_say_where(prompt: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse(prompt)


def test_a_request_with_bad_syntax_is_refused_naming_which_text() -> None:
    with pytest.raises(InvalidRequest, match="The negative prompt opens a bracket"):
        GenerateRequest(prompt="a fox", negative_prompt="(blurry", seed=1).validated(Limits())
    assert Fragment("x").weight == 1.0


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a fox <lora:outline:1>", (Lora("outline", 1.0),)),
    ("<lora:outline> a fox", (Lora("outline", 1.0),)),  # the weight defaults to 1
    ("a <LORA:pixel-art:0.8>, <lora:detail_v2:-1.5> fox", (Lora("pixel-art", 0.8), Lora("detail_v2", -1.5))),
    ("a fox <lora:x:3> <lora:y:-2>", (Lora("x", 3.0), Lora("y", -2.0))),  # the bounds themselves
    ("a fox, <not a tag> and <", ()),
])
def test_lora_tags_are_read_and_are_not_text(prompt: str, expected: tuple) -> None:
    assert loras(prompt) == expected
    assert all("lora" not in (fragment.text or "").lower() for fragment in parse(prompt))


@pytest.mark.parametrize(("prompt", "message"), [
    ("a fox <lora:outline:3.5>", "“<lora:outline:3.5>” has the weight 3.5; a LoRA's weight goes from -2 to 3"),
    ("a fox <lora:outline:-2.1>", "weight goes from -2 to 3"),
    ("a fox <lora:outline:strong>", "“<lora:outline:strong>” has a weight that is not a number"),
    ("a fox <lora:outline:nan>", "weight goes from -2 to 3"),
    ("a fox <lora::1>", "“<lora::1>” names no LoRA"),
    ("a fox <lora:../../etc/x:1>", "names no LoRA"),
    ("a fox <lora:outline:1", "the LoRA tag “<lora:outline:1” is never closed"),
    ("<lora:a:1> <lora:A:0.5>", "names the LoRA “A” twice"),
    ("<lora:a> <lora:b> <lora:c> <lora:d> <lora:e>", "names 5 LoRAs; at most 4 can be used at once"),
    (f"<lora:{'x' * 101}:1>", "names no LoRA"),
])
def test_bad_lora_tags_say_what_is_wrong(prompt: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        loras(prompt)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        GenerateRequest(prompt, seed=1).validated(Limits())


def test_loras_belong_in_the_prompt_and_shape_the_batch() -> None:
    with pytest.raises(InvalidRequest, match="LoRA tags go in the prompt, not the negative prompt"):
        GenerateRequest("a fox", negative_prompt="<lora:blur:1>", seed=1).validated(Limits())
    plain, zero = GenerateRequest("a fox"), GenerateRequest("a fox <lora:x:0>")
    assert zero.loras == () and zero.batch_key() == plain.batch_key()  # weight 0 changes nothing
    one, other = GenerateRequest("a <lora:x:1> fox"), GenerateRequest("a fox <lora:X:0.5>")
    assert one.batch_key() != plain.batch_key() and one.batch_key() != other.batch_key()
    assert GenerateRequest("<lora:b><lora:a:2>").batch_key() == GenerateRequest("<lora:a:2> <lora:b:1>").batch_key()


def test_an_embedding_name_is_a_whole_word_outside_lora_tags() -> None:
    assert names_word("a sun, x", "sun") and names_word("(SUN:1.2)", "sun")
    assert not names_word("a sunset", "sun") and not names_word("sun-dried", "sun")
    assert not names_word("a fox <lora:sun:1>", "sun")
    # As the text encoder reads it: runs of one weight are joined, whatever brackets split them.
    for hidden in ("easy[]negative", "easy()negative", "(easy)(negative)", "easy<lora:x:1>negative"):
        assert names_word(hidden, "easynegative"), hidden
    assert not names_word("(easy:1.2)negative", "easynegative")  # two weights: two runs, as the engine sees
    assert read_as("a nu<lora:x:0>de, [b]") == ["a nude, ", "b"]


def test_a_tag_is_not_counted_in_the_prompt_length() -> None:
    limits = Limits(max_prompt_length=10)
    GenerateRequest("a red fox <lora:outline:0.75>", seed=1).validated(limits)
    with pytest.raises(InvalidRequest, match="The prompt is 12 characters long; the limit is 10"):
        GenerateRequest("a red foxes <lora:x>", seed=1).validated(limits)
