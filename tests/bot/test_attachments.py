"""Attachments from download to engine-ready PNG: bad files get specific messages, good ones arrive
upright, flattened and sized; downloads are served from a loopback aiohttp server."""

from __future__ import annotations

import asyncio
import inspect
import io
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image, ImageDraw, ImageOps, JpegImagePlugin

from bot import attachments
from bot.attachments import (
    DISCORD_CDN,
    AttachmentError,
    attachment_origins,
    download,
    fit_mask,
    fit_size,
    load_image,
    load_image_async,
    source_size,
    to_png,
)

MB = 1_000_000
MAX_PIXELS = 40_000_000


@dataclass
class FakeAttachment:
    url: str
    filename: str
    size: int
    content_type: str | None = "image/png"


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for a huge 1-bit image, with pixel data far too short to decode: if the
    size were checked only after decoding, the refusal would say "damaged", not "too many pixels"."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


RED_PNG = encode(Image.new("RGB", (64, 48), (255, 0, 0)), "PNG")


@dataclass
class Served:
    base: str
    session: aiohttp.ClientSession

    async def get(self, path: str, *, size: int = len(RED_PNG), max_bytes: int = MB, timeout: float = 5.0,
                  what: str | None = None) -> bytes:
        attachment = FakeAttachment(self.base + path, path.strip("/") + ".png", size)
        return await download(self.session, attachment, max_bytes=max_bytes, timeout=timeout, what=what,
                              allowed_origins=attachment_origins(self.base))


async def endless(request: web.Request) -> web.StreamResponse:
    """A body that never ends: only a download that counts what arrives can stop it."""
    response = web.StreamResponse()
    await response.prepare(request)
    while True:
        await response.write(b"\0" * 16 * 1024)
        await asyncio.sleep(0)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(body=RED_PNG)


async def trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for start in range(0, len(RED_PNG), 40):
        await response.write(RED_PNG[start:start + 40])
        await asyncio.sleep(0.2)
    return response


async def honest_but_big(request: web.Request) -> web.Response:
    return web.Response(body=b"\0" * (2 * MB))


async def red(request: web.Request) -> web.Response:
    return web.Response(body=RED_PNG)


async def elsewhere(request: web.Request) -> web.Response:
    raise web.HTTPFound("/red")


