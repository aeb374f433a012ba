"""Members never read an operator's text (paths, exceptions, exit codes): they get an apology with
the job id, the failing job's server's mod-log gets the reason, once per reason."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bot import render
from bot.delivery import Outbox
from bot.modlog import ModLog
from bot.outcome import Failure, FailureKind
from bot.store import JobRow, Store
from dreambot.request import GenerateRequest

PATH = "/srv/dreambot/models/anime"
OPERATORS = {
    FailureKind.UNAVAILABLE: f"could not load SD_MODEL '{PATH}': SafetensorError: HeaderTooLarge",
    FailureKind.CRASHED: "the engine process exited with code -9",
    FailureKind.INTERNAL: f"RuntimeError: expected shape [2, 77] at {PATH}",
}


@pytest.mark.parametrize(("kind", "message"), OPERATORS.items())
def test_an_operators_failure_reaches_members_as_an_apology(kind: FailureKind, message: str) -> None:
    text = render.failure(12, Failure(kind, message))
    assert "job 12" in text and text.startswith("😿 Sorry, ")
    assert PATH not in text and "Error" not in text and "code" not in text
    detail = render.failure_detail(12, Failure(kind, message))
    assert detail.startswith("⚠️ Job 12 failed: ") and message in detail


def test_the_engine_down_apology_says_moderators_know() -> None:
    assert render.failure(12, Failure(FailureKind.UNAVAILABLE, OPERATORS[FailureKind.UNAVAILABLE])) == \
        "😿 Sorry, the image engine is down (job 12); moderators have been told."


def test_a_members_own_mistake_is_still_said_in_the_engines_words() -> None:
    said = "Steps must be between 1 and 50 (got 80)."
    assert render.failure(3, Failure(FailureKind.INVALID, said)) == f"⚠️ {said} (job 3)"


def job(error: str) -> JobRow:
    fields = {name: None for name in JobRow.__dataclass_fields__}
    fields.update(id=12, user_id=5, guild_id=1, channel_id=2, request=GenerateRequest(prompt="a fox", seed=1),
                  status="failed", created_at="2026-11-23T05:00:00.000Z", error=error, action="dream")
    return JobRow(**fields)


@pytest.mark.parametrize(("stored", "shown"), [
    (f"internal: {OPERATORS[FailureKind.INTERNAL]}", "something went wrong on our side"),
    (f"unavailable: {OPERATORS[FailureKind.UNAVAILABLE]}", "the image engine was down"),
    (f"crashed: {OPERATORS[FailureKind.CRASHED]}", "the image engine crashed while making it"),
    ("invalid: Steps must be between 1 and 50 (got 80).", "Steps must be between 1 and 50 (got 80)."),
    ("timed out: the job took longer than the limit of 600 s and was stopped",
     "the job took longer than the limit of 600 s and was stopped"),
    ("cancelled", "cancelled"),
    ("the bot stopped before this job finished", "the bot stopped before this job finished"),
])
def test_info_and_history_show_members_the_safe_text(stored: str, shown: str) -> None:
    assert render.shown_error(stored) == shown
    for text in (render.info(job(stored)), render.history([job(stored)], total=1, page=0, pages=1, whose="Your")):
        error_line = next(line for line in text.splitlines() if line.startswith("Error: "))
        assert error_line == f"Error: {render.escape(shown)}"
        assert PATH not in text and "RuntimeError" not in text and "SafetensorError" not in text


class Channel:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str, **_) -> None:
        self.sent.append(text)


class Client:
    """As much of discord.Client as the mod-log uses: channels by id."""

    def __init__(self) -> None:
        self.channels: dict[int, Channel] = {}

    def get_channel(self, channel_id: int) -> Channel:
        return self.channels.setdefault(channel_id, Channel())


@pytest.fixture
async def store(tmp_path: Path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    await store.set_guild_setting(1, "modlog_channel_id", 10, actor_id=9)
    await store.set_guild_setting(2, "modlog_channel_id", 20, actor_id=9)
    yield store
    await store.close()


async def test_a_reason_is_told_to_a_server_once_not_once_per_job(store: Store) -> None:
    client = Client()
    modlog = ModLog(client, store)  # type: ignore[arg-type]
    for job_id in (1, 2, 3):  # the same crash, with each job's own numbers
        await modlog.post_once(1, f"job {job_id}: the engine process exited with code -{job_id}", f"post {job_id}")
    await modlog.post_once(1, "RuntimeError: something else", "post 4")
    await modlog.post_once(2, "job 9: the engine process exited with code -9", "post 5")  # another server
    await modlog.post_once(None, "RuntimeError: in a DM", "post 6")  # no server: no mod-log
    assert client.channels[10].sent == ["post 1", "post 4"] and client.channels[20].sent == ["post 5"]


async def test_the_engine_down_goes_to_every_mod_log_once(store: Store) -> None:
    client = Client()
    modlog = ModLog(client, store)  # type: ignore[arg-type]
    reason = OPERATORS[FailureKind.UNAVAILABLE]
    for _ in range(2):  # two engines (two devices) down for the same reason
        await modlog.broadcast(reason, render.engine_down(reason))
    await modlog.post_once(1, reason, "a job failed for that reason")  # already told
    assert client.channels[10].sent == client.channels[20].sent == [render.engine_down(reason)]
    assert "The image engine is down" in client.channels[10].sent[0] and PATH in client.channels[10].sent[0]


class Delivery:
    def __init__(self) -> None:
        self.text = ""

    async def finish(self, text: str, *_) -> None:
        self.text = text


async def test_a_failed_job_tells_the_member_and_its_servers_moderators_apart(store: Store) -> None:
    client = Client()
    outbox = Outbox(client=client, store=store, images=None, queue=None, moderation=None,  # type: ignore[arg-type]
                    modlog=ModLog(client, store))  # type: ignore[arg-type]
    origin = SimpleNamespace(guild_id=1, interaction=None)
    for job_id in (7, 8):
        delivery = Delivery()
        await outbox.fail(delivery, origin, job_id, Failure(FailureKind.INTERNAL, OPERATORS[FailureKind.INTERNAL]))
        assert delivery.text == render.failed(job_id)
    mine = Delivery()
    await outbox.fail(mine, origin, 9, Failure(FailureKind.INVALID, "Steps must be between 1 and 50 (got 80)."))
    assert client.channels[10].sent == [render.failure_detail(7, Failure(FailureKind.INTERNAL,
                                                                         OPERATORS[FailureKind.INTERNAL]))]
    assert 20 not in client.channels  # the other server hears nothing of it
