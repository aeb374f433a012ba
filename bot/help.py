"""/help: what each command does, the options with this server's limits, the prompt syntax, and
the buttons and reactions, as pages of plain text (`HELP_PAGES`). What a page says about limits,
styles, wildcards and models comes from `Facts`, read where it is shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bot.render import MESSAGE_LIMIT, clip, duration, escape
from dreambot.prompt import MAX_LORA_WEIGHT, MAX_LORAS, MAX_WEIGHT, MIN_LORA_WEIGHT
from dreambot.request import (
    DEFAULT_FRAMES,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MAX_SEED,
    MIN_SIZE,
    SAMPLERS,
)


@dataclass(frozen=True)
class Facts:
    """What /help says about this bot, server and channel."""

    max_prompt_length: int
    max_steps: int
    max_width: int
    max_height: int
    max_images: int
    max_frames: int
    max_attachment_mb: float
    jobs_per_member: int
    cooldown_seconds: float
    styles: tuple[str, ...] = ()
    wildcards: tuple[str, ...] = ()
    models: int = 1
    default_model: str = ""
    filter_mode: str = "block"  # this channel's safety filter mode (a DM's is always "block")
    in_dm: bool = False


FILTER_MODES = {"block": "pictures the safety filter flags are withheld",
                "spoiler": "pictures the safety filter flags are posted behind a spoiler",
                "off": "the safety filter is off (an age-restricted channel)"}


def listed(names: tuple[str, ...], most: int = 12) -> str:
    shown = ", ".join(f"`{escape(name)}`" for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def commands_page(facts: Facts) -> str:
    return "\n".join([
        "**Make pictures** (each job is queued; its message shows its place, then a progress bar, then the "
        "result with buttons)",
        "• `/dream prompt:` a picture from words; add `image:` to start from your picture (image-to-image).",
        "• `/inpaint` repaint the white part of a `mask:` on your image, or on a result (`job:`).",
        "• `/outpaint` extend your image or a result beyond its edges.",
        "• `/interpolate` an animation from one prompt (or seed) to another.",
        "",
        "**Look things up** (only you see the answers)",
        "• `/models` the models you can use here · `/loras` the LoRAs and embeddings",
        "• `/queue` what is being made now and what waits · `/info job:` every parameter of a result "
        "(or right-click a result › Apps › Dream info)",
        "• `/history` your jobs, newest first · `/settings` your own defaults · `/forget` erase your history",
        "",
        "**Moderators**: `/mod` (filter, words, adapters, model, modlog, role, ban, unban, history, audit, workers).",
        "",
        "Pages: ① commands ② options and limits ③ prompt syntax ④ buttons and reactions.",
    ])


def options_page(facts: Facts) -> str:
    styles = f"one of {listed(facts.styles)}" if facts.styles else "none are set up on this bot"
    cooldown = f", and one every {duration(facts.cooldown_seconds)}" if facts.cooldown_seconds else ""
    jobs = "1 job" if facts.jobs_per_member == 1 else f"{facts.jobs_per_member} jobs"
    return "\n".join([
        "**Options and this server's limits** (leave any out: your `/settings`, then the model's defaults apply)",
        f"• `prompt`, `negative`: up to {facts.max_prompt_length} characters each (LoRA tags not counted)",
        f"• `steps` 1–{facts.max_steps} (default {DEFAULT_STEPS}) · `guidance` 0–30 (default {DEFAULT_GUIDANCE:g})"
        f" · `seed` 0–{MAX_SEED} (default random)",
        f"• `width`, `height` {MIN_SIZE}–{facts.max_width} and {MIN_SIZE}–{facts.max_height}, multiples of 8 "
        "(default: the model's native size), or `aspect` (1:1, 3:2, 16:9…) at the model's native pixel count",
        f"• `count` 1–{facts.max_images} pictures · `sampler`: {', '.join(SAMPLERS)} (default {DEFAULT_SAMPLER})",
        f"• `style`: {styles}",
        f"• `model`: {facts.models} here" + (f", `{escape(facts.default_model)}` by default" if facts.default_model
                                              else "") + " (see `/models`)",
        f"• `lora`, `lora_weight` ({MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}): see `/loras`",
        f"• `image`, `mask`: PNG, JPEG, WebP or GIF up to {facts.max_attachment_mb:g} MB · `strength` 0.01–1: how "
        "much of the picture to repaint",
        f"• `job`, `picture`: start from a result by its job number, and which of its pictures (1–{facts.max_images})",
        f"• `frames` 2–{facts.max_frames} (default {DEFAULT_FRAMES}) for `/interpolate`",
        f"• The queue: at most {jobs} of yours at a time{cooldown}.",
        "• In this " + ("direct message" if facts.in_dm else "channel") + f": {FILTER_MODES[facts.filter_mode]}.",
    ])


def syntax_page(facts: Facts) -> str:
    wildcards = (f"`__name__` a random line of a wildcard file: {listed(facts.wildcards)}" if facts.wildcards
                 else "`__name__` a random line of a wildcard file (none are set up on this bot)")
    return "\n".join([
        "**Prompt syntax** (AUTOMATIC1111's)",
        "• `(word)` stresses a word ×1.1, `((word))` ×1.21, `[word]` softens it ÷1.1",
        f"• `(word:1.4)` any weight from 0 to {MAX_WEIGHT:g}; brackets nest",
        "• `\\(` and `\\)` are literal brackets",
        "• `BREAK` starts a new 75-token chunk; long prompts are read whole, chunk by chunk (`/info` says how many)",
        f"• `<lora:NAME:0.8>` applies a LoRA (weight {MIN_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}, default 1; at most "
        f"{MAX_LORAS}), in the prompt only",
        "• an embedding's name (see `/loras`) in the prompt or the negative prompt",
        f"• {wildcards}",
        "• `{red|green|blue}` picks one; the seed decides, so a re-roll with the same seed picks the same",
        "",
        "The `negative` prompt says what to keep out (`blurry, text`). The seed makes a picture repeatable: "
        "the same prompt, seed and options give the same picture.",
    ])


def buttons_page(facts: Facts) -> str:
    return "\n".join([
        "**Under a result** (anyone who can see it; each makes a new job, posted as a reply)",
        "• 🔁 **Re-roll**: the same again with a new seed",
        "• 🔀 **Vary** (V1, V2…): a variation of that picture",
        "• ⬆️ **Upscale** (U1, U2…): that picture at twice the size",
        "• ⬅️ ➡️ 🔼 🔽 extend the picture that way",
        "• 🖋️ **Edit**: change the prompt, negative prompt or seed, and make it again",
        "• 🗑️ **Delete**: remove the result (its member or a moderator)",
        "• ✖️ **Cancel** on a queued or running job (its member or a moderator)",
        "",
        "**Reactions** do the same on the first picture: 🔁 re-roll · 🔀 vary · ⬆️ upscale · 🗑️ delete.",
        "A result's summary holds everything needed to make it again; `/info` shows all of it.",
    ])


HELP_PAGES: tuple[Callable[[Facts], str], ...] = (commands_page, options_page, syntax_page, buttons_page)


def page(facts: Facts, number: int) -> str:
    """Page `number` (from 0) of /help, under a line that says which."""
    number = max(0, min(number, len(HELP_PAGES) - 1))
    head = f"📖 **Dreambot help** · page {number + 1} of {len(HELP_PAGES)}"
    return clip(f"{head}\n{HELP_PAGES[number](facts)}", MESSAGE_LIMIT)
