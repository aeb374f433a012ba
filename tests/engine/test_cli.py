"""`python -m engine` as an operator runs it: tiny-model, then generate into a PNG."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.infotext import prompts_of
from tools import shapes


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


def test_a_picture_without_a_prompt_keeps_its_own(tmp_path: Path, monkeypatch, capsys) -> None:
    """Upscaling (or repainting) a picture with a prompt that does not describe it draws something
    else into it: without --prompt, the prompts the picture's parameters carry are used."""
    code, err = in_process(monkeypatch, capsys, "generate", "--prompt", "an orange triangle on a blue background",
                           "--negative", "green", "--seed", "3", "--steps", "20", "--out", "made/", cwd=tmp_path,
                           SD_MODEL="shapes")
    assert code == 0, err
    code, err = in_process(monkeypatch, capsys, "generate", "--image", "made/dream-3.png", "--upscale", "--seed", "3",
                           "--steps", "20", "--out", "big.png", cwd=tmp_path, SD_MODEL="shapes")
    assert code == 0, err
    assert "the prompt of made/dream-3.png: 'an orange triangle on a blue background', negative 'green'" in err
    big = Image.open(tmp_path / "big.png")
    assert big.text["parameters"].startswith("an orange triangle on a blue background\nNegative prompt: green\n")
    assert shapes.classify(big.convert("RGB").resize((64, 64))) == ("orange", "triangle", "blue")
    Image.new("RGB", (64, 64)).save(tmp_path / "plain.png")
    code, err = in_process(monkeypatch, capsys, "generate", "--image", "plain.png", "--upscale", "--out", "x.png",
                           cwd=tmp_path, SD_MODEL="shapes")
    assert code == 2 and "give --prompt: plain.png carries no parameters to take it from." in err


def test_parameters_give_back_their_prompts() -> None:
    assert prompts_of("a cat\nin a hat\nNegative prompt: dogs\nand mice\nSteps: 20, Seed: 1") == (
        "a cat\nin a hat", "dogs\nand mice")
    assert prompts_of("a cat\nSteps: 20, Seed: 1") == ("a cat", "")
    assert prompts_of("just a comment") is None


