"""Wildcards and permutations, in dynamicprompts' syntax: `__name__` is a random line of
WILDCARDS_DIR/name.txt, `{a|b|c}` one of a, b and c. The job's seed picks, so a seed reproduces
the prompt; the prompt a job records, shows and writes into its PNG is the one it was drawn with.

Imports neither torch nor discord: the bot expands a prompt before its moderators' filter reads it,
and the engine's CLI does the same."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dynamicprompts.generators import RandomPromptGenerator
from dynamicprompts.wildcards import WildcardManager
from pyparsing import ParseException

from dreambot.errors import InvalidRequest

_WILDCARD = re.compile(r"__([\w][\w/ -]*?)__")
# dynamicprompts logs an unknown wildcard as a warning; we refuse it with a message instead.
logging.getLogger("dynamicprompts").setLevel(logging.ERROR)


def names(folder: Path | None) -> list[str]:
    """The wildcards a prompt may name, sorted."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(WildcardManager(folder).get_collection_names())


def expand(text: str, seed: int, folder: Path | None, what: str = "prompt") -> str:
    """The text with its wildcards and `{a|b}` choices picked by `seed`; InvalidRequest for an
    unknown wildcard or an unclosed `{`."""
    wildcards = _WILDCARD.findall(text)
    if not wildcards and "{" not in text:
        return text  # nothing to pick: the text as written, untouched ("^__^" included)
    known = names(folder)
    for name in wildcards:
        if name not in known:
            offered = ", ".join(f"__{n}__" for n in known) if known else "none are set up on this server"
            raise InvalidRequest(f"The {what} names the wildcard __{name}__, which does not exist ({offered}).")
    generator = RandomPromptGenerator(wildcard_manager=WildcardManager(folder) if known else None)
    try:
        return generator.generate(text, 1, seeds=[seed])[0]
    except ParseException as error:
        near = text[max(0, error.loc - 10):error.loc + 10].strip()
        raise InvalidRequest(f"The {what} cannot be read near “{near}”: write choices as {{red|green|blue}} and "
                             "wildcards as __name__ (a { of the text itself cannot be used).") from None
    except Exception:  # dynamicprompts' other syntax (variables, ${x}) that this bot does not offer
        raise InvalidRequest(f"The {what} uses wildcard syntax this bot does not offer: only {{red|green|blue}} "
                             "choices and __name__ wildcards.") from None
