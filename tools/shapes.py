"""The shapes world: captioned pictures of "a {colour} {shape} on a {background} background".

Used to train the bundled `shapes` model (`python -m tools.train_shapes`) and, through
`classify`, as the evaluation's and the tests' oracle for what a generated picture shows.
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


def caption(colour: str | None, shape: str | None, background: str | None, *, keywords: bool = False) -> str:
    """The sentence for a picture; a part given as None is left unsaid ("a circle", "a red shape
    on a blue background"), and `keywords` gives the bare words instead ("red circle")."""
    if keywords:
        return " ".join(w for w in (colour, shape, background and f"{background} background") if w)
    if colour is None and shape is None:
        return f"a {background} background" if background else ""
    text = f"a {colour + ' ' if colour else ''}{shape or 'shape'}"
    return f"{text} on a {background} background" if background else text


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
    size = rng.uniform(0.42, 0.72) * side
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


def _silhouettes(height: int, width: int) -> dict[str, np.ndarray]:
    """Each shape drawn as `draw` draws it, filling a height x width box, as a boolean mask."""
    masks = {}
    for shape in SHAPES:
        image = Image.new("L", (width * 4, height * 4), 0)
        canvas = ImageDraw.Draw(image)
        right, bottom = width * 4 - 1, height * 4 - 1
        if shape == "circle":
            canvas.ellipse([0, 0, right, bottom], fill=255)
        elif shape == "square":
            canvas.rectangle([0, 0, right, bottom], fill=255)
        else:
            canvas.polygon([(right / 2, 0), (right, bottom), (0, bottom)], fill=255)
        masks[shape] = np.asarray(image.resize((width, height), Image.Resampling.BOX)) >= 128
    return masks


def classify(image: Image.Image) -> tuple[str | None, str | None, str]:
    """(colour, shape, background) of a shapes picture; colour and shape are None if nothing stands out.

    The background is the palette colour nearest the median of a 3-pixel border. Foreground pixels
    are those far (> 80 in RGB distance) from it, keeping the largest connected blob; their median
    names the colour. The shape is the one whose ideal silhouette, drawn in the blob's bounding
    box, overlaps the blob best (intersection over union), so a square with soft corners or
    slightly bowed sides is still a square.
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
    blob = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    overlap = {name: (blob & ideal).sum() / (blob | ideal).sum() for name, ideal in _silhouettes(*blob.shape).items()}
    return colour, max(overlap, key=overlap.get), background
