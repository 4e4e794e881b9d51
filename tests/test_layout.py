"""The import graph of lib/, flows/, tasks/ and voxclust/ (read with ``ast``, nothing imported): imports run
one way, between layers (voxclust > flows > tasks > lib) and between the rooms of lib/ (docs/architecture.md),
and no modules import each other in a circle.

Function-level and ``if TYPE_CHECKING:`` imports count for the direction (an import that goes up is one,
wherever it is written), not for circles (they run after the modules have loaded, or never); circles that
close only through a function-level import are checked apart, as hidden circles. Known violations are listed
below, each with its reason: the test fails on a new one, and on a listed one that is gone (the lists stay
exact). Run it as a script (``python tests/test_layout.py``) or with ``pytest -s`` to see the facts it checked.
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("voxclust", "flows", "tasks", "lib")

# A layer may import its own and the ones below it.
LAYERS = {"voxclust": 3, "flows": 2, "tasks": 1, "lib": 0}

# The rooms of lib/ (docs/architecture.md), lowest first: a room may import only rooms of a lower rank (rooms of
# one rank are siblings, independent of each other). A new room (package or top-level module of lib/) must be
# placed here.
ROOMS = {
    "errors": 0,
    "settings": 0,
    "progress": 0,
    "threads": 0,
    "processes": 0,
    "storage": 1,
    "scans": 2,
    "voxels": 3,
    "evaluation": 4,
    "features": 5,
    "report": 6,
    "compare": 7,
    "tune": 8,
}

# Known violations, (importer, imported) by module: none at present.
KNOWN_UPWARD: set[tuple[str, str]] = set()

# Known circles of module-level imports, each as the set of its modules: none at present.
KNOWN_CIRCLES: set[frozenset[str]] = set()

# Known hidden circles: closed only by a function-level import.
KNOWN_HIDDEN_CIRCLES: set[frozenset[str]] = {
    # registry imports scan (every method) and runs imports registry (get_method) at module level; scan reaches
    # back into runs inside functions (finished_run, Session: a pretext or neighbours run). Being untangled by
    # another change (lib/features/runs.py and the registry); remove this entry when it lands.
    frozenset({"lib.features.registry", "lib.features.runs", "lib.features.scan"}),
}

# A module of lib/ or voxclust/ holds one job a reader can take in: at most MAX_LINES lines. The longer ones
# today, to be split by the run engine's and the report's rework (issue 31); remove an entry when it is split.
MAX_LINES = 400
KNOWN_LONG: set[str] = {
    "lib/features/runs.py",  # the run engine: checkpoint, engine, embeddings in one module
    "lib/report/plots.py",  # every picture of the report
    "lib/voxels/store.py",  # the store: creation, planning, commits, reads
}
# At most MAX_FLAT flat modules at the top of lib/ (the rest are rooms: packages).
MAX_FLAT = 4
KNOWN_FLAT_EXTRA = 1  # errors, settings, progress, threads, processes: one too many (threads and processes go
# together into a room of their own, or into flows' runners, in the rework)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the deepest module of ours the statement names)
    line: int
    level: str  # "module" (runs on import), "function" (inside a def), "typing" (under TYPE_CHECKING)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The deepest module of ours that ``name`` (a module, or a module's attribute) names."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    found: list[Import] = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, level: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target is not None and target != name:
                    found.append(Import(name, target, node.lineno, level))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package up
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}", known) or _resolve(base, known)
                if target is not None and target != name:
                    found.append(Import(name, target, node.lineno, level))
        for child in ast.iter_child_nodes(node):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function")
            elif isinstance(node, ast.If) and _type_checking(node) and child in node.body:
                visit(child, "typing" if level == "module" else level)
            else:
                visit(child, level)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "module")
    return found


def all_imports() -> list[Import]:
    known = modules()
    return [i for name, path in known.items() for i in imports_of(name, path, known)]


def room(module: str) -> str:
    """lib.scans.batch -> scans, lib.errors -> errors; the package ``lib`` itself: ''."""
    return module.split(".")[1] if module.count(".") else ""


def upward(imports: list[Import]) -> dict[tuple[str, str], Import]:
    """Imports that go up: to a higher layer, or within lib/ to a room of the same or a higher rank."""
    out: dict[tuple[str, str], Import] = {}
    for i in imports:
        src, dst = i.source.split(".")[0], i.target.split(".")[0]
        if LAYERS[dst] > LAYERS[src]:
            out.setdefault((i.source, i.target), i)
        elif src == dst == "lib":
            a, b = room(i.source), room(i.target)
            if a != b and a and b and ROOMS[b] >= ROOMS[a]:
                out.setdefault((i.source, i.target), i)
    return out


def circles(imports: list[Import], levels: tuple[str, ...] = ("module",)) -> set[frozenset[str]]:
    """The strongly connected components (more than one module, or one importing itself) of the imports of
    these levels."""
    graph: dict[str, set[str]] = defaultdict(set)
    for i in imports:
        if i.level in levels:
            graph[i.source].add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[frozenset[str]] = set()

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def hidden_circles(imports: list[Import]) -> set[frozenset[str]]:
    """Circles of module-level and function-level imports that are no circle of module-level imports alone."""
    module_level = circles(imports)
    return {c for c in circles(imports, ("module", "function")) if not any(c <= m for m in module_level)}


def print_facts() -> None:
    """What the checks below look at: modules, edges, function-level imports, and what they find."""
    known = modules()
    imports = all_imports()
    per_package = dict(sorted(Counter(m.split(".")[0] for m in known).items()))
    print(f"modules: {per_package} ({len(known)})")
    print(f"edges (module -> module, any level): {len({(i.source, i.target) for i in imports})}")
    print(f"import statements by level: {dict(sorted(Counter(i.level for i in imports).items()))}")
    lib_function = Counter(i.source for i in imports if i.level == "function" and i.source.startswith("lib"))
    print(f"function-level imports in lib/ per module ({sum(lib_function.values())}):")
    for module, n in sorted(lib_function.items()):
        print(f"  {module}: {n}")
    print(f"rooms of lib/ by rank: {ROOMS}")
    print(f"imports that go up (voxclust > flows > tasks > lib; rooms by rank): {sorted(upward(imports)) or 'none'}")
    print(f"circles of module-level imports: {sorted(sorted(c) for c in circles(imports)) or 'none'}")
    hidden = sorted(sorted(c) for c in hidden_circles(imports))
    print(f"hidden circles (closed by a function-level import): {hidden or 'none'}")
    print(f"modules of lib/ and voxclust/ over {MAX_LINES} lines: {long_modules() or 'none'}")
    print(f"flat modules at the top of lib/: {flat_modules()}")


def long_modules() -> dict[str, int]:
    sizes = {
        p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
        for package in ("lib", "voxclust")
        for p in (ROOT / package).rglob("*.py")
    }
    return {k: v for k, v in sorted(sizes.items()) if v > MAX_LINES}


def flat_modules() -> list[str]:
    return sorted(p.stem for p in (ROOT / "lib").glob("*.py") if p.stem != "__init__")


def test_every_room_of_lib_is_placed() -> None:
    rooms = {room(m) for m in modules() if m.startswith("lib.")}
    assert rooms <= set(ROOMS), f"place these rooms of lib/ in ROOMS (and docs/architecture.md): {rooms - set(ROOMS)}"


def test_imports_run_one_way() -> None:
    print_facts()
    found = upward(all_imports())
    new = {k: f"{v.source}:{v.line} imports {v.target} ({v.level}-level)" for k, v in found.items()}
    assert not set(found) - KNOWN_UPWARD, f"imports that go up: {[new[k] for k in sorted(set(found) - KNOWN_UPWARD)]}"
    assert not KNOWN_UPWARD - set(found), f"gone: remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - set(found))}"


def test_no_circles_of_module_level_imports() -> None:
    found = circles(all_imports())
    assert not found - KNOWN_CIRCLES, f"circles: {[sorted(c) for c in found - KNOWN_CIRCLES]}"
    assert not KNOWN_CIRCLES - found, f"gone: remove from KNOWN_CIRCLES: {[sorted(c) for c in KNOWN_CIRCLES - found]}"


def test_hidden_circles_are_the_known_ones() -> None:
    found = hidden_circles(all_imports())
    new, gone = found - KNOWN_HIDDEN_CIRCLES, KNOWN_HIDDEN_CIRCLES - found
    assert not new, f"circles closed by a function-level import: {[sorted(c) for c in new]}"
    assert not gone, f"gone: remove from KNOWN_HIDDEN_CIRCLES: {[sorted(c) for c in gone]}"


def test_modules_are_short_and_lib_has_few_flat_modules() -> None:
    long = set(long_modules())
    assert not long - KNOWN_LONG, f"over {MAX_LINES} lines: {sorted(long - KNOWN_LONG)}"
    assert not KNOWN_LONG - long, f"short now: remove from KNOWN_LONG: {sorted(KNOWN_LONG - long)}"
    assert len(flat_modules()) == MAX_FLAT + KNOWN_FLAT_EXTRA, flat_modules()


def test_the_checks_see_what_they_should() -> None:
    """The checker itself, on the real tree: it finds imports of every level, and flags an upward one."""
    imports = all_imports()
    assert {"module", "function"} <= {i.level for i in imports}  # no TYPE_CHECKING import of ours at present
    fake = [
        Import("lib.scans.batch", "lib.voxels.store", 1, "function"),
        Import("lib.errors", "lib.errors", 1, "module"),
        Import("tasks.voxelize", "flows.voxelize", 1, "module"),
    ]
    assert set(upward(fake)) == {("lib.scans.batch", "lib.voxels.store"), ("tasks.voxelize", "flows.voxelize")}
    two = [Import("a", "b", 1, "module"), Import("b", "a", 1, "module"), Import("c", "a", 1, "function")]
    assert circles(two) == {frozenset({"a", "b"})}
    hidden = [Import("a", "b", 1, "module"), Import("b", "a", 1, "function")]
    assert circles(hidden) == set() and hidden_circles(hidden) == {frozenset({"a", "b"})}
    assert hidden_circles(two) == set()  # a circle already, not a hidden one


if __name__ == "__main__":
    print_facts()
