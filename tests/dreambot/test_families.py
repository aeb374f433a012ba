"""Telling a model's Stable Diffusion family (`dreambot.families`) from a checkpoint's tensor names and
shapes, read from the safetensors header alone, or from a diffusers folder's JSON configs; no torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreambot import families

# The keys each part is known by, with the shapes of the real models (SD 1.5, SD 2.1, SDXL base).
UNET_IN = {families.UNET_IN: (320, 4, 3, 3)}
VAE = {families.VAE_OUT: (3, 128, 3, 3), "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}
CLIP_L = {families.CLIP: (49408, 768)}
OPEN_CLIP_H = {families.OPEN_CLIP: (49408, 1024), "cond_stage_model.model.text_projection": (1024, 1024)}
SDXL_ENCODERS = {families.SDXL_CLIP: (49408, 768), families.SDXL_OPEN_CLIP: (49408, 1280),
                 "conditioner.embedders.1.model.text_projection": (1280, 1280)}
INPAINTING_UNET_IN = {families.UNET_IN: (320, 9, 3, 3)}


def safetensors_file(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Path:
    """A valid safetensors file of zero-filled float16 tensors, written by hand (the kernel has no torch)."""
    header: dict = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for side in shape:
            size *= side
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata is not None:
        header["__metadata__"] = metadata
    data = json.dumps(header).encode()
    with path.open("wb") as file:
        file.write(len(data).to_bytes(8, "little") + data)
        file.truncate(8 + len(data) + offset)  # the zeros as a hole: real-sized shapes, no real size on disk
    return path


@pytest.mark.parametrize(
    ("shapes", "family"),
    [
        ({**UNET_IN, **VAE, **CLIP_L}, "sd1"),
        ({**INPAINTING_UNET_IN, **VAE, **CLIP_L}, "sd1-inpaint"),
        ({**UNET_IN, **VAE, **OPEN_CLIP_H}, "sd2"),
        ({**INPAINTING_UNET_IN, **VAE, **OPEN_CLIP_H}, "sd2-inpaint"),
        ({**UNET_IN, **VAE, **SDXL_ENCODERS}, "sdxl"),
        ({**INPAINTING_UNET_IN, **VAE, **SDXL_ENCODERS}, "sdxl-inpaint"),
        # Not a whole text-to-image model of these families:
        (VAE, None),  # a VAE alone
        ({**UNET_IN, **CLIP_L}, None),  # no VAE
        ({**UNET_IN, **VAE}, None),  # no text encoder
        ({families.UNET_IN: (320, 8, 3, 3), **VAE, **CLIP_L}, None),  # instruct-pix2pix: 8 input channels
        ({**UNET_IN, **VAE, "conditioner.embedders.0.model.token_embedding.weight": (49408, 1280)}, None),  # refiner
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320, 1, 1)}, None),  # a LoRA
        ({}, None),
    ],
)
def test_the_family_is_told_from_tensor_names_and_shapes(shapes: dict, family: str | None) -> None:
    assert families.family_of(shapes) == family


def test_the_safetensors_header_alone_tells_shapes_and_metadata(tmp_path: Path) -> None:
    spec = {"modelspec.architecture": "stable-diffusion-v2-768-v", "modelspec.resolution": "768x768"}
    path = safetensors_file(tmp_path / "model.safetensors", {**UNET_IN, **VAE, **OPEN_CLIP_H}, spec)
    shapes, metadata = families.read_safetensors_header(path)
    assert shapes[families.UNET_IN] == (320, 4, 3, 3) and metadata == spec
    assert families.read_safetensors_shapes(path) == shapes
    assert families.family_of(shapes) == "sd2"
    assert families.prediction_type_of(metadata) == "v_prediction" and families.resolution_of(metadata) == 768


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"tiny", "too short to be a safetensors file"),
        ((200_000_000).to_bytes(8, "little") + b"{}", "its header would be 200000000 bytes"),
        ((100).to_bytes(8, "little") + b"{}", "cut short"),
        ((5).to_bytes(8, "little") + b"nope!", "its header is not JSON"),
        ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
        ((15).to_bytes(8, "little") + b'{"w": {"x": 1}}', "tensor 'w' has no shape"),
        ((13).to_bytes(8, "little") + b'{"w": "text"}', "tensor 'w' has no shape"),
    ],
    ids=["short", "huge header", "truncated", "not JSON", "a list", "no shape", "not a dict"],
)
def test_a_file_that_is_no_safetensors_says_why(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(families.CheckpointHeaderError, match=message):
        families.read_safetensors_header(path)
    assert families.read_safetensors_shapes(path) is None  # the catalogue's quiet variant


@pytest.mark.parametrize(
    ("metadata", "prediction", "side"),
    [
        ({}, None, None),
        ({"modelspec.prediction_type": "v", "modelspec.resolution": "1024x1024"}, "v_prediction", 1024),
        ({"modelspec.prediction_type": "epsilon"}, "epsilon", None),
        ({"modelspec.architecture": "stable-diffusion-v2-512"}, "epsilon", None),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base", "modelspec.resolution": "big"}, None, None),
    ],
)
def test_modelspec_metadata_says_what_weights_cannot(metadata: dict, prediction: str | None, side: int | None) -> None:
    assert families.prediction_type_of(metadata) == prediction
    assert families.resolution_of(metadata) == side


def test_labels_and_native_sizes() -> None:
    assert families.label("sd1") == "SD 1.x" and families.label("sdxl-inpaint") == "SDXL inpainting"
    assert families.label("sd2", "v_prediction") == "SD 2.x (v)" and families.label("sd2", "epsilon") == "SD 2.x"
    assert [families.native_size(name) for name in families.NAMES] == [512, 512, 768, 512, 1024, 1024]
    assert families.native_size("sd2", "epsilon") == 512 and families.native_size("sd2", "v_prediction") == 768


def folder(path: Path, pipeline: str, text_act: str = "quick_gelu", in_channels: int = 4,
           prediction: str = "epsilon", sample_size: int = 64, second_encoder: bool = False) -> Path:
    """A diffusers folder's configs, written by hand: what `family_of_folder` reads."""
    index = {"_class_name": pipeline, "text_encoder": ["transformers", "CLIPTextModel"],
             "unet": ["diffusers", "UNet2DConditionModel"]}
    if second_encoder:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    files = {
        "model_index.json": index,
        "unet/config.json": {"in_channels": in_channels, "sample_size": sample_size},
        "vae/config.json": {"block_out_channels": [128, 256, 512, 512]},
        "text_encoder/config.json": {"hidden_act": text_act},
        "scheduler/scheduler_config.json": {"prediction_type": prediction},
    }
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(json.dumps(content))
    return path


