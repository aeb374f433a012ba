"""The prompt filter each server's moderators manage: blocked words and patterns, matched on prompts
folded so that case, accents, lookalike letters, invisible characters and leetspeak do not hide them.

Imports no discord. Patterns run on RE2 (`google-re2`), which never backtracks: its cost is the
text's length times the size of the compiled terms, so both are bounded (a repetition limit and a
program-size limit for patterns, a length limit for the normalized text), and all of a server's
terms are compiled into a few RE2 Sets, each searched in one pass over a text.
"""

from __future__ import annotations

import re
import string
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import re2

MAX_WORD_LENGTH = 100
MAX_PATTERN_LENGTH = 200
# RE2's cost per character grows with what is being repeated: `[^x]{1000}y` over 18 000 characters
# took seconds. A counted repetition may repeat at most this many times, nested counts multiplied
# (`(a{50}){50}` is 2500), and a compiled pattern may have at most this many instructions (`\pL`
# alone is about 1200: it spells out every letter of Unicode in UTF-8).
MAX_REPETITION = 100
MAX_PROGRAM_SIZE = 2000
# A text may grow this much when normalized: twice its length or by 200 characters, whichever is
# more ("…" is three dots, "ﷺ" eighteen letters), and never past the cap (twice the longest prompt
# the bot can be set to take). Longer is refused, never cut: a word could hide past the cut.
MAX_EXPANSION = 2
EXPANSION_ALLOWANCE = 200
MAX_NORMALIZED_LENGTH = 12_000
_PATTERN_MEMORY = 1 << 20  # RE2's max_mem for one pattern: compiling stops at about 50 000 instructions
_SET_MEMORY = 4 << 20  # for one Set: its program and the cache of its matcher
_SET_PROGRAM_SIZE = 5000  # instructions per Set, so that one pass (between deadline checks) stays short

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
# A word starts and ends where no letter, digit or mark touches it (RE2's \b knows only ASCII). Each
# such run is marked in the texts words are searched in, \x01 before and \x02 after (control
# characters, which normalized text never has): a word's edges are then two characters to match,
# not a class of all Unicode letters per word (2700 instructions each, per word, in every Set).
_WORD_RUN = re2.compile(rb"[\pL\pN\pM]+")
_RUN_START, _RUN_END = "\x01", "\x02"


class InvalidTerm(ValueError):
    """A word or pattern a moderator cannot add; the message says why and what to change."""


class Uncheckable(ValueError):
    """A text the filter does not check, so its prompt must be refused: letting it through unchecked
    would let a blocked word through. The message is for the member."""


class ExpandsTooMuch(Uncheckable):
    """Text `index` of those given to `match` grows past `normalized_limit` when normalized."""

    def __init__(self, index: int, length: int, normalized_length: int, limit: int) -> None:
        super().__init__(f"The text has characters that expand too much when spelled out: its {length} characters "
                         f"become {normalized_length} once normalized, and the limit is {limit}. Use plain text.")
        self.index, self.length, self.normalized_length, self.limit = index, length, normalized_length, limit


class OutOfTime(Uncheckable):
    """The deadline given to `match` passed before every term was tried."""

    def __init__(self) -> None:
        super().__init__("The prompt could not be checked in time. Make it shorter, in plain text.")


@dataclass(frozen=True)
class Term:
    """One blocked entry of a server's filter."""

    kind: str  # "word" or "pattern"
    text: str  # as stored: the cleaned word, or the pattern as given


class _Regex(Protocol):
    programsize: int

    def finditer(self, text: str) -> Iterator[_Match]: ...


class _Match(Protocol):
    def start(self) -> int: ...

    def end(self) -> int: ...


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


def normalized_limit(length: int) -> int:
    """How long the normalized form of a text of `length` characters may be (see MAX_EXPANSION)."""
    return min(MAX_NORMALIZED_LENGTH, max(MAX_EXPANSION * length, length + EXPANSION_ALLOWANCE))


def _marked(text: str) -> bytes:
    """`text` in UTF-8, each run of letters, digits and marks between _RUN_START and _RUN_END."""
    return _WORD_RUN.sub(b"\x01\\g<0>\x02", text.encode())


