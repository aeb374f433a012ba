"""The per-server prompt filter: what it blocks through unicode tricks, what it lets through, and
which words and patterns moderators are refused."""

from __future__ import annotations

import random

import pytest

from bot.prompt_filter import (
    MAX_PATTERN_LENGTH,
    MAX_WORD_LENGTH,
    InvalidTerm,
    PromptFilter,
    Term,
    check_pattern,
    check_word,
    normalize,
)

NUDE = Term("word", "nude")
BLOOD_BATH = Term("word", "blood bath")
ASS = Term("word", "a$$")
PORN = Term("pattern", r"porn\w*")
UNDERAGE = Term("pattern", r"\b1[0-7]\s*yo\b")
GORE = Term("pattern", r"\bgör")  # an accent in the pattern: folded like the prompt's
RUSSIAN = Term("pattern", "порн")
ELLIPSIS = Term("pattern", "x…y")
TERMS = [NUDE, BLOOD_BATH, ASS, PORN, UNDERAGE, GORE, RUSSIAN, ELLIPSIS]


@pytest.fixture(scope="module")
def prompt_filter() -> PromptFilter:
    return PromptFilter(TERMS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NüDE", "nude"),
        ("nu\u0308de", "nude"),  # combining diaeresis
        ("ｎｕｄｅ", "nude"),  # fullwidth
        ("𝐧𝐮𝐝𝐞 𝓷𝓾𝓭𝓮", "nude nude"),  # math bold, math script
        ("ⓝⓤⓓⓔ", "nude"),
        ("ﬁne", "fine"),
        ("nu\u200bd\u200ce\u200d\u2060\ufeff\u00ad", "nude"),
        ("nude\ufe0f", "nude"),  # variation selector
        ("nudе ΝUDE nυde ɴᴜᴅᴇ", "nude nude nude nude"),  # Cyrillic е, Greek Ν and υ, small capitals
        ("раѕѕ", "pass"),  # Cyrillic р (a p, not an r), а, ѕ
        ("  blood \t\n\u00a0\u3000 bath  ", "blood bath"),
        ("İstanbul Straße", "istanbul strasse"),
        ("4k 1girl", "4k 1girl"),  # digits are kept; the leetspeak form is a separate variant
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        ("a nude woman", NUDE),
        ("NUDE", NUDE),
        ("Nüde portrait", NUDE),
        ("nu\u0301de", NUDE),  # combining acute accent
        ("ｎｕｄｅ", NUDE),
        ("𝐧𝐮𝐝𝐞 𝐰𝐨𝐦𝐚𝐧", NUDE),
        ("ⓝⓤⓓⓔ", NUDE),
        ("nu\u200bde", NUDE),  # zero-width space
        ("nu\u00adde", NUDE),  # soft hyphen
        ("n\u2060u\u200dd\ufeffe", NUDE),  # word joiner, zero-width joiner, BOM
        ("nude\ufe0f", NUDE),
        ("nudе", NUDE),  # Cyrillic е
        ("ΝUDE", NUDE),  # Greek capital nu
        ("nυde", NUDE),  # Greek upsilon
        ("ɴᴜᴅᴇ", NUDE),  # small capitals
        ("nud3", NUDE),
        ("NÜD3", NUDE),
        ("(nude:1.2), 1girl", NUDE),  # prompt weighting syntax
        ("nude_female, 1girl", NUDE),  # booru tags
        ("a nude.", NUDE),
        ("blood bath", BLOOD_BATH),
        ("a blood   bath", BLOOD_BATH),
        ("BLOOD\tBATH", BLOOD_BATH),
        ("blood\u00a0\nbath", BLOOD_BATH),
        ("blood_bath", BLOOD_BATH),
        ("bl𝐨𝐨d bаth", BLOOD_BATH),
        ("a$$", ASS),
        ("@$$", ASS),
        ("kick ass", ASS),
        ("PORNO", PORN),
        ("p0rn", PORN),
        ("рorn", PORN),  # Cyrillic р
        ("pοrnography", PORN),  # Greek ο
        ("ＰＯＲＮ", PORN),
        ("15yo", UNDERAGE),  # the digits survive for patterns
        ("a 15 YO girl", UNDERAGE),
        ("１５ｙｏ", UNDERAGE),
        ("GORE", GORE),
        ("göre", GORE),
        ("ПОРНО", RUSSIAN),
        ("x...y", ELLIPSIS),
        ("x…y", ELLIPSIS),
    ],
)
def test_blocked_prompts(prompt_filter: PromptFilter, prompt: str, term: Term) -> None:
    assert prompt_filter.match(prompt) == term