def test_a_diffusers_folder_tells_its_family_from_its_configs(tmp_path: Path) -> None:
    sd15 = folder(tmp_path / "sd15", "StableDiffusionPipeline")
    sd21 = folder(tmp_path / "sd21", "StableDiffusionPipeline", text_act="gelu", prediction="v_prediction",
                  sample_size=96)
    inpainting = folder(tmp_path / "inpaint", "StableDiffusionInpaintPipeline", in_channels=9)
    sd2_inpainting = folder(tmp_path / "inpaint2", "StableDiffusionInpaintPipeline", text_act="gelu", in_channels=9)
    xl = folder(tmp_path / "xl", "StableDiffusionXLPipeline", second_encoder=True, sample_size=128)
    xl_inpainting = folder(tmp_path / "xl-inpaint", "StableDiffusionXLInpaintPipeline", second_encoder=True,
                           in_channels=9, sample_size=128)
    assert [families.family_of_folder(path) for path in (sd15, sd21, inpainting, sd2_inpainting, xl, xl_inpainting)] \
        == ["sd1", "sd2", "sd1-inpaint", "sd2-inpaint", "sdxl", "sdxl-inpaint"]
    assert [families.native_size_of_folder(path) for path in (sd15, sd21, xl)] == [512, 768, 1024]
    assert families.prediction_type_of_folder(sd21) == "v_prediction"
    assert families.prediction_type_of_folder(sd15) == "epsilon"


def test_other_folders_are_no_family(tmp_path: Path) -> None:
    upscaler = folder(tmp_path / "upscaler", "StableDiffusionLatentUpscalePipeline")
    refiner = folder(tmp_path / "refiner", "StableDiffusionXLImg2ImgPipeline", second_encoder=True)
    index = json.loads((refiner / "model_index.json").read_text())
    (refiner / "model_index.json").write_text(json.dumps({**index, "text_encoder": [None, None]}))
    pix2pix = folder(tmp_path / "pix2pix", "StableDiffusionInstructPix2PixPipeline", in_channels=8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "model_index.json").write_text("{not json")
    for path in (upscaler, refiner, pix2pix, tmp_path / "empty", tmp_path / "garbled"):
        assert families.family_of_folder(path) is None, path.name
    assert families.native_size_of_folder(tmp_path / "empty") is None
