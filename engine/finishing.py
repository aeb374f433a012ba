"""After the pipeline: a job's pictures checked for safety and encoded.

`Engine.make_batch` stops where the denoising and decoding stop and hands back each job's pictures
`Unchecked`; `Unchecked.finish` scores them and encodes the ones that may be shown (a flagged one
the channel may not show is never encoded). `Engine.generate_batch` does both in turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from dreambot.request import GenerateRequest
from dreambot.wire import GenerateResult, ImageResult
from engine import imaging
from engine.infotext import infotext
from engine.safety import SafetyChecker


@dataclass
class Unchecked:
    """One job's pictures as the pipeline made them, with what `finish` needs to check and encode
    them; `seconds`: the pipeline call's time (a shared call's counts as each job's own)."""

    job_id: int
    request: GenerateRequest
    threshold: float
    images: list[Image.Image]
    brought: list[Image.Image]  # what the job brought in, scored with its pictures (`engine.modes.Made`)
    width: int
    height: int
    model: str
    upscaler: str
    safety: SafetyChecker
    seconds: float
    # (tokens, chunks) of the prompt as the model read it (`prompts.reading`), or None.
    reading: tuple[int, int] | None

    def finish(self) -> GenerateResult:
        """The job's checked, encoded pictures.

        A picture is flagged when it scores above the threshold, and also when what the job brought
        in does or came from a flagged picture (`source_flagged`): what an image mode keeps of a
        flagged picture stays flagged, however large the canvas around it."""
        checking = time.perf_counter()
        request, images = self.request, self.images
        seeds = request.seeds()
        # One classifier call for the job: its pictures, then what it brought in.
        scores = self.safety.scores(images + self.brought)
        scores, source_scores = scores[:len(images)], scores[len(images):]
        source_score = max(source_scores) if source_scores else None
        from_flagged = request.source_flagged or (source_score is not None and source_score > self.threshold)
        file_format = request.mode.file_format
        if file_format == "gif":  # one animation: flagged as a whole if any frame is
            files = [(images, seeds[0], max(scores))]
        else:
            files = [([image], seed, score) for image, seed, score in zip(images, seeds, scores, strict=True)]
        results = []
        for frames, seed, score in files:
            parameters = infotext(request, seed=seed, width=self.width, height=self.height, model=self.model,
                                  upscaler=self.upscaler)
            flagged = score > self.threshold or from_flagged
            # A flagged image the channel may not show is never encoded, let alone sent.
            data = b"" if flagged and not request.keep_flagged else _encoded(frames, file_format, parameters)
            results.append(ImageResult(data=data, seed=seed, nsfw_content_detected=flagged, nsfw_score=score,
                                       format=file_format))
        checked = time.perf_counter()
        tokens, chunks = self.reading or (None, None)
        return GenerateResult(
            job_id=self.job_id,
            prompt_tokens=tokens,
            prompt_chunks=chunks,
            images=tuple(results),
            seed=seeds[0],
            width=self.width,
            height=self.height,
            model=self.model,
            source_score=source_score,
            timings={
                "generate": round(self.seconds, 3),
                "safety": round(checked - checking, 3),
                "total": round(self.seconds + checked - checking, 3),
            },
        )


def _encoded(frames: list[Image.Image], file_format: str, parameters: str) -> bytes:
    """One picture as a PNG, or an animation's frames as a GIF, carrying the generation parameters."""
    return imaging.gif(frames, comment=parameters) if file_format == "gif" else imaging.png(frames[0], parameters)
