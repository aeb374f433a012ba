"""Picture helpers for the image modes: inputs, outpainting canvases, seams, slerp and GIFs."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter


def open_rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def open_mask(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The mask as black/white L, white = repaint. The bot already scaled it to the image."""
    mask = Image.open(io.BytesIO(data)).convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask.point(lambda v: 255 if v >= 128 else 0)


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


def gif(frames: list[Image.Image], *, comment: str = "", hold_ms: int = 600, frame_ms: int = 150) -> bytes:
    """An endlessly looping GIF, which Discord plays inline; the ends are held a little longer."""
    durations = [frame_ms] * len(frames)
    durations[0] = durations[-1] = hold_ms
    extra = {"comment": comment.encode()} if comment else {}
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False, **extra)
    return buffer.getvalue()
