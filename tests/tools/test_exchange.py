"""The README's exchange picture: the page drawn from a made-up transcript shows the bot's markdown as
Discord would (escaped text stays text, nothing is read as HTML) and every button it sent."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

from PIL import Image

from tools.exchange import Exchange, Picture, Shown, markdown, page


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, "PNG")
    return buffer.getvalue()


def row(*buttons: dict) -> dict:
    return {"type": 1, "components": list(buttons)}


def button(label: str, style: int = 2, emoji: str | None = None, disabled: bool = False) -> dict:
    made = {"type": 2, "style": style, "label": label, "custom_id": f"x:{label}", "disabled": disabled}
    if emoji:
        made["emoji"] = {"id": None, "name": emoji}
    return made


class Reader(HTMLParser):
    """The page's text by the classes it sits in, and the pictures' sources."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[list[str]] = []
        self.texts: list[tuple[tuple[str, ...], str]] = []  # (classes around it, innermost last; text)
        self.pictures: list[str] = []
        self.bold: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.pictures.append(attributes["src"])
            return
        if tag in ("br", "meta"):
            return
        self.open.append([tag, *(attributes.get("class") or "").split()])

    def handle_endtag(self, tag: str) -> None:
        if self.open and self.open[-1][0] == tag:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        classes = tuple(name for element in self.open for name in element[1:])
        self.texts.append((classes, data))
        if any(element[0] == "strong" for element in self.open):
            self.bold.append(data)

    def text_in(self, name: str) -> str:
        return "".join(text for classes, text in self.texts if name in classes)

    def buttons(self) -> list[tuple[str, str]]:
        """(classes around it, text) of each piece of a button's text, in order."""
        return [(" ".join(classes), text) for classes, text in self.texts if "button" in classes]


TRANSCRIPT = Exchange(
    member="Ada <3", bot="dreambot", command="dream",
    options=(("prompt", "a <b>fox</b> & *stars*"), ("steps", "20")),
    notice=Shown("🖌️ Job 3: ▰▰▱▱ 50 % · about 4 s left", (), (row(button("Cancel", emoji="✖️")),), 3.2),
    result=Shown("**a \\<b\\>fox\\</b\\> & \\*stars\\***\nSeed 7 · job 3 · for <@42>",
                 (Picture("dream-3-7.png", png("red")), Picture("dream-3-8.png", png("blue"))),
                 (row(button("V1"), button("V2")),
                  row(button("Re-roll", emoji="🔁"), button("Delete", style=4, emoji="🗑️", disabled=True))), 9.8),
    edited=True, names={"42": "Ada <3"})


def test_the_page_shows_the_bots_markdown_as_text_and_bold_never_as_html() -> None:
    drawn = page(TRANSCRIPT)
    reader = Reader()
    reader.feed(drawn)
    assert "<b>" not in drawn  # every < the bot or the member wrote is escaped
    assert "".join(reader.bold) == "a <b>fox</b> & *stars*"  # bold, and the escaped markup kept as text
    assert "Seed 7 · job 3 · for @Ada <3" in reader.text_in("content")
    assert "🖌️ Job 3: ▰▰▱▱ 50 % · about 4 s left" in reader.text_in("content")
    assert reader.text_in("composer") == "/dreamprompta <b>fox</b> & *stars*steps20"


def test_the_page_lists_every_button_in_order_with_its_emoji_and_style() -> None:
    reader = Reader()
    reader.feed(page(TRANSCRIPT))
    labels = [text for _, text in reader.buttons()]
    assert labels == ["✖️", "Cancel", "V1", "V2", "🔁", "Re-roll", "🗑️", "Delete"]
    delete = [classes for classes, text in reader.buttons() if text == "Delete"]
    assert delete and "style-4" in delete[0] and "disabled" in delete[0]


def test_the_page_embeds_the_result_pictures_themselves() -> None:
    reader = Reader()
    reader.feed(page(TRANSCRIPT))
    assert [base64.b64decode(src.split(",", 1)[1]) for src in reader.pictures] == [png("red"), png("blue")]


def test_markdown_reads_bold_italics_code_and_escapes_as_discord_does() -> None:
    assert markdown("**bold** *it* `a*b*` \\*not\\* <x>") == (
        "<strong>bold</strong> <em>it</em> <code>a*b*</code> *not* &lt;x&gt;")
    assert markdown("one\n-# small print\n> quoted") == (
        'one<br><span class="subtext">small print</span><span class="quote">quoted</span>')