@pytest_asyncio.fixture
async def served():
    app = web.Application()
    app.router.add_get("/red", red)
    app.router.add_get("/endless", endless)
    app.router.add_get("/big", honest_but_big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/elsewhere", elsewhere)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        yield Served(f"http://127.0.0.1:{port}", session)
    await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load(data: bytes, name: str, *, max_pixels: int = MAX_PIXELS, what: str | None = None) -> Image.Image:
    return load_image(data, name=name, max_pixels=max_pixels, what=what)


ACCEPTED = "attach a PNG, JPEG, WebP or GIF."
SMALL = Image.new("RGB", (32, 32), (0, 128, 255))

# Each case gets the loopback server and may return an awaitable; it must raise AttachmentError.
BAD = [
    pytest.param(lambda s: load(b"just some notes\n", "notes.txt"),
                 f"notes.txt is not an image: {ACCEPTED}", id="text"),
    pytest.param(lambda s: load(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "scan.png"),
                 f"scan.png is not an image: {ACCEPTED}", id="pdf-named-png"),
    pytest.param(lambda s: load(encode(SMALL, "BMP"), "old.png"),
                 f"old.png is in BMP format, which is not supported: {ACCEPTED}", id="bmp"),
    pytest.param(lambda s: load(encode(SMALL, "TIFF"), "scan.tiff", what="The image"),
                 f"The image (scan.tiff) is in TIFF format, which is not supported: {ACCEPTED}", id="tiff"),
    pytest.param(lambda s: load(RED_PNG[:len(RED_PNG) // 2], "cut.png"),
                 "cut.png could not be read as an image (it may be damaged).", id="truncated-png"),
    pytest.param(lambda s: load(RED_PNG[:33], "stub.png"),  # the header, no pixel data
                 "stub.png could not be read as an image (it may be damaged).", id="png-header-only"),
    pytest.param(lambda s: load(png_claiming(50_000, 50_000), "bomb.png"),
                 "bomb.png has too many pixels; the limit is 40 megapixels.", id="bomb-beyond-pillow"),
    pytest.param(lambda s: load(png_claiming(8000, 6000), "huge.png", what="The mask"),
                 "The mask (huge.png) is 8000×6000 pixels; the limit is 40 megapixels.", id="bomb-beyond-ours"),
    pytest.param(lambda s: s.get("/red", size=int(14.2 * MB), max_bytes=10 * MB),
                 "red.png is 14.2 MB; the limit is 10 MB.", id="declared-too-big"),
    pytest.param(lambda s: s.get("/red", size=int(14.2 * MB), max_bytes=10 * MB, what="The mask"),
                 "The mask (red.png) is 14.2 MB; the limit is 10 MB.", id="declared-too-big-what"),
    pytest.param(lambda s: s.get("/endless", size=100, max_bytes=64_000),
                 "; the limit is 64 KB.", id="body-bigger-than-declared"),
    pytest.param(lambda s: s.get("/big", size=100, max_bytes=MB),
                 "big.png is 2 MB; the limit is 1 MB.", id="content-length-bigger-than-declared"),
    pytest.param(lambda s: s.get("/missing"),
                 "Could not download missing.png: Discord answered HTTP 404; try again.", id="http-404"),
    pytest.param(lambda s: s.get("/elsewhere"),
                 "Could not download elsewhere.png: Discord answered HTTP 302; try again.", id="redirect"),
    pytest.param(lambda s: s.get("/slow", timeout=0.2),
                 "Could not download slow.png: it took more than 0.2 seconds; try again.", id="slow-headers"),
    pytest.param(lambda s: s.get("/trickle", timeout=0.3),
                 "Could not download trickle.png: it took more than 0.3 seconds; try again.", id="slow-body"),
    pytest.param(lambda s: Served(f"http://127.0.0.1:{closed_port()}", s.session).get("/gone", what="The image"),
                 "Could not download the image (gone.png): the connection failed; try again.", id="refused"),
    pytest.param(lambda s: fit_mask(Image.new("RGB", (64, 64), (0, 0, 0)), (64, 64)),
                 "The mask is entirely black, so there is nothing to repaint", id="black-mask"),
    pytest.param(lambda s: fit_mask(Image.new("L", (512, 256), 255), (512, 512)),
                 "The mask is 512×256 but the image is 512×512: make the mask the same shape", id="mask-shape"),
]


@pytest.mark.parametrize(("case", "message"), BAD)
async def test_a_bad_attachment_is_refused_with_a_specific_message(served: Served, case, message: str) -> None:
    with pytest.raises(AttachmentError) as refused:
        result = case(served)
        if inspect.isawaitable(result):
            await asyncio.wait_for(result, 10)
    assert message in str(refused.value)


def test_pillows_own_bomb_limit_counts_even_above_ours() -> None:
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(AttachmentError) as refused:
        load(png_claiming(10_000, 10_000), "big.png", max_pixels=500_000_000)
    assert str(refused.value).startswith("big.png is 10000×10000 pixels; the limit is 89.5 megapixels")


async def test_a_download_returns_exactly_what_was_served(served: Served) -> None:
    assert await served.get("/red", max_bytes=len(RED_PNG)) == RED_PNG
    assert await served.get("/trickle", timeout=10) == RED_PNG


def test_transparency_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 255, 128)])
    loaded = load(encode(image, "PNG"), "clear.png")
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)  # dropping alpha instead would give black
    assert loaded.getpixel((1, 0)) == (255, 0, 0)
    r, g, b = loaded.getpixel((2, 0))
    assert 120 <= r <= 135 and 120 <= g <= 135 and b == 255


def test_a_transparent_palette_gif_is_flattened_onto_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((1, 1), 1)
    loaded = load(encode(image, "GIF", transparency=0), "sticker.gif")
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 1)) == (255, 0, 0)


