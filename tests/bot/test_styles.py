"""Style presets: the bundled file, what a style does to a prompt, and what a bad file is told."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.images import ImageStore
from bot.styles import StylesError, load_styles


def test_the_bundled_styles() -> None:
    styles = load_styles()
    assert {"photograph", "digital art", "watercolor", "anime", "oil painting", "pixel art"} <= set(styles)
    prompt, negative = styles["watercolor"].apply("a fox", "blurry")
    assert prompt.startswith("a fox, watercolor") and negative.startswith("blurry, ") and len(negative) > 8
    assert styles["watercolor"].apply("a fox", "")[1] == styles["watercolor"].negative


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[x\nprompt = 1", "is not valid TOML"),
        ("x = 1", "'x' must be a table"),
        ("[x]\nnegative = 'a'", "style 'x' needs prompt = \"...\" containing {prompt}"),
        ("[x]\nprompt = 'no placeholder'", "containing {prompt}"),
        ("[x]\nprompt = '{prompt}'\ncolour = 'red'", "unknown keys ['colour']"),
        ("\n".join(f"[s{i}]\nprompt = '{{prompt}}'" for i in range(26)),
         "defines 26 styles; Discord can offer at most 25"),
    ],
)
def test_a_bad_styles_file_is_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "styles.toml"
    path.write_text(text)
    with pytest.raises(StylesError, match=None) as caught:
        load_styles(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_styles_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(StylesError, match="cannot read the styles file"):
        load_styles(tmp_path / "nope.toml")


async def test_the_image_store_keeps_and_forgets_a_jobs_pictures(tmp_path: Path) -> None:
    images = ImageStore(tmp_path / "images")
    await images.save(7, "image", b"in")
    await images.save(7, "result-0.png", b"out")
    await images.save(70, "result-0.png", b"other job")
    assert await images.load(7, "image") == b"in" and await images.result(7, 0) == b"out"
    assert await images.result(7, 1) is None
    assert await images.delete_job(7) == 2
    assert await images.load(7, "image") is None and await images.result(70, 0) == b"other job"
