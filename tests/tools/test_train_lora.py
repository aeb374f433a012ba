"""The `outline` LoRA and its training script: the file is diffusers' LoRA format and loads through
diffusers' public API, training is repeatable, and the bundled LoRA draws outlines at weight 1 and
filled shapes at weight 0."""

from __future__ import annotations

from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

from tools.train_embedding import MODEL, load_pipeline
from tools.train_lora import TARGETS, generate, load, read
from tools.train_lora import main as train

OUTLINE = MODEL / "loras" / "outline.safetensors"
PROMPT = "a red circle on a white background"


def test_the_bundled_lora_is_float32_unet_layers_that_diffusers_loads() -> None:
    tensors = load_file(str(OUTLINE))
    assert tensors and all(key.startswith("unet.") and key.endswith((".lora_A.weight", ".lora_B.weight"))
                           for key in tensors)
    assert {str(tensor.dtype) for tensor in tensors.values()} == {"torch.float32"}
    layers = {key.removeprefix("unet.").rsplit(".lora_", 1)[0] for key in tensors}
    assert all(layer.endswith(TARGETS) for layer in layers)
    assert OUTLINE.stat().st_size < 4 * 2**20
    pipe = load_pipeline()
    load(pipe, OUTLINE, "outline")
    assert pipe.get_list_adapters() == {"unet": ["outline"]}
    # Every tensor of the file is in the loaded adapter, as it is: diffusers drops none of them silently.
    loaded = get_peft_model_state_dict(pipe.unet, adapter_name="outline")
    assert loaded.keys() == {key.removeprefix("unet.") for key in tensors}
    assert all(torch.equal(loaded[key.removeprefix("unet.")], tensor) for key, tensor in tensors.items())


def test_training_is_deterministic_given_its_seed(tmp_path: Path) -> None:
    options = ["--images", "4", "--steps", "2", "--batch", "2", "--rank", "2", "--no-evaluate"]
    assert train(["outline", str(tmp_path / "a.safetensors"), *options]) == 0
    assert train(["outline", str(tmp_path / "b.safetensors"), *options]) == 0
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    tensors = load_file(str(tmp_path / "a.safetensors"))
    assert tensors["unet.down_blocks.0.resnets.0.conv1.lora_A.weight"].shape[0] == 2  # the rank


def test_the_bundled_lora_draws_outlines_at_weight_1_and_filled_shapes_at_0() -> None:
    pipe = load_pipeline()
    load(pipe, OUTLINE, "outline")
    assert read(pipe, PROMPT, [1, 2]) == [(("red", "circle", "white"), True)] * 2
    # Orange circles on white were held out of the model's training, and of the LoRA's.
    assert read(pipe, "a orange circle on a white background", [1, 2]) == [(("orange", "circle", "white"), True)] * 2
    pipe.set_adapters(["outline"], adapter_weights=[0.0])
    assert read(pipe, PROMPT, [1, 2]) == [(("red", "circle", "white"), False)] * 2


def test_at_weight_0_and_disabled_the_lora_leaves_the_model_s_pictures_as_they_were() -> None:
    own = [image.tobytes() for image in generate(load_pipeline(), PROMPT, [3, 4])]
    pipe = load_pipeline()
    load(pipe, OUTLINE, "outline", weight=0.0)
    assert [image.tobytes() for image in generate(pipe, PROMPT, [3, 4])] == own
    pipe.set_adapters(["outline"], adapter_weights=[1.0])
    assert [image.tobytes() for image in generate(pipe, PROMPT, [3, 4])] != own
    pipe.disable_lora()
    assert [image.tobytes() for image in generate(pipe, PROMPT, [3, 4])] == own
