"""The house: which module may import which, function-local imports included (docs/ARCHITECTURE.md, "Who may
import whom").

Every module of ``oblique/`` and ``analysis/`` is parsed with ``ast``; each import (at module level or
inside a function) is an edge between two *units*: ``oblique.<name>`` for a module or package directly
under ``oblique`` (``oblique.study.spec`` belongs to ``oblique.study``), ``analysis`` for the analysis package.
The edges must be in :data:`ALLOWED`, and the module-level graph must have no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: unit -> the units it may import. The data flows one way:
#: cli -> (study | cost | train) -> config -> (methods, models, data) -> records -> storage, then analysis
#: reads. study runs its own cost bench after its runs (study -> cost); export reads records (and
#: RunConfig's declaration of which settings only say how a run executed).
LIBRARY_BASE = {
    "oblique.errors",
    "oblique.text",
    "oblique.options",
    "oblique.progress",
    "oblique.clock",
    "oblique.storage",
}
ALLOWED: dict[str, set[str]] = {
    "oblique.errors": set(),
    "oblique.text": set(),
    "oblique.options": {"oblique.errors", "oblique.text"},
    "oblique.progress": {"oblique.options"},  # $OBLIQUE_LOG_EVERY is a declared option
    "oblique.clock": set(),
    "oblique.storage": {"oblique.errors"},
    "oblique.distributed": set(),
    "oblique.fit": LIBRARY_BASE
    | {
        "oblique.records",
        "oblique.batches",
        "oblique.data",
        "oblique.geometry",
        "oblique.methods",
        "oblique.distributed",
    },
    "oblique.batches": {"oblique.data"},
    "oblique.recipes": set(),
    "oblique.presets": {"oblique.errors"},
    "oblique.layers": {"oblique.errors", "oblique.options"},
    "oblique.geometry": {"oblique.layers"},
    "oblique.bake": set(),
    "oblique.optim": set(),
    "oblique.records": {"oblique.errors", "oblique.options", "oblique.storage"},
    "oblique.models": {"oblique.errors"},
    "oblique.data": {"oblique.errors", "oblique.text", "oblique.options", "oblique.storage"},
    "oblique.methods": {
        "oblique.errors",
        "oblique.options",
        "oblique.layers",
        "oblique.geometry",
        "oblique.optim",
    },
    "oblique.config": LIBRARY_BASE
    | {
        "oblique.recipes",
        "oblique.presets",
        "oblique.batches",
        "oblique.methods",
        "oblique.models",
        "oblique.data",
    },
    "oblique.train": LIBRARY_BASE
    | {
        "oblique.config",
        "oblique.records",
        "oblique.data",
        "oblique.batches",
        "oblique.fit",
        "oblique.distributed",
        "oblique.geometry",
        "oblique.methods",
        "oblique.models",
    },
    "oblique.study": LIBRARY_BASE
    | {
        "oblique.config",
        "oblique.records",
        "oblique.geometry",
        "oblique.methods",
        "oblique.train",
        "oblique.cost",
    },
    "oblique.cost": LIBRARY_BASE
    | {
        "oblique.config",
        "oblique.records",
        "oblique.geometry",
        "oblique.methods",
        "oblique.models",
        "oblique.optim",
    },
    "oblique.export": LIBRARY_BASE | {"oblique.records", "oblique.config"},
    "oblique.integrations": {"oblique.geometry", "oblique.methods"},
    "oblique": {"oblique.bake", "oblique.layers", "oblique.geometry", "oblique.methods"},
    "oblique.cli": LIBRARY_BASE
    | {
        "oblique",
        "oblique.layers",
        "oblique.config",
        "oblique.presets",
        "oblique.records",
        "oblique.methods",
        "oblique.models",
        "oblique.data",
        "oblique.train",
        "oblique.study",
        "oblique.cost",
        "oblique.export",
        "analysis",
    },
    "oblique.__main__": {"oblique.cli"},
    "analysis": LIBRARY_BASE
    | {
        "oblique",
        "oblique.config",
        "oblique.records",
        "oblique.geometry",
        "oblique.methods",
        "oblique.models",
        "oblique.study",
        "oblique.cost",
    },
}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in ("oblique", "analysis"):
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = f
    return mods


def _imports(name: str, path: Path, mods) -> set[str]:
    """Every module of ``mods`` that ``path`` imports, module-level and function-local. ``from P import x``
    imports the module ``P.x`` when there is one, else ``P`` (relative imports resolved)."""
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {_owner(a.name, mods) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:
                sub = f"{prefix}.{a.name}"
                out.add(sub if sub in mods else _owner(prefix, mods))
    return out - {None}


def _owner(target: str, mods) -> str | None:
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in mods:
            return ".".join(parts[:i])
    return None


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "oblique" else parts[0]


def _module_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        graph[name] = _imports(name, path, mods) - {name}
    return graph


def test_every_import_edge_is_allowed():
    bad = []
    for a, targets in _module_graph().items():
        for b in targets:
            ua, ub = _unit(a), _unit(b)
            if ua != ub and ub not in ALLOWED.get(ua, set()):
                bad.append(f"{a} imports {b} ({ua} -> {ub} is not in the table)")
    assert not bad, "\n".join(sorted(bad))


def test_every_unit_is_in_the_table():
    units = {_unit(m) for m in _module_graph()}
    assert units <= set(ALLOWED), f"modules not in the import table: {sorted(units - set(ALLOWED))}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            strong(v)
    return found


def test_no_import_cycle_between_units_or_modules():
    graph = _module_graph()
    units: dict[str, set[str]] = {}
    for a, targets in graph.items():
        units.setdefault(_unit(a), set()).update(_unit(b) for b in targets if _unit(b) != _unit(a))
    # a package's face (__init__) re-exports its modules: inside one unit, only edges between modules count
    inner = {
        a: {b for b in t if not (a == b.rsplit(".", 1)[0] or b == a.rsplit(".", 1)[0])}
        for a, t in graph.items()
    }
    assert _cycles(units) == [], f"import cycles between units: {_cycles(units)}"
    assert _cycles(inner) == [], f"import cycles between modules: {_cycles(inner)}"


def test_only_the_cli_imports_analysis_and_nothing_imports_the_cli():
    for a, targets in _module_graph().items():
        ua = _unit(a)
        if any(_unit(b) == "analysis" for b in targets):
            assert ua in ("oblique.cli", "analysis"), f"{a} imports analysis"
        if any(_unit(b) == "oblique.cli" for b in targets):
            assert ua in ("oblique.cli", "oblique.__main__"), f"{a} imports the command line"


def test_only_the_ray_executor_imports_ray_and_only_in_a_function():
    importers = {}
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.setdefault(name, []).append("module level" if id(node) in top else "in a function")
    assert importers == {"oblique.study.ray_executor": ["in a function"]}, importers


def test_the_library_imports_without_its_command_line():
    code = (
        "import sys, oblique, oblique.train, oblique.study, oblique.cost, oblique.records, oblique.config; "
        "print(sorted(m for m in sys.modules if m == 'analysis' or m.startswith(('analysis.', 'oblique.cli'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_broken_geoopt_breaks_only_the_riemannian_methods():
    code = (
        "import sys; sys.modules['geoopt'] = None\n"  # any `import geoopt` now raises ImportError
        "import torch, oblique, oblique.cli, oblique.train, oblique.study, oblique.cost\n"
        "from oblique.models import get_model\n"
        "riemannian = ('oblique-rsgd', 'stiefel-rsgd')\n"
        "for name in oblique.list_methods():\n"
        "    if name not in riemannian:\n"
        "        oblique.get_method(name).prepare(get_model('cnn'))\n"
        "for name in riemannian:\n"
        "    try:\n"
        "        oblique.get_method(name).prepare(get_model('cnn'))\n"
        "    except ImportError:\n"
        "        print(name, 'needs geoopt')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["oblique-rsgd needs geoopt", "stiefel-rsgd needs geoopt"]
