"""Speed on a GPU (`engine.speed`), on the tiny models: each setting's effect on the loaded pipeline,
VAE tiling and slicing by size, torch.compile with a counting backend, the preview decoders, the
VAE's float32 rule in float16, and the settings' messages."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo
from diffusers import AutoencoderTiny
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from PIL import Image
from pydantic import ValidationError
from torch.fx.experimental import _config as fx_config

from dreambot.models import Model, scan
from dreambot.request import GenerateRequest, Mode
from dreambot.settings import EngineSettings, StartupError, describe
from engine import imaging, loading, speed
from engine.pipeline import Engine
from engine.speed import PreviewDecoder, Speed, needs_upcast, upcast
from tests.support.models import tiny_sdxl_model


def settings(model: Path | str, **changes) -> EngineSettings:
    return EngineSettings(_env_file=None, sd_model=str(model), **changes)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(settings(tiny_model))  # the defaults, on a CPU


def request(**changes) -> GenerateRequest:
    return GenerateRequest(**{"prompt": "a red fox", "seed": 7, "num_inference_steps": 3, "keep_flagged": True,
                              **changes})


def pixels(engine: Engine, **changes) -> np.ndarray:
    [image] = engine.generate(1, request(**changes)).images
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16)


def processors(module: torch.nn.Module) -> set[type]:
    return {type(processor) for processor in module.attn_processors.values()}


def decoder_inputs(engine: Engine, **changes) -> list[tuple[int, ...]]:
    """The shapes of the latents each call of the VAE's decoder gets, in one job."""
    shapes: list[tuple[int, ...]] = []
    hook = engine.pipe.vae.decoder.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    try:
        engine.generate(1, request(**changes))
    finally:
        hook.remove()
    return shapes


def write_tiny_decoder(directory: Path) -> Path:
    """A tiny random-weight AutoencoderTiny (TAESD's layout, narrow) saved as a folder."""
    torch.manual_seed(3)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).save_pretrained(directory)
    return directory


# -- attention and memory format -----------------------------------------------------------------


def test_sdpa_is_in_use_by_default_and_said_so(engine: Engine, tiny_model: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    assert processors(engine.pipe.unet) == processors(engine.pipe.vae) == {AttnProcessor2_0}
    assert engine.speed.attention == "sdpa"
    # A model that comes with other processors is put on SDPA, and the log counts the layers.
    engine.pipe.unet.set_attn_processor(AttnProcessor())
    with caplog.at_level(logging.INFO, logger="engine.speed"):
        said = speed.use_attention({"UNet": engine.pipe.unet, "VAE": engine.pipe.vae}, "sdpa")
    assert processors(engine.pipe.unet) == {AttnProcessor2_0}
    layers = len(engine.pipe.unet.attn_processors), len(engine.pipe.vae.attn_processors)
    assert said == f"PyTorch SDPA (AttnProcessor2_0 in {layers[0]} UNet and {layers[1]} VAE layers)"
    with caplog.at_level(logging.INFO, logger="engine.speed"):
        Engine.load(settings(tiny_model, sd_attention="classic", sd_channels_last="on"))
    assert re.search(r"attention: classic \(AttnProcessor in \d+ UNet and \d+ VAE layers\); channels-last: on",
                     caplog.text)


def test_classic_attention_and_channels_last_make_the_same_picture(engine: Engine, tiny_model: Path) -> None:
    classic = Engine.load(settings(tiny_model, sd_attention="classic"))
    assert processors(classic.pipe.unet) == processors(classic.pipe.vae) == {AttnProcessor}
    channels_last = Engine.load(settings(tiny_model, sd_channels_last="on"))
    for module in (channels_last.pipe.unet.conv_in, channels_last.pipe.vae.decoder.conv_in):
        assert module.weight.is_contiguous(memory_format=torch.channels_last)
    assert not engine.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)  # auto: not on a CPU
    assert not engine.speed.channels_last and channels_last.speed.channels_last
    default = pixels(engine)
    for other in (classic, channels_last):
        difference = np.abs(pixels(other) - default)
        assert difference.max() <= 2, difference.max()
    # The image modes' pipelines share the modules, memory format and all.
    img2img = channels_last.pipeline(Mode.IMG2IMG)
    assert img2img.unet is channels_last.pipe.unet and img2img.vae is channels_last.pipe.vae


# -- VAE tiling and slicing ----------------------------------------------------------------------


