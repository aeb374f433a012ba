"""Reliability: a table of bad inputs sent to the real bot, each answered with a clear message.

    python bench/bad_inputs.py [--model shapes] [--set NAME=VALUE ...]

The fake Discord runs in this process and `python -m bot` against it (see bench/harness.py). Each
row is sent as a raw client would send it (the fake checks nothing, so out-of-range values reach
the bot): sizes, steps, counts, unicode and overlong prompts, corrupt, mislabelled and huge
attachments, forged buttons for unknown jobs. For each, the script records the bot's answer and
checks that it is private, names the problem (the expected words), and queued nothing. After the
table, one good /dream must still come back with a picture: nothing crashed. Prints the table and
its counts; exits 1 if any row failed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import zlib

from harness import add_bot_options, described, dream, running_bot, settings_from
from PIL import Image

LONG = "a fox " * 300  # 1800 characters, over MAX_PROMPT_LENGTH (1000)


def png(size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb() -> bytes:
    """A valid PNG header claiming 30000 x 30000 pixels (900 megapixels) over a few bytes of data."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


# (what, command, options, words the answer must contain)
ROWS = [
    ("width not a multiple of 8", "dream", {"prompt": "a fox", "width": 100}, "multiple of 8"),
    ("width too large", "dream", {"prompt": "a fox", "width": 8192}, "Width must be between"),
    ("height too small", "dream", {"prompt": "a fox", "height": 8}, "Height must be between"),
    ("zero steps", "dream", {"prompt": "a fox", "steps": 0}, "Steps must be between"),
    ("too many steps", "dream", {"prompt": "a fox", "steps": 5000}, "Steps must be between"),
    ("count zero", "dream", {"prompt": "a fox", "count": 0}, "Count must be between"),
    ("count too high", "dream", {"prompt": "a fox", "count": 64}, "Count must be between"),
    ("guidance out of range", "dream", {"prompt": "a fox", "guidance": 99.0}, "Guidance must be between"),
    ("negative seed", "dream", {"prompt": "a fox", "seed": -1}, "Seed must be between"),
    ("unknown sampler", "dream", {"prompt": "a fox", "sampler": "Turbo 9000"}, "Unknown sampler"),
    ("unknown style", "dream", {"prompt": "a fox", "style": "no-such-style"}, "Unknown style"),
    ("empty prompt", "dream", {"prompt": "   "}, "The prompt is empty"),
    ("only invisible characters", "dream", {"prompt": "\u200b\u200b"}, "The prompt is empty"),
    ("overlong prompt", "dream", {"prompt": LONG}, "characters long; the limit is"),
    ("overlong negative prompt", "dream", {"prompt": "a fox", "negative": LONG}, "characters long; the limit is"),
    ("text where a number goes", "dream", {"prompt": "a fox", "steps": "many"}, "wrong type"),
    ("strength without an image", "dream", {"prompt": "a fox", "strength": 0.5}, "Strength only applies"),
    ("corrupt attachment", "dream", {"prompt": "a fox", "image": b"\x89PNG\r\n\x1a\nthis is not a png"},
     "could not be read"),
    ("text file as an image", "dream", {"prompt": "a fox", "image": b"hello, I am text"}, "is not an image"),
    ("decompression bomb", "dream", {"prompt": "a fox", "image": "BOMB"}, "megapixels"),
    ("inpaint without image or job", "inpaint", {"mask": "PNG", "prompt": "a fox"}, "Attach an image"),
    ("outpaint amount not a multiple of 8", "outpaint", {"image": "PNG", "amount": 13}, "multiple of 8"),
    ("outpaint from an unknown job", "outpaint", {"job": 987654}, "no job 987654"),
    ("interpolation that goes nowhere", "interpolate", {"prompt": "a fox", "seed": 3, "end_seed": 3},
     "needs an end prompt or an end seed"),
    ("info on an unknown job", "info", {"job": 424242}, "no job 424242"),
]
BUTTONS = [
    ("re-roll of an unknown job", "dream:reroll:999999", "not in Dreambot's history"),
    ("upscale of an unknown job", "dream:upscale:999998:0", "not in Dreambot's history"),
    ("cancel of an unknown job", "dream:cancel:999997", "not in Dreambot's history"),
]


def value(option):
    return png() if option == "PNG" else bomb() if option == "BOMB" else option


async def answer(interaction, timeout: float = 60.0) -> tuple[str, bool]:
    reply = await interaction.wait_for(lambda r: bool(r.content) and (r.ephemeral or r.kind == "followup"),
                                       timeout=timeout)
    return reply.content, reply.ephemeral


async def measure(args: argparse.Namespace, settings: dict[str, str]) -> int:
    async with running_bot(args.model, **settings) as (fake, bot):
        print(f"bot: {described(settings)}; model {args.model}\n")
        good = await dream(fake, fake.user("warm-up"), "a red circle on a blue background", steps=4)
        await good.wait_for(lambda r: any(u.filename.endswith(".png") for u in r.files), timeout=300)
        jobs_before = len(bot.jobs())
        rows = []

        async def check(what: str, where: str, interaction, words: str) -> None:
            """A row of the table: answered privately, with the expected words?"""
            try:
                text, private = await answer(interaction)
            except TimeoutError:
                text, private = "(no answer)", False
            ok = private and words in text
            rows.append((what, where, "ok" if ok else "FAIL", text.replace("\n", " ")[:110]))

        for what, command, options, words in ROWS:
            await check(what, f"/{command}", await fake.invoke(
                command, fake.user("tester"), **{key: value(option) for key, option in options.items()}), words)
        message = good.message_id
        for what, custom_id, words in BUTTONS:
            # A forged button on a real result message (a raw client can send any custom id).
            fake.message(message).components.append(
                {"type": 1, "components": [{"type": 2, "style": 2, "label": "x", "custom_id": custom_id}]})
            await check(what, "button", await fake.click(message, custom_id, user=fake.user("tester")), words)
        failures = sum(row[2] != "ok" for row in rows)
        queued_anything = len(bot.jobs()) != jobs_before
        after = await dream(fake, fake.user("after"), "a green square on a white background", steps=4)
        await after.wait_for(lambda r: any(u.filename.endswith(".png") for u in r.files), timeout=300)
        width = max(len(row[0]) for row in rows)
        print(f"{'input':<{width}}  {'where':<12} {'check':<5} answer (first 110 characters)")
        for what, where, ok, text in rows:
            print(f"{what:<{width}}  {where:<12} {ok:<5} {text}")
        print(f"\n{len(rows)} bad inputs: {len(rows) - failures} answered privately with the expected words, "
              f"{failures} not; jobs queued by them: {'some (FAIL)' if queued_anything else 'none'}; "
              f"a good /dream afterwards: posted; engine restarts: {bot.log().count('engine process') - 1}")
        return 1 if failures or queued_anything else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bot_options(parser)
    args = parser.parse_args()
    return asyncio.run(measure(args, settings_from(args.set, args.threads)))


if __name__ == "__main__":
    sys.exit(main())
