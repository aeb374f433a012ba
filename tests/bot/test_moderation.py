"""bot.moderation without Discord: which mode applies where, and what `admit` lets through."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.moderation import Moderation, PromptBlocked, Refused, configured_mode, effective_mode, reachable
from bot.store import GuildSettings, Store
from dreambot.models import Catalogue, Model
from dreambot.request import GenerateRequest


@dataclass
class Channel:
    id: int
    nsfw: bool = False
    parent_id: int | None = None

    def is_nsfw(self) -> bool:
        return self.nsfw


@pytest.mark.parametrize(("configured", "age_restricted", "applied"), [
    ("block", False, "block"), ("spoiler", False, "block"), ("off", False, "block"),
    ("block", True, "block"), ("spoiler", True, "spoiler"), ("off", True, "off"),
])
def test_only_age_restricted_channels_relax_the_filter(configured: str, age_restricted: bool, applied: str) -> None:
    assert effective_mode(configured, age_restricted) == applied


def test_a_channel_override_wins_and_a_thread_follows_its_parent() -> None:
    settings = GuildSettings(guild_id=1, nsfw_mode="spoiler", channel_modes={10: "off", 11: "block"})
    assert configured_mode(settings, Channel(10)) == "off"
    assert configured_mode(settings, Channel(12)) == "spoiler"
    assert configured_mode(settings, Channel(99, parent_id=11)) == "block"
    assert configured_mode(settings, None) == "spoiler"


@pytest.fixture
async def moderation(tmp_path: Path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    yield Moderation(store), store
    await store.close()


async def test_admit_sets_the_channels_policy_on_the_request(moderation) -> None:
    rules, store = moderation
    await store.set_guild_setting(1, "nsfw_mode", "spoiler", actor_id=5)
    await store.set_guild_setting(1, "nsfw_threshold", 0.3, actor_id=5)
    request, policy = await rules.admit(7, 1, Channel(10, nsfw=True), GenerateRequest(prompt="a fox"), "opennsfw")
    assert (policy.mode, policy.threshold, request.keep_flagged, request.nsfw_threshold) == ("spoiler", 0.3, True, 0.3)
    request, policy = await rules.admit(7, 1, Channel(11), GenerateRequest(prompt="a fox"), "opennsfw")
    assert (policy.mode, request.keep_flagged) == ("block", False)
    # Direct messages: the strictest mode at the classifier's default, whatever any server set.
    request, policy = await rules.admit(7, None, None, GenerateRequest(prompt="a fox"), "opennsfw")
    assert (policy.mode, request.nsfw_threshold, request.keep_flagged) == ("block", None, False)


async def test_a_threshold_travels_with_the_classifier_it_was_set_for(moderation) -> None:
    rules, store = moderation
    await store.set_guild_setting(1, "nsfw_threshold", 0.3, actor_id=5)
    request, _ = await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox"), "opennsfw")
    assert (request.nsfw_threshold, request.nsfw_scale) == (0.3, "opennsfw")  # a model scored otherwise: its default


async def test_a_job_with_no_model_of_its_own_is_checked_as_the_default(tmp_path: Path) -> None:
    """Requests recorded before there were several models name none: re-rolled or restored in a
    channel that no longer allows the default, they are refused (the rule: `check_model`)."""
    store = await Store.open(tmp_path / "bot.sqlite3")
    catalogue = Catalogue({"old": Model("old", "o"), "new": Model("new", "n")}, default="old")
    rules = Moderation(store, models=lambda: catalogue)
    await store.set_channel_models(1, 10, allowed=("new",), actor_id=5)
    with pytest.raises(Refused, match="“old” is not used in this channel"):
        await rules.check_model(GenerateRequest(prompt="a fox"), 1, Channel(10))
    await rules.check_model(GenerateRequest(prompt="a fox", model="new"), 1, Channel(10))
    await rules.check_model(GenerateRequest(prompt="a fox"), 1, Channel(11))  # unrestricted
    with pytest.raises(Refused):  # a thread follows its channel
        await rules.check_model(GenerateRequest(prompt="a fox"), 1, Channel(12, parent_id=10))
    await store.close()


async def test_a_threshold_set_for_another_classifier_falls_back_to_the_default(moderation) -> None:
    rules, store = moderation
    await store.set_guild_setting(1, "nsfw_threshold", 0.3, actor_id=5)  # open_nsfw's scale
    request, _ = await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox"), "checkpoint")
    assert request.nsfw_threshold is None


async def test_bans_and_blocked_terms_refuse_and_changes_apply_at_once(moderation) -> None:
    rules, store = moderation
    await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a gory fox"))
    await store.add_blocked_term(1, "word", "gory", actor_id=5)
    rules.terms_changed(1)
    with pytest.raises(PromptBlocked) as refused:
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox", end_prompt="a GORY fox"))
    assert refused.value.term.text == "gory" and "gory" not in str(refused.value)
    await rules.admit(7, 2, Channel(20), GenerateRequest(prompt="a gory fox"))  # another server's list
    await store.ban(1, 7, actor_id=5)
    with pytest.raises(Refused, match="barred you"):
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox"))
    await rules.admit(8, 1, Channel(10), GenerateRequest(prompt="a fox"))


@pytest.mark.parametrize("prompt", ["a nu<lora:glow:0>de fox", "a nu[]de fox", "a (nu)(de) fox", "nu BREAK de"])
async def test_a_blocked_word_is_found_as_the_text_encoder_reads_it(moderation, prompt: str) -> None:
    rules, store = moderation
    await store.add_blocked_term(1, "word", "nude", actor_id=5)
    rules.terms_changed(1)
    if "BREAK" in prompt:  # BREAK splits the text in two chunks: two words, as the encoder reads them
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt=prompt))
        return
    with pytest.raises(PromptBlocked):  # a tag or empty brackets inside a word hide nothing
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt=prompt))


async def test_a_stored_term_that_no_longer_compiles_is_skipped_not_fatal(moderation) -> None:
    rules, store = moderation
    await store._db.execute("INSERT INTO blocked_terms (guild_id, kind, term, added_by) VALUES (1, 'pattern', '(a', 5)")
    await store.add_blocked_term(1, "word", "gory", actor_id=5)
    with pytest.raises(PromptBlocked):
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="gory"))
    await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox"))


async def test_the_mode_now_is_read_again_when_a_result_is_posted(moderation) -> None:
    rules, store = moderation
    gallery = Channel(10, nsfw=True)
    await store.set_channel_mode(1, 10, "off", actor_id=5)
    _, policy = await rules.admit(7, 1, gallery, GenerateRequest(prompt="a fox"))
    assert policy.mode == "off" and await rules.current_mode(1, gallery) == "off"
    gallery.nsfw = False  # the channel lost its age restriction while the job waited
    assert await rules.current_mode(1, gallery) == "block"
    gallery.nsfw = True
    await store.set_channel_mode(1, 10, "block", actor_id=5)
    assert await rules.current_mode(1, gallery) == "block"
    assert await rules.current_mode(None, None) == "block"


@dataclass
class Job:
    user_id: int
    guild_id: int | None
    channel_id: int | None


AUTHOR, OTHER = 1, 2
STAFF, PUBLIC, THREAD_OF_STAFF = 10, 20, 30
SERVER, ELSEWHERE = 100, 200


# (the job, where the viewer is, who the viewer is, moderator?) -> may they see or use it
@pytest.mark.parametrize(("job", "guild", "channel", "parent", "viewer", "moderator", "allowed"), [
    (Job(AUTHOR, SERVER, STAFF), SERVER, STAFF, None, OTHER, False, True),  # its own channel
    (Job(AUTHOR, SERVER, STAFF), SERVER, PUBLIC, None, OTHER, False, False),  # another channel
    (Job(AUTHOR, SERVER, STAFF), SERVER, THREAD_OF_STAFF, STAFF, OTHER, False, True),  # a thread of its channel
    (Job(AUTHOR, SERVER, THREAD_OF_STAFF), SERVER, STAFF, None, OTHER, False, False),  # a thread's job, from its parent
    (Job(AUTHOR, SERVER, STAFF), SERVER, PUBLIC, None, AUTHOR, False, True),  # its author, anywhere in the server
    (Job(AUTHOR, SERVER, STAFF), SERVER, PUBLIC, None, OTHER, True, True),  # a moderator
    (Job(AUTHOR, SERVER, STAFF), ELSEWHERE, STAFF, None, AUTHOR, True, False),  # never from another server
    (Job(AUTHOR, None, 5), None, 5, None, AUTHOR, False, True),  # a DM's job: its author
    (Job(AUTHOR, None, 5), None, 5, None, OTHER, False, False),
    (Job(AUTHOR, None, 5), SERVER, PUBLIC, None, AUTHOR, True, False),  # not in a server
    (Job(AUTHOR, SERVER, None), SERVER, PUBLIC, None, OTHER, False, False),
])
def test_a_job_is_reachable_only_where_its_result_could_be_seen(job, guild, channel, parent, viewer, moderator,
                                                                  allowed) -> None:
    assert reachable(job, user_id=viewer, guild_id=guild, channel_id=channel, parent_id=parent,
                     moderator=moderator) is allowed
