"""The README's picture of a real exchange: `python -m tools.exchange docs/exchange.png`.

Runs the real bot (`python -m bot`, the bundled shapes model, on the CPU) against the loopback fake
Discord, makes one `/dream`, and draws what the member saw, as Discord would show it: the command,
the bot's notice while the job ran, and the finished message with its pictures and buttons. Every
text, picture and button in it is the bot's own answer in that run, nothing is copied in: re-run it
whenever the bot's texts change. It takes about a minute on two cores; it needs Chromium (headless)
and a colour emoji font to draw: `apt-get install chromium fonts-noto-color-emoji`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import io
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from tests.support.bot_process import BotProcess
from tests.support.fake_discord import FakeDiscord, Interaction

PROMPT = "a red circle on a blue background"
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "Chromium is needed to draw the picture: apt-get install chromium fonts-noto-color-emoji"
WIDTH = 760  # CSS pixels of the chat pane
PICTURE = 128  # CSS pixels a picture is shown at: the shapes model's 64×64 at 3 device pixels a pixel, unblurred
SCALE = 1.5  # device pixels per CSS pixel: sharp text on high-density screens, and still a small PNG


@dataclass(frozen=True)
class Picture:
    filename: str
    data: bytes


@dataclass(frozen=True)
class Shown:
    """A message as the member saw it at one moment: `after` seconds after they sent the command."""

    content: str
    pictures: tuple[Picture, ...]
    components: tuple[dict, ...]  # action rows, as the bot sent them
    after: float


@dataclass(frozen=True)
class Exchange:
    member: str
    bot: str
    command: str
    options: tuple[tuple[str, str], ...]  # (name, value) as the member typed them
    notice: Shown  # while the job ran
    result: Shown
    edited: bool  # the result replaced the notice (one message, edited), as for a slash command
    names: dict[str, str]  # user id -> name, for mentions


# -- capturing a real exchange ---------------------------------------------------------------------


async def capture(workdir: Path, *, steps: int, seed: int, count: int, timeout: float) -> Exchange:
    """One `/dream` from a member named Ada, answered by the real bot; raises TimeoutError, or
    RuntimeError with the bot's log when the job did not end with pictures."""
    fake = await FakeDiscord().start()
    # On the CPU wherever it runs: a GPU would finish before the first progress edit.
    bot = BotProcess(fake, workdir, "shapes", SD_DEVICE="cpu", HF_HUB_OFFLINE="1")
    try:
        await bot.start()
        member = fake.user("Ada")
        options = {"prompt": PROMPT, "steps": steps, "seed": seed, "count": count}
        interaction = await fake.invoke("dream", member, **options)
        job = await _finished_job(bot, timeout)
        if job["status"] != "done" or not job.get("message_id"):
            raise RuntimeError(f"job {job['id']} ended {job['status']!r} ({job.get('error')}):\n{bot.log()[-4000:]}")
        await asyncio.sleep(0.5)  # the last edit's answer, if the row was written first
        final = fake.message(job["message_id"])
        pictures = tuple(Picture(a.filename, a.data) for a in final.attachments)
        if not pictures:
            raise RuntimeError(f"job {job['id']} is done but its message has no pictures:\n{bot.log()[-4000:]}")
        last = max((r.at for r in interaction.replies if r.message_id == final.id), default=time.monotonic())
        result = Shown(final.content, pictures, tuple(final.components), last - interaction.sent_at)
        notice = _notice(fake, interaction, result, final.id)
        return Exchange(
            member=member["global_name"] or member["username"], bot=fake.bot_user["username"], command="dream",
            options=tuple((name, str(value)) for name, value in options.items()),
            notice=notice, result=result, edited=final.id == interaction.message_id,
            names={user_id: user.get("global_name") or user["username"] for user_id, user in fake.users.items()})
    finally:
        await bot.stop()
        await fake.close()


