"""The shapes world: captioned pictures of "a {colour} {shape} on a {background} background".

Used to train the bundled `shapes` model (`python -m engine.train_shapes`) and, through
`classify`, as the tests' oracle for what a generated picture shows.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "purple": (150, 50, 190),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "blue": (40, 80, 230),
}
# A shape is never drawn on its own colour: it would be invisible.
COMBINATIONS = [
    (colour, shape, background)
    for colour, shape, background in itertools.product(COLOURS, SHAPES, BACKGROUNDS)
    if colour != background
]
# Never seen in training: the model must compose them from the words it learned elsewhere.
HELD_OUT = [
    ("orange", "circle", "white"),
    ("yellow", "square", "black"),
    ("green", "triangle", "gray"),
    ("purple", "circle", "blue"),
    ("red", "square", "gray"),
    ("blue", "triangle", "black"),
    ("orange", "triangle", "blue"),
    ("yellow", "circle", "gray"),
    ("green", "square", "white"),
    ("purple", "triangle", "black"),
]
TRAINING = [combination for combination in COMBINATIONS if combination not in HELD_OUT]


def caption(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def draw(colour: str, shape: str, background: str | tuple[str, str], rng: random.Random) -> Image.Image:
    """One anti-aliased picture; a (background, background) pair splits the canvas in two halves."""
    scale = 4
    side = SIZE * scale
    if isinstance(background, tuple):
        image = Image.new("RGB", (side, side), _jitter(BACKGROUNDS[background[0]], rng))
        canvas = ImageDraw.Draw(image)
        second = _jitter(BACKGROUNDS[background[1]], rng)
        if rng.random() < 0.5:
            canvas.rectangle([side // 2, 0, side, side], fill=second)
        else:
            canvas.rectangle([0, side // 2, side, side], fill=second)
    else:
        image = Image.new("RGB", (side, side), _jitter(BACKGROUNDS[background], rng))
        canvas = ImageDraw.Draw(image)
    size = rng.uniform(0.35, 0.7) * side
    x = rng.uniform(0.05 * side, 0.95 * side - size)
    y = rng.uniform(0.05 * side, 0.95 * side - size)
    fill = _jitter(COLOURS[colour], rng)
    box = [x, y, x + size, y + size]
    if shape == "circle":
        canvas.ellipse(box, fill=fill)
    elif shape == "square":
        canvas.rectangle(box, fill=fill)
    else:
        canvas.polygon([(x + size / 2, y), (x + size, y + size), (x, y + size)], fill=fill)
    return image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name]) - rgb) ** 2)))


def classify(image: Image.Image) -> tuple[str | None, str | None, str]:
    """(colour, shape, background) of a shapes picture; colour and shape are None if nothing stands out.

    The background is the palette colour nearest the median of a 3-pixel border. Foreground pixels
    are those far (> 80 in RGB distance) from it, keeping the largest connected blob; their median
    names the colour. The shape is read from how much of the blob's bounding box it fills: a
    square fills it (> 0.88), a circle about π/4 (0.66-0.88), a triangle about half (< 0.66).
    """
    from scipy import ndimage

    pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    border = np.concatenate([pixels[:3].reshape(-1, 3), pixels[-3:].reshape(-1, 3),
                             pixels[:, :3].reshape(-1, 3), pixels[:, -3:].reshape(-1, 3)])
    back = np.median(border, axis=0)
    background = _nearest(back, BACKGROUNDS)
    labels, count = ndimage.label(np.linalg.norm(pixels - back, axis=-1) > 80)
    if count == 0:
        return None, None, background
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    if mask.sum() < 0.01 * SIZE * SIZE:
        return None, None, background
    colour = _nearest(np.median(pixels[mask], axis=0), COLOURS)
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = "square" if fill > 0.88 else "circle" if fill > 0.66 else "triangle"
    return colour, shape, background
