"""`python -m engine` as an operator runs it: tiny-model, then generate into a PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def in_process(monkeypatch, capsys, *args: str, cwd: Path, **env: str) -> tuple[int, str]:
    """The CLI's own `main`, in this process: the same code as `python -m engine`, without a fresh
    interpreter's seconds of imports each time (the tests above run the real command)."""
    from engine.__main__ import main

    monkeypatch.chdir(cwd)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(list(args))
    return code, capsys.readouterr().err


def test_tiny_model_then_generate_is_reproducible(tmp_path: Path) -> None:
    made = run("tiny-model", "tiny", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "tiny" / "model_index.json").is_file() and (tmp_path / "tiny" / "tokenizer").is_dir()

    first = run("generate", "--prompt", "a red fox", "--seed", "7", "--out", "fox.png", cwd=tmp_path, SD_MODEL="tiny")
    assert first.returncode == 0, first.stderr
    assert "wrote fox.png (seed 7, 64x64" in first.stdout
    png = (tmp_path / "fox.png").read_bytes()
    parameters = Image.open(tmp_path / "fox.png").text["parameters"]
    assert parameters.splitlines()[0] == "a red fox" and "Seed: 7," in parameters and "Model: tiny" in parameters

    again = run("generate", "--prompt", "a red fox", "--seed", "7", "--out", "fox.png", cwd=tmp_path, SD_MODEL="tiny")
    assert again.returncode == 0 and (tmp_path / "fox.png").read_bytes() == png


def test_generate_with_every_option(tiny_model: Path, tmp_path: Path) -> None:
    done = run("generate", "--prompt", "a cat", "--negative", "dogs", "--steps", "6", "--guidance", "4.5",
               "--seed", "100", "--width", "96", "--height", "72", "--sampler", "Euler a", "--count", "2",
               "--out", "out/cat.png", cwd=tmp_path, SD_MODEL=str(tiny_model))
    assert done.returncode == 0, done.stderr
    for index, seed in ((1, 100), (2, 101)):
        image = Image.open(tmp_path / "out" / f"cat-{index}.png")
        assert image.size == (96, 72)
        assert image.text["parameters"] == (
            f"a cat\nNegative prompt: dogs\n"
            f"Steps: 6, Sampler: Euler a, CFG scale: 4.5, Seed: {seed}, Size: 96x72, Model: tiny"
        )
    assert "generating" in done.stderr  # the progress bar


def test_generate_refuses_bad_input_clearly(tiny_model: Path, tmp_path: Path) -> None:
    done = run("generate", "--prompt", "a cat", "--width", "100", "--out", "x.png", cwd=tmp_path,
               SD_MODEL=str(tiny_model))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: Width must be a multiple of 8 (got 100; try 96 or 104)."
    missing = run("generate", "--prompt", "a cat", "--out", "x.png", cwd=tmp_path, SD_MODEL="nowhere/at-all")
    assert missing.returncode == 1 and "could not load SD_MODEL 'nowhere/at-all'" in missing.stderr
    assert not (tmp_path / "x.png").exists()


def test_flagged_images_are_not_written(flagging_model: Path, tmp_path: Path) -> None:
    done = run("generate", "--prompt", "a cat", "--steps", "3", "--out", "x.png", cwd=tmp_path,
               SD_MODEL=str(flagging_model))
    assert done.returncode == 3 and "was flagged by the safety checker" in done.stdout
    assert not (tmp_path / "x.png").exists()


def test_generate_in_each_mode(tmp_path: Path, monkeypatch, capsys) -> None:
    Image.new("RGB", (64, 64), (40, 80, 230)).save(tmp_path / "in.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    mask.save(tmp_path / "mask.png")
    cases = [
        (["--image", "in.png", "--strength", "0.5"], "img.png", (64, 64)),
        (["--image", "in.png", "--mask", "mask.png"], "inpaint.png", (64, 64)),
        (["--image", "in.png", "--outpaint", "left", "--amount", "16"], "out.png", (80, 64)),
        (["--image", "in.png", "--upscale"], "up.png", (128, 128)),
        (["--end-prompt", "a blue square on a white background", "--frames", "3"], "anim.gif", (64, 64)),
    ]
    for options, name, size in cases:
        code, err = in_process(monkeypatch, capsys, "generate", "--prompt", "a red circle on a blue background",
                               "--seed", "1", "--steps", "4", "--out", name, *options, cwd=tmp_path, SD_MODEL="shapes")
        assert code == 0, (options, err)
        assert Image.open(tmp_path / name).size == size, options
    assert Image.open(tmp_path / "anim.gif").n_frames == 3


def test_generate_refuses_bad_mode_options(tmp_path: Path, monkeypatch, capsys) -> None:
    Image.new("RGB", (60, 64)).save(tmp_path / "odd.png")
    for options, message in ((["--mask", "m.png"], "--mask needs --image"),
                             (["--image", "odd.png"], "is 60x64; its sides must be multiples of 8"),
                             (["--image", "missing.png"], "cannot read the image missing.png")):
        code, err = in_process(monkeypatch, capsys, "generate", "--prompt", "x", "--out", "x.png", *options,
                               cwd=tmp_path, SD_MODEL="shapes")
        assert code == 2 and message in err, (options, err)


def test_generate_takes_a_model_of_the_catalogue_with_its_defaults(tiny_model: Path, tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_model, models / "mine")
    (models / "models.toml").write_text("[models.mine]\nsteps = 2\nsampler = \"Euler\"\n")
    code, out = in_process(monkeypatch, capsys, "generate", "--model", "mine", "--aspect", "16:9", "--prompt", "a fox",
                           "--seed", "1", "--out", "wide.png", cwd=tmp_path, MODELS_DIR=str(models), SD_MODEL="mine")
    assert code == 0
    picture = Image.open(tmp_path / "wide.png")
    assert picture.size == (112, 64) and "Steps: 2, Sampler: Euler," in picture.text["parameters"]
    code, out = in_process(monkeypatch, capsys, "generate", "--model", "nope", "--prompt", "a fox", "--out", "x.png",
                           cwd=tmp_path, MODELS_DIR=str(models), SD_MODEL="mine")
    assert code == 2 and "there is no model named 'nope' (installed: mine" in out
