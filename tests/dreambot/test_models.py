"""The catalogue of models (`dreambot.models`): what MODELS_DIR and models.toml offer, the default,
the checks an operator's mistakes meet, and the `aspect` sizes at real models' pixel counts."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest

from dreambot.errors import InvalidRequest
from dreambot.models import (
    ASPECTS,
    ModelsError,
    Place,
    Watched,
    aspect_size,
    is_hub_id,
    scan,
    source_problem,
    start_estimate,
    upscaler_problem,
    weights_on_disk,
)
from dreambot.request import Limits

# The keys (and shapes) that tell each family in the original checkpoint layout.
UNET = "model.diffusion_model.input_blocks.0.0.weight"
VAE = "first_stage_model.decoder.conv_out.weight"
SD1_CLIP = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SD2_CLIP = "cond_stage_model.model.token_embedding.weight"


def checkpoint(path: Path, keys: dict[str, list[int]], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file with these tensors' names and shapes in its header (no data is read)."""
    header: dict = {name: {"dtype": "F16", "shape": shape, "data_offsets": [0, 0]} for name, shape in keys.items()}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def folder(path: Path, pipeline: str = "StableDiffusionPipeline", sample_size: int = 64) -> Path:
    for part, config in (("unet", {"in_channels": 4, "sample_size": sample_size, "cross_attention_dim": 768}),
                         ("vae", {"block_out_channels": [128, 256, 512, 512]}),
                         ("text_encoder", {"hidden_act": "quick_gelu"}),
                         ("scheduler", {"prediction_type": "epsilon"})):
        (path / part).mkdir(parents=True)
        name = "scheduler_config.json" if part == "scheduler" else "config.json"
        (path / part / name).write_text(json.dumps(config))
    index = {"_class_name": pipeline, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "scheduler": ["diffusers", "PNDMScheduler"]}
    (path / "model_index.json").write_text(json.dumps(index))
    return path


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    folder(models / "base")
    checkpoint(models / "anime.safetensors", {UNET: [320, 4, 3, 3], VAE: [3, 128, 3, 3], SD1_CLIP: [49408, 768]})
    checkpoint(models / "sd21.safetensors", {UNET: [320, 9, 3, 3], VAE: [3, 128, 3, 3], SD2_CLIP: [49408, 1024]})
    checkpoint(models / "vae-ft-mse.safetensors", {VAE: [3, 128, 3, 3]})  # not a model: a VAE
    (models / "notes.txt").write_text("not a model")
    return models


def test_every_folder_and_checkpoint_is_a_model_named_by_its_stem(models_dir: Path) -> None:
    catalogue = scan(models_dir, "base")
    assert [model.name for model in catalogue] == ["anime", "base", "sd21"]
    assert {m.name: m.family for m in catalogue} == {"anime": "sd1", "base": "sd1", "sd21": "sd2-inpaint"}
    assert catalogue.default == "base" and catalogue.get("ANIME").name == "anime"
    assert catalogue.get("anime").size == (512, 512)  # a file's family's native size
    with pytest.raises(InvalidRequest, match="There is no model named “x” \\(installed: anime, base, sd21\\)"):
        catalogue.resolve("x")


