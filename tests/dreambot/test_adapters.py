"""The catalogue of LoRAs and embeddings (`dreambot.adapters`): found by file stem in their folders,
trigger words read from the file's own metadata without loading a tensor, and a prompt's names
checked against what is installed and what a server turned off."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dreambot.adapters import Catalogue, TurnedOff, read_metadata, triggers
from dreambot.errors import InvalidRequest
from dreambot.settings import EngineSettings


def safetensors_file(path: Path, metadata: dict[str, str] | None = None) -> Path:
    """A valid safetensors file with one small tensor, written by hand (the kernel has no torch)."""
    header: dict = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = json.dumps(header).encode()
    path.write_bytes(len(data).to_bytes(8, "little") + data + b"\0\0\0\0")
    return path


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    loras, embeddings, bundled = tmp_path / "loras", tmp_path / "embeddings", tmp_path / "bundled"
    for folder in (loras, embeddings, bundled):
        folder.mkdir()
    tags = {"pixel art, 1girl": {"pixel": 40, "retro": 12, "1girl": 3}}
    safetensors_file(loras / "pixel.safetensors", {"ss_tag_frequency": json.dumps(tags)})
    safetensors_file(loras / "Detail.safetensors", {"modelspec.trigger_phrase": "detailed, sharp",
                                                    "modelspec.description": "More detail."})
    safetensors_file(bundled / "pixel.safetensors", {"modelspec.trigger_phrase": "bundled wins"})
    (loras / "old.ckpt").write_bytes(b"not opened")  # a pickle: never a LoRA
    (loras / "notes.txt").write_text("readme")
    safetensors_file(embeddings / "easynegative.safetensors")
    (embeddings / "sun.pt").write_bytes(b"read by the engine only")
    return Catalogue.scan([bundled, loras, tmp_path / "missing"], [embeddings])


def test_files_are_named_by_stem_sorted_and_the_first_folder_wins(catalogue: Catalogue) -> None:
    assert list(catalogue.loras) == ["Detail", "pixel"]
    assert list(catalogue.embeddings) == ["easynegative", "sun"]
    assert catalogue.loras["pixel"].triggers == ("bundled wins",)
    assert catalogue.loras["Detail"].triggers == ("detailed", "sharp")
    assert catalogue.loras["Detail"].description == "More detail."
    assert catalogue.lora("detail") is catalogue.loras["Detail"]  # any case, as typed


def test_trigger_words_come_from_kohya_tag_counts_when_nothing_names_them() -> None:
    tags = {"a": {"pixel": 40, "retro": 12, "1girl": 3}, "b": {"retro": 30, "x": 1, "y": 1, "z": 1}}
    assert triggers({"ss_tag_frequency": json.dumps(tags)}) == ("retro", "pixel", "1girl", "x", "y")
    assert triggers({"ss_tag_frequency": "not json"}) == ()
    assert triggers({}) == ()


def test_a_broken_or_huge_header_reads_as_no_metadata(tmp_path: Path) -> None:
    (tmp_path / "short.safetensors").write_bytes(b"\x01")
    (tmp_path / "huge.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}")
    (tmp_path / "junk.safetensors").write_bytes((5).to_bytes(8, "little") + b"{{{{{")
    for name in ("short", "huge", "junk"):
        assert read_metadata(tmp_path / f"{name}.safetensors") == {}


def test_a_prompt_is_checked_against_what_is_installed_and_turned_off(catalogue: Catalogue) -> None:
    catalogue.check("a fox <lora:pixel:0.7> <lora:DETAIL>", "easynegative")
    with pytest.raises(InvalidRequest, match=re.escape("There is no LoRA named “pixle” (installed: Detail, pixel)")):
        catalogue.check("a fox <lora:pixle:1>", "")
    off = [("lora", "PIXEL"), ("embedding", "easynegative")]
    with pytest.raises(InvalidRequest, match="The LoRA “pixel” is turned off on this server"):
        catalogue.check("a fox <lora:pixel:1>", "", off)
    with pytest.raises(InvalidRequest, match="The embedding “easynegative” is turned off on this server"):
        catalogue.check("a fox", "(easynegative:1.2)", off)
    catalogue.check("a fox, easynegativeish <lora:Detail:1>", "", off)  # not the word, nor that LoRA
    with pytest.raises(InvalidRequest, match="turned off"):  # as the encoder reads it
        catalogue.check("a fox", "easy[]negative", off)


def test_what_is_turned_off_is_refused_by_name_whatever_the_folders_hold(catalogue: Catalogue) -> None:
    off = [("lora", "gone"), ("embedding", "removed")]
    with pytest.raises(TurnedOff, match="The LoRA “gone” is turned off"):  # before "not installed"
        catalogue.check("a fox <lora:nope:1> <lora:gone:1>", "", off)
    with pytest.raises(TurnedOff, match="The embedding “removed” is turned off"):
        catalogue.check("a fox <lora:nope:1>", "removed", off)
    with pytest.raises(InvalidRequest, match="no LoRA named “nope”"):
        catalogue.check("a fox <lora:nope:1>", "", off)


def test_the_installed_list_in_a_message_stays_short(tmp_path: Path) -> None:
    for n in range(30):
        safetensors_file(tmp_path / f"lora{n:02}.safetensors")
    many = Catalogue.scan([tmp_path], [])
    assert many.offered() == "installed: " + ", ".join(f"lora{n:02}" for n in range(10)) + ", and 20 more"
    assert Catalogue().offered() == "none are installed"


def test_names_a_prompt_cannot_write_or_that_clash_in_case_are_skipped(tmp_path: Path) -> None:
    for name in ("Style", "style", " spaced", "a:b", "ok"):
        safetensors_file(tmp_path / f"{name}.safetensors")
    assert list(Catalogue.scan([tmp_path], []).loras) == ["ok", "Style"]


def test_the_bundled_model_brings_its_own_adapters_and_a_folder_of_that_name_does_not(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    settings = EngineSettings(_env_file=None, sd_model="shapes", lora_dir=tmp_path / "l", embeddings_dir=tmp_path)
    assert "sun" in settings.adapters().embeddings
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").mkdir()  # an operator's own folder named "shapes" is their model, not ours
    assert settings.bundled("embeddings") == []
