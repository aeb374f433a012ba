"""`python -m bot`'s own work: logging in while Discord cannot be reached, with back-off, and one
line per wait instead of a traceback."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import aiohttp
import discord
import pytest

from bot.__main__ import OneLineReconnects, log_in, retry_delay


def test_the_wait_doubles_up_to_five_minutes_give_or_take_a_fifth() -> None:
    for attempt, middle in enumerate((5, 10, 20, 40, 80, 160, 300, 300)):
        delays = [retry_delay(attempt) for _ in range(200)]
        assert all(0.8 * middle <= delay <= 1.2 * middle for delay in delays)
        assert max(delays) - min(delays) > 0.1 * middle  # spread, so that bots cut off together part ways
    assert retry_delay(10_000) <= 360


class Client:
    """As much of discord.Client as `log_in` uses; `login` fails with each of `failures` in turn."""

    def __init__(self, *failures: BaseException, fail_after_setup: bool = False) -> None:
        self.failures = list(failures)
        self.logins = 0
        self.application = None
        self.fail_after_setup = fail_after_setup
        self.http = SimpleNamespace(connector="the connector of the last try", closed=0)

        async def close() -> None:
            self.http.closed += 1

        self.http.close = close

    async def login(self, token: str) -> None:
        self.logins += 1
        if self.fail_after_setup:
            self.application = object()  # discord.py sets it just before setup_hook
        if self.failures:
            raise self.failures.pop(0)


def connection_refused() -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="127.0.0.1", port=9, is_ssl=False, ssl=None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connect call failed"))  # type: ignore[arg-type]


async def test_an_unreachable_discord_is_tried_again_with_one_line_each_time(caplog: pytest.LogCaptureFixture
                                                                               ) -> None:
    server_error = discord.DiscordServerError(SimpleNamespace(status=503, reason="Service Unavailable"), "down")
    client = Client(connection_refused(), TimeoutError(), server_error)
    with caplog.at_level(logging.WARNING, logger="bot"):
        await log_in(client, "token", first=0.01, most=0.02)  # type: ignore[arg-type]
    assert client.logins == 4 and client.http.closed == 3 and client.http.connector is discord.utils.MISSING
    lines = [record for record in caplog.records if record.name == "bot"]
    assert [record.levelname for record in lines] == ["WARNING"] * 3 and not any(r.exc_info for r in lines)
    said = [record.getMessage() for record in lines]
    assert said[0].startswith("Discord is unreachable (ClientConnectorError: Cannot connect to host 127.0.0.1:9")
    assert said[0].endswith("; retrying in 0 s")
    assert said[1] == "Discord is unreachable (TimeoutError); retrying in 0 s"
    assert said[2].startswith("Discord is unreachable (DiscordServerError: 503 Service Unavailable")


async def test_a_refused_token_is_not_tried_again() -> None:
    client = Client(discord.LoginFailure("Improper token has been passed."))
    with pytest.raises(discord.LoginFailure):
        await log_in(client, "token", first=0.01)  # type: ignore[arg-type]
    assert client.logins == 1


async def test_a_failure_once_the_bot_is_set_up_is_not_tried_again() -> None:
    # setup_hook started the engines and the queue: a second login would start them again.
    client = Client(connection_refused(), fail_after_setup=True)
    with pytest.raises(aiohttp.ClientConnectorError):
        await log_in(client, "token", first=0.01)  # type: ignore[arg-type]
    assert client.logins == 1


def test_discord_pys_reconnect_traceback_becomes_one_warning() -> None:
    try:
        raise connection_refused()
    except aiohttp.ClientConnectorError:
        record = logging.LogRecord("discord.client", logging.ERROR, __file__, 1, "Attempting a reconnect in %.2fs",
                                   (12.4,), exc_info=sys.exc_info())
    assert OneLineReconnects().filter(record)
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage().startswith("Discord is unreachable (ClientConnectorError: Cannot connect to host")
    assert record.getMessage().endswith("; retrying in 12 s")