def test_tiling_and_slicing_follow_each_calls_size(tiny_model: Path) -> None:
    # The tiny VAE's tiles are 64 px (8 latents): above 64x64 pixels a picture is decoded in tiles;
    # above 64x64 pixels in all, a call decodes its pictures one at a time.
    small = Engine.load(settings(tiny_model, sd_vae_tile_pixels=64 * 64, sd_vae_slice_pixels=64 * 64))
    assert (small.speed.tile_pixels, small.speed.slice_pixels) == (64 * 64, 64 * 64)
    assert decoder_inputs(small) == [(1, 4, 8, 8)]  # one picture at the limit: neither
    assert decoder_inputs(small, num_images=2) == [(1, 4, 8, 8)] * 2  # sliced
    tiled = decoder_inputs(small, width=64, height=96)
    assert len(tiled) > 1 and all(shape[2] < 12 for shape in tiled)  # 12 latents high, in tiles
    result = small.generate(1, request(width=64, height=96))
    assert (result.width, result.height) == (64, 96)
    assert small.pipe.vae.use_tiling  # until the next job, which sets its own
    assert decoder_inputs(small) == [(1, 4, 8, 8)] and not small.pipe.vae.use_tiling
    assert not small.pipe.vae.use_slicing
    # An image mode's pipeline shares the VAE and is set for its own size: the input is encoded in tiles too.
    encoded: list[tuple[int, ...]] = []
    hook = small.pipe.vae.encoder.register_forward_pre_hook(lambda module, args: encoded.append(tuple(args[0].shape)))
    try:
        small.generate(1, request(mode=Mode.IMG2IMG, image=png(Image.new("RGB", (96, 64), "teal"))))
    finally:
        hook.remove()
    assert len(encoded) > 1 and all(shape[3] < 96 for shape in encoded)


def test_zero_turns_tiling_and_slicing_off(engine: Engine) -> None:
    never = Speed(tile_pixels=0, slice_pixels=0)
    engine.pipe.vae.enable_tiling()
    engine.pipe.vae.enable_slicing()
    never.decoding(engine.pipe, 16, 4096, 4096)
    assert not engine.pipe.vae.use_tiling and not engine.pipe.vae.use_slicing
    Speed(tile_pixels=1536 * 1536, slice_pixels=4 * 1024 * 1024).decoding(engine.pipe, 4, 1024, 1024)
    assert not engine.pipe.vae.use_tiling and not engine.pipe.vae.use_slicing  # the defaults, at 4 x 1024²
    Speed(tile_pixels=1536 * 1536, slice_pixels=4 * 1024 * 1024).decoding(engine.pipe, 2, 2048, 2048)
    assert engine.pipe.vae.use_tiling and engine.pipe.vae.use_slicing
    never.decoding(engine.pipe, 1, 64, 64)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- torch.compile -------------------------------------------------------------------------------


def test_compile_warms_up_once_and_serves_every_size_with_those_graphs(
        engine: Engine, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    compiled: list[torch.fx.GraphModule] = []
    runs: list[int] = []

    def counting(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        compiled.append(graph)

        def run(*args):
            runs.append(1)
            return graph.forward(*args)
        return run

    monkeypatch.setattr(speed, "COMPILE_BACKEND", counting)
    # What compiling sets for the whole process, put back afterwards.
    monkeypatch.setattr(fx_config, "use_duck_shape", fx_config.use_duck_shape)
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    try:
        with caplog.at_level(logging.INFO, logger="engine.speed"):
            fast = Engine.load(settings(tiny_model, sd_compile=True))
        assert re.search(r"compiled the UNet and VAE decoder of tiny in \d+\.\d s \(2-step warm-ups of one and two "
                         r"pictures at 64×64\)", caplog.text)
        warmed = len(compiled)
        assert warmed >= 2 and fast.speed.compiled  # the UNet's graph(s) and the decoder's
        # New sizes (a multiple of 64 px on a real model: here, of the tiny UNet's 16 px), and jobs of
        # several pictures, reuse them.
        for width, height, pictures in ((96, 64, 1), (64, 128, 1), (64, 64, 3)):
            fast.generate(1, request(width=width, height=height, num_images=pictures))
        assert len(compiled) == warmed
        # The image modes' pipelines share the compiled UNet, at their own size too.
        before = len(runs)
        fast.generate(1, request(mode=Mode.IMG2IMG, image=png(Image.new("RGB", (80, 64), "teal"))))
        assert len(runs) > before and len(compiled) == warmed
        # The compiled graphs compute what the model does.
        assert np.abs(pixels(fast) - pixels(engine)).max() <= 2
    finally:
        torch._dynamo.reset()


# -- preview decoders ----------------------------------------------------------------------------


def test_a_preview_decoder_draws_the_previews(tiny_model: Path, tmp_path: Path) -> None:
    source = write_tiny_decoder(tmp_path / "taesd")
    drawn = Engine.load(settings(tiny_model, sd_preview_decoder=str(source)))
    decoder = drawn.speed.preview_decoder("sd")
    assert isinstance(decoder, PreviewDecoder) and drawn.speed.preview_decoder("sdxl") is None
    calls: list[tuple[int, ...]] = []
    decoder.vae.decoder.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape)))
    previews: list[bytes | None] = []
    drawn.generate(1, request(width=64, height=96, num_inference_steps=2),
                   lambda step, total, preview: previews.append(preview(0)))
    assert calls == [(1, 4, 12, 8)] * 2  # each step's latents, decoded
    sizes = {Image.open(io.BytesIO(data)).size for data in previews if data}
    assert sizes == {(85, imaging.PREVIEW_SIDE)}  # as the linear approximation's: 128 px on the long side
    # Without one, the linear approximation, at the same size.
    plain: list[bytes | None] = []
    Engine.load(settings(tiny_model)).generate(1, request(width=64, height=96, num_inference_steps=2),
                                               lambda step, total, preview: plain.append(preview(0)))
    assert {Image.open(io.BytesIO(data)).size for data in plain if data} == sizes
    assert plain != previews