async def _finished_job(bot: BotProcess, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            jobs = bot.jobs()
        except sqlite3.Error:  # not created yet, or busy
            jobs = []
        if jobs and jobs[-1]["status"] in ("done", "failed", "filtered"):
            return jobs[-1]
        if bot.process is not None and bot.process.returncode is not None:
            raise RuntimeError(f"the bot stopped:\n{bot.log()[-4000:]}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the job did not finish in {timeout:.0f} s:\n{bot.log()[-4000:]}")


def _notice(fake: FakeDiscord, interaction: Interaction, result: Shown, result_id: int) -> Shown:
    """The notice as the member saw it halfway through the run: the states of the command's answer
    are replayed from its callback and edits, and the one shown at the midpoint between the first
    change after the first notice (the queued one) and the result is taken."""
    states: list[Shown] = []
    content, components, pictures = "", (), ()
    original = interaction.message_id
    for reply in interaction.replies:
        if reply.message_id != original or reply.kind == "delete":
            continue
        fields = reply.fields
        content = fields.get("content", content) or ""
        components = tuple(fields.get("components", components) or ())
        if "attachments" in fields:  # Discord keeps those listed: earlier ones by id, new uploads by index
            kept = []
            for entry in fields["attachments"] or []:
                key = str(entry.get("id"))
                if key.isdigit() and int(key) < len(reply.files):
                    kept.append(Picture(reply.files[int(key)].filename, reply.files[int(key)].data))
                elif key.isdigit() and int(key) in fake.attachments:
                    stored = fake.attachments[int(key)]
                    kept.append(Picture(stored.filename, stored.data))
            pictures = tuple(kept)
        else:
            pictures = pictures + tuple(Picture(f.filename, f.data) for f in reply.files)
        if content:
            states.append(Shown(content, pictures, components, reply.at - interaction.sent_at))
    if original == result_id:
        states = [state for state in states if state.after < result.after]  # the result itself is no notice
    if not states:
        raise RuntimeError("the bot showed no notice before the result")
    running = states[1:] or states
    middle = (running[0].after + result.after) / 2
    return [state for state in running if state.after <= middle][-1]


# -- drawing it ------------------------------------------------------------------------------------

STYLE = """
* { box-sizing: border-box; }
body { margin: 0; background: #313338; color: #dbdee1; width: %(width)dpx;
  font: 16px/1.375 "gg sans", "Noto Sans", "Helvetica Neue", Helvetica, Arial, "DejaVu Sans", sans-serif,
  "Noto Color Emoji"; }
.pane { padding: 16px 0 20px; }
.composer { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 6px; margin: 0 16px 8px; padding: 10px 16px;
  background: #383a40; border-radius: 8px; color: #dbdee1; }
.composer .command { font-weight: 600; }
.option { display: inline-flex; border-radius: 4px; background: #2b2d31; overflow: hidden; }
.option .name { display: inline-block; padding: 0 6px; background: #4e5058; color: #f2f3f5; }
.option .value { display: inline-block; padding: 0 6px; }
.divider { display: flex; align-items: center; margin: 16px 16px 4px; color: #949ba4; font-size: 12px;
  font-weight: 600; }
.divider::before, .divider::after { content: ""; flex: 1; height: 1px; background: #3f4147; }
.divider span { padding: 0 8px; }
.message { position: relative; padding: 2px 16px 4px 72px; margin-top: 4px; }
.context { position: relative; display: flex; align-items: center; gap: 4px; font-size: 14px; color: #b5bac1;
  margin-bottom: 2px; }
.context::before { content: ""; position: absolute; left: -38px; top: 9px; width: 33px; height: 10px;
  border-left: 2px solid #4e5058; border-top: 2px solid #4e5058; border-top-left-radius: 6px; }
.context .small { width: 16px; height: 16px; font-size: 9px; }
.context .who { color: #f2f3f5; font-weight: 500; }
.context .slash { color: #00a8fc; }
.avatar { display: inline-flex; align-items: center; justify-content: center; border-radius: 50%%;
  color: #fff; font-weight: 600; flex: none; }
.message > .avatar { position: absolute; left: 16px; top: 26px; width: 40px; height: 40px; font-size: 18px; }
.header { display: flex; align-items: center; gap: 6px; }
.header .name { color: #f2f3f5; font-weight: 500; }
.badge { background: #5865f2; color: #fff; font-size: 10px; font-weight: 600; padding: 0 4px; border-radius: 3px;
  line-height: 15px; }
.header .time { color: #949ba4; font-size: 12px; }
.content { white-space: normal; overflow-wrap: anywhere; }
.content strong { color: #f2f3f5; }
.content code { font: 14px "DejaVu Sans Mono", monospace; background: #2b2d31; padding: 0 3px; border-radius: 4px; }
.content .subtext { color: #949ba4; font-size: 13px; display: block; }
.content .quote { display: block; border-left: 4px solid #4e5058; padding-left: 12px; }
.mention { color: #c9cdfb; background: rgba(88, 101, 242, .3); border-radius: 3px; padding: 0 2px; }
.pictures { display: grid; gap: 4px; margin-top: 6px; width: max-content; }
.pictures img { display: block; width: %(picture)dpx; height: auto; border-radius: 6px; image-rendering: pixelated; }
.row { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }
.button { display: inline-flex; align-items: center; gap: 6px; height: 32px; min-width: 60px; padding: 2px 16px;
  justify-content: center; border-radius: 8px; color: #fff; font-size: 14px; font-weight: 500; }
.button.style-1 { background: #5865f2; }
.button.style-2, .button.style-5 { background: #4e5058; }
.button.style-3 { background: #248046; }
.button.style-4 { background: #da373c; }
.button.disabled { opacity: .5; }
.select { display: flex; align-items: center; justify-content: space-between; width: 400px; height: 40px;
  padding: 0 12px; border-radius: 8px; background: #1e1f22; color: #949ba4; font-size: 15px; }
"""

AVATAR_COLOURS = ("#5865f2", "#3ba55d", "#eb459e", "#ed4245", "#e67e22", "#1abc9c")
_ESCAPED = re.compile(r"\\([^\w\s])")
_INLINE = re.compile(r"\*\*(.+?)\*\*|\*([^*\s](?:[^*]*[^*\s])?)\*|`([^`]+)`|<@!?(\d+)>|<t:(-?\d+)(?::([tTdDfFR]))?>",
                     re.S)
_TIME_STYLES = {"t": "%H:%M", "T": "%H:%M:%S", "d": "%d/%m/%Y", "D": "%d %B %Y", "f": "%d %B %Y %H:%M",
                "F": "%A, %d %B %Y %H:%M", "R": "%d %B %Y %H:%M"}


def markdown(text: str, names: dict[str, str] | None = None) -> str:
    """Discord's markdown, as far as the bot's messages use it, as HTML: backslash escapes, bold,
    italics, code, mentions, timestamps, `> ` quotes and `-# ` subtext lines. All else is shown as text."""
    names = names or {}
    lines = []
    for line in text.split("\n"):
        kind = ""
        if line.startswith("-# "):
            kind, line = "subtext", line[3:]
        elif line.startswith("> "):
            kind, line = "quote", line[2:]
        body = _inline(line, names)
        lines.append(f'<span class="{kind}">{body}</span>' if kind else body + "<br>")
    return "".join(lines).removesuffix("<br>")


def _inline(text: str, names: dict[str, str]) -> str:
    # Escaped characters are set aside first, as private-use characters, so that no markup is read in them.
    literal: list[str] = []

    def hide(match: re.Match) -> str:
        literal.append(match.group(1))
        return chr(0xE000 + len(literal) - 1)

    def segments(part: str) -> str:
        out, at = [], 0
        for match in _INLINE.finditer(part):
            out += [html.escape(part[at:match.start()]), element(match)]
            at = match.end()
        return "".join(out) + html.escape(part[at:])

    def element(match: re.Match) -> str:
        bold, italic, code, mention, stamp, style = match.groups()
        if bold is not None:
            return f"<strong>{segments(bold)}</strong>"
        if italic is not None:
            return f"<em>{segments(italic)}</em>"
        if code is not None:
            return f"<code>{html.escape(code)}</code>"
        if mention is not None:
            return f'<span class="mention">@{html.escape(names.get(mention, "someone"))}</span>'
        return html.escape(datetime.fromtimestamp(int(stamp), UTC).strftime(_TIME_STYLES[style or "f"]))

    rendered = segments(_ESCAPED.sub(hide, text))
    return re.sub(f"[{chr(0xE000)}-{chr(0xE000 + max(len(literal) - 1, 0))}]" if literal else "(?!)",
                  lambda m: html.escape(literal[ord(m.group()) - 0xE000]), rendered)


def page(exchange: Exchange) -> str:
    """The exchange as a Discord-like HTML page: the command as typed, then the bot's message while
    the job ran and once it was done (the same message, edited)."""
    options = "".join(f'<span class="option"><span class="name">{html.escape(name)}</span>'
                      f'<span class="value">{html.escape(value)}</span></span>' for name, value in exchange.options)
    parts = [f'<div class="composer"><span class="command">/{html.escape(exchange.command)}</span>{options}</div>',
             _divider(f"{_seconds(exchange.notice.after)} later"), _message(exchange, exchange.notice),
             _divider(f"{_seconds(exchange.result.after)} later" + (": the same message, edited" if exchange.edited
                                                                    else "")),
             _message(exchange, exchange.result)]
    style = STYLE % {"width": WIDTH, "picture": PICTURE}
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{style}</style></head>'
            f'<body><div class="pane">{"".join(parts)}</div></body></html>')


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _divider(text: str) -> str:
    return f'<div class="divider"><span>{html.escape(text)}</span></div>'


