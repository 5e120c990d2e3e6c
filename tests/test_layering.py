"""Import-graph hygiene of toolchain/, models/ and firmware_export/, checked statically (``ast``, nothing imported).

* no import cycle among their modules (``pkg/__init__.py`` is module ``pkg``; imports inside functions count,
  imports under ``if TYPE_CHECKING:`` do not, as they never run);
* firmware_export imports only toolchain's core modules;
* only toolchain's application layer (cli, pipeline, bench) imports firmware_export;
* no toolchain module is longer than MAX_LINES.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("toolchain", "models", "firmware_export")
MAX_LINES = 450

# toolchain modules firmware_export may import (and the package itself, for __version__).
CORE = {
    "toolchain", "toolchain.errors", "toolchain.fsutil", "toolchain.metadata", "toolchain.specs",
    "toolchain.native_stderr", "toolchain.convert", "toolchain.procutil", "toolchain.results",
    "toolchain.tflite_model", "toolchain.tflite_types", "toolchain.tflite_parse",
    "toolchain.model_inspect", "toolchain.inspect_common", "toolchain.keras_inspect",
}
# Explicit exceptions to the firmware_export -> core rule: (importer, imported). Empty today.
FIRMWARE_ALLOWED: set[tuple[str, str]] = set()

APP_LAYER_PREFIXES = ("toolchain.cli", "toolchain.tune")
APP_LAYER = {"toolchain.pipeline", "toolchain.pipeline_fit", "toolchain.quant_auto", "toolchain.bench", "toolchain.ontarget"}


def _module_files() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is one of our modules (None for third-party imports)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in mods:
            return cand
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node except the bodies of ``if TYPE_CHECKING:`` (annotation-only imports never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _import_graph() -> dict[str, set[str]]:
    mods = _module_files()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _runtime_nodes(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import: resolve against this module's package
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for alias in node.names:
                    sub = f"{src}.{alias.name}"
                    targets.append(sub if sub in mods else src)
            for t in targets:
                r = _resolve(t, mods)
                if r is not None and r != mod:
                    graph[mod].add(r)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        colour[u] = GREY
        stack.append(u)
        for v in sorted(graph[u]):
            if colour[v] == GREY:
                return stack[stack.index(v):] + [v]
            if colour[v] == WHITE:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        colour[u] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_the_packages():
    graph = _import_graph()
    assert "toolchain.cli" in graph and "firmware_export.cgen" in graph and "models" in graph
    assert "toolchain.tflite_model" in graph["toolchain.model_inspect"]


def test_no_import_cycle():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_firmware_export_imports_only_toolchain_core():
    bad = sorted((m, t) for m, deps in _import_graph().items() if m.split(".")[0] == "firmware_export"
                 for t in deps if t.split(".")[0] == "toolchain" and t not in CORE
                 and (m, t) not in FIRMWARE_ALLOWED)
    assert not bad, "firmware_export imports non-core toolchain modules: " + ", ".join(f"{m} -> {t}" for m, t in bad)


def test_only_the_application_layer_imports_firmware_export():
    def is_app(m: str) -> bool:
        return m in APP_LAYER or any(m == p or m.startswith(p + ".") for p in APP_LAYER_PREFIXES)

    bad = sorted((m, t) for m, deps in _import_graph().items() if m.split(".")[0] == "toolchain" and not is_app(m)
                 for t in deps if t.split(".")[0] == "firmware_export")
    assert not bad, "toolchain modules outside cli/pipeline/bench import firmware_export: " + ", ".join(
        f"{m} -> {t}" for m, t in bad)


def test_toolchain_modules_are_small():
    long = sorted((str(p.relative_to(ROOT)), n) for p in (ROOT / "toolchain").rglob("*.py")
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert not long, f"toolchain modules over {MAX_LINES} lines: " + ", ".join(f"{p} ({n})" for p, n in long)
