"""A picture's fingerprint (a 64-bit difference hash), to recognise a flagged result when a member
brings it back as an attachment: re-encoded, resized, slightly cropped, padded with a plain border,
mirrored or turned, it stays within a few bits of one of its variants. Imports no discord; call
`of` and `variants` through a thread (they decode)."""

from __future__ import annotations

import io

from PIL import Image, ImageChops, ImageOps

# Two fingerprints this close (of 64 bits) are the same picture, as far as the safety filter cares.
SAME_PICTURE_BITS = 10
# A fingerprint with fewer set (or unset) bits than this says little: a plain or nearly plain
# picture, which many innocent pictures share. It is neither stored nor matched.
MIN_INFORMATION_BITS = 12
# A border this close to one colour is padding: trimmed before fingerprinting.
BORDER_TOLERANCE = 12


def _open(image: Image.Image | bytes) -> Image.Image:
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as opened:
            opened.draft("RGB", (256, 256))
            return opened.convert("RGB")
    return image.convert("RGB")


def _dhash(grey: Image.Image) -> int:
    """The difference hash: a 9×8 grey thumbnail, one bit per pair of neighbours (is the left one
    brighter?). Stable under re-encoding and scaling, unlike a hash of the bytes."""
    small = grey.resize((9, 8), Image.Resampling.BOX)
    pixels = small.tobytes()  # one byte per pixel (L)
    bits = 0
    for row in range(8):
        for column in range(8):
            bits = bits << 1 | (pixels[row * 9 + column] > pixels[row * 9 + column + 1])
    return bits


def trimmed(image: Image.Image) -> Image.Image:
    """The picture without a plain border (the colour of its top-left pixel, give or take)."""
    background = Image.new("RGB", image.size, image.getpixel((0, 0)))
    difference = ImageChops.difference(image, background).convert("L")
    difference = difference.point(lambda v: 255 if v > BORDER_TOLERANCE else 0)
    box = difference.getbbox()
    return image.crop(box) if box and box != (0, 0, *image.size) else image


def of(image: Image.Image | bytes) -> int:
    """The fingerprint of a picture as posted."""
    return _dhash(_open(image).convert("L"))


def variants(image: Image.Image | bytes) -> list[int]:
    """The fingerprints of what a member may have made of a posted picture: itself without a plain
    border, in each of its eight mirrorings and quarter turns."""
    grey = trimmed(_open(image)).convert("L")
    turned = [grey, grey.transpose(Image.Transpose.ROTATE_90), grey.transpose(Image.Transpose.ROTATE_180),
              grey.transpose(Image.Transpose.ROTATE_270)]
    return [_dhash(picture) for base in turned for picture in (base, ImageOps.mirror(base))]


def informative(fingerprint: int) -> bool:
    ones = fingerprint.bit_count()
    return MIN_INFORMATION_BITS <= ones <= 64 - MIN_INFORMATION_BITS


def same(a: int, b: int) -> bool:
    return (a ^ b).bit_count() <= SAME_PICTURE_BITS


def matches(brought: list[int], known: int) -> bool:
    """Whether any variant of a brought picture is the known (flagged) one."""
    return informative(known) and any(same(variant, known) for variant in brought)