def test_generate_refuses_bad_mode_options(tmp_path: Path, monkeypatch, capsys) -> None:
    Image.new("RGB", (60, 64)).save(tmp_path / "odd.png")
    for options, message in ((["--image", "odd.png"], "is 60x64; its sides must be multiples of 8"),
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


# Each: flags that contradict each other, or one that means nothing without another, and what the
# one line of the refusal must name.
REFUSED = [
    (["--image", "in.png", "--upscale", "--outpaint", "left"], ["--outpaint", "--upscale", "run twice"]),
    (["--image", "in.png", "--mask", "m.png", "--outpaint", "all"], ["--mask", "--outpaint", "give one"]),
    (["--image", "in.png", "--mask", "m.png", "--upscale"], ["--mask", "--upscale", "give one"]),
    (["--mask", "m.png", "--end-prompt", "a blue square"], ["--mask", "--end-prompt", "give one"]),
    (["--upscale", "--end-seed", "3"], ["--upscale", "--end-seed", "give one"]),
    (["--image", "in.png", "--end-prompt", "a blue square"], ["--end-prompt", "--image", "drop one"]),
    (["--mask", "m.png"], ["--mask needs --image"]),
    (["--outpaint", "left"], ["--outpaint needs --image"]),
    (["--upscale"], ["--upscale needs --image"]),
    (["--strength", "0.5"], ["--strength needs --image"]),
    (["--strength", "0.5", "--end-prompt", "a blue square"], ["--strength needs --image"]),
    (["--image", "in.png", "--amount", "16"], ["--amount needs --outpaint"]),
    (["--frames", "4"], ["--frames needs --end-prompt or --end-seed"]),
    (["--end-seed", "3", "--count", "2"], ["--count", "--end-seed", "drop --count"]),
    (["--image", "in.png", "--width", "64"], ["--width", "--image", "resize the image"]),
    (["--image", "in.png", "--upscale", "--height", "64"], ["--height", "--image", "resize the image"]),
    (["--image", "in.png", "--aspect", "16:9"], ["--aspect", "--image", "resize the image"]),
    (["--aspect", "16:9", "--width", "64"], ["--aspect", "--width", "give --aspect, or --width and --height"]),
]


@pytest.mark.parametrize(("options", "named"), REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_generate_refuses_conflicting_flags_before_loading(options: list[str], named: list[str], tmp_path: Path,
                                                           monkeypatch, capsys) -> None:
    from engine.pipeline import Engine

    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    Image.new("L", (64, 64)).save(tmp_path / "m.png")

    def no_load(*args, **kwargs):
        raise AssertionError("a model loaded before the flags were checked")

    monkeypatch.setattr(Engine, "load", no_load)
    with pytest.raises(SystemExit) as exited:
        in_process(monkeypatch, capsys, "generate", "--prompt", "a red circle", "--out", "x.png", *options,
                   cwd=tmp_path, SD_MODEL="shapes")
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    [line] = [line for line in err.splitlines() if "error:" in line]  # argparse's: usage, then one line
    assert all(word in line for word in named), line
    assert not (tmp_path / "x.png").exists()


def test_generate_writes_into_a_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    def generate(out: str, *options: str) -> int:
        code, err = in_process(monkeypatch, capsys, "generate", "--prompt", "a red circle on a white background",
                               "--steps", "2", "--out", out, *options, cwd=tmp_path, SD_MODEL="shapes")
        assert code == 0, err
        return code

    # A path ending in a separator is a folder, made if need be; the picture is named as the bot names it.
    generate(f"new{os.sep}deeper{os.sep}", "--seed", "5")
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == ["dream-5.png"]
    assert Image.open(tmp_path / "new" / "deeper" / "dream-5.png").size == (64, 64)
    # An existing folder, with or without the separator: one file per picture, each by its seed,
    # and a folder never overwrites what it holds.
    (tmp_path / "pictures").mkdir()
    generate("pictures", "--seed", "5", "--count", "2")
    generate("pictures", "--seed", "5", "--end-seed", "9", "--frames", "2")
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["dream-5.gif", "dream-5.png", "dream-6.png"]
    generate(f"pictures{os.sep}", "--seed", "6")
    assert (tmp_path / "pictures" / "dream-6-2.png").is_file()
    assert Image.open(tmp_path / "pictures" / "dream-5.gif").n_frames == 2
    # A file name is still the file written, overwritten if it exists.
    generate("pictures/mine.png", "--seed", "6")
    generate("pictures/mine.png", "--seed", "7")
    assert "Seed: 7," in Image.open(tmp_path / "pictures" / "mine.png").text["parameters"]


def test_generate_refuses_a_folder_that_is_a_file(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "taken.png").write_bytes(b"mine")
    with pytest.raises(SystemExit) as exited:
        in_process(monkeypatch, capsys, "generate", "--prompt", "a red circle", "--out", f"taken.png{os.sep}",
                   cwd=tmp_path, SD_MODEL="shapes")
    assert exited.value.code == 2 and "is a file" in capsys.readouterr().err
    assert (tmp_path / "taken.png").read_bytes() == b"mine"


def test_generate_shows_one_progress_bar_its_own(tiny_model: Path, tmp_path: Path) -> None:
    # A fresh process: loading a model is where the libraries draw theirs ("Loading pipeline components").
    done = run("generate", "--prompt", "a fox", "--steps", "3", "--sampler", "Heun", "--out", "fox.png", cwd=tmp_path,
               SD_MODEL=str(tiny_model))
    assert done.returncode == 0, done.stderr
    # Each redraw of a bar is a line here (text mode reads tqdm's carriage returns as newlines).
    redraws = [line for line in done.stderr.splitlines() if "|" in line or "it/s" in line]
    assert all(line.startswith("generating:") for line in redraws), done.stderr
    assert len([line for line in redraws if "%|" in line and " 0%|" in line]) == 1, done.stderr  # one bar
    assert "5/5" in redraws[-1], redraws[-1]  # to the steps the sampler ran (Heun: 2n - 1)
    assert "Loading" not in done.stderr


def test_generate_refuses_a_strength_the_dedicated_upscaler_would_ignore(tmp_path: Path, monkeypatch, capsys) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    code, err = in_process(monkeypatch, capsys, "generate", "--prompt", "a red circle", "--image", "in.png",
                           "--upscale", "--strength", "0.3", "--out", "x.png", cwd=tmp_path, SD_MODEL="shapes",
                           SD_UPSCALER="org/an-upscaler-never-loaded")
    assert code == 2 and "--strength does not apply to SD_UPSCALER's upscaler" in err, err
