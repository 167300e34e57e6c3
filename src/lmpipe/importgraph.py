"""The import closure of a module inside the project: the code a stage runs, hence its DVC code deps.

Every ``import``/``from ... import`` anywhere in a module counts (also those inside functions: heavy imports
are deferred there on purpose), as does each parent package's ``__init__.py`` (Python runs it on import).
Only modules under the given source root are followed; third-party code is pinned by the lock file.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_file(name: str, src: Path) -> Path | None:
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path, src: Path) -> str:
    # a module's package is its folder, and so is an __init__.py's (the package itself)
    return ".".join(path.relative_to(src).parts[:-1])


def imported_names(path: Path, src: Path) -> set[str]:
    """Absolute module names a file may import (``from a import b`` yields ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path, src)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def closure(roots: list[str], src: Path) -> list[Path]:
    """Files of ``roots`` and of every project module they import, transitively; sorted."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]), src)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_names(path, src))
    return sorted(seen)