def test_exif_rotation_is_applied() -> None:
    image = Image.new("RGB", (80, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 40, 40))  # stored left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the stored left becomes the top
    loaded = load(encode(image, "JPEG", exif=exif, quality=95), "phone.jpg")
    assert loaded.size == (40, 80)
    top, bottom = loaded.getpixel((20, 10)), loaded.getpixel((20, 70))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_an_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert load(data, "wave.gif").getpixel((8, 8)) == (255, 0, 0)


@pytest.mark.parametrize(("fmt", "params"), [("WEBP", {"lossless": True}), ("JPEG", {"quality": 95}),
                                             ("MPO", {"save_all": True, "append_images": [SMALL]})])
def test_webp_and_jpeg_flavours_are_accepted(fmt: str, params: dict) -> None:
    image = Image.new("RGB", (24, 16), (10, 200, 30))
    loaded = load(encode(image, fmt, **params), "picture.bin")  # the name's extension plays no part
    assert loaded.size == (24, 16)
    assert all(abs(a - b) <= 3 for a, b in zip(loaded.getpixel((12, 8)), (10, 200, 30)))


FIT = [
    ((512, 512), (1024, 1024), None),
    ((2000, 1500), (1024, 1024), "Your image was resized from 2000×1500 to 1024×768."),
    ((515, 512), (1024, 1024), "Your image was cropped from 515×512 to 512×512."),
    ((1000, 750), (1024, 1024), "Your image was cropped from 1000×750 to 1000×744."),
    ((3000, 2001), (1024, 1024), "Your image was resized and cropped from 3000×2001 to 1024×680."),
    ((1024, 1024), (768, 512), "Your image was resized from 1024×1024 to 512×512."),
    ((32, 48), (1024, 1024), "Your image was resized from 32×48 to 64×96."),
    ((10, 1000), (1024, 1024), "Your image was resized and cropped from 10×1000 to 64×1024."),
]


@pytest.mark.parametrize(("size", "limits", "notice"), FIT)
def test_fit_size(size: tuple[int, int], limits: tuple[int, int], notice: str | None) -> None:
    image = Image.new("RGB", size, (90, 90, 90))
    fitted, said = fit_size(image, max_width=limits[0], max_height=limits[1])
    assert said == notice
    width, height = fitted.size
    assert width % 8 == 0 and height % 8 == 0
    assert 64 <= width <= limits[0] and 64 <= height <= limits[1]
    if notice is None:
        assert fitted is image
    else:
        assert notice.endswith(f" to {width}×{height}.")


def test_fit_size_crops_from_the_centre() -> None:
    image = Image.new("RGB", (524, 512), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 2, 512))
    image.paste((0, 0, 255), (522, 0, 524, 512))
    fitted, _ = fit_size(image, max_width=1024, max_height=1024)
    assert fitted.size == (520, 512)
    assert fitted.getcolors() == [(520 * 512, (0, 255, 0))]


def test_fit_mask_scales_to_the_image_and_keeps_white_as_repaint() -> None:
    mask = Image.new("RGB", (256, 256), (0, 0, 0))
    mask.paste((255, 255, 255), (128, 0, 256, 256))  # repaint the right half
    fitted, notice = fit_mask(mask, (512, 512))
    assert notice == "The mask was scaled from 256×256 to 512×512 to match the image."
    assert fitted.mode == "L" and fitted.size == (512, 512)
    assert fitted.getpixel((100, 256)) == 0 and fitted.getpixel((400, 256)) == 255


def test_fit_mask_of_the_right_size_is_only_converted() -> None:
    fitted, notice = fit_mask(Image.new("RGB", (64, 64), (255, 255, 255)), (64, 64))
    assert notice is None
    assert fitted.mode == "L" and fitted.getextrema() == (255, 255)


def test_a_slightly_different_mask_shape_is_tolerated() -> None:
    fitted, notice = fit_mask(Image.new("L", (500, 512), 255), (512, 512))
    assert fitted.size == (512, 512)
    assert notice == "The mask was scaled from 500×512 to 512×512 to match the image."


def test_to_png_round_trips() -> None:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    data = to_png(image)
    with Image.open(io.BytesIO(data)) as again:
        assert again.format == "PNG"
        assert again.convert("RGB").tobytes() == image.tobytes()


class NoRequests:
    """A session that fails the test if the download makes any request."""

    def get(self, *args, **kwargs):
        raise AssertionError(f"a request was made: {args}")


