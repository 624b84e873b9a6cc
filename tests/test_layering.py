"""Dependencies point one way: adapters -> bot -> engine. Only the composition root
(bot/app.py, bot/__main__.py) may import all three. Checked on the source, not by hand."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPOSITION_ROOT = {"bot/app.py", "bot/__main__.py"}
HEAVY = ("torch", "diffusers", "transformers", "peft")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("engine"), ids=lambda p: p.name)
def test_engine_knows_nothing_of_bot_or_adapters(path):
    assert not imports_of(path) & {"bot", "adapters"}


@pytest.mark.parametrize("path", sources("bot"), ids=lambda p: p.name)
def test_bot_never_imports_adapters_outside_the_composition_root(path):
    if str(path.relative_to(REPO)) in COMPOSITION_ROOT:
        return
    assert "adapters" not in imports_of(path)


def engine_modules_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "engine"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sources("adapters"), ids=lambda p: p.name)
def test_adapters_reach_the_engine_only_for_the_rules_they_declare(path):
    """Adapters talk to bot/; of the engine they read only engine.limits, to declare their options."""
    assert engine_modules_of(path) <= {"engine.limits"}


@pytest.mark.parametrize("path", sources("adapters"), ids=lambda p: p.name)
def test_adapters_never_import_the_ml_stack(path):
    assert not imports_of(path) & set(HEAVY)


CLI_MODULES = {"bot/__main__.py"}  # the command line prints; everything else logs


def test_no_print_in_library_code():
    offenders = []
    for package in ("engine", "bot", "adapters"):
        for path in sources(package):
            if str(path.relative_to(REPO)) in CLI_MODULES:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_the_planner_and_preview_paths_import_no_ml_stack():
    code = (
        "import sys, bot.__main__, bot.app, engine.planning.offline.planner, engine.rendering.base, engine.build; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def module_graph() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports anywhere in its source: at the top,
    inside functions, and under ``TYPE_CHECKING`` alike (a cycle hidden in a function is a cycle)."""
    def name(path: Path) -> str:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(path): path for package in ("engine", "bot", "adapters") for path in sources(package)}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[module] = (targets & modules.keys()) - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per import cycle found by a depth-first walk (empty when the graph has none)."""
    found, state = [], {}  # state: 1 = on the current path, 2 = done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    return found


def test_no_import_cycle_anywhere_counting_imports_inside_functions():
    assert cycles(module_graph()) == []


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# Which rooms each room may import (besides its own modules). A room is a package under engine/
# or bot/ (engine.planning, bot.store, ...) or a module at the top of one. Lower rooms never
# import higher ones: the map a newcomer reads in README's layout section.
ENGINE_BASE = {"engine.errors", "engine.limits", "engine.settings", "engine.shots", "engine.images"}
ALLOWED_ROOMS = {
    "engine.planning": ENGINE_BASE | {"engine.moderation"},
    "engine.rendering": ENGINE_BASE,
    "engine.identity": ENGINE_BASE,
    "engine.models": ENGINE_BASE | {"engine.rendering", "engine.identity"},
    "engine.training": ENGINE_BASE | {"engine.models", "engine.rendering", "engine.identity"},
    "engine.board_files": ENGINE_BASE | {"engine.rendering", "engine.identity"},
    "engine.storyboard": ENGINE_BASE | {"engine.board_files", "engine.planning", "engine.rendering",
                                        "engine.identity"},
    "engine.evaluation": ENGINE_BASE | {"engine.board_files", "engine.identity", "engine.rendering",
                                        "engine.storyboard"},
    "engine.exports": ENGINE_BASE | {"engine.board_files", "engine.rendering"},
    "bot.store": {"bot.quotas"},
    "bot.quotas": {"bot.config", "bot.errors"},
    "bot.pictures": {"bot.errors"},
    "bot.exports": {"bot.errors"},
    "bot.ops": {"bot.config", "bot.pictures", "bot.quotas", "bot.store"},
    "bot.render": {"bot.config", "bot.ops"},
    "bot.jobs": {"bot.chat_port", "bot.config", "bot.messages", "bot.ops", "bot.pictures", "bot.render", "bot.store"},
    "bot.service": {"bot.config", "bot.errors", "bot.exports", "bot.jobs", "bot.messages", "bot.ops", "bot.pictures",
                    "bot.quotas", "bot.store"},
}


def room_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("engine", "bot") and len(parts) > 1 else parts[0]


def room_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for module, targets in module_graph().items():
        room = room_of(module)
        found.setdefault(room, set()).update(room_of(t) for t in targets if room_of(t) != room)
    return found


@pytest.mark.parametrize("room", sorted(ALLOWED_ROOMS))
def test_each_room_imports_only_the_rooms_below_it(room):
    imported = room_imports()[room]
    assert {r for r in imported if r.split(".")[0] == room.split(".")[0]} <= ALLOWED_ROOMS[room]


def test_the_room_map_names_rooms_that_exist():
    assert set(ALLOWED_ROOMS) <= set(room_imports())
