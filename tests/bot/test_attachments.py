"""Attachments from download to engine-ready PNG: bad files get specific messages, good ones arrive
upright, flattened and sized; downloads are served from a loopback aiohttp server."""

from __future__ import annotations

import asyncio
import inspect
import io
import socket
import struct
import zlib
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from bot.attachments import AttachmentError, download, fit_mask, fit_size, load_image, to_png

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
        return await download(self.session, attachment, max_bytes=max_bytes, timeout=timeout, what=what)


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
