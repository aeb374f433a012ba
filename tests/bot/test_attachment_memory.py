"""A small file that decodes to 40 megapixels must not cost the bot gigabytes (issue 11): decodes
wait their turn, and big pictures are shrunk while they are decoded.

Peak memory is the kernel's high-water mark of resident memory (VmHWM), read from
/proc/<pid>/status of a fresh process. Run this module as a script to print the figures:
`python -m tests.bot.test_attachment_memory`.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Reply

MB = 1024 * 1024
SIZE = (8000, 5000)  # 40 megapixels: the default MAX_ATTACHMENT_MEGAPIXELS, taken in full


def hostile_png(size: tuple[int, int] = SIZE) -> bytes:
    """Mostly transparent RGBA with a few flat shapes: about 200 KB of file, 160 MB once decoded."""
    width, height = size
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x, y = i * 661 % (width - 900), i * 389 % (height - 900)
        draw.ellipse((x, y, x + 800, y + 600), fill=(40 * i % 256, 200, 255 - 20 * i, 255))
        draw.rectangle((width - x - 700, y, width - x, y + 300), fill=(255, 30 * i % 256, 0, 128))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def peak_rss(pid: int | str = "self") -> int:
    """The high-water mark of a process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


# Decodes `count` copies of the file at once, as the bot does (download aside), in a fresh
# interpreter; prints the peak before and after, in bytes.
_DECODE = """
import asyncio, sys
from bot import attachments
from tests.bot.test_attachment_memory import peak_rss
data = open(sys.argv[1], "rb").read()
count = int(sys.argv[2])

async def one(i):
    image = await attachments.load_image_async(data, name=f"{i}.png", max_pixels=40_000_000,
                                               fit_within=(1024, 1024))
    fitted, notice = await asyncio.to_thread(attachments.fit_size, image, max_width=1024, max_height=1024)
    await asyncio.to_thread(attachments.to_png, fitted)
    assert notice == "Your image was resized from 8000×5000 to 1024×640.", notice

before = peak_rss()
async def main():
    await asyncio.gather(*(one(i) for i in range(count)))
asyncio.run(main())
print(before, peak_rss())
"""


def decode_peak(path: Path, count: int) -> tuple[int, int]:
    """(peak before, peak after) decoding `count` copies of the file at `path` at once in a fresh process."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _DECODE, str(path), str(count)], cwd=root, check=True,
                          capture_output=True, text=True, timeout=120)
    before, after = map(int, done.stdout.split())
    return before, after


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "hostile.png"
    path.write_bytes(hostile_png())
    return path


def posted(reply: Reply) -> bool:
    return reply.kind == "edit" and bool(reply.files)


def test_a_burst_of_hostile_decodes_costs_one_decoded_picture(hostile: Path) -> None:
    # Measured: one decode raised the peak by 183 MB, four at once by 185 MB: the 160 MB of the
    # decoded RGBA picture (4 bytes a pixel) and small tiles. Before: 916 MB and 3.5 GB.
    assert len(hostile.read_bytes()) < 300_000
    before, after = decode_peak(hostile, 4)
    assert after - before < 300 * MB, f"four decodes raised the peak by {(after - before) / MB:.0f} MB"


@pytest.mark.asyncio(loop_scope="module")
async def test_four_members_attach_hostile_pictures_at_once(bot: BotProcess, fake: FakeDiscord,
                                                            hostile: Path) -> None:
    data = hostile.read_bytes()
    pid = bot.process.pid
    started = peak_rss(pid)
    members = [fake.user(f"hostile {i}") for i in range(4)]
    interactions = await asyncio.gather(*(
        fake.invoke("dream", user=member, prompt=f"a fox {i}", steps=2, seed=i, image=fake.attachment(data, "huge.png"))
        for i, member in enumerate(members)))
    for interaction in interactions:
        result = await interaction.wait_for(posted, timeout=300)
        assert "resized from 8000×5000 to 1024×640" in " ".join(r.content for r in interaction.replies)
        assert Image.open(io.BytesIO(result.files[0].data)).size == (1024, 640)
    peak = peak_rss(pid)
    # Measured: the bot peaked at 267 MB, from 64 MB before the burst: one decoded picture (160 MB)
    # at a time. Before the decodes were bounded, one such picture took it to 979 MB, four to 3.75 GB.
    assert peak < 600 * MB, f"the bot peaked at {peak / MB:.0f} MB (it was at {started / MB:.0f} MB before)"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hostile.png"
        path.write_bytes(hostile_png())
        print(f"{path.stat().st_size / 1000:.0f} KB, {SIZE[0]}×{SIZE[1]} RGBA")
        for count in (1, 4):
            before, after = decode_peak(path, count)
            rise = (after - before) / MB
            print(f"{count} at once: peak {before / MB:.0f} MB -> {after / MB:.0f} MB (+{rise:.0f} MB)")
