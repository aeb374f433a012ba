"""Fingerprints of flagged pictures: the same picture is recognised however it was re-saved, padded,
mirrored or turned; other pictures, and plain ones, are not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from bot import fingerprint


def blocks(seed: int, size: tuple[int, int] = (128, 64)) -> Image.Image:
    """A picture with some structure: coloured blocks, as a generated picture has regions."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3))
    return Image.fromarray(np.kron(cells, np.ones((8, 8, 1))).astype(np.uint8))


def jpeg(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    buffer = io.BytesIO()
    image.resize(size).save(buffer, format="JPEG", quality=70)
    return Image.open(io.BytesIO(buffer.getvalue()))


def padded(image: Image.Image, border: int) -> Image.Image:
    canvas = Image.new("RGB", (image.width + 2 * border, image.height + 2 * border), "white")
    canvas.paste(image, (border, border))
    return canvas


@pytest.mark.parametrize("change", [
    lambda p: p, lambda p: jpeg(p, (96, 48)), lambda p: jpeg(p, (256, 128)), ImageOps.mirror, ImageOps.flip,
    lambda p: p.transpose(Image.Transpose.ROTATE_90), lambda p: p.transpose(Image.Transpose.ROTATE_270),
    lambda p: padded(p, 32), lambda p: padded(p, 128), lambda p: padded(ImageOps.mirror(p), 64),
])
def test_a_flagged_picture_brought_back_is_recognised(change) -> None:
    known = fingerprint.of(blocks(1))
    assert fingerprint.informative(known)
    assert fingerprint.matches(fingerprint.variants(change(blocks(1))), known)


def test_other_and_plain_pictures_are_not() -> None:
    known = fingerprint.of(blocks(1))
    assert not any(fingerprint.matches(fingerprint.variants(blocks(seed)), known) for seed in range(2, 40))
    for plain in ((255, 255, 255), (0, 0, 0), (198, 134, 110)):
        flat = fingerprint.of(Image.new("RGB", (248, 64), plain))
        assert not fingerprint.informative(flat)  # never stored, so it can blacklist nothing
        assert not fingerprint.matches(fingerprint.variants(Image.new("RGB", (64, 64), plain)), flat)


def test_fingerprints_of_bytes_and_of_pictures_agree() -> None:
    picture = blocks(3)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    assert fingerprint.of(buffer.getvalue()) == fingerprint.of(picture)
