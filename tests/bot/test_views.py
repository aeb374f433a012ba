"""The buttons under a result, built without Discord: one Vary and one Upscale per picture shown."""

from __future__ import annotations

import pytest

from bot.views import result_view
from dreambot.request import GenerateRequest
from dreambot.wire import GenerateResult, ImageResult


def result(flags: list[bool]) -> GenerateResult:
    images = tuple(ImageResult(data=b"png", seed=i, nsfw_content_detected=f, nsfw_score=0.0)
                   for i, f in enumerate(flags))
    return GenerateResult(job_id=7, images=images, seed=0, width=64, height=64, model="m")


def layout(view) -> list[list[str]]:
    rows: dict[int, list[str]] = {}
    for row in view.to_components():
        rows[len(rows)] = [component["custom_id"] for component in row["components"]]
    return list(rows.values())


@pytest.mark.parametrize("count", [1, 2, 5, 6, 10])
def test_every_picture_gets_its_buttons_within_discords_limits(count: int) -> None:
    view = result_view(7, GenerateRequest(prompt="p", num_images=count), result([False] * count))
    rows = layout(view)
    assert len(rows) <= 5 and all(len(row) <= 5 for row in rows)
    ids = [custom_id for row in rows for custom_id in row]
    assert "dream:reroll:7" in ids and "dream:delete:7" in ids
    pans = [f"dream:{side}:7:0" for side in ("left", "right", "up", "down")]
    assert (rows[-1] == pans) if count == 1 else not set(pans) & set(ids)  # extend a single picture
    assert sorted(i for i in ids if ":vary:" in i) == sorted(f"dream:vary:7:{n}" for n in range(count))
    assert sorted(i for i in ids if ":upscale:" in i) == sorted(f"dream:upscale:7:{n}" for n in range(count))


def test_a_withheld_picture_gets_no_buttons_and_an_animation_only_re_roll_and_delete() -> None:
    ids = [c for row in layout(result_view(7, GenerateRequest(prompt="p", num_images=3), result([False, True, False])))
           for c in row]
    assert "dream:vary:7:1" not in ids and "dream:upscale:7:1" not in ids and "dream:vary:7:2" in ids
    gif = result_view(7, GenerateRequest(prompt="p", mode="interpolate", end_seed=3), result([False]))
    assert [c for row in layout(gif) for c in row] == ["dream:reroll:7", "dream:delete:7"]
