"""Every tiny model family (`engine.tiny`) as a diffusers folder and as a single checkpoint in the
original layout (`engine.checkpoint`), loaded by `engine.loading.load_pipeline` with the model hub
out of reach: the single file makes the folder's very picture, which proves the conversion both ways."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file as diffusers_single_file
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from dreambot import families
from dreambot.request import GenerateRequest, Mode
from engine import checkpoint, loading, samplers
from engine.__main__ import main
from engine.loading import ModelLoadError
from engine.tiny import FAMILIES, build_tiny, write_tiny_model

HUB_FUNCTIONS = ("hf_hub_download", "snapshot_download", "model_info")


@contextlib.contextmanager
def hub_out_of_reach() -> Iterator[list[str]]:
    """huggingface_hub's download functions, wherever diffusers and transformers imported them, and
    any network connection, fail and are recorded (a library might swallow the failure)."""
    reached: list[str] = []

    def refuse(name: str):
        def refused(*args, **kwargs):
            reached.append(name)
            raise AssertionError(f"{name} reached for the network")
        return refused

    with pytest.MonkeyPatch.context() as patch:
        patched = set()
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").split(".")[0] in ("huggingface_hub", "diffusers", "transformers"):
                for name in HUB_FUNCTIONS:
                    if callable(vars(module).get(name)):  # vars: never wake a lazy module's imports
                        patch.setattr(module, name, refuse(name))
                        patched.add(f"{module.__name__}.{name}")
        # What from_single_file fetches configs with (imported above, so patched), and every download:
        assert {f"{diffusers_single_file.__name__}.snapshot_download",
                "huggingface_hub.file_download.hf_hub_download"} <= patched
        patch.setattr(socket.socket, "connect", refuse("socket.connect"))
        yield reached


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Each family's tiny model, written once: (diffusers folder, single .safetensors file)."""
    root = tmp_path_factory.mktemp("families")
    return {family: (write_tiny_model(root / family, family=family),
                     write_tiny_model(root / family, family=family, single_file=True)) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(tiny_models: dict[str, tuple[Path, Path]]) -> dict[str, tuple]:
    """Each family's folder and single file, loaded through the real path with the hub out of reach."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py
    pipes = {}
    with hub_out_of_reach() as reached:
        for family, (folder, single) in tiny_models.items():
            pipes[family] = (loading.load_pipeline(str(folder), torch.float32),
                             loading.load_pipeline(str(single), torch.float32))
    assert reached == []
    return pipes


def picture(pipe, family: str, size: int = 64) -> np.ndarray:
    """A 2-step picture at a fixed seed, with the engine's default sampler built from the loaded
    scheduler config as the engine builds each job's (an inpainting model inpaints all of it)."""
    request = GenerateRequest(prompt="a red fox", num_inference_steps=2)
    scheduler = samplers.scheduler(samplers.config_text(pipe.scheduler.config), request)
    pipe = type(pipe).from_pipe(pipe, scheduler=scheduler)
    arguments = dict(prompt=request.prompt, num_inference_steps=request.num_inference_steps, height=size, width=size,
                     output_type="np", generator=torch.Generator().manual_seed(7))
    if families.is_inpainting(family):
        pipe = loading.mode_pipeline(pipe, Mode.INPAINT)
        arguments.update(image=torch.zeros(1, 3, size, size), mask_image=torch.ones(1, 1, size, size))
    return np.round(pipe(**arguments).images[0] * 255).astype(np.int16)


def same_picture(one: np.ndarray, other: np.ndarray) -> bool:
    return one.shape == other.shape and np.abs(one - other).max() <= 1 and one.std() > 1


@pytest.mark.parametrize("family", FAMILIES)
def test_the_single_file_makes_the_folders_picture(loaded: dict, family: str) -> None:
    folder, single = loaded[family]
    assert type(single) is type(folder)
    assert same_picture(picture(single, family), picture(folder, family))


def comparable(config) -> dict:
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()
            if not key.startswith("_") and key not in ("transformers_version", "architectures", "dtype")}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_configs_derived_from_the_weights_are_the_built_ones(loaded: dict, family: str) -> None:
    folder, single = loaded[family]
    for name, component in folder.components.items():
        if hasattr(component, "config") and not isinstance(component, dict):
            assert comparable(getattr(single, name).config) == comparable(component.config), name
    assert single.unet.config.sample_size * single.vae_scale_factor == 64  # its ModelSpec resolution
    expected = "v_prediction" if family == "sd2" else "epsilon"
    assert single.scheduler.config.prediction_type == folder.scheduler.config.prediction_type == expected
    assert single.unet.config.in_channels == (9 if families.is_inpainting(family) else 4)
    assert single.tokenizer("a cat").input_ids == folder.tokenizer("a cat").input_ids


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_is_told_from_the_header_and_from_the_folder(tiny_models: dict, family: str) -> None:
    folder, single = tiny_models[family]
    assert single.name == f"{family}.safetensors"
    assert families.family_of(families.read_safetensors_shapes(single)) == family
    assert families.family_of_folder(folder) == family
    assert families.native_size_of_folder(folder) == 64
    found = checkpoint.inspect(single)
    assert found.family == family and found.prediction_type == ("v_prediction" if family == "sd2" else "epsilon")
    assert families.resolution_of(found.metadata) == 64


