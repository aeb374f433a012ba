"""Images that members attach to slash commands: download them safely, decode them, and fit them
to what the engine accepts, turning every problem into a message the member can act on.

Imports neither torch nor discord: an attachment is anything with `url`, `filename`, `size` and
`content_type`, as `discord.Attachment` has. Decoding is CPU-bound: call `load_image`, `fit_size`
and `fit_mask` through `asyncio.to_thread`, never on the event loop.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import Protocol

import aiohttp
from PIL import Image, ImageOps

from bot.render import escape

# Pillow's JPEG opener also opens the multi-picture JPEGs phones save (which it names MPO).
FORMATS = ["PNG", "JPEG", "WEBP", "GIF"]
ACCEPTED = "attach a PNG, JPEG, WebP or GIF"
CHUNK = 64 * 1024
# diffusers binarizes masks at half grey, so darker pixels repaint nothing.
MASK_THRESHOLD = 128
MASK_ASPECT_TOLERANCE = 0.05
# Errors Pillow raises on damaged or hostile data once a format has been recognised.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


class Attachment(Protocol):
    """What is used of `discord.Attachment`, so tests and the bot need not build one."""

    url: str
    filename: str
    size: int
    content_type: str | None


class AttachmentError(ValueError):
    """A member's attachment cannot be used; the message says what was wrong and what to do."""


def _named(name: str, what: str | None, *, start: bool = False) -> str:
    """How a message refers to the attachment: "The mask (photo.png)" or just "photo.png"."""
    if len(name) > 60:
        name = name[:59] + "…"
    name = escape(name)  # a member's text: shown, never interpreted as markdown
    if what is None:
        return name
    if not start and what.startswith("The "):
        what = "the " + what[4:]
    return f"{what} ({name})"


def _megabytes(n: int) -> str:
    # Decimal units, as the settings' max_attachment_mb. Rounded up, so a file one byte over a
    # 10 MB limit never reads as "10.0 MB".
    if n < 1_000_000:
        return f"{math.ceil(n / 1000)} KB"
    return f"{math.ceil(n / 100_000) / 10:g} MB"


def _megapixels(n: int) -> str:
    return f"{round(n / 1_000_000, 1):g} megapixels" if n >= 100_000 else f"{n} pixels"


def _too_big(name: str, what: str | None, size: int, max_bytes: int) -> AttachmentError:
    return AttachmentError(
        f"{_named(name, what, start=True)} is {_megabytes(size)}; the limit is {_megabytes(max_bytes)}."
    )


