"""ProX-style edit programs: a fixed vocabulary of document edits, parsed by our own grammar and interpreted
by our code (nothing is ever evaluated as Python).

One call per line, arguments by keyword, literals only (an integer, or a double-quoted string with JSON
escapes)::

    keep_doc()
    drop_doc()
    remove_lines(start=3, end=5)                 # 1-based, inclusive, numbering of the original document
    normalize(source="Click here", target="")    # every occurrence, after the removals

``keep_doc`` / ``drop_doc`` stand alone; otherwise a program is one or more ``remove_lines`` / ``normalize``
calls. Anything else (another name, a missing / extra / mistyped argument, a line outside the document, a
source string the document does not contain, trailing text) makes the whole program invalid with a reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

# name -> its arguments in order with their types: the whole vocabulary
VOCABULARY: dict[str, tuple[tuple[str, type], ...]] = {
    "keep_doc": (),
    "drop_doc": (),
    "remove_lines": (("start", int), ("end", int)),
    "normalize": (("source", str), ("target", str)),
}
WHOLE_DOC = ("keep_doc", "drop_doc")

_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*")
_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")
_INT = re.compile(r"[+-]?\d+")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


class ProgramError(ValueError):
    """The program is outside the vocabulary or does not fit the document; the message is the reason."""


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[int | str, ...] = ()


@dataclass
class Result:
    """What a program did to a document: ``text`` None means dropped."""

    text: str | None
    counts: Counter[str] = field(default_factory=Counter)  # per edit kind, lines removed, replacements
    chars_removed: int = 0


def _literal(s: str, pos: int, kind: type, where: str) -> tuple[int | str, int]:
    if kind is int:
        m = _INT.match(s, pos)
        if not m:
            raise ProgramError(f"{where}: expected an integer at {s[pos : pos + 20]!r}")
        return int(m.group()), m.end()
    m = _STRING.match(s, pos)
    if not m:
        raise ProgramError(f"{where}: expected a double-quoted string at {s[pos : pos + 20]!r}")
    try:
        return json.loads(m.group()), m.end()
    except json.JSONDecodeError as e:
        raise ProgramError(f"{where}: bad string escape ({e.msg})") from None


def parse_call(line: str, lineno: int) -> Op:
    m = _CALL.fullmatch(line)
    if not m:
        raise ProgramError(f"line {lineno}: not a call name(arg=value, ...): {line[:60]!r}")
    name, body = m.group(1), m.group(2)
    if name not in VOCABULARY:
        raise ProgramError(f"line {lineno}: unknown operation {name!r} (allowed: {', '.join(VOCABULARY)})")
    params = VOCABULARY[name]
    values: dict[str, int | str] = {}
    pos, where = 0, f"line {lineno} {name}"
    while pos < len(body) and body[pos:].strip():
        k = _KEY.match(body, pos)
        if not k:
            raise ProgramError(f"{where}: expected key=value at {body[pos : pos + 20]!r}")
        key = k.group(1)
        kinds = dict(params)
        if key not in kinds:
            raise ProgramError(f"{where}: unknown argument {key!r} (takes {', '.join(kinds) or 'none'})")
        if key in values:
            raise ProgramError(f"{where}: argument {key!r} given twice")
        values[key], pos = _literal(body, k.end(), kinds[key], where)
        rest = body[pos:]
        stripped = rest.lstrip()
        if stripped.startswith(","):
            pos = len(body) - len(stripped) + 1
        elif stripped:
            raise ProgramError(f"{where}: unexpected {stripped[:20]!r}")
        else:
            pos = len(body)
    missing = [k for k, _ in params if k not in values]
    if missing:
        raise ProgramError(f"{where}: missing argument(s) {', '.join(missing)}")
    return Op(name, tuple(values[k] for k, _ in params))


def parse(program: str) -> list[Op]:
    """Every non-blank line one call; an optional ``` fence around the program is tolerated."""
    lines = [ln for ln in program.strip().splitlines() if ln.strip()]
    if lines and lines[0].strip().startswith("```"):
        if not lines[-1].strip() == "```" or len(lines) < 2:
            raise ProgramError("unclosed ``` fence")
        lines = lines[1:-1]
    if not lines:
        raise ProgramError("empty program")
    ops = [parse_call(ln, i) for i, ln in enumerate(lines, 1)]
    whole = [o.name for o in ops if o.name in WHOLE_DOC]
    if whole and len(ops) > 1:
        raise ProgramError(f"{whole[0]}() must be the only operation (program has {len(ops)})")
    return ops


def execute(ops: list[Op], text: str, editable_lines: int | None = None) -> Result:
    """Apply ``ops`` to ``text``. Lines are ``text.split('\\n')``, numbered from 1; only the first
    ``editable_lines`` (the ones the model was shown) may be removed. Removals use the original numbering;
    normalisations then replace every occurrence, in program order."""
    res = Result(text)
    if ops[0].name in WHOLE_DOC:
        res.counts[ops[0].name] += 1
        if ops[0].name == "drop_doc":
            res.text, res.chars_removed = None, len(text)
        return res
    lines = text.split("\n")
    limit = len(lines) if editable_lines is None else min(len(lines), editable_lines)
    drop: set[int] = set()
    for op in ops:
        if op.name != "remove_lines":
            continue
        start, end = op.args
        assert isinstance(start, int) and isinstance(end, int)
        if not 1 <= start <= end <= limit:
            raise ProgramError(f"remove_lines(start={start}, end={end}): need 1 <= start <= end <= {limit}")
        drop.update(range(start - 1, end))
        res.counts["remove_lines"] += 1
    res.counts["lines_removed"] = len(drop)
    out = "\n".join(line for i, line in enumerate(lines) if i not in drop)
    for op in ops:
        if op.name != "normalize":
            continue
        source, target = op.args
        assert isinstance(source, str) and isinstance(target, str)
        if not source:
            raise ProgramError("normalize: empty source string")
        n = out.count(source)
        if n == 0:
            raise ProgramError(f"normalize: source {source[:40]!r} is not in the document")
        out = out.replace(source, target)
        res.counts["normalize"] += 1
        res.counts["replacements"] += n
    res.text = out
    res.chars_removed = len(text) - len(out)
    return res


def run_program(program: str, text: str, editable_lines: int | None = None) -> Result:
    return execute(parse(program), text, editable_lines)
