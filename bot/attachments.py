"""Images that members attach to slash commands: download them safely, decode them, and fit them
to what the engine accepts, turning every problem into a message the member can act on.

Imports neither torch nor discord: an attachment is anything with `url`, `filename`, `size` and
`content_type`, as `discord.Attachment` has. Decoding is CPU-bound and, for a big picture, takes
memory: await `load_image_async` (a few decodes at a time across the bot), and call `fit_size` and
`fit_mask` through `asyncio.to_thread`, never on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import struct
import zlib
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import aiohttp
from PIL import ExifTags, Image
from yarl import URL

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
# Where Discord serves attachments (scheme://host). The interaction gives the URL, so this is
# defence in depth: the bot fetches nothing else even if a URL were forged or mis-resolved.
DISCORD_CDN = frozenset({"https://cdn.discordapp.com", "https://media.discordapp.net"})
# A decoded picture takes up to 4 bytes a pixel (160 MB at 40 megapixels) whatever its file size,
# so decodes wait their turn: this many at a time across the bot.
DECODE_WORKERS = 1
_DECODES = ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="decode")
# A big picture is shrunk while it is decoded, but to no less than this many times the size it will
# be fitted into, so the final LANCZOS has the detail to work with (Pillow's thumbnail does the same).
REDUCING_GAP = 2.0
# The smallest side `fit_size` makes by default; `load_image` reduces no further than that needs.
FIT_MIN_SIZE = 64
# Flattening and shrinking go a tile of about TILE×TILE pixels at a time: no full-size copy is made.
TILE = 1024
# What `ImageOps.exif_transpose` does for each EXIF orientation.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = {5, 6, 7, 8}


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


def _origin(url: str) -> str | None:
    """"scheme://host[:port]" of `url`, lower case, the default port left out; None if it has none."""
    try:
        parsed = URL(url)
        return str(parsed.origin()) if parsed.absolute and parsed.host else None
    except ValueError:
        return None


def attachment_origins(api_base: str | None) -> frozenset[str]:
    """Where attachments may be downloaded from: Discord's CDN, and the origin of the configured
    Discord API (`DISCORD_API_BASE`: a self-hosted or test Discord serves attachments itself)."""
    own = _origin(api_base) if api_base else None
    return DISCORD_CDN | {own} if own else DISCORD_CDN


def declared(attachment: Attachment, *, max_bytes: int, what: str | None = None,
             allowed_origins: Collection[str] = DISCORD_CDN) -> None:
    """What can be refused before fetching anything (the command's answer has not even begun): a
    link that is not Discord's, a declared size over the limit. Raises AttachmentError."""
    if _origin(attachment.url) not in allowed_origins:
        raise AttachmentError(f"Could not download {_named(attachment.filename, what)}: its link is not Discord's, "
                              "so the bot did not fetch it; attach the file to the command itself.")
    if attachment.size > max_bytes:
        raise _too_big(attachment.filename, what, attachment.size, max_bytes)


async def download(
    session: aiohttp.ClientSession,
    attachment: Attachment,
    *,
    max_bytes: int,
    timeout: float = 20.0,
    what: str | None = None,
    allowed_origins: Collection[str] = DISCORD_CDN,
) -> bytes:
    """The attachment's bytes, never more than `max_bytes` of them in memory. `what` names the
    option it came from in messages ("The mask").

    Only `attachment.url` is fetched (the interaction's resolved attachment, never a URL a member
    typed), only from `allowed_origins` ("scheme://host[:port]", see `attachment_origins`), and
    redirects are not followed, so the bot cannot be pointed elsewhere. The declared size and
    Content-Length are checked first to refuse early, but the body is counted as it arrives because
    either may lie.
    """
    declared(attachment, max_bytes=max_bytes, what=what, allowed_origins=allowed_origins)
    name = attachment.filename
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
               matte: tuple[int, int, int] = (255, 255, 255),
               fit_within: tuple[int, int] | None = None) -> Image.Image:
    """An upright RGB image from a member's file, or an AttachmentError saying why not.
    Transparent parts are put on `matte`: white for pictures (what a viewer shows), black for
    masks (a mask painted on a transparent layer repaints only its strokes).

    The format is the decoded one, not the file name's. The pixel count is checked from the
    header before any pixel is decoded, so a small file that inflates to gigabytes is refused
    cheaply. Pillow refuses above its own bomb limit (and warns just below it), so that limit
    counts too.

    `fit_within` is the (width, height) the picture will be fitted into with `fit_size`. A picture
    much bigger than that is decoded reduced (a JPEG by libjpeg at 1/2, 1/4 or 1/8 scale) and
    shrunk by an integer factor a tile at a time, so it never takes more memory than its decoded
    pixels plus a small fitted copy. Such a picture keeps its file's upright size in
    `info["source_size"]`, which `fit_size` and `fit_mask` use, so that the result and what the
    member is told are those of the full picture.
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
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            swapped = orientation in _SWAPS_SIDES
            upright = (height, width) if swapped else (width, height)
            factor = 1
            if fit_within is not None:
                wanted = _scaled_size(*upright, *fit_within, min_size=FIT_MIN_SIZE)
                needed = tuple(min(side, math.ceil(n * REDUCING_GAP)) for side, n in zip(upright, wanted))
                needed = needed[::-1] if swapped else needed
                image.draft("RGB", needed)  # JPEG only: libjpeg decodes at 1/2, 1/4 or 1/8 scale
                factor = max(1, min(image.width // needed[0], image.height // needed[1]))
            image.load()  # the first frame of an animation: Image.open leaves it selected
            small = _flatten(image, matte, factor)
        except Image.DecompressionBombError:
            raise AttachmentError(too_many) from None
        except _DECODE_ERRORS:
            raise AttachmentError(damaged) from None
    if orientation in _UPRIGHT:
        small = small.transpose(_UPRIGHT[orientation])
    if small.size != upright:
        small.info["source_size"] = upright
    return small


async def load_image_async(data: bytes, *, name: str, max_pixels: int, what: str | None = None,
                           matte: tuple[int, int, int] = (255, 255, 255),
                           fit_within: tuple[int, int] | None = None) -> Image.Image:
    """`load_image` off the event loop, waiting its turn: at most DECODE_WORKERS decodes run at a
    time across the bot, so a burst of big pictures cannot add up to gigabytes."""
    load = functools.partial(load_image, data, name=name, max_pixels=max_pixels, what=what, matte=matte,
                             fit_within=fit_within)
    return await asyncio.get_running_loop().run_in_executor(_DECODES, load)


def _identify(data: bytes) -> str | None:
    """The format of a file we refuse, so the refusal can name it ("in TIFF format")."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # whatever Pillow raises, it does not know the file: "not an image"
        return None


