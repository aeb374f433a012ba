"""The buttons under a result, built without Discord: one Vary and one Upscale per picture shown,
Re-roll, Edit and Delete on every result; and the form the Edit button opens."""

from __future__ import annotations

import pytest

from bot.views import EditModal, result_view, typed_values
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
    assert ["dream:reroll:7", "dream:edit:7", "dream:delete:7"] in [row[-3:] for row in rows]
    pans = [f"dream:{side}:7:0" for side in ("left", "right", "up", "down")]
    assert (rows[-1] == pans) if count == 1 else not set(pans) & set(ids)  # extend a single picture
    assert sorted(i for i in ids if ":vary:" in i) == sorted(f"dream:vary:7:{n}" for n in range(count))
    assert sorted(i for i in ids if ":upscale:" in i) == sorted(f"dream:upscale:7:{n}" for n in range(count))


def test_a_withheld_picture_gets_no_buttons_and_an_animation_only_re_roll_edit_and_delete() -> None:
    ids = [c for row in layout(result_view(7, GenerateRequest(prompt="p", num_images=3), result([False, True, False])))
           for c in row]
    assert "dream:vary:7:1" not in ids and "dream:upscale:7:1" not in ids and "dream:vary:7:2" in ids
    gif = result_view(7, GenerateRequest(prompt="p", mode="interpolate", end_seed=3), result([False]))
    assert [c for row in layout(gif) for c in row] == ["dream:reroll:7", "dream:edit:7", "dream:delete:7"]
    kept_nothing = result_view(7, GenerateRequest(prompt="p"), result([False]), reusable=False)
    assert [c for row in layout(kept_nothing) for c in row] == ["dream:reroll:7", "dream:edit:7", "dream:delete:7"]


def test_the_edit_button_and_its_form_pre_filled_from_the_job() -> None:
    [edit] = [item for item in result_view(7, GenerateRequest(prompt="p"), result([False])).children
              if getattr(item, "custom_id", "") == "dream:edit:7"]
    assert (edit.item.label, str(edit.item.emoji)) == ("Edit", "🖋️")
    form = EditModal(7, "a red fox", "", 42, longest=1000).to_dict()
    assert (form["custom_id"], form["title"]) == ("dream:edited:7", "Edit job 7")
    inputs = {row["components"][0]["custom_id"]: row["components"][0] for row in form["components"]}
    assert list(inputs) == ["prompt", "negative", "seed"]
    shown = {name: (field.get("value"), field["style"], field["required"]) for name, field in inputs.items()}
    assert shown == {"prompt": ("a red fox", 2, True), "negative": (None, 2, False), "seed": ("42", 1, False)}
    assert inputs["prompt"]["max_length"] == inputs["negative"]["max_length"] == 1000
    # A prompt stored before the limit was lowered still fits its form (it is refused only if sent so).
    assert EditModal(7, "x" * 1500, "", None, longest=1000).to_dict()["components"][0]["components"][0][
        "max_length"] == 1500


def test_what_a_member_typed_is_read_from_rows_and_labels() -> None:
    rows = [{"type": 1, "components": [{"type": 4, "custom_id": "prompt", "value": "a cat"}]},
            {"type": 18, "component": {"type": 4, "custom_id": "seed", "value": ""}}]
    assert typed_values(rows) == {"prompt": "a cat", "seed": ""}
