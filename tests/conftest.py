"""Shared fixtures: offline settings and the tiny test models, built once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_asyncio

# Two workers on two cores (pyproject's addopts): one thread each for torch, and for the engine
# processes they start, rather than two threads each fighting over every core. Set before torch loads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# Never reach for the model hub: a hub id must fail at once, not after retries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
# A developer's own settings must not leak into the tests' (one list: the settings model's).
from dreambot.settings import setting_names  # noqa: E402

for name in setting_names() & set(os.environ):
    del os.environ[name]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def flagging_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.models import write_flagging_model

    return write_flagging_model(tmp_path_factory.mktemp("models") / "flagging")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake():
    """The loopback Discord (tests/support/fake_discord.py), one per test module."""
    from tests.support.fake_discord import FakeDiscord

    server = await FakeDiscord().start()
    yield server
    await server.close()