@pytest.mark.parametrize("url", [
    "http://cdn.discordapp.com/attachments/1/2/fox.png",  # not https
    "https://evil.example/attachments/1/2/fox.png",
    "https://cdn.discordapp.com.evil.example/fox.png",
    "https://evil.example/https://cdn.discordapp.com/fox.png",
    "https://cdn.discordapp.com:8443/attachments/1/2/fox.png",  # another port is another server
    "https://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "/attachments/1/2/fox.png",
    "not a url at all",
])
async def test_only_discords_cdn_is_fetched(url: str) -> None:
    attachment = FakeAttachment(url, "fox.png", 100)
    with pytest.raises(AttachmentError) as refused:
        await download(NoRequests(), attachment, max_bytes=MB, what="The image")
    assert str(refused.value) == ("Could not download the image (fox.png): its link is not Discord's, so the bot "
                                  "did not fetch it; attach the file to the command itself.")


@pytest.mark.parametrize("url", ["https://cdn.discordapp.com/attachments/1/2/fox.png",
                                 "https://media.discordapp.net/attachments/1/2/fox.png?width=100",
                                 "HTTPS://CDN.DiscordApp.com:443/attachments/1/2/fox.png"])
async def test_discords_cdn_passes_the_host_rule(url: str) -> None:
    class Asked(Exception):
        pass

    class Session:
        def get(self, asked_url, **kwargs):
            raise Asked(asked_url)

    with pytest.raises(Asked) as asked:
        await download(Session(), FakeAttachment(url, "fox.png", 100), max_bytes=MB)
    assert asked.value.args == (url,)


def test_the_configured_discord_serves_attachments_too() -> None:
    assert attachment_origins(None) == DISCORD_CDN
    assert attachment_origins("https://discord.com/api/v10") == DISCORD_CDN | {"https://discord.com"}
    assert attachment_origins("http://127.0.0.1:8080/api/v10") == DISCORD_CDN | {"http://127.0.0.1:8080"}


async def test_the_configured_discord_is_only_itself(served: Served) -> None:
    """The loopback server's own origin is allowed, the same host on another port is not."""
    allowed = attachment_origins(served.base + "/api/v10")
    url = served.base + "/red"
    assert await download(served.session, FakeAttachment(url, "red.png", len(RED_PNG)), max_bytes=MB,
                          allowed_origins=allowed) == RED_PNG
    elsewhere = FakeAttachment(f"http://127.0.0.1:{closed_port()}/red", "red.png", len(RED_PNG))
    with pytest.raises(AttachmentError, match="its link is not Discord's"):
        await download(NoRequests(), elsewhere, max_bytes=MB, allowed_origins=allowed)


# -- decoding big pictures reduced ----------------------------------------------------------------

