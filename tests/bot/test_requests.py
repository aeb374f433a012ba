"""Building a job's request from options, a member's own settings and a model's defaults
(`bot.requests`), without Discord: the precedence, the model a channel allows, and settings that went
stale."""

from __future__ import annotations

import pytest

from bot.requests import MemberSettings, checked_settings, from_options, pick_model, size_of, usable
from bot.styles import Style
from dreambot.models import Catalogue, Defaults, Model, Place
from dreambot.request import InvalidRequest, Limits

TURBO = Model(name="turbo", source="t", family="sdxl", native=512,
              defaults=Defaults(steps=4, guidance=0.0, sampler="Euler a", negative_prompt="blur"))
BASE = Model(name="base", source="b", family="sd1", native=512)
CATALOGUE = Catalogue({"base": BASE, "turbo": TURBO}, default="base")
STYLES = {"ink": Style("ink", "ink drawing of {prompt}")}
LIMITS = Limits()


def request(member: MemberSettings = MemberSettings(), model: Model = BASE, **options):
    given = {"negative": None, "steps": None, "guidance": None, "seed": 1, "sampler": None, "style": None, **options}
    return from_options(STYLES, LIMITS, None, "a fox", given.pop("negative"), given.pop("steps"),
                        given.pop("guidance"), given.pop("seed"), given.pop("sampler"), given.pop("style"),
                        model=model, member=member, **given)


def test_an_option_beats_the_members_setting_which_beats_the_models_default() -> None:
    assert (request(model=TURBO).num_inference_steps, request(model=TURBO).guidance_scale) == (4, 0.0)
    assert request(model=TURBO).negative_prompt == "blur" and request(model=TURBO).scheduler == "Euler a"
    mine = MemberSettings(steps=8, sampler="DDIM", negative="text")
    assert (request(mine, TURBO).num_inference_steps, request(mine, TURBO).scheduler) == (8, "DDIM")
    assert request(mine, TURBO).negative_prompt == "text"
    assert request(mine, TURBO, steps=2).num_inference_steps == 2
    assert request(mine, TURBO, negative="").negative_prompt == ""  # an empty option is said, not left out
    assert request(model=BASE).num_inference_steps == 25 and request(model=BASE).model == "base"


def test_the_model_is_the_options_the_members_the_channels_the_servers_the_bots() -> None:
    mine = MemberSettings(model="turbo")
    assert pick_model(CATALOGUE, None, MemberSettings(), Place()).name == "base"
    assert pick_model(CATALOGUE, None, MemberSettings(), Place(server_model="turbo")).name == "turbo"
    assert pick_model(CATALOGUE, None, MemberSettings(), Place(server_model="turbo", channel_model="base")).name \
        == "base"
    assert pick_model(CATALOGUE, None, mine, Place(channel_model="base")).name == "turbo"
    assert pick_model(CATALOGUE, "BASE", mine, Place()).name == "base"
    only_base = Place(allowed=("base",))
    assert pick_model(CATALOGUE, None, mine, only_base).name == "base"  # theirs is passed over here
    with pytest.raises(InvalidRequest, match="“turbo” is not used in this channel"):
        pick_model(CATALOGUE, "turbo", mine, only_base)
    with pytest.raises(InvalidRequest, match=r"no model named “nsfw” \(installed: base\)"):  # hides turbo
        pick_model(CATALOGUE, "nsfw", mine, only_base)


def test_size_from_options_then_the_member_then_the_model() -> None:
    assert size_of(BASE, LIMITS, None, None, None, MemberSettings()) == (512, 512)
    assert size_of(BASE, LIMITS, None, None, "16:9", MemberSettings()) == (704, 384)
    assert size_of(BASE, LIMITS, None, None, None, MemberSettings(aspect="9:16")) == (384, 704)
    assert size_of(BASE, LIMITS, 256, None, None, MemberSettings(aspect="9:16")) == (256, 512)  # the option's
    with pytest.raises(InvalidRequest, match="not both"):
        size_of(BASE, LIMITS, 256, None, "1:1", MemberSettings())


def test_a_change_is_checked_and_stale_settings_never_block_it() -> None:
    stale = MemberSettings(model="gone", style="removed", steps=80, width=2048)
    assert checked_settings(stale, {"sampler": "Euler"}, CATALOGUE, STYLES, LIMITS) == MemberSettings(sampler="Euler")
    with pytest.raises(InvalidRequest, match="Steps must be between 1 and 50"):
        checked_settings(MemberSettings(), {"steps": 60}, CATALOGUE, STYLES, LIMITS)
    with pytest.raises(InvalidRequest, match="no model named “gone”"):
        checked_settings(MemberSettings(), {"model": "gone"}, CATALOGUE, STYLES, LIMITS)
    sized = checked_settings(MemberSettings(aspect="4:3"), {"width": 640}, CATALOGUE, STYLES, LIMITS)
    assert (sized.aspect, sized.width) == (None, 640)  # a size replaces an aspect, and an aspect a size
    assert checked_settings(sized, {"aspect": "1:1"}, CATALOGUE, STYLES, LIMITS).width is None
    assert usable(stale, CATALOGUE, STYLES, LIMITS) == MemberSettings()
    assert request(usable(stale, CATALOGUE, STYLES, LIMITS)).num_inference_steps == 25  # a job still runs


async def test_the_edit_form_draws_wildcards_typed_in_it_by_its_seed(tmp_path) -> None:
    from types import SimpleNamespace

    from bot.requests import edited
    from dreambot.request import GenerateRequest

    (tmp_path / "animal.txt").write_text("fox\ncat\nowl\n")
    source = GenerateRequest(prompt="a dog", seed=1, num_inference_steps=3)
    job = SimpleNamespace(id=4, request=source, with_pictures=lambda image, mask: source)
    drawn = {(await edited(None, Limits(), job, "a __animal__", "{blurry|dark}", str(seed), tmp_path)).prompt
             for seed in range(12)}
    assert drawn == {"a fox", "a cat", "a owl"}
    again = [await edited(None, Limits(), job, "a __animal__", "", "7", tmp_path) for _ in range(2)]
    assert again[0].prompt == again[1].prompt and again[0].seed == 7 and again[0].num_inference_steps == 3
    with pytest.raises(InvalidRequest, match="__plant__"):
        await edited(None, Limits(), job, "a __plant__", "", "7", tmp_path)
