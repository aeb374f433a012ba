"""The per-server prompt filter: what it blocks through unicode tricks, what it lets through, and
which words and patterns moderators are refused; that its cost is bounded, and that the bot runs
it off the event loop within a time budget."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.moderation import Moderation, PromptBlocked, Refused
from bot.prompt_filter import (
    MAX_NORMALIZED_LENGTH,
    MAX_PATTERN_LENGTH,
    MAX_REPETITION,
    MAX_WORD_LENGTH,
    ExpandsTooMuch,
    InvalidTerm,
    OutOfTime,
    PromptFilter,
    Term,
    Uncheckable,
    check_pattern,
    check_word,
    normalize,
    normalized_limit,
)
from bot.store import Store
from dreambot.request import GenerateRequest

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
        "ﷺ" * 3 + " a prayer in calligraphy",  # expands eighteen-fold under NFKC, a few times only
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
    [r"porn\w*", r"\bnud(e|ity)\b", "(?i)NSFW", "désnudo", "ｐｏｒｎ", "a" * MAX_PATTERN_LENGTH, "(a+)+$",
     "[^x]{100}y", "(a{10}){10}", r"\p{Greek}{3}", r"\x{41}{3}",
     # braces that are no count: in a class, quoted, escaped, or not a count RE2 reads
     "[{1000}]", r"[\]{2000}]x", r"\Q{1000}\E", "a{,1000}"],
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
        ("a{1001}", f"`{{1001}}` repeats 1001 times, and the limit is {MAX_REPETITION}"),
        ("[z-a]", "`z-a` is not a valid range"),
        (r"\p{Foo}", "not a Unicode class"),
        (r"\Z", "use `$`"),
        ("x\\", "lone `\\`"),
        ("(?x)a", "its flags are only i, m, s and U"),
        (r"\pL{1000}", "`{1000}` repeats 1000 times"),
        ("[^x]{1000}y", "`{1000}` repeats 1000 times"),
        ("(a{50}){50}", f"`{{50}}` repeats a group that already repeats 50 times, 2500 times in all, and the limit "
                        f"is {MAX_REPETITION}"),
        ("((ab{20}c)+d){6}", "repeats a group that already repeats 20 times, 120 times in all"),
        (r"\x{41}{101}", "`{101}` repeats 101 times"),
        ("a{5,300}", "`{5,300}` repeats 300 times"),
        ("a{300,}", "`{300,}` repeats 300 times"),
        ("a{5,3}", f"a repetition count must be at most {MAX_REPETITION}, with the smaller number first"),
        (r"\pL{2}", "too complex: RE2 compiles it to 2"),
        (r"\pL{60}", "too complex"),
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


# -- what the filter costs ------------------------------------------------------------------------


def test_a_text_that_expands_too_much_is_refused_whole(prompt_filter: PromptFilter) -> None:
    with pytest.raises(ExpandsTooMuch) as caught:
        prompt_filter.match("\ufdfa" * 1000)  # 18 characters each once decomposed
    assert (caught.value.index, caught.value.length, caught.value.normalized_length) == (0, 1000, 18000)
    assert caught.value.limit == normalized_limit(1000) == 2000
    assert "expand too much when spelled out" in str(caught.value)
    assert isinstance(caught.value, Uncheckable)
    # Never searched in part: a blocked word after the expanding characters cannot hide past a cut.
    with pytest.raises(ExpandsTooMuch) as caught:
        prompt_filter.match("a fox", "", "\ufdfa" * 1000 + " nude")
    assert caught.value.index == 2
    with pytest.raises(ExpandsTooMuch) as caught:
        prompt_filter.match("\ufdfa" * 6000)  # the longest prompt the bot can be set to take
    assert (caught.value.normalized_length, caught.value.limit) == (108_000, MAX_NORMALIZED_LENGTH)
    with pytest.raises(ExpandsTooMuch):
        prompt_filter.match("…" * 1000)  # three dots each: past twice the length
    assert prompt_filter.match("…" * 300 + " a nude" * 100) == NUDE  # 1000 characters, 1600 once normalized
    assert prompt_filter.match("\ufdfa" * 10 + " nude") == NUDE  # a short text may grow by 200


def test_the_normalized_limit() -> None:
    assert normalized_limit(0) == 200
    assert normalized_limit(100) == 300
    assert normalized_limit(1000) == 2000
    assert normalized_limit(6000) == MAX_NORMALIZED_LENGTH == 12_000
    assert normalized_limit(100_000) == MAX_NORMALIZED_LENGTH


def test_a_deadline_that_has_passed_stops_the_match(prompt_filter: PromptFilter) -> None:
    with pytest.raises(OutOfTime) as caught:
        prompt_filter.match("a fox", deadline=time.monotonic() - 1)
    assert isinstance(caught.value, Uncheckable)
    assert prompt_filter.match("a nude fox", deadline=time.monotonic() + 60) == NUDE


@pytest.mark.parametrize(
    ("prompt", "blocked"),
    [
        ("a #nsfw post", True),
        ("#NSFW", True),
        ("a#nsfw", False),  # a word that starts with a symbol still starts a word
        ("#nsfwx", False),
        ("so wow!! yes", True),
        ("wow!!", True),
        ("wow!!x", False),  # nor does one that ends with a symbol run into the next word
        ("ナチス 旗", True),
        ("ナチス旗", False),  # letters of any script are part of the word
        ("the ナチス", True),
    ],
)
def test_words_with_symbols_or_other_scripts_at_their_edges(prompt: str, blocked: bool) -> None:
    edges = PromptFilter([Term("word", "#nsfw"), Term("word", "wow!!"), Term("word", "ナチス")])
    assert (edges.match(prompt) is not None) is blocked


def big_list() -> list[Term]:
    """500 terms as MAX_TERMS allows: the module's terms spread among random words and patterns,
    with the costliest patterns the rules accept."""
    rng = random.Random(7)
    letters = "bcdfghjmpqrvwxz"  # no vowels: no English word, nor any term of TERMS, by chance
    generated = []
    for i in range(500 - len(TERMS)):
        word = "".join(rng.choice(letters) for _ in range(rng.randint(6, 10)))
        if i % 5 == 0:
            generated.append(Term("pattern", rf"\b{word}\d+"))
        elif i % 37 == 0:
            generated.append(Term("pattern", f"[^{word[0]}]{{100}}{word[1:]}"))  # about 900 instructions
        else:
            generated.append(Term("word", word))
    for place, term in zip((0, 60, 130, 250, 333, 410, 470, 491), TERMS, strict=True):
        generated.insert(place, term)
    return generated


@pytest.fixture(scope="module")
def big_filter() -> PromptFilter:
    return PromptFilter(big_list())


def test_a_list_of_500_finds_every_term_and_the_first_in_order(big_filter: PromptFilter) -> None:
    terms = big_list()
    assert len(big_filter) == len(terms) == 500
    for term in terms:
        if term.kind == "word":
            prompt = f"a photo of {term.text}, 4k"
        elif term.text.endswith(r"\d+"):
            prompt = f"a {term.text[2:-3]}42 photo"
        else:
            continue  # the [^c]{100}... patterns: below
        assert big_filter.match(prompt) == term, term
    heavy = [term for term in terms if "{100}" in term.text]
    assert len(heavy) >= 10  # over 9000 instructions: several Sets
    for term in heavy:
        assert big_filter.match("y" * 100 + term.text.split("}", 1)[1]) == term
    # The first in the list's order wins, whichever text holds it and wherever it is in that text.
    first, later = terms[3], terms[480]
    assert first.kind == later.kind == "word"
    assert big_filter.match(f"{later.text} and {first.text}") == first
    assert big_filter.match(later.text, "a fox", first.text) == first
    assert big_filter.match(f"{later.text} nude", "x...y") == NUDE  # TERMS[0] is at place 0


@pytest.mark.parametrize("prompt", ["a nude woman", "p0rn", "a 15 YO girl", "ПОРНО", "x…y", "kick ass", "blood_bath"])
def test_a_list_of_500_blocks_what_a_short_list_blocks(big_filter: PromptFilter, prompt: str) -> None:
    assert big_filter.match(prompt) == PromptFilter(TERMS).match(prompt) != None  # noqa: E711


@pytest.mark.parametrize("prompt", ["nudes", "a$$hole", "18yo whisky", "xabcy", "a cat in a café", ""])
def test_a_list_of_500_lets_through_what_a_short_list_does(big_filter: PromptFilter, prompt: str) -> None:
    assert big_filter.match(prompt) is None


# -- the filter in the bot: off the event loop, within a budget ---------------------------------


@dataclass
class Channel:
    id: int

    def is_nsfw(self) -> bool:
        return False


@pytest.fixture
async def moderation(tmp_path: Path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    await store.add_blocked_term(1, "word", "gory", actor_id=5)
    yield Moderation(store), store
    await store.close()


def slow_match(seconds: float):
    """A PromptFilter.match that takes `seconds` in native code (sleep lets go of the GIL, as RE2
    does) and ignores the deadline, as a pass of RE2 would until it returns."""
    def match(self, *texts: str, deadline: float | None = None) -> Term | None:
        time.sleep(seconds)
        return None
    return match


async def test_a_match_over_the_budget_refuses_the_prompt_without_waiting(moderation, monkeypatch, caplog) -> None:
    rules, _ = moderation
    rules.filter_budget = 0.2
    monkeypatch.setattr(PromptFilter, "match", slow_match(1.5))
    started = time.monotonic()
    with caplog.at_level(logging.INFO), pytest.raises(Refused, match="could not be checked .* in time") as refused:
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a secret fox"))
    assert time.monotonic() - started < 1.0
    assert not isinstance(refused.value, PromptBlocked)
    assert "did not finish within 0.2 s" in caplog.text and "secret" not in caplog.text


async def test_admit_never_blocks_the_event_loop(moderation, monkeypatch) -> None:
    rules, _ = moderation
    await rules.prompt_filter(1)  # compiled before the clock starts
    monkeypatch.setattr(PromptFilter, "match", slow_match(0.5))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox"))
    ticking.cancel()
    assert ticks >= 20  # about 50 while the match ran; none if it ran on the loop


async def test_an_expanding_prompt_is_refused_by_name_and_not_logged(moderation, caplog) -> None:
    rules, _ = moderation
    with caplog.at_level(logging.INFO), pytest.raises(Refused) as refused:
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox", negative_prompt="\ufdfa" * 1000 + "gory"))
    assert "Your negative prompt has characters that expand too much when spelled out" in str(refused.value)
    assert "its 1004 characters would be checked as 18004" in str(refused.value) and "gory" not in str(refused.value)
    assert not isinstance(refused.value, PromptBlocked)
    assert "\ufdfa" not in caplog.text and "gory" not in caplog.text and "18004" in caplog.text
    with pytest.raises(PromptBlocked):  # the real filter still runs on the thread
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a GORY fox"))


async def test_a_server_that_blocks_nothing_does_not_send_prompts_to_the_filter(moderation, monkeypatch) -> None:
    """Most servers block no words: their prompts skip the filter's threads (a hop there and back for
    every command, twice before its job is queued), expanding ones included, as there is nothing in
    them to look for. Once a word is blocked, the filter runs again."""
    rules, store = moderation
    await store.remove_blocked_term(1, "word", "gory", actor_id=5)
    rules.terms_changed(1)

    def never(self, *texts: str, deadline: float | None = None) -> Term | None:
        raise AssertionError("matched with no terms")

    monkeypatch.setattr(PromptFilter, "match", never)
    request, _ = await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a gory fox",
                                                                       negative_prompt="\ufdfa" * 1000))
    assert request.prompt == "a gory fox"
    monkeypatch.undo()
    await store.add_blocked_term(1, "word", "gory", actor_id=5)
    rules.terms_changed(1)
    with pytest.raises(PromptBlocked):
        await rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a gory fox"))


async def test_the_filter_is_compiled_in_its_own_thread_and_again_after_a_change(moderation, monkeypatch) -> None:
    rules, store = moderation
    real, threads = PromptFilter, []
    started, go = threading.Event(), threading.Event()

    def compiled_slowly(*args, **kwargs) -> PromptFilter:
        threads.append(threading.current_thread().name)
        started.set()
        go.wait(5)
        return real(*args, **kwargs)

    monkeypatch.setattr("bot.moderation.PromptFilter", compiled_slowly)
    checking = asyncio.create_task(rules.admit(7, 1, Channel(10), GenerateRequest(prompt="a fox with blood")))
    while not started.is_set():
        await asyncio.sleep(0.01)
    # The list changes while the old one is being compiled: the prompt waits for the new one.
    await store.add_blocked_term(1, "word", "blood", actor_id=5)
    rules.terms_changed(1)
    go.set()
    with pytest.raises(PromptBlocked) as refused:
        await checking
    assert refused.value.term == Term("word", "blood")
    assert len(threads) == 2 and all(name.startswith("prompt-filter") for name in threads)
