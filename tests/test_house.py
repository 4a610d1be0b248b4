"""House rules, checked on the source: parts known by what they can do, units without seams.

- No registered part is recognised by its name outside the registry: no comparison of a config
  field that names one (``backend``, ``method``, ``policy``, ...) with a string or a tuple of
  names, and no ``getattr`` probing a part or its options for a capability.
- No module imports another module's private names; no test module imports another test
  module (shared test code lives in ``tests/helpers.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "calm_rag"

PART_FIELDS = {"backend", "method", "policy", "chosen_fallback", "regenerate_otherwise", "tie",
               "chain", "source"}
"""Config fields whose value is the name of a registered part."""
PARTS = {"options", "sampler", "generator", "method", "backend", "policy"}
"""Names of objects that are registered parts (or their options): probing them with
``getattr`` for a capability recognises a part by its shape."""
REGISTRY_MODULES = {"registry.py", "registries.py"}


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _name_of(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _field_of(node: ast.AST) -> str | None:
    """``config.policy`` → ``policy``; a bare local name is no config field."""
    return node.attr if isinstance(node, ast.Attribute) else None


def _names_parts(node: ast.AST) -> bool:
    """A string, a collection of strings, or a CONSTANT (a tuple of names)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return True
    return isinstance(node, ast.Name) and node.id.isupper()


def _from_cli_args(node: ast.AST) -> bool:
    """``args.policy``: a command-line flag's value, not a config naming a part."""
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "args")


def name_comparisons(tree: ast.AST) -> list[tuple[int, str]]:
    """Comparisons of a part-naming field with names, and ``getattr`` probes of parts."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            fields = [s for s in sides if _field_of(s) in PART_FIELDS and not _from_cli_args(s)]
            if fields and any(_names_parts(s) for s in sides if s not in fields):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr") and node.args
              and _name_of(node.args[0]) in PARTS):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_part_is_recognised_by_its_name_outside_the_registry():
    found = [f"{path.relative_to(ROOT)}:{line}: {code}"
             for path in _sources(PACKAGE) if path.name not in REGISTRY_MODULES
             for line, code in name_comparisons(ast.parse(path.read_text(encoding="utf-8")))]
    assert not found, "ask the registered part what it can do instead:\n" + "\n".join(found)


@pytest.mark.parametrize(("code", "flagged"), [
    ('if generator.backend == "openai": pass', True),
    ('if config.policy != "weighted": pass', True),
    ('if align.method in LAUNCHABLE: pass', True),
    ('if x.chosen_fallback in ("regenerate", "pivot"): pass', True),
    ('f = getattr(sampler, "generate_forced", None)', True),
    ('d = getattr(generator.options, "dtype", None)', True),
    ('if args.policy == "calm": pass', False),
    ('if sampler.forces_answers: pass', False),
    ('if kind == "error": pass', False),
])
def test_the_name_check_flags_what_it_should(code, flagged):
    assert bool(name_comparisons(ast.parse(code))) is flagged


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def private_imports(path: Path) -> list[str]:
    """``from other.module import _private`` in ``path`` (its own names excepted)."""
    own = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}"
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
            and node.module.startswith("calm_rag") and node.module != own
            for alias in node.names if alias.name.startswith("_")]


def test_no_module_imports_another_modules_private_names():
    found = [line for path in _sources(PACKAGE) + _sources(ROOT / "tests")
             for line in private_imports(path)]
    assert not found, "make the name public where it is defined:\n" + "\n".join(found)


def test_no_test_module_imports_another():
    found = []
    for path in _sources(ROOT / "tests"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and (module.startswith("tests.test_") or module == "tests.conftest"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {module}")
    assert not found, "move shared test code to tests/helpers.py:\n" + "\n".join(found)
