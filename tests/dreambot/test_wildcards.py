"""Wildcards and choices (`dreambot.wildcards`): picked by the job's seed, refused when unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreambot.request import InvalidRequest
from dreambot.wildcards import expand, names


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "colour.txt").write_text("red\ngreen\nblue\nyellow\n")
    (tmp_path / "shape.txt").write_text("circle\nsquare\ntriangle\n")
    return tmp_path


def test_the_seed_picks_and_reproduces_the_prompt(folder: Path) -> None:
    template = "a __colour__ {circle|square|triangle} on a (__colour__:1.2) background"
    drawn = [expand(template, seed, folder) for seed in range(12)]
    assert drawn == [expand(template, seed, folder) for seed in range(12)]  # the same seed, the same prompt
    assert len(set(drawn)) > 3  # and other seeds, other prompts
    for prompt in drawn:
        assert "__" not in prompt and "{" not in prompt and prompt.endswith(":1.2) background")
    assert expand("a __shape__", 0, folder) in {"a circle", "a square", "a triangle"}


def test_a_prompt_without_the_syntax_is_kept_as_written(folder: Path) -> None:
    for text in ("a red fox, (detailed:1.2), [blurry], \\(literal\\)", "", "snake_case and a_b", "a cat ^__^"):
        assert expand(text, 3, folder) == text


def test_unknown_wildcards_and_unclosed_choices_say_what_exists(folder: Path, tmp_path_factory) -> None:
    with pytest.raises(InvalidRequest, match=r"names the wildcard __animal__, which does not exist "
                                             r"\(__colour__, __shape__\)"):
        expand("a __animal__", 1, folder)
    with pytest.raises(InvalidRequest, match="none are set up on this server"):
        expand("a __colour__", 1, tmp_path_factory.mktemp("empty"))
    with pytest.raises(InvalidRequest, match=r"The negative prompt cannot be read near “a \{red\|blue”: write choices"):
        expand("a {red|blue", 1, folder, "negative prompt")
    with pytest.raises(InvalidRequest, match="only \\{red\\|green\\|blue\\} choices and __name__ wildcards"):
        expand("${x} and y", 1, folder)
    assert names(folder) == ["colour", "shape"] and names(None) == []
