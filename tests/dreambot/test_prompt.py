"""AUTOMATIC1111's prompt language, parsed as A1111 parses it, refused where A1111 would guess."""

from __future__ import annotations

import pytest

from dreambot.prompt import Fragment, parse
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
