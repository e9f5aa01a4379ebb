"""The package's shape: no import cycle (counting imports inside functions, so a cycle cannot
hide in one) and no module over 400 lines unless `LONG_MODULES` says why."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxwhisper"
MAX_LINES = 400
# module name -> why it is longer than MAX_LINES
LONG_MODULES: dict[str, str] = {
    "jaxwhisper.config": "the one schema of every run: its dataclasses, their cross-field rules and "
    "the loader read together, and a second module would split the rules from their fields",
}


def module_files() -> dict[str, Path]:
    files = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = f
    return files


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its file (relative imports
    resolved; `from PKG import MOD` counts as an import of PKG.MOD)."""
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        is_pkg = f.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in files and t != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph(module_files())
    # commands.py imports its libraries when a subcommand runs, never at module level.
    assert "jaxwhisper.inference.transcribe" in graph["jaxwhisper.commands"]
    assert "jaxwhisper.commands" in graph["jaxwhisper.cli"]


def test_no_import_cycle():
    assert cycles(import_graph(module_files())) == []


def test_no_long_module_without_a_reason():
    files = module_files()
    long = {name: n for name, f in files.items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    unexplained = {name: n for name, n in long.items() if name not in LONG_MODULES}
    assert not unexplained, f"modules over {MAX_LINES} lines without a reason in LONG_MODULES: {unexplained}"
    stale = sorted(set(LONG_MODULES) - set(long))
    assert not stale, f"LONG_MODULES lists modules that are no longer long: {stale}"