def test_sd_model_alone_works_as_before_and_beside_the_folder(models_dir: Path, tmp_path: Path) -> None:
    alone = scan(tmp_path / "nothing-here", "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert [m.name for m in alone] == ["stable-diffusion-v1-5"] and alone.get(None).source.startswith("stable-")
    other = folder(tmp_path / "elsewhere" / "mine")
    both = scan(models_dir, str(other))
    assert both.default == "mine" and both.get("mine").source == str(other) and len(both) == 4
    with pytest.raises(ModelsError, match="has the name of a model in"):
        scan(models_dir, str(folder(tmp_path / "again" / "anime")))


def test_models_toml_names_describes_and_sets_defaults(models_dir: Path) -> None:
    (models_dir / "models.toml").write_text('''
default = "anime"
[models.anime]
name = "Anime v3"
description = "Flat colours."
steps = 20
guidance = 5
sampler = "Euler a"
size = 768
clip_skip = 2
vae = "vae-ft-mse.safetensors"
negative_prompt = "lowres"
[models.turbo]
source = "stabilityai/sdxl-turbo"
steps = 1
guidance = 0
''')
    catalogue = scan(models_dir, "stable-diffusion-v1-5/stable-diffusion-v1-5", sd_model_set=False)
    assert catalogue.default == "anime"  # SD_MODEL unset: models.toml's default
    anime = catalogue.get("anime")
    assert (anime.title, anime.description, anime.label) == ("Anime v3", "Flat colours.", "Anime v3 · SD 1.x")
    assert (anime.defaults.steps, anime.defaults.guidance, anime.defaults.sampler, anime.size,
            anime.defaults.clip_skip, anime.defaults.negative_prompt) == (20, 5.0, "Euler a", (768, 768), 2, "lowres")
    assert anime.defaults.vae == str(models_dir / "vae-ft-mse.safetensors")
    turbo = catalogue.get("turbo")
    assert turbo.source == "stabilityai/sdxl-turbo" and turbo.family is None and turbo.defaults.steps == 1
    assert scan(models_dir, "base").default == "base"  # SD_MODEL set: it wins


def test_a_models_vae_may_be_a_hub_id(models_dir: Path) -> None:
    # SDXL's VAE overflows in float16; the fp16-fix one does not, and comes from the hub.
    (models_dir / "models.toml").write_text('[models.anime]\nvae = "madebyollin/sdxl-vae-fp16-fix"\n')
    anime = scan(models_dir, "base", sd_model_set=False).get("anime")
    assert anime is not None and anime.defaults.vae == "madebyollin/sdxl-vae-fp16-fix"
    # A path of that shape that exists in MODELS_DIR is the folder, not a hub id.
    (models_dir / "madebyollin" / "sdxl-vae-fp16-fix").mkdir(parents=True)
    anime = scan(models_dir, "base", sd_model_set=False).get("anime")
    assert anime is not None and anime.defaults.vae == str(models_dir / "madebyollin" / "sdxl-vae-fp16-fix")


@pytest.mark.parametrize(("text", "said"), [
    ("[models.anime]\nsampler = \"Fast\"", "sampler must be one of"),
    ("[models.anime]\nsteps = 0", "steps must be a whole number from 1 to 500"),
    ("[models.anime]\nsize = 500", "size must be a multiple of 8"),
    ("[models.anime]\ncfg = 7", "unknown keys ['cfg']"),
    ("[models.ghost]\nsteps = 4", "[models.ghost] names no model"),
    ("[models.anime]\nvae = \"missing.safetensors\"", "vae must be a VAE folder, .safetensors or .ckpt file"),
    ("default = \"ghost\"", "default = 'ghost' names no model"),
    ("models = 3", "each model is a table"),
    ("[models.anime\n", "is not valid TOML"),
    ("[models.anime]\nsteps = true", "steps must be a whole number"),
    ("[models.anime]\nclip_skip = true", "clip_skip must be a whole number"),
    ("[models.anime]\nvae = \"../../../../etc/passwd\"", "vae must be a VAE folder, .safetensors or .ckpt file inside"),
    ("[models.anime]\nvae = \"vaes/missing.safetensors\"", "or a model hub id such as"),
    ("[models.anime]\nnegative_prompt = \"" + "x" * 1001 + "\"", "negative_prompt must be at most 1000"),
    ("[models.ANIME]\nsource = \"org/anime\"", "already holds a model of that name"),
    ("[models.anime]\nsize = 1000000000", "size must be a multiple of 8"),
])
def test_a_mistake_in_models_toml_is_named(models_dir: Path, text: str, said: str) -> None:
    (models_dir / "models.toml").write_text(text)
    with pytest.raises(ModelsError) as error:
        scan(models_dir, "base", sd_model_set=False)
    assert said in str(error.value) and "models.toml" in str(error.value)


def test_the_catalogue_follows_the_folder_and_keeps_the_last_good_one(models_dir: Path) -> None:
    watched = Watched(models_dir, lambda: scan(models_dir, "base"))
    assert len(watched.current()) == 3
    checkpoint(models_dir / "new.safetensors", {UNET: [320, 4, 3, 3], VAE: [3, 128, 3, 3], SD1_CLIP: [49408, 768]})
    os.utime(models_dir, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert "new" in {m.name for m in watched.current()}
    (models_dir / "models.toml").write_text("[models.new]\nsteps = -1\n")  # broken meanwhile: logged, kept
    assert "new" in {m.name for m in watched.current()}


@pytest.mark.parametrize("side", [512, 768, 1024])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_aspect_keeps_the_ratio_and_the_pixel_count(aspect: str, side: int) -> None:
    width, height = aspect_size(aspect, side * side, Limits(max_width=2048, max_height=2048))
    across, down = map(int, aspect.split(":"))
    assert abs(width / height / (across / down) - 1) <= 0.05
    assert abs(width * height / (side * side) - 1) <= 0.1
    assert width % 8 == 0 and height % 8 == 0


def test_aspect_stays_within_the_limits() -> None:
    assert aspect_size("16:9", 1024 * 1024, Limits()) == (1024, 576)  # MAX_WIDTH 1024: smaller, same shape
    assert aspect_size("21:9", 64 * 64) == (144, 64)  # never a side under 64
    with pytest.raises(InvalidRequest, match="Unknown aspect ratio"):
        aspect_size("5:4", 512 * 512)


def test_a_channel_allows_models_by_name_in_any_case() -> None:
    assert Place().allows("anything")
    only = Place(allowed=("Anime",))
    assert only.allows("anime") and not only.allows("base")
    assert only.refusal("base") == "The model “base” is not used in this channel; its moderators allow Anime here."


# -- the start-up check of a model's source (`source_problem`, `upscaler_problem`) -------------------


def whole(path: Path, pipeline: str = "StableDiffusionPipeline") -> Path:
    """`folder` with a weight file in each part that has weights, as a finished download has."""
    folder(path, pipeline)
    for part in ("unet", "vae"):
        (path / part / "diffusion_pytorch_model.safetensors").write_bytes(b"w" * 1000)
        (path / part / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"w" * 500)  # a variant: not read
    (path / "text_encoder" / "model.safetensors").write_bytes(b"w" * 200)
    (path / "text_encoder" / "pytorch_model.bin").write_bytes(b"w" * 200)  # .safetensors is read instead
    return path


@pytest.mark.parametrize("source", ["stable-diffusion-v1-5/stable-diffusion-v1-5", "org/name", "a.b/c-d_e"])
def test_a_hub_id_passes_as_it_is(source: str) -> None:
    assert is_hub_id(source) and source_problem(source) is None


@pytest.mark.parametrize("source", ["./no-such-model", "/no/such/model", "no-such.safetensors", "dir/x.ckpt",
                                    "~/models/x", "../x", "a/b/c", "C:\\models\\x"])
def test_a_path_that_does_not_exist_is_an_error(source: str) -> None:
    assert not is_hub_id(source)
    assert source_problem(source).startswith("does not exist (looked for ")


def test_a_whole_model_passes_and_a_broken_one_is_named(tmp_path: Path) -> None:
    assert source_problem(str(whole(tmp_path / "good"))) is None
    assert source_problem("shapes", {"shapes": whole(tmp_path / "built-in")}) is None

    incomplete = whole(tmp_path / "incomplete")
    (incomplete / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (incomplete / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    assert "lacks the weights in unet/" in source_problem(str(incomplete))
    (incomplete / "vae" / "config.json").unlink()
    (incomplete / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    (incomplete / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    (incomplete / "vae").rmdir()
    assert "lacks the weights in unet/, vae/" in source_problem(str(incomplete))

    parent = tmp_path / "models"
    whole(parent / "inside")
    said = source_problem(str(parent))
    assert "without model_index.json" in said and "set MODELS_DIR to this folder" in said
    assert "another kind (StableDiffusionLatentUpscalePipeline)" in source_problem(
        str(whole(tmp_path / "upscaler", "StableDiffusionLatentUpscalePipeline")))


def test_a_checkpoint_must_be_a_whole_model_of_a_known_family(tmp_path: Path) -> None:
    sd1 = {UNET: [320, 4, 3, 3], VAE: [3, 128, 3, 3], SD1_CLIP: [49408, 768]}
    assert source_problem(str(checkpoint(tmp_path / "anime.safetensors", sd1))) is None
    assert "not a whole Stable Diffusion" in source_problem(str(checkpoint(tmp_path / "vae.safetensors",
                                                                           {VAE: [3, 128, 3, 3]})))
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert "cannot be read as a checkpoint (cut short" in source_problem(str(tmp_path / "cut.safetensors"))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert "empty file" in source_problem(str(tmp_path / "empty.ckpt"))
    (tmp_path / "old.ckpt").write_bytes(b"PK")  # a pickle: only the engine opens it
    assert source_problem(str(tmp_path / "old.ckpt")) is None
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a .safetensors or .ckpt checkpoint" in source_problem(str(tmp_path / "notes.txt"))


def test_sd_upscaler_is_a_latent_upscaler_folder_or_a_hub_id(tmp_path: Path) -> None:
    assert upscaler_problem("stabilityai/sd-x2-latent-upscaler") is None
    assert upscaler_problem(str(whole(tmp_path / "up", "StableDiffusionLatentUpscalePipeline"))) is None
    assert "not a latent upscaler" in upscaler_problem(str(whole(tmp_path / "sd")))
    assert upscaler_problem("./no-upscaler").startswith("does not exist")
    assert upscaler_problem(str(checkpoint(tmp_path / "up.safetensors", {VAE: [3, 128, 3, 3]}))).startswith(
        "is a file")


def test_a_start_is_estimated_from_the_weights_it_reads(tmp_path: Path) -> None:
    model = whole(tmp_path / "model")
    (model / "loras").mkdir()
    (model / "loras" / "big.safetensors").write_bytes(b"l" * 10_000)  # the model's own LoRAs load later
    assert weights_on_disk(str(model)) == 1000 + 1000 + 200  # each part once, no variant, no .bin twin
    assert weights_on_disk("org/name") is None and start_estimate("org/name") is None
    file = checkpoint(tmp_path / "anime.safetensors", {UNET: [320, 4, 3, 3]})
    assert start_estimate(str(file)) == pytest.approx(15.0 + file.stat().st_size / 100e6)

