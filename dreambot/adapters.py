"""What a model can be given on top of its weights: LoRAs (`<lora:NAME:W>` in a prompt) and
textual-inversion embeddings (their name as a word), found as files in their folders and named by
file stem. The bot lists them (`/loras`, autocomplete) and checks a prompt's names before it queues
a job; the engine loads them.

Reads only file names and safetensors headers (a length and a JSON object: no tensor, no pickle), so
it imports neither torch nor discord.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dreambot import prompt as prompt_syntax
from dreambot.errors import InvalidRequest

log = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors",)
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
# A safetensors header larger than this is not one a model site made; it is skipped, unread.
MAX_HEADER = 16 * 1024 * 1024
# Trigger words: what the file's metadata says, else the most frequent training tags (kohya's).
MAX_TRIGGERS = 5


class TurnedOff(InvalidRequest):
    """A prompt uses a LoRA or an embedding that the server's moderators turned off."""


@dataclass(frozen=True)
class Adapter:
    """One LoRA or embedding file: its name (file stem), kind, path, and what its metadata says."""

    name: str
    kind: str  # "lora" or "embedding"
    path: Path
    triggers: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Catalogue:
    """The LoRAs and embeddings in the folders, by name; the first folder wins a name two share."""

    loras: dict[str, Adapter] = field(default_factory=dict)
    embeddings: dict[str, Adapter] = field(default_factory=dict)

    @classmethod
    def scan(cls, lora_folders: Iterable[Path], embedding_folders: Iterable[Path]) -> Catalogue:
        return cls(loras=_scan(lora_folders, "lora", LORA_SUFFIXES),
                   embeddings=_scan(embedding_folders, "embedding", EMBEDDING_SUFFIXES))

    def all(self) -> list[Adapter]:
        """Every adapter, LoRAs first, each kind sorted by name."""
        return [*self.loras.values(), *self.embeddings.values()]

    def lora(self, name: str) -> Adapter | None:
        """The LoRA of that name, in any case (A1111 users type names as they remember them)."""
        return self.loras.get(name) or next((a for n, a in self.loras.items() if n.lower() == name.lower()), None)

    def offered(self, most: int = 10) -> str:
        """The installed LoRAs, for a message: the first `most` of them, and how many more."""
        names = list(self.loras)
        if not names:
            return "none are installed"
        more = f", and {len(names) - most} more" if len(names) > most else ""
        return "installed: " + ", ".join(names[:most]) + more

    def check(self, prompt: str, negative: str, disabled: Iterable[tuple[str, str]] = ()) -> None:
        """TurnedOff when the texts use a LoRA or an embedding that this server's moderators turned off
        (`disabled`: (kind, name), checked by name whatever the folders hold now); else InvalidRequest
        when the prompt names a LoRA that is not installed."""
        disabled = list(disabled)
        off_loras = {name.lower() for kind, name in disabled if kind == "lora"}
        tags = prompt_syntax.loras(prompt)
        for lora in tags:
            if lora.name.lower() in off_loras:
                shown = (self.lora(lora.name) or lora).name
                raise TurnedOff(f"The LoRA “{shown}” is turned off on this server by its moderators.")
        for kind, name in disabled:
            if kind == "embedding" and any(prompt_syntax.names_word(text, name) for text in (prompt, negative)):
                raise TurnedOff(f"The embedding “{name}” is turned off on this server by its moderators; "
                                "leave the word out of the prompts.")
        for lora in tags:
            if self.lora(lora.name) is None:
                raise InvalidRequest(f"There is no LoRA named “{lora.name}” ({self.offered()}). See /loras.")


class Installed:
    """The catalogue of some folders, scanned again only when one of them changed (a file added,
    removed or renamed changes its folder's modification time)."""

    def __init__(self, lora_folders: Iterable[Path], embedding_folders: Iterable[Path]) -> None:
        self._loras, self._embeddings = list(lora_folders), list(embedding_folders)
        self._stamps: tuple | None = None
        self._catalogue = Catalogue()

    def current(self) -> Catalogue:
        stamps = tuple(_stamp(folder) for folder in (*self._loras, *self._embeddings))
        if stamps != self._stamps:
            self._catalogue = Catalogue.scan(self._loras, self._embeddings)
            self._stamps = stamps
        return self._catalogue


def _stamp(folder: Path) -> int | None:
    try:
        return folder.stat().st_mtime_ns
    except OSError:
        return None


def nameable(name: str) -> bool:
    """Whether a prompt can name a file of this stem: no tag characters, no surrounding spaces."""
    return bool(name) and name == name.strip() and not any(c in name for c in "<>:\\/") \
        and len(name) <= prompt_syntax.MAX_NAME


def _scan(folders: Iterable[Path], kind: str, suffixes: tuple[str, ...]) -> dict[str, Adapter]:
    found: dict[str, Adapter] = {}
    taken: set[str] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in suffixes or not path.is_file():
                continue
            if path.stem.lower() in taken:  # "Style" and "style": one name to a prompt, the first file's
                log.warning("%s %s: another file has its name; skipped", kind, path)
                continue
            if not nameable(path.stem):  # no prompt could name it
                log.warning("%s %s: its name cannot be written in a prompt; skipped", kind, path)
                continue
            metadata = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
            taken.add(path.stem.lower())
            found[path.stem] = Adapter(name=path.stem, kind=kind, path=path, triggers=triggers(metadata),
                                       description=_description(metadata))
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's `__metadata__` (strings only), or {} when it has none or cannot be read."""
    try:
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > MAX_HEADER:
                return {}
            header = json.loads(file.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        return {}
    return {str(key): value for key, value in metadata.items() if isinstance(value, str)}


def triggers(metadata: dict[str, str]) -> tuple[str, ...]:
    """The words that call up what an adapter learned: the metadata's trigger phrase
    (`modelspec.trigger_phrase`, `ss_trigger_words`), else kohya's most frequent training tags."""
    for key in ("modelspec.trigger_phrase", "ss_trigger_words", "trigger_words"):
        if metadata.get(key, "").strip():
            words = [w.strip() for w in metadata[key].split(",") if w.strip()]
            return tuple(words[:MAX_TRIGGERS])
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency", "{}"))
    except ValueError:
        return ()
    counts: dict[str, int] = {}
    if isinstance(frequency, dict):
        for tags in frequency.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    if isinstance(n, int):
                        counts[tag.strip()] = counts.get(tag.strip(), 0) + n
    return tuple(sorted(counts, key=lambda tag: (-counts[tag], tag))[:MAX_TRIGGERS])


def _description(metadata: dict[str, str]) -> str:
    return (metadata.get("modelspec.description") or metadata.get("description") or "").strip()[:200]