def test_a_models_family_picks_its_preview_decoder(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    source = str(write_tiny_decoder(tmp_path / "taesdxl"))
    sdxl = tiny_sdxl_model(tmp_path_factory)
    assert Engine.load(settings(sdxl, sd_preview_decoder=source)).speed.previews == {}  # SD 1.x/2.x's only
    assert set(Engine.load(settings(sdxl, sdxl_preview_decoder=source)).speed.previews) == {"sdxl"}


def test_a_preview_decoder_that_cannot_load_is_named(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(loading.ModelLoadError, match=r"could not load SD_PREVIEW_DECODER 'org/no-such-taesd'"):
        Engine.load(settings(tiny_model, sd_preview_decoder="org/no-such-taesd"))  # offline in the tests


# -- the VAE in float16 --------------------------------------------------------------------------


def test_sdxls_vae_decodes_in_float32_unless_it_is_safe_in_float16(tmp_path_factory: pytest.TempPathFactory,
                                                                 tmp_path: Path) -> None:
    # SDXL's own VAE overflows in float16 (its config says force_upcast); an fp16-fix one does not.
    sdxl = tiny_sdxl_model(tmp_path_factory)
    half = Engine.load(settings(sdxl, sd_dtype="float16"))
    assert half.pipe.vae.config.force_upcast and half.pipe.vae.dtype == torch.float16
    assert {dtype for dtype in decoded_dtypes(half)} == {torch.float32}
    assert half.pipe.vae.dtype == torch.float16  # back, for the next job
    # The same model with a VAE whose config says it is safe (as madebyollin/sdxl-vae-fp16-fix's does),
    # named in models.toml.
    models = tmp_path / "models"
    models.mkdir()
    half.pipe.vae.register_to_config(force_upcast=False)
    half.pipe.vae.save_pretrained(models / "fp16-fix")
    (models / "models.toml").write_text(f'[models.xl]\nsource = "{sdxl}"\nvae = "fp16-fix"\n')
    model = scan(models, "xl").get("xl")
    assert isinstance(model, Model) and model.defaults.vae == str(models / "fp16-fix")
    fixed = Engine.load(settings(sdxl, sd_dtype="float16", models_dir=models), model)
    assert not fixed.pipe.vae.config.force_upcast
    assert {dtype for dtype in decoded_dtypes(fixed)} == {torch.float16}


def decoded_dtypes(engine: Engine) -> list[torch.dtype]:
    dtypes: list[torch.dtype] = []
    hook = engine.pipe.vae.decoder.register_forward_pre_hook(lambda module, args: dtypes.append(args[0].dtype))
    try:
        engine.generate(1, request(num_inference_steps=2))
    finally:
        hook.remove()
    return dtypes


def test_the_engines_own_decoding_follows_the_same_rule(tmp_path: Path) -> None:
    # The one VAE the engine calls itself: a preview decoder. In float16 with force_upcast, float32 for the call.
    for force_upcast, dtype, inside in ((True, torch.float16, torch.float32), (False, torch.float16, torch.float16),
                                        (True, torch.bfloat16, torch.bfloat16), (True, torch.float32, torch.float32)):
        vae = AutoencoderTiny.from_pretrained(write_tiny_decoder(tmp_path / "taesd"), dtype=dtype)
        vae.register_to_config(force_upcast=force_upcast)  # TAESD's is always false: it is safe in float16
        seen: list[torch.dtype] = []
        vae.decoder.register_forward_pre_hook(lambda module, args, seen=seen: seen.append(args[0].dtype))
        assert needs_upcast(vae) == (inside != dtype)
        data = PreviewDecoder(vae)(torch.randn(4, 8, 12))
        assert seen == [inside] and next(vae.parameters()).dtype == dtype
        assert Image.open(io.BytesIO(data)).size == (imaging.PREVIEW_SIDE, 85)
        with upcast(vae):
            assert next(vae.parameters()).dtype == inside
        assert next(vae.parameters()).dtype == dtype


def test_a_vae_hub_id_is_loaded_from_the_hub(engine: Engine) -> None:
    # models.toml's `vae = "madebyollin/sdxl-vae-fp16-fix"` reaches the hub (offline in the tests), not the disk.
    with pytest.raises(loading.ModelLoadError, match=r"could not load the VAE 'madebyollin/sdxl-vae-fp16-fix': "):
        loading.load_vae("madebyollin/sdxl-vae-fp16-fix", engine.pipe, torch.float32)


# -- the settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "said"), [
    ({"sd_attention": "flash"}, "SD_ATTENTION Input should be 'sdpa' or 'classic'"),
    ({"sd_channels_last": "yes"}, "SD_CHANNELS_LAST Input should be 'auto', 'on' or 'off'"),
    ({"sd_compile": "sometimes"}, "SD_COMPILE Input should be a valid boolean"),
    ({"sd_vae_tile_pixels": "-1"}, "SD_VAE_TILE_PIXELS Input should be greater than or equal to 0"),
    ({"sd_vae_slice_pixels": "lots"}, "SD_VAE_SLICE_PIXELS Input should be a valid integer"),
])
def test_a_bad_speed_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, changes: dict, said: str) -> None:
    for name, value in changes.items():
        monkeypatch.setenv(name.upper(), value)
    with pytest.raises(ValidationError) as error:
        EngineSettings(_env_file=None)
    line = describe(error.value)
    assert line.startswith(f"invalid settings: {said}") and "\n" not in line