@dataclass(frozen=True)
class _Variants:
    """The forms of one text that terms are searched in, in UTF-8 for RE2."""

    words: bytes  # the normalized text, marked: for words
    leet_words: bytes  # its leetspeak form, marked: for the leetspeak form of words
    # Patterns are also tried without the lookalike mapping, so one written in Cyrillic or Greek
    # matches; duplicates are dropped, as most prompts have no digit and no lookalike.
    for_patterns: tuple[bytes, ...]

    @classmethod
    def of(cls, text: str, index: int = 0) -> _Variants:
        """The variants, or ExpandsTooMuch (`index` is the text's place among those matched)."""
        bare = _bare(text)
        normalized = _fold(bare, lookalikes=True)
        unmapped = _fold(bare, lookalikes=False)
        longest, limit = max(len(normalized), len(unmapped)), normalized_limit(len(text))
        if longest > limit:
            raise ExpandsTooMuch(index, len(text), longest, limit)
        leet = normalized.translate(_LEET)
        every = (normalized, leet, unmapped, unmapped.translate(_LEET))
        return cls(_marked(normalized), _marked(leet), tuple(variant.encode() for variant in dict.fromkeys(every)))


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


def _word_entry(word: str) -> str:
    """The RE2 pattern that finds `word` as a whole word in a `_marked` text."""
    # Underscores separate words too: booru-style prompts write "blood_bath".
    parts = [_marked(part).decode() for part in word.replace("_", " ").split()]
    body = "[ _]+".join(re2.escape(part) for part in parts)
    # A word that starts or ends with a symbol ("a$$") has no mark there; the character beside it
    # must not be a letter, digit or mark, after which (before which) the text has a mark.
    before = "" if parts[0].startswith(_RUN_START) else r"(?:^|[^\x02])"
    after = "" if parts[-1].endswith(_RUN_END) else r"(?:[^\x01]|$)"
    return before + body + after


def _options(*, case_sensitive: bool, max_mem: int = _PATTERN_MEMORY) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.max_mem = max_mem
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
        return f"{_code(what)}: a repetition count must be at most {MAX_REPETITION}, with the smaller number first"
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


