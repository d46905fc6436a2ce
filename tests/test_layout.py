"""The import rules of STYLE.md section 7, enforced by walking the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "finexl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """finexl modules ``path`` imports at run time (TYPE_CHECKING blocks do not count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("finexl"):
            # "from finexl.generate import tiny_loader" imports the submodule, not the package.
            submodules = [f"{node.module}.{a.name}" for a in node.names
                          if (SRC.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()]
            found.update(submodules or [node.module])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("finexl"))
    return found


GRAPH = {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}


def _importers_of(prefix: str) -> list[str]:
    return sorted(m for m, deps in GRAPH.items()
                  if not m.startswith(prefix) and any(d == prefix or d.startswith(prefix + ".")
                                                      for d in deps))


def test_decompose_imports_nothing_from_finexl():
    assert GRAPH["finexl.decompose"] == set()


def test_nothing_imports_the_cli():
    assert _importers_of("finexl.cli") == []


@pytest.mark.parametrize("leaf", ["finexl.errors", "finexl.results", "finexl.progress"])
def test_leaves_import_nothing_from_finexl(leaf):
    assert GRAPH[leaf] == set()


def test_concepts_never_import_encoders():
    offenders = sorted(m for m, deps in GRAPH.items() if m.startswith("finexl.concepts")
                       and any(d.startswith("finexl.encoders") and d != "finexl.encoders.base"
                               for d in deps))
    assert offenders == []


def test_no_import_cycles_between_modules():
    def visit(module, stack):
        for dep in GRAPH.get(module, ()):
            if dep in stack:
                return stack[stack.index(dep):] + [dep]
            cycle = visit(dep, stack + [dep])
            if cycle:
                return cycle
        return None

    for module in GRAPH:
        assert visit(module, [module]) is None, module


# Modules that define torch / diffusers classes need them at import; nothing imports them
# at module level except the generate and train code that uses them.
MODEL_MODULES = {"finexl.generate.tiny"}


def test_heavy_libraries_are_not_imported_at_module_level():
    heavy = {"torch", "transformers", "diffusers", "httpx", "ray", "peft"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if "train" in path.parts or _module_name(path) in MODEL_MODULES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] in heavy for name in names):
                offenders.append(f"{_module_name(path)}: {names}")
    assert offenders == []


def test_every_finexl_import_names_a_module_that_exists():
    """A function-level import of a moved module (``finexl.cache`` became ``finexl.store``)
    fails only when the function runs; this finds it without running anything."""
    missing = sorted(f"{module} imports {dep}" for module, deps in GRAPH.items() for dep in deps
                     if dep not in GRAPH)
    assert missing == []
