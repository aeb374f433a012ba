"""The models an engine holds: loaded on first use, kept within a memory budget (MODEL_CACHE_GB),
the least recently used unloaded first."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable

import torch

from dreambot.errors import InvalidRequest
from dreambot.models import Catalogue, Model, weights_on_disk

log = logging.getLogger(__name__)

GB = 1024 ** 3
# A model that failed to load is refused at once for this long, without unloading anything for it:
# a member asking again and again must not make the engine reload its other models each time.
FAILED_SECONDS = 300.0


class ModelUnavailable(InvalidRequest):
    """A model of the catalogue that failed to load; the member's message names no path."""


def default_budget(device: torch.device) -> int:
    """MODEL_CACHE_GB unset: most of a GPU's memory (the rest for the jobs' activations), a third
    of the machine's memory elsewhere."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.6)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 3)
    except (ValueError, OSError, AttributeError):
        return 8 * GB


def footprint(engine) -> int:
    """The bytes an engine's weights take: every module of its pipeline (the SD_UPSCALER that all
    models share is loaded once, beside the cache)."""
    seen: set[int] = set()
    total = 0
    for pipe in (engine.pipe,):
        for component in (getattr(pipe, "components", None) or {}).values():
            if isinstance(component, torch.nn.Module):
                for tensor in (*component.parameters(), *component.buffers()):
                    if id(tensor) not in seen:
                        seen.add(id(tensor))
                        total += tensor.numel() * tensor.element_size()
    return total


class ModelCache:
    """Engines by model name. `get` loads a model (after unloading the least recently used ones
    until it fits) and says so first through `loading`; the default model is loaded at start."""

    def __init__(self, catalogue: Callable[[], Catalogue], load: Callable[[Model], object], budget: int) -> None:
        self._catalogue = catalogue
        self._load = load
        self.budget = budget
        self._held: OrderedDict[str, object] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._load_seconds: dict[str, float] = {}
        self._failed: dict[str, float] = {}  # model -> when it last failed to load

    @property
    def held(self) -> tuple[str, ...]:
        """The loaded models' names, the most recently used last."""
        return tuple(self._held)

    def model(self, name: str) -> Model:
        """The catalogue's model of that name ("": the default), or InvalidRequest (naming no other
        model: a member's channel may not show them all)."""
        model = self._catalogue().get(name)
        if model is None:
            raise InvalidRequest(f"The model “{name[:100]}” is no longer installed; pick another (see /models).")
        return model

    def get(self, name: str, loading: Callable[[str, float | None], None] | None = None):
        """The engine of model `name` ("": the default), loaded now if need be. `loading(model,
        seconds)` is told before a load starts (seconds: what it took last time, None if never)."""
        model = self.model(name)
        if model.name in self._held:
            self._held.move_to_end(model.name)
            return self._held[model.name]
        failed = self._failed.get(model.name)
        if failed is not None and time.monotonic() - failed < FAILED_SECONDS:
            raise ModelUnavailable(f"The model “{model.name}” could not be loaded; the server's operators can see "
                                   "why in the log.")
        guess = self._sizes.get(model.name) or weights_on_disk(model.source) or 0
        self._make_room(guess)
        if loading is not None:
            loading(model.name, self._load_seconds.get(model.name))
        started = time.perf_counter()
        try:
            engine = self._load(model)
        except Exception as error:
            log.exception("could not load model %s (%s); refusing it for %.0f s", model.name, model.source,
                          FAILED_SECONDS)
            self._failed[model.name] = time.monotonic()
            raise ModelUnavailable(f"The model “{model.name}” could not be loaded; the server's operators can see "
                                   "why in the log.") from error
        self._failed.pop(model.name, None)
        self._load_seconds[model.name] = time.perf_counter() - started
        self._sizes[model.name] = footprint(engine)
        self._held[model.name] = engine
        self._make_room(0)
        log.info("model %s loaded in %.1f s (%.2f GB); holding %s", model.name, self._load_seconds[model.name],
                 self._sizes[model.name] / GB, ", ".join(self._held))
        return engine

    def hold(self, engine) -> None:
        """An engine loaded by the caller (the default model, at start), now held as the most recent."""
        self._held[engine.model] = engine
        self._sizes[engine.model] = footprint(engine)

    def _make_room(self, needed: int) -> None:
        """Unload the least recently used models until `needed` more bytes fit the budget; the
        most recently used one always stays."""
        while len(self._held) > (1 if needed == 0 else 0) and \
                sum(self._sizes.get(name, 0) for name in self._held) + needed > self.budget:
            name, engine = self._held.popitem(last=False)
            log.info("unloading model %s (%.2f GB) to make room", name, self._sizes.get(name, 0) / GB)
            device = getattr(engine, "device", torch.device("cpu"))
            del engine
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
