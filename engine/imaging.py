"""Picture helpers for the image modes: inputs, what a job keeps of them, outpainting canvases, seams,
slerp, PNGs, GIFs and previews."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageFilter
from PIL.PngImagePlugin import PngInfo


def open_rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def open_mask(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The mask as black/white L, white = repaint. The bot already scaled it to the image."""
    mask = Image.open(io.BytesIO(data)).convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask.point(lambda v: 255 if v >= 128 else 0)


# What stands in for repainted pixels when a kept region is scored alone: mid-grey, which no
# classifier reads as anything.
NEUTRAL = (128, 128, 128)


def kept_region(image: Image.Image, mask: Image.Image) -> Image.Image | None:
    """What inpainting keeps of `image` pixel-exact (the mask's black pixels), cropped to their
    bounding box, with the repainted pixels inside that box filled NEUTRAL: scored alone, a region
    kept inside a large repainted area is not diluted by it. None when that would add nothing to
    scoring the picture itself: nothing is kept, or everything is."""
    keep = mask.point(lambda v: 0 if v else 255)  # white = kept
    box = keep.getbbox()
    if box is None or mask.getbbox() is None:
        return None
    return Image.composite(image.crop(box), Image.new("RGB", (box[2] - box[0], box[3] - box[1]), NEUTRAL),
                           keep.crop(box))


# Scoring a member's picture in parts: a flagged region cannot hide in a larger canvas (padding, or
# other content beside it), where the picture as a whole scores low. Parts are bounded: at most
# 1 + PARTS_ALONG + 9 = 15 crops per picture, no window with a side under PART_MIN pixels.
PART_MIN = 32
PARTS_ALONG = 5
# How far apart a band's channel values may be and still count as padding: survives JPEG noise.
FLAT_TOLERANCE = 6


def _content_box(pixels: np.ndarray, tolerance: int = FLAT_TOLERANCE) -> tuple[int, int, int, int] | None:
    """The box left once near-constant lines at the edges (padding, each edge its own colour, in
    layers) are trimmed away; None when nothing is left: a flat colour, a gradient, nested bands,
    in which no part can stand out. One edge line at a time: a line flat in a box stays flat in
    any smaller one, so the order does not matter, and a layered border costs no more than a plain
    one (trimming whole bands of the box again and again would take seconds on nested 1-px bands)."""
    top, left, bottom, right = 0, 0, pixels.shape[0], pixels.shape[1]

    def flat(line: np.ndarray) -> bool:
        return int((line.max(axis=0) - line.min(axis=0)).max()) <= tolerance

    while top < bottom and left < right:
        if flat(pixels[top, left:right]):
            top += 1
        elif flat(pixels[bottom - 1, left:right]):
            bottom -= 1
        elif flat(pixels[top:bottom, left]):
            left += 1
        elif flat(pixels[top:bottom, right - 1]):
            right -= 1
        else:
            return left, top, right, bottom
    return None


def parts(image: Image.Image) -> list[Image.Image]:
    """Crops of a member's (RGB) picture to score on their own, besides the picture itself: its
    content once padding is trimmed (`_content_box`, grown to PART_MIN around a smaller one), then,
    within that content, squares of its short side along a long one (content beside other content)
    and 3x3 windows of half its width and height, a quarter apart (a region within the content)."""
    box = _content_box(np.asarray(image))
    if box is None:
        return []
    crops = []
    left, top, right, bottom = box
    if box != (0, 0, image.width, image.height):
        left, right = _grown(left, right, image.width)
        top, bottom = _grown(top, bottom, image.height)
        crops.append(image.crop((left, top, right, bottom)))
    width, height = right - left, bottom - top
    side = min(width, height)
    if max(width, height) >= 1.5 * side and side >= PART_MIN:
        # Half a side apart, both ends included; spread evenly when that would take more than PARTS_ALONG.
        longest = max(width, height) - side
        count = min(PARTS_ALONG, math.ceil(longest / (side / 2)) + 1)
        for k in range(count):
            offset = round(k * longest / (count - 1))
            x, y = (left + offset, top) if width > height else (left, top + offset)
            crops.append(image.crop((x, y, x + side, y + side)))
    half_width, half_height = width // 2, height // 2
    if min(half_width, half_height) >= PART_MIN:
        for i in range(3):
            for j in range(3):
                x, y = left + round(i * (width - half_width) / 2), top + round(j * (height - half_height) / 2)
                crops.append(image.crop((x, y, x + half_width, y + half_height)))
    return crops


