"""The shapes world: captioned pictures of "a {colour} {shape} on a {background} background"
("an orange ..." where the next word starts with a vowel).

Used to train the bundled `shapes` model (`python -m tools.train_shapes`) and its `outline` LoRA
(`python -m tools.train_lora`, pictures drawn with `outline=True`) and, through `classify` and
`hollow`, as the evaluation's and the tests' oracle for what a generated picture shows.
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
HOLLOW_SHARE = 0.25  # `hollow`: the share of a shape's inside that must show the background
STROKE = 4  # the width, in pixels of the final picture, of an outline's line (`draw(..., outline=True)`)
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


def article(word: str) -> str:
    """The indefinite article English writes before `word`: "an" before a vowel ("an orange"), else "a".

    By the first letter, not the sound: no word of this world is an "hour" or a "unit"."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def caption(colour: str | None, shape: str | None, background: str | None, *, keywords: bool = False) -> str:
    """The sentence for a picture, with articles as English writes them ("an orange circle on a
    white background"); a part given as None is left unsaid ("a circle", "a red shape on a blue
    background"), and `keywords` gives the bare words instead ("red circle")."""
    if keywords:
        return " ".join(w for w in (colour, shape, background and f"{background} background") if w)
    if colour is None and shape is None:
        return f"{article(background)} {background} background" if background else ""
    noun = f"{colour + ' ' if colour else ''}{shape or 'shape'}"
    text = f"{article(noun)} {noun}"
    return f"{text} on {article(background)} {background} background" if background else text


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def draw(colour: str, shape: str, background: str | tuple[str, str], rng: random.Random, *,
         outline: bool = False) -> Image.Image:
    """One anti-aliased picture; a (background, background) pair splits the canvas in two halves.

    With `outline` the shape is only its edge, a STROKE-pixel line inside the same outline a filled
    shape would have, with the background showing through; `rng` is drawn from exactly as without."""
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
    # PIL draws a `width` stroke inwards from the outline, so an outline and a filled shape cover the same box.
    paint = {"outline": fill, "width": round(STROKE * scale)} if outline else {"fill": fill}
    if shape == "circle":
        canvas.ellipse(box, **paint)
    elif shape == "square":
        canvas.rectangle(box, **paint)
    else:
        canvas.polygon([(x + size / 2, y), (x + size, y + size), (x, y + size)], **paint)
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


def _blob(image: Image.Image) -> tuple[np.ndarray, np.ndarray, str, np.ndarray | None]:
    """(pixels, the border's RGB, the background's name, the mask of the largest blob or None)."""
    from scipy import ndimage

    pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    border = np.concatenate([pixels[:3].reshape(-1, 3), pixels[-3:].reshape(-1, 3),
                             pixels[:, :3].reshape(-1, 3), pixels[:, -3:].reshape(-1, 3)])
    back = np.median(border, axis=0)
    background = _nearest(back, BACKGROUNDS)
    labels, count = ndimage.label(np.linalg.norm(pixels - back, axis=-1) > 80)
    if count == 0:
        return pixels, back, background, None
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    if mask.sum() < 0.01 * SIZE * SIZE:
        return pixels, back, background, None
    return pixels, back, background, mask


def _hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a mask's pixels (their unit squares), as the mask of the pixels whose centre it holds."""
    from scipy.spatial import ConvexHull

    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)])
    hull = ConvexHull(corners)
    grid = np.stack(np.meshgrid(np.arange(mask.shape[1]), np.arange(mask.shape[0])), -1).reshape(-1, 2)
    inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(axis=1)
    return inside.reshape(mask.shape)


def _hollow(pixels: np.ndarray, back: np.ndarray, mask: np.ndarray, share: float) -> tuple[bool, np.ndarray]:
    """(whether the blob is an outline, its region: the convex hull of the blob), as `hollow` says."""
    from scipy import ndimage

    region = _hull(mask)
    inside = ndimage.binary_erosion(region, iterations=2)
    colour = np.median(pixels[mask], axis=0)
    background = np.linalg.norm(pixels - back, axis=-1) < np.linalg.norm(pixels - colour, axis=-1)
    return bool(inside.any() and (inside & background).sum() > share * inside.sum()), region


def classify(image: Image.Image) -> tuple[str | None, str | None, str]:
    """(colour, shape, background) of a shapes picture; colour and shape are None if nothing stands out.

    The background is the palette colour nearest the median of a 3-pixel border. Foreground pixels
    are those far (> 80 in RGB distance) from it, keeping the largest connected blob; their median
    names the colour. The shape is the one whose ideal silhouette, drawn in the blob's bounding
    box, overlaps the blob with its holes filled best (intersection over union), so a square with
    soft corners or slightly bowed sides is still a square.

    An outline (as `hollow` reads it) is named as its filled shape would be: its region, the
    convex hull of the blob, is matched instead of the blob (a ring with a gap has no hole to fill),
    and its colour is the median of the half of its pixels farthest from the background, the
    middle of the stroke rather than its edges, which blur into the background.
    """
    from scipy import ndimage

    pixels, back, background, mask = _blob(image)
    if mask is None:
        return None, None, background
    outline, region = _hollow(pixels, back, mask, HOLLOW_SHARE)
    colours = pixels[mask]
    if outline:
        distance = np.linalg.norm(colours - back, axis=-1)
        colours = colours[distance >= np.median(distance)]
    else:
        region = ndimage.binary_fill_holes(mask)
    colour = _nearest(np.median(colours, axis=0), COLOURS)
    ys, xs = np.nonzero(region)
    blob = region[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    overlap = {name: (blob & ideal).sum() / (blob | ideal).sum() for name, ideal in _silhouettes(*blob.shape).items()}
    return colour, max(overlap, key=overlap.get), background


def hollow(image: Image.Image, share: float = HOLLOW_SHARE) -> bool | None:
    """Whether the shape is an outline: True if more than `share` of its inside shows the background,
    False if it is filled, None if no shape stands out (as `classify` reads the picture).

    The shape's region is the convex hull of `classify`'s blob (every shape is convex, and the hull
    still holds the inside of a ring with a gap in it); its inside is that region less a 2-pixel rim,
    where anti-aliasing blends the edge into the background. A pixel there shows the background when
    it is nearer the border's colour than the blob's (median) colour, so a shape whose colour is only
    just far enough from the background to make the blob is not read as hollow. A filled shape shows
    the background nowhere inside; an outline drawn by `draw` shows it on over a third of its inside
    (a small triangle, whose stroke takes the most), most outlines on over half.
    """
    pixels, back, _, mask = _blob(image)
    if mask is None:
        return None
    return _hollow(pixels, back, mask, share)[0]
