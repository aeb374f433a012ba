"""The prompt filter each server's moderators manage: blocked words and patterns, matched on prompts
folded so that case, accents, lookalike letters, invisible characters and leetspeak do not hide them.

Imports no discord. Patterns run on RE2 (`google-re2`), which matches in linear time, so no
moderator's pattern can backtrack catastrophically whatever a member types.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import re2

MAX_WORD_LENGTH = 100
MAX_PATTERN_LENGTH = 200

# Letters that look like a basic Latin letter (by shape, not by sound: Cyrillic р is "p", в is "b"),
# from Cyrillic, Greek, and the small capitals of "fancy text" generators. Applied before casefolding,
# because capitals and small letters can look like different Latin ones (Greek Ν is "n", ν is "v").
_LOOKALIKE_LETTERS = {
    "a": "АаΑαᴀɑ",
    "b": "ВвΒβʙ",
    "c": "СсϹϲᴄ",
    "d": "Ԁԁᴅ",
    "e": "ЕеΕεᴇ",
    "f": "ꜰ",
    "g": "ɢɡ",
    "h": "НнҺһΗʜ",
    "i": "ІіΙιɪı",
    "j": "Јјᴊȷ",
    "k": "КкΚκᴋ",
    "l": "Ӏӏʟ",
    "m": "МмΜᴍ",
    "n": "Νηпɴ",
    "o": "ОоΟοᴏ",
    "p": "РрΡρᴘ",
    "q": "Ԛԛ",
    "r": "ʀ",
    "s": "Ѕѕꜱ",
    "t": "ТтΤτᴛ",
    "u": "υᴜ",
    "v": "νᴠ",
    "w": "Ԝԝωᴡ",
    "x": "ХхΧχ",
    "y": "УуҮүΥγʏ",
    "z": "Ζᴢ",
}
_LOOKALIKES = str.maketrans({glyph: latin for latin, glyphs in _LOOKALIKE_LETTERS.items() for glyph in glyphs})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# Letters that render as blank space (Hangul fillers, the braille blank): a space, as they look.
_BLANKS = str.maketrans(dict.fromkeys("\u115f\u1160\u3164\uffa0\u2800", " "))
# Combining and enclosing marks (accents, variation selectors), format characters (zero-width
# space and joiners, soft hyphen, word joiner, BOM), controls and lone surrogates, which could not
# even be encoded for RE2.
_INVISIBLE = frozenset({"Mn", "Me", "Cf", "Cc", "Cs"})
# A word starts and ends where no letter, digit or mark touches it (RE2's \b knows only ASCII).
_WORD_START = r"(?:^|[^\pL\pN\pM])"
_WORD_END = r"(?:[^\pL\pN\pM]|$)"


class InvalidTerm(ValueError):
    """A word or pattern a moderator cannot add; the message says why and what to change."""


@dataclass(frozen=True)
class Term:
    """One blocked entry of a server's filter."""

    kind: str  # "word" or "pattern"
    text: str  # as stored: the cleaned word, or the pattern as given


class _Regex(Protocol):
    def search(self, text: str) -> object | None: ...


