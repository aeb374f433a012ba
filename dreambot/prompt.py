"""AUTOMATIC1111's prompt language: `(word)` ×1.1, `((word))` ×1.21, `[word]` ÷1.1, `(word:1.3)`,
nesting, `\\(` `\\)` for literal brackets, `BREAK` to start a new chunk of the text encoder's
tokens, and `<lora:NAME:WEIGHT>` to apply a LoRA (the tag is not text: `parse` leaves it out). The
parser is A1111's (`modules/prompt_parser.py`), made strict where A1111 guesses: an unclosed or
unopened bracket or LoRA tag, or a weight that is not a number or out of range, is refused with a
message saying where, rather than applied to the rest of the prompt.

Imports neither torch nor discord: the bot checks a prompt before it queues it, and the engine
encodes it (`engine/prompts.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dreambot.errors import InvalidRequest

# A LoRA's weight, `<lora:NAME:W>`: negative weights push away from what it learned.
MIN_LORA_WEIGHT = -2.0
MAX_LORA_WEIGHT = 3.0
# LoRAs one prompt may name: each is held in memory while its job runs.
MAX_LORAS = 4
MAX_NAME = 100  # a LoRA's name, as Discord's suggestions can carry it
# A1111's tag; the name is a file stem (no path), the weight optional (1).
_LORA = re.compile(r"<lora:(?P<name>[^<>:]*)(?::(?P<weight>[^<>]*))?>", re.I)
_LORA_START = re.compile(r"<lora:", re.I)

# A weight written as a number, `(word:W)`, must lie within these bounds; beyond them a picture
# only breaks down.
MIN_WEIGHT = 0.0
MAX_WEIGHT = 3.0
ROUND = 1.1  # `(word)`
SQUARE = 1 / 1.1  # `[word]`

_TOKENS = re.compile(
    r"""
    \\[()\[\]\\]              # an escaped bracket or backslash: literal
    | \\                      # a lone backslash: literal
    | \(                      # open a weight (×1.1, or the number before its `)`)
    | \[                      # open a ÷1.1
    | :\s*(?P<weight>[+-]?[\d.][^()\[\]:]*?)\s*\)   # `:W)`: close a round bracket with weight W
    | \)
    | \]
    | [^\\()\[\]:]+           # plain text
    | :                       # a colon that is not a weight: plain text
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True, order=True)
class Lora:
    """A LoRA a prompt asks for, by name, with its weight."""

    name: str
    weight: float = 1.0


def loras(prompt: str, name: str = "prompt") -> tuple[Lora, ...]:
    """The LoRAs a prompt's `<lora:NAME:W>` tags ask for, in the order written, or InvalidRequest
    naming a malformed tag, a weight out of range or a LoRA named twice."""
    found: list[Lora] = []
    for match in _LORA.finditer(prompt):
        lora_name, weight = match["name"].strip(), match["weight"]
        if not lora_name or "/" in lora_name or "\\" in lora_name or len(lora_name) > MAX_NAME:
            raise InvalidRequest(f"In the {name}, “{match[0]}” names no LoRA: write <lora:NAME:WEIGHT>, "
                                 "with a name from /loras.")
        try:
            value = 1.0 if weight is None or not weight.strip() else float(weight)
        except ValueError:
            raise InvalidRequest(f"In the {name}, “{match[0]}” has a weight that is not a number: write it as "
                                 f"<lora:{lora_name}:0.8>.") from None
        if not MIN_LORA_WEIGHT <= value <= MAX_LORA_WEIGHT:
            raise InvalidRequest(f"In the {name}, “{match[0]}” has the weight {value:g}; a LoRA's weight goes from "
                                 f"{MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}.")
        if any(lora.name.lower() == lora_name.lower() for lora in found):
            raise InvalidRequest(f"The {name} names the LoRA “{lora_name}” twice; give it once, with one weight.")
        found.append(Lora(lora_name, value))
    if len(found) > MAX_LORAS:
        raise InvalidRequest(f"The {name} names {len(found)} LoRAs; at most {MAX_LORAS} can be used at once.")
    rest = _LORA.sub("", prompt)
    if (start := _LORA_START.search(rest)) is not None:
        raise InvalidRequest(f"In the {name}, the LoRA tag “{rest[start.start():start.start() + 30]}” is never "
                             "closed: write <lora:NAME:WEIGHT>.")
    return tuple(found)


