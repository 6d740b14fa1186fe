"""The shape of the code: who may import whom, no import cycles, no oversized modules.

Every module under engine/, runner/ and bench/ is parsed with `ast`; every Import and ImportFrom
node counts wherever it sits: at the top, inside a function, under `if TYPE_CHECKING:` (a type-only
import is still a dependency of the design, so it is not excluded; none exist today). An import
is resolved to the deepest module of ours it names: `import engine.vad` and `from engine.vad import
SpeechDetector` import engine.vad; `from engine import vad` imports the submodule engine.vad;
`from engine import Segment` imports the package engine (its __init__ counts as a module). Parent
packages an import runs on the way are not counted as imported, or every package's __init__ would
sit in a cycle with the modules it re-exports.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "runner", "bench")
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def _sources() -> dict[str, Path]:
    """Every module of ours by dotted name."""
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import node brings in: for `from pkg import a, b`, pkg.a and pkg.b."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [f"{base}.{alias.name}" for alias in node.names]


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of ours that `name` names, or None for a third-party or stdlib name."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


@lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports anywhere in its file."""
    modules = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            # `from pkg import sub` names the submodule pkg.sub; `from pkg import name` falls back to pkg.
            targets = (_ours(n, modules) for n in _imported(node, module, path.name == "__init__.py"))
            edges.update(t for t in targets if t and t != module)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _crossings(sources: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    graph = import_graph()
    return sorted(f"{m} -> {t}" for m, ts in graph.items() if _in(m, *sources) for t in ts if _in(t, *forbidden))


def test_the_graph_sees_imports_inside_functions():
    """A check on the checker: engine.backends imports its backends inside functions."""
    graph = import_graph()
    assert "engine.backends.ctranslate2_backend" in graph["engine.backends"]
    assert "engine.options" in graph["engine"]


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (each line one set of modules that import each other): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_engine_never_imports_runner_or_bench():
    crossings = _crossings(("engine",), ("runner", "bench"))
    assert not crossings, crossings


def test_catalog_queue_and_web_never_import_bench_or_commands():
    crossings = _crossings(("runner.catalog", "runner.queue", "runner.web"), ("bench", "runner.commands"))
    assert not crossings, crossings


def test_modules_stay_under_the_size_budget():
    too_long = {
        module: n
        for module, path in _sources().items()
        if _in(module, "engine", "runner") and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_worker_kinds_pick_their_backend():
    """ane/gpu/all run on Core ML on a Mac; everything runs on CTranslate2 elsewhere (no Mac here: platform given)."""
    from engine.backends import backend_for

    assert [backend_for(k, "darwin") for k in ("ane", "gpu", "all", "cpu")] == ["coreml"] * 3 + ["ctranslate2"]
    assert {backend_for(k, "linux") for k in ("ane", "gpu", "all", "cpu")} == {"ctranslate2"}