@pytest.mark.parametrize(
    "prompt",
    [
        "nudes",
        "denude",
        "nudeness",
        "a blood orange in a bath",
        "bloodbath",
        "assassin in a glass class",
        "a$$hole",
        "porcelain vase",
        "18yo whisky",
        "masterpiece, best quality, 4k, 8k uhd, 1girl, 35mm, 1920s",
        "xabcy",  # "…" in a pattern is three dots, not three of any character
        "a cat in a café",
        "",
        "   ",
    ],
)
def test_allowed_prompts(prompt_filter: PromptFilter, prompt: str) -> None:
    assert prompt_filter.match(prompt) is None


def test_every_text_is_searched_and_the_first_term_in_order_wins() -> None:
    both = PromptFilter([PORN, NUDE])
    assert both.match("a cat", "nude") == NUDE
    assert both.match("nude", "porn") == PORN
    assert both.match() is None
    assert PromptFilter([]).match("nude") is None


def test_a_word_stored_with_underscores_matches_spaces() -> None:
    term = Term("word", "blood_bath")
    assert PromptFilter([term]).match("a BLOOD BATH") == term


def test_leetspeak_does_not_cost_patterns_their_digits() -> None:
    digits = PromptFilter([Term("pattern", r"\b1girl\b"), Term("word", "4k")])
    assert digits.match("4k, 1girl") == Term("pattern", r"\b1girl\b")
    assert digits.match("a 4k photo") == Term("word", "4k")


@pytest.mark.parametrize(
    "text",
    [
        "\ud800 nude \udfff",  # lone surrogates, which UTF-8 cannot encode
        "\x00\x07\x1b nude",
        "\u202enude\u202c",
        "👩‍❤️‍👨 🏳️‍🌈 🇳🇺",
        "a" + "\u0301" * 5999,
        "\U0010ffff" * 6000,
        "".join(chr(random.Random(0).randrange(0x110000)) for _ in range(6000)),
        "ﷺ" * 6000,  # expands eighteen-fold under NFKC
    ],
)
def test_any_text_is_matched_without_raising(prompt_filter: PromptFilter, text: str) -> None:
    assert prompt_filter.match(text) in (None, *TERMS)
    assert isinstance(normalize(text), str)


def test_surrounding_junk_does_not_hide_a_word(prompt_filter: PromptFilter) -> None:
    assert prompt_filter.match("\ud800 nude \x00") == NUDE


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("(a+)+$", "a" * 5999 + "!"),
        ("(x+x+)+y", "x" * 6000),
        ("(.*a){20}", "a" * 6000),
        (r"^(\w+\s?)+$", "word " * 1199 + "!"),
    ],
)
def test_a_catastrophic_pattern_finishes_on_an_adversarial_prompt(pattern: str, text: str) -> None:
    assert check_pattern(pattern) == pattern
    assert PromptFilter([Term("pattern", pattern)]).match(text, text) in (None, Term("pattern", pattern))


