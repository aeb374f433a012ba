"""How a job reports its steps: the engine's one progress callback, the same at every level (a
mode's pipeline call, one job of a batch, the CLI's progress bar, the server's Progress messages).
Imports no torch, so that the server can name it before the model loads."""

from __future__ import annotations

from collections.abc import Callable

# `preview(i)`: picture i (of the job, or of the pipeline call) as it stands, a small JPEG; None
# where the model has no cheap preview.
Preview = Callable[[int], bytes | None]
# (step, total, preview), once per denoising step; raising JobCancelled stops the job.
Progress = Callable[[int, int, Preview], None]


class JobCancelled(Exception):
    """Raised by a progress callback to stop its job between two denoising steps: diffusers lets it
    through, so the call ends at once with no VAE decode, in every mode."""


def quiet(step: int, total: int, preview: Preview) -> None:
    """The progress of a job nobody watches."""