def _flatten(image: Image.Image, matte: tuple[int, int, int] = (255, 255, 255), factor: int = 1) -> Image.Image:
    """RGB with transparent parts on `matte` (the engine takes RGB), shrunk `factor` times by
    averaging `factor`×`factor` blocks. It goes a tile at a time, so the only full-size picture
    is the decoded one; tiles are whole blocks, so the result is the same as in one piece."""
    clear = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    width, height = image.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    step = max(1, TILE // factor) * factor
    for top in range(0, height, step):
        for left in range(0, width, step):
            tile = image.crop((left, top, min(left + step, width), min(top + step, height)))
            if clear:
                tile = tile.convert("RGBA")
                tile = Image.alpha_composite(Image.new("RGBA", tile.size, (*matte, 255)), tile)
            out.paste(tile.convert("RGB").reduce(factor), (left // factor, top // factor))
    return out


def source_size(image: Image.Image) -> tuple[int, int]:
    """The size of the member's picture that `image` stands for: bigger than `image.size` when
    `load_image` decoded it reduced."""
    return image.info.get("source_size", image.size)


def _scaled_size(width: int, height: int, max_width: int, max_height: int, *, min_size: int) -> tuple[int, int]:
    """The size `fit_size` scales a width×height picture to, before cropping."""
    scale = min(1.0, max_width / width, max_height / height)
    if min(width, height) * scale < min_size:
        scale = min_size / min(width, height)
    return max(min_size, round(width * scale)), max(min_size, round(height * scale))


def fit_size(
    image: Image.Image, *, max_width: int, max_height: int, multiple: int = 8, min_size: int = FIT_MIN_SIZE
) -> tuple[Image.Image, str | None]:
    """The image within the limits with sides that are multiples of `multiple`, and a sentence
    telling the member what changed (None when nothing did), so a resized result is no surprise.

    Scaling keeps the aspect ratio; only the final crop (centred) changes it, by less than
    `multiple` pixels a side unless an image is too long and thin to fit at all. A picture
    `load_image` decoded reduced is fitted, and reported, as the full picture would be.
    """
    width, height = source_size(image)
    scaled = _scaled_size(width, height, max_width, max_height, min_size=min_size)
    target = (
        min(scaled[0], max_width) // multiple * multiple,
        min(scaled[1], max_height) // multiple * multiple,
    )
    resized = scaled != (width, height)
    cropped = target != scaled
    if not resized and not cropped:
        return image, None

    if scaled[0] > max_width or scaled[1] > max_height:
        # Too long and thin: only the centre is kept, so scale just that part. Scaling the whole
        # first would make a picture far bigger than the limits (a 40000×1 one: 2.5 gigapixels).
        fx, fy = image.width / scaled[0], image.height / scaled[1]
        left, top = (scaled[0] - target[0]) // 2, (scaled[1] - target[1]) // 2
        right, bottom = min(image.width, (left + target[0]) * fx), min(image.height, (top + target[1]) * fy)
        out = image.resize(target, Image.Resampling.LANCZOS, box=(left * fx, top * fy, right, bottom))
    else:
        out = image.resize(scaled, Image.Resampling.LANCZOS) if scaled != image.size else image
        if cropped:
            left, top = (scaled[0] - target[0]) // 2, (scaled[1] - target[1]) // 2
            out = out.crop((left, top, left + target[0], top + target[1]))
    if out is image:  # a reduced picture that is already the fitted size
        out = image.copy()
    out.info.pop("source_size", None)
    done = "resized and cropped" if resized and cropped else "resized" if resized else "cropped"
    return out, f"Your image was {done} from {width}×{height} to {target[0]}×{target[1]}."


def fit_mask(mask: Image.Image, image: Image.Image | tuple[int, int]) -> tuple[Image.Image, str | None]:
    """The mask in L mode (white = repaint) at the size of `image` (the picture, or its size), with
    a notice when it was scaled.

    A mask of a different shape would no longer cover what the member painted, and one with no
    white repaints nothing, so both are refused rather than silently run. Given the picture, sizes
    are compared and reported as the member's files have them (`source_size`), and the mask is
    fitted by `fit_size` exactly as the picture is, even when `load_image` decoded either reduced.
    """
    size, shown = (image.size, source_size(image)) if isinstance(image, Image.Image) else (image, image)
    grey = mask.convert("L")
    (mask_w, mask_h) = source_size(mask) if isinstance(image, Image.Image) else mask.size
    image_w, image_h = shown
    if abs((mask_w / mask_h) / (image_w / image_h) - 1) > MASK_ASPECT_TOLERANCE:
        raise AttachmentError(
            f"The mask is {mask_w}×{mask_h} but the image is {image_w}×{image_h}: "
            "make the mask the same shape as the image."
        )
    if grey.getextrema()[1] < MASK_THRESHOLD:
        raise AttachmentError(
            "The mask is entirely black, so there is nothing to repaint: paint the parts to change in white."
        )
    resized = grey.size != size
    if resized:
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    if resized or isinstance(image, Image.Image):  # it now stands for what the picture stands for
        grey.info.pop("source_size", None)
        if shown != size:
            grey.info["source_size"] = shown
    if (mask_w, mask_h) == shown:
        return grey, None
    return grey, f"The mask was scaled from {mask_w}×{mask_h} to {image_w}×{image_h} to match the image."


def to_png(image: Image.Image) -> bytes:
    """PNG bytes, the form `GenerateRequest.image` and `.mask` travel in."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