@pytest.mark.parametrize(
    ("word", "stored"),
    [
        ("nude", "nude"),
        ("  Blood \t  Bath ", "blood bath"),
        ("NÜDE", "nude"),
        ("ｎｕｄｅ", "nude"),
        ("nu\u200bde", "nude"),
        ("a$$", "a$$"),
        ("x" * MAX_WORD_LENGTH, "x" * MAX_WORD_LENGTH),
    ],
)
def test_check_word_stores_the_normalized_form(word: str, stored: str) -> None:
    assert check_word(word) == stored


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("", "The word is empty"),
        (" \t ", "The word is empty"),
        ("x" * (MAX_WORD_LENGTH + 1), f"101 characters long; the limit is {MAX_WORD_LENGTH}"),
        ("!!!", "no letters or digits"),
        ("\u200b", "no letters or digits"),
        ("㍿" * 30, "too long once normalized"),
    ],
)
def test_check_word_refuses(word: str, message: str) -> None:
    with pytest.raises(InvalidTerm) as caught:
        check_word(word)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "pattern",
    [r"porn\w*", r"\bnud(e|ity)\b", "(?i)NSFW", "désnudo", "ｐｏｒｎ", "a" * MAX_PATTERN_LENGTH, "(a+)+$"],
)
def test_check_pattern_stores_the_pattern_as_given(pattern: str) -> None:
    assert check_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "The pattern is empty"),
        ("  ", "The pattern is empty"),
        ("a" * (MAX_PATTERN_LENGTH + 1), f"201 characters long; the limit is {MAX_PATTERN_LENGTH}"),
        (r"(a)\1", "backreferences like `\\1` are not supported"),
        (r"\k<x>", "backreferences"),
        ("(?P<x>a)(?P=x)", "named backreferences"),
        ("foo(?=bar)", "lookahead `(?=…)` is not supported"),
        ("foo(?!bar)", "negative lookahead"),
        ("(?<=x)y", "lookbehind `(?<=…)` is not supported"),
        ("(?<!x)y", "negative lookbehind"),
        ("(?>a)", "atomic groups"),
        ("a++", "possessive quantifiers like `a++`"),
        ("a**", "`**` repeats a repetition"),
        ("(abc", "a `(` is never closed"),
        ("abc)", "a `)` has no `(` before it"),
        ("[abc", "a `[` is never closed"),
        ("*abc", "`*` has nothing before it to repeat"),
        ("a{1001}", "at most 1000"),
        ("[z-a]", "`z-a` is not a valid range"),
        (r"\p{Foo}", "not a Unicode class"),
        (r"\Z", "use `$`"),
        ("x\\", "lone `\\`"),
        ("(?x)a", "its flags are only i, m, s and U"),
        (r"\pL{1000}", "too complex"),
        ("a*", "can match an empty string"),
        ("x|", "can match an empty string"),
        ("(?i)", "can match an empty string"),
        (r"\b", "can match an empty string"),
        ("nude|\\b", "can match an empty string"),
        ("é?", "can match an empty string"),
    ],
)
def test_check_pattern_refuses(pattern: str, message: str) -> None:
    with pytest.raises(InvalidTerm) as caught:
        check_pattern(pattern)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "prompt"),
    [
        ("porn", "ＰＯＲＮ"),
        ("PORN", "porn"),  # patterns ignore case, and are not casefolded themselves
        ("ｐｏｒｎ", "porn"),
        ("nud", "𝐍𝐔𝐃𝐈𝐓𝐘"),
        ("nud", "nu\u200bdity"),
        ("café", "CAFE\u0301"),
        ("cafe", "café"),
        (r"\bb[l1]ood\s+bath\b", "BLOOD \t  bаth"),
        (r"^nsfw", "  ＮＳＦＷ"),  # leading whitespace is trimmed
        ("порн", "ПОРНО"),
        ("νυδ", "ΝΥΔ"),  # Greek patterns match Greek prompts despite the lookalike mapping
    ],
)
def test_patterns_match_through_normalization(pattern: str, prompt: str) -> None:
    term = Term("pattern", pattern)
    assert PromptFilter([term]).match(prompt) == term


@pytest.mark.parametrize(
    ("term", "message"),
    [
        (Term("pattern", "(a"), "Stored pattern '(a': The pattern is not valid"),
        (Term("word", "!!"), "Stored word '!!': The word has no letters or digits"),
        (Term("regex", "a"), "a term is a word or a pattern"),
    ],
)
def test_a_stored_term_that_is_invalid_is_named(term: Term, message: str) -> None:
    with pytest.raises(InvalidTerm) as caught:
        PromptFilter([NUDE, term])
    assert message in str(caught.value)
