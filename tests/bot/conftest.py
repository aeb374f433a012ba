"""The bot under test: `python -m bot` against the module's loopback fake Discord, one per module."""

from __future__ import annotations

from pathlib import Path

import pytest_asyncio

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake: FakeDiscord, tiny_model: Path, tmp_path_factory):
    process = BotProcess(fake, tmp_path_factory.mktemp("bot"), tiny_model)
    await process.start()
    yield process
    await process.stop()
