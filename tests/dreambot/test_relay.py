"""The NATS side of the wire (`dreambot.relay`): parts within the payload limit, logs without
credentials, and TLS that never falls back to plain text."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dreambot import relay
from dreambot.relay import Control, Parts, WorkerStatus


def test_a_message_in_parts_within_the_limit_comes_back_whole() -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: four large PNGs
    parts = relay.split(data, 1024 * 1024)
    assert len(parts) == 5 and all(len(part) <= 1024 * 1024 - relay.HEADROOM for part in parts)
    arriving = Parts(len(parts))
    assert [arriving.add(i, part) for i, part in enumerate(parts)][-1] == data
    assert relay.split(b"", 1024 * 1024) == [b""]


def test_parts_out_of_order_start_over() -> None:
    arriving = Parts(3)
    arriving.add(0, b"a")
    with pytest.raises(ValueError):
        arriving.add(2, b"c")
    assert arriving.add(0, b"a") is None  # a sender that starts again is welcome


def test_the_log_never_shows_a_password() -> None:
    assert relay.redacted(["nats://worker:s3cret@gpu-hub:4222", "tls://tok@other"]) == \
        "nats://gpu-hub:4222, tls://other"


def test_status_and_control_round_trip_and_ignore_unknown_fields() -> None:
    status = WorkerStatus(session="ab", name="gpu-1", device="cuda:0", model="sd15", dtype="float16",
                          safety_checker="opennsfw", protocol=3, models=("sd15",), lease="l", holding=("h",))
    assert WorkerStatus.decode(status.encode()) == status
    assert WorkerStatus.decode(status.encode()[:-1] + b',"from_a_newer_release":1}') == status
    assert Control.decode(Control("cancel", "l", 4).encode()) == Control("cancel", "l", 4)


async def test_a_tls_url_says_nothing_before_the_handshake(caplog) -> None:
    """A server (or an impersonator on the way) that offers no TLS never reads the password: with a
    tls:// URL the client's first bytes are a TLS handshake, not NATS's CONNECT."""
    received = bytearray()

    async def plain_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"x","version":"2.10.0","max_payload":1048576,"proto":1}\r\n')
        await writer.drain()
        received.extend(await reader.read(4096))
        writer.close()

    server = await asyncio.start_server(plain_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.CRITICAL)
    trying = asyncio.create_task(relay.connect([f"tls://worker:s3cret@127.0.0.1:{port}"], name="test"))
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.02)
    trying.cancel()
    await asyncio.gather(trying, return_exceptions=True)
    server.close()
    assert received[:1] == b"\x16"  # a TLS record: the handshake
    assert b"CONNECT" not in received and b"s3cret" not in received
