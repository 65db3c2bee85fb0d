"""The shape of the code: layering, no import loops, file and function sizes (issue: one task contract)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "deepmia"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every deepmia module ``name`` imports, at module level or inside functions."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def _loops(names: list[str]) -> list[tuple[str, ...]]:
    """Import cycles among ``names`` (each module's imports restricted to the group)."""
    graph = {n: _imports(n) & set(names) for n in names}
    cycles, seen = [], set()

    def visit(node: str, stack: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in stack:
                cycle = tuple(stack[stack.index(nxt):])
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append(cycle)
            elif len(stack) < 12:
                visit(nxt, [*stack, nxt])

    for n in names:
        visit(n, [n])
    return cycles


GROUPS = sorted({n.rsplit(".", 1)[0] for n in MODULES if n.count(".") >= 2})


@pytest.mark.parametrize("package", GROUPS)
def test_no_import_loop_inside_a_package(package):
    members = [n for n in MODULES if n.rsplit(".", 1)[0] == package and MODULES[n].name != "__init__.py"]
    assert _loops(members) == []


def test_the_loop_detector_finds_a_loop(tmp_path, monkeypatch):
    monkeypatch.setitem(MODULES, "deepmia.fake.a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, "deepmia.fake.b", tmp_path / "b.py")
    (tmp_path / "a.py").write_text("def f():\n    from deepmia.fake import b\n")
    (tmp_path / "b.py").write_text("from deepmia.fake.a import f\n")
    assert len(_loops(["deepmia.fake.a", "deepmia.fake.b"])) == 1


LAYERS = [
    ("core", ("deepmia.image", "deepmia.io", "deepmia.errors", "deepmia.registry", "deepmia._validate",
              "deepmia.display", "deepmia.config")),
    ("data", ("deepmia.data", "deepmia.deid")),
    ("processing", ("deepmia.processing", "deepmia.quality")),
    ("metrics", ("deepmia.metrics",)),
    ("learning", ("deepmia.nn", "deepmia.transforms", "deepmia.engine")),
    ("tasks", ("deepmia.tasks",)),
    ("insight", ("deepmia.explain", "deepmia.report")),
    ("delivery", ("deepmia.cli", "deepmia.service", "deepmia.pacs", "deepmia.distributed", "deepmia.jobs")),
]


def _layer(name: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    return None


def test_imports_only_point_down_the_layers():
    upward = []
    for name in MODULES:
        mine = _layer(name)
        if mine is None:
            continue
        for target in _imports(name):
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert upward == []


def test_task_predict_modules_do_not_import_training():
    for task in ("segment", "classify", "detect", "register"):
        imported = _imports(f"deepmia.tasks.{task}.predict")
        assert f"deepmia.tasks.{task}.train" not in imported, task


def _private_crossings(name: str) -> list[str]:
    """Private names ``_x`` imported from another module, and private modules imported from outside their package."""
    out = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepmia")):
            continue
        parts = node.module.split(".")
        private_at = next((i for i, p in enumerate(parts) if p.startswith("_")), None)
        if private_at is not None:
            owner = ".".join(parts[:private_at])
            if not (name == owner or name.startswith(owner + ".")):
                out.append(f"{name} imports the private module {node.module}")
        out += [f"{name} imports {node.module}.{a.name}" for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_private_name_is_imported_from_another_package():
    assert [c for n in MODULES for c in _private_crossings(n)] == []


def _long_functions() -> list[str]:
    out = []
    for name, path in MODULES.items():
        if "migrations/versions/" in path.as_posix():  # generated schema migrations are data (one op per table)
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{name}.{node.name}: {length} lines")
    return out


def test_no_function_over_100_lines():
    assert _long_functions() == []


def test_no_file_over_600_lines():
    long = [f"{n}: {len(p.read_text().splitlines())}" for n, p in MODULES.items()
            if len(p.read_text().splitlines()) > MAX_FILE_LINES]
    assert long == []
