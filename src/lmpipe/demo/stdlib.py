"""Real text every machine has: the Python standard library's docstrings (prose) and source (code)."""

from __future__ import annotations

import ast
import itertools
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

_SKIP = re.compile(r"(^|/)(test|tests|idlelib|lib2to3|tkinter|turtledemo|site-packages|ensurepip|pydoc_data)(/|$)")


def stdlib_files(rng: random.Random) -> list[Path]:
    """Standard-library modules in a seeded random order (so taking a prefix samples the whole library)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted((p for p in root.rglob("*.py") if not _SKIP.search(str(p.relative_to(root)))),
                   key=lambda p: str(p.relative_to(root)))
    rng.shuffle(files)
    return files


def take(items: Iterator[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    return list(itertools.islice(items, n))


def _parse(path: Path) -> tuple[str, ast.Module] | None:
    try:
        src = path.read_text(encoding="utf-8")
        return src, ast.parse(src)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None


def docstrings(rng: random.Random, min_words: int = 40) -> Iterator[tuple[str, str]]:
    """(locator, paragraph-formatted docstring) for module, class and function docstrings."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_files(rng):
        parsed = _parse(path)
        if parsed is None:
            continue
        _, tree = parsed
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = ast.get_docstring(node)
            if doc and len(doc.split()) >= min_words and ">>>" not in doc:
                name = getattr(node, "name", "<module>")
                yield f"{path.relative_to(root)}:{name}", doc.strip()


def code_chunks(rng: random.Random, min_chars: int, max_chars: int) -> Iterator[tuple[str, str]]:
    """(locator, source) of top-level functions and classes, each a self-contained snippet."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_files(rng):
        parsed = _parse(path)
        if parsed is None:
            continue
        src, tree = parsed
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                seg = ast.get_source_segment(src, node)
                if seg and min_chars <= len(seg) <= max_chars:
                    yield f"{path.relative_to(root)}:{node.name}", seg