def _bare(text: str) -> str:
    """Compatibility-decomposed text without marks or invisible characters: accents fall off."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in _INVISIBLE or ch.isspace())
    return kept.translate(_BLANKS)


def _fold(bare: str, *, lookalikes: bool) -> str:
    if lookalikes:
        bare = bare.translate(_LOOKALIKES)
    # Casefolding can bring marks back (İ becomes i and a dot), and turn a capital into a lookalike.
    folded = _bare(bare.casefold())
    if lookalikes:
        folded = folded.translate(_LOOKALIKES)
    return " ".join(unicodedata.normalize("NFC", folded).split())


def normalize(text: str) -> str:
    """The form prompts and words are compared in: compatibility forms (fullwidth, math, circled
    letters) as plain letters, casefolded, without accents or invisible characters, lookalike
    Cyrillic and Greek letters as Latin ones, whitespace runs as one space. Never raises."""
    return _fold(_bare(text), lookalikes=True)


@dataclass(frozen=True)
class _Variants:
    """The forms of one text that terms are searched in."""

    normalized: str
    leet: str
    # Patterns are also tried without the lookalike mapping, so one written in Cyrillic or Greek
    # matches; duplicates are dropped, as most prompts have no digit and no lookalike.
    for_patterns: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> _Variants:
        bare = _bare(text)
        normalized = _fold(bare, lookalikes=True)
        unmapped = _fold(bare, lookalikes=False)
        leet = normalized.translate(_LEET)
        every = (normalized, leet, unmapped, unmapped.translate(_LEET))
        return cls(normalized, leet, tuple(dict.fromkeys(every)))


def check_word(word: str) -> str:
    """The form of a blocked word or phrase to store, or InvalidTerm saying what to change."""
    cleaned = " ".join(word.split())
    if not cleaned:
        raise InvalidTerm("The word is empty: type the word or phrase to block.")
    if len(cleaned) > MAX_WORD_LENGTH:
        raise InvalidTerm(
            f"The word is {len(cleaned)} characters long; the limit is {MAX_WORD_LENGTH}. "
            "Block a shorter word or phrase."
        )
    stored = normalize(cleaned)
    if not any(ch.isalnum() for ch in stored):
        raise InvalidTerm(
            "The word has no letters or digits, so it could never match a whole word: "
            "block a word, or add a pattern to match symbols."
        )
    if len(stored) > MAX_WORD_LENGTH:  # compatibility forms can expand, "㍿" to "株式会社"
        raise InvalidTerm(f"The word is too long once normalized; the limit is {MAX_WORD_LENGTH} characters.")
    return stored


def _word_regex(word: str) -> _Regex:
    # Underscores separate words too: booru-style prompts write "blood_bath".
    body = "[ _]+".join(re2.escape(part) for part in word.replace("_", " ").split())
    return re2.compile(f"{_WORD_START}(?:{body}){_WORD_END}", _options(case_sensitive=True))


def _options(*, case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # refusals are answered to the moderator, not written to stderr
    return options


def _fold_pattern(pattern: str) -> str:
    """The pattern with accents and invisible characters removed, as they are from prompts.

    Only non-ASCII characters change, so escapes such as \\S keep their meaning (which is also why
    the pattern is not casefolded: RE2 is asked to ignore case instead). Punctuation that a
    decomposition produces is escaped: "…" means three dots, not three of any character.
    """
    out = []
    for ch in pattern:
        if ch.isascii():
            out.append(ch)
            continue
        bare = unicodedata.normalize("NFC", _bare(ch))
        out.append("".join("\\" + c if c in string.punctuation else c for c in bare))
    return "".join(out)


# What RE2 says it cannot read, for the constructs moderators bring from other regex dialects.
# Constructs are in code spans, where Discord shows backslashes as typed.
_GROUPS = {
    "(?=": "lookahead `(?=…)` is not supported; match the following text itself",
    "(?!": "negative lookahead `(?!…)` is not supported; block what you mean directly",
    "(?<=": "lookbehind `(?<=…)` is not supported; match the preceding text itself",
    "(?<!": "negative lookbehind `(?<!…)` is not supported; block what you mean directly",
    "(?>": "atomic groups `(?>…)` are not supported (nor needed: RE2 never backtracks); use `(?:…)`",
    "(?#": "comments `(?#…)` are not supported; remove them",
    "(?(": "conditionals `(?(…)…)` are not supported; use alternatives `a|b`",
    "(?P": "named backreferences `(?P=name)` are not supported; write the repeated text out",
}


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _explain(error: re2.error) -> str:
    """A moderator's sentence for an RE2 compile error."""
    detail = error.args[0] if error.args else ""
    detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    kind, _, what = detail.partition(": ")
    if kind == "invalid perl operator":
        return _GROUPS.get(what, f"{_code(what)} is not a group RE2 supports; its flags are only i, m, s and U")
    if kind == "invalid escape sequence":
        if what[1:].isdigit() or what == "\\k":
            return "backreferences like `\\1` are not supported; write the repeated text out"
        if what == "\\Z":
            return "`\\Z` is not supported; use `$` for the end of the prompt"
        return f"{_code(what)} is not an escape RE2 supports; to match a backslash itself, write `\\\\`"
    if kind == "bad repetition operator":
        if len(what) == 2 and what[1] == "+":
            return f"possessive quantifiers like {_code('a' + what)} are not supported; use {_code('a' + what[0])}"
        return f"{_code(what)} repeats a repetition; use a single `*`, `+`, `?` or `{{n,m}}`"
    if kind == "no argument for repetition operator":
        literal = _code("\\" + what[:1])
        return f"{_code(what)} has nothing before it to repeat; to match the character itself, write {literal}"
    if kind == "invalid repetition size":
        return f"{_code(what)}: a repetition count must be at most 1000, with the smaller number first"
    if kind == "missing ]":
        return "a `[` is never closed with `]`"
    if kind == "missing )":
        return "a `(` is never closed with `)`"
    if kind == "unexpected )":
        return "a `)` has no `(` before it; to match the character itself, write `\\)`"
    if kind == "invalid character class range":
        if what.startswith(("\\p", "\\P")):
            return f"{_code(what)} is not a Unicode class RE2 knows, such as `\\p{{L}}` or `\\p{{Greek}}`"
        if what.startswith("[:"):
            return f"{_code(what)} is not a character class RE2 knows, such as `[:alpha:]` or `[:digit:]`"
        return f"{_code(what)} is not a valid range: put the smaller character first"
    if kind == "trailing \\":
        return "it ends with a lone `\\`; to match a backslash, write `\\\\`"
    if kind == "invalid named capture group":
        return "a group name can only use letters, digits and `_`"
    if kind == "pattern too large - compile failed":
        return "it is too complex: its repetitions add up to too much; use smaller counts"
    return f"RE2 cannot read it ({detail})"