# A counted repetition as RE2 reads one: {n}, {n,} or {n,m} (anything else, such as {,m}, is literal).
_COUNT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _class_end(pattern: str, i: int) -> int:
    """Where the character class `[...]` opening at `i` ends (just past its `]`)."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):  # a `]` first is a literal one
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j = _escape_end(pattern, j)
        elif pattern.startswith("[:", j) and ":]" in pattern[j + 2:]:
            j = pattern.index(":]", j + 2) + 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return j


def _escape_end(pattern: str, i: int) -> int:
    """Where the escape at `i` ends: `\\p{Greek}` and `\\x{41}` carry braces that are not a count,
    and `\\Q...\\E` quotes everything up to its end."""
    if pattern.startswith("\\Q", i):
        end = pattern.find("\\E", i + 2)
        return len(pattern) if end < 0 else end + 2
    if pattern[i + 1:i + 2] in ("p", "P", "x") and pattern.startswith("{", i + 2) and "}" in pattern[i + 2:]:
        return pattern.index("}", i + 2) + 1
    return i + 2


def _check_repetitions(pattern: str) -> None:
    """InvalidTerm for a counted repetition of more than MAX_REPETITION, nested counts multiplied."""
    inside = [1]  # per open group: the most anything in it is repeated (the last entry: the innermost)
    atom = 1  # the same for the atom just read, which a count would repeat
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        count = _COUNT.match(pattern, i) if ch == "{" else None
        if count:
            times = max(int(count[1]), int(count[2] or 0))
            construct = _code(count[0])
            if times > MAX_REPETITION:
                raise InvalidTerm(f"The pattern is too costly: {construct} repeats {times} times, and the limit is "
                                  f"{MAX_REPETITION}. Use a smaller count, or `+` for any number.")
            if times * atom > MAX_REPETITION:
                raise InvalidTerm(f"The pattern is too costly: {construct} repeats a group that already repeats "
                                  f"{atom} times, {times * atom} times in all, and the limit is {MAX_REPETITION}. "
                                  "Use smaller counts, or `+` for any number.")
            atom *= times
            inside[-1] = max(inside[-1], atom)
            i = count.end()
            continue
        if ch == "(":
            inside.append(1)
            i += 1
            continue
        if ch == ")":
            atom = inside.pop() if len(inside) > 1 else 1
            inside[-1] = max(inside[-1], atom)
            i += 1
            continue
        if ch not in "*+?":  # a quantifier leaves the atom it applies to as it is
            atom = 1
        i = _escape_end(pattern, i) if ch == "\\" else _class_end(pattern, i) if ch == "[" else i + 1


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
    _check_repetitions(pattern)
    try:
        regex = re2.compile(_fold_pattern(pattern), _options(case_sensitive=False))
    except re2.error as error:
        raise InvalidTerm(f"The pattern is not valid: {_explain(error)}.") from None
    if regex.programsize > MAX_PROGRAM_SIZE:
        raise InvalidTerm(
            f"The pattern is too complex: RE2 compiles it to {regex.programsize} instructions, and the limit is "
            f"{MAX_PROGRAM_SIZE}. Use smaller counts, or fewer Unicode classes such as `\\pL`."
        )
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


def _on_time(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise OutOfTime()


class _Matcher:
    """Entries (RE2 patterns) compiled into RE2 Sets, which find every entry present in one pass over
    a text; each entry stands for the position of its term. A Set holds about _SET_PROGRAM_SIZE
    instructions at most, which bounds its memory and the time of one pass."""

    def __init__(self, *, case_sensitive: bool) -> None:
        self._options = _options(case_sensitive=case_sensitive, max_mem=_SET_MEMORY)
        self._sets: list[tuple[re2.Set, list[int]]] = []  # each Set, and the term position of its entries
        self._pending: list[tuple[str, int]] = []
        self._pending_size = 0

    def add(self, entry: str, position: int, size: int) -> None:
        if self._pending and self._pending_size + size > _SET_PROGRAM_SIZE:
            self.compile()
        self._pending.append((entry, position))
        self._pending_size += size

    def compile(self) -> None:
        if not self._pending:
            return
        regex_set, positions = re2.Set.SearchSet(self._options), []
        for entry, position in self._pending:
            if regex_set.Add(entry) != len(positions):
                raise AssertionError("RE2 numbered a Set's entries out of order")
            positions.append(position)
        regex_set.Compile()
        self._sets.append((regex_set, positions))
        self._pending, self._pending_size = [], 0

    def found(self, text: bytes, deadline: float | None) -> Iterator[int]:
        """The positions of the terms whose entries are in `text` (OutOfTime past `deadline`)."""
        for regex_set, positions in self._sets:
            _on_time(deadline)
            for index in regex_set.Match(text) or ():
                yield positions[index]


class PromptFilter:
    """A server's blocked words and patterns, compiled once.

    Words match whole words only ("nude" blocks "nude." and "nude_girl", not "nudes"); patterns
    match anywhere unless they say \\b, ignoring case. Both are tried on the normalized text, digits
    kept (a pattern for "18yo" still matches), and on its leetspeak form ("nud3" reads "nude");
    patterns also on the text without the lookalike mapping, so one written in Cyrillic or Greek
    matches those letters. A stored term that is no longer valid raises InvalidTerm here, naming it,
    or, given `on_invalid`, is handed to it and left out.
    """

    def __init__(self, terms: Iterable[Term], *, on_invalid: Callable[[InvalidTerm], None] | None = None) -> None:
        self._terms: list[Term] = []
        self._words = _Matcher(case_sensitive=True)  # searched in the marked normalized text
        self._leet_words = _Matcher(case_sensitive=True)  # their leetspeak forms, in its leetspeak form
        self._patterns = _Matcher(case_sensitive=False)  # in every variant
        for term in terms:
            try:
                if term.kind == "word":
                    word = check_word(term.text)
                    entries = [(self._words, _word_entry(word)), (self._leet_words, _word_entry(word.translate(_LEET)))]
                    sized = [(matcher, entry, len(entry.encode()) + 32) for matcher, entry in entries]
                elif term.kind == "pattern":
                    regex = _compile_pattern(term.text)
                    sized = [(self._patterns, _fold_pattern(term.text), regex.programsize)]
                else:
                    raise InvalidTerm(f"Unknown kind {term.kind!r}: a term is a word or a pattern.")
            except InvalidTerm as error:
                invalid = InvalidTerm(f"Stored {term.kind} {term.text!r}: {error}")
                if on_invalid is None:
                    raise invalid from None
                on_invalid(invalid)
                continue
            for matcher, entry, size in sized:
                matcher.add(entry, len(self._terms), size)
            self._terms.append(term)
        for matcher in (self._words, self._leet_words, self._patterns):
            matcher.compile()

    def __len__(self) -> int:
        return len(self._terms)

    def match(self, *texts: str, deadline: float | None = None) -> Term | None:
        """The first term, in the order given, found in any of `texts`, or None.

        Raises ExpandsTooMuch for a text whose normalized form is longer than `normalized_limit`
        (it is refused whole, never searched in part), and OutOfTime once `time.monotonic()` is past
        `deadline` (checked between passes, each of which is short). Never raises otherwise."""
        variants = []
        for index, text in enumerate(texts):
            _on_time(deadline)
            variants.append(_Variants.of(text, index))
        found: set[int] = set()
        for text in variants:
            found.update(self._words.found(text.words, deadline))
            found.update(self._leet_words.found(text.leet_words, deadline))
            for variant in text.for_patterns:
                found.update(self._patterns.found(variant, deadline))
        return self._terms[min(found)] if found else None