def _grown(start: int, end: int, limit: int) -> tuple[int, int]:
    """[start, end) grown evenly to at least PART_MIN (or the whole `limit`), kept inside [0, limit)."""
    missing = min(PART_MIN, limit) - (end - start)
    if missing <= 0:
        return start, end
    start = max(0, min(start - missing // 2, limit - PART_MIN))
    return start, start + min(PART_MIN, limit)


def feather_radius(size: tuple[int, int]) -> int:
    return max(1, min(size) // 64)


def feathered(mask: Image.Image) -> Image.Image:
    """A blend mask for pasting a repainted picture over the original: 0 wherever `mask` is black
    (those pixels stay exactly as they were), rising smoothly to 255 inside the white area."""
    blurred = mask.filter(ImageFilter.GaussianBlur(feather_radius(mask.size)))
    return Image.fromarray(np.minimum(np.asarray(blurred), np.asarray(mask)))


def outpaint_canvas(image: Image.Image, direction: str, amount: int) -> tuple[Image.Image, Image.Image, Image.Image]:
    """Extend `image` by `amount` pixels on one side ("left", "right", "up", "down") or all four.

    Returns the canvas (the new strip pre-filled by stretching the edge pixels, which gives the
    model the neighbouring colours to continue), the mask the model repaints (the strip plus a
    band of the original, so the seam is redrawn too) and the strip alone (what gets pasted)."""
    left = amount if direction in ("left", "all") else 0
    right = amount if direction in ("right", "all") else 0
    top = amount if direction in ("up", "all") else 0
    bottom = amount if direction in ("down", "all") else 0
    pixels = np.asarray(image)
    canvas = Image.fromarray(np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge"))
    strip = np.full((canvas.height, canvas.width), 255, dtype=np.uint8)
    strip[top:top + image.height, left:left + image.width] = 0
    band = max(4, min(image.size) // 16)
    repaint = strip.copy()
    inner = repaint[top:top + image.height, left:left + image.width]
    if left:
        inner[:, :band] = 255
    if right:
        inner[:, -band:] = 255
    if top:
        inner[:band] = 255
    if bottom:
        inner[-band:] = 255
    return canvas, Image.fromarray(repaint), Image.fromarray(strip)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: noise halfway between two noises keeps a noise's norm."""
    if t <= 0:
        return a
    if t >= 1:
        return b
    a32, b32 = a.float(), b.float()
    cos = (a32 * b32).sum() / (a32.norm() * b32.norm())
    angle = torch.arccos(cos.clamp(-1, 1))
    if angle.abs() < 1e-4:  # nearly the same noise: a straight line is as good
        return torch.lerp(a32, b32, t).to(a.dtype)
    mixed = (torch.sin((1 - t) * angle) * a32 + torch.sin(t * angle) * b32) / torch.sin(angle)
    return mixed.to(a.dtype)


def png(image: Image.Image, parameters: str) -> bytes:
    """A PNG carrying the generation parameters in its `parameters` chunk, as AUTOMATIC1111 writes them."""
    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def gif(frames: list[Image.Image], *, comment: str = "", hold_ms: int = 600, frame_ms: int = 150) -> bytes:
    """An endlessly looping GIF, which Discord plays inline; the ends are held a little longer."""
    durations = [frame_ms] * len(frames)
    durations[0] = durations[-1] = hold_ms
    extra = {"comment": comment.encode()} if comment else {}
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False, **extra)
    return buffer.getvalue()


# The well-known linear approximations of the VAE decoder (as ComfyUI and AUTOMATIC1111 preview):
# RGB in about [-1, 1] = the latents' 4 channels x this 4x3 matrix + bias. Scaled latents, as
# diffusers' pipelines hold them between steps.
LATENT_RGB: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]] = {
    "sd": (((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
            (-0.2120, -0.2616, -0.7177)), (0.0, 0.0, 0.0)),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}
PREVIEW_SIDE = 128
PREVIEW_QUALITY = 70


def latent_preview(latents: torch.Tensor, family: str) -> bytes:
    """One image's latents (channels, height, width) as a small JPEG of the picture so far: no VAE
    decode, only a copy of the latents off the device and a 4x3 matrix (about a millisecond)."""
    factors, bias = LATENT_RGB[family]
    # To float32 on the device (a GPU does it at once), then the one small copy to the CPU. numpy
    # for the product: torch's thread pool makes so small an operation cost milliseconds.
    values = latents.detach().float().cpu().numpy()
    rgb = np.tensordot(values, np.asarray(factors, dtype=np.float32), axes=([0], [0])) + np.asarray(bias)
    pixels = ((rgb + 1) * 127.5).clip(0, 255).astype(np.uint8)  # (height, width, 3)
    # Latents are 1/8 of the picture's side: `preview` scales them up.
    return preview(Image.fromarray(pixels))


def preview(image: Image.Image) -> bytes:
    """A picture so far as a small JPEG, scaled to a size a chat client shows (up or down)."""
    scale = PREVIEW_SIDE / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()