async def download(
    session: aiohttp.ClientSession,
    attachment: Attachment,
    *,
    max_bytes: int,
    timeout: float = 20.0,
    what: str | None = None,
) -> bytes:
    """The attachment's bytes, never more than `max_bytes` of them in memory. `what` names the
    option it came from in messages ("The mask").

    Only `attachment.url` is fetched (the interaction's resolved attachment, never a URL a member
    typed), and redirects are not followed, so the bot cannot be pointed elsewhere. The declared
    size and Content-Length are checked first to refuse early, but the body is counted as it
    arrives because either may lie.
    """
    name = attachment.filename
    if attachment.size > max_bytes:
        raise _too_big(name, what, attachment.size, max_bytes)
    failed = f"Could not download {_named(name, what)}"
    try:
        async with session.get(
            attachment.url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            if response.status != 200:
                raise AttachmentError(f"{failed}: Discord answered HTTP {response.status}; try again.")
            if response.content_length is not None and response.content_length > max_bytes:
                raise _too_big(name, what, response.content_length, max_bytes)
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise _too_big(name, what, len(body), max_bytes)
            return bytes(body)
    except TimeoutError:
        raise AttachmentError(f"{failed}: it took more than {timeout:g} seconds; try again.") from None
    except aiohttp.ClientError:
        raise AttachmentError(f"{failed}: the connection failed; try again.") from None


def load_image(data: bytes, *, name: str, max_pixels: int, what: str | None = None,
               matte: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """An upright RGB image from a member's file, or an AttachmentError saying why not.
    Transparent parts are put on `matte`: white for pictures (what a viewer shows), black for
    masks (a mask painted on a transparent layer repaints only its strokes).

    The format is the decoded one, not the file name's. The pixel count is checked from the
    header before any pixel is decoded, so a small file that inflates to gigabytes is refused
    cheaply. Pillow refuses above its own bomb limit (and warns just below it), so that limit
    counts too.
    """
    subject = _named(name, what, start=True)
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    too_many = f"{subject} has too many pixels; the limit is {_megapixels(limit)}."
    damaged = f"{subject} could not be read as an image (it may be damaged)."
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise AttachmentError(too_many) from None
    except Image.UnidentifiedImageError:
        # A damaged file of an accepted format is refused here too: tell its owner so.
        if data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise AttachmentError(damaged) from None
        other = _identify(data)
        if other is not None:
            raise AttachmentError(f"{subject} is in {other} format, which is not supported: {ACCEPTED}.") from None
        raise AttachmentError(f"{subject} is not an image: {ACCEPTED}.") from None
    except _DECODE_ERRORS:
        raise AttachmentError(damaged) from None

    with image:
        width, height = image.size
        if width * height > limit:
            raise AttachmentError(f"{subject} is {width}×{height} pixels; the limit is {_megapixels(limit)}.")
        try:
            image.load()  # the first frame of an animation: Image.open leaves it selected
            upright = ImageOps.exif_transpose(image)
        except Image.DecompressionBombError:
            raise AttachmentError(too_many) from None
        except _DECODE_ERRORS:
            raise AttachmentError(damaged) from None
    return _flatten(upright, matte)


def _identify(data: bytes) -> str | None:
    """The format of a file we refuse, so the refusal can name it ("in TIFF format")."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # whatever Pillow raises, it does not know the file: "not an image"
        return None


def _flatten(image: Image.Image, matte: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """RGB with transparent parts on `matte`: the engine takes RGB."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*matte, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit_size(
    image: Image.Image, *, max_width: int, max_height: int, multiple: int = 8, min_size: int = 64
) -> tuple[Image.Image, str | None]:
    """The image within the limits with sides that are multiples of `multiple`, and a sentence
    telling the member what changed (None when nothing did), so a resized result is no surprise.

    Scaling keeps the aspect ratio; only the final crop (centred) changes it, by less than
    `multiple` pixels a side unless an image is too long and thin to fit at all.
    """
    width, height = image.size
    scale = min(1.0, max_width / width, max_height / height)
    if min(width, height) * scale < min_size:
        scale = min_size / min(width, height)
    scaled = (max(min_size, round(width * scale)), max(min_size, round(height * scale)))
    target = (
        min(scaled[0], max_width) // multiple * multiple,
        min(scaled[1], max_height) // multiple * multiple,
    )
    resized = scaled != (width, height)
    cropped = target != scaled
    if not resized and not cropped:
        return image, None

    out = image.resize(scaled, Image.Resampling.LANCZOS) if resized else image
    if cropped:
        left, top = (scaled[0] - target[0]) // 2, (scaled[1] - target[1]) // 2
        out = out.crop((left, top, left + target[0], top + target[1]))
    done = "resized and cropped" if resized and cropped else "resized" if resized else "cropped"
    return out, f"Your image was {done} from {width}×{height} to {target[0]}×{target[1]}."


def fit_mask(mask: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, str | None]:
    """The mask in L mode (white = repaint) at the image's `size`, with a notice when it was scaled.

    A mask of a different shape would no longer cover what the member painted, and one with no
    white repaints nothing, so both are refused rather than silently run.
    """
    grey = mask.convert("L")
    (mask_w, mask_h), (image_w, image_h) = grey.size, size
    if abs((mask_w / mask_h) / (image_w / image_h) - 1) > MASK_ASPECT_TOLERANCE:
        raise AttachmentError(
            f"The mask is {mask_w}×{mask_h} but the image is {image_w}×{image_h}: "
            "make the mask the same shape as the image."
        )
    if grey.getextrema()[1] < MASK_THRESHOLD:
        raise AttachmentError(
            "The mask is entirely black, so there is nothing to repaint: paint the parts to change in white."
        )
    if grey.size == size:
        return grey, None
    scaled = grey.resize(size, Image.Resampling.LANCZOS)
    return scaled, f"The mask was scaled from {mask_w}×{mask_h} to {image_w}×{image_h} to match the image."


def to_png(image: Image.Image) -> bytes:
    """PNG bytes, the form `GenerateRequest.image` and `.mask` travel in."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
