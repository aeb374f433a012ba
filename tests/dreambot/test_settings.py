"""Settings come from the environment and .env; a bad one stops start-up with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from dreambot.settings import DEFAULT_MODEL, BotSettings, EngineSettings, describe

SECRET = "MTIzNDU2Nzg5.secret-token-value"


def test_defaults_serve_a_real_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", SECRET)
    settings = BotSettings(_env_file=None)
    assert settings.sd_model == DEFAULT_MODEL == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (settings.sd_device, settings.sd_dtype, settings.sd_safety_checker) == ("auto", "auto", "auto")
    assert settings.database_path == Path("data/dreambot.sqlite3")
    assert settings.discord_guild_id is None and settings.discord_api_base is None
    assert settings.limits.max_images == 4
    assert SECRET not in repr(settings)


def test_dotenv_is_read_and_empty_values_mean_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN={SECRET}\nSD_MODEL=./tiny\nDISCORD_GUILD_ID=\nMAX_STEPS=30\n")
    monkeypatch.chdir(tmp_path)
    settings = BotSettings()
    assert settings.sd_model == "./tiny" and settings.max_steps == 30 and settings.discord_guild_id is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "DISCORD_TOKEN is required but not set"),
        ({"DISCORD_TOKEN": "   "}, "DISCORD_TOKEN is empty"),
        ({"DISCORD_TOKEN": SECRET, "SD_DEVICE": "gpu"}, "SD_DEVICE must be auto, cpu, mps, cuda or cuda:N"),
        ({"DISCORD_TOKEN": SECRET, "SD_DTYPE": "fp8"}, "SD_DTYPE Input should be 'auto', 'float16'"),
        ({"DISCORD_TOKEN": SECRET, "MAX_STEPS": "0"}, "MAX_STEPS Input should be greater than or equal to 1"),
        ({"DISCORD_TOKEN": SECRET, "DISCORD_GUILD_ID": "my-server"},
         "DISCORD_GUILD_ID Input should be a valid integer"),
        ({"DISCORD_TOKEN": SECRET, "DISCORD_API_BASE": "localhost:8080"}, "DISCORD_API_BASE must be an absolute URL"),
        ({"DISCORD_TOKEN": SECRET, "SD_DEVICES": "cuda:0;cuda:1"}, "SD_DEVICES must be devices separated by commas"),
        ({"DISCORD_TOKEN": SECRET, "SD_DEVICES": "cuda:0,cuda:0"}, "SD_DEVICES names a device twice"),
        ({"DISCORD_TOKEN": SECRET, "MAX_BATCH": "0"}, "MAX_BATCH Input should be greater than or equal to 1"),
    ],
)
def test_bad_settings_are_named(env: dict, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        BotSettings(_env_file=None)
    line = describe(caught.value)
    assert expected in line and "\n" not in line and SECRET not in line


def test_the_engine_needs_no_token() -> None:
    assert EngineSettings(_env_file=None).sd_model == DEFAULT_MODEL


def test_python_m_bot_stops_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SD_"))}
    env["SD_DEVICE"] = "tpu"
    done = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid settings: ")
    assert "DISCORD_TOKEN is required but not set" in lines[0]
    assert "SD_DEVICE must be auto, cpu, mps, cuda or cuda:N" in lines[0]


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    from dreambot.settings import BotSettings

    root = Path(__file__).resolve().parents[2]
    example = (root / ".env.example").read_text()
    readme = (root / "README.md").read_text()
    for name in BotSettings.model_fields:
        variable = name.upper()
        assert f"\n{variable}=" in example, f"{variable} is missing from .env.example"
        assert f"`{variable}`" in readme, f"{variable} is missing from the README's settings table"


def test_one_engine_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", SECRET)
    assert BotSettings().devices == ["auto"]
    monkeypatch.setenv("SD_DEVICES", " cuda:0, cuda:1 ")
    assert BotSettings().devices == ["cuda:0", "cuda:1"]
