"""Style presets: prompt text an operator defines in a TOML file, chosen by name with `style`."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent / "styles.toml"
MOST = 25  # Discord offers at most 25 choices per option


class StylesError(ValueError):
    """The styles file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative: str = ""

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The member's prompt inside the style's, and the style's negative added to theirs."""
        styled = self.prompt.replace("{prompt}", prompt)
        return styled, ", ".join(part for part in (negative, self.negative) if part)


def load_styles(path: Path | None = None) -> dict[str, Style]:
    path = BUNDLED if path is None else Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StylesError(f"cannot read the styles file {path}: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise StylesError(f"the styles file {path} is not valid TOML: {error}") from error
    styles = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise StylesError(f"{path}: {name!r} must be a table such as [{name}] with prompt = \"...\"")
        unknown = set(table) - {"prompt", "negative"}
        if unknown:
            raise StylesError(f"{path}: style {name!r} has unknown keys {sorted(unknown)} (use prompt, negative)")
        prompt, negative = table.get("prompt"), table.get("negative", "")
        if not isinstance(prompt, str) or "{prompt}" not in prompt:
            raise StylesError(f"{path}: style {name!r} needs prompt = \"...\" containing {{prompt}}")
        if not isinstance(negative, str):
            raise StylesError(f"{path}: style {name!r}: negative must be text")
        if not 1 <= len(name) <= 100:
            raise StylesError(f"{path}: style names must be 1 to 100 characters ({name!r})")
        styles[name] = Style(name, prompt, negative)
    if len(styles) > MOST:
        raise StylesError(f"{path} defines {len(styles)} styles; Discord can offer at most {MOST}")
    return styles