def _avatar(name: str, extra: str = "") -> str:
    colour = AVATAR_COLOURS[sum(map(ord, name)) % len(AVATAR_COLOURS)]
    return f'<span class="avatar {extra}" style="background:{colour}">{html.escape(name[:1].upper())}</span>'


def _message(exchange: Exchange, shown: Shown) -> str:
    context = (f'<div class="context">{_avatar(exchange.member, "small")}<span class="who">'
               f'{html.escape(exchange.member)}</span> used <span class="slash">/{html.escape(exchange.command)}'
               f"</span></div>")
    header = (f'<div class="header"><span class="name">{html.escape(exchange.bot)}</span>'
              f'<span class="badge">APP</span></div>')
    body = f'<div class="content">{markdown(shown.content, exchange.names)}</div>' if shown.content else ""
    return (f'<div class="message">{context}{_avatar(exchange.bot)}{header}{body}'
            f"{_pictures(shown.pictures)}{_components(shown.components)}</div>")


def _pictures(pictures: tuple[Picture, ...]) -> str:
    if not pictures:
        return ""
    columns = 1 if len(pictures) == 1 else 2 if len(pictures) in (2, 4) else 3
    images = "".join(f'<img alt="{html.escape(p.filename)}" src="data:{_mime(p)};base64,'
                     f'{base64.b64encode(p.data).decode()}">' for p in pictures)
    return f'<div class="pictures" style="grid-template-columns: repeat({columns}, auto)">{images}</div>'