def test_the_original_layout_is_the_one_model_sites_publish(tiny_models: dict) -> None:
    layouts = {
        "sd1": ["cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight"],
        "sd2": ["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
                "cond_stage_model.model.transformer.resblocks.2.ln_2.bias",  # the spare block SD 2.x skips
                "cond_stage_model.model.ln_final.weight", "cond_stage_model.model.positional_embedding"],
        "sdxl": ["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                 "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_bias",
                 "conditioner.embedders.1.model.text_projection", "model.diffusion_model.label_emb.0.0.weight"],
    }
    for family, keys in layouts.items():
        shapes = families.read_safetensors_shapes(tiny_models[family][1])
        assert all(key.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.",
                                   "conditioner.embedders.")) for key in shapes)
        assert set(keys) <= set(shapes), family
        assert shapes["first_stage_model.encoder.mid.attn_1.q.weight"] == (8, 8, 1, 1)
    assert "cond_stage_model.model.transformer.resblocks.3.ln_1.weight" not in families.read_safetensors_shapes(
        tiny_models["sd2"][1])
    assert families.read_safetensors_shapes(tiny_models["sdxl"][1])["conditioner.embedders.1.model.text_projection"] \
        == (48, 32)  # OpenCLIP's (width, projection): transposed from transformers' Linear


@pytest.mark.parametrize("family", ["sd1", "sd1-inpaint", "sd2", "sdxl"])
def test_real_sized_models_convert_to_the_layout_diffusers_knows_and_derive_their_stock_configs(family: str) -> None:
    """The stock configs' full-size models (on the meta device: shapes only), written in the original
    layout: diffusers' own detection agrees with ours, and the configs derived from them are the stock ones."""
    with torch.device("meta"):
        parts = {"unet": UNet2DConditionModel.from_config(checkpoint.stock_config(family, "unet")),
                 "vae": AutoencoderKL.from_config(checkpoint.stock_config(family, "vae"))}
        for component, _, _ in checkpoint.TEXT_ENCODERS[families.base_of(family)]:
            cls = CLIPTextModelWithProjection if component == "text_encoder_2" else CLIPTextModel
            parts[component] = cls(CLIPTextConfig.from_dict(checkpoint.stock_config(family, component)))
    state = checkpoint.to_original(types.SimpleNamespace(**parts), family)
    diffusers_name = {"sd1": "v1", "sd1-inpaint": "inpainting", "sd2": "v2", "sdxl": "xl_base"}[family]
    assert infer_diffusers_model_type(state) == diffusers_name
    shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
    assert families.family_of(shapes) == family
    for component, fields in checkpoint.derive(checkpoint.Checkpoint(Path("x"), family, shapes)).items():
        stock = comparable(parts[component].config)
        assert {key: stock[key] for key in fields} == fields, component


@pytest.mark.parametrize(
    ("metadata", "prediction", "native"),
    [
        ({}, "v_prediction", 768),  # what the weights cannot say comes from SD 2.1's stock configs
        ({"modelspec.prediction_type": "epsilon"}, "epsilon", 512),  # an SD 2.x "base" model
        ({"modelspec.architecture": "stable-diffusion-v2-768-v", "modelspec.resolution": "640x640"}, "v_prediction",
         640),
    ],
)
def test_an_sd2_files_prediction_type_and_size_come_from_its_metadata_else_from_sd21(
        tmp_path: Path, metadata: dict, prediction: str, native: int) -> None:
    from safetensors.torch import save_file

    save_file(checkpoint.to_original(build_tiny("sd2"), "sd2"), str(tmp_path / "sd2.safetensors"), metadata=metadata)
    folder = checkpoint.config_folder(checkpoint.inspect(tmp_path / "sd2.safetensors"), tmp_path / "configs")
    assert families.prediction_type_of_folder(folder) == prediction
    assert families.native_size_of_folder(folder) == native