def without_loras(prompt: str) -> str:
    """The prompt's text, its `<lora:…>` tags left out."""
    return _LORA.sub("", prompt)


def read_as(prompt: str) -> list[str]:
    """The prompt's text as the text encoder reads it, each run of one weight on its own (`parse`:
    "easy[]negative" is read as "easynegative"), its LoRA tags left out; as written if it cannot be parsed."""
    try:
        return [fragment.text for fragment in parse(prompt) if fragment.text]
    except InvalidRequest:
        return [without_loras(prompt)]


def names_word(prompt: str, word: str) -> bool:
    """Whether the prompt has `word` as a whole word, in any case, as written or as the encoder reads
    it (`read_as`): how an embedding's name is found (`easynegative`; "sunset" does not name `sun`)."""
    pattern = re.compile(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", re.I)
    return any(pattern.search(text) for text in (without_loras(prompt), *read_as(prompt)))


@dataclass(frozen=True)
class Fragment:
    """A run of text with one weight; `text` is None for a BREAK (the next text starts a new chunk)."""

    text: str | None
    weight: float = 1.0


def parse(prompt: str, name: str = "prompt") -> list[Fragment]:
    """The prompt as runs of text with their weights (neighbours of equal weight merged), or
    InvalidRequest naming what is wrong with its brackets or weights."""
    parts: list[list] = []  # [text or None, weight]
    round_open: list[tuple[int, int]] = []  # (index into parts, position in the prompt)
    square_open: list[tuple[int, int]] = []

    def multiply(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    prompt = without_loras(prompt)
    for match in _TOKENS.finditer(prompt):
        token, weight = match.group(0), match.group("weight")
        if token.startswith("\\"):
            parts.append([token[1:] or "\\", 1.0])
        elif token == "(":
            round_open.append((len(parts), match.start()))
        elif token == "[":
            square_open.append((len(parts), match.start()))
        elif weight is not None:
            if not round_open:
                raise InvalidRequest(f"The {name} closes a bracket that was never opened: “{_near(prompt, match)}”. "
                                     "Write \\( and \\) for brackets that are part of the text.")
            value = _weight(weight, prompt, match, name)
            multiply(round_open.pop()[0], value)
        elif token == ")":
            if not round_open:
                raise InvalidRequest(f"The {name} closes a bracket that was never opened: “{_near(prompt, match)}”. "
                                     "Write \\( and \\) for brackets that are part of the text.")
            multiply(round_open.pop()[0], ROUND)
        elif token == "]":
            if not square_open:
                raise InvalidRequest(f"The {name} closes a bracket that was never opened: “{_near(prompt, match)}”. "
                                     "Write \\[ and \\] for brackets that are part of the text.")
            multiply(square_open.pop()[0], SQUARE)
        else:
            for i, piece in enumerate(_BREAK.split(token)):
                if i:
                    parts.append([None, 1.0])
                parts.append([piece, 1.0])
    if round_open or square_open:
        position = max(p for _, p in round_open + square_open)
        raise InvalidRequest(f"The {name} opens a bracket it never closes: “{prompt[position:position + 30]}”. "
                             "Close it, or write \\( or \\[ for a bracket that is part of the text.")
    merged: list[Fragment] = []
    for text, weight in parts:
        if text == "":
            continue
        if merged and text is not None and merged[-1].text is not None and merged[-1].weight == weight:
            merged[-1] = Fragment(merged[-1].text + text, weight)
        else:
            merged.append(Fragment(text, weight))
    return merged or [Fragment("", 1.0)]


def _weight(text: str, prompt: str, match: re.Match, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"In the {name}, “{_near(prompt, match)}” has a weight that is not a number: write "
                             "it as (words:1.2).") from None
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise InvalidRequest(f"In the {name}, “{_near(prompt, match)}” has the weight {value:g}; weights go from "
                             f"{MIN_WEIGHT:g} to {MAX_WEIGHT:g}.")
    return value


def _near(prompt: str, match: re.Match) -> str:
    """A few words of the prompt around a match, for a message."""
    return prompt[max(0, match.start() - 20):match.end()].strip()
