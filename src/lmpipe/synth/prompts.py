"""Prompt templates: editable text files in ``prompts/`` with ``{name}`` placeholders.

Only known placeholders are replaced, so a template may hold literal braces (a JSON example) unescaped.
A directory given in params overrides the packaged templates file by file.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGED = Path(__file__).parent / "prompts"
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def load_template(name: str, directory: str | Path | None = None, packaged: Path = PACKAGED) -> str:
    """Template ``name`` from ``directory`` when it holds one, else from the ``packaged`` templates."""
    for base in ([Path(directory)] if directory else []) + [packaged]:
        path = base / f"{name}.txt"
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
    raise FileNotFoundError(f"prompt template {name!r} not found in {directory or ''} {packaged}")


# placeholders a template may use; any other ``{word}`` (e.g. inside a JSON example) is left alone
KNOWN = frozenset({"document", "entities", "example", "rubric", "summary", "thought", "title"})


def fill(template: str, **values: str) -> str:
    """Replace each known ``{key}`` with its value; a known placeholder without a value is an error."""
    missing = {k for k in _PLACEHOLDER.findall(template) if k in KNOWN and k not in values}
    if missing:
        raise KeyError(f"template needs values for {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in KNOWN else m.group(0), template)
