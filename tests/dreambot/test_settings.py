"""Settings come from the environment and .env; a bad one stops start-up with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from dreambot.settings import DEFAULT_MODEL, BotSettings, EngineSettings, StartupError, describe
from tests.dreambot.test_models import VAE, checkpoint, whole

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


# -- the models checked at start (`EngineSettings.checked_catalogue`) ------------------------------


def checked(tmp_path: Path, **settings) -> str | None:
    """The start-up check's complaint about these settings (None: it passes)."""
    try:
        EngineSettings(_env_file=None, models_dir=tmp_path / "models", **settings).checked_catalogue()
    except StartupError as error:
        return str(error)
    return None


def test_a_hub_id_and_a_whole_model_pass_the_start_check(tmp_path: Path) -> None:
    assert checked(tmp_path) is None  # the default: a hub id, downloaded by the engine
    assert checked(tmp_path, sd_model="org/some-model", sd_upscaler="stabilityai/sd-x2-latent-upscaler") is None
    assert checked(tmp_path, sd_model="shapes") is None  # built in
    assert checked(tmp_path, sd_model=str(whole(tmp_path / "mine"))) is None


def test_a_wrong_sd_model_is_named_with_what_is_wrong_and_what_to_do(tmp_path: Path) -> None:
    said = checked(tmp_path, sd_model="./no-such-model")
    assert said.startswith("SD_MODEL './no-such-model' does not exist (looked for ")
    assert "point it at a diffusers folder or a .safetensors or .ckpt file, or give a model hub id" in said
    assert checked(tmp_path, sd_model="x.safetensors").startswith("SD_MODEL 'x.safetensors' does not exist")
    vae = checkpoint(tmp_path / "vae.safetensors", {VAE: [3, 128, 3, 3]})
    assert "is not a whole Stable Diffusion 1.x, 2.x or XL checkpoint" in checked(tmp_path, sd_model=str(vae))


def test_a_name_that_is_no_model_lists_the_installed_ones(tmp_path: Path) -> None:
    whole(tmp_path / "models" / "anime")
    said = checked(tmp_path, sd_model="anmie")
    assert said.startswith("SD_MODEL 'anmie' names no model in MODELS_DIR") and "(installed: anime)" in said
    assert checked(tmp_path, sd_model="anime") is None


def test_models_tomls_default_elsewhere_is_checked_too(tmp_path: Path) -> None:
    models = tmp_path / "models"
    whole(models / "base")
    (models / "models.toml").write_text('default = "far"\n[models.far]\nsource = "/elsewhere/far.safetensors"\n')
    said = checked(tmp_path)
    assert said.startswith(f"MODELS_DIR {models}: the default model 'far' (source '/elsewhere/far.safetensors') "
                           "does not exist")
    (models / "models.toml").write_text('default = "far"\n[models.far]\nsource = "org/far"\n')
    assert checked(tmp_path) is None


def test_the_default_model_of_the_folder_must_be_whole(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (whole(models / "base") / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (models / "base" / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    assert checked(tmp_path) == (f"MODELS_DIR {models}: the default model 'base' (source '{models / 'base'}') lacks "
                                 "the weights in unet/, which its model_index.json names: the copy or download is "
                                 "incomplete; copy or download it again")
    assert checked(tmp_path, sd_model="base").startswith(f"SD_MODEL 'base' (source '{models / 'base'}') lacks ")
    assert checked(tmp_path, sd_model="org/other") is None  # the default is another model: the folder's load later


def test_a_wrong_sd_upscaler_is_named(tmp_path: Path) -> None:
    said = checked(tmp_path, sd_upscaler="./upscaler")
    assert said.startswith("SD_UPSCALER './upscaler' does not exist") and "or leave it empty" in said


def test_python_m_bot_stops_at_a_wrong_model_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SD_"))}
    env.update(DISCORD_TOKEN=SECRET, SD_MODEL="./no-such-model")
    done = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"invalid settings: SD_MODEL './no-such-model' does not exist (looked for {tmp_path / 'no-such-model'}): "
        "point it at a diffusers folder or a .safetensors or .ckpt file, or give a model hub id such as org/name"]
    assert not (tmp_path / "data").exists()  # stopped before opening the database