# Texts to try a pattern on for an empty match: at a start, an end, a space, a word boundary.
_EMPTY_PROBES = ("", " ", "a", "a b", "1", "_", "a1_b c")


def _compile_pattern(pattern: str) -> _Regex:
    """The compiled pattern, after every check `check_pattern` makes."""
    if not pattern.strip():
        raise InvalidTerm("The pattern is empty: type the regular expression to block.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidTerm(
            f"The pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}. "
            "Split it into several patterns."
        )
    try:
        regex = re2.compile(_fold_pattern(pattern), _options(case_sensitive=False))
    except re2.error as error:
        raise InvalidTerm(f"The pattern is not valid: {_explain(error)}.") from None
    if any(found.start() == found.end() for probe in _EMPTY_PROBES for found in regex.finditer(probe)):
        raise InvalidTerm(
            "The pattern can match an empty string, so it would block nearly every prompt: "
            "make it need at least one character (`a+`, not `a*`)."
        )
    return regex


def check_pattern(pattern: str) -> str:
    """The pattern to store (as given), or InvalidTerm saying what to change."""
    _compile_pattern(pattern)
    return pattern


@dataclass(frozen=True)
class _Compiled:
    term: Term
    plain: _Regex  # searched in the normalized text (and, for a pattern, in every variant)
    leet: _Regex  # for a word: its leetspeak form, searched in the text's leetspeak form

    def found_in(self, text: _Variants) -> bool:
        if self.term.kind == "word":
            return self.plain.search(text.normalized) is not None or self.leet.search(text.leet) is not None
        return any(self.plain.search(variant) is not None for variant in text.for_patterns)


class PromptFilter:
    """A server's blocked words and patterns, compiled once.

    Words match whole words only ("nude" blocks "nude." and "nude_girl", not "nudes"); patterns
    match anywhere unless they say \\b, ignoring case. Both are tried on the normalized text, digits
    kept (a pattern for "18yo" still matches), and on its leetspeak form ("nud3" reads "nude");
    patterns also on the text without the lookalike mapping, so one written in Cyrillic or Greek
    matches those letters. A stored term that is no longer valid raises InvalidTerm here, naming it.
    """

    def __init__(self, terms: Iterable[Term]) -> None:
        self._compiled: list[_Compiled] = []
        for term in terms:
            try:
                if term.kind == "word":
                    word = check_word(term.text)
                    compiled = _Compiled(term, _word_regex(word), _word_regex(word.translate(_LEET)))
                elif term.kind == "pattern":
                    regex = _compile_pattern(term.text)
                    compiled = _Compiled(term, regex, regex)
                else:
                    raise InvalidTerm(f"Unknown kind {term.kind!r}: a term is a word or a pattern.")
            except InvalidTerm as error:
                raise InvalidTerm(f"Stored {term.kind} {term.text!r}: {error}") from None
            self._compiled.append(compiled)

    def match(self, *texts: str) -> Term | None:
        """The first term, in the order given, found in any of `texts`, or None. Never raises."""
        variants = [_Variants.of(text) for text in texts]
        for compiled in self._compiled:
            if any(compiled.found_in(text) for text in variants):
                return compiled.term
        return None
