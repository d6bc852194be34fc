"""The layout keeps the data flow one way: no import cycles (function-level imports included),
and no module imports a layer above it (policies/envs -> engines/evaluator -> hooks/backends
-> pipeline -> API/report/gate -> commands -> cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import certrl

ROOT = Path(certrl.__file__).resolve().parent

#: layer of each module, by longest matching prefix; a module may import its own layer or below
LAYERS: dict[str, int] = {
    "certrl._version": 0, "certrl.errors": 0, "certrl.envs": 0, "certrl.atari": 0,
    "certrl.policies": 0,
    "certrl.stats": 0, "certrl.certificates": 0,
    "certrl.engines": 1, "certrl.evaluator": 1,
    "certrl.smoothing": 2, "certrl.attacks": 2, "certrl.backends": 2, "certrl.backends_ray": 2,
    "certrl.results": 2, "certrl.runner": 2, "certrl.dynamics": 2, "certrl.diagnostics": 2,
    "certrl.pipeline": 3,
    "certrl.api": 4, "certrl.report": 4, "certrl.gate": 4,
    "certrl.commands": 5,
    "certrl.cli": 6,
    "certrl": 7,  # the package: re-exports the API lazily
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ("certrl", *p.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(target: str) -> str | None:
        parts = target.split(".")
        while parts:
            if ".".join(parts) in mods:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t.startswith("certrl"):
                    r = resolve(t)
                    if r and r != m:
                        graph[m].add(r)
    return graph


def _layer(mod: str) -> int:
    best = max((k for k in LAYERS if mod == k or mod.startswith(k + ".")), key=len)
    return LAYERS[best]


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_module_imports_a_layer_above_it():
    graph = _graph()
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                 if _layer(t) > _layer(m))
    assert bad == []


def test_commands_never_import_the_cli():
    graph = _graph()
    assert [m for m, ts in graph.items() if "certrl.cli" in ts] == []


def test_graph_sees_function_level_imports():
    """The checks above would pass vacuously if lazy imports were missed."""
    graph = _graph()
    assert "certrl.pipeline.certify" in graph["certrl.commands.certify"]
    assert "certrl.smoothing" in graph["certrl.pipeline.certify"]  # imported inside run_certify
    assert "certrl.engines.base" in graph["certrl.evaluator"]
