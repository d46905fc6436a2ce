"""The import rules of docs/ARCHITECTURE.md (and STYLE.md section 7), enforced by walking the source with ast."""

from __future__ import annotations

import ast
from pathlib import Path

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


# The rooms of docs/ARCHITECTURE.md: room -> (the modules it holds, by prefix; the rooms it
# may import). Every room may also import "leaves"; leaves import only leaves. A new module
# must fall in a room, and a new room is one line here and one row in ARCHITECTURE.md.
LEAVES = "leaves"
ROOMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    LEAVES: (("finexl", "finexl.errors", "finexl.results", "finexl.progress", "finexl.limits",
              "finexl.output_lock", "finexl.store", "finexl.data"), ()),
    "decompose": (("finexl.decompose",), ()),
    "imaging": (("finexl.imaging", "finexl.image_hashes"), ()),
    "inputs": (("finexl.pairs", "finexl.prompts_file"), ("imaging",)),
    "encoders": (("finexl.encoders",), ("imaging",)),
    "concepts": (("finexl.concepts",), ("imaging",)),
    "report": (("finexl.report",), ("imaging",)),
    "catalog": (("finexl.catalog",), ()),
    "train": (("finexl.train",), ("imaging",)),
    # generate -> prefgen: ``generate --user`` applies a user branch (prefgen.user_generation).
    "generate": (("finexl.generate",), ("inputs", "imaging", "prefgen")),
    "scale": (("finexl.scale",), ("encoders", "inputs", "imaging")),
    "prefgen": (("finexl.prefgen",), ("generate", "encoders", "concepts", "imaging", "inputs",
                                      "scale")),
    "pipeline": (("finexl.pipeline", "finexl.compare", "finexl.decomposition",
                  "finexl.fit_cache", "finexl.from_models"),
                 ("decompose", "inputs", "imaging", "encoders", "concepts", "report", "scale",
                  "generate", "prefgen")),
    "demo": (("finexl.demo",), ("pipeline", "report", "imaging")),
    "eval": (("finexl.eval",), ("pipeline", "decompose", "generate", "prefgen", "inputs",
                                "imaging", "encoders", "concepts", "report", "scale", "train")),
    "cli": (("finexl.cli",), ("pipeline", "demo", "eval", "prefgen", "generate", "catalog",
                              "report", "encoders", "concepts", "scale", "inputs", "imaging",
                              "decompose")),
}


def room_of(module: str) -> str | None:
    """The room whose longest module prefix matches ``module``."""
    best, length = None, -1
    for room, (prefixes, _) in ROOMS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = room, len(prefix)
    return best


def test_every_module_is_in_a_room():
    assert sorted(m for m in GRAPH if room_of(m) is None) == []


def test_the_table_names_only_rooms_it_defines():
    assert sorted({r for _, allowed in ROOMS.values() for r in allowed} - set(ROOMS)) == []


def test_every_import_follows_an_allowed_direction():
    """The whole table, no exemptions: each import between rooms is one the table allows."""
    offenders = []
    for module, deps in GRAPH.items():
        room = room_of(module)
        allowed = set(ROOMS[room][1]) | {room, LEAVES} if room != LEAVES else {LEAVES}
        for dep in deps:
            if dep in GRAPH and room_of(dep) not in allowed:
                offenders.append(f"{module} ({room}) imports {dep} ({room_of(dep)})")
    assert sorted(offenders) == []


def test_decompose_imports_nothing_from_finexl():
    assert GRAPH["finexl.decompose"] == set()


def test_nothing_imports_the_cli():
    assert _importers_of("finexl.cli") == []


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


# Rooms that build models (training the encoder, PrefGen) and modules that define torch /
# diffusers classes need them at import; nothing the command line or the explain path
# imports at module level does (checked directly below).
MODEL_ROOMS = {"train", "prefgen"}
MODEL_MODULES = {"finexl.generate.tiny"}
HEAVY = ("torch", "transformers", "diffusers", "httpx", "ray", "peft", "accelerate")


def test_heavy_libraries_are_not_imported_at_module_level():
    offenders = []
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        if room_of(module) in MODEL_ROOMS or module in MODEL_MODULES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] in HEAVY for name in names):
                offenders.append(f"{module}: {names}")
    assert offenders == []


def test_the_command_line_imports_no_heavy_library():
    """``finexl --help`` stays fast: importing every command module loads none of them."""
    import subprocess
    import sys

    code = ("import sys, finexl.cli, finexl.pipeline, finexl.decompose; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=300)
    assert result.stdout.strip() == "[]"


def test_every_finexl_import_names_a_module_that_exists():
    """A function-level import of a moved module (``finexl.cache`` became ``finexl.store``)
    fails only when the function runs; this finds it without running anything."""
    missing = sorted(f"{module} imports {dep}" for module, deps in GRAPH.items() for dep in deps
                     if dep not in GRAPH)
    assert missing == []
