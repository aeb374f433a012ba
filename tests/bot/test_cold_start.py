"""A cold start: the first jobs, asked before the engine has loaded its model, say so ("the image
engine is starting, loading the model … (about N s)"), and the same notice then becomes the
progress bar and the result. The real bot and engine (tiny model) against the fake Discord; the
engine's start is held back a few seconds (a `sitecustomize` the test puts on its path) so that
the jobs surely arrive before it is ready."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW_START = """
import os, sys, time
if sys.argv[-1:] == ["serve"] and os.environ.get("HOLD_ENGINE_START"):
    time.sleep(float(os.environ["HOLD_ENGINE_START"]))
"""


async def test_jobs_asked_before_the_engine_is_ready_say_it_is_loading(fake: FakeDiscord, tiny_model: Path,
                                                                        tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START)
    bot = BotProcess(fake, tmp_path / "bot", tiny_model, HOLD_ENGINE_START="6",
                     PYTHONPATH=f"{site}:{Path(__file__).resolve().parents[2]}")
    await bot.start()
    try:
        first = await fake.invoke("dream", fake.user("early"), prompt="a red fox", steps=2, seed=1)
        second = await fake.invoke("dream", fake.user("also early"), prompt="a blue fox", steps=2, seed=2)
        # The two are prepared side by side: either may be queued first.
        notices = sorted([(await interaction.wait_for(lambda reply: reply.kind == "edit")).content
                          for interaction in (first, second)], key=lambda text: "queued" in text)
        assert re.fullmatch(r"📦 Job \d+ is next: the image engine is starting, loading the model tiny "
                            r"\(about \d+ s\)…", notices[0]), notices
        assert "1 job ahead of yours" in notices[1]
        assert "📦 The image engine is starting: loading the model tiny." in notices[1]
        for interaction in (first, second):  # the same message ends as the result
            result = await interaction.wait_for(lambda reply: reply.kind == "edit" and bool(reply.files), timeout=120)
            assert "a " in result.content and interaction.message_id is not None
    finally:
        await bot.stop()