def drawing(size: tuple[int, int], mode: str = "RGBA") -> Image.Image:
    """Flat shapes, edges, half-transparent parts and a gradient: what a sticker or a screenshot
    has, and enough detail that a wrong shrink shows."""
    width, height = size
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGBA", (gradient, gradient.transpose(Image.Transpose.ROTATE_90).resize(size),
                                 Image.new("L", size, 90), Image.new("L", size, 0)))
    draw = ImageDraw.Draw(image)
    for i in range(9):
        x, y = i * width // 10, (i * 7 % 9) * height // 10
        draw.ellipse((x, y, x + width // 5, y + height // 4), fill=(255, 40 * i, 0, 255))
        draw.rectangle((width - x - width // 6, y, width - x, y + height // 7), fill=(0, 60, 255, 128))
        draw.line((0, y, width, height - y), fill=(0, 0, 0, 255), width=3)
    return image.convert(mode)


def old_load(data: bytes, matte: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """What `load_image` did before it could decode reduced: upright and flattened at full size."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image)
    if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
        rgba = upright.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*matte, 255)), rgba).convert("RGB")
    return upright.convert("RGB")


def difference(a: Image.Image, b: Image.Image) -> tuple[float, int]:
    """Mean and largest difference of two same-size RGB pictures, per channel."""
    assert a.size == b.size
    diffs = [abs(x - y) for x, y in zip(a.tobytes(), b.tobytes())]
    return sum(diffs) / len(diffs), max(diffs)


@pytest.mark.parametrize("matte", [(255, 255, 255), (0, 0, 0)])
def test_a_big_transparent_png_is_shrunk_while_flattened_and_fits_as_before(matte) -> None:
    data = encode(drawing((2400, 1600)), "PNG")
    small = load_image(data, name="big.png", max_pixels=MAX_PIXELS, matte=matte, fit_within=(256, 256))
    # Fitted into 256×171, so no less than twice that: shrunk 4 times, by whole 4×4 blocks.
    assert small.size == (600, 400) and source_size(small) == (2400, 1600)
    fitted, notice = fit_size(small, max_width=256, max_height=256)
    before, before_notice = fit_size(old_load(data, matte), max_width=256, max_height=256)
    assert notice == before_notice == "Your image was resized and cropped from 2400×1600 to 256×168."
    assert fitted.size == before.size and source_size(fitted) == fitted.size
    mean, largest = difference(fitted, before)
    assert mean < 0.75 and largest <= 40, (mean, largest)  # 0.26 and 15 measured; nearest-neighbour: 1.4 and 149


def test_tiles_join_without_seams(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(drawing((1003, 701), "RGBA"), "PNG")
    whole = load_image(data, name="big.png", max_pixels=MAX_PIXELS, fit_within=(96, 96))  # in one tile
    monkeypatch.setattr(attachments, "TILE", 37)  # tiles of 35 pixels: 7 blocks of 5, 29 tiles a row
    tiled = load_image(data, name="big.png", max_pixels=MAX_PIXELS, fit_within=(96, 96))
    assert whole.size == tiled.size == (201, 141)  # shrunk 5 times, the partial blocks at the edges kept
    assert whole.tobytes() == tiled.tobytes()


def test_a_big_transparent_gif_is_flattened_when_shrunk() -> None:
    image = Image.new("P", (1600, 1200), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (800, 0, 1600, 1200))  # the right half red, the left transparent
    small = load_image(encode(image, "GIF", transparency=0), name="sticker.gif", max_pixels=MAX_PIXELS,
                       fit_within=(128, 128))
    assert small.size == (267, 200) and source_size(small) == (1600, 1200)  # shrunk 6 times
    assert small.getpixel((60, 100)) == (255, 255, 255) and small.getpixel((220, 100)) == (255, 0, 0)


def test_a_big_jpeg_is_decoded_at_a_fraction_of_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    drafts = []
    jpeg_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        drafts.append((self.size, size))
        return jpeg_draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = encode(drawing((4000, 3000), "RGB"), "JPEG", quality=90)
    small = load_image(data, name="photo.jpg", max_pixels=MAX_PIXELS, fit_within=(512, 512))
    # Fitted into 512×384: libjpeg's half scale is the smallest still twice that.
    assert drafts == [((4000, 3000), (1024, 768))]
    assert small.size == (2000, 1500) and source_size(small) == (4000, 3000)
    fitted, notice = fit_size(small, max_width=512, max_height=512)
    before, before_notice = fit_size(old_load(data), max_width=512, max_height=512)
    assert notice == before_notice == "Your image was resized from 4000×3000 to 512×384."
    mean, largest = difference(fitted, before)
    assert mean < 0.5 and largest <= 48, (mean, largest)  # 0.12 and 22 measured


def test_a_sideways_phone_photo_is_reduced_for_its_upright_shape() -> None:
    image = Image.new("RGB", (4096, 1024), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 2048, 1024))  # stored left half red: the top once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(image, "JPEG", exif=exif, quality=95)
    small = load_image(data, name="phone.jpg", max_pixels=MAX_PIXELS, fit_within=(1024, 1024))
    # Upright it is 1024×4096, fitted to 256×1024: half scale keeps twice that. Taken the wrong way
    # round (4096×1024 into 1024×256) it would have been shrunk to an eighth instead.
    assert small.size == (512, 2048) and source_size(small) == (1024, 4096)
    top, bottom = small.getpixel((256, 100)), small.getpixel((256, 1900))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60, (top, bottom)
    fitted, notice = fit_size(small, max_width=1024, max_height=1024)
    assert fitted.size == (256, 1024) and notice == "Your image was resized from 1024×4096 to 256×1024."


def rotated() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held sideways
    return exif


ORDINARY = [
    pytest.param(drawing((640, 480), "RGB"), "JPEG", {"quality": 90}, id="small-jpeg"),
    pytest.param(drawing((4032, 3024), "RGB"), "JPEG", {"exif": rotated(), "quality": 85}, id="phone-photo"),
    pytest.param(drawing((2000, 1500)), "PNG", {}, id="rgba-png"),
    pytest.param(drawing((1000, 750), "P"), "GIF", {"transparency": 0}, id="transparent-gif"),
    pytest.param(drawing((515, 512), "LA"), "PNG", {}, id="grey-alpha-png"),
    pytest.param(drawing((1200, 900), "RGB"), "WEBP", {"quality": 90}, id="webp"),
]


@pytest.mark.parametrize(("image", "fmt", "params"), ORDINARY)
def test_ordinary_pictures_load_and_fit_as_before(image: Image.Image, fmt: str, params: dict) -> None:
    data = encode(image, fmt, **params)
    loaded = load_image(data, name="picture", max_pixels=MAX_PIXELS, fit_within=(1024, 1024))
    fitted, notice = fit_size(loaded, max_width=1024, max_height=1024)
    before, before_notice = fit_size(old_load(data), max_width=1024, max_height=1024)
    assert notice == before_notice
    assert fitted.size == before.size and fitted.tobytes() == before.tobytes()


async def test_decodes_wait_their_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    running, most, lock = 0, 0, threading.Lock()
    real = attachments.load_image

    def counted(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(attachments, "load_image", counted)
    data = encode(SMALL, "PNG")
    loaded = await asyncio.gather(*[load_image_async(data, name=f"{i}.png", max_pixels=MAX_PIXELS,
                                                     fit_within=(64, 64)) for i in range(6)])
    assert most == attachments.DECODE_WORKERS == 1
    assert [image.size for image in loaded] == [(32, 32)] * 6


async def test_a_refusal_comes_through_the_bounded_decode() -> None:
    with pytest.raises(AttachmentError, match="notes.txt is not an image"):
        await load_image_async(b"just some notes", name="notes.txt", max_pixels=MAX_PIXELS)


def test_a_long_thin_picture_is_fitted_without_scaling_all_of_it() -> None:
    thin = Image.new("RGB", (40_000, 1), (10, 200, 30))
    fitted, notice = fit_size(thin, max_width=1024, max_height=1024)  # all of it at 64 high: 2.56 gigapixels
    assert fitted.size == (1024, 64) and notice == "Your image was resized and cropped from 40000×1 to 1024×64."
    assert fitted.getcolors() == [(1024 * 64, (10, 200, 30))]


def test_a_mask_follows_its_reduced_picture() -> None:
    picture = load_image(encode(drawing((2400, 1600), "RGB"), "PNG"), name="p.png", max_pixels=MAX_PIXELS,
                         fit_within=(256, 256))
    painted = Image.new("L", (1200, 800), 0)
    painted.paste(255, (600, 0, 1200, 800))
    mask = load_image(encode(painted, "PNG"), name="m.png", max_pixels=MAX_PIXELS, fit_within=(256, 256))
    assert picture.size == (600, 400) and mask.size == (600, 400)  # shrunk 4 and 2 times
    scaled, notice = fit_mask(mask, picture)
    assert notice == "The mask was scaled from 1200×800 to 2400×1600 to match the image."
    fitted_mask, _ = fit_size(scaled, max_width=256, max_height=256)
    fitted, _ = fit_size(picture, max_width=256, max_height=256)
    assert fitted_mask.size == fitted.size == (256, 168)
    assert fitted_mask.getpixel((40, 84)) == 0 and fitted_mask.getpixel((216, 84)) == 255

    same, notice = fit_mask(load_image(encode(painted.resize((2400, 1600)), "PNG"), name="m.png",
                                       max_pixels=MAX_PIXELS, fit_within=(256, 256)), picture)
    assert notice is None and same.size == picture.size and source_size(same) == (2400, 1600)
