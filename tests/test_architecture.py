"""The layers: data flows one way. Every import (module level or inside a function) goes to the same
package or a lower layer, and the import graph has no cycle (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("bias", "transforms", "classifiers", "memorization", "describe")
#: checkout folders installed under another package name (setup.py's package_dir)
INSTALLED_AS = {"configs": "bias.configs"}

#: lowest first; a module may import its own layer package and any lower layer
LAYERS = [
    ("bias.configs", 0), ("bias.core", 0),
    ("bias.data", 1),
    ("bias.inference", 2),
    ("transforms", 3),
    ("classifiers", 4),
    ("bias.experiment", 5), ("bias.generation", 5), ("memorization", 5),
    ("describe", 6),
    ("bias.cli", 7), ("bias", 7),
]
#: the sibling study uses the shared tools, the data layer and the trainer's pieces, nothing else
MEMORIZATION_MAY_USE = ("bias.core", "bias.configs", "bias.data", "classifiers", "memorization")
#: the generated-images study (uncon_gen) trains on the data and inference layers, beside the experiment layer
GENERATION_MAY_USE = ("bias.core", "bias.configs", "bias.data", "bias.inference", "classifiers", "bias.generation")


def layer_of(module: str) -> tuple[str, int]:
    for prefix, rank in LAYERS:  # the first, most specific, match
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and to docs/architecture.md")


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in (*PACKAGES, *INSTALLED_AS):
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            for folder, package in INSTALLED_AS.items():
                if name == folder or name.startswith(folder + "."):
                    name = package + name[len(folder):]
            mods[name] = path
    return mods


def imports_of(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (functions included), resolved to modules."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {name: imports_of(name, path, mods) for name, path in mods.items()}


def test_every_import_goes_down_or_stays_in_its_layer_package():
    bad = []
    for mod, targets in graph().items():
        prefix, rank = layer_of(mod)
        for t in targets:
            t_prefix, t_rank = layer_of(t)
            if t_rank > rank or (t_rank == rank and t_prefix != prefix):
                bad.append(f"{mod} (layer {prefix}) imports {t} (layer {t_prefix})")
            if prefix == "memorization" and not t.startswith(MEMORIZATION_MAY_USE):
                bad.append(f"{mod} (the sibling study) imports {t}")
            if prefix == "bias.generation" and not t.startswith(GENERATION_MAY_USE):
                bad.append(f"{mod} (the generation study) imports {t}")
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(g[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (cycle := visit(w)):
                return cycle
        state[v] = 2
        stack.pop()
        return None

    for v in sorted(g):
        if v not in state and (cycle := visit(v)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_imports_inside_functions(tmp_path):
    mods = {"bias.core.x": tmp_path / "x.py", "bias.experiment.y": tmp_path / "y.py"}
    mods["bias.core.x"].write_text("def f():\n    from bias.experiment.y import g\n    return g\n")
    assert imports_of("bias.core.x", mods["bias.core.x"], mods) == {"bias.experiment.y"}


def test_scripts_are_thin():
    for script in (ROOT / "scripts").glob("*.py"):
        code = [line for line in script.read_text().splitlines() if line.strip() and not line.startswith(("#",))]
        assert len(code) <= 40, f"{script.name}: {len(code)} lines; its logic belongs in the packages"
