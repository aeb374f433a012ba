"""LoRAs, by name, for the job that asks for them (`<lora:NAME:W>`, `GenerateRequest.loras`).

A LoRA file (kohya/A1111's format from model sites, or diffusers') is loaded into the pipeline
through diffusers' PEFT integration the first time a job names it, and stays loaded (the least
recently used is deleted past `CACHED`). Each pipeline call turns on exactly its job's LoRAs at
their weights (`set_adapters`) and turns them all off again afterwards (`disable_lora`), so one
job's LoRA never reaches the next: with every LoRA off, the model computes what it computed before
any was loaded, bit for bit.

Files from outside are read with safetensors only: never unpickled.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import safetensors.torch
from diffusers import DiffusionPipeline

from dreambot.adapters import Adapter, Catalogue
from dreambot.errors import InvalidRequest
from dreambot.prompt import Lora

log = logging.getLogger(__name__)

# LoRAs kept loaded at once; a small one is a few MB, a large SDXL one a few hundred.
CACHED = 8


@dataclass
class Loras:
    """The LoRAs a pipeline can use (`catalogue`, rescanned by `rescan` when a name is not in it)
    and those loaded into it, by LoRA name -> PEFT adapter name, most recently used last."""

    catalogue: Catalogue
    rescan: Callable[[], Catalogue] | None = None
    loaded: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _count: int = 0

    @contextmanager
    def applied(self, pipe: DiffusionPipeline, loras: tuple[Lora, ...]) -> Iterator[None]:
        """The pipeline with exactly these LoRAs on at their weights, and none after, whatever fails
        (a file that does not load, a cancelled or failed job): PEFT turns a LoRA on as it loads."""
        try:
            used = {lora.name.lower() for lora in loras}
            adapters = [self._load(pipe, lora.name, used) for lora in loras]
            if adapters:
                pipe.enable_lora()
                pipe.set_adapters(adapters, adapter_weights=[lora.weight for lora in loras])
            yield
        finally:
            if self.loaded:
                pipe.disable_lora()

    def _adapter(self, name: str) -> Adapter:
        adapter = self.catalogue.lora(name)
        if adapter is None and self.rescan is not None:  # installed since the engine started?
            self.catalogue = self.rescan()
            adapter = self.catalogue.lora(name)
        if adapter is None:
            raise InvalidRequest(f"There is no LoRA named “{name}” ({self.catalogue.offered()}).")
        return adapter

    def _load(self, pipe: DiffusionPipeline, name: str, used: set[str]) -> str:
        """The PEFT adapter name of LoRA `name`, loading its file the first time; to make room, the
        least recently used LoRAs go, never one of `used` (the job's own, lower case)."""
        adapter = self._adapter(name)
        if adapter.name in self.loaded:
            self.loaded.move_to_end(adapter.name)
            return self.loaded[adapter.name]
        for old in [n for n in self.loaded if n.lower() not in used][:max(0, len(self.loaded) - CACHED + 1)]:
            pipe.delete_adapters(self.loaded.pop(old))
        self._count += 1
        peft_name = f"lora{self._count}"  # PEFT's names are module keys: no dots, no spaces
        try:
            state = safetensors.torch.load_file(str(adapter.path), device="cpu")
            with warnings.catch_warnings():  # PEFT warns that a model holds several adapters: ours does, on purpose
                warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
                pipe.load_lora_weights(state, adapter_name=peft_name)
            if not _holds(pipe, peft_name):
                raise ValueError("none of its layers matches this model (is it for another model family?)")
        except Exception as error:  # a file that is not a LoRA for this model: the operator's to mend
            log.warning("LoRA %s (%s) cannot be loaded: %s", adapter.name, adapter.path, error)
            if _holds(pipe, peft_name):
                pipe.delete_adapters(peft_name)
            raise InvalidRequest(f"The LoRA “{adapter.name}” cannot be used with this server's model; "
                                 "the operator can see why in the bot’s log.") from None
        log.info("LoRA %s loaded from %s", adapter.name, adapter.path)
        self.loaded[adapter.name] = peft_name
        return peft_name


def _holds(pipe: DiffusionPipeline, peft_name: str) -> bool:
    """Whether any of the pipeline's models holds the PEFT adapter of that name."""
    return any(peft_name in names for names in pipe.get_list_adapters().values())
