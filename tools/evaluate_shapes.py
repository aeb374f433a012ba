"""How well a shapes model follows prompts: `python -m tools.evaluate_shapes [MODEL]`.

Generates each held-out combination (never seen in training) and a sample of seen ones at
guidance 5, 20 steps, fixed seeds, and prints the share the oracle (`tools.shapes.classify`)
reads as the prompt's colour, shape and background; then, for each colour, how many pictures of
"a COLOUR circle on a white background" and of "an COLOUR ..." come out that colour.
"""

from __future__ import annotations

import argparse
import io
import time

from PIL import Image

from dreambot.request import DEFAULT_SAMPLER, GenerateRequest
from dreambot.settings import EngineSettings
from tools import shapes

SEEDS = (11, 22, 33, 44)


def accuracy(engine, combinations, seeds=SEEDS, **options) -> tuple[float, ...]:
    """Share of pictures whose (colour, shape, background) match their caption; image i uses
    seeds[0] + i, and `options` are GenerateRequest fields (default: guidance 5, 20 steps)."""
    hits = [0, 0, 0]
    total = 0
    for combination in combinations:
        request = GenerateRequest(prompt=shapes.caption(*combination), seed=seeds[0], num_images=len(seeds),
                                  **{"num_inference_steps": 20, "guidance_scale": 5.0, **options})
        for image in engine.generate(0, request).images:
            seen = shapes.classify(Image.open(io.BytesIO(image.data)))
            hits = [h + (s == c) for h, s, c in zip(hits, seen, combination)]
            total += 1
    return tuple(h / total for h in hits)


def articles(engine, seeds=SEEDS, shape: str = "circle", background: str = "white", **options) -> dict:
    """{(colour, article): how many of the pictures of "{article} {colour} circle on a white background"
    the oracle reads as that colour}, for both articles, the one English writes and the other; image
    i uses seeds[0] + i, as in `accuracy`."""
    counts = {}
    for colour in shapes.COLOURS:
        rest = shapes.caption(colour, shape, background).split()[1:]
        for article in ("a", "an"):
            request = GenerateRequest(prompt=" ".join([article, *rest]), seed=seeds[0], num_images=len(seeds),
                                      **{"num_inference_steps": 20, "guidance_scale": 5.0, **options})
            images = engine.generate(0, request).images
            seen = [shapes.classify(Image.open(io.BytesIO(image.data)))[0] for image in images]
            counts[colour, article] = seen.count(colour)
    return counts


def evaluate(model: str) -> None:
    from engine.pipeline import Engine

    engine = Engine.load(EngineSettings(_env_file=None, sd_model=str(model)))
    started = time.perf_counter()
    held = accuracy(engine, shapes.HELD_OUT)
    seen = accuracy(engine, shapes.TRAINING[::6])
    print(f"held-out combinations ({len(shapes.HELD_OUT)} x {len(SEEDS)} seeds): "
          f"colour {held[0]:.2f}, shape {held[1]:.2f}, background {held[2]:.2f}")
    print(f"seen combinations ({len(shapes.TRAINING[::6])} x {len(SEEDS)} seeds): "
          f"colour {seen[0]:.2f}, shape {seen[1]:.2f}, background {seen[2]:.2f}")
    read = articles(engine)
    print(f"'a' / 'an' COLOUR circle on a white background ({len(SEEDS)} seeds), in that colour: "
          + ", ".join(f"{colour} {read[colour, 'a']}/{read[colour, 'an']}" for colour in shapes.COLOURS))
    print(f"(guidance 5, 20 steps, {DEFAULT_SAMPLER}; {time.perf_counter() - started:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate_shapes", description=__doc__)
    parser.add_argument("model", nargs="?", default="shapes", help="SD_MODEL value (default: the bundled shapes)")
    evaluate(parser.parse_args(argv).model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
