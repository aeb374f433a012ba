"""The bare diffusers pipeline the benchmarks compare the engine with: StableDiffusionPipeline
loaded as a user of diffusers would load the model (`from_pretrained`, or `from_single_file` for a
checkpoint file), on the device and dtype the engine resolves, with the engine's scheduler for the
sampler and its progress bar off. Nothing else: no safety check, no PNG.

Imported by bench/throughput.py's bare loop (a process of its own: this module imports only what
that loop needs) and by bench/check_overlap.py."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from engine.loading import BUILTIN_MODELS, resolve_device, resolve_dtype
from engine.samplers import SCHEDULERS


def bare_pipeline(source: str, device: str, dtype: str, sampler: str
                  ) -> tuple[StableDiffusionPipeline, torch.device, torch.dtype]:
    """The pipeline of `source` (a built-in name, folder, file or hub id) for `sampler`, on the
    device and dtype that the settings `device` and `dtype` resolve to."""
    path = Path(source).expanduser()
    if source in BUILTIN_MODELS and not path.exists():
        path = BUILTIN_MODELS[source]
    on = resolve_device(device)
    precision = resolve_dtype(dtype, on)
    if path.is_file():
        pipe = StableDiffusionPipeline.from_single_file(str(path), dtype=precision)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(str(path) if path.exists() else source, dtype=precision)
    pipe.to(on)
    pipe.set_progress_bar_config(disable=True)
    scheduler_cls, overrides = SCHEDULERS[sampler]
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **overrides)
    return pipe, on, precision