def test_the_speed_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    default = EngineSettings(_env_file=None)
    assert (default.sd_attention, default.sd_channels_last, default.sd_compile, default.sd_vae_tile_pixels,
            default.sd_vae_slice_pixels, default.sd_preview_decoder, default.sdxl_preview_decoder) == \
        ("sdpa", "auto", False, 2359296, 4194304, None, None)
    monkeypatch.setenv("SD_COMPILE", "1")
    monkeypatch.setenv("SD_VAE_TILE_PIXELS", "0")
    monkeypatch.setenv("SDXL_PREVIEW_DECODER", "madebyollin/taesdxl")
    changed = EngineSettings(_env_file=None)
    assert (changed.sd_compile, changed.sd_vae_tile_pixels, changed.sdxl_preview_decoder) == \
        (True, 0, "madebyollin/taesdxl")


def checked(tmp_path: Path, **changes) -> str | None:
    """The start-up check's complaint (`EngineSettings.checked_catalogue`); None: it passes."""
    try:
        EngineSettings(_env_file=None, sd_model="org/model", models_dir=tmp_path / "models",
                       **changes).checked_catalogue()
    except StartupError as error:
        return str(error)
    return None


def test_a_wrong_preview_decoder_stops_the_start_with_one_line(tmp_path: Path) -> None:
    assert checked(tmp_path, sd_preview_decoder="madebyollin/taesd", sdxl_preview_decoder="madebyollin/taesdxl") is None
    assert checked(tmp_path, sd_preview_decoder=str(write_tiny_decoder(tmp_path / "taesd"))) is None
    said = checked(tmp_path, sd_preview_decoder="./taesd-missing")
    assert said.startswith("SD_PREVIEW_DECODER './taesd-missing' does not exist (looked for ")
    assert "give a model hub id such as madebyollin/taesd, or leave it empty" in said
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    assert checked(tmp_path, sdxl_preview_decoder=str(vae)) == (
        f"SDXL_PREVIEW_DECODER {str(vae)!r} is a folder of AutoencoderKL, not a tiny decoder (AutoencoderTiny): "
        "point it at a folder such as a download of madebyollin/taesdxl, give that hub id, or leave it empty")
    (vae / "config.json").write_text('{"_class_name": "AutoencoderTiny"}')
    assert "holds no weights beside its config.json" in checked(tmp_path, sd_preview_decoder=str(vae))
    file = tmp_path / "taesd.safetensors"
    file.write_bytes(b"x")
    assert checked(tmp_path, sd_preview_decoder=str(file)).endswith(
        "is a file: it takes a tiny decoder's folder or a model hub id such as madebyollin/taesd")
