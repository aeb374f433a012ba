"""The import direction drawn in the README's architecture section, read from the code itself.

Each bot module may import only from the layers below its own; no cog imports another cog; nothing
imports inside a function (an import hidden there would dodge a cycle); the shared kernel imports
neither side, the bot never imports torch, the engine never imports discord; and only the queue
moves a job's status."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module imports only from layers before its own (cogs: not from each other).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("shared kernel", ("dreambot", "dreambot.*")),
    ("leaves", ("bot", "bot.outcome", "bot.store", "bot.images", "bot.fingerprint", "bot.prompt_filter", "bot.styles",
                "bot.replies")),
    ("members' text", ("bot.render",)),
    ("help pages", ("bot.help",)),
    ("engine client, attachments", ("bot.engine_client", "bot.attachments")),
    ("workers on other hosts", ("bot.workers",)),
    ("queue, moderation, requests", ("bot.queue", "bot.moderation", "bot.modlog", "bot.requests")),
    ("views", ("bot.views",)),
    ("delivery", ("bot.delivery",)),
    ("job runner", ("bot.jobs",)),
    ("actions", ("bot.actions",)),
    ("cogs", ("bot.cogs", "bot.cogs.*")),
    ("client", ("bot.bot",)),
    ("entry point", ("bot.__main__",)),
]
# A cog may name the bot's class in its annotations (RoboDanny's way): a type-only import, never run.
TYPE_ONLY_ALLOWED = {("bot.cogs.*", "bot.bot")}
FORBIDDEN = {
    "dreambot": ("bot", "engine", "discord", "torch", "diffusers", "transformers"),
    "bot": ("engine", "torch", "diffusers", "transformers"),
    "engine": ("bot", "discord"),
}
# The bot's domain that needs no Discord object, tested without one.
DISCORD_FREE = ("bot.outcome", "bot.store", "bot.render", "bot.engine_client", "bot.workers", "bot.queue",
                "bot.requests")
# The store's methods that move a job's status; only the queue calls them.
STATUS_WRITES = {"mark_running", "finish_job", "delivered", "fail_job", "requeue_job", "cancel_job"}
STATUS_WRITER = "bot.queue"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, str]:
    return {module_name(path): path.read_text(encoding="utf-8")
            for package in ("bot", "engine", "dreambot") for path in sorted((ROOT / package).rglob("*.py"))}


def layer(module: str) -> int | None:
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return rank
    return None


def imports(source: str) -> list[tuple[str, int, bool, bool]]:
    """(imported module, line, inside a function, under `if TYPE_CHECKING`) for every import."""
    found = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function, type_only) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                # `from bot import render` imports bot.render.
                found.extend((f"{child.module}.{alias.name}" if child.module in ("bot", "dreambot", "engine",
                                                                                 "bot.cogs") else child.module,
                              child.lineno, in_function, type_only) for alias in child.names)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, in_function, True)
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)), type_only)

    visit(ast.parse(source), False, False)
    return found


def violations(modules: dict[str, str]) -> list[str]:
    found = []
    for module, source in modules.items():
        top = module.split(".")[0]
        for imported, line, in_function, type_only in imports(source):
            where = f"{module}:{line} imports {imported}"
            if any(imported == name or imported.startswith(name + ".") for name in FORBIDDEN.get(top, ())):
                found.append(f"{where}: {top} must not import it")
            if module in DISCORD_FREE and imported.split(".")[0] == "discord":
                found.append(f"{where}: {module} works without Discord")
            if top == "bot" and in_function:
                found.append(f"{where} inside a function")
            if top != "bot" or not imported.startswith("bot"):
                continue
            if imported not in modules and imported.rsplit(".", 1)[0] in modules:
                imported = imported.rsplit(".", 1)[0]  # `from bot.views import X`: a name, not a module
            mine, theirs = layer(module), layer(imported)
            if mine is None or theirs is None:
                found.append(f"{where}: add {module if mine is None else imported} to a layer in LAYERS")
                continue
            if type_only and any(fnmatch.fnmatchcase(module, a) and imported == b for a, b in TYPE_ONLY_ALLOWED):
                continue
            if module.startswith("bot.cogs.") and imported.startswith("bot.cogs."):
                found.append(f"{where}: a cog never imports another cog")
            elif theirs >= mine and imported != module:
                found.append(f"{where}: {LAYERS[mine][0]} may import only from the layers below it, "
                             f"not from {LAYERS[theirs][0]}")
        if top == "bot" and module != STATUS_WRITER:
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Attribute) and node.attr in STATUS_WRITES and \
                        ast.unparse(node.value).endswith(("store", "_store")):
                    found.append(f"{module}:{node.lineno} writes a job's status ({node.attr}); only "
                                 f"{STATUS_WRITER} does")
    return found


def test_the_code_keeps_the_import_direction() -> None:
    modules = sources()
    assert "bot.cogs.dream" in modules and "engine.server" in modules and "dreambot.request" in modules
    assert violations(modules) == []


def test_the_check_finds_each_kind_of_violation() -> None:
    modules = sources()
    broken = {
        **modules,
        "bot.views": modules["bot.views"] + "\nfrom bot.jobs import JobRunner\n",
        "bot.cogs.queue": modules["bot.cogs.queue"] + "\nfrom bot.cogs.dream import Dream\n",
        "bot.store": modules["bot.store"] + "\ndef later():\n    from bot import render\n",
        "dreambot.wire": modules["dreambot.wire"] + "\nimport discord\n",
        "bot.render": modules["bot.render"] + "\nimport torch\n",
        "engine.server": modules["engine.server"] + "\nfrom bot import queue\n",
        "bot.jobs": modules["bot.jobs"] + "\nasync def f(store):\n    await store.delivered(1, None)\n",
        "bot.newcomer": "from bot import store\n",
        "bot.requests": modules["bot.requests"] + "\nimport discord\n",
    }
    found = "\n".join(violations(broken))
    assert "bot.views:" in found and "views may import only from the layers below it, not from job runner" in found
    assert "a cog never imports another cog" in found
    assert "bot.store" in found and "imports bot.render inside a function" in found
    assert "dreambot.wire" in found and "dreambot must not import it" in found
    assert "bot.render" in found and "imports torch: bot must not import it" in found
    assert "engine.server" in found and "engine must not import it" in found
    assert "writes a job's status (delivered); only bot.queue does" in found
    assert "add bot.newcomer to a layer in LAYERS" in found
    assert "bot.requests works without Discord" in found