@pytest.mark.parametrize(("base", "family", "native"), [("sd2", "sd2-inpaint", 512), ("sdxl", "sdxl-inpaint", 1024)])
def test_inpainting_variants_without_a_tiny_model_load_from_their_weights(
        tmp_path: Path, base: str, family: str, native: int) -> None:
    from safetensors.torch import save_file

    state = checkpoint.to_original(build_tiny(base), base)
    conv_in = state[families.UNET_IN]
    state[families.UNET_IN] = torch.cat([conv_in, torch.zeros(conv_in.shape[0], 5, 3, 3)], dim=1)
    save_file(state, str(tmp_path / "inpainting.safetensors"))
    assert families.family_of(families.read_safetensors_shapes(tmp_path / "inpainting.safetensors")) == family
    with hub_out_of_reach() as reached:
        pipe = loading.load_pipeline(str(tmp_path / "inpainting.safetensors"), torch.float32)
    assert reached == []
    assert pipe.unet.config.in_channels == 9 and pipe.unet.config.sample_size * pipe.vae_scale_factor == native
    assert pipe.scheduler.config.prediction_type == "epsilon"


def test_a_ckpt_of_plain_tensors_loads_and_makes_the_same_picture(loaded: dict, tmp_path: Path) -> None:
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": checkpoint.to_original(build_tiny("sd1"), "sd1"), "global_step": 1}, path)
    with hub_out_of_reach() as reached:
        pipe = loading.load_pipeline(str(path), torch.float32)
    assert reached == []
    assert pipe.unet.config.sample_size == 64  # no metadata in a .ckpt: SD 1.x's stock 512 px
    assert same_picture(picture(pipe, "sd1"), picture(loaded["sd1"][0], "sd1"))


class RunsCode:
    """Unpickling this would run os.mkdir: what a malicious .ckpt does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_ckpt_with_pickled_objects_is_refused_unrun(tmp_path: Path) -> None:
    path, marker = tmp_path / "bad.ckpt", tmp_path / "ran"
    torch.save({"state_dict": checkpoint.to_original(build_tiny("sd1"), "sd1"), "callback": RunsCode(marker)}, path)
    with pytest.raises(ModelLoadError, match=r"holds pickled Python objects besides tensors \(.*posix\.mkdir.*\); "
                                             r"refused without unpickling them") as refused:
        loading.load_pipeline(str(path), torch.float32)
    assert "\n" not in str(refused.value)
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match="could not load the VAE .*holds pickled Python objects"):
        loading.load_vae(str(path), build_tiny("sd1"), torch.float32)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, r"not a Stable Diffusion 1\.x, 2\.x or XL checkpoint "
                                                              r"\(found encoder\.conv_in\)"),
        ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 8, 3, 3),
          "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 8, 3, 3),
          "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(4, 8)},
         "its UNet takes 8 input channels"),
        ({}, "it holds no tensors"),
    ],
    ids=["a VAE", "instruct-pix2pix", "empty"],
)
def test_a_file_of_another_kind_says_what_it_is(tmp_path: Path, tensors: dict, message: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path))
    assert families.family_of(families.read_safetensors_shapes(path)) is None
    with hub_out_of_reach() as reached, pytest.raises(ModelLoadError, match=f"could not load SD_MODEL .*{message}"):
        loading.load_pipeline(str(path), torch.float32)
    assert reached == []


def test_a_vocabulary_no_tokenizer_here_knows_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = checkpoint.to_original(build_tiny("sd1"), "sd1")
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    state[key] = torch.zeros(1000, state[key].shape[1])
    save_file(state, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ModelLoadError, match="its text_encoder has a vocabulary of 1000 tokens"):
        loading.load_pipeline(str(tmp_path / "odd.safetensors"), torch.float32)


def test_a_vae_file_in_the_original_layout_replaces_the_models(loaded: dict, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = build_tiny("sd1", seed=5).vae
    # A VAE published alone (vae-ft-mse-840000 and the like): the original names, no prefix.
    save_file(checkpoint.vae_to_original(other.state_dict(), other.config), str(tmp_path / "vae.safetensors"))
    folder = loaded["sd1"][0]
    with hub_out_of_reach() as reached:
        vae = loading.load_vae(str(tmp_path / "vae.safetensors"), folder, torch.float32)
    assert reached == []
    assert all(torch.equal(vae.state_dict()[key], value) for key, value in other.state_dict().items())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cli_writes_each_family(tmp_path: Path, family: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["tiny-model", str(tmp_path / "folder"), "--family", family]) == 0
    assert main(["tiny-model", str(tmp_path / "file"), "--family", family, "--single-file", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert f"wrote a tiny random-weight {families.LABELS[family]} model to {tmp_path / 'file.safetensors'}" in out
    assert families.family_of_folder(tmp_path / "folder") == family
    assert families.family_of(families.read_safetensors_shapes(tmp_path / "file.safetensors")) == family


def test_the_cli_without_flags_writes_the_sd1_folder_as_before(tmp_path: Path) -> None:
    assert main(["tiny-model", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / "model_index.json").is_file() and (tmp_path / "tiny" / "tokenizer").is_dir()
    assert families.family_of_folder(tmp_path / "tiny") == "sd1"
    with pytest.raises(SystemExit):
        main(["tiny-model", str(tmp_path / "x"), "--family", "sd2-inpaint"])  # no tiny model of it