def _mime(picture: Picture) -> str:
    suffix = picture.filename.rsplit(".", 1)[-1].lower()
    types = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
    return types.get(suffix, "image/png")


def _components(rows: tuple[dict, ...]) -> str:
    """Action rows of buttons and selects, as Discord draws them; other components are left out."""
    out = []
    for row in rows:
        items = []
        for item in row.get("components") or [] if row.get("type") == 1 else []:
            if item.get("type") == 2:
                items.append(_button(item))
            elif item.get("type") in (3, 5, 6, 7, 8):
                items.append(f'<span class="select">{html.escape(item.get("placeholder") or "Make a selection")}'
                             f"<span>⌄</span></span>")
        if items:
            out.append(f'<div class="row">{"".join(items)}</div>')
    return "".join(out)


def _button(button: dict) -> str:
    emoji = button.get("emoji") or {}
    label = html.escape(button.get("label") or "")
    if emoji.get("id"):  # a custom emoji: its name, since its picture lives on Discord's CDN
        label = f":{html.escape(emoji.get('name') or '')}: {label}"
    elif emoji.get("name"):
        label = f"<span>{html.escape(emoji['name'])}</span>{f'<span>{label}</span>' if label else ''}"
    if button.get("style") == 5:
        label += "<span>↗</span>"
    disabled = " disabled" if button.get("disabled") else ""
    return f'<span class="button style-{int(button.get("style") or 2)}{disabled}">{label}</span>'


def screenshot(document: str, out: Path, chromium: str, workdir: Path) -> None:
    """Draw `document` with headless Chromium and write it to `out` as a PNG, cut to its content."""
    source, shot = workdir / "exchange.html", workdir / "shot.png"
    source.write_text(document, encoding="utf-8")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={workdir / 'profile'}", f"--force-device-scale-factor={SCALE}",
                    f"--window-size={WIDTH},2400", f"--screenshot={shot}", source.as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as image:
        picture = image.convert("RGB")
    background = picture.getpixel((0, 0))
    rows = [y for y in range(picture.height)
            if any(picture.getpixel((x, y)) != background for x in range(0, picture.width, 2))]
    bottom = min(picture.height, (rows[-1] if rows else picture.height) + round(20 * SCALE))
    picture = picture.crop((0, 0, picture.width, bottom)).quantize(256, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", optimize=True)
    out.write_bytes(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.exchange", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the PNG to write (docs/exchange.png)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the first picture (default 7)")
    parser.add_argument("--count", type=int, default=4, help="pictures in the job (default 4)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds the job may take (default 300)")
    parser.add_argument("--html", type=Path, help="also keep the HTML page here")
    args = parser.parse_args(argv)
    chromium = next((path for name in CHROMIUMS if (path := shutil.which(name))), None)
    if chromium is None:
        print(INSTALL, file=sys.stderr)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="exchange-") as temporary:
        workdir = Path(temporary)
        try:
            exchange = asyncio.run(capture(workdir / "bot", steps=args.steps, seed=args.seed, count=args.count,
                                           timeout=args.timeout))
        except (AssertionError, RuntimeError, TimeoutError) as error:  # AssertionError: the bot did not come up
            print(f"no exchange to draw: {error}", file=sys.stderr)
            return 1
        document = page(exchange)
        if args.html is not None:
            args.html.write_text(document, encoding="utf-8")
        try:
            screenshot(document, args.out, chromium, workdir)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            print(f"Chromium could not draw the page: {error}\n{(error.stderr or b'').decode()[-2000:]}",
                  file=sys.stderr)
            return 1
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB in {time.monotonic() - started:.0f} s; "
          f"notice {exchange.notice.content!r} at {exchange.notice.after:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
